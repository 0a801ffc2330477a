//! The real OpenTelemetry Rust exporter (opentelemetry-otlp) over gRPC, HTTP protobuf and HTTP
//! JSON into a server on 127.0.0.1:0, checked through SQL.

use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _,
};
use opentelemetry::{Array, KeyValue, StringValue, Value};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::support::TestServer;

/// Emits one small agent run through `exporter` and returns its trace id (hex).
/// Runs on a blocking thread: the SDK's simple processor exports synchronously.
pub(crate) async fn emit_agent_run(
    make_exporter: impl FnOnce() -> SpanExporter + Send + 'static,
    service: &'static str,
) -> String {
    tokio::task::spawn_blocking(move || {
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(make_exporter())
            .with_resource(Resource::builder().with_service_name(service).build())
            .build();
        let tracer = provider.tracer("sightline-it");
        let trace_id = tracer.in_span("invoke_agent support", |cx| {
            let root = cx.span();
            root.set_attribute(KeyValue::new("gen_ai.operation.name", "invoke_agent"));
            root.set_attribute(KeyValue::new("gen_ai.agent.name", "support"));
            let mut chat = tracer
                .span_builder("chat gpt-4o")
                .with_kind(SpanKind::Client)
                .start_with_context(&tracer, &cx);
            chat.set_attribute(KeyValue::new("gen_ai.operation.name", "chat"));
            chat.set_attribute(KeyValue::new("gen_ai.usage.input_tokens", 1234_i64));
            chat.set_attribute(KeyValue::new("gen_ai.request.temperature", 0.25_f64));
            chat.set_attribute(KeyValue::new(
                "gen_ai.response.finish_reasons",
                Value::Array(Array::String(vec![StringValue::from("stop")])),
            ));
            chat.end();
            let mut tool = tracer
                .span_builder("execute_tool search")
                .start_with_context(&tracer, &cx);
            tool.set_attribute(KeyValue::new("gen_ai.tool.name", "search"));
            tool.add_event(
                "agent.decision",
                vec![KeyValue::new("agent.decision.verdict", "allow")],
            );
            tool.set_status(Status::error("tool failed"));
            tool.end();
            root.span_context().trace_id().to_string()
        });
        provider.shutdown().expect("exporter flushes");
        trace_id
    })
    .await
    .expect("exporter thread")
}

pub(crate) async fn check_run(server: &TestServer, trace_id: &str, service: &str) {
    let where_trace = format!("WHERE trace_id = '{trace_id}'");
    assert_eq!(
        server
            .count(&format!("SELECT count(*) FROM spans {where_trace}"))
            .await,
        3
    );
    let rows = server
        .rows(&format!(
            "SELECT span_name, span_kind, service_name, status_code, status_message, attributes['gen_ai.tool.name'], \
             attributes['gen_ai.usage.input_tokens'], parent_span_id IS NULL \
             FROM spans {where_trace} ORDER BY span_name"
        ))
        .await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0][0], "chat gpt-4o");
    assert_eq!(rows[0][1], "client");
    assert_eq!(rows[0][2], service);
    assert_eq!(rows[0][6], "1234");
    assert_eq!(rows[1][0], "execute_tool search");
    assert_eq!(rows[1][3], "error");
    assert_eq!(rows[1][4], "tool failed");
    assert_eq!(rows[1][5], "search");
    assert_eq!(rows[2][0], "invoke_agent support");
    assert_eq!(rows[2][7], true);
    let events = server
        .rows(&format!(
            "SELECT name, attributes['agent.decision.verdict'] FROM span_events {where_trace}"
        ))
        .await;
    assert_eq!(events, vec![serde_json::json!(["agent.decision", "allow"])]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_exporter_over_grpc_http_protobuf_and_http_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;

    let endpoint = server.otlp_grpc.clone();
    let grpc_trace = emit_agent_run(
        move || {
            SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .unwrap()
        },
        "grpc-agent",
    )
    .await;
    check_run(&server, &grpc_trace, "grpc-agent").await;

    let endpoint = format!("{}/v1/traces", server.otlp_http);
    let proto_trace = emit_agent_run(
        move || {
            SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(endpoint)
                .build()
                .unwrap()
        },
        "http-proto-agent",
    )
    .await;
    check_run(&server, &proto_trace, "http-proto-agent").await;

    let endpoint = format!("{}/v1/traces", server.otlp_http);
    let json_trace = emit_agent_run(
        move || {
            SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpJson)
                .with_endpoint(endpoint)
                .build()
                .unwrap()
        },
        "http-json-agent",
    )
    .await;
    check_run(&server, &json_trace, "http-json-agent").await;

    assert_eq!(server.count("SELECT count(*) FROM spans").await, 9);
    let services = server
        .rows(
            "SELECT service_name, count(*) FROM spans GROUP BY service_name ORDER BY service_name",
        )
        .await;
    assert_eq!(
        services,
        vec![
            serde_json::json!(["grpc-agent", 3]),
            serde_json::json!(["http-json-agent", 3]),
            serde_json::json!(["http-proto-agent", 3]),
        ]
    );
    server.stop().await;
}
