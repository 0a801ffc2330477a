//! `sightline trace`: one trace drawn as a span tree, or the runs of one session as a table.
//!
//! Everything is read through SQL (the `spans` table and the `decisions`, `tool_calls` and
//! `agent_runs` views) via `SqlTarget`, so a data directory and a running server give the same
//! text. Fetching turns the JSON result rows into plain structs; `render` turns those into text
//! and knows nothing about where they came from.
//!
//! The views are optional: against a store without `decisions` or `tool_calls` the tree is drawn
//! without decisions or inferred retries and says so in its last line; `--session` needs
//! `agent_runs`.

mod render;

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fmt;
use std::io::Write;

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::cli::{ColorChoice, TraceArgs};
use crate::sql_command::SqlTarget;

use render::{DecisionRow, RunRow, SpanRow, ToolCallRow, TraceRows};

/// Draws the trace (or lists the session's runs) named by `args` into `out`.
/// `stdout_is_terminal` decides colors under `--color auto`.
pub async fn run(
    args: &TraceArgs,
    out: &mut impl Write,
    stdout_is_terminal: bool,
) -> anyhow::Result<()> {
    let color = color_enabled(
        args.color,
        stdout_is_terminal,
        std::env::var_os("NO_COLOR").as_deref(),
    );
    // Check the id before touching storage.
    let trace_id = args.trace_id.as_deref().map(parse_trace_id).transpose()?;
    let target = SqlTarget::connect(&args.data_dir, args.url.as_deref(), &args.query).await?;
    let text = match (&trace_id, &args.session) {
        (Some(trace_id), _) => fetch_trace(&target, trace_id)
            .await
            .map(|rows| render::trace(&rows, color)),
        (None, Some(session_id)) => fetch_session(&target, session_id)
            .await
            .map(|runs| render::session(session_id, &runs, color)),
        // clap requires one of the two.
        (None, None) => Err(anyhow::anyhow!("give a trace id or --session SESSION_ID")),
    };
    target.close().await?;
    out.write_all(text?.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Where a trace is read from: anything that runs SQL and answers rows in the shape of
/// `query::format::to_json` (the CLI's [`SqlTarget`], the MCP server's own engine). Its
/// `Display` names it in messages ("trace ... not found in {source}").
pub(crate) trait TraceSource: fmt::Display + Sync {
    /// Runs `sql`, answering `{"columns": [...], "rows": [...]}`.
    fn query_json(&self, sql: &str) -> impl Future<Output = anyhow::Result<Value>> + Send;
}

impl TraceSource for SqlTarget {
    fn query_json(&self, sql: &str) -> impl Future<Output = anyhow::Result<Value>> + Send {
        self.json(sql)
    }
}

/// The span tree of `trace_id` (any case; checked) as `sightline trace` draws it without
/// colors: decisions under the spans they gate. Fails naming `source` when the trace has no
/// spans there.
pub(crate) async fn trace_text(
    source: &impl TraceSource,
    trace_id: &str,
) -> anyhow::Result<String> {
    let trace_id = parse_trace_id(trace_id)?;
    let rows = fetch_trace(source, &trace_id).await?;
    Ok(render::trace(&rows, false))
}

/// `--color auto` colors only a terminal, and only when `NO_COLOR` is unset or empty
/// (<https://no-color.org>).
fn color_enabled(choice: ColorChoice, stdout_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => stdout_is_terminal && no_color.is_none_or(OsStr::is_empty),
    }
}

/// The lowercase hex form of a valid trace id (32 hex digits, not all zero).
fn parse_trace_id(text: &str) -> anyhow::Result<String> {
    let id = engine::TraceId::from_hex(text.trim())
        .with_context(|| format!("invalid trace id {text:?}"))?;
    if id.is_zero() {
        bail!("invalid trace id {text:?}: the all-zero id is not a valid trace id");
    }
    Ok(id.to_string())
}

/// A SQL string literal (the query crate's one escaping rule).
fn sql_string(text: &str) -> String {
    query::monitoring::string_literal(text)
}

/// Which of the agent views this store has.
async fn views(target: &impl TraceSource) -> anyhow::Result<HashSet<String>> {
    let result = target
        .query_json(
            "SELECT table_name FROM information_schema.tables \
             WHERE table_name IN ('decisions', 'tool_calls', 'agent_runs')",
        )
        .await?;
    let rows = ResultRows::new(&result)?;
    Ok(rows
        .iter()
        .filter_map(|row| row.text("table_name"))
        .collect())
}

async fn fetch_trace(target: &impl TraceSource, trace_id: &str) -> anyhow::Result<TraceRows> {
    let id = sql_string(trace_id);
    let spans = target
        .query_json(&format!(
            // DISTINCT: copies of a re-sent span (the raw table keeps every one) draw once.
            "SELECT DISTINCT span_id, parent_span_id, span_name, \
             CAST(start_time AS BIGINT) AS start_ns, \
             duration_ns, status_code, status_message, service_name, session_id, operation, \
             provider, request_model, response_model, agent_name, tool_name, tool_risk, \
             input_tokens, output_tokens, error_type, retry_attempt \
             FROM spans WHERE trace_id = {id} ORDER BY start_ns, span_id"
        ))
        .await?;
    let spans = ResultRows::new(&spans)?
        .iter()
        .map(span_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    if spans.is_empty() {
        bail!("trace {trace_id} not found in {target}");
    }
    let views = views(target).await?;
    let decisions = if views.contains("decisions") {
        let result = target
            .query_json(&format!(
                "SELECT span_id, CAST(\"time\" AS BIGINT) AS time_ns, kind, verdict, action, \
                 policy_id, risk, context_source, reasoning, approval_status, approval_latency_ms \
                 FROM decisions WHERE trace_id = {id} ORDER BY \"time\", decision_id"
            ))
            .await?;
        Some(ResultRows::new(&result)?.iter().map(decision_row).collect())
    } else {
        None
    };
    let tool_calls = if views.contains("tool_calls") {
        let result = target
            .query_json(&format!(
                "SELECT span_id, attempt, is_retry, retry_source \
                 FROM tool_calls WHERE trace_id = {id}"
            ))
            .await?;
        Some(
            ResultRows::new(&result)?
                .iter()
                .map(tool_call_row)
                .collect(),
        )
    } else {
        None
    };
    Ok(TraceRows {
        trace_id: trace_id.to_owned(),
        spans,
        decisions,
        tool_calls,
    })
}

async fn fetch_session(target: &SqlTarget, session_id: &str) -> anyhow::Result<Vec<RunRow>> {
    if !views(target).await?.contains("agent_runs") {
        bail!("{target} has no agent_runs view, which --session needs (a newer sightline has it)");
    }
    let result = target
        .json(&format!(
            "SELECT trace_id, CAST(start_time AS BIGINT) AS start_ns, agent_name, outcome, \
             duration_ns, llm_calls, tool_calls, errors, denials, input_tokens, output_tokens \
             FROM agent_runs WHERE session_id = {} ORDER BY start_time, trace_id",
            sql_string(session_id)
        ))
        .await?;
    let runs = ResultRows::new(&result)?
        .iter()
        .map(run_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    if runs.is_empty() {
        // Say why: a session may hold spans but no run (an `invoke_agent` span).
        let counts = target
            .json(&format!(
                "SELECT count(*) AS spans, count(DISTINCT trace_id) AS traces FROM spans \
                 WHERE session_id = {}",
                sql_string(session_id)
            ))
            .await?;
        let rows = ResultRows::new(&counts)?;
        let (spans, traces) = rows
            .iter()
            .next()
            .map(|row| {
                (
                    row.integer("spans").unwrap_or(0),
                    row.integer("traces").unwrap_or(0),
                )
            })
            .unwrap_or((0, 0));
        if spans == 0 {
            bail!("no spans of session {session_id:?} found in {target}");
        }
        bail!(
            "session {session_id:?} has {spans} spans in {traces} traces in {target}, but no agent \
             runs (a run is an `invoke_agent` span; see docs/sql.md, agent_runs); \
             `sightline trace <trace id>` draws one of its traces"
        );
    }
    Ok(runs)
}

fn span_row(row: Row<'_>) -> anyhow::Result<SpanRow> {
    Ok(SpanRow {
        span_id: row.required_text("span_id")?,
        parent_span_id: row.text("parent_span_id").filter(|id| !id.is_empty()),
        name: row.text("span_name").unwrap_or_default(),
        start_ns: row.required_integer("start_ns")?,
        duration_ns: row.integer("duration_ns").unwrap_or(0),
        status_code: row.text("status_code").unwrap_or_default(),
        status_message: row.text("status_message"),
        service_name: row.text("service_name"),
        session_id: row.text("session_id"),
        operation: row.text("operation"),
        provider: row.text("provider"),
        request_model: row.text("request_model"),
        response_model: row.text("response_model"),
        agent_name: row.text("agent_name"),
        tool_name: row.text("tool_name"),
        tool_risk: row.text("tool_risk"),
        input_tokens: row.integer("input_tokens"),
        output_tokens: row.integer("output_tokens"),
        error_type: row.text("error_type"),
        retry_attempt: row.integer("retry_attempt"),
    })
}

fn decision_row(row: Row<'_>) -> DecisionRow {
    DecisionRow {
        span_id: row.text("span_id").unwrap_or_default(),
        time_ns: row.integer("time_ns"),
        kind: row.text("kind"),
        verdict: row.text("verdict"),
        action: row.text("action"),
        policy_id: row.text("policy_id"),
        risk: row.text("risk"),
        context_source: row.text("context_source"),
        reasoning: row.text("reasoning"),
        approval_status: row.text("approval_status"),
        approval_latency_ms: row.number("approval_latency_ms"),
    }
}

fn tool_call_row(row: Row<'_>) -> ToolCallRow {
    ToolCallRow {
        span_id: row.text("span_id").unwrap_or_default(),
        attempt: row.integer("attempt"),
        is_retry: row.flag("is_retry").unwrap_or(false),
        retry_source: row.text("retry_source"),
    }
}

fn run_row(row: Row<'_>) -> anyhow::Result<RunRow> {
    Ok(RunRow {
        trace_id: row.required_text("trace_id")?,
        start_ns: row.required_integer("start_ns")?,
        agent_name: row.text("agent_name"),
        outcome: row.text("outcome"),
        duration_ns: row.integer("duration_ns").unwrap_or(0),
        llm_calls: row.integer("llm_calls"),
        tool_calls: row.integer("tool_calls"),
        errors: row.integer("errors"),
        denials: row.integer("denials"),
        input_tokens: row.integer("input_tokens"),
        output_tokens: row.integer("output_tokens"),
    })
}

/// The rows of a `{"columns": [{"name": ...}], "rows": [[...]]}` result, read by column name.
#[derive(Debug)]
struct ResultRows<'a> {
    columns: HashMap<&'a str, usize>,
    rows: &'a [Value],
}

impl<'a> ResultRows<'a> {
    fn new(result: &'a Value) -> anyhow::Result<Self> {
        let (Some(columns), Some(rows)) = (result["columns"].as_array(), result["rows"].as_array())
        else {
            bail!("a SQL result without columns and rows");
        };
        let columns = columns
            .iter()
            .enumerate()
            .filter_map(|(index, column)| column["name"].as_str().map(|name| (name, index)))
            .collect();
        Ok(ResultRows { columns, rows })
    }

    fn iter(&self) -> impl Iterator<Item = Row<'_>> {
        self.rows.iter().map(|values| Row {
            columns: &self.columns,
            values: values.as_array().map(Vec::as_slice).unwrap_or_default(),
        })
    }
}

/// One result row. Absent columns and NULLs both read as `None`, so a view that lacks an
/// optional column still draws.
#[derive(Debug, Clone, Copy)]
struct Row<'a> {
    columns: &'a HashMap<&'a str, usize>,
    values: &'a [Value],
}

impl Row<'_> {
    fn value(&self, name: &str) -> Option<&Value> {
        self.columns
            .get(name)
            .and_then(|index| self.values.get(*index))
            .filter(|value| !value.is_null())
    }

    fn text(&self, name: &str) -> Option<String> {
        match self.value(name)? {
            Value::String(text) => Some(text.clone()),
            other => Some(other.to_string()),
        }
    }

    fn integer(&self, name: &str) -> Option<i64> {
        match self.value(name)? {
            Value::Number(number) => number
                .as_i64()
                // Whole floats (a view may compute counts as doubles); truncation is intended.
                .or_else(|| number.as_f64().map(|float| float as i64)),
            Value::String(text) => text.parse().ok(),
            _ => None,
        }
    }

    fn number(&self, name: &str) -> Option<f64> {
        match self.value(name)? {
            Value::Number(number) => number.as_f64(),
            Value::String(text) => text.parse().ok(),
            _ => None,
        }
    }

    fn flag(&self, name: &str) -> Option<bool> {
        match self.value(name)? {
            Value::Bool(flag) => Some(*flag),
            Value::String(text) => text.parse().ok(),
            _ => None,
        }
    }

    fn required_text(&self, name: &str) -> anyhow::Result<String> {
        self.text(name)
            .with_context(|| format!("SQL result row without {name}"))
    }

    fn required_integer(&self, name: &str) -> anyhow::Result<i64> {
        self.integer(name)
            .with_context(|| format!("SQL result row without {name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn color_auto_means_a_terminal_without_no_color() {
        let set = Some(OsStr::new("1"));
        let empty = Some(OsStr::new(""));
        assert!(color_enabled(ColorChoice::Auto, true, None));
        assert!(color_enabled(ColorChoice::Auto, true, empty));
        assert!(!color_enabled(ColorChoice::Auto, true, set));
        assert!(!color_enabled(ColorChoice::Auto, false, None));
        assert!(color_enabled(ColorChoice::Always, false, set));
        assert!(!color_enabled(ColorChoice::Never, true, None));
    }

    #[test]
    fn trace_ids_are_32_hex_digits_and_not_zero() {
        assert_eq!(
            parse_trace_id("4BF92F3577B34DA6A3CE929D0E0E4736").unwrap(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let short = parse_trace_id("4bf92f").unwrap_err();
        assert!(
            format!("{short:#}").contains("expected 32 hex characters"),
            "{short:#}"
        );
        let quote = parse_trace_id("4bf92f3577b34da6a3ce929d0e0e473'").unwrap_err();
        assert!(
            format!("{quote:#}").contains("not a hex string"),
            "{quote:#}"
        );
        assert!(parse_trace_id(&"0".repeat(32)).is_err());
    }

    #[test]
    fn sql_strings_escape_quotes() {
        assert_eq!(sql_string("it's"), "'it''s'");
    }

    #[test]
    fn rows_are_read_by_column_name_and_tolerate_missing_columns() {
        let result = serde_json::json!({
            "columns": [{"name": "span_id"}, {"name": "start_ns"}, {"name": "duration_ns"},
                        {"name": "input_tokens"}, {"name": "parent_span_id"}],
            "rows": [["00000000000000aa", 1_793_491_200_000_000_001_i64, 5, null, ""]],
        });
        let rows = ResultRows::new(&result).unwrap();
        let spans: Vec<SpanRow> = rows.iter().map(span_row).collect::<Result<_, _>>().unwrap();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].span_id, "00000000000000aa");
        assert_eq!(spans[0].start_ns, 1_793_491_200_000_000_001);
        assert_eq!(spans[0].duration_ns, 5);
        assert_eq!(spans[0].input_tokens, None);
        assert_eq!(spans[0].parent_span_id, None);
        assert_eq!(spans[0].operation, None);

        let without_start = serde_json::json!({
            "columns": [{"name": "span_id"}],
            "rows": [["00000000000000aa"]],
        });
        let rows = ResultRows::new(&without_start).unwrap();
        assert!(rows.iter().map(span_row).next().unwrap().is_err());
        assert!(ResultRows::new(&serde_json::json!({"error": "x"})).is_err());
    }
}
