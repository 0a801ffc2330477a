//! OTLP logs end to end: the OpenTelemetry Rust log exporter (opentelemetry-otlp) over gRPC,
//! HTTP protobuf and HTTP JSON, GenAI event fixtures written from the published conventions
//! (`gen_ai.client.inference.operation.details`, `gen_ai.evaluation.result`, the deprecated
//! message events, `agent.decision` as a log record), resends, and what the store answers:
//! the `logs` table, `llm_calls` filled from operation details, `evaluations`, decisions, and
//! the content path (`GET /api/v1/traces/{id}?content=true`). Every expected number is computed
//! here from the requests sent.

use opentelemetry::KeyValue;
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry_otlp::{LogExporter, Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Value as Json, json};

use crate::support::TestServer;

/// The question of the exporter runs: it must reach the content store and nowhere else.
const QUESTION: &str = "What is the capital of France? Ask alice@example.com";

/// What one exporter run sent, for the checks.
struct Sent {
    trace_id: String,
    span_id: String,
    input_tokens: i64,
    output_tokens: i64,
}

/// One chat span (no usage attributes on it: event-only capture) and, in its context, the
/// operation details event, an evaluation result and a plain log line, through the given
/// exporters. Runs on a blocking thread: the SDK's simple processors export synchronously.
async fn emit_chat_with_events(
    make_spans: impl FnOnce() -> SpanExporter + Send + 'static,
    make_logs: impl FnOnce() -> LogExporter + Send + 'static,
    service: &'static str,
    input_tokens: i64,
) -> Sent {
    tokio::task::spawn_blocking(move || {
        let resource = Resource::builder().with_service_name(service).build();
        let tracer_provider = SdkTracerProvider::builder()
            .with_simple_exporter(make_spans())
            .with_resource(resource.clone())
            .build();
        let logger_provider = SdkLoggerProvider::builder()
            .with_simple_exporter(make_logs())
            .with_resource(resource)
            .build();
        let tracer = tracer_provider.tracer("sightline-it");
        let logger = logger_provider.logger("opentelemetry-instrumentation-openai");
        let output_tokens = input_tokens / 10;
        let sent = tracer.in_span("chat gpt-4o", |cx| {
            let span = cx.span();
            span.set_attribute(KeyValue::new("gen_ai.operation.name", "chat"));
            span.set_attribute(KeyValue::new(
                "gen_ai.conversation.id",
                format!("conv-{service}"),
            ));
            let context = span.span_context().clone();

            let mut details = logger.create_log_record();
            details.set_event_name("gen_ai.client.inference.operation.details");
            details.set_severity_number(Severity::Info);
            details.set_trace_context(
                context.trace_id(),
                context.span_id(),
                Some(context.trace_flags()),
            );
            details.add_attribute("gen_ai.operation.name", "chat");
            details.add_attribute("gen_ai.request.model", "gpt-4o");
            details.add_attribute("gen_ai.response.model", "gpt-4o-2024-08-06");
            details.add_attribute("gen_ai.usage.input_tokens", input_tokens);
            details.add_attribute("gen_ai.usage.output_tokens", output_tokens);
            details.add_attribute(
                "gen_ai.response.finish_reasons",
                AnyValue::ListAny(Box::new(vec![AnyValue::from("stop")])),
            );
            details.add_attribute(
                "gen_ai.input.messages",
                json!([{"role": "user", "parts": [{"type": "text", "content": QUESTION}]}])
                    .to_string(),
            );
            logger.emit(details);

            let mut evaluation = logger.create_log_record();
            evaluation.set_event_name("gen_ai.evaluation.result");
            evaluation.set_trace_context(
                context.trace_id(),
                context.span_id(),
                Some(context.trace_flags()),
            );
            evaluation.add_attribute("gen_ai.evaluation.name", "relevance");
            evaluation.add_attribute("gen_ai.evaluation.score.value", 0.75_f64);
            evaluation.add_attribute("gen_ai.evaluation.score.label", "relevant");
            logger.emit(evaluation);

            let mut line = logger.create_log_record();
            line.set_severity_number(Severity::Warn);
            line.set_severity_text("WARN");
            line.set_body(AnyValue::from("retrying the model call"));
            line.set_trace_context(
                context.trace_id(),
                context.span_id(),
                Some(context.trace_flags()),
            );
            logger.emit(line);
            Sent {
                trace_id: context.trace_id().to_string(),
                span_id: context.span_id().to_string(),
                input_tokens,
                output_tokens,
            }
        });
        logger_provider.shutdown().expect("log exporter flushes");
        tracer_provider.shutdown().expect("span exporter flushes");
        sent
    })
    .await
    .expect("exporter thread")
}

async fn check_chat_with_events(server: &TestServer, sent: &Sent, service: &str) {
    let trace = &sent.trace_id;
    let rows = server
        .rows(&format!(
            "SELECT event_name, severity_number, severity_text, body, span_id, service_name, \
             conversation_id, scope_name, observed_time IS NOT NULL \
             FROM logs WHERE trace_id = '{trace}' ORDER BY time, event_name"
        ))
        .await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    let by_event = |name: Option<&str>| {
        rows.iter()
            .find(|row| row[0].as_str() == name)
            .unwrap_or_else(|| panic!("no {name:?} in {rows:?}"))
    };
    let details = by_event(Some("gen_ai.client.inference.operation.details"));
    assert_eq!(details[1], 9, "{details:?}");
    assert_eq!(details[4], sent.span_id.as_str());
    assert_eq!(details[5], service);
    assert_eq!(details[6], format!("conv-{service}").as_str());
    assert_eq!(details[7], "opentelemetry-instrumentation-openai");
    assert_eq!(details[8], true);
    let line = by_event(None);
    assert_eq!(line[1], 13);
    assert_eq!(line[2], "WARN");
    assert_eq!(line[3], r#"{"stringValue":"retrying the model call"}"#);

    // The span carried no usage: llm_calls reads it from the operation details.
    let calls = server
        .rows(&format!(
            "SELECT span_id, request_model, response_model, input_tokens, output_tokens, \
             finish_reasons FROM llm_calls WHERE trace_id = '{trace}'"
        ))
        .await;
    assert_eq!(
        calls,
        vec![json!([
            sent.span_id,
            "gpt-4o",
            "gpt-4o-2024-08-06",
            sent.input_tokens,
            sent.output_tokens,
            ["stop"]
        ])]
    );
    let evaluations = server
        .rows(&format!(
            "SELECT span_id, name, score_value, score_label FROM evaluations \
             WHERE trace_id = '{trace}'"
        ))
        .await;
    assert_eq!(
        evaluations,
        vec![json!([sent.span_id, "relevance", 0.75, "relevant"])]
    );

    // The question went to the content store: not in any log row, back with content=true.
    assert_eq!(
        server
            .count(&format!(
                "SELECT count(*) FROM logs WHERE trace_id = '{trace}' \
                 AND array_to_string(map_values(attributes), ' ') LIKE '%capital of France%'"
            ))
            .await,
        0
    );
    let plain = trace_json(server, trace, false).await;
    assert!(!plain.to_string().contains("capital of France"));
    let full = trace_json(server, trace, true).await;
    let messages = log_attribute(
        &full,
        "gen_ai.client.inference.operation.details",
        "gen_ai.input.messages",
    );
    // The default redaction rule replaced the e-mail address before storing.
    let expected = json!([{"role": "user", "parts": [{"type": "text", "content":
        QUESTION.replace("alice@example.com", "[REDACTED:email]")}]}])
    .to_string();
    assert_eq!(messages["stringValue"], expected.as_str(), "{full}");
}

/// `GET /api/v1/traces/{trace}` as JSON.
async fn trace_json(server: &TestServer, trace: &str, content: bool) -> Json {
    let response = server
        .client
        .get(format!(
            "{}/api/v1/traces/{trace}?content={content}",
            server.api
        ))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap()
}

/// The value of attribute `key` of the log record named `event` in a trace document.
fn log_attribute(document: &Json, event: &str, key: &str) -> Json {
    records(document)
        .into_iter()
        .filter(|record| record["eventName"] == event)
        .flat_map(|record| record["attributes"].as_array().cloned().unwrap_or_default())
        .find(|pair| pair["key"] == key)
        .map(|pair| pair["value"].clone())
        .unwrap_or_else(|| panic!("no {event} {key} in {document}"))
}

fn records(document: &Json) -> Vec<Json> {
    document["resourceLogs"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|resource| {
            resource["scopeLogs"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|scope| scope["logRecords"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_log_exporter_over_grpc_http_protobuf_and_http_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;

    let (spans, logs) = (server.otlp_grpc.clone(), server.otlp_grpc.clone());
    let grpc = emit_chat_with_events(
        move || {
            SpanExporter::builder()
                .with_tonic()
                .with_endpoint(spans)
                .build()
                .unwrap()
        },
        move || {
            LogExporter::builder()
                .with_tonic()
                .with_endpoint(logs)
                .build()
                .unwrap()
        },
        "grpc-agent",
        1000,
    )
    .await;
    check_chat_with_events(&server, &grpc, "grpc-agent").await;

    let mut sent = vec![grpc];
    for (protocol, service, tokens) in [
        (Protocol::HttpBinary, "http-proto-agent", 2000),
        (Protocol::HttpJson, "http-json-agent", 3000),
    ] {
        let spans = format!("{}/v1/traces", server.otlp_http);
        let logs = format!("{}/v1/logs", server.otlp_http);
        let run = emit_chat_with_events(
            move || {
                SpanExporter::builder()
                    .with_http()
                    .with_protocol(protocol)
                    .with_endpoint(spans)
                    .build()
                    .unwrap()
            },
            move || {
                LogExporter::builder()
                    .with_http()
                    .with_protocol(protocol)
                    .with_endpoint(logs)
                    .build()
                    .unwrap()
            },
            service,
            tokens,
        )
        .await;
        check_chat_with_events(&server, &run, service).await;
        sent.push(run);
    }

    // Every evaluation names its span: no span is read to answer `evaluations`.
    let explain = format!(
        "{:?}",
        server.rows("EXPLAIN SELECT name FROM evaluations").await
    );
    assert!(!explain.contains("HashJoinExec"), "{explain}");
    assert!(explain.contains("rows=logs"), "{explain}");

    // Across runs: three records each, spans untouched by them, token totals from the events.
    assert_eq!(server.count("SELECT count(*) FROM logs").await, 9);
    assert_eq!(server.count("SELECT count(*) FROM spans").await, 3);
    let total: i64 = sent
        .iter()
        .map(|run| run.input_tokens + run.output_tokens)
        .sum();
    assert_eq!(
        server
            .count("SELECT sum(input_tokens + output_tokens) FROM llm_calls")
            .await,
        total
    );
    let metrics = server
        .client
        .get(format!("{}/metrics", server.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sightline_ingest_log_records_total 9"),
        "{metrics}"
    );
    server.stop().await;
}

/// The span and log fixtures of [`genai_event_fixtures_fill_llm_calls_evaluations_and_content`].
struct Fixture {
    trace: &'static str,
    /// (span id, own input tokens, own output tokens, response id).
    chats: Vec<(&'static str, Option<i64>, Option<i64>, &'static str)>,
    /// (span id, input tokens, output tokens, finish reason) of each operation details event.
    details: Vec<(&'static str, i64, i64, &'static str)>,
}

fn fixture() -> Fixture {
    Fixture {
        trace: "0af7651916cd43dd8448eb211c80319c",
        chats: vec![
            // Event-only capture: the span has no usage.
            ("b7ad6b7169203331", None, None, "chatcmpl-1"),
            // The span says its own usage: it wins over the event.
            ("c7ad6b7169203332", Some(5), Some(1), "chatcmpl-2"),
            // No operation details event at all.
            ("d7ad6b7169203333", Some(40), None, "chatcmpl-3"),
        ],
        details: vec![
            ("b7ad6b7169203331", 100, 20, "stop"),
            ("c7ad6b7169203332", 999, 99, "length"),
        ],
    }
}

fn attribute(key: &str, value: Json) -> Json {
    json!({"key": key, "value": value})
}

fn text(value: &str) -> Json {
    json!({"stringValue": value})
}

fn int(value: i64) -> Json {
    json!({"intValue": value.to_string()})
}

const T0: u64 = 1_796_500_000_000_000_000;

fn spans_request(fixture: &Fixture) -> Json {
    let mut spans = vec![json!({
        "traceId": fixture.trace, "spanId": "a7ad6b7169203330", "name": "invoke_agent support",
        "startTimeUnixNano": T0.to_string(), "endTimeUnixNano": (T0 + 9_000_000).to_string(),
        "attributes": [
            attribute("gen_ai.operation.name", text("invoke_agent")),
            attribute("session.id", text("sess-logs")),
        ]
    })];
    for (index, (span, input, output, response)) in fixture.chats.iter().enumerate() {
        let start = T0 + 1_000_000 * (index as u64 + 1);
        let mut attributes = vec![
            attribute("gen_ai.operation.name", text("chat")),
            attribute("gen_ai.request.model", text("gpt-4o")),
            attribute("gen_ai.response.id", text(response)),
        ];
        if let Some(input) = input {
            attributes.push(attribute("gen_ai.usage.input_tokens", int(*input)));
        }
        if let Some(output) = output {
            attributes.push(attribute("gen_ai.usage.output_tokens", int(*output)));
        }
        spans.push(json!({
            "traceId": fixture.trace, "spanId": span, "parentSpanId": "a7ad6b7169203330",
            "name": "chat gpt-4o", "kind": 3,
            "startTimeUnixNano": start.to_string(), "endTimeUnixNano": (start + 500_000).to_string(),
            "attributes": attributes,
        }));
    }
    // A tool call the decision gates.
    spans.push(json!({
        "traceId": fixture.trace, "spanId": "e7ad6b7169203334", "parentSpanId": "a7ad6b7169203330",
        "name": "execute_tool delete_user",
        "startTimeUnixNano": (T0 + 6_000_000).to_string(),
        "endTimeUnixNano": (T0 + 7_000_000).to_string(),
        "attributes": [
            attribute("gen_ai.operation.name", text("execute_tool")),
            attribute("gen_ai.tool.name", text("delete_user")),
        ],
        // The decision as a span event too (one decision recorded both ways).
        "events": [{"timeUnixNano": (T0 + 6_000_000).to_string(), "name": "agent.decision",
            "attributes": [
                attribute("agent.decision.id", text("dec-1")),
                attribute("agent.decision.verdict", text("deny")),
            ]}]
    }));
    json!({"resourceSpans": [{
        "resource": {"attributes": [attribute("service.name", text("fixture-agent"))]},
        "scopeSpans": [{"spans": spans}]
    }]})
}

fn logs_request(fixture: &Fixture) -> Json {
    let mut records = Vec::new();
    for (index, (span, input, output, reason)) in fixture.details.iter().enumerate() {
        records.push(json!({
            "timeUnixNano": (T0 + 2_000_000 + index as u64).to_string(),
            "observedTimeUnixNano": (T0 + 3_000_000).to_string(),
            "severityNumber": "SEVERITY_NUMBER_INFO",
            "eventName": "gen_ai.client.inference.operation.details",
            "traceId": fixture.trace, "spanId": span,
            "attributes": [
                attribute("gen_ai.operation.name", text("chat")),
                attribute("gen_ai.request.model", text("gpt-4o")),
                attribute("gen_ai.response.model", text("gpt-4o-mini")),
                attribute("gen_ai.usage.input_tokens", int(*input)),
                attribute("gen_ai.usage.output_tokens", int(*output)),
                attribute("gen_ai.response.finish_reasons",
                    json!({"arrayValue": {"values": [text(reason)]}})),
                attribute("gen_ai.output.messages", text(
                    &json!([{"role": "assistant", "finish_reason": reason,
                        "parts": [{"type": "text", "content": format!("answer {index}")}]}])
                        .to_string())),
            ]
        }));
    }
    // An evaluation parented to its span, and one correlated only by the response id (no
    // span id), as an evaluator running later would send it.
    records.push(json!({
        "timeUnixNano": (T0 + 8_000_000).to_string(),
        "eventName": "gen_ai.evaluation.result",
        "traceId": fixture.trace, "spanId": fixture.chats[0].0,
        "attributes": [
            attribute("gen_ai.evaluation.name", text("relevance")),
            attribute("gen_ai.evaluation.score.value", json!({"doubleValue": 0.5})),
            attribute("gen_ai.evaluation.score.label", text("partial")),
            attribute("gen_ai.evaluation.explanation", text("half of the answer is off topic")),
        ]
    }));
    records.push(json!({
        "timeUnixNano": (T0 + 8_500_000).to_string(),
        "attributes": [
            attribute("event.name", text("gen_ai.evaluation.result")),
            attribute("gen_ai.evaluation.name", text("groundedness")),
            attribute("gen_ai.evaluation.score.value", json!({"doubleValue": 1.0})),
            attribute("gen_ai.response.id", text(fixture.chats[1].3)),
        ],
        "traceId": fixture.trace
    }));
    // A deprecated message event: the message is in the body.
    records.push(json!({
        "timeUnixNano": (T0 + 1_500_000).to_string(),
        "eventName": "gen_ai.user.message",
        "traceId": fixture.trace, "spanId": fixture.chats[0].0,
        "body": {"kvlistValue": {"values": [
            attribute("content", text("please delete user 7")),
        ]}}
    }));
    // The decision again, as a log record (same id: one decision).
    records.push(json!({
        "timeUnixNano": (T0 + 6_000_000).to_string(),
        "eventName": "agent.decision",
        "traceId": fixture.trace, "spanId": "e7ad6b7169203334",
        "attributes": [
            attribute("agent.decision.id", text("dec-1")),
            attribute("agent.decision.verdict", text("deny")),
            attribute("agent.decision.policy.id", text("no-deletes")),
        ]
    }));
    json!({"resourceLogs": [{
        "resource": {"attributes": [attribute("service.name", text("fixture-agent"))]},
        "scopeLogs": [{"scope": {"name": "fixture"}, "logRecords": records}]
    }]})
}

async fn post(server: &TestServer, path: &str, body: &Json) -> reqwest::Response {
    server
        .client
        .post(format!("{}{path}", server.otlp_http))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genai_event_fixtures_fill_llm_calls_evaluations_and_content() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let fixture = fixture();
    let logs = logs_request(&fixture);
    // Logs first (they arrive before their spans), then the spans, then the logs again (an
    // exporter's resend after a timeout).
    assert!(post(&server, "/v1/logs", &logs).await.status().is_success());
    assert!(
        post(&server, "/v1/traces", &spans_request(&fixture))
            .await
            .status()
            .is_success()
    );
    assert!(post(&server, "/v1/logs", &logs).await.status().is_success());
    let sent = logs["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
        .as_array()
        .unwrap()
        .len() as i64;
    let trace = fixture.trace;
    // Every copy is a raw row; the agent tables count each once.
    assert_eq!(server.count("SELECT count(*) FROM logs").await, 2 * sent);
    // Session resolved from the trace (the root span names it), with pushdown.
    assert_eq!(
        server
            .count("SELECT count(*) FROM logs WHERE session_id = 'sess-logs'")
            .await,
        2 * sent
    );
    let explain = server
        .rows("EXPLAIN SELECT count(*) FROM logs WHERE session_id = 'sess-logs'")
        .await;
    assert!(
        format!("{explain:?}").contains("sess-logs"),
        "the session filter reaches the scan: {explain:?}"
    );

    // llm_calls: the span's own value, else its operation details, else NULL.
    let expected: Vec<Json> = fixture
        .chats
        .iter()
        .map(|(span, input, output, _)| {
            let details = fixture.details.iter().find(|d| d.0 == *span);
            json!([
                span,
                input.or(details.map(|d| d.1)),
                output.or(details.map(|d| d.2)),
                details.map(|d| json!([d.3])).unwrap_or(Json::Null),
                details.map(|_| "gpt-4o-mini"),
            ])
        })
        .collect();
    let calls = server
        .rows(&format!(
            "SELECT span_id, input_tokens, output_tokens, finish_reasons, response_model \
             FROM llm_calls WHERE trace_id = '{trace}' ORDER BY span_id"
        ))
        .await;
    assert_eq!(calls, expected);
    let runs = server
        .rows(&format!(
            "SELECT llm_calls, input_tokens FROM agent_runs WHERE trace_id = '{trace}'"
        ))
        .await;
    let input_total: i64 = expected.iter().filter_map(|row| row[1].as_i64()).sum();
    assert_eq!(runs, vec![json!([fixture.chats.len(), input_total])]);

    // evaluations: one row each (the resend counted once), the second matched by response id.
    let evaluations = server
        .rows(&format!(
            "SELECT span_id, name, score_value, score_label, explanation LIKE 'sightline-content:v1:%' \
             FROM evaluations WHERE trace_id = '{trace}' ORDER BY name"
        ))
        .await;
    assert_eq!(
        evaluations,
        vec![
            json!([fixture.chats[1].0, "groundedness", 1.0, null, null]),
            json!([fixture.chats[0].0, "relevance", 0.5, "partial", true]),
        ]
    );

    // Only the spans of the trace whose record lacks a span id are read to match it.
    let explain = server.rows("EXPLAIN SELECT name FROM evaluations").await;
    let explain = format!("{explain:?}");
    assert!(
        explain.contains(&format!("trace_ids=[{trace}]")),
        "the response-id match reads that trace's spans only: {explain}"
    );

    // One decision recorded as a span event and as a log record: one row, and the trace kept
    // in the decision tier.
    let decisions = server
        .rows(&format!(
            "SELECT verdict, policy_id FROM decisions WHERE trace_id = '{trace}'"
        ))
        .await;
    assert_eq!(decisions, vec![json!(["deny", "no-deletes"])]);
    let tiers = server
        .rows(&format!(
            "SELECT DISTINCT retention_tier FROM logs WHERE trace_id = '{trace}'"
        ))
        .await;
    assert_eq!(tiers, vec![json!(["decision"])]);

    // Content: message attributes and a deprecated event's body are references in the rows,
    // and come back exactly beside their span with content=true.
    let bodies = server
        .rows(&format!(
            "SELECT body FROM logs WHERE trace_id = '{trace}' AND event_name = 'gen_ai.user.message'"
        ))
        .await;
    assert_eq!(bodies.len(), 2);
    assert!(
        bodies[0][0]
            .as_str()
            .unwrap()
            .contains("sightline-content:v1:"),
        "{bodies:?}"
    );
    let plain = trace_json(&server, trace, false).await;
    assert!(!plain.to_string().contains("please delete user 7"));
    assert!(!plain.to_string().contains("answer 0"));
    let full = trace_json(&server, trace, true).await;
    let body = records(&full)
        .into_iter()
        .find(|record| record["eventName"] == "gen_ai.user.message")
        .map(|record| record["body"].clone())
        .unwrap();
    assert_eq!(
        body,
        json!({"kvlistValue": {"values": [attribute("content", text("please delete user 7"))]}})
    );
    let output = log_attribute(
        &full,
        "gen_ai.client.inference.operation.details",
        "gen_ai.output.messages",
    );
    assert!(
        output["stringValue"].as_str().unwrap().contains("answer 0"),
        "{output}"
    );
    assert!(full["resourceSpans"].is_array());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_log_records_are_refused_whole_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let bad = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": "1", "body": text("fine")},
        {"timeUnixNano": "2", "traceId": "0af7651916cd43dd8448eb211c80319c",
         "spanId": "b7ad6b71692033"}
    ]}]}]});
    let response = post(&server, "/v1/logs", &bad).await;
    assert_eq!(response.status(), 400);
    let body = response.text().await.unwrap();
    assert!(body.contains("spanId"), "{body}");
    // Nothing of the request was stored.
    assert_eq!(server.count("SELECT count(*) FROM logs").await, 0);

    // A gzip body, protobuf, as exporters with compression send it.
    let good = ingest::decode_logs_json(
        json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [
            {"timeUnixNano": "1796500000000000000", "body": text("compressed")}
        ]}]}]})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gzip, &prost::Message::encode_to_vec(&good)).unwrap();
    let response = server
        .client
        .post(format!("{}/v1/logs", server.otlp_http))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(gzip.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        server.rows("SELECT body FROM logs").await,
        vec![json!([r#"{"stringValue":"compressed"}"#])]
    );

    // Over gRPC, a message that is not a logs request is INVALID_ARGUMENT.
    let mut client = opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient::connect(
        server.otlp_grpc.clone(),
    )
    .await
    .unwrap();
    let request = opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
        resource_logs: vec![opentelemetry_proto::tonic::logs::v1::ResourceLogs {
            scope_logs: vec![opentelemetry_proto::tonic::logs::v1::ScopeLogs {
                log_records: vec![opentelemetry_proto::tonic::logs::v1::LogRecord {
                    trace_id: vec![1; 15],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let status = client.export(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("traceId"), "{status}");
    server.stop().await;
}

mod lifecycle {
    //! Log records through the binary's life cycle: acknowledged over gRPC, SIGKILL, recovery,
    //! erasure of a session, expiry by the tier rules.

    use std::path::Path;
    use std::process::Command;

    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use crate::binary::{BINARY, spawn_server_with};

    fn string(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_owned())),
            }),
            ..KeyValue::default()
        }
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    }

    /// A two-span run of `session` in trace `[byte; 16]`.
    fn run(byte: u8, session: &str) -> ExportTraceServiceRequest {
        let start = now();
        let span = |id: u8, parent: Option<u8>, operation: &str| Span {
            trace_id: vec![byte; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|parent| vec![parent; 8]).unwrap_or_default(),
            name: operation.to_owned(),
            start_time_unix_nano: start,
            end_time_unix_nano: start + 1_000,
            attributes: vec![
                string("gen_ai.operation.name", operation),
                string("session.id", session),
            ],
            ..Span::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span(1, None, "invoke_agent"), span(2, Some(1), "chat")],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    /// `count` operation-details records on span 2 of trace `[byte; 16]` (`None`: records with
    /// no trace), each with an input message.
    fn records(byte: Option<u8>, count: usize) -> ExportLogsServiceRequest {
        let time = now();
        let log_records = (0..count)
            .map(|index| LogRecord {
                time_unix_nano: time + index as u64,
                event_name: "gen_ai.client.inference.operation.details".to_owned(),
                trace_id: byte.map(|byte| vec![byte; 16]).unwrap_or_default(),
                span_id: byte.map(|_| vec![2; 8]).unwrap_or_default(),
                attributes: vec![string(
                    "gen_ai.input.messages",
                    &format!(
                        r#"[{{"role":"user","parts":[{{"type":"text","content":"q{index}"}}]}}]"#
                    ),
                )],
                ..LogRecord::default()
            })
            .collect();
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records,
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        }
    }

    fn sightline(args: &[&str]) -> (bool, String) {
        let output = Command::new(BINARY).args(args).output().unwrap();
        (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    }

    /// One number from `sightline sql --format csv`.
    fn count(dir: &Path, query: &str) -> i64 {
        let (ok, text) = sightline(&[
            "sql",
            "--format",
            "csv",
            "--data",
            dir.to_str().unwrap(),
            query,
        ]);
        assert!(ok, "{query}: {text}");
        text.lines()
            .filter(|line| !line.contains(" INFO ") && !line.contains(" WARN "))
            .nth(1)
            .and_then(|line| line.trim().parse().ok())
            .unwrap_or_else(|| panic!("{query}: {text}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn log_records_survive_sigkill_and_go_with_their_session_and_their_tier() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        let mut server = spawn_server_with(dir.path(), &[]);
        let mut spans = TraceServiceClient::connect(server.grpc.clone())
            .await
            .unwrap();
        let mut logs = LogsServiceClient::connect(server.grpc.clone())
            .await
            .unwrap();
        let (a, b) = (0xa1_u8, 0xb2_u8);
        let sent = [(Some(a), 3), (Some(b), 2), (None, 1)];
        // Logs before, between and after the spans of their traces.
        logs.export(records(sent[0].0, sent[0].1))
            .await
            .expect("acknowledged");
        spans.export(run(a, "sess-a")).await.expect("acknowledged");
        spans.export(run(b, "sess-b")).await.expect("acknowledged");
        logs.export(records(sent[1].0, sent[1].1))
            .await
            .expect("acknowledged");
        logs.export(records(sent[2].0, sent[2].1))
            .await
            .expect("acknowledged");
        kill(Pid::from_raw(server.child.id() as i32), Signal::SIGKILL).unwrap();
        server.child.wait().unwrap();

        let total: usize = sent.iter().map(|(_, count)| count).sum();
        assert_eq!(count(dir.path(), "SELECT count(*) FROM logs"), total as i64);
        let trace_a = hex::encode([a; 16]);
        let trace_b = hex::encode([b; 16]);
        assert_eq!(
            count(
                dir.path(),
                "SELECT count(*) FROM logs WHERE session_id = 'sess-a'"
            ),
            3
        );
        assert_eq!(count(dir.path(), "SELECT count(*) FROM spans"), 4);
        assert_eq!(
            count(
                dir.path(),
                &format!("SELECT count(*) FROM content WHERE trace_id = '{trace_a}'")
            ),
            3
        );

        // Erasing session a takes its spans, its log records and their content, nothing else.
        let (ok, text) = sightline(&["erase", "--session", "sess-a", "--data", data]);
        assert!(ok, "{text}");
        assert!(
            text.contains("erased session sess-a: 2 spans and 3 log records in 1 traces"),
            "{text}"
        );
        for (query, expected) in [
            (
                format!("SELECT count(*) FROM logs WHERE trace_id = '{trace_a}'"),
                0,
            ),
            (
                format!("SELECT count(*) FROM content WHERE trace_id = '{trace_a}'"),
                0,
            ),
            (
                format!("SELECT count(*) FROM logs WHERE trace_id = '{trace_b}'"),
                2,
            ),
            (
                "SELECT count(*) FROM logs WHERE trace_id IS NULL".to_owned(),
                1,
            ),
            ("SELECT count(*) FROM spans".to_owned(), 2),
        ] {
            assert_eq!(count(dir.path(), &query), expected, "{query}");
        }
        let (ok, text) = sightline(&["verify", "--data", data]);
        assert!(ok, "{text}");

        // Their tier's keep (standard, 14 days from arrival) ends: the logs go with the spans.
        let later =
            api::retention_command::format_timestamp((now() + 15 * 86_400_000_000_000) as i64);
        let (ok, text) = sightline(&["retention", "run", "--data", data, "--as-of", &later]);
        assert!(ok, "{text}");
        assert_eq!(count(dir.path(), "SELECT count(*) FROM logs"), 0);
        assert_eq!(count(dir.path(), "SELECT count(*) FROM spans"), 0);
    }
}
