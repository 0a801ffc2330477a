//! `Engine::purge`: every span (memtable, WAL, segments), index entry, trace key, content blob and
//! reference and hold is gone while the engine runs, the chain records it and verifies, writes
//! after it work, nothing purged comes back on reopen, and racing writes land whole on one side.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arrow::array::{AsArray, RecordBatch};
use engine::schema::columns;
use engine::{
    ContentBatch, ContentPiece, ContentRef, Engine, EngineStats, HoldTarget, Options, ScanRequest,
    SpanId, TraceId, WriteBatch, verify_data_dir,
};

use crate::chain::manual;

fn trace_id(n: u32) -> TraceId {
    let mut raw = [0u8; 16];
    raw[12..].copy_from_slice(&n.to_be_bytes());
    raw[0] = 0x70;
    TraceId(raw)
}

/// Spans `first..first + count` of `trace` on day `day` after the chain tests' BASE, each with `session`.
fn spans(trace: u32, first: u32, count: u32, session: Option<&str>, day: i64) -> RecordBatch {
    crate::chain::trace_spans(trace_id(trace), trace, first..first + count, session, day)
}

/// Rows per trace id (hex) that the request returns.
fn rows_by_trace(engine: &Engine, request: &ScanRequest) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for batch in engine.scan(request).unwrap() {
        let ids = batch
            .column_by_name(columns::TRACE_ID)
            .unwrap()
            .as_string::<i32>();
        for row in 0..batch.num_rows() {
            *out.entry(ids.value(row).to_owned()).or_default() += 1;
        }
    }
    out
}

pub(crate) fn count(engine: &Engine, request: &ScanRequest) -> usize {
    engine
        .scan(request)
        .unwrap()
        .iter()
        .map(RecordBatch::num_rows)
        .sum()
}

pub(crate) fn session(id: &str) -> ScanRequest {
    ScanRequest {
        session_ids: Some(vec![id.to_owned()]),
        ..ScanRequest::default()
    }
}

fn trace(n: u32) -> ScanRequest {
    ScanRequest::for_trace(trace_id(n))
}

/// Every file under `segments/`.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("segments")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// `rows` (of one trace) with content: a reference on the first row's span to one blob.
fn with_content(rows: RecordBatch, trace: u32, text: &str, blob: [u8; 32]) -> WriteBatch {
    let span = rows
        .column_by_name(columns::SPAN_ID)
        .unwrap()
        .as_string::<i32>()
        .value(0)
        .to_owned();
    WriteBatch {
        spans: rows,
        content: content(trace, SpanId::from_hex(&span).unwrap(), text, blob),
    }
}

fn content(trace: u32, span: SpanId, text: &str, blob: [u8; 32]) -> ContentBatch {
    ContentBatch {
        blobs: vec![(blob, text.to_owned())],
        refs: vec![ContentRef {
            trace_id: trace_id(trace),
            span_id: span,
            key: "gen_ai.input.messages".to_owned(),
            digest: [9; 32],
            form: 0,
            pieces: Some(vec![ContentPiece::Blob(blob)]),
            tier: None,
        }],
        stored_unix_nanos: 10,
    }
}

/// Three sealed segments (sessions s1 and s2, and rows of trace 9 whose session arrives later:
/// late keys), and unsealed rows of trace 3 and 9; content of trace 1 and two holds.
/// Returns the rows written.
fn fill(engine: &Engine) -> u64 {
    engine
        .write_batch(with_content(
            spans(1, 0, 5, Some("s1"), 0),
            1,
            "\"hello\"",
            [7; 32],
        ))
        .unwrap();
    engine.write(spans(9, 0, 3, None, 1)).unwrap();
    engine.seal().unwrap();
    engine.write(spans(2, 0, 4, Some("s2"), 1)).unwrap();
    engine.seal().unwrap();
    engine.write(spans(3, 0, 2, Some("s3"), 2)).unwrap();
    engine.write(spans(9, 3, 1, Some("late"), 0)).unwrap();
    engine.hold(&HoldTarget::Session("s1".to_owned())).unwrap();
    engine
        .hold(&HoldTarget::Tier("standard".to_owned()))
        .unwrap();
    assert_eq!(count(engine, &session("late")), 4, "late keys apply");
    assert_eq!(engine.stats().segments, 3, "two days in the first seal");
    5 + 3 + 4 + 2 + 1
}

fn assert_empty(engine: &Engine) {
    assert!(rows_by_trace(engine, &ScanRequest::default()).is_empty());
    for n in [1, 2, 3, 9] {
        assert_eq!(count(engine, &trace(n)), 0, "trace {n}");
    }
    for id in ["s1", "s2", "s3", "late"] {
        assert_eq!(count(engine, &session(id)), 0, "session {id}");
    }
    assert_eq!(engine.stats(), EngineStats::default());
    assert!(engine.segments().is_empty());
    let content = engine.content_stats().unwrap();
    assert_eq!((content.messages, content.references), (0, 0));
    assert!(engine.scan_content(None).unwrap().is_empty());
    assert!(engine.holds().unwrap().is_empty());
}

#[test]
fn purge_removes_every_span_index_key_blob_and_hold_and_the_chain_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), manual()).unwrap();
    let digest_key = engine.content_digest_key().unwrap();
    let written = fill(&engine);
    let sealed_ids: Vec<u64> = engine.segments().iter().map(|meta| meta.id).collect();
    let files = segment_files(dir.path());
    // Each segment: its span file and one stored agent table file per agent table.
    assert_eq!(files.len(), 3 * 6);

    let report = engine.purge().unwrap();
    assert_eq!(report.spans, written);
    assert_eq!(report.segments, 3);
    assert!(report.segment_bytes > 0);
    assert_eq!((report.content_blobs, report.content_references), (1, 1));
    assert_eq!(report.holds, 2);

    assert_empty(&engine);
    assert!(
        segment_files(dir.path()).is_empty(),
        "segment files deleted"
    );
    assert!(
        std::fs::read_dir(dir.path().join("segments"))
            .unwrap()
            .next()
            .is_none(),
        "empty tier and day directories removed"
    );
    assert_eq!(engine.content_digest_key().unwrap(), digest_key, "kept");

    let verified = engine.verify().unwrap();
    assert!(verified.is_ok(), "{verified}");
    assert_eq!(verified.segments, 0);
    assert_eq!(verified.purged, 3);
    assert_eq!(verified.entries, 6, "three seals, three purges");
    assert!(verified.to_string().contains(", 3 purged"), "{verified}");

    // A second purge of an empty store removes nothing and chains nothing.
    let again = engine.purge().unwrap();
    assert_eq!((again.spans, again.segments), (0, 0));
    assert_eq!(engine.verify().unwrap().entries, 6);

    // Writes work again, also for purged trace ids, without the purged rows or keys.
    engine.write(spans(1, 0, 2, Some("s1"), 0)).unwrap();
    engine.write(spans(9, 0, 1, None, 0)).unwrap();
    assert_eq!(count(&engine, &trace(1)), 2);
    assert_eq!(count(&engine, &session("s1")), 2);
    assert_eq!(count(&engine, &session("late")), 0, "purged trace keys");
    engine.seal().unwrap();
    assert_eq!(count(&engine, &trace(1)), 2);
    assert_eq!(count(&engine, &trace(9)), 1);
    assert_eq!(count(&engine, &session("late")), 0);
    assert_eq!(engine.stats().segment_rows, 3);
    assert!(
        engine
            .segments()
            .iter()
            .all(|meta| meta.id > *sealed_ids.iter().max().unwrap()),
        "segment ids are not reused"
    );
    engine
        .write_batch(with_content(
            spans(1, 0, 1, None, 0),
            1,
            "\"again\"",
            [8; 32],
        ))
        .unwrap();
    assert_eq!(engine.content_stats().unwrap().messages, 1);
    let verified = engine.verify().unwrap();
    assert!(verified.is_ok(), "{verified}");
    assert_eq!((verified.segments, verified.purged), (1, 3));
    engine.close().unwrap();
    drop(engine);
    let verified = verify_data_dir(dir.path()).unwrap();
    assert!(verified.is_ok(), "{verified}");
}

#[test]
fn nothing_purged_comes_back_after_a_reopen_with_or_without_close() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path(), manual()).unwrap();
        fill(&engine);
        engine.purge().unwrap();
        engine.write(spans(4, 0, 3, Some("after"), 0)).unwrap();
        // Dropped without close: the post-purge write is only in the WAL.
    }
    {
        let engine = Engine::open(dir.path(), manual()).unwrap();
        let recovery = engine.recovery();
        assert_eq!((recovery.wal_rows, recovery.segments), (3, 0));
        assert_eq!(recovery.orphans_removed, 0);
        assert_eq!(
            rows_by_trace(&engine, &ScanRequest::default()),
            BTreeMap::from([(trace_id(4).to_string(), 3)])
        );
        assert_eq!(count(&engine, &session("after")), 3);
        assert_eq!(count(&engine, &session("late")), 0);
        assert!(engine.holds().unwrap().is_empty());
        assert_eq!(engine.content_stats().unwrap().messages, 0);
        assert!(engine.verify().unwrap().is_ok());

        // Purge again, write, close (which seals the post-purge rows).
        let report = engine.purge().unwrap();
        assert_eq!((report.spans, report.segments), (3, 0));
        engine.write(spans(5, 0, 2, Some("closed"), 0)).unwrap();
        engine.close().unwrap();
    }
    let verified = verify_data_dir(dir.path()).unwrap();
    assert!(verified.is_ok(), "{verified}");
    assert_eq!((verified.segments, verified.purged), (1, 3));
    let engine = Engine::open(dir.path(), manual()).unwrap();
    assert_eq!(engine.recovery().wal_rows, 0);
    assert_eq!(
        rows_by_trace(&engine, &ScanRequest::default()),
        BTreeMap::from([(trace_id(5).to_string(), 2)])
    );
    assert_eq!(count(&engine, &session("after")), 0);
}

#[test]
fn a_segment_file_left_behind_by_a_crash_after_the_purge_commit_is_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), manual()).unwrap();
    engine.write(spans(1, 0, 5, Some("s1"), 0)).unwrap();
    engine.seal().unwrap();
    let file = segment_files(dir.path()).remove(0);
    let bytes = std::fs::read(&file).unwrap();
    engine.purge().unwrap();
    // As if the process died after the commit, before deleting the file.
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, bytes).unwrap();
    drop(engine);

    let engine = Engine::open(dir.path(), manual()).unwrap();
    assert_eq!(engine.recovery().orphans_removed, 1);
    assert!(segment_files(dir.path()).is_empty());
    assert!(rows_by_trace(&engine, &ScanRequest::default()).is_empty());
    assert!(engine.verify().unwrap().is_ok());
}

#[test]
fn writes_racing_with_purge_land_entirely_before_or_after_it_and_survive_a_restart() {
    const WRITERS: u32 = 4;
    const WRITES: u32 = 60;
    const SPANS: u32 = 3;
    let dir = tempfile::tempdir().unwrap();
    // Background seals race with the writes and the purge too.
    let options = Options::default().with_seal_max_rows(40);
    let engine = Engine::open(dir.path(), options.clone()).unwrap();
    let acknowledged = AtomicUsize::new(0);
    let purged = AtomicBool::new(false);
    let (report, started_after) = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let (engine, acknowledged, purged) = (&engine, &acknowledged, &purged);
                scope.spawn(move || {
                    let mut after = Vec::new();
                    for index in 0..WRITES {
                        let trace = writer * 1_000 + index;
                        let started_after_purge = purged.load(Ordering::Acquire);
                        engine
                            .write(spans(trace, 0, SPANS, Some("race"), 0))
                            .unwrap();
                        acknowledged.fetch_add(1, Ordering::AcqRel);
                        if started_after_purge {
                            after.push(trace);
                        }
                    }
                    after
                })
            })
            .collect();
        // Purge once a third of the writes are in, while the rest are under way.
        while acknowledged.load(Ordering::Acquire) < (WRITERS * WRITES / 3) as usize {
            std::thread::yield_now();
        }
        let report = engine.purge().unwrap();
        purged.store(true, Ordering::Release);
        let mut after = BTreeSet::new();
        for writer in writers {
            after.extend(writer.join().unwrap());
        }
        (report, after)
    });

    let visible = rows_by_trace(&engine, &ScanRequest::default());
    assert!(
        visible.values().all(|rows| *rows == SPANS as usize),
        "a write was split by the purge: {visible:?}"
    );
    for trace in &started_after {
        assert!(
            visible.contains_key(&trace_id(*trace).to_string()),
            "write of trace {trace} started after the purge returned but is gone"
        );
    }
    let total = u64::from(WRITERS * WRITES * SPANS);
    let kept: u64 = visible.values().map(|rows| *rows as u64).sum();
    assert_eq!(kept + report.spans, total, "every row purged or kept");
    assert!(report.spans > 0);
    assert!(engine.verify().unwrap().is_ok());

    // Whatever a scan showed survives a crash (drop without close), and nothing else does.
    drop(engine);
    let engine = Engine::open(dir.path(), options).unwrap();
    assert_eq!(rows_by_trace(&engine, &ScanRequest::default()), visible);
    assert!(engine.verify().unwrap().is_ok());
    engine.close().unwrap();
}
