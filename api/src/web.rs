//! The web page on the API address: `GET /` (and its views `/sessions`, `/runs/{trace_id}`,
//! `/monitoring`), its two assets under `/assets/`, and `GET /api/v1/queries`, the SQL its views
//! run.
//!
//! Invariants:
//! - The assets are the committed build in `api/web/dist/` (sources in `api/web/src/`, built by
//!   `npm run build` there; CI rebuilds them and fails when the output differs), embedded in the
//!   binary: no second server, nothing fetched from the internet at run time.
//! - The page itself holds no data, so it loads without a token (Host and Origin are still
//!   checked); every number it shows comes from `POST /api/v1/sql` with the viewer's token, so a
//!   page view can read exactly what that token can. Content (prompts, completions) is read
//!   only on demand and only with the `content` scope.
//! - The SQL of the sessions, runs and monitoring views is built here from
//!   [`query::monitoring`] (the one definition shared with MCP and `docs/monitoring.md`); the
//!   page shows it beside each answer.

use axum::extract::Query;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use query::monitoring::{QUESTIONS, RunFilter, TimeWindow};
use serde::{Deserialize, Serialize};

use crate::edge_error::EdgeError;

const INDEX_HTML: &[u8] = include_bytes!("../web/dist/index.html");
const APP_JS: &[u8] = include_bytes!("../web/dist/app.js");
const APP_CSS: &[u8] = include_bytes!("../web/dist/app.css");

/// Rows the sessions and runs views show at most (the page says when a list is cut).
pub const MAX_LIST_ROWS: usize = 200;

/// Names the agent and tool filters suggest at most.
const MAX_SUGGESTIONS: usize = 200;

/// Paths that serve the page or its assets: no token needed (see the module invariants).
pub fn is_page_path(path: &str) -> bool {
    matches!(path, "/" | "/sessions" | "/monitoring")
        || path.starts_with("/assets/")
        || path
            .strip_prefix("/runs/")
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
}

fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Assets change with the binary; revalidate instead of trusting a stale copy.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn index() -> Response {
    let mut response = asset("text/html; charset=utf-8", INDEX_HTML);
    let headers = response.headers_mut();
    // Only our own script and styles; no frames of the page elsewhere.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; \
             frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// Query string of `GET /api/v1/queries`: the page's filters. Empty values do not filter.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Filters {
    /// RFC 3339 or an age before now (`24h`, `7d`).
    since: Option<String>,
    /// RFC 3339 or an age before now.
    until: Option<String>,
    session: Option<String>,
    user: Option<String>,
    agent: Option<String>,
    outcome: Option<String>,
    tool: Option<String>,
    verdict: Option<String>,
    /// Text the session id or user id contains.
    q: Option<String>,
}

/// One monitoring question, its SQL restricted to the window.
#[derive(Debug, Serialize)]
struct WindowedQuestion {
    name: &'static str,
    title: &'static str,
    description: &'static str,
    sql: String,
}

/// Answer of `GET /api/v1/queries`.
#[derive(Debug, Serialize)]
struct PageQueries {
    /// The window as nanoseconds since the epoch (NULL = open), for the page to show.
    since_ns: Option<i64>,
    until_ns: Option<i64>,
    /// Sessions with a matching run, most recent first.
    sessions: String,
    /// Matching runs, newest first.
    runs: String,
    /// Rows each list shows at most.
    max_rows: usize,
    /// Agent names with a run in the window (the agent filter's suggestions).
    agent_names: String,
    /// Tool names with a call in the window (the tool filter's suggestions).
    tool_names: String,
    /// Every question of `docs/monitoring.md`, within the window.
    monitoring: Vec<WindowedQuestion>,
}

/// `GET /api/v1/queries?since=7d&agent=...`: the SQL of the page's views for these filters.
/// Nothing runs here; the page sends each query to `POST /api/v1/sql` and shows it.
async fn page_queries(
    filters: Result<Query<Filters>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<PageQueries>, EdgeError> {
    let Query(filters) = filters.map_err(|rejection| {
        EdgeError::Invalid(format!(
            "{}; known filters: since, until, session, user, agent, outcome, tool, verdict, q",
            rejection.body_text()
        ))
    })?;
    let window = TimeWindow::parse(
        filters.since.as_deref(),
        filters.until.as_deref(),
        crate::retention_command::now_ns(),
    )
    .map_err(EdgeError::Invalid)?;
    let given = |value: Option<String>| value.filter(|value| !value.is_empty());
    let filter = RunFilter {
        agent: given(filters.agent),
        outcome: given(filters.outcome).map(|outcome| outcome.to_ascii_lowercase()),
        tool: given(filters.tool),
        verdict: given(filters.verdict).map(|verdict| verdict.to_ascii_lowercase()),
        session_id: given(filters.session),
        user_id: given(filters.user),
        search: given(filters.q),
        window,
    };
    Ok(Json(PageQueries {
        since_ns: window.since_ns,
        until_ns: window.until_ns,
        sessions: query::monitoring::find_sessions_sql(&filter, MAX_LIST_ROWS + 1),
        runs: query::monitoring::find_runs_sql(&filter, MAX_LIST_ROWS + 1),
        max_rows: MAX_LIST_ROWS,
        agent_names: format!(
            "SELECT DISTINCT agent_name FROM agent_runs WHERE agent_name IS NOT NULL AND {} \
             ORDER BY 1 LIMIT {MAX_SUGGESTIONS}",
            window.predicate("start_time")
        ),
        tool_names: format!(
            "SELECT DISTINCT tool_name FROM tool_calls WHERE tool_name IS NOT NULL AND {} \
             ORDER BY 1 LIMIT {MAX_SUGGESTIONS}",
            window.predicate("start_time")
        ),
        monitoring: QUESTIONS
            .iter()
            .map(|question| WindowedQuestion {
                name: question.name,
                title: question.title,
                description: question.description,
                sql: question.sql_within(window),
            })
            .collect(),
    }))
}

/// The page's routes, merged into the API router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    use axum::routing::get;
    Router::new()
        .route("/", get(index))
        .route("/sessions", get(index))
        .route("/monitoring", get(index))
        .route("/runs/{trace_id}", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
        .route("/api/v1/queries", get(page_queries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_paths_are_the_views_and_assets_only() {
        for path in [
            "/",
            "/sessions",
            "/monitoring",
            "/runs/abc",
            "/assets/app.js",
        ] {
            assert!(is_page_path(path), "{path}");
        }
        for path in [
            "/api/v1/sql",
            "/api/v1/queries",
            "/runs/",
            "/runs/a/b",
            "/metrics",
            "/mcp",
        ] {
            assert!(!is_page_path(path), "{path}");
        }
    }
}
