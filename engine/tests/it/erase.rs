//! Session erasure: only the segments holding the session are rewritten, the session is gone
//! from every read path, the chain records it (verify passes and lists it), and a legal hold
//! refuses it.

use std::borrow::Cow;

use arrow::array::{AsArray, RecordBatch};
use engine::schema::columns;
use engine::{
    AgentFields, Engine, Error, HoldTarget, Options, ScanRequest, SpanBatchBuilder, SpanId,
    SpanRecord, TraceId,
};

/// 2026-11-01T00:00:00Z
const BASE: i64 = 1_793_491_200_000_000_000;

fn trace_id(n: u32) -> TraceId {
    let mut raw = [0u8; 16];
    raw[12..].copy_from_slice(&n.to_be_bytes());
    raw[0] = 0x50;
    TraceId(raw)
}

/// Four spans of `trace`; only the last names the session (as roots do).
fn run(trace: u32, session: &str) -> RecordBatch {
    let mut builder = SpanBatchBuilder::new();
    for index in 0..4u32 {
        let mut span = [0u8; 8];
        span[..4].copy_from_slice(&trace.to_be_bytes());
        span[4..].copy_from_slice(&(index + 1).to_be_bytes());
        builder.append(&SpanRecord {
            trace_id: trace_id(trace),
            span_id: SpanId(span),
            name: "step",
            kind: 1,
            start_time_unix_nano: BASE + i64::from(trace) * 1000 + i64::from(index),
            end_time_unix_nano: BASE + i64::from(trace) * 1000 + i64::from(index) + 5,
            agent: AgentFields {
                session_id: (index == 3).then(|| Cow::Owned(session.to_owned())),
                ..AgentFields::default()
            },
            ..SpanRecord::default()
        });
    }
    builder.finish()
}

fn sessions(engine: &Engine) -> Vec<String> {
    let mut out = Vec::new();
    for batch in engine.scan(&ScanRequest::default()).unwrap() {
        let column = batch
            .column_by_name(columns::SESSION_ID)
            .unwrap()
            .as_string::<i32>();
        for row in 0..batch.num_rows() {
            out.push(column.value(row).to_owned());
        }
    }
    out.sort();
    out
}

fn count(engine: &Engine, session: &str) -> usize {
    engine
        .scan(&ScanRequest {
            session_ids: Some(vec![session.to_owned()]),
            ..ScanRequest::default()
        })
        .unwrap()
        .iter()
        .map(RecordBatch::num_rows)
        .sum()
}

fn ids(engine: &Engine) -> Vec<u64> {
    let mut out: Vec<u64> = engine.segments().iter().map(|meta| meta.id).collect();
    out.sort_unstable();
    out
}

#[test]
fn erasing_a_session_rewrites_only_its_segments_and_the_chain_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(
        dir.path(),
        Options::default().with_background_sealing(false),
    )
    .unwrap();
    // Segment 1: sessions a and b. Segment 2: sessions a and c. Then b's second run, whose
    // root arrives after its children were sealed (late keys).
    engine.write(run(1, "a")).unwrap();
    engine.write(run(2, "b")).unwrap();
    engine.seal().unwrap();
    engine.write(run(3, "a")).unwrap();
    engine.write(run(4, "c")).unwrap();
    engine.seal().unwrap();
    assert_eq!(engine.segments().len(), 2);
    assert_eq!(count(&engine, "a"), 8);

    let before = ids(&engine);
    let report = engine.erase_session("a").unwrap();
    assert_eq!(report.rows, 8);
    assert_eq!(report.traces.len(), 2);
    assert_eq!(report.segments.len(), 2, "both segments held a: {report:?}");
    assert_eq!(count(&engine, "a"), 0);
    assert_eq!(
        sessions(&engine),
        [vec!["b".to_owned(); 4], vec!["c".to_owned(); 4]].concat()
    );
    assert!(
        engine
            .scan(&ScanRequest::for_trace(trace_id(1)))
            .unwrap()
            .is_empty()
    );
    assert!(ids(&engine).iter().all(|id| !before.contains(id)));

    // Erasing c rewrites only the segment holding c.
    let before = ids(&engine);
    let report = engine.erase_session("c").unwrap();
    assert_eq!(report.segments.len(), 1);
    let after = ids(&engine);
    assert_eq!(
        before.iter().filter(|id| after.contains(id)).count(),
        1,
        "the segment without c keeps its id: {before:?} -> {after:?}"
    );
    assert_eq!(sessions(&engine), vec!["b".to_owned(); 4]);

    let verify = engine.verify().unwrap();
    assert!(verify.is_ok(), "{verify:?}");
    // One chain entry per rewritten segment: a held two, c one.
    let erased: Vec<&str> = verify
        .erasures
        .iter()
        .map(|erasure| erasure.session_id.as_str())
        .collect();
    assert_eq!(erased, ["a", "a", "c"]);
    engine.close().unwrap();
    drop(engine);

    // Durable, and still verifiable from the directory.
    let engine = Engine::open(
        dir.path(),
        Options::default().with_background_sealing(false),
    )
    .unwrap();
    assert_eq!(sessions(&engine), vec!["b".to_owned(); 4]);
    assert_eq!(count(&engine, "a"), 0);
    drop(engine);
    assert!(engine::verify_data_dir(dir.path()).unwrap().is_ok());
}

#[test]
fn a_held_session_is_not_erased_and_an_unknown_one_erases_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(
        dir.path(),
        Options::default().with_background_sealing(false),
    )
    .unwrap();
    engine.write(run(1, "kept")).unwrap();
    engine.seal().unwrap();
    engine
        .hold(&HoldTarget::Session("kept".to_owned()))
        .unwrap();
    let segments = ids(&engine);
    match engine.erase_session("kept") {
        Err(Error::Held { .. }) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(count(&engine, "kept"), 4);
    assert_eq!(ids(&engine), segments);
    let report = engine.erase_session("nobody").unwrap();
    assert_eq!(report.rows, 0);
    assert_eq!(ids(&engine), segments);
    engine
        .release(&HoldTarget::Session("kept".to_owned()))
        .unwrap();
    assert_eq!(engine.erase_session("kept").unwrap().rows, 4);
    assert_eq!(count(&engine, "kept"), 0);
    assert!(engine.verify().unwrap().is_ok());
}

/// Text no other test writes.
fn unique_text(seed: u8) -> String {
    use sha2::Digest;
    let mut out = String::new();
    let mut state = [seed; 32];
    for _ in 0..8 {
        state = sha2::Sha256::digest(state).into();
        out.push_str(&hex::encode(state));
    }
    out
}

/// Whether any zstd frame in a content segment file decompresses to text holding `needle`
/// (read independently of the engine: every frame the files hold, found by its magic).
fn files_contain(dir: &std::path::Path, needle: &str) -> bool {
    use std::io::Read;
    const FRAME_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    let Ok(entries) = std::fs::read_dir(dir.join("content")) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let bytes = std::fs::read(entry.path()).unwrap();
        (0..bytes.len().saturating_sub(4))
            .filter(|&at| bytes[at..at + 4] == FRAME_MAGIC)
            .any(|at| {
                let mut text = Vec::new();
                let decoded = zstd::stream::read::Decoder::new(&bytes[at..])
                    .map(|decoder| decoder.single_frame())
                    .and_then(|mut decoder| decoder.read_to_end(&mut text));
                decoded.is_ok()
                    && text
                        .windows(needle.len())
                        .any(|window| window == needle.as_bytes())
            })
    })
}

#[test]
fn erasing_a_session_rewrites_its_content_out_of_the_content_segments() {
    use engine::{ContentBatch, ContentPiece, ContentRef, ContentValue, WriteBatch};
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(
        dir.path(),
        Options::default().with_background_sealing(false),
    )
    .unwrap();
    let system = ([7u8; 32], unique_text(7));
    let write = |trace: u32, session: &str, own: ([u8; 32], String)| {
        let trace_id = trace_id(trace);
        let blobs = vec![system.clone(), own.clone()];
        // On the run's first span (see `run`).
        let mut span = [0u8; 8];
        span[..4].copy_from_slice(&trace.to_be_bytes());
        span[4..].copy_from_slice(&1u32.to_be_bytes());
        let refs = vec![ContentRef {
            trace_id,
            span_id: SpanId(span),
            key: "gen_ai.input.messages".into(),
            digest: [trace as u8; 32],
            form: 0,
            pieces: Some(vec![
                ContentPiece::Blob(system.0),
                ContentPiece::Literal(",".into()),
                ContentPiece::Blob(own.0),
            ]),
            tier: None,
        }];
        engine
            .write_batch(WriteBatch {
                spans: run(trace, session),
                content: ContentBatch {
                    blobs,
                    refs,
                    stored_unix_nanos: 0,
                },
            })
            .unwrap();
    };
    let secret = ([1u8; 32], unique_text(1));
    let other = ([2u8; 32], unique_text(2));
    write(1, "gone", secret.clone());
    write(2, "stays", other.clone());
    engine.seal().unwrap();
    assert!(files_contain(dir.path(), &secret.1));
    let report = engine.erase_session("gone").unwrap();
    assert_eq!(report.rows, 4);
    // The erased trace's own message is gone from the files; what another session still
    // names (the shared system prompt, its own message) stays readable.
    assert!(!files_contain(dir.path(), &secret.1));
    assert!(files_contain(dir.path(), &system.1));
    assert!(engine.content_for_trace(&trace_id(1)).unwrap().is_empty());
    let rows = engine.content_for_trace(&trace_id(2)).unwrap();
    assert_eq!(
        rows[0].value,
        ContentValue::Present(format!("{},{}", system.1, other.1))
    );
    assert_eq!(engine.content_stats().unwrap().messages, 2);
    drop(engine);
    let engine = Engine::open(
        dir.path(),
        Options::default().with_background_sealing(false),
    )
    .unwrap();
    let rows = engine.content_for_trace(&trace_id(2)).unwrap();
    assert_eq!(
        rows[0].value,
        ContentValue::Present(format!("{},{}", system.1, other.1))
    );
}
