use std::borrow::Cow;
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use engine::schema::columns;
use engine::{Engine, Error, Options, ScanRequest, SpanBatchBuilder, SpanId, SpanRecord, TraceId};

const DAY: i64 = 86_400_000_000_000;
/// 2026-11-01T00:00:00Z
const BASE: i64 = 1_793_491_200_000_000_000;

fn trace_id(n: u32) -> TraceId {
    let mut raw = [0u8; 16];
    raw[12..].copy_from_slice(&n.to_be_bytes());
    raw[0] = 0x10;
    TraceId(raw)
}

/// `spans` spans of trace `trace`, service `service`, starting at `start`.
fn spans(trace: u32, spans: usize, service: &str, start: i64) -> RecordBatch {
    let mut builder = SpanBatchBuilder::new();
    let attrs = [("gen_ai.operation.name", Cow::Borrowed("chat"))];
    for index in 0..spans {
        let mut span = [0u8; 8];
        span[..4].copy_from_slice(&trace.to_be_bytes());
        span[4..].copy_from_slice(&(index as u32 + 1).to_be_bytes());
        builder.append(&SpanRecord {
            trace_id: trace_id(trace),
            span_id: SpanId(span),
            parent_span_id: (index > 0).then_some(SpanId([1; 8])),
            name: "chat",
            kind: 3,
            start_time_unix_nano: start + index as i64,
            end_time_unix_nano: start + index as i64 + 1000,
            service_name: Some(service),
            attributes: &attrs,
            ..SpanRecord::default()
        });
    }
    builder.finish()
}

fn manual() -> Options {
    Options::default().with_background_sealing(false)
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

fn count(engine: &Engine, request: &ScanRequest) -> usize {
    rows(&engine.scan(request).unwrap())
}

#[test]
fn acknowledged_writes_are_visible_immediately_and_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path(), manual()).unwrap();
        engine.write(spans(1, 3, "a", BASE)).unwrap();
        assert_eq!(count(&engine, &ScanRequest::default()), 3);
        // Dropped without close: only the WAL holds the rows.
    }
    let engine = Engine::open(dir.path(), manual()).unwrap();
    assert_eq!(engine.recovery().wal_records, 1);
    assert_eq!(engine.recovery().wal_rows, 3);
    assert_eq!(count(&engine, &ScanRequest::default()), 3);
}

#[test]
fn sealing_moves_rows_into_segments_and_truncates_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path(), manual()).unwrap();
        engine.write(spans(1, 5, "a", BASE)).unwrap();
        engine.write(spans(2, 5, "b", BASE + DAY)).unwrap();
        let summary = engine.seal().unwrap();
        // Two UTC days -> two segments.
        assert_eq!(summary.segments, 2);
        assert_eq!(summary.rows, 10);
        assert_eq!(engine.stats().memtable_rows, 0);
        assert_eq!(count(&engine, &ScanRequest::default()), 10);
        let paths: Vec<String> = engine
            .segments()
            .iter()
            .map(|meta| meta.path.clone())
            .collect();
        assert!(
            paths
                .iter()
                .any(|path| path.starts_with("segments/standard/2026-11-01/")),
            "{paths:?}"
        );
        assert!(
            paths
                .iter()
                .any(|path| path.starts_with("segments/standard/2026-11-02/")),
            "{paths:?}"
        );
        engine.close().unwrap();
    }
    let engine = Engine::open(dir.path(), manual()).unwrap();
    assert_eq!(
        engine.recovery().wal_records,
        0,
        "the WAL was truncated by the seal"
    );
    assert_eq!(engine.recovery().segments, 2);
    assert_eq!(count(&engine, &ScanRequest::default()), 10);
}

#[test]
fn trace_lookup_reads_only_the_segment_holding_the_trace() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), manual()).unwrap();
    for trace in 1..=4 {
        engine.write(spans(trace, 4, "a", BASE)).unwrap();
        engine.seal().unwrap();
    }
    engine.write(spans(9, 2, "a", BASE)).unwrap();
    let plan = engine
        .plan_scan(&ScanRequest::for_trace(trace_id(3)))
        .unwrap();
    let metrics = plan.metrics();
    let batches = plan.collect().unwrap();
    assert_eq!(rows(&batches), 4);
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.segments_total, 4);
    assert_eq!(snapshot.segments_selected, 1);
    for batch in &batches {
        let ids = batch
            .column_by_name(columns::TRACE_ID)
            .unwrap()
            .as_string::<i32>();
        assert!(
            ids.iter()
                .all(|id| id == Some(trace_id(3).to_string().as_str()))
        );
    }
    // A trace only in the memtable selects no segment.
    let plan = engine
        .plan_scan(&ScanRequest::for_trace(trace_id(9)))
        .unwrap();
    assert_eq!(plan.metrics().snapshot().segments_selected, 0);
    assert_eq!(rows(&plan.collect().unwrap()), 2);
}

#[test]
fn time_and_service_predicates_are_exact_in_memtable_and_segments() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), manual()).unwrap();
    engine.write(spans(1, 10, "a", BASE)).unwrap();
    engine.write(spans(2, 10, "b", BASE + 100)).unwrap();
    let check = |engine: &Engine| {
        let request = ScanRequest {
            start_time: (Bound::Included(BASE + 5), Bound::Excluded(BASE + 105)),
            ..ScanRequest::default()
        };
        // trace 1: BASE+5..=BASE+9 (5 rows); trace 2: BASE+100..=BASE+104 (5 rows)
        assert_eq!(count(engine, &request), 10);
        let request = ScanRequest {
            service_names: Some(vec!["b".into()]),
            ..ScanRequest::default()
        };
        assert_eq!(count(engine, &request), 10);
        let request = ScanRequest {
            service_names: Some(vec!["c".into()]),
            ..ScanRequest::default()
        };
        assert_eq!(count(engine, &request), 0);
        let request = ScanRequest {
            projection: Some(vec![0, 7]),
            limit: Some(3),
            ..ScanRequest::default()
        };
        let batches = engine.scan(&request).unwrap();
        assert!(rows(&batches) >= 3);
        assert_eq!(batches[0].num_columns(), 2);
        assert_eq!(batches[0].schema().field(1).name(), columns::START_TIME);
    };
    check(&engine);
    engine.seal().unwrap();
    check(&engine);
}

#[test]
fn concurrent_writers_share_commits_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(dir.path(), manual()).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|thread| {
            let engine = Arc::clone(&engine);
            std::thread::spawn(move || {
                for round in 0..25u32 {
                    engine
                        .write(spans(thread * 100 + round, 3, "a", BASE))
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(count(&engine, &ScanRequest::default()), 8 * 25 * 3);
    drop(engine);
    let engine = Engine::open(dir.path(), manual()).unwrap();
    assert_eq!(engine.recovery().wal_rows, 8 * 25 * 3);
    assert_eq!(engine.recovery().wal_records, 8 * 25);
}

#[test]
fn orphan_segment_files_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path(), manual()).unwrap();
        engine.write(spans(1, 2, "a", BASE)).unwrap();
        engine.seal().unwrap();
        engine.close().unwrap();
    }
    let day_dir = dir.path().join("segments/standard/2026-11-01");
    std::fs::write(day_dir.join("00000000000000ff.parquet"), b"half written").unwrap();
    std::fs::write(day_dir.join("0000000000000100.parquet.tmp"), b"torn").unwrap();
    let engine = Engine::open(dir.path(), manual()).unwrap();
    assert_eq!(engine.recovery().orphans_removed, 2);
    assert!(!day_dir.join("00000000000000ff.parquet").exists());
    assert_eq!(count(&engine, &ScanRequest::default()), 2);
}

#[test]
fn a_missing_segment_file_is_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = {
        let engine = Engine::open(dir.path(), manual()).unwrap();
        engine.write(spans(1, 2, "a", BASE)).unwrap();
        engine.seal().unwrap();
        let path = dir.path().join(&engine.segments()[0].path);
        engine.close().unwrap();
        path
    };
    std::fs::remove_file(&path).unwrap();
    let error = Engine::open(dir.path(), manual()).unwrap_err();
    assert!(matches!(error, Error::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("missing"), "{error}");
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _engine = Engine::open(dir.path(), manual()).unwrap();
    let error = Engine::open(dir.path(), manual()).unwrap_err();
    assert!(matches!(error, Error::Locked { .. }), "{error}");
}

#[test]
fn writes_are_refused_as_overloaded_past_the_memtable_limit() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), manual().with_max_memtable_bytes(1)).unwrap();
    engine.write(spans(1, 2, "a", BASE)).unwrap();
    let error = engine.write(spans(2, 2, "a", BASE)).unwrap_err();
    assert!(matches!(error, Error::Overloaded { .. }), "{error}");
    engine.seal().unwrap();
    engine.write(spans(3, 2, "a", BASE)).unwrap();
}

#[test]
fn the_background_sealer_seals_by_row_count() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(
        dir.path(),
        Options::default()
            .with_seal_max_rows(10)
            .with_row_group_rows(4),
    )
    .unwrap();
    engine.write(spans(1, 12, "a", BASE)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while engine.stats().segments == 0 {
        assert!(Instant::now() < deadline, "no segment sealed within 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(count(&engine, &ScanRequest::default()), 12);
    // Row groups of 4 rows: a time predicate prunes some of them.
    let request = ScanRequest {
        start_time: (Bound::Included(BASE + 10), Bound::Unbounded),
        ..ScanRequest::default()
    };
    let plan = engine.plan_scan(&request).unwrap();
    let metrics = plan.metrics();
    assert_eq!(rows(&plan.collect().unwrap()), 2);
    let snapshot = metrics.snapshot();
    assert!(snapshot.row_groups_pruned >= 2, "{snapshot:?}");
}

#[test]
fn close_seals_the_memtable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path(), manual()).unwrap();
        engine.write(spans(1, 3, "a", BASE)).unwrap();
        engine.close().unwrap();
    }
    let engine = Engine::open(dir.path(), manual()).unwrap();
    assert_eq!(engine.recovery().wal_records, 0);
    assert_eq!(engine.stats().segment_rows, 3);
    let batches = engine.scan(&ScanRequest::default()).unwrap();
    let parent = batches[0].column_by_name(columns::PARENT_SPAN_ID).unwrap();
    assert_eq!(parent.null_count(), 1);
}

#[test]
fn the_background_sealer_seals_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(
        dir.path(),
        Options::default().with_seal_max_age(Duration::from_millis(1)),
    )
    .unwrap();
    engine.write(spans(1, 2, "a", BASE)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while engine.stats().segments == 0 {
        assert!(Instant::now() < deadline, "no segment sealed within 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(engine.stats().memtable_rows, 0);
    assert_eq!(count(&engine, &ScanRequest::default()), 2);
}

#[test]
fn the_background_sealer_seals_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), Options::default().with_seal_max_bytes(1)).unwrap();
    engine.write(spans(1, 2, "a", BASE)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while engine.stats().segments == 0 {
        assert!(Instant::now() < deadline, "no segment sealed within 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(count(&engine, &ScanRequest::default()), 2);
}

#[test]
fn projections_come_back_in_the_requested_order_from_segments_and_memtable() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), manual()).unwrap();
    engine.write(spans(1, 2, "a", BASE)).unwrap();
    engine.seal().unwrap();
    engine.write(spans(2, 2, "a", BASE)).unwrap();
    let request = ScanRequest {
        projection: Some(vec![12, 0, 5]),
        ..ScanRequest::default()
    };
    let batches = engine.scan(&request).unwrap();
    assert_eq!(rows(&batches), 4);
    for batch in &batches {
        let names: Vec<_> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            [columns::SERVICE_NAME, columns::TRACE_ID, columns::SPAN_NAME]
        );
    }
}

/// `records` log rows of trace `trace` (see `engine::schema::columns::LOG`).
fn log_rows(trace: u32, records: usize, start: i64) -> RecordBatch {
    let mut builder = SpanBatchBuilder::new();
    for index in 0..records {
        builder.append(&SpanRecord {
            trace_id: trace_id(trace),
            span_id: SpanId([1; 8]),
            name: "gen_ai.evaluation.result",
            start_time_unix_nano: start + index as i64,
            end_time_unix_nano: start + index as i64,
            service_name: Some("logger"),
            log: Some(engine::LogFields {
                event_name: Some("gen_ai.evaluation.result"),
                severity_number: 9,
                otlp: b"",
                ..engine::LogFields::default()
            }),
            ..SpanRecord::default()
        });
    }
    builder.finish()
}

#[test]
fn scans_return_spans_or_log_rows_as_asked_in_memory_and_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(
        dir.path(),
        Options::default().with_background_sealing(false),
    )
    .unwrap();
    // An old-style span-only segment, then spans and log rows of one trace mixed.
    engine.write(spans(1, 4, "svc", BASE)).unwrap();
    engine.seal().unwrap();
    engine.write(log_rows(2, 3, BASE + 10)).unwrap();
    engine.write(spans(2, 2, "svc", BASE + 5)).unwrap();
    let rows = |family: engine::RowFamily, trace: Option<u32>| -> (usize, usize) {
        let batches = engine
            .scan(&ScanRequest {
                family,
                trace_ids: trace.map(|trace| vec![trace_id(trace)]),
                ..ScanRequest::default()
            })
            .unwrap();
        let total = batches.iter().map(RecordBatch::num_rows).sum();
        let logs = batches
            .iter()
            .map(|batch| {
                let log = batch.column_by_name(columns::LOG).unwrap();
                log.len() - log.null_count()
            })
            .sum();
        (total, logs)
    };
    for sealed in [false, true] {
        assert_eq!(
            rows(engine::RowFamily::Spans, None),
            (6, 0),
            "sealed: {sealed}"
        );
        assert_eq!(
            rows(engine::RowFamily::Logs, None),
            (3, 3),
            "sealed: {sealed}"
        );
        assert_eq!(
            rows(engine::RowFamily::All, None),
            (9, 3),
            "sealed: {sealed}"
        );
        assert_eq!(
            rows(engine::RowFamily::Spans, Some(2)),
            (2, 0),
            "sealed: {sealed}"
        );
        assert_eq!(
            rows(engine::RowFamily::Logs, Some(1)),
            (0, 0),
            "sealed: {sealed}"
        );
        engine.seal().unwrap();
    }
    let log_rows: Vec<u64> = engine.segments().iter().map(|meta| meta.log_rows).collect();
    assert_eq!(log_rows.iter().sum::<u64>(), 3, "{log_rows:?}");
    // Only the segment holding log rows is read for logs.
    let plan = engine
        .plan_scan(&ScanRequest {
            family: engine::RowFamily::Logs,
            ..ScanRequest::default()
        })
        .unwrap();
    assert_eq!(
        plan.len(),
        engine
            .segments()
            .iter()
            .filter(|meta| meta.log_rows > 0)
            .count()
    );
    engine.close().unwrap();
}

#[test]
fn a_span_scan_tells_log_rows_apart_without_reading_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(
        dir.path(),
        Options::default().with_background_sealing(false),
    )
    .unwrap();
    // 50 log records of 16 KiB each (incompressible bytes), beside 10 spans.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let blobs: Vec<Vec<u8>> = (0..50)
        .map(|_| {
            (0..16 * 1024)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect()
        })
        .collect();
    let mut builder = SpanBatchBuilder::new();
    for (index, blob) in blobs.iter().enumerate() {
        builder.append(&SpanRecord {
            trace_id: trace_id(3),
            span_id: SpanId([1; 8]),
            start_time_unix_nano: BASE + index as i64,
            end_time_unix_nano: BASE + index as i64,
            log: Some(engine::LogFields {
                severity_number: 9,
                otlp: blob,
                ..engine::LogFields::default()
            }),
            ..SpanRecord::default()
        });
    }
    engine.write(builder.finish()).unwrap();
    engine.write(spans(3, 10, "svc", BASE)).unwrap();
    engine.seal().unwrap();
    let plan = engine
        .plan_scan(&ScanRequest {
            projection: Some(vec![engine::schema::column_index(columns::SPAN_ID)]),
            ..ScanRequest::default()
        })
        .unwrap();
    let metrics = plan.metrics();
    let rows: usize = plan
        .collect()
        .unwrap()
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    assert_eq!(rows, 10);
    let blob_bytes: u64 = blobs.iter().map(|blob| blob.len() as u64).sum();
    let read = metrics.snapshot().bytes_read;
    assert!(
        read < blob_bytes / 10,
        "read {read} bytes to find 10 spans beside {blob_bytes} bytes of records"
    );
    engine.close().unwrap();
}

/// The store format version in `meta`, read with redb directly (the store closed).
fn format_version(dir: &std::path::Path) -> Option<u64> {
    let db = redb::Database::open(dir.join("sightline.redb")).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let table = txn
        .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
        .unwrap();
    table
        .get("format_version")
        .unwrap()
        .map(|value| value.value())
}

fn set_format_version(dir: &std::path::Path, version: u64) {
    let db = redb::Database::open(dir.join("sightline.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(redb::TableDefinition::<&str, u64>::new("meta"))
        .unwrap()
        .insert("format_version", version)
        .unwrap();
    txn.commit().unwrap();
}

#[test]
fn a_format_2_store_is_upgraded_at_open_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path(), manual()).unwrap();
        engine.write(spans(1, 3, "a", BASE)).unwrap();
        engine.seal().unwrap();
        engine.close().unwrap();
    }
    assert_eq!(format_version(dir.path()), Some(3));
    // A store written by the version 2 code (its files read the same way) opens, keeps its
    // rows, takes new ones and is version 3 after.
    set_format_version(dir.path(), 2);
    {
        let engine = Engine::open(dir.path(), manual()).unwrap();
        assert_eq!(engine.stats().segment_rows, 3);
        engine.write(spans(2, 4, "b", BASE)).unwrap();
        engine.seal().unwrap();
        let rows: usize = engine
            .scan(&ScanRequest::default())
            .unwrap()
            .iter()
            .map(RecordBatch::num_rows)
            .sum();
        assert_eq!(rows, 7);
        engine.close().unwrap();
    }
    assert_eq!(format_version(dir.path()), Some(3));
    // A store of a later format is refused, saying which.
    set_format_version(dir.path(), 4);
    let error = Engine::open(dir.path(), manual()).unwrap_err().to_string();
    assert!(
        error.contains("expected store format version 3, found 4"),
        "{error}"
    );
}
