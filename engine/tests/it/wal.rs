//! The WAL as files: deleted by the seal that covers them, replayed after a crash (content and
//! trace keys included), a torn tail cut off.

use std::borrow::Cow;
use std::path::Path;

use arrow::array::RecordBatch;

use super::purge::{count, session};
use engine::{
    AgentFields, ContentBatch, ContentPiece, ContentRef, ContentValue, Engine, Options,
    ScanRequest, SpanBatchBuilder, SpanId, SpanRecord, TraceId, WriteBatch,
};

fn manual() -> Options {
    Options::default().with_background_sealing(false)
}

/// `count` spans of trace `trace` in session `session`, each with `payload` bytes of text that
/// compresses poorly (so the WAL, not the indexes, dominates what a write stores).
/// `len` lowercase letters from an xorshift generator (text zstd cannot shrink much).
fn random_letters(state: &mut u64, len: usize) -> String {
    (0..len)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            char::from(b'a' + (*state % 26) as u8)
        })
        .collect()
}

fn spans(trace: u8, count: usize, session: &str, payload: usize) -> RecordBatch {
    let mut builder = SpanBatchBuilder::new();
    let mut state = u64::from(trace).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for index in 0..count {
        let text = random_letters(&mut state, payload);
        let attrs = [("note", Cow::Owned(text))];
        let mut span = [0u8; 8];
        span[0] = trace;
        span[4..].copy_from_slice(&(index as u32 + 1).to_be_bytes());
        builder.append(&SpanRecord {
            trace_id: TraceId([trace; 16]),
            span_id: SpanId(span),
            name: "chat",
            start_time_unix_nano: 1_793_491_200_000_000_000 + index as i64,
            end_time_unix_nano: 1_793_491_200_000_001_000 + index as i64,
            service_name: Some("agent"),
            agent: AgentFields {
                session_id: Some(Cow::Borrowed(session)),
                ..AgentFields::default()
            },
            attributes: &attrs,
            ..SpanRecord::default()
        });
    }
    builder.finish()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of a data directory (what a crash would leave) after two acknowledged writes of 3
/// and 4 spans, and its WAL files that hold records, oldest first.
fn crash_image_after_two_writes() -> (tempfile::TempDir, Vec<std::path::PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), manual()).unwrap();
    engine.write(spans(1, 3, "s", 64)).unwrap();
    engine.write(spans(2, 4, "s", 64)).unwrap();
    copy_dir(dir.path(), crashed.path());
    engine.close().unwrap();
    let mut files: Vec<_> = std::fs::read_dir(crashed.path().join("wal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| file_len(path) > 0)
        .collect();
    files.sort();
    (crashed, files)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[test]
fn a_seal_deletes_the_wal_it_covers_and_the_database_file_does_not_keep_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), manual()).unwrap();
    let mut largest_wal = 0;
    for cycle in 0..4u8 {
        for write in 0..8u8 {
            engine
                .write(spans(cycle * 8 + write + 1, 50, "s", 2048))
                .unwrap();
        }
        let wal = engine.wal_bytes().unwrap();
        assert!(
            wal > 50 * 8 * 1024,
            "cycle {cycle}: {wal} WAL bytes before the seal"
        );
        largest_wal = largest_wal.max(wal);
        engine.seal().unwrap();
        assert_eq!(
            engine.wal_bytes().unwrap(),
            0,
            "cycle {cycle}: WAL left after the seal"
        );
    }
    assert_eq!(count(&engine, &ScanRequest::default()), 4 * 8 * 50);
    // The redb file holds indexes, not the WAL: smaller than one memtable's WAL.
    let database = file_len(&dir.path().join("sightline.redb"));
    assert!(
        database < largest_wal,
        "database file {database} bytes, one memtable's WAL {largest_wal} bytes"
    );
    engine.close().unwrap();
}

#[test]
fn a_crash_after_acknowledgement_keeps_rows_keys_and_content() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), manual()).unwrap();
    // Sealed data first, so the crash copy has a durable state to start from.
    engine.write(spans(1, 10, "before", 64)).unwrap();
    engine.seal().unwrap();
    let hash = [7; 32];
    let text = "{\"role\":\"user\",\"content\":\"find the invoice\"}".to_owned();
    let reference = ContentRef {
        trace_id: TraceId([2; 16]),
        span_id: SpanId([2, 0, 0, 0, 0, 0, 0, 1]),
        key: "gen_ai.input.messages".into(),
        digest: [9; 32],
        form: 0,
        pieces: Some(vec![
            ContentPiece::Literal("[".into()),
            ContentPiece::Blob(hash),
            ContentPiece::Literal("]".into()),
        ]),
        tier: None,
    };
    engine
        .write_batch(WriteBatch {
            spans: spans(2, 5, "after", 64),
            content: ContentBatch {
                blobs: vec![(hash, text.clone())],
                refs: vec![reference],
                stored_unix_nanos: 0,
            },
        })
        .unwrap();
    // Acknowledged: a copy of the directory now is what a crash would leave.
    copy_dir(dir.path(), crashed.path());
    engine.close().unwrap();

    let engine = Engine::open(crashed.path(), manual()).unwrap();
    let recovery = engine.recovery();
    assert_eq!((recovery.wal_records, recovery.wal_rows), (1, 5));
    // Its index commit was not durable: the copy's database file does not have it.
    assert_eq!(recovery.wal_reapplied, 1);
    assert_eq!(count(&engine, &session("before")), 10);
    // The session key of the unsealed trace, and its content, come back from the WAL record.
    assert_eq!(count(&engine, &session("after")), 5);
    let content = engine.content_for_trace(&TraceId([2; 16])).unwrap();
    assert_eq!(content.len(), 1);
    assert_eq!(content[0].value, ContentValue::Present(format!("[{text}]")));
    // Sealing the replayed rows leaves no WAL, and a reopen replays nothing.
    engine.close().unwrap();
    drop(engine);
    let engine = Engine::open(crashed.path(), manual()).unwrap();
    assert_eq!(engine.recovery().wal_records, 0);
    assert_eq!(engine.wal_bytes().unwrap(), 0);
    assert_eq!(count(&engine, &ScanRequest::default()), 15);
    assert_eq!(
        engine.content_for_trace(&TraceId([2; 16])).unwrap()[0].value,
        ContentValue::Present(format!("[{text}]"))
    );
    engine.close().unwrap();
}

#[test]
fn a_torn_record_at_the_end_of_the_wal_is_cut_off_and_the_rest_replayed() {
    let (crashed, files) = crash_image_after_two_writes();
    // A crash in the middle of the next append: half a frame at the end of the newest file.
    let newest = files.last().unwrap();
    let mut bytes = std::fs::read(newest).unwrap();
    let whole = bytes.len() as u64;
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3]);
    std::fs::write(newest, bytes).unwrap();

    let engine = Engine::open(crashed.path(), manual()).unwrap();
    assert_eq!(engine.recovery().wal_torn_bytes, 7);
    assert_eq!(engine.recovery().wal_rows, 7);
    assert_eq!(count(&engine, &ScanRequest::default()), 7);
    assert_eq!(file_len(newest), whole);
    engine.close().unwrap();
}

#[test]
fn damage_inside_the_wal_is_an_error_not_lost_rows() {
    let (crashed, files) = crash_image_after_two_writes();
    // Flip a byte of the first record's payload: its checksum no longer matches, and a
    // whole record follows it, so this is damage, not a torn write.
    let file = &files[0];
    let mut bytes = std::fs::read(file).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(file, bytes).unwrap();
    // The damaged record has a whole record after it, so it is not a write torn by a crash:
    // open must refuse rather than cut the file there and drop the acknowledged record after it.
    match Engine::open(crashed.path(), manual()) {
        Err(error) => assert!(error.to_string().contains("wal"), "{error}"),
        Ok(engine) => panic!(
            "opened over a damaged WAL record with {} rows",
            engine.recovery().wal_rows
        ),
    }
}

#[test]
fn a_history_resent_every_turn_is_written_to_the_wal_once_and_replays_whole() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), manual()).unwrap();
    // Each turn re-sends every earlier message (random text, so compression cannot hide it).
    let messages: Vec<([u8; 32], String)> = (1..=4u8)
        .map(|n| {
            let mut state = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let text = random_letters(&mut state, 4000);
            ([n; 32], text)
        })
        .collect();
    let turn = |n: usize| {
        let pieces = messages[..n]
            .iter()
            .map(|(hash, _)| ContentPiece::Blob(*hash))
            .collect();
        // Turn n is span n of the trace (spans re-sent each turn, as exporters batch them).
        let mut span = [0u8; 8];
        span[0] = 3;
        span[4..].copy_from_slice(&(n as u32).to_be_bytes());
        WriteBatch {
            spans: spans(3, n, "chat", 8),
            content: ContentBatch {
                blobs: messages[..n].to_vec(),
                refs: vec![ContentRef {
                    trace_id: TraceId([3; 16]),
                    span_id: SpanId(span),
                    key: "gen_ai.input.messages".into(),
                    digest: [n as u8; 32],
                    form: 0,
                    pieces: Some(pieces),
                    tier: None,
                }],
                stored_unix_nanos: 0,
            },
        }
    };
    let mut growth = Vec::new();
    for n in 1..=4 {
        let before = engine.wal_bytes().unwrap();
        engine.write_batch(turn(n)).unwrap();
        growth.push(engine.wal_bytes().unwrap() - before);
    }
    // Every turn adds one message (and one more 8-byte span row): the WAL grows by about the
    // same amount each turn, not by the history (three more messages of over 2 KB each,
    // compressed, by the fourth turn).
    assert!(growth[3] < growth[0] + 1500, "{growth:?}");
    copy_dir(dir.path(), crashed.path());
    engine.close().unwrap();
    drop(engine);

    let engine = Engine::open(crashed.path(), manual()).unwrap();
    assert_eq!(engine.recovery().wal_records, 4);
    let rows = engine.content_for_trace(&TraceId([3; 16])).unwrap();
    assert_eq!(rows.len(), 4);
    for (n, row) in rows.iter().enumerate() {
        let expected: String = messages[..=n]
            .iter()
            .map(|(_, text)| text.as_str())
            .collect();
        assert_eq!(row.value, ContentValue::Present(expected));
    }
    engine.close().unwrap();
}
