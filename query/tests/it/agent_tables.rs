//! The agent tables' rules on hand-built traces whose right answers are written out here:
//! one decision in several forms, retries by call id and arguments, risk from decisions, and
//! every answer unchanged when the export is sent again.

use std::sync::Arc;

use engine::Engine;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use query::{Options, SqlEngine};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::monitoring_fixture::{BASE_TIME, SpanSpec, int, request, string, trace};

struct Store {
    sql: SqlEngine,
    engine: Arc<Engine>,
    _dir: TempDir,
}

/// A store holding `requests`, each written `copies` times (the first copy sealed).
fn store(requests: &[ExportTraceServiceRequest], copies: usize) -> Store {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(
        Engine::open(
            dir.path(),
            engine::Options::default().with_background_sealing(false),
        )
        .unwrap(),
    );
    for copy in 0..copies {
        for request in requests {
            engine
                .write(ingest::to_span_batch(request).unwrap().batch)
                .unwrap();
        }
        if copy == 0 {
            engine.seal().unwrap();
        }
    }
    let sql = SqlEngine::new(Arc::clone(&engine), Options::default()).unwrap();
    Store {
        sql,
        engine,
        _dir: dir,
    }
}

async fn rows(store: &Store, sql: &str) -> Vec<Value> {
    let output = match store.sql.execute(sql).await {
        Ok(output) => output,
        Err(error) => panic!("{sql}: {error}"),
    };
    match query::format::to_json(&output)["rows"].take() {
        Value::Array(rows) => rows,
        other => panic!("rows are not an array: {other}"),
    }
}

/// Span `index` of test trace `number` (as `trace` builds ids).
fn span_hex(number: u8, index: u8) -> String {
    format!("{:02x}000000000000{index:02x}", 0xe0 + number)
}

fn root(index: u8, start_ms: u64, end_ms: u64, session: &str) -> SpanSpec {
    SpanSpec::new(index, None, "invoke_agent", start_ms, end_ms).attributes(vec![
        string("gen_ai.operation.name", "invoke_agent"),
        string("gen_ai.agent.name", "Gate Agent"),
        string("session.id", session),
    ])
}

fn tool(index: u8, start_ms: u64, end_ms: u64, name: &str, more: Vec<KeyValue>) -> SpanSpec {
    let mut attributes = vec![
        string("gen_ai.operation.name", "execute_tool"),
        string("gen_ai.tool.name", name),
    ];
    attributes.extend(more);
    SpanSpec::new(index, Some(1), "execute_tool", start_ms, end_ms).attributes(attributes)
}

fn decision(verdict: &str, kind: &str, policy: &str, more: Vec<(&str, &str)>) -> Vec<KeyValue> {
    let mut out = vec![
        string("agent.decision.verdict", verdict),
        string("agent.decision.kind", kind),
        string("agent.decision.policy.id", policy),
    ];
    out.extend(more.into_iter().map(|(key, value)| string(key, value)));
    out
}

const FORMS: u8 = 0x11;

/// One run whose tools each carry decisions in one or both forms.
fn forms_request() -> ExportTraceServiceRequest {
    request(vec![trace(
        FORMS,
        BASE_TIME,
        "gate",
        vec![
            root(1, 0, 10_000, "sess_forms"),
            // Attributes only.
            tool(
                2,
                1_000,
                1_500,
                "a_attributes",
                decision("deny", "policy", "p.attr", vec![]),
            ),
            // Event only.
            tool(3, 2_000, 2_500, "b_event", vec![]).event(
                2_100,
                "agent.decision",
                decision("deny", "policy", "p.event", vec![]),
            ),
            // Both forms, no id: one decision, at the event's time, fields from both.
            tool(
                4,
                3_000,
                3_500,
                "c_both",
                decision(
                    "deny",
                    "policy",
                    "p.both",
                    vec![("agent.decision.risk", "destructive")],
                ),
            )
            .event(
                3_100,
                "agent.decision",
                decision(
                    "deny",
                    "policy",
                    "p.both",
                    vec![("agent.decision.reasoning", "drops a table")],
                ),
            ),
            // Both forms with one id (the event an agent.policy.decision): one decision.
            tool(
                5,
                4_000,
                4_500,
                "d_same_id",
                decision(
                    "escalate",
                    "approval",
                    "p.x",
                    vec![("agent.decision.id", "d-5")],
                ),
            )
            .event(
                4_100,
                "agent.policy.decision",
                vec![
                    string("agent.policy.decision", "escalate"),
                    string("agent.policy.name", "p.x.v2"),
                    string("agent.decision.id", "d-5"),
                ],
            ),
            // Two different decisions on one span: two rows.
            tool(
                6,
                5_000,
                5_500,
                "e_two",
                decision("deny", "policy", "p.one", vec![]),
            )
            .event(
                5_100,
                "agent.decision",
                decision("allow", "policy", "p.two", vec![]),
            ),
            // Different ids: two decisions, even with equal kind, policy and verdict.
            tool(
                7,
                6_000,
                6_500,
                "f_ids_differ",
                decision("deny", "policy", "p.f", vec![("agent.decision.id", "d-7a")]),
            )
            .event(
                6_100,
                "agent.decision",
                decision("deny", "policy", "p.f", vec![("agent.decision.id", "d-7b")]),
            ),
        ],
    )])
}

#[tokio::test(flavor = "multi_thread")]
async fn one_decision_in_several_forms_is_one_row() {
    let expected_decisions = vec![
        json!(["a_attributes", "deny", "p.attr", null, null, "span"]),
        json!(["b_event", "deny", "p.event", null, null, "event"]),
        json!([
            "c_both",
            "deny",
            "p.both",
            "destructive",
            "drops a table",
            "span,event"
        ]),
        json!(["d_same_id", "escalate", "p.x", null, null, "span,event"]),
        json!(["e_two", "allow", "p.two", null, null, "event"]),
        json!(["e_two", "deny", "p.one", null, null, "span"]),
        json!(["f_ids_differ", "deny", "p.f", null, null, "event"]),
        json!(["f_ids_differ", "deny", "p.f", null, null, "span"]),
    ];
    for copies in [1, 2] {
        let store = store(&[forms_request()], copies);
        let decisions = rows(
            &store,
            "SELECT tool_name, verdict, policy_id, risk, reasoning, forms FROM decisions \
             ORDER BY tool_name, verdict, forms",
        )
        .await;
        assert_eq!(decisions, expected_decisions, "{copies} copies");
        // The merged decision takes the event's time.
        let time = rows(
            &store,
            "SELECT CAST(time AS BIGINT) FROM decisions WHERE tool_name = 'c_both'",
        )
        .await;
        assert_eq!(
            time,
            vec![json!([BASE_TIME as i64 + 3_100 * 1_000_000])],
            "{copies} copies"
        );
        // Counted once in the run, the session and the monitoring question.
        let run = rows(&store, "SELECT denials, escalations FROM agent_runs").await;
        assert_eq!(run, vec![json!([6, 1])], "{copies} copies");
        let session = rows(&store, "SELECT session_id, denials FROM sessions").await;
        assert_eq!(session, vec![json!(["sess_forms", 6])], "{copies} copies");
        let by_policy = rows(
            &store,
            "SELECT policy_id, count(*) FROM decisions WHERE verdict = 'deny' \
             GROUP BY 1 ORDER BY 1",
        )
        .await;
        assert_eq!(
            by_policy,
            vec![
                json!(["p.attr", 1]),
                json!(["p.both", 1]),
                json!(["p.event", 1]),
                json!(["p.f", 2]),
                json!(["p.one", 1]),
            ],
            "{copies} copies"
        );
    }
}

const SKEWED: u8 = 0x13;

/// Two runs of one session (root 1 over [0, 10 s], root 20 over [30 s, 40 s]). Children of
/// root 1 come from a service whose clock is 12 s ahead: a tool call at 11 s and a denial at
/// 31.5 s (inside root 20's time range). By parent links both are root 1's.
fn skewed_request() -> ExportTraceServiceRequest {
    request(vec![trace(
        SKEWED,
        BASE_TIME,
        "skew",
        vec![
            root(1, 0, 10_000, "sess_skew"),
            tool(2, 11_000, 11_500, "lookup", vec![]),
            tool(
                3,
                31_500,
                31_800,
                "wipe",
                decision("deny", "policy", "p.skew", vec![]),
            ),
            root(20, 30_000, 40_000, "sess_skew"),
            SpanSpec {
                parent: Some(20),
                ..tool(21, 32_000, 32_100, "lookup", vec![])
            },
        ],
    )])
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_count_in_the_run_they_descend_from_whatever_their_clock() {
    let store = store(&[skewed_request()], 1);
    // From the input: root 1 has tool calls 2 and 3 and the denial on 3; root 20 has call 21.
    let runs = rows(
        &store,
        "SELECT span_id, tool_calls, denials FROM agent_runs ORDER BY start_time",
    )
    .await;
    assert_eq!(
        runs,
        vec![
            json!([span_hex(SKEWED, 1), 2, 1]),
            json!([span_hex(SKEWED, 20), 1, 0]),
        ]
    );
    // The runs' denials add up to the session's.
    let session = rows(&store, "SELECT runs, denials FROM sessions").await;
    assert_eq!(session, vec![json!([2, 1])]);
}

const RETRIES: u8 = 0x12;

fn arguments(value: &str) -> KeyValue {
    string("gen_ai.tool.call.arguments", value)
}

fn call_id(value: &str) -> KeyValue {
    string("gen_ai.tool.call.id", value)
}

/// Two runs of one trace with failed calls followed by same / other arguments, same call id,
/// parallel calls and a call after a denial.
fn retries_request() -> ExportTraceServiceRequest {
    let second_run = root(20, 30_000, 40_000, "sess_retry");
    let in_second = |spec: SpanSpec| SpanSpec {
        parent: Some(20),
        ..spec
    };
    request(vec![trace(
        RETRIES,
        BASE_TIME,
        "retry",
        vec![
            root(1, 0, 20_000, "sess_retry"),
            tool(2, 100, 200, "fetch", vec![arguments(r#"{"id":"A"}"#)]).error("timeout"),
            tool(3, 300, 400, "fetch", vec![arguments(r#"{"id":"A"}"#)]),
            tool(4, 500, 600, "fetch", vec![arguments(r#"{"id":"B"}"#)]).error("timeout"),
            tool(5, 700, 800, "fetch", vec![arguments(r#"{"id":"C"}"#)]),
            tool(6, 900, 1_000, "send", vec![call_id("call_X")]).error("503"),
            tool(7, 1_100, 1_200, "send", vec![call_id("call_X")]),
            tool(8, 1_300, 1_400, "send", vec![call_id("call_X")]),
            tool(9, 1_500, 1_800, "pay", vec![arguments("P")]).error("declined"),
            tool(10, 1_600, 1_900, "pay", vec![arguments("P")]),
            tool(11, 2_000, 2_100, "wipe", vec![arguments("D1")])
                .event(
                    2_010,
                    "agent.policy.decision",
                    vec![
                        string("agent.policy.decision", "deny"),
                        string("agent.policy.name", "no.wipe"),
                        string("agent.decision.risk", "destructive"),
                    ],
                )
                .error("denied"),
            tool(12, 2_200, 2_300, "wipe", vec![arguments("D2")]),
            tool(
                13,
                2_400,
                2_500,
                "fetch",
                vec![arguments(r#"{"id":"A"}"#), int("agent.retry.attempt", 2)],
            ),
            second_run,
            in_second(tool(
                21,
                31_000,
                31_100,
                "fetch",
                vec![arguments(r#"{"id":"B"}"#)],
            )),
        ],
    )])
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_are_inferred_from_call_ids_and_arguments_only() {
    let s = |index| span_hex(RETRIES, index);
    let expected = vec![
        json!([s(2), "fetch", 0, false, null]),
        json!([s(3), "fetch", 1, true, "inferred"]),
        json!([s(4), "fetch", 0, false, null]),
        json!([s(5), "fetch", 0, false, null]),
        json!([s(6), "send", 0, false, null]),
        json!([s(7), "send", 1, true, "inferred"]),
        json!([s(8), "send", 0, false, null]),
        json!([s(9), "pay", 0, false, null]),
        json!([s(10), "pay", 0, false, null]),
        json!([s(11), "wipe", 0, false, null]),
        json!([s(12), "wipe", 0, false, null]),
        json!([s(13), "fetch", 2, true, "explicit"]),
        json!([s(21), "fetch", 0, false, null]),
    ];
    for copies in [1, 2] {
        let store = store(&[retries_request()], copies);
        let calls = rows(
            &store,
            "SELECT span_id, tool_name, attempt, is_retry, retry_source FROM tool_calls \
             ORDER BY start_time",
        )
        .await;
        assert_eq!(calls, expected, "{copies} copies");
        // The denied call has no risk of its own: it takes the decision event's.
        let risk = rows(
            &store,
            "SELECT span_id, risk, verdict FROM tool_calls WHERE tool_name = 'wipe' \
             ORDER BY start_time",
        )
        .await;
        assert_eq!(
            risk,
            vec![
                json!([s(11), "destructive", "deny"]),
                json!([s(12), null, null])
            ],
            "{copies} copies"
        );
        let runs = rows(
            &store,
            "SELECT span_id, tool_calls, retries, denials FROM agent_runs ORDER BY start_time",
        )
        .await;
        assert_eq!(
            runs,
            vec![json!([s(1), 12, 3, 1]), json!([s(20), 1, 0, 0])],
            "{copies} copies"
        );
    }
}

/// The spans of `request` that `keep` accepts.
fn only(
    request: &ExportTraceServiceRequest,
    keep: impl Fn(&opentelemetry_proto::tonic::trace::v1::Span) -> bool,
) -> ExportTraceServiceRequest {
    let mut request = request.clone();
    for resource in &mut request.resource_spans {
        for scope in &mut resource.scope_spans {
            scope.spans.retain(&keep);
        }
    }
    request
}

async fn counts(store: &Store) -> Vec<i64> {
    let mut out = Vec::new();
    for table in [
        "llm_calls",
        "tool_calls",
        "decisions",
        "agent_runs",
        "sessions",
    ] {
        let count = rows(store, &format!("SELECT count(*) FROM {table}")).await;
        out.push(count[0][0].as_i64().unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_tables_follow_late_spans_erasure_expiry_and_purge() {
    // The children first, sealed; the roots (which carry the session) arrive later, as batch
    // exporters send them.
    let full = retries_request();
    let children = only(&full, |span| !span.parent_span_id.is_empty());
    let roots = only(&full, |span| span.parent_span_id.is_empty());
    let store = store(&[children], 1);
    store
        .engine
        .write(ingest::to_span_batch(&roots).unwrap().batch)
        .unwrap();
    // Every call got the trace's session, its run and its retries, as if sent in one piece.
    let calls = rows(
        &store,
        "SELECT session_id, count(*), count(*) FILTER (WHERE is_retry) FROM tool_calls \
         GROUP BY 1",
    )
    .await;
    assert_eq!(calls, vec![json!(["sess_retry", 13, 3])]);
    let runs = rows(
        &store,
        "SELECT session_id, tool_calls, retries FROM agent_runs ORDER BY start_time",
    )
    .await;
    assert_eq!(
        runs,
        vec![json!(["sess_retry", 12, 3]), json!(["sess_retry", 1, 0])]
    );
    let before = counts(&store).await;
    assert_eq!(before, vec![0, 13, 1, 2, 1]);

    // Erasing the session erases its agent rows.
    store.engine.erase_session("sess_retry").unwrap();
    assert_eq!(counts(&store).await, vec![0; 5]);

    // Expiry: once the segments are past their tier's keep, their agent rows are gone too.
    store
        .engine
        .write(ingest::to_span_batch(&forms_request()).unwrap().batch)
        .unwrap();
    store.engine.seal().unwrap();
    assert_eq!(counts(&store).await, vec![0, 6, 8, 1, 1]);
    let day = 86_400 * 1_000_000_000_i64;
    store
        .engine
        .expire(BASE_TIME as i64 + 500 * day, false)
        .unwrap();
    assert_eq!(counts(&store).await, vec![0; 5]);

    // Purge empties them with everything else.
    store
        .engine
        .write(ingest::to_span_batch(&full).unwrap().batch)
        .unwrap();
    assert_eq!(counts(&store).await, before);
    store.engine.purge().unwrap();
    assert_eq!(counts(&store).await, vec![0; 5]);
}
