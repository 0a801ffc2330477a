//! [`EdgeError`]: the one error type of every listener, and the one place that maps it to an
//! HTTP status, a gRPC code and a log line.
//!
//! Invariants:
//! - every 5xx (gRPC INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED) is logged exactly once, here,
//!   with its full cause chain: `EdgeError::log` runs when the error is turned into a
//!   response or a status, and nowhere else;
//! - a 500 answers a public message only; its cause (which may name files or internals) goes
//!   to the log;
//! - overload (429 / RESOURCE_EXHAUSTED) always carries retry advice (`Retry-After`, gRPC
//!   `RetryInfo`); a request too large never does, since retrying it cannot succeed.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tonic_types::{ErrorDetails, StatusExt as _};
use tracing::{error, warn};

/// Seconds a client is told to wait before retrying an overloaded or unavailable request.
pub const RETRY_AFTER_SECS: u64 = 1;

/// Why a request failed, in the terms every protocol shares.
#[derive(Debug)]
pub enum EdgeError {
    /// The request is malformed or asks for something invalid (400 / INVALID_ARGUMENT).
    Invalid(String),
    /// No token, or an unknown one (401 / UNAUTHENTICATED).
    Unauthenticated(String),
    /// The token lacks the scope, or the request's Host or Origin is not allowed (403 /
    /// PERMISSION_DENIED).
    Forbidden(String),
    /// What was asked for does not exist (404 / NOT_FOUND).
    NotFound(String),
    /// The request is larger than allowed (413 / RESOURCE_EXHAUSTED, no retry advice).
    TooLarge(String),
    /// Too much in flight (429 / RESOURCE_EXHAUSTED with retry advice).
    Overloaded(String),
    /// Temporarily unable, e.g. shutting down or a storage fault (503 / UNAVAILABLE).
    Unavailable(String),
    /// The work ran out of time (504 / DEADLINE_EXCEEDED).
    Timeout(String),
    /// A bug or damaged data (500 / INTERNAL): `public` is answered, `cause` is logged.
    Internal {
        /// What the client is told.
        public: String,
        /// The full cause chain, for the log.
        cause: String,
    },
}

impl EdgeError {
    /// A 500 answering "internal error" and logging `cause`.
    pub fn internal(cause: impl Into<String>) -> Self {
        EdgeError::Internal {
            public: "internal error".to_owned(),
            cause: cause.into(),
        }
    }

    /// The HTTP status.
    pub fn http_status(&self) -> StatusCode {
        match self {
            EdgeError::Invalid(_) => StatusCode::BAD_REQUEST,
            EdgeError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            EdgeError::Forbidden(_) => StatusCode::FORBIDDEN,
            EdgeError::NotFound(_) => StatusCode::NOT_FOUND,
            EdgeError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            EdgeError::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            EdgeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            EdgeError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            EdgeError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC code.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            EdgeError::Invalid(_) => tonic::Code::InvalidArgument,
            EdgeError::Unauthenticated(_) => tonic::Code::Unauthenticated,
            EdgeError::Forbidden(_) => tonic::Code::PermissionDenied,
            EdgeError::NotFound(_) => tonic::Code::NotFound,
            EdgeError::TooLarge(_) | EdgeError::Overloaded(_) => tonic::Code::ResourceExhausted,
            EdgeError::Unavailable(_) => tonic::Code::Unavailable,
            EdgeError::Timeout(_) => tonic::Code::DeadlineExceeded,
            EdgeError::Internal { .. } => tonic::Code::Internal,
        }
    }

    /// What the client is told.
    pub fn message(&self) -> &str {
        match self {
            EdgeError::Invalid(message)
            | EdgeError::Unauthenticated(message)
            | EdgeError::Forbidden(message)
            | EdgeError::NotFound(message)
            | EdgeError::TooLarge(message)
            | EdgeError::Overloaded(message)
            | EdgeError::Unavailable(message)
            | EdgeError::Timeout(message) => message,
            EdgeError::Internal { public, .. } => public,
        }
    }

    /// Seconds to wait before retrying, for errors a retry can cure.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            EdgeError::Overloaded(_) | EdgeError::Unavailable(_) => Some(RETRY_AFTER_SECS),
            _ => None,
        }
    }

    /// Logs a server-side failure (5xx) once; client errors are not logged.
    pub(crate) fn log(&self) {
        match self {
            EdgeError::Internal { cause, .. } => error!(error = %cause, "request failed"),
            EdgeError::Unavailable(message) => {
                warn!(error = %message, "request failed: unavailable")
            }
            EdgeError::Timeout(message) => warn!(error = %message, "request failed: timeout"),
            _ => {}
        }
    }

    /// The gRPC status (logged if a server-side failure), with `RetryInfo` when retrying helps.
    pub fn into_status(self) -> tonic::Status {
        self.log();
        let code = self.grpc_code();
        match self.retry_after() {
            Some(seconds) => tonic::Status::with_error_details(
                code,
                self.message(),
                ErrorDetails::with_retry_info(Some(Duration::from_secs(seconds))),
            ),
            None => tonic::Status::new(code, self.message()),
        }
    }

    /// An HTTP response with `body` (of `content_type`), logged if a server-side failure and
    /// with `Retry-After` when retrying helps.
    pub fn into_response_with(self, content_type: &'static str, body: Vec<u8>) -> Response {
        self.log();
        let mut response = (self.http_status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if matches!(self, EdgeError::Unauthenticated(_)) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The API's JSON error: `{"error": "<message>"}`.
impl IntoResponse for EdgeError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.message() }))
            .0
            .to_string();
        self.into_response_with("application/json", body.into_bytes())
    }
}

pub use engine::cause_chain;

/// A 500 for damaged stored data: unlike other 500s, the answer names what is damaged (the
/// file and where), since the operator must act on it.
fn damaged(error: &(dyn std::error::Error + 'static)) -> EdgeError {
    let chain = cause_chain(error);
    EdgeError::Internal {
        public: format!("damaged data: {chain}"),
        cause: chain,
    }
}

impl From<query::Error> for EdgeError {
    fn from(error: query::Error) -> Self {
        if let query::Error::Engine(engine) = &error
            && engine.kind() == engine::ErrorKind::Corruption
        {
            return damaged(&error);
        }
        match (error.kind(), &error) {
            (_, query::Error::Panicked(_)) => EdgeError::Internal {
                public: error.to_string(),
                cause: cause_chain(&error),
            },
            (query::ErrorKind::Caller, query::Error::TooLarge { .. }) => {
                EdgeError::TooLarge(error.to_string())
            }
            // The engine's own words: what the caller asked that it refused.
            (query::ErrorKind::Caller, query::Error::Engine(inner))
                if matches!(**inner, engine::Error::TooLarge { .. }) =>
            {
                EdgeError::TooLarge(inner.to_string())
            }
            (query::ErrorKind::Caller, query::Error::Engine(inner)) => {
                EdgeError::Invalid(inner.to_string())
            }
            (_, query::Error::Forbidden(_)) => EdgeError::Forbidden(error.to_string()),
            (query::ErrorKind::Caller, _) => EdgeError::Invalid(error.to_string()),
            (query::ErrorKind::Transient, _) => EdgeError::Unavailable(cause_chain(&error)),
            (query::ErrorKind::Timeout, _) => EdgeError::Timeout(error.to_string()),
            _ => EdgeError::internal(cause_chain(&error)),
        }
    }
}

impl From<engine::Error> for EdgeError {
    fn from(error: engine::Error) -> Self {
        match (&error, error.kind()) {
            (engine::Error::Overloaded { .. }, _) => EdgeError::Overloaded(error.to_string()),
            (engine::Error::SchemaMismatch(_), _) => EdgeError::internal(cause_chain(&error)),
            (_, engine::ErrorKind::Corruption) => damaged(&error),
            (_, engine::ErrorKind::Caller) => EdgeError::Invalid(error.to_string()),
            (_, engine::ErrorKind::Transient) => EdgeError::Unavailable(cause_chain(&error)),
            _ => EdgeError::internal(cause_chain(&error)),
        }
    }
}

impl From<tokio::task::JoinError> for EdgeError {
    fn from(error: tokio::task::JoinError) -> Self {
        EdgeError::internal(format!("task failed: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_maps_to_its_http_status_and_grpc_code() {
        let cases = [
            (
                EdgeError::Invalid("x".into()),
                400,
                tonic::Code::InvalidArgument,
            ),
            (EdgeError::NotFound("x".into()), 404, tonic::Code::NotFound),
            (
                EdgeError::Unauthenticated("x".into()),
                401,
                tonic::Code::Unauthenticated,
            ),
            (
                EdgeError::Forbidden("x".into()),
                403,
                tonic::Code::PermissionDenied,
            ),
            (
                EdgeError::TooLarge("x".into()),
                413,
                tonic::Code::ResourceExhausted,
            ),
            (
                EdgeError::Overloaded("x".into()),
                429,
                tonic::Code::ResourceExhausted,
            ),
            (
                EdgeError::Unavailable("x".into()),
                503,
                tonic::Code::Unavailable,
            ),
            (
                EdgeError::Timeout("x".into()),
                504,
                tonic::Code::DeadlineExceeded,
            ),
            (EdgeError::internal("x"), 500, tonic::Code::Internal),
        ];
        for (error, http, grpc) in cases {
            assert_eq!(error.http_status().as_u16(), http, "{error:?}");
            assert_eq!(error.grpc_code(), grpc, "{error:?}");
        }
    }

    #[test]
    fn retry_advice_only_where_a_retry_can_succeed() {
        let overloaded = EdgeError::Overloaded("busy".into()).into_status();
        assert!(
            overloaded.get_error_details().retry_info().is_some(),
            "{overloaded:?}"
        );
        let too_large = EdgeError::TooLarge("big".into()).into_status();
        assert!(too_large.get_error_details().retry_info().is_none());
        let response = EdgeError::Overloaded("busy".into()).into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let response = EdgeError::Invalid("bad".into()).into_response();
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn a_500_answers_its_public_message_and_not_its_cause() {
        let error = EdgeError::from(query::Error::Internal("segment /data/x.parquet".into()));
        assert_eq!(error.message(), "internal error");
        let panicked = EdgeError::from(query::Error::Panicked("index out of bounds".into()));
        assert_eq!(panicked.http_status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(panicked.message().contains("index out of bounds"));
        let damaged = EdgeError::from(engine::Error::Corrupt {
            location: "segments/standard/2026-12-01/0001.parquet".into(),
            detail: "checksum mismatch".into(),
        });
        assert!(damaged.message().contains("0001.parquet"), "{damaged:?}");
        let timeout = EdgeError::from(query::Error::Timeout(Duration::from_secs(2)));
        assert_eq!(timeout.http_status(), StatusCode::GATEWAY_TIMEOUT);
    }

    #[test]
    fn a_read_the_engine_refused_answers_in_the_engines_words() {
        let bound = query::Error::Engine(std::sync::Arc::new(engine::Error::TooLarge {
            what: "content read",
            limit: 1024,
            advice: "add a LIMIT",
        }));
        let error = EdgeError::from(bound);
        assert_eq!(error.http_status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            error.message(),
            "content read exceeds 1024 bytes; add a LIMIT"
        );
        let filter = query::Error::Engine(std::sync::Arc::new(engine::Error::Filter(
            "bad regex".into(),
        )));
        let error = EdgeError::from(filter);
        assert_eq!(error.http_status(), StatusCode::BAD_REQUEST);
        assert!(error.message().contains("bad regex"), "{error:?}");
    }
}
