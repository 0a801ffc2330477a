//! The stored agent tables (sidecars written at seal) against a derivation over every span of
//! the store at once, through every change a store goes through: traces split across seals
//! (completed and owned by the later segment), late roots carrying the session (trace-level key
//! propagation), re-sent copies, rows still in the memtable, restarts, a lost sidecar file,
//! erasure, expiry with tier promotion, expiry of an owned trace's older spans, purge; and
//! the `sessions` rollup kept between reads (reused, extended by a seal, rebuilt).
//!
//! The reference side reads every span with `Engine::scan` and runs the derivation once over
//! all of them: it has no split set, no sidecars and no per-segment pieces, which is exactly
//! what the stored read must be equivalent to.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use engine::agent::{AgentTable, derive_agent_table};
use engine::{Engine, ScanRequest};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use query::{Options, SqlEngine};
use tempfile::TempDir;

struct Store {
    sql: SqlEngine,
    engine: Arc<Engine>,
}

fn open(dir: &Path) -> Store {
    open_with(dir, |options| options)
}

fn open_with(dir: &Path, tune: impl FnOnce(engine::Options) -> engine::Options) -> Store {
    // Ages count from span time: the tests move expiry's clock over generated dates, while
    // every span arrives now.
    let default = engine::RetentionPolicy::default();
    let tiers = default
        .tiers()
        .iter()
        .map(|tier| engine::Tier {
            age_from: engine::AgeFrom::SpanTime,
            ..tier.clone()
        })
        .collect();
    let policy = engine::RetentionPolicy::new(tiers, default.default_tier()).unwrap();
    let engine = Arc::new(
        Engine::open(
            dir,
            tune(
                engine::Options::default()
                    .with_background_sealing(false)
                    .with_retention(policy),
            ),
        )
        .unwrap(),
    );
    let sql = SqlEngine::new(Arc::clone(&engine), Options::default()).unwrap();
    Store { sql, engine }
}

/// The traces of `config` and an empty store in a new directory.
fn new_store(config: &testdata::AgentTraceConfig) -> (Vec<testdata::AgentTrace>, TempDir, Store) {
    let traces = testdata::agent_trace_iter(config).collect();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    (traces, dir, store)
}

/// [`new_store`] with every trace written and sealed into one segment.
fn sealed_store(
    config: &testdata::AgentTraceConfig,
) -> (Vec<testdata::AgentTrace>, TempDir, Store) {
    let (traces, dir, store) = new_store(config);
    write(&store, &request_of(&traces, |_, _| true));
    store.engine.seal().unwrap();
    (traces, dir, store)
}

fn write(store: &Store, request: &ExportTraceServiceRequest) {
    store
        .engine
        .write(ingest::to_span_batch(request).unwrap().batch)
        .unwrap();
}

/// Every row of `batches` as one line, sorted (row order is not part of the answer).
fn lines(batches: &[RecordBatch]) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in batches {
        let formatters: Vec<ArrayFormatter<'_>> = batch
            .columns()
            .iter()
            .map(|column| ArrayFormatter::try_new(column.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|formatter| formatter.value(row).to_string())
                .collect();
            out.push(cells.join(" | "));
        }
    }
    out.sort();
    out
}

/// Every agent table read whole through SQL (the stored path) equals the derivation over
/// every span; returns the row counts.
async fn assert_stored_equals_derived(store: &Store, context: &str) -> Vec<usize> {
    let spans = store.engine.scan(&ScanRequest::default()).unwrap();
    let mut counts = Vec::new();
    for table in AgentTable::ALL {
        let expected = derive_agent_table(table, &spans).unwrap();
        let sql = format!("SELECT * FROM {}", table.name());
        let output = store.sql.execute(&sql).await.unwrap();
        let got = lines(&output.batches);
        let want = lines(&[expected]);
        if table == AgentTable::Sessions {
            // The second read takes the rollup the first one kept.
            let again = store.sql.execute(&sql).await.unwrap();
            assert_eq!(lines(&again.batches), got, "{context}: sessions read again");
        }
        if got != want {
            let extra: Vec<&String> = got.iter().filter(|row| !want.contains(row)).collect();
            let missing: Vec<&String> = want.iter().filter(|row| !got.contains(row)).collect();
            panic!(
                "{context}: {}: {} rows stored, {} derived; first rows only stored: {:#?}; \
                 first rows only derived: {:#?}",
                table.name(),
                got.len(),
                want.len(),
                &extra[..extra.len().min(3)],
                &missing[..missing.len().min(3)],
            );
        }
        // A count reads no column (row counts from the files' footers, split traces apart).
        let count = store
            .sql
            .execute(&format!("SELECT count(*) FROM {}", table.name()))
            .await
            .unwrap();
        assert_eq!(
            count.batches[0]
                .column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            i64::try_from(want.len()).unwrap(),
            "{context}: count(*) of {}",
            table.name()
        );
        counts.push(got.len());
    }
    counts
}

/// The counters of the stored read in `EXPLAIN ANALYZE` of a whole-table count.
async fn stored_metrics(store: &Store, table: &str) -> (u64, u64) {
    let output = store
        .sql
        .execute(&format!("EXPLAIN ANALYZE SELECT count(*) FROM {table}"))
        .await
        .unwrap();
    let text = lines(&output.batches).join("\n");
    let metric = |name: &str| -> u64 {
        let at = text
            .find(&format!("{name}="))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"));
        text[at + name.len() + 1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    assert!(text.contains("StoredAgentExec"), "{text}");
    (metric("stored_rows"), metric("derived_traces"))
}

fn request_of(
    traces: &[testdata::AgentTrace],
    keep: impl Fn(usize, &Span) -> bool,
) -> ExportTraceServiceRequest {
    let mut request = ExportTraceServiceRequest::default();
    for (index, trace) in traces.iter().enumerate() {
        for resource in &trace.resource_spans {
            let mut resource = resource.clone();
            for scope in &mut resource.scope_spans {
                scope.spans.retain(|span| keep(index, span));
            }
            request.resource_spans.push(resource);
        }
    }
    request
}

/// Compaction rewrites a day's seals in session order. Every span, every session's read and
/// every stored agent table answers as before (late roots, a promoted tier, re-sent copies,
/// traces split across seals), a session's rows lie in at most two segments, the traces it
/// brought together are read from their sidecars again, the chain verifies, and a restart,
/// a later seal and an erasure keep all of it right.
#[tokio::test(flavor = "multi_thread")]
async fn compaction_keeps_every_answer_and_puts_each_session_in_one_segment() {
    let config = testdata::AgentTraceConfig {
        seed: 23,
        traces: 240,
        sessions: 12,
        tool_reissue_percent: 30,
        ..Default::default()
    };
    let traces: Vec<testdata::AgentTrace> = testdata::agent_trace_iter(&config).collect();
    let index_of: std::collections::HashMap<String, usize> = traces
        .iter()
        .enumerate()
        .map(|(index, trace)| (hex::encode(trace.trace_id), index))
        .collect();
    let dir: TempDir = tempfile::tempdir().unwrap();
    // Outputs of at most 600 rows: the day is cut into several.
    let store = open_with(dir.path(), |options| options.with_seal_max_rows(600));

    // Six waves of 40 traces, each sealed. Every fifth trace's root (which carries the
    // session) comes with the next wave, and every tenth one's promotes its trace to the
    // decision tier; some traces of the wave before are sent again.
    let late_root = |index: usize| index.is_multiple_of(5);
    for wave in 0..6usize {
        let now = wave * 40..(wave + 1) * 40;
        let before = wave.saturating_sub(1) * 40..wave * 40;
        let batch = ingest::to_span_batch(&request_of(&traces, |index, span| {
            let root = span.parent_span_id.is_empty();
            (now.contains(&index) && !(late_root(index) && root))
                || (before.contains(&index) && late_root(index) && root)
                || (before.contains(&index) && index % 7 == 1)
        }))
        .unwrap()
        .batch;
        let trace_ids = batch
            .column_by_name("trace_id")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let parents = batch
            .column_by_name("parent_span_id")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let tiers: Vec<Option<&str>> = (0..batch.num_rows())
            .map(|row| {
                let index = index_of[trace_ids.value(row)];
                (index.is_multiple_of(10) && parents.is_null(row) && before.contains(&index))
                    .then_some("decision")
            })
            .collect();
        store
            .engine
            .write(engine::with_retention_tiers(&batch, &tiers).unwrap())
            .unwrap();
        store.engine.seal().unwrap();
    }
    let sessions: std::collections::BTreeSet<String> = traces
        .iter()
        .map(|trace| trace.session_id.clone())
        .collect();
    let session_read = |store: &Store, session: &str| {
        let request = ScanRequest {
            session_ids: Some(vec![session.to_owned()]),
            ..ScanRequest::default()
        };
        let plan = store.engine.plan_scan(&request).unwrap();
        (plan.len(), lines(&plan.collect().unwrap()))
    };
    let all_spans = |store: &Store| lines(&store.engine.scan(&ScanRequest::default()).unwrap());
    let spans_before = all_spans(&store);
    let sessions_before: Vec<(usize, Vec<String>)> = sessions
        .iter()
        .map(|session| session_read(&store, session))
        .collect();
    assert!(
        sessions_before.iter().any(|(segments, _)| *segments > 2),
        "sessions lie in many seals before: {:?}",
        sessions_before.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    let counts = assert_stored_equals_derived(&store, "before compaction").await;

    let report = store.engine.compact().unwrap();
    assert_eq!(report.abandoned, 0, "{report:?}");
    let standard = report
        .groups
        .iter()
        .find(|group| group.tier == "standard")
        .unwrap_or_else(|| panic!("{report:?}"));
    assert!(standard.inputs.len() >= 6, "{report:?}");
    assert!(standard.outputs.len() >= 3, "{report:?}");
    let moved: u64 = report.groups.iter().map(|group| group.rows).sum();
    assert!(
        moved >= spans_before.len() as u64,
        "{moved} {}",
        spans_before.len()
    );

    assert_eq!(all_spans(&store), spans_before, "every span, as before");
    for (session, (_, before)) in sessions.iter().zip(&sessions_before) {
        let (segments, rows) = session_read(&store, session);
        assert_eq!(&rows, before, "session {session}");
        // At most two segments per tier its traces are kept in.
        let promoted =
            (0..200).any(|index| index % 10 == 0 && traces[index].session_id == *session);
        let bound = if promoted { 4 } else { 2 };
        assert!(
            segments <= bound,
            "session {session} in {segments} segments (promoted: {promoted})"
        );
    }
    assert_eq!(
        assert_stored_equals_derived(&store, "after compaction").await,
        counts
    );
    for table in ["tool_calls", "agent_runs", "decisions"] {
        assert_eq!(
            stored_metrics(&store, table).await.1,
            0,
            "{table}: no trace is split any more, none is derived"
        );
    }
    let verified = store.engine.verify().unwrap();
    assert!(verified.is_ok(), "{verified}");

    // A restart reads the compacted catalog; nothing is left to compact.
    drop(store);
    let store = open_with(dir.path(), |options| options.with_seal_max_rows(600));
    assert_eq!(all_spans(&store), spans_before);
    assert_eq!(
        assert_stored_equals_derived(&store, "after a restart").await,
        counts
    );
    assert!(store.engine.compact().unwrap().groups.is_empty());

    // Copies of a few traces sealed into the same day: a small segment beside the run is left
    // alone, and the answers stay right.
    write(&store, &request_of(&traces, |index, _| index % 50 == 3));
    store.engine.seal().unwrap();
    assert!(store.engine.compact().unwrap().groups.is_empty());
    assert_stored_equals_derived(&store, "a seal after compaction").await;

    // Erasing a session rewrites the compacted segment that holds it.
    let session = &traces[7].session_id;
    let report = store.engine.erase_session(session).unwrap();
    assert!(!report.segments.is_empty());
    assert_eq!(session_read(&store, session).1, Vec::<String>::new());
    assert_stored_equals_derived(&store, "an erasure after compaction").await;
    let verified = store.engine.verify().unwrap();
    assert!(verified.is_ok(), "{verified}");
    // What the erasure rewrote is compacted again when asked, and nothing fails or is given up.
    let report = store.engine.compact().unwrap();
    assert_eq!(report.abandoned, 0, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert_stored_equals_derived(&store, "compaction after an erasure").await;
    assert!(store.engine.verify().unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_agent_tables_equal_a_derivation_over_every_span_through_every_change() {
    let config = testdata::AgentTraceConfig {
        seed: 11,
        traces: 60,
        sessions: 9,
        tool_reissue_percent: 30,
        ..Default::default()
    };
    let (traces, dir, store) = new_store(&config);

    // Wave 1: the first 40 traces, except that every fourth sends only its children; sealed.
    let late_root = |index: usize| index.is_multiple_of(4) && index < 40;
    write(
        &store,
        &request_of(&traces, |index, span| {
            index < 40 && !(late_root(index) && span.parent_span_id.is_empty())
        }),
    );
    store.engine.seal().unwrap();
    let first = assert_stored_equals_derived(&store, "one segment").await;
    assert!(first.iter().all(|count| *count > 0), "{first:?}");
    let (stored, derived) = stored_metrics(&store, "tool_calls").await;
    assert!(stored > 0 && derived == 0, "{stored} {derived}");

    // Wave 2: the other 20 traces, and the late roots, which carry the session; sealed. The
    // late-rooted traces are now split across two segments. A retention rule places the late
    // roots of every eighth trace in the decision tier, which promotes their sealed children.
    let wave = ingest::to_span_batch(&request_of(&traces, |index, span| {
        index >= 40 || (late_root(index) && span.parent_span_id.is_empty())
    }))
    .unwrap()
    .batch;
    let promoted: HashSet<String> = (0..40)
        .filter(|index: &usize| index.is_multiple_of(8))
        .map(|index| hex::encode(traces[index].trace_id))
        .collect();
    let trace_ids = wave
        .column_by_name("trace_id")
        .unwrap()
        .as_string::<i32>()
        .clone();
    let parents = wave
        .column_by_name("parent_span_id")
        .unwrap()
        .as_string::<i32>()
        .clone();
    let tiers: Vec<Option<&str>> = (0..wave.num_rows())
        .map(|row| {
            (promoted.contains(trace_ids.value(row)) && parents.is_null(row)).then_some("decision")
        })
        .collect();
    store
        .engine
        .write(engine::with_retention_tiers(&wave, &tiers).unwrap())
        .unwrap();
    store.engine.seal().unwrap();
    assert_stored_equals_derived(&store, "late roots sealed").await;
    // The seal read the late-rooted traces' earlier spans and stored them whole: nothing is
    // derived at read time, and every run is read from the stored rows.
    let runs = assert_stored_equals_derived(&store, "late roots sealed")
        .await
        .remove(3);
    assert_eq!(
        stored_metrics(&store, "agent_runs").await,
        (runs as u64, 0),
        "split traces are owned by the segment that completed them"
    );

    // Wave 3: traces 20..30 sent again (an exporter's retry), left in the memtable.
    write(
        &store,
        &request_of(&traces, |index, _| (20..30).contains(&index)),
    );
    assert_stored_equals_derived(&store, "re-sent copies in the memtable").await;
    let (_, derived) = stored_metrics(&store, "decisions").await;
    assert_eq!(
        derived, 10,
        "the traces in the memtable are derived from spans"
    );

    // A restart replays the memtable; the sidecars are read as they were.
    drop(store);
    let store = open(dir.path());
    assert_stored_equals_derived(&store, "after a restart").await;
    store.engine.seal().unwrap();
    let sealed = assert_stored_equals_derived(&store, "copies sealed").await;
    assert_eq!(stored_metrics(&store, "llm_calls").await.1, 0);

    // A lost sidecar is rebuilt at open.
    let segment = Arc::clone(&store.engine.segments()[0]);
    let sidecar = dir
        .path()
        .join(segment.path.replace(".parquet", ".decisions.parquet"));
    assert!(sidecar.is_file(), "{}", sidecar.display());
    drop(store);
    std::fs::remove_file(&sidecar).unwrap();
    let store = open(dir.path());
    assert!(sidecar.is_file(), "rebuilt at open");
    assert_eq!(
        assert_stored_equals_derived(&store, "rebuilt").await,
        sealed
    );
    // The rebuilt files' checks are in the catalog entry, and in the segment list meanwhile.
    let checks = |store: &Store| {
        store
            .engine
            .segments()
            .iter()
            .find(|meta| meta.id == segment.id)
            .and_then(|meta| meta.sidecar_integrity.clone())
            .expect("the rebuilt segment's agent-table files are checked")
    };
    let rebuilt = checks(&store);
    drop(store);
    let store = open(dir.path());
    assert_eq!(checks(&store), rebuilt);
    // A file that does not match its catalog check (a rebuild that crashed before its catalog
    // entry committed, or damage) is written again at open.
    drop(store);
    let mut bytes = std::fs::read(&sidecar).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0x20;
    std::fs::write(&sidecar, &bytes).unwrap();
    let store = open(dir.path());
    assert!(
        std::fs::read(&sidecar).unwrap() != bytes,
        "rewritten at open"
    );
    assert_eq!(
        assert_stored_equals_derived(&store, "rebuilt after a mismatch").await,
        sealed
    );

    // Erasing one session rewrites the segments that held it, with new sidecars; trace 4's
    // session is in the segment that owns the late-rooted traces, so the other late-rooted
    // traces lose their owner and are derived from their spans.
    let session = &traces[4].session_id;
    store.engine.erase_session(session).unwrap();
    let erased = assert_stored_equals_derived(&store, "after an erasure").await;
    assert!(erased[4] == sealed[4] - 1, "{erased:?} {sealed:?}");

    // Expiry past the standard keep: the promoted traces stay (their children moved out of
    // the expired standard segment into a decision-tier one), the rest goes.
    let day = 86_400 * 1_000_000_000_i64;
    store
        .engine
        .expire(config.base_time_unix_nano as i64 + 31 * day, false)
        .unwrap();
    let expired = assert_stored_equals_derived(&store, "after expiry").await;
    assert!(expired[3] < erased[3], "{expired:?} {erased:?}");
    let left = store
        .sql
        .execute("SELECT DISTINCT trace_id FROM llm_calls")
        .await
        .unwrap();
    let left: HashSet<String> = lines(&left.batches).into_iter().collect();
    let kept: HashSet<String> = promoted
        .iter()
        .filter(|trace| {
            traces
                .iter()
                .any(|t| hex::encode(t.trace_id) == **trace && t.session_id != *session)
        })
        .cloned()
        .collect();
    assert!(!kept.is_empty());
    assert_eq!(
        left, kept,
        "only the promoted traces keep their model calls"
    );

    store.engine.purge().unwrap();
    assert_eq!(
        assert_stored_equals_derived(&store, "after a purge").await,
        vec![0; 5]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_split_trace_whose_older_spans_expire_is_derived_from_what_is_left() {
    let config = testdata::AgentTraceConfig {
        seed: 5,
        traces: 3,
        sessions: 1,
        ..Default::default()
    };
    let (traces, _dir, store) = sealed_store(&config);
    // Fifteen days later, one more span of trace 0 (a copy of one of its children, with a new
    // id): sealed into a segment of its own day, which now owns the trace.
    let day_ns = 86_400_000_000_000_u64;
    let mut late = request_of(&traces[..1], |_, span| !span.parent_span_id.is_empty());
    for resource in &mut late.resource_spans {
        for scope in &mut resource.scope_spans {
            scope.spans.truncate(1);
            for span in &mut scope.spans {
                span.span_id = vec![0xab; 8];
                span.start_time_unix_nano += 15 * day_ns;
                span.end_time_unix_nano += 15 * day_ns;
            }
        }
        resource.scope_spans.retain(|scope| !scope.spans.is_empty());
    }
    late.resource_spans
        .retain(|resource| !resource.scope_spans.is_empty());
    write(&store, &late);
    store.engine.seal().unwrap();
    let before = assert_stored_equals_derived(&store, "split across days").await;
    assert_eq!(stored_metrics(&store, "llm_calls").await.1, 0);

    // The first day expires (standard keep: 14 days); the late span's day does not. The
    // owner's rows counted the expired spans: the trace is derived from the one span left.
    let as_of = config.base_time_unix_nano + 15 * day_ns + day_ns / 2;
    let report = store.engine.expire(as_of as i64, false).unwrap();
    assert_eq!(report.segments.len(), 1, "{report:?}");
    let after = assert_stored_equals_derived(&store, "after the first day expired").await;
    assert!(after[0] < before[0], "{after:?} {before:?}");
    assert_eq!(
        stored_metrics(&store, "llm_calls").await.1,
        1,
        "trace 0 is dirty"
    );
}

/// Counters of a whole `sessions` read in `EXPLAIN ANALYZE`, summed over partitions.
async fn sessions_read_metrics(store: &Store) -> (u64, u64) {
    let output = store
        .sql
        .execute("EXPLAIN ANALYZE SELECT * FROM sessions")
        .await
        .unwrap();
    let text = lines(&output.batches).join("\n");
    let line = text
        .lines()
        .find(|line| line.contains("StoredAgentExec"))
        .unwrap_or_else(|| panic!("no StoredAgentExec in\n{text}"));
    let metric = |name: &str| -> u64 {
        line.find(&format!("{name}="))
            .map(|at| {
                line[at + name.len() + 1..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .unwrap()
            })
            .unwrap_or(0)
    };
    (metric("sidecars_read"), metric("rollup_rows"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sessions_rollup_is_reused_extended_by_a_seal_and_rebuilt_after_a_change() {
    let config = testdata::AgentTraceConfig {
        seed: 23,
        traces: 30,
        sessions: 4,
        ..Default::default()
    };
    let (traces, _dir, store) = new_store(&config);
    for wave in 0..2 {
        write(&store, &request_of(&traces, |index, _| index / 10 == wave));
        store.engine.seal().unwrap();
    }
    let sessions = |store: &Store| {
        let spans = store.engine.scan(&ScanRequest::default()).unwrap();
        lines(&[derive_agent_table(AgentTable::Sessions, &spans).unwrap()])
    };
    let read = async |store: &Store| {
        let output = store.sql.execute("SELECT * FROM sessions").await.unwrap();
        lines(&output.batches)
    };

    // The first read reads both sidecars and keeps the rollup; the next reads none.
    assert_eq!(read(&store).await, sessions(&store));
    let (sidecars, rollup) = sessions_read_metrics(&store).await;
    assert_eq!((sidecars, rollup > 0), (0, true), "reused");

    // A seal of new traces of the same sessions adds a segment: only its sidecar is read,
    // merged with the rollup, and the rows are those of the whole store.
    write(&store, &request_of(&traces, |index, _| index >= 20));
    assert_eq!(read(&store).await, sessions(&store), "memtable rows added");
    store.engine.seal().unwrap();
    let (sidecars, rollup) = sessions_read_metrics(&store).await;
    assert_eq!(
        (sidecars, rollup > 0),
        (1, true),
        "extended by the new segment"
    );
    assert_eq!(read(&store).await, sessions(&store), "after the extension");
    assert_eq!(sessions_read_metrics(&store).await.0, 0);

    // Re-sent spans of a sealed trace in the memtable change what its segment skips: the
    // rollup is rebuilt from every sidecar, and the copies are counted once.
    write(&store, &request_of(&traces, |index, _| index == 3));
    assert_eq!(
        read(&store).await,
        sessions(&store),
        "a sealed trace re-sent"
    );
    assert_eq!(read(&store).await, sessions(&store), "read again");

    // Erasing a session rewrites segments: nothing of the old rollup is used, and the
    // session is gone.
    let erased = traces[0].session_id.clone();
    store.engine.seal().unwrap();
    store.engine.erase_session(&erased).unwrap();
    let (sidecars, _) = sessions_read_metrics(&store).await;
    assert!(sidecars >= 1, "rebuilt after the erasure: {sidecars}");
    let after = read(&store).await;
    assert_eq!(after, sessions(&store), "after the erasure");
    assert!(!after.iter().any(|row| row.contains(&erased)), "{after:?}");
    assert!(!after.is_empty());
}

/// An agent-table file is checked like a span segment: a flipped bit anywhere in it makes a
/// read of that table fail naming the file, or (where the read never looks) answer exactly as
/// before; never different rows.
#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_bit_in_an_agent_table_file_is_an_error_never_different_rows() {
    let config = testdata::AgentTraceConfig {
        seed: 5,
        traces: 40,
        sessions: 6,
        ..Default::default()
    };
    let (_traces, dir, store) = sealed_store(&config);
    let segments = store.engine.segments();
    assert_eq!(segments.len(), 1);
    let checks = segments[0]
        .sidecar_integrity
        .as_ref()
        .expect("the catalog entry keeps the agent-table files' checks");
    assert_eq!(checks.len(), AgentTable::ALL.len());
    let stem = segments[0]
        .path
        .strip_suffix(".parquet")
        .unwrap()
        .to_owned();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for table in [AgentTable::ToolCalls, AgentTable::Decisions] {
        let sql = format!("SELECT * FROM {}", table.name());
        let clean = lines(&store.sql.execute(&sql).await.unwrap().batches);
        assert!(!clean.is_empty(), "{}", table.name());
        let name = format!("{stem}.{}.parquet", table.name());
        let path = dir.path().join(&name);
        let original = std::fs::read(&path).unwrap();
        let (mut errors, mut unchanged) = (0, 0);
        for _ in 0..60 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = usize::try_from(state % original.len() as u64).unwrap();
            let mut damaged = original.clone();
            damaged[at] ^= 1 << (state >> 61);
            std::fs::write(&path, &damaged).unwrap();
            let in_data = (at as u64) < checks[table.position()].index_start;
            match store.sql.execute(&sql).await {
                Ok(output) => {
                    assert!(
                        !in_data,
                        "a flipped bit at {at} of {name}'s data read unnoticed"
                    );
                    assert_eq!(
                        lines(&output.batches),
                        clean,
                        "a flipped bit at {at} of {name} read as different rows"
                    );
                    unchanged += 1;
                }
                Err(error) => {
                    let mut text = error.to_string();
                    let mut cause = std::error::Error::source(&error);
                    while let Some(inner) = cause {
                        text.push_str(&format!(": {inner}"));
                        cause = inner.source();
                    }
                    assert!(text.contains(&name), "{text}");
                    errors += 1;
                }
            }
        }
        // A whole-table read covers every data block (asserted above); flips in the footer,
        // checked once and kept (`footer_cache`), read as before.
        assert!(
            errors >= 20,
            "{}: {errors} errors, {unchanged} unchanged reads",
            table.name()
        );
        std::fs::write(&path, &original).unwrap();
        assert_eq!(
            lines(&store.sql.execute(&sql).await.unwrap().batches),
            clean
        );
    }
}

/// Filters on a whole-store read are evaluated while the stored files are read (a row
/// filter; EXPLAIN shows it); every answer equals the same SQL run by plain DataFusion over
/// in-memory tables derived from every span, split traces and re-sent copies included.
#[tokio::test(flavor = "multi_thread")]
async fn row_filters_on_stored_reads_answer_as_plain_sql_over_the_derived_rows() {
    let config = testdata::AgentTraceConfig {
        seed: 17,
        traces: 50,
        sessions: 7,
        tool_reissue_percent: 30,
        ..Default::default()
    };
    let (traces, _dir, store) = new_store(&config);
    // Two seals; the second re-sends ten traces (copies) and sends the roots of five late.
    write(
        &store,
        &request_of(&traces, |index, span| {
            index < 40 && !(index % 8 == 0 && span.parent_span_id.is_empty())
        }),
    );
    store.engine.seal().unwrap();
    write(
        &store,
        &request_of(&traces, |index, span| {
            index >= 30 || (index % 8 == 0 && span.parent_span_id.is_empty())
        }),
    );
    store.engine.seal().unwrap();

    let spans = store.engine.scan(&ScanRequest::default()).unwrap();
    let reference = datafusion::prelude::SessionContext::new();
    for table in AgentTable::ALL {
        let derived = derive_agent_table(table, &spans).unwrap();
        let memory =
            datafusion::datasource::MemTable::try_new(derived.schema(), vec![vec![derived]])
                .unwrap();
        reference
            .register_table(table.name(), Arc::new(memory))
            .unwrap();
    }
    let queries = [
        "SELECT * FROM decisions WHERE verdict = 'deny'",
        "SELECT kind, policy_id, count(*) FROM decisions WHERE verdict = 'deny' GROUP BY 1, 2",
        "SELECT * FROM decisions WHERE verdict IN ('allow', 'escalate') OR policy_id IS NULL",
        "SELECT * FROM decisions WHERE NOT (verdict = 'deny') AND kind <> 'guardrail'",
        "SELECT * FROM tool_calls WHERE risk = 'destructive'",
        "SELECT * FROM tool_calls WHERE is_retry AND tool_name >= 'm'",
        "SELECT tool_name, count(*) FROM tool_calls WHERE retry_source IS NOT NULL GROUP BY 1",
        "SELECT * FROM llm_calls WHERE input_tokens > 500 AND request_model IS NOT NULL",
        "SELECT * FROM agent_runs WHERE outcome = 'error' OR errors > 0",
        "SELECT * FROM decisions WHERE verdict = 'no such verdict'",
    ];
    for sql in queries {
        let got = store.sql.execute(sql).await.unwrap();
        let want = reference.sql(sql).await.unwrap().collect().await.unwrap();
        assert_eq!(lines(&got.batches), lines(&want), "{sql}");
    }
    let plan = store
        .sql
        .execute("EXPLAIN SELECT * FROM decisions WHERE verdict = 'deny'")
        .await
        .unwrap();
    let text = lines(&plan.batches).join("\n");
    assert!(text.contains("row_filter=[verdict]"), "{text}");
    // A filter that is not a plain comparison is left to DataFusion alone.
    let plan = store
        .sql
        .execute("EXPLAIN SELECT * FROM decisions WHERE lower(verdict) = 'deny'")
        .await
        .unwrap();
    let text = lines(&plan.batches).join("\n");
    assert!(!text.contains("row_filter"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn row_filters_on_span_scans_answer_as_the_filter_over_every_row() {
    let config = testdata::AgentTraceConfig {
        seed: 23,
        traces: 40,
        sessions: 5,
        ..Default::default()
    };
    let (traces, _dir, store) = new_store(&config);
    // Two seals (the second re-sends ten traces and sends five roots late, so their keys
    // resolve at read), then rows left in the memtable.
    write(
        &store,
        &request_of(&traces, |index, span| {
            index < 25 && !(index % 6 == 0 && span.parent_span_id.is_empty())
        }),
    );
    store.engine.seal().unwrap();
    write(
        &store,
        &request_of(&traces, |index, span| {
            (15..32).contains(&index) || (index % 6 == 0 && span.parent_span_id.is_empty())
        }),
    );
    store.engine.seal().unwrap();
    write(&store, &request_of(&traces, |index, _| index >= 32));

    let every = store.engine.scan(&ScanRequest::default()).unwrap();
    let reference = datafusion::prelude::SessionContext::new();
    let memory = datafusion::datasource::MemTable::try_new(every[0].schema(), vec![every]).unwrap();
    reference.register_table("spans", Arc::new(memory)).unwrap();
    let queries = [
        "SELECT trace_id, span_id, span_name, attributes FROM spans WHERE span_kind = 'client'",
        "SELECT span_id, status_code FROM spans WHERE status_code = 'error' AND operation <> 'chat'",
        "SELECT span_id FROM spans WHERE span_kind IN ('client', 'server') OR parent_span_id IS NULL",
        "SELECT count(*) FROM spans WHERE tool_name IS NOT NULL",
        "SELECT span_id, session_id FROM spans WHERE session_id IS NOT NULL AND span_kind = 'internal'",
        "SELECT span_id FROM spans WHERE user_id IS NOT NULL AND duration_ns > 1000000",
        "SELECT span_id FROM spans WHERE span_kind = 'no such kind'",
        "SELECT span_id, trace_id FROM spans \
         WHERE trace_id = '0246dd1d74f0d4d7156fe23daea3197f' OR span_kind = 'server'",
        "SELECT span_id FROM spans WHERE span_kind = 'internal' LIMIT 100000",
    ];
    for sql in queries {
        let got = store.sql.execute(sql).await.unwrap();
        let want = reference.sql(sql).await.unwrap().collect().await.unwrap();
        assert!(!lines(&want).is_empty() || sql.contains("no such"), "{sql}");
        assert_eq!(lines(&got.batches), lines(&want), "{sql}");
    }
    let sql = &store.sql;
    let explain = |query: &'static str| async move {
        let plan = sql.execute(query).await.unwrap();
        lines(&plan.batches).join("\n")
    };
    let text = explain("EXPLAIN SELECT span_id FROM spans WHERE span_kind = 'server'").await;
    assert!(text.contains("row_filter=[span_kind]"), "{text}");
    let text = explain(
        "EXPLAIN SELECT span_id FROM spans WHERE span_kind IN ('client', 'server') \
         OR parent_span_id IS NULL",
    )
    .await;
    assert!(
        text.contains("row_filter=[parent_span_id, span_kind]"),
        "{text}"
    );
    // Keys a read resolves from the trace are never filtered as stored, and filters that keep
    // most rows are left to DataFusion.
    for sql in [
        "EXPLAIN SELECT span_id FROM spans WHERE user_id IS NULL",
        "EXPLAIN SELECT span_id FROM spans WHERE parent_span_id IS NOT NULL",
        "EXPLAIN SELECT span_id FROM spans WHERE span_kind <> 'internal'",
    ] {
        let text = explain(sql).await;
        assert!(!text.contains("row_filter"), "{sql}: {text}");
    }
}
