//! Storage faults injected at random into the database file (reads, writes, length changes,
//! fsyncs) and the WAL (appends, fsyncs, cuts) while writes, seals and scans run: no
//! acknowledged span or content is lost, no write is half-visible, and once the faults stop the
//! store writes again without a restart.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::{Array, RecordBatch, StringArray};
use engine::{
    ContentBatch, ContentPiece, ContentRef, ContentValue, Engine, FaultInjector, Options,
    ScanRequest, SpanBatchBuilder, SpanId, SpanRecord, TraceId, WriteBatch,
};

/// Spans per write `index` (1 to 4).
fn spans_of(index: u32) -> u32 {
    index % 4 + 1
}

fn trace_of(index: u32) -> TraceId {
    let mut id = [0x5a; 16];
    id[..4].copy_from_slice(&index.to_be_bytes());
    TraceId(id)
}

fn blob_of(index: u32) -> ([u8; 32], String) {
    let mut hash = [0xc3; 32];
    hash[..4].copy_from_slice(&index.to_be_bytes());
    (hash, format!("\"prompt {index}\""))
}

/// Write `index`: its spans, and one prompt on its first span.
fn write_of(index: u32) -> WriteBatch {
    let mut builder = SpanBatchBuilder::new();
    let trace = trace_of(index);
    for span in 0..spans_of(index) {
        let mut span_id = [0u8; 8];
        span_id[4..].copy_from_slice(&(span + 1).to_be_bytes());
        builder.append(&SpanRecord {
            trace_id: trace,
            span_id: SpanId(span_id),
            name: "chat",
            start_time_unix_nano: 1_793_491_200_000_000_000 + i64::from(index),
            end_time_unix_nano: 1_793_491_200_000_001_000 + i64::from(index),
            service_name: Some("agent"),
            agent: engine::AgentFields {
                session_id: Some(Cow::Owned(format!("s-{}", index % 7))),
                ..engine::AgentFields::default()
            },
            ..SpanRecord::default()
        });
    }
    let (hash, text) = blob_of(index);
    let mut first_span = [0u8; 8];
    first_span[7] = 1;
    WriteBatch {
        spans: builder.finish(),
        content: ContentBatch {
            blobs: vec![(hash, text)],
            refs: vec![ContentRef {
                trace_id: trace,
                span_id: SpanId(first_span),
                key: "gen_ai.input.messages".into(),
                digest: hash,
                form: 0,
                pieces: Some(vec![ContentPiece::Blob(hash)]),
                tier: None,
            }],
            stored_unix_nanos: 0,
        },
    }
}

/// Spans per trace (hex id) and the number of distinct (trace, span) pairs seen twice.
fn spans_per_trace(engine: &Engine) -> engine::Result<(HashMap<String, u32>, usize)> {
    let mut per_trace = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut duplicates = 0;
    for batch in engine.scan(&ScanRequest::default())?.iter() {
        let column = |name: &str| -> StringArray {
            batch
                .column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone()
        };
        let (traces, spans) = (column("trace_id"), column("span_id"));
        for row in 0..RecordBatch::num_rows(batch) {
            let key = (traces.value(row).to_owned(), spans.value(row).to_owned());
            if !seen.insert(key) {
                duplicates += 1;
            }
            *per_trace.entry(traces.value(row).to_owned()).or_insert(0) += 1;
        }
        assert!(traces.null_count() == 0);
    }
    Ok((per_trace, duplicates))
}

/// Every acknowledged write whole (spans and prompt), every other write whole or absent.
fn check(engine: &Engine, writes: u32, acked: &[bool], when: &str) {
    let (per_trace, duplicates) = spans_per_trace(engine).unwrap();
    assert_eq!(duplicates, 0, "{when}: a span is stored twice");
    for index in 0..writes {
        let trace = trace_of(index);
        let stored = per_trace.get(&trace.to_string()).copied().unwrap_or(0);
        let content = engine.content_for_trace(&trace).unwrap();
        if acked[index as usize] {
            assert_eq!(
                stored,
                spans_of(index),
                "{when}: acknowledged write {index}"
            );
        } else {
            assert!(
                stored == 0 || stored == spans_of(index),
                "{when}: write {index} is half-visible ({stored} of {} spans)",
                spans_of(index)
            );
        }
        if stored > 0 {
            assert_eq!(content.len(), 1, "{when}: prompt of write {index}");
            assert_eq!(
                content[0].value,
                ContentValue::Present(blob_of(index).1),
                "{when}: prompt of write {index}"
            );
        }
    }
}

fn run(seed: u64, parts_per_million: u32, concurrent: bool) {
    let dir = tempfile::tempdir().unwrap();
    let injector = Arc::new(FaultInjector::new(seed));
    let mut options = Options::default()
        .with_background_sealing(concurrent)
        .with_faults(Arc::clone(&injector));
    // A small page cache, so the database file is read and written often; with the sealer
    // running, seals every few writes.
    options.index_cache_bytes = 256 << 10;
    options.seal_max_rows = 150;
    let engine = Engine::open(dir.path(), options).unwrap();
    const WRITES: u32 = 400;
    let acked: Vec<std::sync::atomic::AtomicBool> = (0..=WRITES)
        .map(|_| std::sync::atomic::AtomicBool::new(false))
        .collect();
    let failures = std::sync::atomic::AtomicU32::new(0);
    injector.arm(parts_per_million);
    let writers: u32 = if concurrent { 3 } else { 1 };
    std::thread::scope(|scope| {
        for writer in 0..writers {
            let (engine, acked, failures) = (&engine, &acked, &failures);
            scope.spawn(move || {
                for index in (writer..WRITES).step_by(writers as usize) {
                    match engine.write_batch(write_of(index)) {
                        Ok(_) => acked[index as usize].store(true, Ordering::SeqCst),
                        Err(_) => {
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    if !concurrent && index % 40 == 39 {
                        let _ = engine.seal();
                    }
                    if index % 50 == 25 {
                        scan_during_faults(engine, acked, index);
                    }
                }
            });
        }
    });
    let failures = failures.load(Ordering::SeqCst);
    let mut acked: Vec<bool> = acked
        .iter()
        .map(|acked| acked.load(Ordering::SeqCst))
        .collect();
    injector.disarm();
    assert!(
        injector.injected() > 0,
        "seed {seed}: no fault was injected"
    );
    assert!(failures > 0, "seed {seed}: no write failed");

    // The store writes again without a restart: a write reopens it if it must (after a failed
    // reopen, at most once a second, so writes within that second fail at once).
    let resumed = std::time::Instant::now();
    loop {
        match engine.write_batch(write_of(WRITES)) {
            Ok(_) => break,
            Err(error) => {
                assert!(
                    resumed.elapsed() < std::time::Duration::from_secs(3),
                    "writes did not resume within 3 s of the faults stopping: {error}"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
    acked[WRITES as usize] = true;
    check(&engine, WRITES + 1, &acked, "after the faults");
    engine.seal().expect("a seal succeeds once the faults stop");
    check(&engine, WRITES + 1, &acked, "after sealing");
    let acknowledged = acked.iter().filter(|acked| **acked).count();
    assert!(acknowledged > 0);
    engine.close().unwrap();
    drop(engine);

    let engine = Engine::open(
        dir.path(),
        Options::default().with_background_sealing(false),
    )
    .expect("the store opens after the faults");
    check(&engine, WRITES + 1, &acked, "after reopening");
    let report = engine.verify().unwrap();
    assert!(report.is_ok(), "verify after faults: {report}");
}

/// A scan that succeeds in the middle of faults shows no write half-done, and every write
/// acknowledged before it started.
fn scan_during_faults(engine: &Engine, acked: &[std::sync::atomic::AtomicBool], upto: u32) {
    let before: Vec<bool> = acked
        .iter()
        .map(|acked| acked.load(Ordering::SeqCst))
        .collect();
    let Ok((per_trace, duplicates)) = spans_per_trace(engine) else {
        return;
    };
    assert_eq!(duplicates, 0, "scan during faults: a span twice");
    for done in 0..=upto {
        let stored = per_trace.get(&trace_of(done).to_string()).copied();
        let stored = stored.unwrap_or(0);
        assert!(
            stored == 0 || stored == spans_of(done),
            "scan during faults: write {done} half-visible"
        );
        if before[done as usize] {
            assert_eq!(stored, spans_of(done), "scan during faults: write {done}");
        }
    }
}

#[test]
fn injected_storage_faults_lose_nothing_acknowledged_and_show_no_half_write() {
    for seed in [1, 7, 42] {
        run(seed, 20_000, false);
    }
}

#[test]
fn the_same_with_concurrent_writers_and_the_background_sealer() {
    for seed in [3, 11] {
        run(seed, 20_000, true);
    }
}

#[test]
fn health_recovers_without_a_write_once_storage_works_again() {
    let dir = tempfile::tempdir().unwrap();
    let injector = Arc::new(FaultInjector::new(5));
    let engine = Engine::open(
        dir.path(),
        Options::default().with_faults(Arc::clone(&injector)),
    )
    .unwrap();
    engine.write_batch(write_of(0)).unwrap();
    injector.arm(1_000_000);
    assert!(engine.write_batch(write_of(1)).is_err());
    let trouble = engine.trouble().expect("a failed write shows in health");
    assert!(trouble.contains("injected"), "{trouble}");
    injector.disarm();
    // No write comes: the background sealer notices the storage works again.
    let waited = std::time::Instant::now();
    while let Some(trouble) = engine.trouble() {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(20),
            "health still failing without writes: {trouble}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (per_trace, _) = spans_per_trace(&engine).unwrap();
    assert_eq!(per_trace.get(&trace_of(0).to_string()), Some(&spans_of(0)));
    assert_eq!(per_trace.get(&trace_of(1).to_string()), None);
}
