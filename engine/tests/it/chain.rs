//! The segment chain and `verify`: every seal is chained, and tampering with a segment file, the
//! catalog or the chain itself is detected and named. Legal holds.

use std::borrow::Cow;
use std::path::Path;

use arrow::array::RecordBatch;
use engine::{
    AgentFields, Engine, HoldTarget, Options, ProblemKind, SpanBatchBuilder, SpanId, SpanRecord,
    TraceId, VerifyReport, verify_data_dir,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// 2026-11-01T00:00:00Z
const BASE: i64 = 1_793_491_200_000_000_000;
const DAY: i64 = 86_400_000_000_000;

const SEGMENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("segments");
const CHAIN: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("chain");

/// `count` spans of trace `trace` in session `session`, starting on day `day` after BASE.
pub(crate) fn session_spans(trace: u32, count: u32, session: &str, day: i64) -> RecordBatch {
    let mut raw = [0u8; 16];
    raw[12..].copy_from_slice(&trace.to_be_bytes());
    raw[0] = 0x30;
    trace_spans(TraceId(raw), trace, 0..count, Some(session), day)
}

/// Spans `indices` of trace `trace_id` (numbered `trace` in span ids and start times), each in
/// `session`, on day `day` after BASE.
pub(crate) fn trace_spans(
    trace_id: TraceId,
    trace: u32,
    indices: std::ops::Range<u32>,
    session: Option<&str>,
    day: i64,
) -> RecordBatch {
    let mut builder = SpanBatchBuilder::new();
    for index in indices {
        let mut span = [0u8; 8];
        span[..4].copy_from_slice(&trace.to_be_bytes());
        span[4..].copy_from_slice(&(index + 1).to_be_bytes());
        let start = BASE + day * DAY + i64::from(trace) * 1_000 + i64::from(index);
        builder.append(&SpanRecord {
            trace_id,
            span_id: SpanId(span),
            name: "step",
            kind: 1,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 10,
            service_name: Some("agent"),
            agent: AgentFields {
                session_id: session.map(Cow::Borrowed),
                ..AgentFields::default()
            },
            ..SpanRecord::default()
        });
    }
    builder.finish()
}

pub(crate) fn manual() -> Options {
    Options::default().with_background_sealing(false)
}

/// A store with three sealed segments (ids 1, 2, 3), closed.
fn three_segments(dir: &Path) {
    let engine = Engine::open(dir, manual()).unwrap();
    for (trace, day) in [(1, 0), (2, 1), (3, 2)] {
        engine
            .write(session_spans(trace, 5, &format!("s{trace}"), day))
            .unwrap();
        engine.seal().unwrap();
    }
    assert_eq!(engine.segments().len(), 3);
    engine.close().unwrap();
}

fn segment_path(dir: &Path, id: u64) -> std::path::PathBuf {
    let db = Database::open(dir.join("sightline.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(SEGMENTS).unwrap();
    let value = table.get(id).unwrap().unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&value.value()[1..]).unwrap();
    dir.join(meta["path"].as_str().unwrap())
}

fn only(report: &VerifyReport, kind: ProblemKind) -> Vec<Option<u64>> {
    report
        .problems
        .iter()
        .filter(|problem| problem.kind == kind)
        .map(|problem| problem.segment_id)
        .collect()
}

#[test]
fn every_seal_is_chained_and_an_untouched_store_verifies() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    let report = verify_data_dir(dir.path()).unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!((report.entries, report.segments), (3, 3));
    assert_eq!(report.head_hash.len(), 64);
    assert!(
        report
            .to_string()
            .starts_with("OK: 3 entries, 3 segments, 0 erasures")
    );

    // The same from an open engine, and the chain goes on across reopen.
    let engine = Engine::open(dir.path(), manual()).unwrap();
    engine.write(session_spans(4, 2, "s4", 3)).unwrap();
    engine.seal().unwrap();
    let report = engine.verify().unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!((report.entries, report.segments), (4, 4));
}

#[test]
fn a_flipped_byte_in_a_segment_file_names_the_altered_segment() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    let path = segment_path(dir.path(), 2);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let report = verify_data_dir(dir.path()).unwrap();
    assert!(!report.is_ok());
    assert_eq!(only(&report, ProblemKind::Altered), vec![Some(2)]);
    assert_eq!(report.problems.len(), 1, "{report}");
    let text = report.to_string();
    assert!(text.starts_with("FAILED"), "{text}");
    assert!(text.contains("segment 2 (segments/"), "{text}");
}

#[test]
fn a_deleted_segment_file_names_the_removed_segment() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    std::fs::remove_file(segment_path(dir.path(), 1)).unwrap();
    let report = verify_data_dir(dir.path()).unwrap();
    assert_eq!(only(&report, ProblemKind::Removed), vec![Some(1)]);
    assert_eq!(report.problems.len(), 1, "{report}");
}

#[test]
fn catalog_edits_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    {
        let db = Database::open(dir.path().join("sightline.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(SEGMENTS).unwrap();
            // Segment 3 disappears from the catalog (its file stays) ...
            table.remove(3).unwrap();
            // ... segment 1 claims more rows ...
            let one = table.get(1).unwrap().unwrap().value().to_vec();
            let mut meta: serde_json::Value = serde_json::from_slice(&one[1..]).unwrap();
            meta["rows"] = 500.into();
            let mut edited = vec![1u8];
            edited.extend(serde_json::to_vec(&meta).unwrap());
            table.insert(1, edited.as_slice()).unwrap();
            // ... and a segment 9 appears that no seal produced.
            meta["id"] = 9.into();
            let mut added = vec![1u8];
            added.extend(serde_json::to_vec(&meta).unwrap());
            table.insert(9, added.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let report = verify_data_dir(dir.path()).unwrap();
    assert_eq!(
        only(&report, ProblemKind::Removed),
        vec![Some(3)],
        "{report}"
    );
    assert_eq!(only(&report, ProblemKind::CatalogMismatch), vec![Some(1)]);
    assert_eq!(only(&report, ProblemKind::Unchained), vec![Some(9)]);
    assert_eq!(report.problems.len(), 3, "{report}");
}

/// Runs `edit` on the chain table of a closed store.
fn edit_chain(dir: &Path, edit: impl FnOnce(&mut redb::Table<'_, u64, &'static [u8]>)) {
    let db = Database::open(dir.join("sightline.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(CHAIN).unwrap();
        edit(&mut table);
    }
    txn.commit().unwrap();
}

fn entry(table: &redb::Table<'_, u64, &'static [u8]>, sequence: u64) -> serde_json::Value {
    let bytes = table.get(sequence).unwrap().unwrap().value().to_vec();
    serde_json::from_slice(&bytes[1..]).unwrap()
}

fn put(table: &mut redb::Table<'_, u64, &'static [u8]>, sequence: u64, value: &serde_json::Value) {
    let mut bytes = vec![1u8];
    bytes.extend(serde_json::to_vec(value).unwrap());
    table.insert(sequence, bytes.as_slice()).unwrap();
}

#[test]
fn reordered_chain_entries_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    edit_chain(dir.path(), |table| {
        // Swap entries 1 and 2, renumbering them so each decodes at its new place.
        let mut first = entry(table, 1);
        let mut second = entry(table, 2);
        first["sequence"] = 2.into();
        second["sequence"] = 1.into();
        put(table, 1, &second);
        put(table, 2, &first);
    });
    let report = verify_data_dir(dir.path()).unwrap();
    assert!(!report.is_ok());
    let kinds: Vec<ProblemKind> = report.problems.iter().map(|p| p.kind).collect();
    assert!(kinds.contains(&ProblemKind::EditedEntry), "{report}");
    assert!(kinds.contains(&ProblemKind::Reordered), "{report}");
}

#[test]
fn edited_and_deleted_chain_entries_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    // An edited digest (made to match a replaced file, say) no longer matches the entry hash.
    edit_chain(dir.path(), |table| {
        let mut second = entry(table, 2);
        second["added"]["digest"] = "00".repeat(32).into();
        put(table, 2, &second);
    });
    let report = verify_data_dir(dir.path()).unwrap();
    let edited: Vec<Option<u64>> = report
        .problems
        .iter()
        .filter(|problem| problem.kind == ProblemKind::EditedEntry)
        .map(|problem| problem.sequence)
        .collect();
    assert_eq!(edited, vec![Some(2)], "{report}");

    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    edit_chain(dir.path(), |table| {
        table.remove(2).unwrap();
    });
    let report = verify_data_dir(dir.path()).unwrap();
    assert!(
        !only(&report, ProblemKind::Reordered).is_empty(),
        "{report}"
    );
    assert_eq!(
        only(&report, ProblemKind::Unchained),
        vec![Some(2)],
        "{report}"
    );
}

#[test]
fn verify_of_a_directory_in_use_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), manual()).unwrap();
    let error = verify_data_dir(dir.path()).unwrap_err();
    assert!(matches!(error, engine::Error::Locked { .. }), "{error}");
    drop(engine);
}

#[test]
fn holds_are_placed_listed_and_released() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), manual()).unwrap();
    let session = HoldTarget::Session("s1".to_owned());
    let tier = HoldTarget::Tier("decision".to_owned());
    assert!(engine.hold(&session).unwrap());
    assert!(!engine.hold(&session).unwrap());
    assert!(engine.hold(&tier).unwrap());
    let holds = engine.holds().unwrap();
    assert_eq!(
        holds
            .iter()
            .map(|hold| hold.target.clone())
            .collect::<Vec<_>>(),
        vec![session.clone(), tier.clone()]
    );
    assert!(engine.held_since(&session).unwrap().is_some());
    drop(engine);
    let engine = Engine::open(dir.path(), manual()).unwrap();
    assert_eq!(engine.holds().unwrap().len(), 2);
    assert!(engine.release(&session).unwrap());
    assert!(!engine.release(&session).unwrap());
    assert_eq!(engine.held_since(&session).unwrap(), None);
}

/// The rows of `batches` in one batch, ordered by span id (unique here), to compare results
/// whatever their batching.
fn in_span_order(batches: &[RecordBatch]) -> RecordBatch {
    let schema = engine::span_schema();
    let all = arrow::compute::concat_batches(&schema, batches).unwrap();
    let order = arrow::compute::sort_to_indices(
        all.column(schema.index_of("span_id").unwrap()),
        None,
        None,
    )
    .unwrap();
    arrow::compute::take_record_batch(&all, &order).unwrap()
}

#[test]
fn a_flipped_bit_anywhere_in_a_segment_is_an_error_never_different_rows() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), manual()).unwrap();
    for trace in 0..40 {
        engine
            .write(session_spans(trace, 500, &format!("s{}", trace % 8), 0))
            .unwrap();
    }
    engine.seal().unwrap();
    let segments = engine.segments();
    assert_eq!(segments.len(), 1);
    let path = dir.path().join(&segments[0].path);
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let requests = [
        engine::ScanRequest::default(),
        engine::ScanRequest {
            session_ids: Some(vec!["s3".to_owned()]),
            ..engine::ScanRequest::default()
        },
        // Trace 7 of `session_spans`: 0x30, eleven zero bytes, then 7 big-endian.
        engine::ScanRequest::for_trace(
            engine::TraceId::from_hex(&format!("30{}{:08x}", "0".repeat(22), 7)).unwrap(),
        ),
    ];
    let clean: Vec<RecordBatch> = requests
        .iter()
        .map(|request| in_span_order(&engine.scan(request).unwrap()))
        .collect();
    assert_eq!(clean[0].num_rows(), 20_000);
    assert_eq!(clean[1].num_rows(), 2_500);
    assert_eq!(clean[2].num_rows(), 500);
    let original = std::fs::read(&path).unwrap();
    let (mut errors, mut unchanged) = (0, 0);
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..100 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let at = usize::try_from(state % original.len() as u64).unwrap();
        let mut damaged = original.clone();
        damaged[at] ^= 1 << (state >> 61);
        std::fs::write(&path, &damaged).unwrap();
        for (request, expected) in requests.iter().zip(&clean) {
            match engine.scan(request) {
                Ok(batches) => {
                    assert_eq!(
                        &in_span_order(&batches),
                        expected,
                        "a flipped bit at {at} of {} read as different rows",
                        original.len()
                    );
                    unchanged += 1;
                }
                Err(error) => {
                    let text = format!(
                        "{error}: {}",
                        std::error::Error::source(&error)
                            .map(ToString::to_string)
                            .unwrap_or_default()
                    );
                    assert!(text.contains(&name), "{text}");
                    errors += 1;
                }
            }
        }
    }
    // Most flips hit bytes every full scan reads; a few land where a narrow read never looks.
    assert!(
        errors >= 100,
        "{errors} errors, {unchanged} unchanged reads"
    );
    std::fs::write(&path, &original).unwrap();
    assert_eq!(in_span_order(&engine.scan(&requests[0]).unwrap()), clean[0]);
    engine.close().unwrap();
}
