//! Retention tiers: placement, trace-level promotion in both arrival orders, expiry by tier age
//! with an injected clock (`as_of`), dry runs, and data that arrives already expired: kept a
//! full keep from its arrival by default, gone at the next run when the tier counts from span
//! time.

use std::borrow::Cow;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use engine::schema::columns;
use engine::{
    AgeFrom, AgentFields, Engine, Options, RetentionPolicy, ScanRequest, SpanBatchBuilder, SpanId,
    SpanRecord, Tier, TraceId, with_retention_tiers,
};

const DAY: i64 = 86_400_000_000_000;
/// 2026-11-01T00:00:00Z
const BASE: i64 = 1_793_491_200_000_000_000;

fn trace_id(n: u32) -> TraceId {
    let mut raw = [0u8; 16];
    raw[12..].copy_from_slice(&n.to_be_bytes());
    raw[0] = 0x40;
    TraceId(raw)
}

/// Spans `first..first + count` of `trace` starting at `start`, each placed in `tier` (None =
/// the default tier), all of session `sess-<trace>`.
fn spans(trace: u32, first: u32, count: u32, start: i64, tier: Option<&str>) -> RecordBatch {
    let mut builder = SpanBatchBuilder::new();
    let session = format!("sess-{trace}");
    for index in first..first + count {
        let mut span = [0u8; 8];
        span[..4].copy_from_slice(&trace.to_be_bytes());
        span[4..].copy_from_slice(&(index + 1).to_be_bytes());
        builder.append(&SpanRecord {
            trace_id: trace_id(trace),
            span_id: SpanId(span),
            name: "step",
            kind: 1,
            start_time_unix_nano: start + i64::from(index),
            end_time_unix_nano: start + i64::from(index) + 10,
            service_name: Some("agent"),
            agent: AgentFields {
                session_id: (index == 0).then(|| Cow::Owned(session.clone())),
                ..AgentFields::default()
            },
            ..SpanRecord::default()
        });
    }
    let batch = builder.finish();
    let tiers = vec![tier; batch.num_rows()];
    with_retention_tiers(&batch, &tiers).unwrap()
}

/// Tiers whose age counts from span time: these tests move the clock (`as_of`) over spans
/// dated 2026-11-01, which all arrive now.
fn options() -> Options {
    options_counting_from(AgeFrom::SpanTime)
}

fn options_counting_from(age_from: AgeFrom) -> Options {
    let tier = |name: &str, days: u64| Tier {
        age_from,
        ..Tier::new(name, Duration::from_secs(days * 86_400))
    };
    let policy = RetentionPolicy::new(
        vec![tier("decision", 400), tier("standard", 14)],
        "standard",
    )
    .unwrap();
    Options::default()
        .with_background_sealing(false)
        .with_retention(policy)
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// (span_id, retention_tier) of every row, sorted.
fn tiers(engine: &Engine, request: &ScanRequest) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for batch in engine.scan(request).unwrap() {
        let ids = batch
            .column_by_name(columns::SPAN_ID)
            .unwrap()
            .as_string::<i32>();
        let tiers = batch
            .column_by_name(columns::RETENTION_TIER)
            .unwrap()
            .as_string::<i32>();
        for row in 0..batch.num_rows() {
            assert!(tiers.is_valid(row), "every row reads back with a tier");
            out.push((ids.value(row).to_owned(), tiers.value(row).to_owned()));
        }
    }
    out.sort();
    out
}

fn all(engine: &Engine) -> Vec<(String, String)> {
    tiers(engine, &ScanRequest::default())
}

fn segment_tiers(engine: &Engine) -> Vec<String> {
    let mut out: Vec<String> = engine
        .segments()
        .iter()
        .map(|meta| meta.tier.clone())
        .collect();
    out.sort();
    out
}

#[test]
fn rows_go_to_their_tier_and_the_default_tier_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options()).unwrap();
    engine.write(spans(1, 0, 3, BASE, None)).unwrap();
    engine
        .write(spans(2, 0, 2, BASE, Some("decision")))
        .unwrap();
    let expected: Vec<&str> = ["standard"; 3].into_iter().chain(["decision"; 2]).collect();
    let check = |engine: &Engine| {
        let found = all(engine);
        let names: Vec<&str> = found.iter().map(|(_, tier)| tier.as_str()).collect();
        assert_eq!(names, expected);
    };
    check(&engine);
    engine.seal().unwrap();
    check(&engine);
    assert_eq!(segment_tiers(&engine), ["decision", "standard"]);
    assert!(
        engine
            .segments()
            .iter()
            .any(|meta| meta.path.starts_with("segments/decision/"))
    );
}

#[test]
fn a_trace_lives_in_the_highest_tier_any_span_reached_whatever_the_order() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options()).unwrap();
    // Trace 1: the decision span first, ordinary spans later (another call).
    engine
        .write(spans(1, 0, 1, BASE, Some("decision")))
        .unwrap();
    engine.write(spans(1, 1, 3, BASE, None)).unwrap();
    // Trace 2: ordinary spans sealed first, the decision span after.
    engine.write(spans(2, 0, 3, BASE, None)).unwrap();
    engine.seal().unwrap();
    engine
        .write(spans(2, 3, 1, BASE, Some("decision")))
        .unwrap();
    // Trace 3 stays standard.
    engine.write(spans(3, 0, 2, BASE, None)).unwrap();
    let check = |engine: &Engine| {
        for (span, tier) in all(engine) {
            let expected = if span.starts_with("00000003") {
                "standard"
            } else {
                "decision"
            };
            assert_eq!(tier, expected, "span {span}");
        }
    };
    check(&engine);
    engine.seal().unwrap();
    check(&engine);
    drop(engine);
    let engine = Engine::open(dir.path(), options()).unwrap();
    check(&engine);

    // Past the standard tier's age, the promoted rows of trace 2 that were sealed in a standard
    // segment survive (moved to the decision tier); trace 3 goes.
    let report = engine.expire(BASE + 15 * DAY, false).unwrap();
    assert!(
        report
            .segments
            .iter()
            .all(|segment| segment.tier == "standard")
    );
    assert_eq!(report.rows(), 2, "{report:?}");
    assert_eq!(
        report.segments.iter().map(|s| s.rows_kept).sum::<u64>(),
        3,
        "{report:?}"
    );
    let left = all(&engine);
    assert_eq!(left.len(), 8, "{left:?}");
    assert!(left.iter().all(|(_, tier)| tier == "decision"));
    assert!(engine.segments().iter().all(|meta| meta.tier == "decision"));
    drop(engine);
    let engine = Engine::open(dir.path(), options()).unwrap();
    assert_eq!(all(&engine).len(), 8);
    let session = ScanRequest {
        session_ids: Some(vec!["sess-2".to_owned()]),
        ..ScanRequest::default()
    };
    assert_eq!(tiers(&engine, &session).len(), 4);
    // Past the decision tier's age everything goes.
    let report = engine.expire(BASE + 401 * DAY, false).unwrap();
    assert_eq!(report.rows(), 8);
    assert!(all(&engine).is_empty());
    assert!(engine.segments().is_empty());
    assert!(tiers(&engine, &session).is_empty());
}

#[test]
fn expiry_deletes_whole_segments_past_their_age_and_a_dry_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options()).unwrap();
    // Day 0 and day 10, standard; day 0, decision.
    engine.write(spans(1, 0, 4, BASE, None)).unwrap();
    engine.write(spans(2, 0, 4, BASE + 10 * DAY, None)).unwrap();
    engine
        .write(spans(3, 0, 4, BASE, Some("decision")))
        .unwrap();
    engine.seal().unwrap();
    assert_eq!(engine.segments().len(), 3);
    let status = engine.retention_status().unwrap();
    assert_eq!(status[0].tier, "decision");
    assert_eq!(status[0].spans, 4);
    assert_eq!(status[1].tier, "standard");
    assert_eq!(status[1].spans, 8);
    assert_eq!(status[1].oldest, Some(BASE));
    assert_eq!(status[1].next_expiry, Some(BASE + 13 + 14 * DAY));

    // Not yet: the latest end time in the day-0 segment is BASE + 13 ns.
    assert!(
        engine
            .expire(BASE + 13 + 14 * DAY, false)
            .unwrap()
            .segments
            .is_empty()
    );
    let files_before: Vec<_> = engine
        .segments()
        .iter()
        .map(|meta| dir.path().join(&meta.path))
        .collect();
    let dry = engine.expire(BASE + 20 * DAY, true).unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.segments.len(), 1);
    assert_eq!(dry.rows(), 4);
    assert_eq!(engine.segments().len(), 3);
    assert!(files_before.iter().all(|path| path.exists()));

    let done = engine.expire(BASE + 20 * DAY, false).unwrap();
    assert_eq!(done.segments, dry.segments);
    assert_eq!(engine.segments().len(), 2);
    assert_eq!(files_before.iter().filter(|path| path.exists()).count(), 2);
    let left = all(&engine);
    assert_eq!(left.len(), 8);
    assert!(left.iter().all(|(span, _)| !span.starts_with("00000001")));
    let trace = ScanRequest::for_trace(trace_id(1));
    assert!(engine.scan(&trace).unwrap().is_empty());
    drop(engine);
    // The deletion is durable and the index no longer names the segment.
    let engine = Engine::open(dir.path(), options()).unwrap();
    assert_eq!(all(&engine).len(), 8);
    assert!(engine.scan(&trace).unwrap().is_empty());
    let session = ScanRequest {
        session_ids: Some(vec!["sess-1".to_owned()]),
        ..ScanRequest::default()
    };
    assert!(engine.scan(&session).unwrap().is_empty());
}

#[test]
fn a_backfill_keeps_its_tiers_full_keep_from_arrival() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options_counting_from(AgeFrom::Arrival)).unwrap();
    let now = now_ns();
    // Eighteen months old on arrival: the standard tier in one segment, a decision-tier
    // trace in another.
    let old = now - 540 * DAY;
    engine.write(spans(1, 0, 3, old, None)).unwrap();
    engine.write(spans(2, 0, 2, old, Some("decision"))).unwrap();
    engine.seal().unwrap();
    let arrived = engine
        .segments()
        .iter()
        .filter_map(|meta| meta.max_arrival)
        .min()
        .unwrap();
    assert!(arrived >= now, "the segments know when their rows arrived");

    // The pass at arrival (a restart's) and one 13 days later keep everything.
    for as_of in [now, now + 13 * DAY] {
        let report = engine.expire(as_of, false).unwrap();
        assert!(report.segments.is_empty(), "{report:?}");
    }
    assert_eq!(all(&engine).len(), 5);
    // The standard keep counted from arrival: gone 15 days after it; the decision tier stays.
    let report = engine.expire(now + 15 * DAY, false).unwrap();
    assert_eq!(report.rows(), 3, "{report:?}");
    assert!(all(&engine).iter().all(|(_, tier)| tier == "decision"));
    assert_eq!(all(&engine).len(), 2);
    // The status says when the decision tier's data goes: its keep after arrival.
    let status = engine.retention_status().unwrap();
    let decision = status.iter().find(|tier| tier.tier == "decision").unwrap();
    assert!(
        decision.next_expiry.unwrap() >= arrived + 400 * DAY,
        "{decision:?}"
    );
    drop(engine);
    // Reopened: the catalog kept the arrival times.
    let engine = Engine::open(dir.path(), options_counting_from(AgeFrom::Arrival)).unwrap();
    assert!(
        engine
            .expire(now + 399 * DAY, false)
            .unwrap()
            .segments
            .is_empty()
    );
    assert_eq!(engine.expire(now + 401 * DAY, false).unwrap().rows(), 2);
}

#[test]
fn data_that_arrives_older_than_its_tier_keeps_is_stored_and_goes_at_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options()).unwrap();
    let now = BASE + 100 * DAY;
    // Started 30 days before `now`: past the standard tier's 14 days on arrival.
    engine.write(spans(1, 0, 3, now - 30 * DAY, None)).unwrap();
    engine.write(spans(2, 0, 3, now - DAY, None)).unwrap();
    assert_eq!(
        all(&engine).len(),
        6,
        "accepted and readable until expiry runs"
    );
    // Expiry works on sealed segments only; the memtable is sealed first in practice.
    assert!(engine.expire(now, false).unwrap().segments.is_empty());
    engine.seal().unwrap();
    let report = engine.expire(now, false).unwrap();
    assert_eq!(report.rows(), 3);
    assert_eq!(all(&engine).len(), 3);
}

#[test]
fn a_held_tier_or_session_does_not_expire_and_the_run_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options()).unwrap();
    engine.write(spans(1, 0, 2, BASE, None)).unwrap();
    engine.write(spans(2, 0, 2, BASE + DAY, None)).unwrap();
    engine.seal().unwrap();
    engine
        .hold(&engine::HoldTarget::Tier("standard".to_owned()))
        .unwrap();
    let report = engine.expire(BASE + 30 * DAY, false).unwrap();
    assert!(report.segments.is_empty());
    assert_eq!(report.refused.len(), 2, "{report:?}");
    assert!(report.refused[0].contains("legal hold"), "{report:?}");
    assert_eq!(all(&engine).len(), 4);
    engine
        .release(&engine::HoldTarget::Tier("standard".to_owned()))
        .unwrap();
    // A held session keeps the segment that holds it; the other goes.
    engine
        .hold(&engine::HoldTarget::Session("sess-2".to_owned()))
        .unwrap();
    let report = engine.expire(BASE + 30 * DAY, false).unwrap();
    assert_eq!(report.segments.len(), 1);
    assert_eq!(report.refused.len(), 1);
    let left = all(&engine);
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|(span, _)| span.starts_with("00000002")));
    assert!(engine.verify().unwrap().is_ok());
}

#[test]
fn status_counts_every_span_by_its_resolved_tier_sealed_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options()).unwrap();
    // Sealed: trace 1 (3 spans) and trace 2 (2 spans), standard.
    engine.write(spans(1, 0, 3, BASE, None)).unwrap();
    engine.write(spans(2, 0, 2, BASE, None)).unwrap();
    engine.seal().unwrap();
    // In memory: a decision span of trace 1 (promoting its 3 sealed spans), one standard span
    // of trace 3.
    engine
        .write(spans(1, 3, 1, BASE, Some("decision")))
        .unwrap();
    engine.write(spans(3, 0, 1, BASE, None)).unwrap();
    let counts = |engine: &Engine| -> Vec<(String, u64, u64)> {
        engine
            .retention_status()
            .unwrap()
            .into_iter()
            .map(|tier| (tier.tier, tier.spans, tier.unsealed))
            .collect()
    };
    // From the input: trace 1 is 4 decision spans (1 unsealed); traces 2 and 3 are 3
    // standard spans (1 unsealed).
    assert_eq!(
        counts(&engine),
        vec![("decision".to_owned(), 4, 1), ("standard".to_owned(), 3, 1)]
    );
    // The same as a read of every span's resolved tier.
    let mut read: Vec<String> = all(&engine).into_iter().map(|(_, tier)| tier).collect();
    read.sort();
    assert_eq!(read.iter().filter(|tier| *tier == "decision").count(), 4);
    assert_eq!(read.len(), 7);
    engine.seal().unwrap();
    assert_eq!(
        counts(&engine),
        vec![("decision".to_owned(), 4, 0), ("standard".to_owned(), 3, 0)]
    );
    drop(engine);
    let engine = Engine::open(dir.path(), options()).unwrap();
    assert_eq!(counts(&engine)[0], ("decision".to_owned(), 4, 0));
}

#[test]
fn expiry_during_a_read_leaves_the_read_whole_and_deletes_the_file_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options()).unwrap();
    engine.write(spans(1, 0, 5, BASE, None)).unwrap();
    engine.seal().unwrap();
    let file = dir.path().join(&engine.segments()[0].path);
    let sidecars: Vec<std::path::PathBuf> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert!(sidecars.len() > 1, "span file and agent-table files");

    // A query plans its read, then expiry removes the segment before the query reads it.
    let plan = engine.plan_scan(&ScanRequest::default()).unwrap();
    let report = engine.expire(BASE + 30 * DAY, false).unwrap();
    assert_eq!(report.rows(), 5);
    assert!(engine.segments().is_empty(), "out of the catalog at once");
    assert!(file.exists(), "kept while the planned read holds it");
    let rows: usize = plan
        .collect()
        .unwrap()
        .iter()
        .map(|batch| batch.num_rows())
        .sum();
    assert_eq!(rows, 5, "the read sees all of the segment");
    // A new read sees none of it, and the files go once no reader holds them.
    assert!(all(&engine).is_empty());
    assert!(!file.exists());
    assert!(sidecars.iter().all(|path| !path.exists()), "{sidecars:?}");
}

#[test]
fn a_tier_the_configuration_does_not_define_is_shown_and_never_expired() {
    let dir = tempfile::tempdir().unwrap();
    let with_audit = || {
        let policy = RetentionPolicy::new(
            vec![
                Tier::new("audit", Duration::from_secs(30 * 86_400)),
                Tier::new("short", Duration::from_secs(86_400)),
            ],
            "short",
        )
        .unwrap();
        Options::default()
            .with_background_sealing(false)
            .with_retention(policy)
    };
    let engine = Engine::open(dir.path(), with_audit()).unwrap();
    engine.write(spans(1, 0, 2, BASE, Some("audit"))).unwrap();
    engine.seal().unwrap();
    drop(engine);

    // Opened with the default tiers (no "audit"): 20 days on, the 30-day data stays.
    let engine = Engine::open(dir.path(), options_counting_from(AgeFrom::Arrival)).unwrap();
    let report = engine.expire(now_ns() + 20 * DAY, false).unwrap();
    assert!(report.segments.is_empty(), "{report:?}");
    assert_eq!(report.refused.len(), 1);
    assert!(
        report.refused[0].contains("tier \"audit\" is not in this configuration"),
        "{report:?}"
    );
    assert_eq!(all(&engine).len(), 2);
    let status = engine.retention_status().unwrap();
    let audit = status.iter().find(|tier| tier.tier == "audit").unwrap();
    assert_eq!(
        (audit.spans, audit.configured, audit.next_expiry),
        (2, false, None)
    );
    drop(engine);
    // With its configuration again, it goes after its own keep.
    let engine = Engine::open(dir.path(), with_audit()).unwrap();
    assert!(
        engine
            .expire(now_ns() + 29 * DAY, false)
            .unwrap()
            .segments
            .is_empty()
    );
    assert_eq!(engine.expire(now_ns() + 31 * DAY, false).unwrap().rows(), 2);
}
