//! OTLP/gRPC transport that sends pre-encoded request bytes.
//!
//! `TraceServiceClient::export` would re-encode an `ExportTraceServiceRequest` on every call;
//! this goes one level down to `tonic::client::Grpc` with a codec whose encoder copies the
//! already-encoded protobuf bytes into the frame (a memcpy, no encode cost) and whose decoder
//! reads the `ExportTraceServiceResponse`. With `--gzip`, tonic still compresses each message on
//! the client (per-request client cost; the HTTP targets pre-compress instead).

use std::time::Duration;

use anyhow::Context as _;
use bytes::{BufMut as _, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use tonic::client::Grpc;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::send::{Attempt, FailureKind};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

#[derive(Debug, Clone)]
pub(crate) struct GrpcTransport {
    client: Grpc<Channel>,
    /// `Bearer <token>`, when the server wants one.
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

/// Opens one HTTP/2 connection (one tonic `Channel`) to `url`.
pub(crate) async fn connect(
    url: &str,
    gzip: bool,
    timeout: Duration,
    ca_pem: Option<&[u8]>,
    token: Option<&str>,
) -> anyhow::Result<GrpcTransport> {
    let authorization = token
        .map(|token| format!("Bearer {}", token.trim()).parse())
        .transpose()
        .context("the token is not valid header text")?;
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid gRPC endpoint {url}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .tcp_nodelay(true);
    if let Some(pem) = ca_pem {
        endpoint = endpoint
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
            )
            .context("TLS settings")?;
    }
    let channel = endpoint.connect().await.map_err(|error| {
        anyhow::anyhow!(
            "cannot connect to the OTLP/gRPC endpoint {url}: {} (is `sightline serve` listening there?)",
            error_chain(&error)
        )
    })?;
    let mut client = Grpc::new(channel);
    if gzip {
        client = client.send_compressed(CompressionEncoding::Gzip);
    }
    Ok(GrpcTransport {
        client,
        authorization,
    })
}

impl GrpcTransport {
    pub(crate) async fn send(&mut self, body: Bytes) -> Attempt {
        if let Err(error) = self.client.ready().await {
            return Attempt::Failed {
                kind: FailureKind::Other,
                label: "grpc connection".to_owned(),
                message: error_chain(&error),
            };
        }
        let mut request = tonic::Request::new(body);
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        let result = self
            .client
            .unary(
                request,
                PathAndQuery::from_static(EXPORT_PATH),
                PreEncodedCodec,
            )
            .await;
        match result {
            Ok(response) => Attempt::Accepted {
                rejected_spans: response
                    .get_ref()
                    .partial_success
                    .as_ref()
                    .map_or(0, |partial| partial.rejected_spans.max(0) as u64),
            },
            Err(status) => classify(&status),
        }
    }
}

/// Maps a gRPC status onto the OTLP retry rules: RESOURCE_EXHAUSTED and UNAVAILABLE from the
/// server are retryable ("429" and "503" in the report); UNAVAILABLE produced locally by a
/// connection failure (the status then has a source error) is not.
fn classify(status: &Status) -> Attempt {
    let local_transport_error = std::error::Error::source(status).is_some();
    match status.code() {
        Code::ResourceExhausted => Attempt::Throttled {
            kind: FailureKind::Status429,
            retry_after: None,
            message: status.message().to_owned(),
        },
        Code::Unavailable if !local_transport_error => Attempt::Throttled {
            kind: FailureKind::Status503,
            retry_after: None,
            message: status.message().to_owned(),
        },
        code => Attempt::Failed {
            kind: FailureKind::Other,
            label: if local_transport_error {
                "grpc connection".to_owned()
            } else {
                format!("grpc {code:?}")
            },
            message: if local_transport_error {
                error_chain(status)
            } else {
                status.message().to_owned()
            },
        },
    }
}

/// "outer: inner: root" for an error and its sources.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Sends `Bytes` that already hold an encoded `ExportTraceServiceRequest`.
#[derive(Debug, Clone, Copy, Default)]
struct PreEncodedCodec;

impl Codec for PreEncodedCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = PreEncodedEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ResponseDecoder
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct PreEncodedEncoder;

impl Encoder for PreEncodedEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct ResponseDecoder;

impl Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|error| Status::internal(format!("decode export response: {error}")))
    }
}
