//! JSON-RPC errors for messages rmcp cannot read.
//!
//! rmcp answers a POST whose JSON body does not parse, or parses but is no JSON-RPC message,
//! with `415 Unsupported Media Type` and a plain-text line. A JSON-RPC client expects an error
//! object it can read, and the media type was fine. So, for POSTs that say
//! `Content-Type: application/json`:
//! - a body that is not JSON gets `400` with error `-32700` (parse error) and `"id": null`;
//! - a JSON body rmcp refuses gets `400` with error `-32600` (invalid request) and the message's
//!   id when it has a usable one;
//! - a body over the limit gets `413` with error `-32600` (the rest of it is read and dropped,
//!   up to a bound, so that the client sees the answer rather than a reset connection).
//!
//! Everything else (other methods and content types, every message rmcp accepts, and its own
//! JSON-RPC errors such as an unknown method) passes through unchanged.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// How far past the body limit a refused body is still read (and dropped).
const DRAIN_FACTOR: usize = 8;
/// JSON-RPC: invalid JSON was received.
const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: the JSON sent is not a valid request object.
const INVALID_REQUEST: i64 = -32600;

/// The middleware (see the module doc); `limit` is the largest body read.
pub(super) async fn answer_unreadable_messages(
    limit: usize,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST || !says_json(&request) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match read_body(body, limit).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                Value::Null,
                INVALID_REQUEST,
                format!("Invalid Request: the body is over {limit} bytes"),
            );
        }
        Err(BodyError::Unreadable(error)) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                Value::Null,
                INVALID_REQUEST,
                format!("Invalid Request: the body could not be read: {error}"),
            );
        }
    };
    let message: Value = match serde_json::from_slice(&bytes) {
        Ok(message) => message,
        Err(error) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                Value::Null,
                PARSE_ERROR,
                format!("Parse error: {error}"),
            );
        }
    };
    let id = message
        .get("id")
        .filter(|id| id.is_string() || id.is_number())
        .cloned()
        .unwrap_or(Value::Null);
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    // The content type was JSON and the body parsed: rmcp refused the message itself.
    if response.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        return error_response(
            StatusCode::BAD_REQUEST,
            id,
            INVALID_REQUEST,
            "Invalid Request: not a JSON-RPC 2.0 request, notification or response".to_owned(),
        );
    }
    response
}

enum BodyError {
    TooLarge,
    Unreadable(axum::Error),
}

/// The body when it is at most `limit` bytes. Past the limit the rest is read and dropped, up
/// to [`DRAIN_FACTOR`] times the limit, so that the client finishes sending and reads the 413
/// instead of a broken connection; a body larger still is left unread.
async fn read_body(mut body: Body, limit: usize) -> Result<Vec<u8>, BodyError> {
    use http_body_util::BodyExt as _;
    let mut bytes = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Unreadable)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen <= limit {
            bytes.extend_from_slice(&data);
        } else if seen > limit.saturating_mul(DRAIN_FACTOR) {
            break;
        }
    }
    if seen > limit {
        return Err(BodyError::TooLarge);
    }
    Ok(bytes)
}

fn says_json(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        })
}

fn error_response(status: StatusCode, id: Value, code: i64, message: String) -> Response {
    let body = json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": code, "message": message },
    });
    (status, axum::Json(body)).into_response()
}
