//! The OTLP/gRPC `TraceService/Export` and `LogsService/Export` servers, budgeting a request's
//! bytes before decoding them.
//!
//! tonic's generated server decodes the protobuf message before the handler runs, so a burst
//! of large exports is decoded (several times its wire size) before any budget can refuse it,
//! and an undecodable message is answered INTERNAL. These servers take the message as raw
//! bytes instead (tonic still does the gRPC framing, gzip and the size limit), then:
//! 1. reserve the in-flight budget for the decoded size, or answer RESOURCE_EXHAUSTED with
//!    retry advice, before decoding;
//! 2. decode on a blocking thread, answering INVALID_ARGUMENT for bytes that are not an
//!    export request of the service's signal;
//! 3. store through the same path as OTLP/HTTP.
//!
//! tonic answers a message over the limit OUT_OF_RANGE, which OTLP exporters retry; the
//! server rewrites that answer to RESOURCE_EXHAUSTED without retry advice (retrying cannot
//! help), and a protocol error in the framing to INVALID_ARGUMENT.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tonic::body::Body;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::{self, HeaderValue};
use tonic::codegen::{Body as HttpBody, BoxFuture, StdError};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Code, Status};
use tracing::debug;

use crate::edge_error::EdgeError;
use crate::otlp::{PROTOBUF_EXPANSION, Signal, admit, store};
use crate::server::AppState;

/// The full gRPC service name of `TraceService`.
const TRACE_SERVICE: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
/// The full gRPC service name of `LogsService`.
const LOGS_SERVICE: &str = "opentelemetry.proto.collector.logs.v1.LogsService";
/// The paths of the two `Export` methods.
const TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const LOGS_EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// An export service over raw message bytes; see the module doc.
#[derive(Debug, Clone)]
struct RawExportServer {
    state: Arc<AppState>,
    max_request_bytes: usize,
    signal: Signal,
}

/// `TraceService` over raw message bytes.
#[derive(Debug, Clone)]
pub struct OtlpTraceServer(RawExportServer);

/// `LogsService` over raw message bytes.
#[derive(Debug, Clone)]
pub struct OtlpLogsServer(RawExportServer);

impl OtlpTraceServer {
    /// A server writing into `state`, refusing messages over `max_request_bytes` (after gzip).
    pub fn new(state: Arc<AppState>, max_request_bytes: usize) -> Self {
        OtlpTraceServer(RawExportServer {
            state,
            max_request_bytes,
            signal: Signal::Traces,
        })
    }
}

impl OtlpLogsServer {
    /// A server writing into `state`, refusing messages over `max_request_bytes` (after gzip).
    pub fn new(state: Arc<AppState>, max_request_bytes: usize) -> Self {
        OtlpLogsServer(RawExportServer {
            state,
            max_request_bytes,
            signal: Signal::Logs,
        })
    }
}

impl NamedService for OtlpTraceServer {
    const NAME: &'static str = TRACE_SERVICE;
}

impl NamedService for OtlpLogsServer {
    const NAME: &'static str = LOGS_SERVICE;
}

macro_rules! raw_service {
    ($server:ty) => {
        impl<B> tower::Service<http::Request<B>> for $server
        where
            B: HttpBody<Data = Bytes> + Send + 'static,
            B::Error: Into<StdError> + Send + 'static,
        {
            type Response = http::Response<Body>;
            type Error = Infallible;
            type Future = BoxFuture<Self::Response, Self::Error>;

            fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
                Poll::Ready(Ok(()))
            }

            fn call(&mut self, request: http::Request<B>) -> Self::Future {
                self.0.call(request)
            }
        }
    };
}

raw_service!(OtlpTraceServer);
raw_service!(OtlpLogsServer);

impl RawExportServer {
    fn call<B>(&self, request: http::Request<B>) -> BoxFuture<http::Response<Body>, Infallible>
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        let (service, export_path) = match self.signal {
            Signal::Traces => (TRACE_SERVICE, TRACE_EXPORT),
            Signal::Logs => (LOGS_SERVICE, LOGS_EXPORT),
        };
        if request.uri().path() != export_path {
            let message = format!("only {service}/Export is served here");
            return Box::pin(async move { Ok(Status::unimplemented(message).into_http()) });
        }
        let export = Export(Arc::clone(&self.state), self.signal);
        let limit = self.max_request_bytes;
        Box::pin(async move {
            let mut grpc = Grpc::new(RawCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit);
            let mut response = grpc.unary(export, request).await;
            recode_framing_errors(&mut response);
            Ok(response)
        })
    }
}

/// Rewrites tonic's own answers about the request's framing (trailers-only, so the status is
/// in the headers): over the size limit → RESOURCE_EXHAUSTED, bad framing → INVALID_ARGUMENT.
fn recode_framing_errors(response: &mut http::Response<Body>) {
    let headers = response.headers_mut();
    let code = headers
        .get(Status::GRPC_STATUS)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map(Code::from_i32);
    let message = headers
        .get("grpc-message")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let recoded = match code {
        Some(Code::OutOfRange) => Code::ResourceExhausted,
        Some(Code::Internal)
            if message.starts_with("protocol%20error")
                || message.starts_with("Error%20decompressing") =>
        {
            Code::InvalidArgument
        }
        _ => return,
    };
    headers.insert(Status::GRPC_STATUS, HeaderValue::from(recoded as i32));
}

/// The `Export` handler over raw bytes.
struct Export(Arc<AppState>, Signal);

impl UnaryService<Bytes> for Export {
    type Response = Bytes;
    type Future = BoxFuture<tonic::Response<Self::Response>, Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let state = Arc::clone(&self.0);
        let signal = self.1;
        Box::pin(async move {
            let result = export(&state, signal, request.into_inner()).await;
            let status = match &result {
                Ok(_) => 200,
                Err(status) => http_status_of(status.code()),
            };
            state.metrics.ingest_request("grpc", status);
            result
        })
    }
}

/// The HTTP status of the same meaning as a gRPC code (for counting answers alike).
fn http_status_of(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::ResourceExhausted => 429,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        _ => 500,
    }
}

/// Budgets, decodes and stores one export.
async fn export(
    state: &Arc<AppState>,
    signal: Signal,
    bytes: Bytes,
) -> Result<tonic::Response<Bytes>, Status> {
    // Budget what decoding will hold, before decoding (at most a request's limit, as
    // for OTLP/HTTP, so one request within the limit always fits the budget).
    let expected = bytes
        .len()
        .saturating_mul(PROTOBUF_EXPANSION)
        .min(state.max_request_bytes);
    let permit = admit(state, expected).map_err(EdgeError::into_status)?;
    let request_bytes = bytes.len();
    let decoded = tokio::task::spawn_blocking(move || {
        signal.decode_protobuf(&bytes).map_err(|error| {
            EdgeError::Invalid(format!(
                "the message is not an OTLP {}: {}",
                signal.request_name(),
                crate::edge_error::cause_chain(&error)
            ))
        })
    })
    .await
    .map_err(|error| EdgeError::from(error).into_status())?
    .map_err(EdgeError::into_status)?;
    let rows = store(state, decoded, request_bytes, permit)
        .await
        .map_err(EdgeError::into_status)?;
    debug!(rows, ?signal, "grpc export stored");
    Ok(tonic::Response::new(Bytes::from(
        signal.accepted_response(),
    )))
}

/// Messages in as raw bytes, responses out as protobuf.
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = BytesDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesDecoder
    }
}

#[derive(Debug, Clone, Copy)]
struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = Bytes;
    type Error = Status;

    /// The response is encoded already ([`Signal::accepted_response`]).
    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        bytes::BufMut::put(dst, item);
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct BytesDecoder;

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        let remaining = src.remaining();
        Ok(Some(src.copy_to_bytes(remaining)))
    }
}
