//! Tokens and scopes on every listener, Host and Origin checks, and the refusal to listen
//! beyond loopback unprotected, against an in-process server and real clients.

use std::collections::HashMap;
use std::sync::Arc;

use api::ServerConfig;
use api::auth::{Scope, TokenSection, Tokens, token_hash};
use opentelemetry_otlp::{
    Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::http::{request, span};
use crate::support::TestServer;

/// `google.rpc.Status`, as OTLP/HTTP answers errors.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

const INGEST: &str = "tok-ingest";
const QUERY: &str = "tok-query";
const CONTENT: &str = "tok-content";
const ADMIN: &str = "tok-admin";

fn tokens() -> Arc<Tokens> {
    let entry = |name: &str, token: &str, scopes: Vec<Scope>| TokenSection {
        name: name.to_owned(),
        sha256: token_hash(token),
        scopes,
    };
    Arc::new(
        Tokens::from_sections(&[
            entry("collector", INGEST, vec![Scope::Ingest]),
            entry("analyst", QUERY, vec![Scope::Query]),
            entry("investigator", CONTENT, vec![Scope::Query, Scope::Content]),
            entry("operator", ADMIN, vec![Scope::Admin]),
        ])
        .unwrap(),
    )
}

async fn start(dir: &std::path::Path) -> TestServer {
    let mut config = ServerConfig::ephemeral(dir);
    config.tokens = tokens();
    config.enable_purge = true;
    TestServer::start_with(config).await
}

async fn post_otlp(server: &TestServer, token: Option<&str>, trace: u8) -> StatusCode {
    let mut builder = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.otlp_http))
        .header("content-type", "application/x-protobuf")
        .body(request(vec![span(trace, 1)]).encode_to_vec());
    if let Some(token) = token {
        builder = builder.bearer_auth(token);
    }
    builder.send().await.unwrap().status()
}

async fn sql(server: &TestServer, token: Option<&str>, sql: &str) -> (StatusCode, Value) {
    let mut builder = reqwest::Client::new()
        .post(format!("{}/api/v1/sql", server.api))
        .json(&json!({ "sql": sql }));
    if let Some(token) = token {
        builder = builder.bearer_auth(token);
    }
    let response = builder.send().await.unwrap();
    (
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_wants_a_token_with_the_right_scope() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;

    // OTLP/HTTP: 401 without or with an unknown token, 403 with a token of another scope.
    assert_eq!(post_otlp(&server, None, 1).await, StatusCode::UNAUTHORIZED);
    // An OTLP exporter reads the refusal as a google.rpc.Status in its request's encoding.
    let refused = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.otlp_http))
        .header("content-type", "application/x-protobuf")
        .bearer_auth(QUERY)
        .body(request(vec![span(1, 1)]).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(refused.headers()["content-type"], "application/x-protobuf");
    let status = RpcStatus::decode(refused.bytes().await.unwrap()).unwrap();
    assert_eq!(status.code, tonic::Code::PermissionDenied as i32);
    assert!(status.message.contains("ingest"), "{}", status.message);
    assert_eq!(
        post_otlp(&server, Some("guess"), 1).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post_otlp(&server, Some(QUERY), 1).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(post_otlp(&server, Some(INGEST), 1).await, StatusCode::OK);

    // OTLP/gRPC, with a tonic client built from the same protos.
    for (token, code) in [
        (None, Some(tonic::Code::Unauthenticated)),
        (Some(QUERY), Some(tonic::Code::PermissionDenied)),
        (Some(INGEST), None),
    ] {
        let channel = tonic::transport::Endpoint::from_shared(server.otlp_grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client =
            TraceServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
                if let Some(token) = token {
                    request
                        .metadata_mut()
                        .insert("authorization", format!("Bearer {token}").parse().unwrap());
                }
                Ok(request)
            });
        let result = client.export(request(vec![span(2, 1)])).await;
        assert_eq!(result.err().map(|status| status.code()), code, "{token:?}");
    }

    // SQL: query scope reads spans; content text needs the content scope.
    let (status, body) = sql(&server, None, "SELECT count(*) FROM spans").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = sql(&server, Some(INGEST), "SELECT count(*) FROM spans").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = sql(&server, Some(QUERY), "SELECT count(*) FROM spans").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["rows"][0][0], 2);
    for reads_content in [
        "SELECT * FROM content",
        "SELECT count(*) FROM spans WHERE trace_id IN (SELECT trace_id FROM content)",
    ] {
        let (status, body) = sql(&server, Some(QUERY), reads_content).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{reads_content}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("content"),
            "{body}"
        );
        let (status, body) = sql(&server, Some(CONTENT), reads_content).await;
        assert_eq!(status, StatusCode::OK, "{reads_content}: {body}");
    }

    // Traces: references with query, text only with content.
    let client = reqwest::Client::new();
    let trace = format!("{}/api/v1/traces/{}", server.api, "01".repeat(16));
    let status = |token: &'static str, url: String| {
        let client = client.clone();
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status(QUERY, trace.clone()).await, StatusCode::OK);
    assert_eq!(
        status(QUERY, format!("{trace}?content=true")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(CONTENT, format!("{trace}?content=true")).await,
        StatusCode::OK
    );

    // Health stays open; purge needs admin.
    let health = client
        .get(format!("{}/healthz", server.api))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let purge = |token: &'static str| {
        let client = client.clone();
        let url = format!("{}/purge", server.api);
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(purge(CONTENT).await, StatusCode::FORBIDDEN);
    let (_, body) = sql(&server, Some(QUERY), "SELECT count(*) FROM spans").await;
    assert_eq!(body["rows"][0][0], 2, "a refused purge deleted nothing");
    assert_eq!(purge(ADMIN).await, StatusCode::OK);
    let (_, body) = sql(&server, Some(QUERY), "SELECT count(*) FROM spans").await;
    assert_eq!(body["rows"][0][0], 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_reads_want_the_query_scope() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let channel = tonic::transport::Endpoint::from_shared(server.jaeger.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    // The OTLP service on the Jaeger address wants ingest, like on the OTLP address.
    let mut otlp = TraceServiceClient::new(channel.clone());
    let denied = otlp.export(request(vec![span(3, 1)])).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);
    // Any Jaeger storage call without a token: UNAUTHENTICATED, before the service runs.
    let mut raw = tonic::client::Grpc::new(channel);
    raw.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/jaeger.storage.v2.TraceReader/GetServices",
    );
    let status = raw
        .unary::<_, (), _>(
            tonic::Request::new(()),
            path,
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opentelemetry_exporter_sends_its_token_over_grpc_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let grpc_endpoint = server.otlp_grpc.clone();
    let http_endpoint = format!("{}/v1/traces", server.otlp_http);
    tokio::task::spawn_blocking(move || {
        use opentelemetry::trace::{Tracer as _, TracerProvider as _};
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("authorization", format!("Bearer {INGEST}").parse().unwrap());
        let grpc = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(grpc_endpoint)
            .with_metadata(metadata)
            .build()
            .unwrap();
        let http = SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(http_endpoint)
            .with_headers(HashMap::from([(
                "authorization".to_owned(),
                format!("Bearer {INGEST}"),
            )]))
            .build()
            .unwrap();
        for exporter in [grpc, http] {
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_simple_exporter(exporter)
                .build();
            provider.tracer("auth-it").in_span("step", |_| {});
            provider.shutdown().expect("exported with the token");
        }
    })
    .await
    .unwrap();
    let (status, body) = sql(&server, Some(QUERY), "SELECT count(*) FROM spans").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["rows"][0][0], 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_hosts_and_origins_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = reqwest::Client::new();
    let sql_url = format!("{}/api/v1/sql", server.api);
    // A DNS-rebinding page: the browser sends its own host name.
    let rebinding = client
        .post(&sql_url)
        .header("host", "attacker.example:7070")
        .json(&json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rebinding.status(), StatusCode::FORBIDDEN);
    // A cross-site form: its Origin is another site.
    let cross_site = client
        .post(&sql_url)
        .header("origin", "https://attacker.example")
        .json(&json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    let body: Value = cross_site.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("cross-origin"),
        "{body}"
    );
    // The same requests from the server's own origin go through.
    let host = server.api.trim_start_matches("http://").to_owned();
    let same = client
        .post(&sql_url)
        .header("origin", format!("http://{host}"))
        .json(&json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_beyond_loopback_needs_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::ephemeral(dir.path());
    config.api_addr = "0.0.0.0:0".parse().unwrap();
    let error = api::start(config.clone()).await.unwrap_err().to_string();
    assert!(
        error.contains("--api-addr 0.0.0.0:0") && error.contains("--insecure"),
        "{error}"
    );
    assert!(
        !dir.path().join("sightline.redb").exists(),
        "refused before the store was opened"
    );
    config.tokens = tokens();
    let error = api::start(config.clone()).await.unwrap_err().to_string();
    assert!(error.contains("TLS"), "{error}");
    config.insecure = true;
    let server = TestServer::start_with(config).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_origin_gets_cors_and_its_preflight_needs_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::ephemeral(dir.path());
    config.tokens = tokens();
    config.allowed_origins = vec!["https://grafana.example:3000".to_owned()];
    let server = TestServer::start_with(config).await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/sql", server.api);
    let preflight = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://grafana.example:3000")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://grafana.example:3000"
    );
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    let answer = client
        .post(&url)
        .header("origin", "https://grafana.example:3000")
        .bearer_auth(QUERY)
        .json(&json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(
        answer.headers()["access-control-allow-origin"],
        "https://grafana.example:3000"
    );
    // Another site: no CORS headers, and the request itself is refused.
    let other = client
        .post(&url)
        .header("origin", "https://other.example")
        .bearer_auth(QUERY)
        .json(&json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
    assert!(other.headers().get("access-control-allow-origin").is_none());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_on_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    assert_eq!(post_otlp(&server, None, 1).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        post_otlp(&server, Some("guess"), 1).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post_otlp(&server, Some(QUERY), 1).await,
        StatusCode::FORBIDDEN
    );
    let channel = tonic::transport::Channel::from_shared(server.otlp_grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let denied = TraceServiceClient::new(channel)
        .export(request(vec![span(3, 1)]))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", server.api))
        .bearer_auth(QUERY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |series: &str| -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series))
            .and_then(|rest| rest.trim().parse().ok())
    };
    assert_eq!(
        value("sightline_auth_refusals_total{listener=\"http\",status=\"401\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value("sightline_auth_refusals_total{listener=\"http\",status=\"403\"}"),
        Some(1.0)
    );
    assert_eq!(
        value("sightline_auth_refusals_total{listener=\"grpc\",status=\"401\"}"),
        Some(1.0)
    );
    server.stop().await;
}
