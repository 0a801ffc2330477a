//! Session and conversation filters: pushed down to the engine's partition indexes, exact, and
//! visibly cheaper than a full scan.

use std::borrow::Cow;
use std::sync::Arc;

use engine::{AgentFields, Engine, EventRecord, SpanBatchBuilder, SpanId, SpanRecord, TraceId};
use query::{Options, SqlEngine};
use serde_json::{Value, json};

/// 2026-11-01T00:00:00Z
const BASE: i64 = 1_793_491_200_000_000_000;

struct Store {
    sql: SqlEngine,
    _engine: Arc<Engine>,
    _dir: tempfile::TempDir,
}

/// 400 sessions x 4 traces x 10 spans; only the last span of each trace (the root, exported
/// last) names the session and conversation. Rounds 0-1 and 2-3 are sealed into two segments
/// of 8,000 rows; with `memtable`, round 3 stays in memory.
fn store(memtable: bool) -> Store {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(
        Engine::open(
            dir.path(),
            engine::Options::default()
                .with_background_sealing(false)
                .with_row_group_rows(2048),
        )
        .unwrap(),
    );
    for round in 0..4u32 {
        let mut builder = SpanBatchBuilder::new();
        for session in 0..400u32 {
            let trace = round * 1000 + session;
            let session_id = format!("sess-{session:03}");
            let conversation_id = format!("conv-{session:03}-{}", round % 2);
            let decision = [EventRecord {
                time_unix_nano: BASE,
                name: "agent.decision",
                attributes: vec![("agent.decision.verdict", Cow::Borrowed("deny"))],
                dropped_attributes_count: 0,
            }];
            for index in 0..10u32 {
                let mut raw = [0u8; 16];
                raw[12..].copy_from_slice(&trace.to_be_bytes());
                raw[0] = 0x30;
                let mut span = [0u8; 8];
                span[4..].copy_from_slice(&(trace * 100 + index + 1).to_be_bytes());
                span[0] = 1;
                let root = index == 9;
                builder.append(&SpanRecord {
                    trace_id: TraceId(raw),
                    span_id: SpanId(span),
                    name: if root { "invoke_agent" } else { "chat" },
                    kind: 1,
                    start_time_unix_nano: BASE + i64::from(trace) * 1_000 + i64::from(index),
                    end_time_unix_nano: BASE + i64::from(trace) * 1_000 + i64::from(index) + 5,
                    service_name: Some("agent"),
                    events: if index == 3 { &decision } else { &[] },
                    agent: AgentFields {
                        session_id: root.then(|| Cow::Owned(session_id.clone())),
                        conversation_id: root.then(|| Cow::Owned(conversation_id.clone())),
                        ..AgentFields::default()
                    },
                    ..SpanRecord::default()
                });
            }
        }
        engine.write(builder.finish()).unwrap();
        if round == 1 || (round == 3 && !memtable) {
            engine.seal().unwrap();
        }
    }
    let sql = SqlEngine::new(Arc::clone(&engine), Options::default()).unwrap();
    Store {
        sql,
        _engine: engine,
        _dir: dir,
    }
}

async fn rows(store: &Store, sql: &str) -> Vec<Value> {
    let output = store.sql.execute(sql).await.unwrap();
    match query::format::to_json(&output)["rows"].take() {
        Value::Array(rows) => rows,
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn session_and_conversation_filters_are_exact_on_every_span_of_the_trace() {
    let store = store(true);
    assert_eq!(
        rows(
            &store,
            "SELECT count(*) FROM spans WHERE session_id = 'sess-007'"
        )
        .await,
        vec![json!([40])]
    );
    assert_eq!(
        rows(
            &store,
            "SELECT count(*), count(DISTINCT trace_id) FROM spans \
             WHERE conversation_id IN ('conv-007-1', 'conv-008-1')"
        )
        .await,
        vec![json!([40, 4])]
    );
    // Same answer as a filter the engine does not see.
    assert_eq!(
        rows(
            &store,
            "SELECT count(*) FROM spans WHERE concat(session_id, '') = 'sess-007'"
        )
        .await,
        vec![json!([40])]
    );
    // Events carry their span's session.
    assert_eq!(
        rows(
            &store,
            "SELECT count(*) FROM span_events WHERE session_id = 'sess-007' AND name = 'agent.decision'"
        )
        .await,
        vec![json!([4])]
    );
}

#[tokio::test]
async fn session_filters_push_down_and_read_a_fraction_of_the_bytes() {
    let store = store(false);
    let plan = store
        .sql
        .execute("EXPLAIN SELECT span_name FROM spans WHERE session_id = 'sess-007' AND conversation_id = 'conv-007-0'")
        .await
        .unwrap();
    let text = query::format::to_table(&plan).unwrap();
    assert!(
        text.contains("sessions=[sess-007], conversations=[conv-007-0]"),
        "{text}"
    );
    assert!(!text.contains("FilterExec"), "{text}");

    let query = |filter: &'static str| {
        let sql = &store.sql;
        async move {
            sql.execute(&format!(
                "SELECT trace_id, span_id, span_name, start_time FROM spans {filter}"
            ))
            .await
            .unwrap()
            .scan_metrics
        }
    };
    let full = query("").await;
    let one = query("WHERE session_id = 'sess-007'").await;
    assert_eq!(one.rows_returned, 40);
    assert!(one.segments_selected <= 2, "{one:?}");
    assert!(
        one.bytes_read * 4 < full.bytes_read,
        "one session {one:?} vs full {full:?}"
    );
    // Unknown session: no segment is read.
    let none = query("WHERE session_id = 'nope'").await;
    assert_eq!(none.segments_selected, 0);
    assert_eq!(none.bytes_read, 0);
}
