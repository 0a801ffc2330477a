//! The HTTP API: `GET /healthz`, `POST /api/v1/sql`, `GET /api/v1/traces/{trace_id}`, the MCP
//! endpoint `/mcp` ([`crate::mcp`]), the web page at `/` ([`crate::web`]), and with
//! `--enable-purge` `POST /purge`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use engine::{ScanRequest, TraceId};
use serde::Deserialize;
use tower_http::timeout::TimeoutLayer;

use crate::auth::{Grant, Scope};
use crate::edge_error::EdgeError;
use crate::server::AppState;

/// Whether the request's grant (set by `auth::http_middleware`; absent when the router runs
/// without it, as in unit tests) holds `scope`.
fn allows(grant: Option<&Extension<Grant>>, scope: Scope) -> bool {
    grant.is_none_or(|Extension(grant)| grant.allows(scope))
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    // The router only serves once the store is open and recovery finished; after that, the
    // server is unhealthy while writes or seals fail (a full disk, a read-only file system).
    match state.engine.trouble() {
        None => "ok\n".into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "unavailable", "reason": reason })),
        )
            .into_response(),
    }
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

async fn sql(
    State(state): State<Arc<AppState>>,
    grant: Option<Extension<Grant>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let started = std::time::Instant::now();
    let response = match body {
        Ok(body) => sql_answer(Arc::clone(&state), grant, body)
            .await
            .into_response(),
        // Over axum's body limit (2 MB; SQL text may be 1 MiB): the API's JSON error.
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            EdgeError::TooLarge(format!(
                "{}; SQL text may be at most {} bytes",
                rejection.body_text(),
                query::MAX_SQL_BYTES
            ))
            .into_response()
        }
        Err(rejection) => EdgeError::Invalid(rejection.body_text()).into_response(),
    };
    state
        .metrics
        .query(response.status().as_u16(), started.elapsed());
    response
}

/// `POST /api/v1/admin`: one maintenance operation (`crate::maintenance::Operation` as JSON,
/// e.g. `{"operation": "verify"}`) on the running store; admin scope. Answers
/// `{"ok": bool, "text": "..."}` as the CLI prints it.
async fn admin(
    State(state): State<Arc<AppState>>,
    grant: Option<Extension<Grant>>,
    body: Bytes,
) -> Result<Json<crate::maintenance::Outcome>, EdgeError> {
    let operation: crate::maintenance::Operation =
        serde_json::from_slice(&body).map_err(|error| {
            EdgeError::Invalid(format!(
                "expected {{\"operation\": \"verify\" | \"hold\" | \"erase\" | \
                 \"compact\" | \"retention_run\", ...}}: {error}"
            ))
        })?;
    // Who asked for it, for the audit trail (erasures and holds are decisions too).
    tracing::info!(
        token = grant.as_ref().map_or("local", |Extension(grant)| grant.name.as_str()),
        operation = %serde_json::to_string(&operation).unwrap_or_default(),
        "admin operation requested"
    );
    let engine = Arc::clone(&state.engine);
    let config = Arc::clone(&state.config);
    let outcome = tokio::task::spawn_blocking(move || {
        let expiry = |as_of: i64| config.content_expiry_request(u64::try_from(as_of).unwrap_or(0));
        crate::maintenance::run(&engine, &operation, &expiry)
    })
    .await?
    .map_err(|error| {
        // Engine errors keep their family (a held session, a bad tier name are the caller's).
        match error.downcast::<engine::Error>() {
            Ok(engine) => EdgeError::from(engine),
            Err(other) => EdgeError::Invalid(format!("{other:#}")),
        }
    })?;
    Ok(Json(outcome))
}

/// `GET /metrics`: Prometheus text exposition.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.render(&state.engine);
    let mut response = (StatusCode::OK, text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

async fn sql_answer(
    state: Arc<AppState>,
    grant: Option<Extension<Grant>>,
    body: Bytes,
) -> Result<Response, EdgeError> {
    // The body is JSON whatever the content type says: `curl -d '{"sql": ...}'` sends it as a
    // form, and a user should not need to know that.
    let request: SqlRequest = serde_json::from_slice(&body).map_err(|error| {
        EdgeError::Invalid(format!(
            "expected a JSON body {{\"sql\": \"...\", \"format\": \"json\" | \"csv\" | \"arrow\"}}: {error}"
        ))
    })?;
    let access = query::Access {
        content: allows(grant.as_ref(), Scope::Content),
    };
    let format = request.format;
    let max_bytes = state.sql.options().max_result_bytes;
    // Formatting a large result is CPU work: done on the query's thread, off the async
    // workers, within the query's slot and deadline.
    let (scan, content_type, bytes) = state
        .sql
        .execute_then(&request.sql, access, move |output| {
            let (content_type, bytes) = format_output(&output, format, max_bytes)?;
            Ok((output.scan_metrics, content_type, bytes))
        })
        .await?;
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

/// The response body, at most `max_bytes` long (else 400: the result is too large).
fn format_output(
    output: &query::QueryOutput,
    format: SqlFormat,
    max_bytes: usize,
) -> query::Result<(&'static str, Vec<u8>)> {
    Ok(match format {
        SqlFormat::Json => (
            "application/json",
            query::format::to_json_bytes(output, max_bytes)?,
        ),
        SqlFormat::Csv => ("text/csv", query::format::to_csv(output, max_bytes)?),
        SqlFormat::Arrow => (
            "application/vnd.apache.arrow.stream",
            query::format::to_arrow_ipc(output, max_bytes)?,
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

/// `GET /api/v1/traces/{trace_id}[?content=true]`: the trace as OTLP/JSON, `resourceSpans`
/// and, when the trace has log records (GenAI events sent as logs), `resourceLogs` beside
/// them. With `content=true`, content attributes (and content event bodies) get
/// their stored values back; expired ones read `[EXPIRED:<digest>]` and uncaptured ones
/// `[NOT_CAPTURED:<digest>]`, and the header `x-sightline-content` says `complete`, `expired`
/// (some content expired) or `not_captured` (some was never captured).
async fn trace(
    State(state): State<Arc<AppState>>,
    Path(trace_id): Path<String>,
    grant: Option<Extension<Grant>>,
    options: Result<Query<TraceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, EdgeError> {
    // A bad query string gets the API's JSON error, like every other 400 here.
    let Query(options) = options.map_err(|rejection| {
        EdgeError::Invalid(format!(
            "{}; use ?content=true or ?content=false",
            rejection.body_text()
        ))
    })?;
    if options.content && !allows(grant.as_ref(), Scope::Content) {
        return Err(EdgeError::Forbidden(
            "?content=true returns prompt and completion text: it needs a token with the \
             content scope"
                .to_owned(),
        ));
    }
    let parsed = TraceId::from_hex(&trace_id)
        .map_err(|error| EdgeError::Invalid(format!("invalid trace id {trace_id:?}: {error}")))?;
    let engine = Arc::clone(&state.engine);
    // Reading and rebuilding a trace is blocking I/O and CPU work.
    let rebuilt = tokio::task::spawn_blocking(move || -> Result<Option<TraceBody>, EdgeError> {
        // One read of the trace's rows; spans and log records are rebuilt from it apart.
        let rows = engine.scan(&ScanRequest {
            family: engine::RowFamily::All,
            ..ScanRequest::for_trace(parsed)
        })?;
        if rows.iter().all(|batch| batch.num_rows() == 0) {
            return Ok(None);
        }
        let rebuild_error = |error: ingest::Error| {
            EdgeError::internal(format!("rebuilding trace {parsed}: {error}"))
        };
        let mut request = ingest::batches_to_otlp(&rows).map_err(rebuild_error)?;
        let mut logs = ingest::rows_to_logs(&rows).map_err(rebuild_error)?;
        let mut status = None;
        if options.content {
            let rows = engine.content_for_trace(&parsed)?;
            let restore_error = |error: ingest::Error| {
                EdgeError::internal(format!("restoring content of trace {parsed}: {error}"))
            };
            let spans = ingest::restore_content(&mut request, &rows).map_err(restore_error)?;
            let records = ingest::restore_log_content(&mut logs, &rows).map_err(restore_error)?;
            status = Some(if spans.expired + records.expired > 0 {
                "expired"
            } else if spans.not_captured + records.not_captured > 0 {
                "not_captured"
            } else {
                "complete"
            });
        }
        // The trace's log records (GenAI events among them) beside its spans, in OTLP/JSON.
        let mut body = ingest::encode_traces_json(&request);
        if let (Some(body), serde_json::Value::Object(logs)) =
            (body.as_object_mut(), ingest::encode_logs_json(&logs))
        {
            body.extend(logs);
        }
        serde_json::to_vec(&body)
            .map(|body| Some((body, status)))
            .map_err(|error| EdgeError::internal(error.to_string()))
    })
    .await
    .map_err(|error| EdgeError::internal(format!("trace read task failed: {error}")))??;
    let Some((body, content_status)) = rebuilt else {
        return Err(EdgeError::NotFound(format!("trace {parsed} not found")));
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
async fn purge(State(state): State<Arc<AppState>>) -> Result<Response, EdgeError> {
    let engine = Arc::clone(&state.engine);
    let report = tokio::task::spawn_blocking(move || engine.purge())
        .await
        .map_err(|error| EdgeError::internal(format!("purge task failed: {error}")))??;
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
        .route("/metrics", get(metrics))
        .route("/api/v1/admin", post(admin))
        .route("/api/v1/sql", post(sql))
        .route("/api/v1/traces/{trace_id}", get(trace))
        // MCP (streamable HTTP), behind the same auth middleware and timeout (crate::mcp).
        .nest_service("/mcp", crate::mcp::service(Arc::clone(&state)))
        // The web page and the SQL of its views (crate::web).
        .merge(crate::web::routes());
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
