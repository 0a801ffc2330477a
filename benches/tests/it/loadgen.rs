//! Runs the `loadgen` binary against small in-process OTLP receivers (gRPC and HTTP) that count
//! spans and throttle their first requests, and against a closed port.

use std::io::Read as _;
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use tokio::runtime::Runtime;

/// What a fake receiver saw, and how many requests it still refuses.
#[derive(Debug, Default)]
struct Receiver {
    spans: AtomicU64,
    accepted_requests: AtomicU64,
    throttled: AtomicU64,
    /// Requests still to answer with 429 / RESOURCE_EXHAUSTED.
    throttle_remaining: AtomicU64,
    /// Answer everything with 400.
    reject_all: bool,
}

impl Receiver {
    fn new(throttle_first: u64, reject_all: bool) -> Arc<Self> {
        Arc::new(Self {
            throttle_remaining: AtomicU64::new(throttle_first),
            reject_all,
            ..Self::default()
        })
    }

    /// True when this request should be throttled.
    fn throttle(&self) -> bool {
        let throttle = self
            .throttle_remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if throttle {
            self.throttled.fetch_add(1, Ordering::SeqCst);
        }
        throttle
    }

    fn accept(&self, spans: usize) {
        self.spans.fetch_add(spans as u64, Ordering::SeqCst);
        self.accepted_requests.fetch_add(1, Ordering::SeqCst);
    }
}

/// The gRPC face of a [`Receiver`].
#[derive(Debug)]
struct GrpcReceiver(Arc<Receiver>);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if self.0.throttle() {
            return Err(tonic::Status::resource_exhausted("slow down"));
        }
        self.0.accept(testdata::span_count(request.get_ref()));
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn http_export(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if receiver.reject_all {
        return (StatusCode::BAD_REQUEST, "no thanks").into_response();
    }
    if receiver.throttle() {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "0")],
            "",
        )
            .into_response();
    }
    let mut body = body.to_vec();
    if headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|value| value == "gzip")
    {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut plain)
            .expect("gzip body");
        body = plain;
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let spans = if content_type == "application/json" {
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
        json["resourceSpans"]
            .as_array()
            .expect("resourceSpans")
            .iter()
            .flat_map(|resource| resource["scopeSpans"].as_array().expect("scopeSpans"))
            .map(|scope| scope["spans"].as_array().expect("spans").len())
            .sum()
    } else {
        assert_eq!(content_type, "application/x-protobuf");
        testdata::span_count(&ExportTraceServiceRequest::decode(&body[..]).expect("protobuf body"))
    };
    receiver.accept(spans);
    (
        [(header::CONTENT_TYPE, content_type.to_owned())],
        if content_type == "application/json" {
            b"{}".to_vec()
        } else {
            ExportTraceServiceResponse::default().encode_to_vec()
        },
    )
        .into_response()
}

fn start_grpc(runtime: &Runtime, receiver: Arc<Receiver>) -> SocketAddr {
    let _guard = runtime.enter();
    let incoming =
        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind gRPC");
    let addr = incoming.local_addr().expect("local addr");
    let service = TraceServiceServer::new(GrpcReceiver(receiver))
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    addr
}

fn start_http(runtime: &Runtime, receiver: Arc<Receiver>) -> SocketAddr {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind HTTP");
    let addr = listener.local_addr().expect("local addr");
    let app = Router::new()
        .route("/v1/traces", post(http_export))
        .with_state(receiver);
    runtime.spawn(async move { axum::serve(listener, app).await });
    addr
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .output()
        .expect("run loadgen")
}

/// The JSON summary loadgen prints as its last line.
fn summary(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|error| {
        panic!(
            "last line is not JSON ({error}):\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn expected_spans(traces: usize) -> u64 {
    let config = testdata::AgentTraceConfig {
        traces,
        sessions: 100,
        ..Default::default()
    };
    testdata::agent_trace_iter(&config)
        .map(|trace| trace.spans as u64)
        .sum()
}

fn run_against(target: &str, addr: SocketAddr, receiver: &Receiver, extra: &[&str]) {
    let addr = addr.to_string();
    let mut args = vec![
        "--target",
        target,
        "--addr",
        &addr,
        "--connections",
        "3",
        "--traces",
        "60",
        "--traces-per-request",
        "4",
    ];
    args.extend_from_slice(extra);
    let output = loadgen(&args);
    assert!(
        output.status.success(),
        "loadgen failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = summary(&output);
    let expected = expected_spans(60);
    assert_eq!(summary["requests"], 15);
    assert_eq!(summary["requests_accepted"], 15);
    assert_eq!(summary["spans_accepted"], expected);
    assert_eq!(summary["retries"]["429"], 2, "{summary}");
    assert_eq!(summary["failures"]["other"], 0);
    assert_eq!(receiver.spans.load(Ordering::SeqCst), expected);
    assert_eq!(receiver.accepted_requests.load(Ordering::SeqCst), 15);
    assert_eq!(receiver.throttled.load(Ordering::SeqCst), 2);
}

#[test]
fn grpc_target_delivers_every_span_and_retries_throttled_requests() {
    let runtime = runtime();
    let receiver = Receiver::new(2, false);
    let addr = start_grpc(&runtime, Arc::clone(&receiver));
    run_against("grpc", addr, &receiver, &["--gzip"]);
}

#[test]
fn http_protobuf_target_delivers_every_span() {
    let runtime = runtime();
    let receiver = Receiver::new(2, false);
    let addr = start_http(&runtime, Arc::clone(&receiver));
    run_against("http", addr, &receiver, &[]);
}

#[test]
fn http_json_target_delivers_every_span_gzipped() {
    let runtime = runtime();
    let receiver = Receiver::new(2, false);
    let addr = start_http(&runtime, Arc::clone(&receiver));
    run_against("http-json", addr, &receiver, &["--gzip"]);
}

#[test]
fn exits_non_zero_when_every_request_fails() {
    let runtime = runtime();
    let receiver = Receiver::new(0, true);
    let addr = start_http(&runtime, Arc::clone(&receiver)).to_string();
    let output = loadgen(&[
        "--target",
        "http",
        "--addr",
        &addr,
        "--traces",
        "8",
        "--connections",
        "2",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let summary = summary(&output);
    assert_eq!(summary["requests_accepted"], 0);
    assert_eq!(summary["failures"]["other"], 2);
    assert!(String::from_utf8_lossy(&output.stdout).contains("http 400"));
}

#[test]
fn unreachable_endpoint_is_a_clear_error() {
    // A port that was just free: nothing listens there any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    for target in ["grpc", "http"] {
        let output = loadgen(&["--target", target, "--addr", &addr, "--traces", "4"]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{target} should fail to start"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("cannot connect"), "{target}: {stderr}");
        assert!(!stderr.contains("backtrace"), "{target}: {stderr}");
    }
}

#[test]
fn decode_target_reports_throughput() {
    let output = loadgen(&[
        "--target",
        "decode",
        "--traces",
        "40",
        "--connections",
        "2",
        "--duration-secs",
        "0",
    ]);
    assert!(output.status.success());
    let summary = summary(&output);
    assert_eq!(summary["spans"], expected_spans(40));
    assert!(
        summary["single_thread_spans_per_sec"]
            .as_f64()
            .unwrap_or_default()
            > 0.0
    );
    assert!(
        summary["multi_thread_spans_per_sec"]
            .as_f64()
            .unwrap_or_default()
            > 0.0
    );
}
