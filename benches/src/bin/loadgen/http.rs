//! OTLP/HTTP transport (`POST /v1/traces`, protobuf or JSON bodies, optionally pre-gzipped).

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Client, StatusCode, Url};

use crate::grpc::error_chain;
use crate::payloads::Encoding;
use crate::send::{Attempt, FailureKind};

#[derive(Debug, Clone)]
pub(crate) struct HttpTransport {
    client: Client,
    url: Url,
    encoding: Encoding,
    gzip: bool,
    /// `Bearer <token>`, when the server wants one.
    authorization: Option<String>,
}

/// `host:port` or a URL; `/v1/traces` is appended when the URL has no path.
pub(crate) fn traces_url(addr: &str) -> anyhow::Result<Url> {
    let text = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let mut url = Url::parse(&text).with_context(|| format!("invalid OTLP/HTTP address {addr}"))?;
    if url.path() == "/" {
        url.set_path("/v1/traces");
    }
    Ok(url)
}

/// Checks that something accepts TCP connections at `url`, for a clear message up front instead
/// of thousands of identical request failures.
pub(crate) async fn check_reachable(url: &Url) -> anyhow::Result<()> {
    let host = url.host_str().context("OTLP/HTTP URL has no host")?;
    let port = url
        .port_or_known_default()
        .context("OTLP/HTTP URL has no port")?;
    let connect = tokio::net::TcpStream::connect((host, port));
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(error)) => anyhow::bail!(
            "cannot connect to the OTLP/HTTP endpoint {url}: {error} (is `sightline serve` listening there?)"
        ),
        Err(_) => {
            anyhow::bail!("cannot connect to the OTLP/HTTP endpoint {url}: timed out after 5s")
        }
    }
}

/// One client per connection: reqwest pools connections per client, so separate clients with
/// one idle slot each keep exactly one HTTP/1.1 connection per sending task.
pub(crate) fn client(
    url: Url,
    encoding: Encoding,
    gzip: bool,
    timeout: Duration,
    ca_pem: Option<&[u8]>,
    token: Option<&str>,
) -> anyhow::Result<HttpTransport> {
    let mut builder = Client::builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout);
    if let Some(pem) = ca_pem {
        builder = builder.tls_certs_merge(
            reqwest::Certificate::from_pem_bundle(pem).context("--ca-cert holds no certificate")?,
        );
    }
    let client = builder.build().context("build the HTTP client")?;
    Ok(HttpTransport {
        client,
        url,
        encoding,
        gzip,
        authorization: token.map(|token| format!("Bearer {}", token.trim())),
    })
}

impl HttpTransport {
    pub(crate) async fn send(&self, body: Bytes) -> Attempt {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, self.encoding.content_type())
            .body(body);
        if self.gzip {
            request = request.header(CONTENT_ENCODING, "gzip");
        }
        if let Some(authorization) = &self.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return request_failure(&error),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Read the whole body so the connection can be reused.
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(error) => return request_failure(&error),
        };
        if status.is_success() {
            return Attempt::Accepted {
                rejected_spans: rejected_spans(self.encoding, &body),
            };
        }
        let message = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        match status {
            StatusCode::TOO_MANY_REQUESTS => Attempt::Throttled {
                kind: FailureKind::Status429,
                retry_after,
                message,
            },
            StatusCode::SERVICE_UNAVAILABLE => Attempt::Throttled {
                kind: FailureKind::Status503,
                retry_after,
                message,
            },
            // Retryable per the OTLP/HTTP spec, reported under "other".
            StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => Attempt::Throttled {
                kind: FailureKind::Other,
                retry_after,
                message,
            },
            status => Attempt::Failed {
                kind: FailureKind::Other,
                label: format!("http {}", status.as_u16()),
                message,
            },
        }
    }
}

fn request_failure(error: &reqwest::Error) -> Attempt {
    let label = if error.is_connect() {
        "http connect"
    } else if error.is_timeout() {
        "http timeout"
    } else {
        "http request"
    };
    Attempt::Failed {
        kind: FailureKind::Other,
        label: label.to_owned(),
        message: error_chain(error),
    }
}

/// `partial_success.rejected_spans` of a 2xx response body (0 when absent or unreadable).
fn rejected_spans(encoding: Encoding, body: &[u8]) -> u64 {
    if body.is_empty() {
        return 0;
    }
    match encoding {
        Encoding::Protobuf => ExportTraceServiceResponse::decode(body)
            .ok()
            .and_then(|response| response.partial_success)
            .map_or(0, |partial| partial.rejected_spans.max(0) as u64),
        Encoding::Json => {
            let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
                return 0;
            };
            let rejected = &json["partialSuccess"]["rejectedSpans"];
            // int64 is a string in OTLP/JSON, but numbers are accepted too.
            rejected
                .as_u64()
                .or_else(|| rejected.as_str().and_then(|text| text.parse().ok()))
                .unwrap_or(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_url_accepts_host_port_and_urls() {
        let url = |addr: &str| traces_url(addr).map(|url| url.to_string()).ok();
        assert_eq!(
            url("127.0.0.1:4318").as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            url("http://localhost:4318").as_deref(),
            Some("http://localhost:4318/v1/traces")
        );
        assert_eq!(
            url("http://localhost:9000/custom/traces").as_deref(),
            Some("http://localhost:9000/custom/traces")
        );
    }

    #[test]
    fn rejected_spans_reads_partial_success() {
        assert_eq!(rejected_spans(Encoding::Json, b""), 0);
        assert_eq!(
            rejected_spans(
                Encoding::Json,
                br#"{"partialSuccess":{"rejectedSpans":"3"}}"#
            ),
            3
        );
        assert_eq!(
            rejected_spans(Encoding::Json, br#"{"partialSuccess":{"rejectedSpans":4}}"#),
            4
        );
        let response = ExportTraceServiceResponse {
            partial_success: Some(
                opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess {
                    rejected_spans: 5,
                    error_message: "too old".to_owned(),
                },
            ),
        };
        assert_eq!(
            rejected_spans(Encoding::Protobuf, &response.encode_to_vec()),
            5
        );
    }
}
