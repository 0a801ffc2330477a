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

/// Segments of the spread store; with `memtable`, the last round stays in memory.
const ROUNDS: u32 = 6;
/// Sessions per round.
const SESSIONS: u32 = 30;

/// Session `i` of round `round`: `s<round>-<i>`, in that round's segment only, except
/// `s-multi`, which has a trace in rounds 1 and 4.
fn spread_session(round: u32, index: u32) -> String {
    if index == SESSIONS - 1 && (round == 1 || round == 4) {
        "s-multi".to_owned()
    } else {
        format!("s{round}-{index:02}")
    }
}

/// 6 rounds x 30 sessions x 2 traces x 6 spans, one sealed segment per round (each a few row
/// groups of 64 rows), so that every session lives in one segment (`s-multi` in two). Only the
/// root span (exported last) names the session and the trace's conversation `c<trace>`; the
/// first span of each trace has one event.
fn spread_store(memtable: bool) -> Store {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(
        Engine::open(
            dir.path(),
            engine::Options::default()
                .with_background_sealing(false)
                .with_row_group_rows(64),
        )
        .unwrap(),
    );
    for round in 0..ROUNDS {
        let mut builder = SpanBatchBuilder::new();
        for session in 0..SESSIONS {
            let session_id = spread_session(round, session);
            for trace_in_session in 0..2u32 {
                let trace = round * 1000 + session * 10 + trace_in_session;
                let conversation_id = format!("c{trace}");
                let event = [EventRecord {
                    time_unix_nano: BASE,
                    name: "step",
                    attributes: Vec::new(),
                    dropped_attributes_count: 0,
                }];
                for index in 0..6u32 {
                    let mut raw = [0u8; 16];
                    raw[12..].copy_from_slice(&trace.to_be_bytes());
                    raw[0] = 0x31;
                    let mut span = [0u8; 8];
                    span[4..].copy_from_slice(&(trace * 100 + index + 1).to_be_bytes());
                    span[0] = 2;
                    let root = index == 5;
                    builder.append(&SpanRecord {
                        trace_id: TraceId(raw),
                        span_id: SpanId(span),
                        name: if root { "invoke_agent" } else { "chat" },
                        kind: 1,
                        start_time_unix_nano: BASE + i64::from(trace) * 1_000 + i64::from(index),
                        end_time_unix_nano: BASE + i64::from(trace) * 1_000 + i64::from(index) + 5,
                        service_name: Some("agent"),
                        events: if index == 0 { &event } else { &[] },
                        agent: AgentFields {
                            session_id: root.then(|| Cow::Owned(session_id.clone())),
                            conversation_id: root.then(|| Cow::Owned(conversation_id.clone())),
                            ..AgentFields::default()
                        },
                        ..SpanRecord::default()
                    });
                }
            }
        }
        engine.write(builder.finish()).unwrap();
        if !(memtable && round == ROUNDS - 1) {
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

const SPAN_COLUMNS: &str = "trace_id, span_id, span_name, start_time, session_id, conversation_id";

/// What one query over `spans` (or `span_events`) returned and read, and its plan.
struct Read {
    rows: Vec<Value>,
    metrics: engine::ScanMetricsSnapshot,
    plan: String,
}

async fn read(store: &Store, table: &str, columns: &str, filter: &str) -> Read {
    let sql = format!("SELECT {columns} FROM {table} WHERE {filter} ORDER BY {columns}");
    let output = store.sql.execute(&sql).await.unwrap();
    let metrics = output.scan_metrics;
    let rows = match query::format::to_json(&output)["rows"].take() {
        Value::Array(rows) => rows,
        other => panic!("{other}"),
    };
    let plan = store.sql.execute(&format!("EXPLAIN {sql}")).await.unwrap();
    Read {
        rows,
        metrics,
        plan: query::format::to_table(&plan).unwrap(),
    }
}

/// `filter` with every key column wrapped so that nothing pushes down: the full-scan answer.
fn unpushed(filter: &str) -> String {
    filter
        .replace("session_id", "concat(session_id, '')")
        .replace("conversation_id", "concat(conversation_id, '')")
}

/// Asserts that `filter` is pushed into the scan (shown as `shown`, no FilterExec) and returns
/// exactly the rows of the same filter over a full scan; returns what it read.
async fn pushed_exactly(store: &Store, table: &str, filter: &str, shown: &str) -> Read {
    let columns = if table == "spans" {
        SPAN_COLUMNS
    } else {
        "trace_id, span_id, name, session_id, conversation_id"
    };
    let pushed = read(store, table, columns, filter).await;
    assert!(pushed.plan.contains(shown), "{filter}:\n{}", pushed.plan);
    assert!(
        !pushed.plan.contains("FilterExec"),
        "{filter}:\n{}",
        pushed.plan
    );
    let full = read(store, table, columns, &unpushed(filter)).await;
    assert!(full.plan.contains("FilterExec"), "{}", full.plan);
    assert_eq!(pushed.rows, full.rows, "{filter}");
    // Only the named keys' runs are decoded (every memtable row is examined, though).
    assert!(
        pushed.metrics.rows_scanned * 2 < full.metrics.rows_scanned
            && (pushed.metrics.bytes_read < full.metrics.bytes_read
                || full.metrics.bytes_read == 0),
        "{filter}: read {:?}, full scan {:?}",
        pushed.metrics,
        full.metrics
    );
    pushed
}

/// The metrics of reading each named session alone, summed (they are in different segments).
async fn sessions_alone(
    store: &Store,
    table: &str,
    sessions: &[&str],
) -> engine::ScanMetricsSnapshot {
    let mut total = engine::ScanMetricsSnapshot::default();
    for session in sessions {
        let columns = if table == "spans" {
            SPAN_COLUMNS
        } else {
            "trace_id, span_id, name, session_id, conversation_id"
        };
        let one = read(store, table, columns, &format!("session_id = '{session}'")).await;
        total.segments_total = one.metrics.segments_total;
        total.segments_selected += one.metrics.segments_selected;
        total.row_groups_read += one.metrics.row_groups_read;
        total.row_groups_pruned += one.metrics.row_groups_pruned;
        total.bytes_read += one.metrics.bytes_read;
        total.rows_scanned += one.metrics.rows_scanned;
        total.rows_returned += one.metrics.rows_returned;
    }
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn session_in_lists_and_ors_read_only_the_named_sessions() {
    let store = spread_store(false);
    for table in ["spans", "span_events"] {
        let alone = sessions_alone(&store, table, &["s1-03", "s4-07"]).await;
        assert_eq!(alone.segments_selected, 2, "{table}");
        // DataFusion turns an IN list of up to three items into ORs of equalities before the
        // table sees it; both forms, and an unknown session besides, read the same as the two
        // sessions alone.
        for (filter, shown) in [
            (
                "session_id IN ('s1-03', 's4-07')",
                "sessions=[s1-03, s4-07]",
            ),
            (
                "session_id = 's1-03' OR session_id = 's4-07'",
                "sessions=[s1-03, s4-07]",
            ),
            (
                "session_id IN ('s1-03', 's4-07', 'no-such-session')",
                "sessions=[no-such-session, s1-03, s4-07]",
            ),
            (
                "session_id IN ('s1-03', 's4-07', NULL)",
                "sessions=[s1-03, s4-07]",
            ),
        ] {
            let pushed = pushed_exactly(&store, table, filter, shown).await;
            assert_eq!(pushed.metrics, alone, "{table}: {filter}");
            assert_eq!(pushed.metrics.segments_total, u64::from(ROUNDS));
            let expected = if table == "spans" { 24 } else { 4 };
            assert_eq!(pushed.rows.len(), expected, "{table}: {filter}");
        }
        // Beside another pushed filter (which reads its own column too).
        let time = if table == "spans" {
            "start_time"
        } else {
            "span_start_time"
        };
        let filter = format!(
            "(session_id = 's1-03' OR session_id = 's4-07') AND {time} < '2100-01-01T00:00:00Z'"
        );
        let pushed = pushed_exactly(&store, table, &filter, "sessions=[s1-03, s4-07]").await;
        assert_eq!(pushed.metrics.segments_selected, 2, "{table}: {filter}");
        assert_eq!(pushed.metrics.rows_returned, 24, "{table}: {filter}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn session_in_lists_of_one_and_of_twenty_and_unknown_sessions() {
    let store = spread_store(false);
    // One element: DataFusion makes it an equality.
    let one = pushed_exactly(
        &store,
        "spans",
        "session_id IN ('s2-05')",
        "sessions=[s2-05]",
    )
    .await;
    assert_eq!(
        one.metrics,
        sessions_alone(&store, "spans", &["s2-05"]).await
    );
    assert_eq!(one.rows.len(), 12);

    // Twenty sessions over every segment (s-multi in two): only their segments and runs.
    let twenty: Vec<String> = (0..19)
        .map(|n| format!("s{}-{:02}", n % ROUNDS, n))
        .chain(["s-multi".to_owned()])
        .collect();
    let list = twenty
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let shown = {
        let mut sorted = twenty.clone();
        sorted.sort();
        format!("sessions=[{}]", sorted.join(", "))
    };
    let many = pushed_exactly(&store, "spans", &format!("session_id IN ({list})"), &shown).await;
    assert_eq!(many.rows.len(), 19 * 12 + 24);
    let names: Vec<&str> = twenty.iter().map(String::as_str).collect();
    let alone = sessions_alone(&store, "spans", &names).await;
    assert_eq!(many.metrics.segments_selected, u64::from(ROUNDS));
    assert_eq!(many.metrics.rows_returned, alone.rows_returned);
    // Sessions sharing a segment share its reads: never more than each alone.
    assert!(
        many.metrics.bytes_read <= alone.bytes_read,
        "{:?} vs {alone:?}",
        many.metrics
    );
    assert!(
        many.metrics.rows_scanned <= alone.rows_scanned,
        "{:?} vs {alone:?}",
        many.metrics
    );
    // The same twenty as ORs of equalities.
    let ors = twenty
        .iter()
        .map(|id| format!("session_id = '{id}'"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let or_form = pushed_exactly(&store, "spans", &ors, &shown).await;
    assert_eq!(or_form.metrics, many.metrics);

    // Sessions that do not exist: nothing is read.
    for filter in [
        "session_id IN ('nope', 'nada')",
        "session_id IN ('nope', 'nada', 'niente', 'nichts', 'rien')",
        "session_id = 'nope' OR session_id = 'nada'",
    ] {
        let output = store
            .sql
            .execute(&format!("SELECT {SPAN_COLUMNS} FROM spans WHERE {filter}"))
            .await
            .unwrap();
        assert_eq!(output.num_rows(), 0, "{filter}");
        assert_eq!(output.scan_metrics.segments_selected, 0, "{filter}");
        assert_eq!(output.scan_metrics.bytes_read, 0, "{filter}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn session_not_in_is_not_pushed_and_stays_exact() {
    let store = spread_store(false);
    for filter in [
        "session_id NOT IN ('s1-03', 's4-07')",
        "session_id NOT IN ('s1-03', 's4-07', 's0-01', 's0-02', 's0-03')",
        "NOT (session_id = 's1-03' OR session_id = 's4-07')",
        "conversation_id NOT IN ('c1030', 'c4070')",
    ] {
        let pushed = read(&store, "spans", SPAN_COLUMNS, filter).await;
        assert!(
            pushed.plan.contains("FilterExec"),
            "{filter}:\n{}",
            pushed.plan
        );
        assert!(
            !pushed.plan.contains("sessions=["),
            "{filter}:\n{}",
            pushed.plan
        );
        assert!(
            !pushed.plan.contains("conversations=["),
            "{filter}:\n{}",
            pushed.plan
        );
        let full = read(&store, "spans", SPAN_COLUMNS, &unpushed(filter)).await;
        assert_eq!(pushed.rows, full.rows, "{filter}");
        // Only root spans carry their own session, but every span reads back with it.
        assert!(!pushed.rows.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conversation_in_lists_and_ors_mixing_sessions_and_conversations_push_down() {
    let store = spread_store(false);
    for table in ["spans", "span_events"] {
        for (filter, shown) in [
            (
                "conversation_id IN ('c1030', 'c4071')",
                "conversations=[c1030, c4071]",
            ),
            (
                "conversation_id = 'c1030' OR conversation_id = 'c4071'",
                "conversations=[c1030, c4071]",
            ),
        ] {
            let pushed = pushed_exactly(&store, table, filter, shown).await;
            assert_eq!(pushed.metrics.segments_selected, 2, "{table}: {filter}");
        }
        for filter in [
            "session_id = 's1-03' OR conversation_id = 'c4071'",
            "conversation_id = 'c4071' OR session_id IN ('s1-03')",
            "session_id IN ('s1-03', 's1-04', 's1-05', 's1-06') OR conversation_id = 'c4071'",
        ] {
            let pushed = pushed_exactly(&store, table, filter, "(sessions=[s1-0").await;
            assert!(
                pushed.plan.contains("OR conversations=[c4071])"),
                "{}",
                pushed.plan
            );
            assert_eq!(pushed.metrics.segments_selected, 2, "{table}: {filter}");
        }
        // Two such disjunctions must both hold; with a plain session filter besides.
        let both = pushed_exactly(
            &store,
            table,
            "(session_id = 's1-03' OR conversation_id = 'c4071') \
             AND (session_id = 's4-07' OR conversation_id = 'c1030')",
            "(sessions=[s1-03] OR conversations=[c4071]), (sessions=[s4-07] OR conversations=[c1030])",
        )
        .await;
        let expected = if table == "spans" { 12 } else { 2 };
        assert_eq!(both.rows.len(), expected, "{table}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn session_filters_cover_the_memtable_too() {
    let store = spread_store(true);
    // s5-* are only in the memtable, s-multi and s1-03 only in segments.
    for (filter, shown) in [
        (
            "session_id IN ('s1-03', 's5-02')",
            "sessions=[s1-03, s5-02]",
        ),
        (
            "session_id IN ('s5-02', 's5-03', 's5-04', 's5-05')",
            "sessions=[s5-02, s5-03, s5-04, s5-05]",
        ),
        (
            "session_id = 's-multi' OR conversation_id = 'c5021'",
            "(sessions=[s-multi] OR conversations=[c5021])",
        ),
        (
            "conversation_id IN ('c5021', 'c1030')",
            "conversations=[c1030, c5021]",
        ),
    ] {
        for table in ["spans", "span_events"] {
            let pushed = pushed_exactly(&store, table, filter, shown).await;
            assert!(!pushed.rows.is_empty(), "{filter}");
        }
    }
    let memory_only = read(
        &store,
        "spans",
        SPAN_COLUMNS,
        "session_id IN ('s5-02', 's5-03')",
    )
    .await;
    assert_eq!(memory_only.rows.len(), 24);
    assert_eq!(memory_only.metrics.segments_selected, 0);
    assert_eq!(memory_only.metrics.bytes_read, 0);
    let mixed = read(
        &store,
        "spans",
        SPAN_COLUMNS,
        "session_id IN ('s1-03', 's5-02')",
    )
    .await;
    assert_eq!(mixed.rows.len(), 24);
    assert_eq!(mixed.metrics.segments_selected, 1);
    assert_eq!(
        mixed.metrics.bytes_read,
        sessions_alone(&store, "spans", &["s1-03"]).await.bytes_read
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_tables_read_only_the_named_sessions_and_conversations() {
    let store = spread_store(false);
    for table in [
        "llm_calls",
        "tool_calls",
        "decisions",
        "agent_runs",
        "sessions",
    ] {
        for filter in [
            "session_id IN ('s1-03', 's4-07')",
            "session_id = 's1-03' OR session_id = 's4-07'",
        ] {
            let sql = format!("SELECT * FROM {table} WHERE {filter}");
            let output = store.sql.execute(&sql).await.unwrap();
            // Two sessions of 2 traces x 6 spans, in 2 of the 6 segments.
            let read = output.scan_metrics;
            assert_eq!(read.segments_selected, 2, "{sql}");
            assert_eq!(read.rows_scanned, 24, "{sql}");
            let plan = store.sql.execute(&format!("EXPLAIN {sql}")).await.unwrap();
            let plan = query::format::to_table(&plan).unwrap();
            assert!(
                plan.contains("AgentDeriveExec") && plan.contains("sessions=[s1-03, s4-07]"),
                "{plan}"
            );
            assert!(
                !plan.contains("FilterExec"),
                "exact, nothing above:\n{plan}"
            );
            let analyzed = store
                .sql
                .execute(&format!("EXPLAIN ANALYZE {sql}"))
                .await
                .unwrap();
            let analyzed = query::format::to_table(&analyzed).unwrap();
            assert!(
                read.bytes_read > 0
                    && analyzed.contains("bytes_read=")
                    && analyzed.contains("segments_selected=2"),
                "{analyzed}"
            );
        }
    }
    let sessions = rows(
        &store,
        "SELECT session_id, spans, conversations FROM sessions \
         WHERE session_id IN ('s1-03', 's4-07') ORDER BY 1",
    )
    .await;
    assert_eq!(
        sessions,
        vec![json!(["s1-03", 12, 2]), json!(["s4-07", 12, 2])]
    );
    // A conversation filter finds its traces first and reads them whole.
    let sql = "SELECT * FROM agent_runs WHERE conversation_id IN ('c1030', 'c4070')";
    let output = store.sql.execute(sql).await.unwrap();
    assert_eq!(output.scan_metrics.rows_scanned, 12, "{sql}");
    let plan = store.sql.execute(&format!("EXPLAIN {sql}")).await.unwrap();
    let plan = query::format::to_table(&plan).unwrap();
    assert!(
        plan.contains(
            "trace_ids=[31000000000000000000000000000406, 31000000000000000000000000000fe6]"
        ),
        "{plan}"
    );
}
