//! The MCP server (Model Context Protocol, streamable HTTP) at `/mcp` on the API address: tools
//! for agents and IDEs over the same SQL engine as `POST /api/v1/sql`.
//!
//! Tools (all read-only):
//! - `sql`: one read-only statement, as the HTTP SQL API runs it (guard, limits, query pool);
//! - `get_trace`: a trace's span tree with the decisions under the spans they gate, drawn by
//!   `sightline trace`'s renderer without colors; content only with the content scope;
//! - `find_runs`: `agent_runs` by agent, outcome, tool, verdict, session and start time;
//! - `session_summary`: one session's runs, outcomes, tokens, errors, decisions, tools, models
//!   and time span;
//! - `monitoring`: the named questions of `docs/monitoring.md` (`query::monitoring`), listed or
//!   run by name within an optional time window.
//!
//! Invariants:
//! - every answer holds at most [`MAX_ROWS`] rows (default [`DEFAULT_ROWS`]) and
//!   [`MAX_TEXT_BYTES`] bytes of text, and says `truncated: true` when it left something out;
//! - the route sits behind `auth::http_middleware` like every API route: the query scope to
//!   call it at all, and the request's `Grant` decides content access for each tool call;
//! - caller values reach SQL only through `query::monitoring::string_literal` or as parsed
//!   times and numbers.
//!
//! Transport: stateless streamable HTTP with JSON responses (no `Mcp-Session-Id`, no
//! server-sent event streams). Each POST is one JSON-RPC exchange, so it passes the API's
//! request timeout, body limit and token check like any other request, and nothing is kept
//! between requests. Host and Origin are checked by our middleware (`--allowed-host`,
//! `--allowed-origin`), so rmcp's own Host check is off.

mod jsonrpc_errors;
mod text;

use std::fmt;
use std::sync::Arc;

use axum::http::request::Parts;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Grant, Scope};
use crate::edge_error::EdgeError;
use crate::server::AppState;
use query::monitoring::{RunFilter, TimeWindow, string_literal};
use query::{Access, QueryOutput};

/// Rows an answer holds unless the call asks for another number.
pub const DEFAULT_ROWS: usize = 100;
/// The most rows a call may ask for.
pub const MAX_ROWS: usize = 1_000;
/// The most bytes of text an answer holds.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Lines of a drawn trace unless the call asks for another number (at most [`MAX_ROWS`]).
const DEFAULT_TRACE_LINES: usize = 400;
/// Characters of one content value shown by `get_trace`.
const CONTENT_CHARS: usize = 2_000;
/// Largest JSON-RPC request body: a SQL text of `query::MAX_SQL_BYTES` and its envelope.
const MAX_REQUEST_BYTES: usize = query::MAX_SQL_BYTES + 64 * 1024;

/// The `/mcp` service, to be nested in the API router behind the auth middleware: rmcp's
/// streamable HTTP service, with JSON-RPC errors for the messages it cannot read
/// (`jsonrpc_errors`).
pub fn service(state: Arc<AppState>) -> axum::Router {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .disable_allowed_hosts()
        .with_max_request_body_bytes(MAX_REQUEST_BYTES);
    let rmcp: StreamableHttpService<SightlineMcp, NeverSessionManager> = StreamableHttpService::new(
        move || Ok(SightlineMcp::new(Arc::clone(&state))),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    axum::Router::new()
        .fallback_service(rmcp)
        .layer(axum::middleware::from_fn(|request, next| {
            jsonrpc_errors::answer_unreadable_messages(MAX_REQUEST_BYTES, request, next)
        }))
}

/// The MCP tools over one server's state.
#[derive(Clone)]
pub struct SightlineMcp {
    state: Arc<AppState>,
    tool_router: ToolRouter<Self>,
}

impl fmt::Debug for SightlineMcp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SightlineMcp").finish_non_exhaustive()
    }
}

/// Arguments of `sql`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SqlArgs {
    /// One read-only SQL statement (DataFusion dialect). Tables: spans, span_events,
    /// span_links, llm_calls, tool_calls, decisions, agent_runs, sessions, retention, and
    /// content (prompt and completion text; needs the content scope). Columns are in
    /// docs/sql.md; `SHOW COLUMNS FROM <table>` lists them.
    sql: String,
    /// Rows to return: default 100, at most 1000. More rows are cut and the answer says so.
    max_rows: Option<usize>,
}

/// Arguments of `get_trace`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GetTraceArgs {
    /// The trace id: 32 hex digits.
    trace_id: String,
    /// Also list the trace's stored content (prompts, completions, tool arguments and
    /// results), each value cut at 2000 characters. Needs a token with the content scope.
    #[serde(default)]
    include_content: bool,
    /// Lines to return: default 400, at most 1000.
    max_lines: Option<usize>,
}

/// A run's outcome.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Outcome {
    Success,
    Error,
    Refused,
}

/// A decision's verdict.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Verdict {
    Allow,
    Deny,
    Modify,
    Warn,
    Escalate,
}

/// Arguments of `find_runs`; every filter is optional and they combine with AND.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct FindRunsArgs {
    /// The run's agent name (or workflow name), exactly.
    agent: Option<String>,
    /// How the run ended.
    outcome: Option<Outcome>,
    /// A tool called in the run's trace, exactly.
    tool: Option<String>,
    /// A decision verdict recorded in the run's trace.
    verdict: Option<Verdict>,
    /// The run's session id, exactly.
    session_id: Option<String>,
    /// Runs that started at or after this time: RFC 3339 (`2026-11-01T00:00:00Z`) or an age
    /// such as `90m`, `6h`, `7d`.
    since: Option<String>,
    /// Runs that started before this time: RFC 3339 or an age such as `1h`.
    until: Option<String>,
    /// Rows to return: default 100, at most 1000.
    max_rows: Option<usize>,
}

/// Arguments of `session_summary`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SessionSummaryArgs {
    /// The session id, exactly.
    session_id: String,
    /// Entries of each list (runs, tools, models, denials, failed calls): default 100, at
    /// most 1000.
    max_rows: Option<usize>,
}

/// Arguments of `monitoring`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct MonitoringArgs {
    /// The question to run, e.g. `retry_rate_by_tool`; omit it to list the questions.
    question: Option<String>,
    /// Only data at or after this time: RFC 3339 or an age such as `24h`, `7d`.
    since: Option<String>,
    /// Only data before this time: RFC 3339 or an age.
    until: Option<String>,
    /// Rows to return: default 100, at most 1000.
    max_rows: Option<usize>,
}

/// What a tool call may read, from the request's grant (all of it when the router runs
/// without the auth middleware, as `http_api::allows` reads it).
fn access_of(parts: &Parts) -> Access {
    Access {
        content: parts
            .extensions
            .get::<Grant>()
            .is_none_or(|grant| grant.allows(Scope::Content)),
    }
}

/// A tool answer of one text block.
fn answer(text: String) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(text)])
}

/// A tool error the model can act on (`isError: true`) saying what was wrong.
fn refusal(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

/// A failed query as a tool error: the caller's mistakes with their message, server trouble
/// logged once and answered with the public message only.
fn failure(error: query::Error) -> CallToolResult {
    let edge = EdgeError::from(error);
    if edge.http_status().is_server_error() {
        edge.log();
    }
    refusal(edge.message().to_owned())
}

/// `max_rows` checked against [`MAX_ROWS`].
fn row_cap(requested: Option<usize>, default: usize) -> Result<usize, CallToolResult> {
    match requested {
        None => Ok(default),
        Some(rows @ 1..=MAX_ROWS) => Ok(rows),
        Some(rows) => Err(refusal(format!(
            "max_rows must be between 1 and {MAX_ROWS}, not {rows}"
        ))),
    }
}

/// The window of `since` and `until`.
fn window(since: Option<&str>, until: Option<&str>) -> Result<TimeWindow, CallToolResult> {
    TimeWindow::parse(since, until, crate::retention_command::now_ns()).map_err(refusal)
}

fn window_text(window: TimeWindow) -> String {
    let side = |nanos: Option<i64>| {
        nanos.map_or_else(
            || "open".to_owned(),
            crate::retention_command::format_timestamp,
        )
    };
    if window.is_unbounded() {
        "the whole store".to_owned()
    } else {
        format!(
            "since {} until {}",
            side(window.since_ns),
            side(window.until_ns)
        )
    }
}

/// `get_trace` reads through the engine with the caller's access, like the SQL API.
struct EngineSource<'a> {
    state: &'a AppState,
    access: Access,
}

impl fmt::Display for EngineSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("this server")
    }
}

impl crate::trace_command::TraceSource for EngineSource<'_> {
    async fn query_json(&self, sql: &str) -> anyhow::Result<Value> {
        let output = self.state.sql.execute_with(sql, self.access).await?;
        Ok(query::format::to_json(&output))
    }
}

impl SightlineMcp {
    fn new(state: Arc<AppState>) -> Self {
        SightlineMcp {
            state,
            tool_router: Self::tool_router(),
        }
    }

    async fn rows(
        &self,
        sql: &str,
        access: Access,
        max_rows: usize,
    ) -> Result<QueryOutput, CallToolResult> {
        self.state
            .sql
            .execute_capped(sql, access, max_rows)
            .await
            .map_err(failure)
    }

    /// The rows of `sql` as JSON values (for answers built from several queries).
    async fn json_rows(
        &self,
        sql: &str,
        access: Access,
        max_rows: usize,
    ) -> Result<(Vec<Value>, bool), CallToolResult> {
        let output = self.rows(sql, access, max_rows).await?;
        let truncated = output.truncated;
        let rows = match query::format::to_json(&output)["rows"].take() {
            Value::Array(rows) => rows,
            _ => Vec::new(),
        };
        Ok((rows, truncated))
    }
}

#[tool_router]
impl SightlineMcp {
    #[tool(
        description = "Run one read-only SQL statement over the trace store (DataFusion SQL). \
            Tables: spans (one row per span), span_events, span_links, the agent tables \
            llm_calls, tool_calls, decisions, agent_runs, sessions, the OTLP log records logs \
            (GenAI events) with the evaluations view; content (prompt and \
            completion text) needs the content scope. Times are UTC timestamps, *_ns columns \
            are nanoseconds, tokens are counts. Answer: a `columns:` line, one JSON array per \
            row, and a `rows: N, truncated: ...` line. Writes and DDL are refused.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn sql(
        &self,
        Parameters(args): Parameters<SqlArgs>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, CallToolResult> {
        let max_rows = row_cap(args.max_rows, DEFAULT_ROWS)?;
        let output = self.rows(&args.sql, access_of(&parts), max_rows).await?;
        Ok(answer(text::rows_text(&output, max_rows, MAX_TEXT_BYTES)))
    }

    #[tool(
        description = "Draw one trace as a span tree: per span a timing bar, duration, name, \
            service, agent, model, tool, risk, tokens (input/output), errors and retries; \
            the decisions (verdict, policy, risk, reasoning, approval) on the line below the \
            span they gate. include_content adds the stored prompts and completions (needs \
            the content scope).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_trace(
        &self,
        Parameters(args): Parameters<GetTraceArgs>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, CallToolResult> {
        let max_lines = match args.max_lines {
            None => DEFAULT_TRACE_LINES,
            Some(lines @ 1..=MAX_ROWS) => lines,
            Some(lines) => {
                return Err(refusal(format!(
                    "max_lines must be between 1 and {MAX_ROWS}, not {lines}"
                )));
            }
        };
        let access = access_of(&parts);
        let source = EngineSource {
            state: &self.state,
            access,
        };
        let mut drawn = match crate::trace_command::trace_text(&source, &args.trace_id).await {
            Ok(text) => text,
            Err(error) => {
                return Err(match error.downcast::<query::Error>() {
                    Ok(error) => failure(error),
                    Err(other) => refusal(format!("{other:#}")),
                });
            }
        };
        if !args.include_content {
            drawn.push_str(
                "\n(content not included: call with include_content = true for prompts and \
                 completions)\n",
            );
        } else if !access.content {
            drawn.push_str(
                "\ncontent withheld: prompts and completions need a token with the content \
                 scope\n",
            );
        } else {
            // The id parsed in trace_text; lowercase it the same way for the content table.
            let trace_id = args.trace_id.trim().to_ascii_lowercase();
            let sql = format!(
                "SELECT span_id, key, status, value FROM content WHERE trace_id = {} \
                 ORDER BY span_id, key",
                string_literal(&trace_id)
            );
            let (rows, more) = self.json_rows(&sql, access, max_lines).await?;
            drawn.push_str(&format!(
                "\ncontent ({} values; each cut at {CONTENT_CHARS} characters):\n",
                rows.len()
            ));
            for row in &rows {
                drawn.push_str(&format!(
                    "  {} {} [{}]: {}\n",
                    text::value_text(&row[0]),
                    text::one_line(&text::value_text(&row[1]), 200),
                    text::value_text(&row[2]),
                    text::one_line(&text::value_text(&row[3]), CONTENT_CHARS)
                ));
            }
            if more {
                drawn.push_str("  (more content values not listed)\n");
            }
        }
        Ok(answer(text::capped_lines(
            &drawn,
            max_lines,
            MAX_TEXT_BYTES,
        )))
    }

    #[tool(
        description = "Find agent runs (top-level agent invocations, table agent_runs), newest \
            first, by agent, outcome (success, error, refused), a tool called in the run's \
            trace, a decision verdict in the run's trace (allow, deny, modify, warn, escalate), \
            session, and start time (since/until: RFC 3339 or an age like 6h, 7d). Each row: \
            start_time, trace_id (for get_trace), span_id, session_id, agent_name, outcome, \
            duration_ns, call, error, retry, denial and escalation counts, tokens.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn find_runs(
        &self,
        Parameters(args): Parameters<FindRunsArgs>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, CallToolResult> {
        let max_rows = row_cap(args.max_rows, DEFAULT_ROWS)?;
        let window = window(args.since.as_deref(), args.until.as_deref())?;
        let filter = RunFilter {
            agent: args.agent,
            outcome: args.outcome.map(|outcome| lowercase_name(&outcome)),
            tool: args.tool,
            verdict: args.verdict.map(|verdict| lowercase_name(&verdict)),
            session_id: args.session_id,
            window,
            ..RunFilter::default()
        };
        // One row past the cap tells a cut answer from an exact one.
        let sql = query::monitoring::find_runs_sql(&filter, max_rows + 1);
        let output = self.rows(&sql, access_of(&parts), max_rows).await?;
        let head = format!("agent runs, newest first ({}):\n", window_text(window));
        let budget = MAX_TEXT_BYTES.saturating_sub(head.len());
        Ok(answer(head + &text::rows_text(&output, max_rows, budget)))
    }

    #[tool(
        description = "Summarize one session: user, time span, runs by outcome, tokens \
            (input, output; cost is not recorded), failed model and tool calls, decisions by \
            verdict with the denials and escalations, tools used (calls, errors, retries), \
            models used, and its runs (run_list, newest first). Answer: one JSON object; each list \
            says whether it was cut.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn session_summary(
        &self,
        Parameters(args): Parameters<SessionSummaryArgs>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, CallToolResult> {
        let max_rows = row_cap(args.max_rows, DEFAULT_ROWS)?;
        let summary = self
            .summary(&args.session_id, access_of(&parts), max_rows)
            .await?;
        Ok(answer(summary))
    }

    #[tool(
        description = "The named monitoring questions (docs/monitoring.md): retry rate by \
            tool, denials by policy per day, error rate by agent, tokens and p95 latency by \
            model, unguarded destructive tool calls, top sessions by tokens, propagation \
            problems. Without `question`, lists them with what each answers; with it, runs \
            that question (optionally within since/until) and answers its SQL and rows.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn monitoring(
        &self,
        Parameters(args): Parameters<MonitoringArgs>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, CallToolResult> {
        let Some(name) = args.question else {
            let mut listing = String::from(
                "monitoring questions (run one with {\"question\": NAME}; since/until narrow \
                 it to a time window):\n",
            );
            for question in query::monitoring::QUESTIONS {
                listing.push_str(&format!(
                    "- {}: {}. {} (window keeps {})\n",
                    question.name,
                    question.title,
                    question.description,
                    question.window.describe()
                ));
            }
            return Ok(answer(text::capped_lines(
                &listing,
                MAX_ROWS,
                MAX_TEXT_BYTES,
            )));
        };
        let Some(question) = query::monitoring::question(&name) else {
            let names: Vec<&str> = query::monitoring::QUESTIONS
                .iter()
                .map(|question| question.name)
                .collect();
            return Err(refusal(format!(
                "no monitoring question {name:?}; the questions are: {}",
                names.join(", ")
            )));
        };
        let max_rows = row_cap(args.max_rows, DEFAULT_ROWS)?;
        let window = window(args.since.as_deref(), args.until.as_deref())?;
        let sql = question.sql_within(window);
        let output = self.rows(&sql, access_of(&parts), max_rows).await?;
        let head = format!(
            "question: {} ({})\nwindow: {}\nsql:\n{sql}\n\n",
            question.name,
            question.title,
            window_text(window),
        );
        // The head is a few KiB at most (the catalog's SQL and a window).
        let budget = MAX_TEXT_BYTES.saturating_sub(head.len());
        Ok(answer(head + &text::rows_text(&output, max_rows, budget)))
    }
}

/// The serde name of a unit enum value (`Outcome::Error` -> `error`).
fn lowercase_name(value: &impl fmt::Debug) -> String {
    format!("{value:?}").to_ascii_lowercase()
}

impl SightlineMcp {
    /// The `session_summary` JSON, its lists cut to `max_rows` entries and then, while the
    /// text is over [`MAX_TEXT_BYTES`], halved.
    async fn summary(
        &self,
        session_id: &str,
        access: Access,
        max_rows: usize,
    ) -> Result<String, CallToolResult> {
        let id = string_literal(session_id);
        let (session, _) = self
            .json_rows(
                &format!(
                    "SELECT user_id, first_seen, last_seen, runs, conversations, spans, errors, \
                     denials, input_tokens, output_tokens FROM sessions WHERE session_id = {id}"
                ),
                access,
                1,
            )
            .await?;
        let Some(session) = session.into_iter().next() else {
            return Err(refusal(format!(
                "session {session_id:?} not found (no span names it; `find_runs` or \
                 `SELECT session_id FROM sessions` lists sessions)"
            )));
        };
        let (outcomes, _) = self
            .json_rows(
                &format!(
                    "SELECT outcome, count(*) FROM agent_runs WHERE session_id = {id} \
                     GROUP BY outcome ORDER BY outcome"
                ),
                access,
                MAX_ROWS,
            )
            .await?;
        let (verdicts, _) = self
            .json_rows(
                &format!(
                    "SELECT coalesce(verdict, 'unknown'), count(*) FROM decisions \
                     WHERE session_id = {id} GROUP BY 1 ORDER BY 1"
                ),
                access,
                MAX_ROWS,
            )
            .await?;
        let lists = [
            (
                "run_list",
                query::monitoring::find_runs_sql(
                    &RunFilter {
                        session_id: Some(session_id.to_owned()),
                        ..RunFilter::default()
                    },
                    max_rows + 1,
                ),
            ),
            (
                "tools",
                format!(
                    "SELECT tool_name, count(*) AS calls, \
                     count(*) FILTER (WHERE status_code = 'error') AS errors, \
                     count(*) FILTER (WHERE is_retry) AS retries \
                     FROM tool_calls WHERE session_id = {id} \
                     GROUP BY tool_name ORDER BY calls DESC, tool_name LIMIT {}",
                    max_rows + 1
                ),
            ),
            (
                "models",
                format!(
                    "SELECT provider, request_model, count(*) AS calls, \
                     sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, \
                     count(*) FILTER (WHERE status_code = 'error') AS errors \
                     FROM llm_calls WHERE session_id = {id} \
                     GROUP BY provider, request_model ORDER BY calls DESC, provider, \
                     request_model LIMIT {}",
                    max_rows + 1
                ),
            ),
            (
                "denials_and_escalations",
                format!(
                    "SELECT time, trace_id, span_id, agent_name, tool_name, kind, verdict, \
                     policy_id, risk, reasoning, approval_status FROM decisions \
                     WHERE session_id = {id} AND verdict IN ('deny', 'escalate') \
                     ORDER BY time, trace_id, span_id LIMIT {}",
                    max_rows + 1
                ),
            ),
            (
                "failed_calls",
                format!(
                    "SELECT start_time, trace_id, span_id, kind, name, error_type FROM ( \
                     SELECT start_time, trace_id, span_id, 'tool' AS kind, tool_name AS name, \
                     error_type FROM tool_calls WHERE session_id = {id} AND status_code = 'error' \
                     UNION ALL \
                     SELECT start_time, trace_id, span_id, 'model' AS kind, request_model AS name, \
                     error_type FROM llm_calls WHERE session_id = {id} AND status_code = 'error') \
                     ORDER BY start_time, trace_id, span_id LIMIT {}",
                    max_rows + 1
                ),
            ),
        ];
        let mut listed = Vec::with_capacity(lists.len());
        for (name, sql) in &lists {
            let output = self.rows(sql, access, max_rows).await?;
            listed.push((*name, output));
        }
        let counts = |rows: &[Value]| -> serde_json::Map<String, Value> {
            rows.iter()
                .map(|row| (text::value_text(&row[0]), row[1].clone()))
                .collect()
        };
        let mut cap = max_rows;
        loop {
            let mut summary = json!({
                "session_id": session_id,
                "user_id": session[0],
                "first_seen": session[1],
                "last_seen": session[2],
                "runs": session[3],
                "runs_by_outcome": counts(&outcomes),
                "conversations": session[4],
                "spans": session[5],
                "errors": session[6],
                "denials": session[7],
                "decisions_by_verdict": counts(&verdicts),
                "input_tokens": session[8],
                "output_tokens": session[9],
                "cost": "not recorded (Sightline stores tokens, not prices)",
                "units": "times UTC; duration_ns in nanoseconds; tokens as counts",
            });
            let mut truncated = false;
            for (name, output) in &listed {
                let json = query::format::to_json(output);
                let columns: Vec<&str> = json["columns"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|column| column["name"].as_str())
                    .collect();
                let rows = json["rows"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let cut = output.truncated || rows.len() > cap;
                truncated |= cut;
                let entries: Vec<Value> = rows
                    .iter()
                    .take(cap)
                    .map(|row| {
                        let values = row.as_array().map(Vec::as_slice).unwrap_or_default();
                        Value::Object(
                            columns
                                .iter()
                                .zip(values)
                                .map(|(column, value)| ((*column).to_owned(), value.clone()))
                                .collect(),
                        )
                    })
                    .collect();
                summary[*name] = json!({ "entries": entries, "truncated": cut });
            }
            summary["truncated"] = Value::Bool(truncated);
            let text = serde_json::to_string(&summary).unwrap_or_default();
            if text.len() <= MAX_TEXT_BYTES || cap == 0 {
                return Ok(text);
            }
            cap /= 2;
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for SightlineMcp {
    fn get_info(&self) -> ServerConfig {
        let mut implementation = Implementation::new("sightline", env!("CARGO_PKG_VERSION"));
        implementation.title = Some("Sightline trace store".to_owned());
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(implementation)
            .with_instructions(
                "Sightline stores OpenTelemetry traces of AI agents. Start with `monitoring` \
                 (no arguments) for the standard cross-run questions, `find_runs` to find runs, \
                 `get_trace` to read one run's span tree and decisions, `session_summary` for a \
                 session, and `sql` for anything else (docs/sql.md has the tables).",
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000_000_000;

    #[test]
    fn times_are_rfc3339_or_an_age_before_now() {
        assert_eq!(
            query::monitoring::parse_time("since", "2026-11-01T00:00:00Z", NOW),
            Ok(1_793_491_200_000_000_000)
        );
        assert_eq!(
            query::monitoring::parse_time("since", "6h", NOW),
            Ok(NOW - 6 * 3_600_000_000_000)
        );
        assert_eq!(query::monitoring::parse_time("since", "0s", NOW), Ok(NOW));
        assert_eq!(
            query::monitoring::parse_time("since", " 2w ", NOW),
            Ok(NOW - 14 * 86_400_000_000_000)
        );
        let error = query::monitoring::parse_time("until", "yesterday", NOW).unwrap_err();
        assert!(error.contains("until = \"yesterday\""), "{error}");
        assert!(query::monitoring::parse_time("since", "-5m", NOW).is_err());
        assert!(query::monitoring::parse_time("since", "99999999999999999d", NOW).is_err());
    }

    #[test]
    fn row_caps_are_checked() {
        assert_eq!(row_cap(None, 100).ok(), Some(100));
        assert_eq!(row_cap(Some(1_000), 100).ok(), Some(1_000));
        assert!(row_cap(Some(0), 100).is_err());
        assert!(row_cap(Some(1_001), 100).is_err());
    }

    #[test]
    fn enum_values_are_their_serde_names() {
        assert_eq!(lowercase_name(&Outcome::Refused), "refused");
        assert_eq!(lowercase_name(&Verdict::Escalate), "escalate");
        let parsed: Verdict = serde_json::from_value(json!("deny")).unwrap();
        assert_eq!(lowercase_name(&parsed), "deny");
    }
}
