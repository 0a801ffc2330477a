//! OTLP/HTTP and OTLP/gRPC edge behaviour, and the HTTP API, against an in-process server.

use std::io::Write as _;

use api::ServerConfig;
use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::TestServer;

pub(crate) fn span(trace: u8, span: u8) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![span; 8],
        name: format!("span-{span}"),
        kind: 2,
        start_time_unix_nano: 1_793_491_200_000_000_000 + u64::from(span),
        end_time_unix_nano: 1_793_491_200_000_001_000,
        ..Span::default()
    }
}

pub(crate) fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key_strindex: 0,
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("edge".into())),
                    }),
                }],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Sends `spans` as one OTLP/HTTP protobuf export and checks it was acknowledged.
async fn export(server: &TestServer, spans: Vec<Span>) {
    let body = request(spans).encode_to_vec();
    let response = post(&server.otlp_http, "application/x-protobuf", false, body).await;
    assert_eq!(response.status(), StatusCode::OK);
}

async fn post(url: &str, content_type: &str, gzip_body: bool, body: Vec<u8>) -> reqwest::Response {
    let mut builder = reqwest::Client::new()
        .post(format!("{url}/v1/traces"))
        .header("content-type", content_type);
    let body = if gzip_body {
        builder = builder.header("content-encoding", "gzip");
        gzip(&body)
    } else {
        body
    };
    builder.body(body).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_accepts_protobuf_and_json_plain_and_gzip_and_answers_in_kind() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let proto = request(vec![span(1, 1), span(1, 2)]).encode_to_vec();

    let response = post(
        &server.otlp_http,
        "application/x-protobuf",
        false,
        proto.clone(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    let body = response.bytes().await.unwrap();
    assert!(
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::decode(body)
            .is_ok()
    );

    let response = post(&server.otlp_http, "application/x-protobuf", true, proto).await;
    assert_eq!(response.status(), StatusCode::OK);

    let json_body = json!({"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "edge-json"}}]},
        "scopeSpans": [{"spans": [{"traceId": "0303030303030303030303030303030F", "spanId": "0404040404040404", "name": "json-span",
        "kind": 3, "startTimeUnixNano": "1793491200000000000", "endTimeUnixNano": 1_793_491_200_000_000_500_u64,
        "attributes": [{"key": "n", "value": {"intValue": "42"}}]}]}]}]});
    let response = post(
        &server.otlp_http,
        "application/json; charset=utf-8",
        true,
        json_body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{:?}",
        response.text().await
    );
    let response = post(
        &server.otlp_http,
        "application/json",
        false,
        json_body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply, json!({}));

    assert_eq!(
        server
            .count("SELECT count(*) FROM spans WHERE service_name = 'edge'")
            .await,
        4
    );
    let rows = server
        .rows("SELECT trace_id, span_kind, duration_ns, attributes['n'] FROM spans WHERE service_name = 'edge-json'")
        .await;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0],
        json!(["0303030303030303030303030303030f", "client", 500, "42"])
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_otlp_http_input_gets_400_with_the_reason_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;

    let response = post(&server.otlp_http, "text/plain", false, b"hello".to_vec()).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let status = Status::decode(response.bytes().await.unwrap()).unwrap();
    assert!(
        status.message.contains("content-type"),
        "{}",
        status.message
    );
    assert_eq!(status.code, 3);

    let response = post(
        &server.otlp_http,
        "application/x-protobuf",
        false,
        vec![0xff, 0xff, 0xff],
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let response = post(
        &server.otlp_http,
        "application/json",
        false,
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], 3);

    let response = post(
        &server.otlp_http,
        "application/x-protobuf",
        true,
        b"not gzip at all".to_vec(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // One invalid span (all-zero trace id) among valid ones: the whole request is refused.
    let mut bad = span(0, 9);
    bad.trace_id = vec![0; 16];
    let body = request(vec![span(5, 1), bad, span(5, 2)]).encode_to_vec();
    let response = post(&server.otlp_http, "application/x-protobuf", false, body).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let status = Status::decode(response.bytes().await.unwrap()).unwrap();
    assert!(status.message.contains("trace"), "{}", status.message);

    let mut short = span(6, 1);
    short.span_id = vec![1; 7];
    let body = request(vec![short]).encode_to_vec();
    let response = post(&server.otlp_http, "application/x-protobuf", false, body).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let json_body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "abc", "spanId": "0404040404040404", "name": "x"}]}]}]});
    let response = post(
        &server.otlp_http,
        "application/json",
        false,
        json_body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("traceId"),
        "{body}"
    );

    assert_eq!(server.count("SELECT count(*) FROM spans").await, 0);
    server.stop().await;
}

/// `google.rpc.Status` as OTLP/HTTP returns it.
#[derive(Clone, PartialEq, prost::Message)]
struct Status {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_also_when_only_the_decompressed_size_is_too_big() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::ephemeral(dir.path());
    config.max_request_bytes = 64 * 1024;
    let server = TestServer::start_with(config).await;

    let big: Vec<Span> = (0..200u8)
        .map(|n| {
            let mut s = span(7, n.max(1));
            s.name = "x".repeat(1000);
            s
        })
        .collect();
    let body = request(big).encode_to_vec();
    assert!(body.len() > 64 * 1024);
    let response = post(
        &server.otlp_http,
        "application/x-protobuf",
        false,
        body.clone(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Compresses far below the limit, expands above it.
    let compressed = gzip(&body);
    assert!(compressed.len() < 64 * 1024);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.otlp_http))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(compressed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(server.count("SELECT count(*) FROM spans").await, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_answers_429_and_resource_exhausted_with_retry_advice() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::ephemeral(dir.path());
    // Sealing cannot keep up (it never runs) and unsealed data may not exceed 1 byte: after the
    // first export, every export is refused as overloaded until data is sealed.
    config.engine = engine::Options::default()
        .with_background_sealing(false)
        .with_max_memtable_bytes(1);
    let server = TestServer::start_with(config).await;
    let body = request(vec![span(8, 1)]);
    let first = post(
        &server.otlp_http,
        "application/x-protobuf",
        false,
        body.encode_to_vec(),
    )
    .await;
    assert_eq!(first.status(), StatusCode::OK);
    let mut padded = body.clone();
    padded.resource_spans[0].scope_spans[0].spans[0].span_id = vec![2; 8];

    let response = post(
        &server.otlp_http,
        "application/x-protobuf",
        false,
        padded.encode_to_vec(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");

    let mut client = TraceServiceClient::connect(server.otlp_grpc.clone())
        .await
        .unwrap();
    let status = client.export(padded).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    use tonic_types::StatusExt as _;
    let retry = status
        .get_details_retry_info()
        .expect("retry info in the status details");
    assert!(retry.retry_delay.is_some());
    assert_eq!(server.count("SELECT count(*) FROM spans").await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inflight_budget_below_the_request_limit_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::ephemeral(dir.path());
    config.max_inflight_bytes = 1024;
    let error = api::start(config).await.unwrap_err();
    assert!(
        error.to_string().contains("--max-inflight-bytes"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_stores_spans_and_rejects_invalid_ids() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut client = TraceServiceClient::connect(server.otlp_grpc.clone())
        .await
        .unwrap();
    client
        .export(request(vec![span(9, 1), span(9, 2)]))
        .await
        .unwrap();
    let mut bad = span(9, 3);
    bad.span_id = vec![];
    let status = client
        .export(request(vec![span(9, 4), bad]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("span"), "{}", status.message());
    // gzip-compressed gRPC is accepted too.
    let mut gzip_client = TraceServiceClient::connect(server.otlp_grpc.clone())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    gzip_client
        .export(request(vec![span(10, 1)]))
        .await
        .unwrap();
    assert_eq!(server.count("SELECT count(*) FROM spans").await, 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_endpoint_returns_otlp_json_404_and_400() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut original = request(vec![span(11, 1), span(11, 2)]);
    original.resource_spans[0].scope_spans[0].spans[1]
        .attributes
        .push(KeyValue {
            key_strindex: 0,
            key: "retries".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(3)),
            }),
        });
    let response = post(
        &server.otlp_http,
        "application/x-protobuf",
        false,
        original.encode_to_vec(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    let client = reqwest::Client::new();
    let trace_hex = "0b".repeat(16);
    let response = client
        .get(format!("{}/api/v1/traces/{trace_hex}", server.api))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.bytes().await.unwrap();
    let rebuilt = ingest::decode_traces_json(&body).unwrap();
    assert_eq!(rebuilt, original, "the trace reads back exactly");
    let value: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        value["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"],
        trace_hex
    );

    let response = client
        .get(format!("{}/api/v1/traces/{}", server.api, "0c".repeat(16)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = client
        .get(format!("{}/api/v1/traces/xyz", server.api))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("trace id"),
        "{body}"
    );

    let response = client
        .get(format!("{}/healthz", server.api))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_endpoint_formats_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    export(&server, vec![span(12, 1), span(12, 2)]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/sql", server.api);

    let json_reply: Value = client
        .post(&url)
        .json(&json!({"sql": "SELECT span_name, flags FROM spans ORDER BY span_name", "format": "json"}))
        .send().await.unwrap().json().await.unwrap();
    assert_eq!(json_reply["columns"][0]["name"], "span_name");
    assert_eq!(json_reply["rows"], json!([["span-1", 0], ["span-2", 0]]));

    let csv = client
        .post(&url)
        .json(&json!({"sql": "SELECT span_name FROM spans ORDER BY span_name", "format": "csv"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        csv.lines().collect::<Vec<_>>(),
        vec!["span_name", "span-1", "span-2"]
    );

    let arrow_bytes = client
        .post(&url)
        .json(&json!({"sql": "SELECT count(*) AS n FROM spans", "format": "arrow"}))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(arrow_bytes), None).unwrap();
    let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(batches[0].num_rows(), 1);

    // Like `curl -d '{"sql": ...}'`: a form content type, a JSON body.
    let reply: Value = client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"sql": "SELECT count(*) FROM spans"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["rows"], json!([[2]]));

    for bad in [
        json!({"sql": "SELEC nonsense"}),
        json!({"sql": "DROP TABLE spans"}),
        json!({"sql": "COPY spans TO '/tmp/x.csv'"}),
        json!({"sql": "SELECT nope FROM spans"}),
        json!({"query": "SELECT 1"}),
    ] {
        let response = client.post(&url).json(&bad).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_results_over_the_byte_limit_get_413_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::ephemeral(dir.path());
    config.query = config.query.clone().with_max_result_bytes(4096);
    let server = TestServer::start_with(config).await;
    export(&server, (1..=40).map(|index| span(14, index)).collect()).await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/sql", server.api);
    for format in ["json", "csv", "arrow"] {
        let response = client
            .post(&url)
            .json(&json!({"sql": "SELECT * FROM spans", "format": format}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{format}");
        let body: Value = response.json().await.unwrap();
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.contains("4096"), "{format}: {body}");
        // A small answer of the same server still comes back.
        assert_eq!(
            server.count("SELECT count(*) FROM spans").await,
            40,
            "{format}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_with_duplicate_ids_are_all_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let body = request(vec![span(13, 1), span(13, 2)]).encode_to_vec();
    for _ in 0..2 {
        let response = post(
            &server.otlp_http,
            "application/x-protobuf",
            false,
            body.clone(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let rows = server
        .rows("SELECT span_id, count(*) FROM spans GROUP BY span_id ORDER BY span_id")
        .await;
    assert_eq!(
        rows,
        vec![
            json!(["0101010101010101", 2]),
            json!(["0202020202020202", 2])
        ]
    );
    let trace: Value = reqwest::get(format!("{}/api/v1/traces/{}", server.api, "0d".repeat(16)))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let spans: usize = trace["resourceSpans"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|resource| resource["scopeSpans"].as_array().unwrap())
        .map(|scope| scope["spans"].as_array().unwrap().len())
        .sum();
    assert_eq!(spans, 4);
    server.stop().await;
}

/// Sends raw bytes as a `TraceService/Export` message, as a broken client would.
async fn export_raw_grpc(endpoint: &str, message: Vec<u8>) -> tonic::Status {
    #[derive(Debug, Clone, Copy)]
    struct Raw;
    impl tonic::codec::Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = ();
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }
    impl tonic::codec::Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(
            &mut self,
            item: Vec<u8>,
            dst: &mut tonic::codec::EncodeBuf<'_>,
        ) -> Result<(), tonic::Status> {
            use bytes::BufMut as _;
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl tonic::codec::Decoder for Raw {
        type Item = ();
        type Error = tonic::Status;
        fn decode(
            &mut self,
            _src: &mut tonic::codec::DecodeBuf<'_>,
        ) -> Result<Option<()>, tonic::Status> {
            Ok(Some(()))
        }
    }
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    client
        .unary(tonic::Request::new(message), path, Raw)
        .await
        .expect_err("the export must be refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_exports_that_cannot_succeed_get_codes_clients_do_not_retry() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::ephemeral(dir.path());
    config.max_request_bytes = 64 << 10;
    let server = TestServer::start_with(config).await;
    use tonic_types::StatusExt as _;
    // Not protobuf: INVALID_ARGUMENT (was INTERNAL), saying what was wrong.
    for garbage in [vec![0xff; 64], b"{\"resourceSpans\": []}".to_vec()] {
        let status = export_raw_grpc(&server.otlp_grpc, garbage).await;
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("ExportTraceServiceRequest"),
            "{}",
            status.message()
        );
    }
    // Over the size limit: RESOURCE_EXHAUSTED (was OUT_OF_RANGE), without retry advice, plain
    // and gzip-compressed.
    let spans: Vec<Span> = (0..2_000u32)
        .map(|n| {
            let mut span = span(12, 1);
            span.span_id = u64::from(n + 1).to_be_bytes().to_vec();
            span.name = format!("a long enough span name to pass the limit {n}");
            span
        })
        .collect();
    let big = request(spans);
    assert!(big.encoded_len() > 64 << 10);
    for gzip in [false, true] {
        let mut client = TraceServiceClient::connect(server.otlp_grpc.clone())
            .await
            .unwrap();
        if gzip {
            client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
        }
        let status = client.export(big.clone()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(status.get_details_retry_info().is_none(), "{status:?}");
    }
    assert_eq!(server.count("SELECT count(*) FROM spans").await, 0);
    // A valid export still goes through on the same server.
    let mut client = TraceServiceClient::connect(server.otlp_grpc.clone())
        .await
        .unwrap();
    client.export(request(vec![span(12, 1)])).await.unwrap();
    assert_eq!(server.count("SELECT count(*) FROM spans").await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_query_gets_504_while_health_and_ingest_stay_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::ephemeral(dir.path());
    config.query = query::Options::default().with_timeout(std::time::Duration::from_secs(3));
    let server = TestServer::start_with(config).await;
    let client = reqwest::Client::new();
    let sql_url = format!("{}/api/v1/sql", server.api);
    let runaway = {
        let client = client.clone();
        let url = sql_url.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .json(
                    &json!({"sql": "SELECT count(*) FROM range(1000000000000) a \
                                     CROSS JOIN range(1000000) b"}),
                )
                .send()
                .await
                .unwrap()
        })
    };
    // While it runs: health answers and an export is stored, every time.
    let mut served = 0;
    while !runaway.is_finished() && served < 20 {
        let health = client
            .get(format!("{}/healthz", server.api))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        served += 1;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!runaway.is_finished(), "the runaway query ended early");
    let stored = post(
        &server.otlp_http,
        "application/x-protobuf",
        false,
        request(vec![span(13, 1)]).encode_to_vec(),
    )
    .await;
    assert_eq!(stored.status(), StatusCode::OK);
    let response = runaway.await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("3s"), "{body}");
    // Refused before planning: too many operators, and the server still answers.
    let chain = vec!["1"; 100_000].join(" + ");
    let response = client
        .post(&sql_url)
        .json(&json!({ "sql": format!("SELECT {chain}") }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("operators"),
        "{body}"
    );
    assert_eq!(server.count("SELECT count(*) FROM spans").await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_segment_answers_500_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let spans: Vec<Span> = (1..=200).map(|n| span(14, n)).collect();
    let stored = post(
        &server.otlp_http,
        "application/x-protobuf",
        false,
        request(spans).encode_to_vec(),
    )
    .await;
    assert_eq!(stored.status(), StatusCode::OK);
    server.stop().await;
    // Stopping seals: one segment file. Flip a bit in the middle of its pages.
    // (Beside it: the agent tables' sidecar files, `<id>.<table>.parquet`.)
    let segments: Vec<_> = walk_files(&dir.path().join("segments"))
        .into_iter()
        .filter(|path| {
            path.file_stem()
                .is_some_and(|stem| !stem.to_string_lossy().contains('.'))
        })
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    let mut bytes = std::fs::read(&segments[0]).unwrap();
    let middle = bytes.len() / 3;
    bytes[middle] ^= 0x10;
    std::fs::write(&segments[0], &bytes).unwrap();
    let name = segments[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();

    let server = TestServer::start(dir.path()).await;
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/sql", server.api))
        .json(&json!({"sql": "SELECT * FROM spans"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = response.json().await.unwrap();
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("damaged") && message.contains(&name),
        "{message}"
    );
    server.stop().await;
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk_files(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// `name{labels} value` lines of a Prometheus exposition, by series.
fn series(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_sent_and_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let client = reqwest::Client::new();
    // Two good HTTP exports (3 + 2 spans), one bad one, one gRPC export (4 spans).
    let mut sent_bytes = 0;
    for spans in [
        vec![span(21, 1), span(21, 2), span(21, 3)],
        vec![span(22, 1), span(22, 2)],
    ] {
        let body = request(spans).encode_to_vec();
        sent_bytes += body.len();
        let response = post(&server.otlp_http, "application/x-protobuf", false, body).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let bad = post(
        &server.otlp_http,
        "application/x-protobuf",
        false,
        vec![0xff; 9],
    )
    .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let grpc_request = request((1..=4).map(|n| span(23, n)).collect());
    sent_bytes += grpc_request.encoded_len();
    TraceServiceClient::connect(server.otlp_grpc.clone())
        .await
        .unwrap()
        .export(grpc_request)
        .await
        .unwrap();
    // Two queries, one failing.
    assert_eq!(server.count("SELECT count(*) FROM spans").await, 9);
    let failed = client
        .post(format!("{}/api/v1/sql", server.api))
        .json(&json!({"sql": "SELECT nope FROM spans"}))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), StatusCode::BAD_REQUEST);
    let engine = std::sync::Arc::clone(server.server.as_ref().unwrap().engine());
    tokio::task::spawn_blocking(move || engine.seal().unwrap())
        .await
        .unwrap();

    let response = client
        .get(format!("{}/metrics", server.api))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let metrics = series(&response.text().await.unwrap());
    let get = |name: &str| {
        metrics
            .get(name)
            .copied()
            .unwrap_or_else(|| panic!("no {name}: {metrics:?}"))
    };
    assert_eq!(get("sightline_ingest_spans_total"), 9.0);
    assert_eq!(get("sightline_ingest_bytes_total"), sent_bytes as f64);
    assert_eq!(
        get("sightline_ingest_requests_total{protocol=\"http\",status=\"200\"}"),
        2.0
    );
    assert_eq!(
        get("sightline_ingest_requests_total{protocol=\"http\",status=\"400\"}"),
        1.0
    );
    assert_eq!(
        get("sightline_ingest_requests_total{protocol=\"grpc\",status=\"200\"}"),
        1.0
    );
    assert_eq!(get("sightline_commit_seconds_count"), 3.0);
    assert_eq!(get("sightline_queries_total{status=\"200\"}"), 1.0);
    assert_eq!(get("sightline_queries_total{status=\"400\"}"), 1.0);
    assert_eq!(get("sightline_query_seconds_count"), 2.0);
    assert_eq!(get("sightline_seals_total"), 1.0);
    assert_eq!(get("sightline_seal_failures_total"), 0.0);
    assert_eq!(get("sightline_store_reopens_total"), 0.0);
    assert_eq!(get("sightline_segment_rows{tier=\"standard\"}"), 9.0);
    assert_eq!(get("sightline_memtable_rows"), 0.0);
    assert!(get("sightline_resident_memory_bytes") > 1e6);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_seals_turn_health_503_keep_their_backoff_and_recover_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::ephemeral(dir.path());
    // Every write makes the memtable due for sealing (and wakes the sealer).
    config.engine = config.engine.clone().with_seal_max_bytes(1);
    let server = TestServer::start_with(config).await;
    // Where the first seal must create its tier directory, a file: every seal fails.
    std::fs::create_dir_all(dir.path().join("segments")).unwrap();
    let blocker = dir.path().join("segments").join("standard");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let engine = std::sync::Arc::clone(server.server.as_ref().unwrap().engine());
    let client = reqwest::Client::new();
    let health = |client: reqwest::Client, url: String| async move {
        let response = client.get(url).send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    };
    let health_url = format!("{}/healthz", server.api);
    let seals_before = engine.activity().seals;
    // Twenty writes over two seconds, each waking the sealer.
    for n in 1..=20u8 {
        let response = post(
            &server.otlp_http,
            "application/x-protobuf",
            false,
            request(vec![span(30, n)]).encode_to_vec(),
        )
        .await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "writes go on into the WAL"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let attempts = engine.activity().seals - seals_before;
    assert!(
        (1..=4).contains(&attempts),
        "{attempts} seal attempts in ~2 s: the backoff (1 s, 2 s, ...) was not kept"
    );
    let (status, body) = health(client.clone(), health_url.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("sealing is failing"), "{body}");
    // Freed: the next seal succeeds by itself (backoff at most 8 s here), health recovers,
    // and every span is there.
    std::fs::remove_file(&blocker).unwrap();
    let mut recovered = false;
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if health(client.clone(), health_url.clone()).await.0 == StatusCode::OK {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "health stayed 503 after the fault was removed");
    // The sealer goes on sealing what queued up meanwhile.
    for _ in 0..100 {
        if engine.stats().memtable_rows == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        engine.stats().memtable_rows,
        0,
        "the retried seals sealed everything"
    );
    assert_eq!(server.count("SELECT count(*) FROM spans").await, 20);
    server.stop().await;
}
