//! OTLP receivers: HTTP `POST /v1/traces` and `POST /v1/logs` (protobuf and JSON, gzip) here,
//! gRPC `TraceService/Export` and `LogsService/Export` in `otlp_grpc` (raw bytes, budgeted
//! before decoding). All share one path: admission against the in-flight byte budget, decode,
//! then on a blocking thread the one write pipeline (`ingest::prepare` / `prepare_logs`) and
//! one durable engine write of its result (`Engine::write_batch`: rows and content in one
//! transaction). A request is stored whole or not at all.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, warn};

use crate::edge_error::{EdgeError, RETRY_AFTER_SECS};
use crate::server::{AppState, BUDGET_UNIT};

/// How many times its size a JSON body takes while decoded (budgeting estimate).
const JSON_EXPANSION: usize = 4;

/// How many times its size a protobuf message takes while decoded and mapped (budgeting
/// estimate: the decoded structs hold a `String` or `Vec` header, 24 bytes, for values that
/// take a few bytes on the wire, and the mapped Arrow rows and WAL record come on top). 8, not
/// 3: under 64 clients sending 8 MB exports, peak RSS fell from 5.6 to 4.6 GB and throughput
/// rose from 15.7k to 21k spans/s (BENCHMARKS.md).
pub(crate) const PROTOBUF_EXPANSION: usize = 8;

fn from_ingest_error(error: ingest::Error) -> EdgeError {
    if error.is_too_large() {
        EdgeError::TooLarge(error.to_string())
    } else if error.is_caller_error() {
        EdgeError::Invalid(error.to_string())
    } else {
        EdgeError::internal(crate::edge_error::cause_chain(&error))
    }
}

/// The answer to a request over `limit` bytes.
fn too_large(limit: usize) -> EdgeError {
    EdgeError::TooLarge(format!(
        "request body is larger than the {limit} byte limit"
    ))
}

/// Reserves budget for `bytes` of request, or says the server is overloaded.
pub(crate) fn admit(state: &AppState, bytes: usize) -> Result<OwnedSemaphorePermit, EdgeError> {
    let permits = u32::try_from(bytes / BUDGET_UNIT + 1).unwrap_or(u32::MAX);
    Arc::clone(&state.ingest_budget)
        .try_acquire_many_owned(permits)
        .map_err(|_| {
            EdgeError::Overloaded(format!(
                "too many export bytes in flight; retry in {RETRY_AFTER_SECS} s"
            ))
        })
}

/// The two OTLP signals stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// `TraceService` / `/v1/traces`.
    Traces,
    /// `LogsService` / `/v1/logs`.
    Logs,
}

impl Signal {
    /// The protobuf message name of the export request.
    pub(crate) fn request_name(self) -> &'static str {
        match self {
            Signal::Traces => "ExportTraceServiceRequest",
            Signal::Logs => "ExportLogsServiceRequest",
        }
    }

    /// Decodes a protobuf export request of this signal.
    pub(crate) fn decode_protobuf(self, bytes: &[u8]) -> Result<Export, ingest::Error> {
        Ok(match self {
            Signal::Traces => Export::Traces(ingest::decode_traces_protobuf(bytes)?),
            Signal::Logs => Export::Logs(ingest::decode_logs_protobuf(bytes)?),
        })
    }

    fn decode_json(self, bytes: &[u8]) -> Result<Export, ingest::Error> {
        Ok(match self {
            Signal::Traces => Export::Traces(ingest::decode_traces_json(bytes)?),
            Signal::Logs => Export::Logs(ingest::decode_logs_json(bytes)?),
        })
    }

    /// The protobuf encoding of the export response accepting everything (empty for both
    /// signals: no partial success).
    pub(crate) fn accepted_response(self) -> Vec<u8> {
        match self {
            Signal::Traces => ExportTraceServiceResponse {
                partial_success: None,
            }
            .encode_to_vec(),
            Signal::Logs => ExportLogsServiceResponse {
                partial_success: None,
            }
            .encode_to_vec(),
        }
    }
}

/// A decoded export request.
#[derive(Debug)]
pub(crate) enum Export {
    /// Spans.
    Traces(ExportTraceServiceRequest),
    /// Log records.
    Logs(ExportLogsServiceRequest),
}

/// Maps and writes a decoded request on a blocking thread. Returns the number of rows (spans
/// or log records) stored.
///
/// The permit moves into the blocking task, so the budget covers the work until it is done even
/// if the client goes away.
pub(crate) async fn store(
    state: &Arc<AppState>,
    request: Export,
    request_bytes: usize,
    permit: OwnedSemaphorePermit,
) -> Result<usize, EdgeError> {
    let engine = Arc::clone(&state.engine);
    let rules = state.rules.clone();
    let policy = state.content.clone();
    let task_state = Arc::clone(state);
    let joined = tokio::task::spawn_blocking(move || -> Result<usize, EdgeError> {
        let _permit = permit;
        // One pipeline (redaction and content extraction before anything is written, WAL
        // included), one write: spans and content in one durable transaction.
        let (signal, write) = match request {
            Export::Traces(request) => (Signal::Traces, ingest::prepare(request, &policy, &rules)),
            Export::Logs(request) => (Signal::Logs, ingest::prepare_logs(request, &policy, &rules)),
        };
        let write = write.map_err(from_ingest_error)?;
        let count = write.spans.num_rows();
        let started = std::time::Instant::now();
        if count > 0 {
            engine.write_batch(write)?;
        }
        task_state
            .metrics
            .stored(signal, count, request_bytes, started.elapsed());
        Ok(count)
    })
    .await;
    match joined {
        Ok(result) => result,
        Err(join_error) => Err(EdgeError::internal(format!(
            "ingest task failed: {join_error}"
        ))),
    }
}

/// Now, in ns since the Unix epoch (the clock of content retention).
pub(crate) fn now_unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Body encodings of OTLP/HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// `google.rpc.Status`, the OTLP/HTTP error body.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// The OTLP/HTTP error answer: a `google.rpc.Status` in the request's encoding.
fn http_error(encoding: Encoding, error: EdgeError) -> Response {
    let code = error.grpc_code() as i32;
    let message = error.message().to_owned();
    let body = match encoding {
        Encoding::Protobuf => RpcStatus { code, message }.encode_to_vec(),
        Encoding::Json => serde_json::json!({ "code": code, "message": message })
            .to_string()
            .into_bytes(),
    };
    error.into_response_with(encoding.content_type(), body)
}

/// The OTLP/HTTP error answer to a request refused before its body was read: protobuf when
/// it sent protobuf, JSON otherwise.
pub(crate) fn http_error_for(headers: &HeaderMap, error: EdgeError) -> Response {
    http_error(request_encoding(headers).unwrap_or(Encoding::Json), error)
}

fn request_encoding(headers: &HeaderMap) -> Result<Encoding, String> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(
            "missing content-type: use application/x-protobuf or application/json".to_owned(),
        );
    };
    let text = value.to_str().unwrap_or_default();
    let media = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        _ => Err(format!(
            "unsupported content-type {text:?}: use application/x-protobuf or application/json"
        )),
    }
}

async fn export_traces_http(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    export_http(state, Signal::Traces, headers, body).await
}

async fn export_logs_http(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    export_http(state, Signal::Logs, headers, body).await
}

async fn export_http(
    state: Arc<AppState>,
    signal: Signal,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = export_http_counted(Arc::clone(&state), signal, headers, body).await;
    state
        .metrics
        .ingest_request("http", response.status().as_u16());
    response
}

async fn export_http_counted(
    state: Arc<AppState>,
    signal: Signal,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let encoding = match request_encoding(&headers) {
        Ok(encoding) => encoding,
        Err(message) => {
            let reply_as = if message.contains("json")
                && headers
                    .get(header::CONTENT_TYPE)
                    .is_some_and(|value| value.to_str().unwrap_or_default().contains("json"))
            {
                Encoding::Json
            } else {
                Encoding::Protobuf
            };
            return http_error(reply_as, EdgeError::Invalid(message));
        }
    };
    let gzip = match headers.get(header::CONTENT_ENCODING).map(|value| {
        value
            .to_str()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    }) {
        None => false,
        Some(value) if value.is_empty() || value == "identity" => false,
        Some(value) if value == "gzip" => true,
        Some(value) => {
            return http_error(
                encoding,
                EdgeError::Invalid(format!(
                    "unsupported content-encoding {value:?}: use gzip or none"
                )),
            );
        }
    };
    // Budget what decoding will hold: a gzip body expands (up to the request limit) and a JSON
    // body's parse tree is several times its size.
    let expected = match (gzip, encoding) {
        (true, _) => state.max_request_bytes,
        (false, Encoding::Json) => body.len().saturating_mul(JSON_EXPANSION),
        (false, Encoding::Protobuf) => body.len().saturating_mul(PROTOBUF_EXPANSION),
    };
    let permit = match admit(&state, expected.min(state.max_request_bytes)) {
        Ok(permit) => permit,
        Err(error) => return http_error(encoding, error),
    };
    let limit = state.max_request_bytes;
    let request_bytes = body.len();
    let decoded = tokio::task::spawn_blocking(move || -> Result<Export, EdgeError> {
        let decompressed;
        let bytes: &[u8] = if gzip {
            decompressed = ingest::decompress_gzip(&body, limit).map_err(|error| {
                if error.is_too_large() {
                    too_large(limit)
                } else {
                    EdgeError::Invalid(error.to_string())
                }
            })?;
            &decompressed
        } else {
            &body
        };
        match encoding {
            Encoding::Protobuf => signal.decode_protobuf(bytes),
            Encoding::Json => signal.decode_json(bytes),
        }
        .map_err(from_ingest_error)
    })
    .await;
    let request = match decoded {
        Ok(Ok(request)) => request,
        Ok(Err(error)) => return http_error(encoding, error),
        Err(join_error) => {
            return http_error(
                encoding,
                EdgeError::internal(format!("decode task failed: {join_error}")),
            );
        }
    };
    let result = store(&state, request, request_bytes, permit).await;
    match result {
        Ok(rows) => {
            debug!(rows, ?signal, "http export stored");
            let body = match encoding {
                Encoding::Protobuf => signal.accepted_response(),
                Encoding::Json => ingest::encode_export_response_json(0, "")
                    .to_string()
                    .into_bytes(),
            };
            let mut response = (StatusCode::OK, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(encoding.content_type()),
            );
            response
        }
        Err(error) => {
            if matches!(error, EdgeError::Overloaded(_)) {
                warn!("export refused: overloaded");
            }
            http_error(encoding, error)
        }
    }
}

async fn body_too_large(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let encoding = request_encoding(&headers).unwrap_or(Encoding::Protobuf);
    http_error(encoding, too_large(state.max_request_bytes))
}

/// The OTLP/HTTP router: `POST /v1/traces` and `POST /v1/logs`.
///
/// No request timeout here: a timeout would drop the handler while its spans may still commit,
/// telling the client "failed" about data that was stored. The in-flight budget bounds the work
/// instead.
pub fn http_router(state: Arc<AppState>) -> Router {
    let limit = state.max_request_bytes;
    Router::new()
        .route("/v1/traces", post(export_traces_http))
        .route("/v1/logs", post(export_logs_http))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            move |State(state): State<Arc<AppState>>,
                  request: axum::extract::Request,
                  next: axum::middleware::Next| async move {
                // Reject a declared oversize body before reading it, with the OTLP error body.
                let declared = request
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<usize>().ok());
                if declared.is_some_and(|length| length > limit) {
                    let headers = request.headers().clone();
                    return body_too_large(State(state), headers).await;
                }
                let response = next.run(request).await;
                if response.status() == StatusCode::PAYLOAD_TOO_LARGE
                    && response
                        .headers()
                        .get(header::CONTENT_TYPE)
                        .is_none_or(|value| {
                            value != "application/x-protobuf" && value != "application/json"
                        })
                {
                    // A streamed body went over the limit while being read.
                    return http_error(Encoding::Protobuf, too_large(limit));
                }
                response
            },
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}
