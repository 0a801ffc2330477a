//! The HTTP API: `GET /healthz`, `POST /api/v1/sql`, `GET /api/v1/traces/{trace_id}`, and with
//! `--enable-purge` `POST /purge`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use engine::{ScanRequest, TraceId};
use serde::Deserialize;
use tower_http::timeout::TimeoutLayer;
use tracing::error;

use crate::server::AppState;

/// The one error type of the HTTP API. 4xx carry their message; 5xx are logged once here and
/// answer a generic message.
#[derive(Debug)]
pub enum ApiError {
    /// 400 with a message.
    BadRequest(String),
    /// 404 with a message.
    NotFound(String),
    /// 503 with a message (retry later).
    Unavailable(String),
    /// 500; the message is logged, not returned.
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, message),
            ApiError::Unavailable(message) => (StatusCode::SERVICE_UNAVAILABLE, message),
            ApiError::Internal(message) => {
                error!(error = %message, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_owned(),
                )
            }
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

impl From<query::Error> for ApiError {
    fn from(error: query::Error) -> Self {
        match error.kind() {
            query::ErrorKind::Caller => ApiError::BadRequest(error.to_string()),
            query::ErrorKind::Transient => ApiError::Unavailable(error.to_string()),
            _ => ApiError::Internal(format!("{error:#}")),
        }
    }
}

impl From<engine::Error> for ApiError {
    fn from(error: engine::Error) -> Self {
        match error.kind() {
            engine::ErrorKind::Caller => ApiError::BadRequest(error.to_string()),
            engine::ErrorKind::Transient => ApiError::Unavailable(error.to_string()),
            _ => ApiError::Internal(format!("{error:#}")),
        }
    }
}

async fn healthz(State(_state): State<Arc<AppState>>) -> &'static str {
    // The router only serves once the store is open and recovery finished.
    "ok\n"
}

/// Body of `POST /api/v1/sql`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
    #[serde(default)]
    format: SqlFormat,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SqlFormat {
    #[default]
    Json,
    Csv,
    Arrow,
}

async fn sql(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    // The body is JSON whatever the content type says: `curl -d '{"sql": ...}'` sends it as a
    // form, and a user should not need to know that.
    let request: SqlRequest = serde_json::from_slice(&body).map_err(|error| {
        ApiError::BadRequest(format!(
            "expected a JSON body {{\"sql\": \"...\", \"format\": \"json\" | \"csv\" | \"arrow\"}}: {error}"
        ))
    })?;
    let output = state.sql.execute(&request.sql).await?;
    let scan = output.scan_metrics;
    let format = request.format;
    // Formatting a large result is CPU work: keep it off the async workers.
    let (content_type, bytes) = tokio::task::spawn_blocking(move || format_output(&output, format))
        .await
        .map_err(|error| ApiError::Internal(format!("format task failed: {error}")))??;
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // What the query read from storage, for operators checking that pruning works.
    for (name, value) in [
        ("x-sightline-segments-total", scan.segments_total),
        ("x-sightline-segments-read", scan.segments_selected),
        ("x-sightline-bytes-read", scan.bytes_read),
        ("x-sightline-rows-scanned", scan.rows_scanned),
    ] {
        headers.insert(name, HeaderValue::from(value));
    }
    Ok(response)
}

fn format_output(
    output: &query::QueryOutput,
    format: SqlFormat,
) -> Result<(&'static str, Vec<u8>), ApiError> {
    Ok(match format {
        SqlFormat::Json => (
            "application/json",
            serde_json::to_vec(&query::format::to_json(output))
                .map_err(|error| ApiError::Internal(error.to_string()))?,
        ),
        SqlFormat::Csv => ("text/csv", query::format::to_csv(output)?),
        SqlFormat::Arrow => (
            "application/vnd.apache.arrow.stream",
            query::format::to_arrow_ipc(output)?,
        ),
    })
}

/// A trace's JSON body and, when content was asked for, the `x-sightline-content` value.
type TraceBody = (Vec<u8>, Option<&'static str>);

/// Query of `GET /api/v1/traces/{trace_id}`.
#[derive(Debug, Default, Deserialize)]
struct TraceQuery {
    /// Put content back in place of the span's `sightline-content:v1:` references.
    #[serde(default)]
    content: bool,
}

/// `GET /api/v1/traces/{trace_id}[?content=true]`. With `content=true`, content attributes get
/// their stored values back; expired ones read `[EXPIRED:<digest>]` and uncaptured ones
/// `[NOT_CAPTURED:<digest>]`, and the header `x-sightline-content` says `complete`, `expired`
/// (some content expired) or `not_captured` (some was never captured).
async fn trace(
    State(state): State<Arc<AppState>>,
    Path(trace_id): Path<String>,
    options: Result<Query<TraceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    // A bad query string gets the API's JSON error, like every other 400 here.
    let Query(options) = options.map_err(|rejection| {
        ApiError::BadRequest(format!(
            "{}; use ?content=true or ?content=false",
            rejection.body_text()
        ))
    })?;
    let parsed = TraceId::from_hex(&trace_id)
        .map_err(|error| ApiError::BadRequest(format!("invalid trace id {trace_id:?}: {error}")))?;
    let engine = Arc::clone(&state.engine);
    // Reading and rebuilding a trace is blocking I/O and CPU work.
    let rebuilt = tokio::task::spawn_blocking(move || -> Result<Option<TraceBody>, ApiError> {
        let batches = engine.scan(&ScanRequest::for_trace(&parsed.to_string()))?;
        if batches.iter().all(|batch| batch.num_rows() == 0) {
            return Ok(None);
        }
        let mut request = ingest::batches_to_otlp(&batches)
            .map_err(|error| ApiError::Internal(format!("rebuilding trace {parsed}: {error}")))?;
        let mut status = None;
        if options.content {
            let rows = engine.content_for_trace(&parsed)?;
            let restored = ingest::restore_content(&mut request, &rows).map_err(|error| {
                ApiError::Internal(format!("restoring content of trace {parsed}: {error}"))
            })?;
            status = Some(if restored.expired > 0 {
                "expired"
            } else if restored.not_captured > 0 {
                "not_captured"
            } else {
                "complete"
            });
        }
        serde_json::to_vec(&ingest::encode_traces_json(&request))
            .map(|body| Some((body, status)))
            .map_err(|error| ApiError::Internal(error.to_string()))
    })
    .await
    .map_err(|error| ApiError::Internal(format!("trace read task failed: {error}")))??;
    let Some((body, content_status)) = rebuilt else {
        return Err(ApiError::NotFound(format!("trace {parsed} not found")));
    };
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(content_status) = content_status {
        response.headers_mut().insert(
            "x-sightline-content",
            HeaderValue::from_static(content_status),
        );
    }
    Ok(response)
}

/// `POST /purge` (only with `--enable-purge`): deletes every stored span, segment and content
/// blob, for test suites that need an empty store between tests (Jaeger's end-to-end suite).
async fn purge(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let engine = Arc::clone(&state.engine);
    let report = tokio::task::spawn_blocking(move || engine.purge())
        .await
        .map_err(|error| ApiError::Internal(format!("purge task failed: {error}")))??;
    tracing::warn!(
        spans = report.spans,
        segments = report.segments,
        "store purged"
    );
    Ok(Json(serde_json::json!({
        "purged": { "spans": report.spans, "segments": report.segments }
    }))
    .into_response())
}

/// The API router. `enable_purge` adds `POST /purge`; without it that path is 404 like any
/// other unknown path.
pub fn router(state: Arc<AppState>, timeout: Duration, enable_purge: bool) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/sql", post(sql))
        .route("/api/v1/traces/{trace_id}", get(trace));
    if enable_purge {
        router = router.route("/purge", post(purge));
    }
    router
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .with_state(state)
}
