//! Compaction racing the writes that change what its inputs read as: roots carrying the
//! session arrive for traces whose children are sealed (late keys on the inputs) while the
//! day is compacted. Whatever interleaving happens, every span ends up with its trace's
//! session, each exactly once, and a session is read from few segments once compaction has
//! caught up.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::{AsArray, RecordBatch};
use engine::schema::columns;
use engine::{
    AgentFields, Engine, Options, ScanRequest, SpanBatchBuilder, SpanId, SpanRecord, TraceId,
};

/// 2026-11-01T00:00:00Z
const BASE: i64 = 1_793_491_200_000_000_000;
const TRACES: u32 = 1200;
const CHILDREN: u32 = 5;

fn trace_id(n: u32) -> TraceId {
    let mut raw = [0u8; 16];
    raw[12..].copy_from_slice(&n.to_be_bytes());
    raw[0] = 0x70;
    TraceId(raw)
}

fn session_of(trace: u32) -> String {
    format!("s{:02}", trace % 37)
}

/// The children of `traces` (no session), or their roots (with the session).
fn spans(traces: impl Iterator<Item = u32>, roots: bool) -> RecordBatch {
    let mut builder = SpanBatchBuilder::new();
    for trace in traces {
        let indexes = if roots { 0..1 } else { 1..CHILDREN + 1 };
        for index in indexes {
            let mut span = [0u8; 8];
            span[..4].copy_from_slice(&trace.to_be_bytes());
            span[4..].copy_from_slice(&(index + 1).to_be_bytes());
            let session = session_of(trace);
            builder.append(&SpanRecord {
                trace_id: trace_id(trace),
                span_id: SpanId(span),
                name: "step",
                kind: 1,
                start_time_unix_nano: BASE + i64::from(trace) * 1000 + i64::from(index),
                end_time_unix_nano: BASE + i64::from(trace) * 1000 + i64::from(index) + 5,
                agent: AgentFields {
                    session_id: roots.then_some(Cow::Owned(session)),
                    ..AgentFields::default()
                },
                ..SpanRecord::default()
            });
        }
    }
    builder.finish()
}

/// (trace id, span id) -> session of every stored row; panics on a row stored twice.
fn stored(engine: &Engine) -> BTreeMap<(String, String), Option<String>> {
    let mut out = BTreeMap::new();
    for batch in engine.scan(&ScanRequest::default()).unwrap() {
        let traces = batch
            .column_by_name(columns::TRACE_ID)
            .unwrap()
            .as_string::<i32>();
        let spans = batch
            .column_by_name(columns::SPAN_ID)
            .unwrap()
            .as_string::<i32>();
        let sessions = batch
            .column_by_name(columns::SESSION_ID)
            .unwrap()
            .as_string::<i32>();
        for row in 0..batch.num_rows() {
            let key = (traces.value(row).to_owned(), spans.value(row).to_owned());
            let session = (!arrow::array::Array::is_null(sessions, row))
                .then(|| sessions.value(row).to_owned());
            assert!(out.insert(key, session).is_none(), "a row read twice");
        }
    }
    out
}

#[test]
fn compaction_racing_late_keys_leaves_every_span_with_its_session_once() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(
        Engine::open(
            dir.path(),
            Options::default()
                .with_background_sealing(false)
                .with_seal_max_rows(1500),
        )
        .unwrap(),
    );
    // Eight seals of children, interleaved over the traces (trace t in seal t % 8).
    for seal in 0..8u32 {
        engine
            .write(spans((0..TRACES).filter(|t| t % 8 == seal), false))
            .unwrap();
        engine.seal().unwrap();
    }
    assert_eq!(engine.segments().len(), 8);

    // The roots arrive in small writes (each gives sealed children late keys) while another
    // thread compacts the day again and again.
    let writing = Arc::new(AtomicBool::new(true));
    let compactor = {
        let engine = Arc::clone(&engine);
        let writing = Arc::clone(&writing);
        std::thread::spawn(move || {
            let (mut groups, mut abandoned) = (0, 0);
            while writing.load(Ordering::Acquire) {
                let report = engine.compact().unwrap();
                groups += report.groups.len();
                abandoned += report.abandoned;
            }
            (groups, abandoned)
        })
    };
    for first in (0..TRACES).step_by(40) {
        engine.write(spans(first..first + 40, true)).unwrap();
        if first % 200 == 0 {
            engine.seal().unwrap();
        }
    }
    engine.seal().unwrap();
    writing.store(false, Ordering::Release);
    let (groups, abandoned) = compactor.join().unwrap();
    let report = engine.compact().unwrap();
    assert!(
        groups + report.groups.len() > 0,
        "compacted at some point ({abandoned} abandoned)"
    );

    let expected: BTreeMap<(String, String), Option<String>> = (0..TRACES)
        .flat_map(|trace| {
            (0..CHILDREN + 1).map(move |index| {
                let mut span = [0u8; 8];
                span[..4].copy_from_slice(&trace.to_be_bytes());
                span[4..].copy_from_slice(&(index + 1).to_be_bytes());
                (
                    (trace_id(trace).to_string(), hex::encode(span)),
                    Some(session_of(trace)),
                )
            })
        })
        .collect();
    let check = |engine: &Engine, context: &str| {
        let got = stored(engine);
        assert_eq!(got.len(), expected.len(), "{context}: rows");
        let wrong: Vec<_> = got
            .iter()
            .filter(|(key, session)| expected.get(*key) != Some(*session))
            .take(3)
            .collect();
        assert!(wrong.is_empty(), "{context}: {wrong:?}");
        for session in (0..37).map(session_of) {
            let request = ScanRequest {
                session_ids: Some(vec![session.clone()]),
                ..ScanRequest::default()
            };
            let plan = engine.plan_scan(&request).unwrap();
            let segments = plan.len();
            let rows: usize = plan.collect().unwrap().iter().map(|b| b.num_rows()).sum();
            let want = expected
                .values()
                .filter(|s| s.as_deref() == Some(&*session))
                .count();
            assert_eq!(rows, want, "{context}: session {session}");
            assert!(
                segments <= 3,
                "{context}: session {session} in {segments} segments"
            );
        }
    };
    check(&engine, "after compaction");
    assert!(engine.verify().unwrap().is_ok());
    drop(engine);
    let engine = Engine::open(
        dir.path(),
        Options::default()
            .with_background_sealing(false)
            .with_seal_max_rows(1500),
    )
    .unwrap();
    check(&engine, "after a restart");
}
