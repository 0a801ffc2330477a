//! The named monitoring questions of `docs/monitoring.md` (their one definition: the page's SQL
//! is checked against [`QUESTIONS`] by a test), a time window over them, and the run search of
//! the MCP `find_runs` tool: SQL that every surface (HTTP, MCP, a web page, pgwire) can share.
//!
//! Values from callers never reach SQL as text: strings go through [`string_literal`] and times
//! are rendered from parsed nanosecond counts.

use crate::timestamp::format_timestamp_ns;

/// One named question: a query over the agent tables or `spans`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Question {
    /// Stable identifier (`snake_case`), e.g. `retry_rate_by_tool`.
    pub name: &'static str,
    /// The heading in `docs/monitoring.md`.
    pub title: &'static str,
    /// What the answer holds, one or two sentences.
    pub description: &'static str,
    /// Which rows a [`TimeWindow`] keeps.
    pub window: Window,
    /// The query, as in `docs/monitoring.md` (over the whole store).
    pub sql: &'static str,
}

/// How a [`TimeWindow`] narrows a question: the rows of one table that it keeps, by shadowing
/// that table with a common table expression of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Rows of `table` whose `column` is in the window.
    Column {
        /// The table read by the question.
        table: &'static str,
        /// Its timestamp column.
        column: &'static str,
    },
    /// Rows of `table` whose `[first, last]` overlaps the window.
    Overlap {
        /// The table read by the question.
        table: &'static str,
        /// Its earliest-time column.
        first: &'static str,
        /// Its latest-time column.
        last: &'static str,
    },
    /// Whole traces of `spans` with a span starting in the window (a question about parents
    /// must see the whole trace).
    Traces,
}

impl Window {
    /// One line for a catalog listing.
    pub fn describe(&self) -> String {
        match self {
            Window::Column { table, column } => format!("{table} rows whose {column} is in it"),
            Window::Overlap { table, first, last } => {
                format!("{table} rows whose [{first}, {last}] overlaps it")
            }
            Window::Traces => "whole traces with a span starting in it".to_owned(),
        }
    }
}

/// A half-open time range `[since, until)` in nanoseconds since the Unix epoch; `None` leaves
/// that side open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeWindow {
    /// Inclusive start.
    pub since_ns: Option<i64>,
    /// Exclusive end.
    pub until_ns: Option<i64>,
}

impl TimeWindow {
    /// The window between `since` and `until`, each RFC 3339 or an age before `now_ns`
    /// ([`parse_time`]); an error says which side is wrong, or that `since` is not before
    /// `until`.
    pub fn parse(since: Option<&str>, until: Option<&str>, now_ns: i64) -> Result<Self, String> {
        let parse = |name: &str, text: Option<&str>| {
            text.filter(|text| !text.trim().is_empty())
                .map(|text| parse_time(name, text, now_ns))
                .transpose()
        };
        let window = TimeWindow {
            since_ns: parse("since", since)?,
            until_ns: parse("until", until)?,
        };
        if let (Some(since), Some(until)) = (window.since_ns, window.until_ns)
            && since >= until
        {
            return Err("since must be before until".to_owned());
        }
        Ok(window)
    }

    /// True when neither side is bounded.
    pub fn is_unbounded(&self) -> bool {
        self.since_ns.is_none() && self.until_ns.is_none()
    }

    /// `column >= since AND column < until` (the bounded sides; `TRUE` when unbounded).
    pub fn predicate(&self, column: &str) -> String {
        self.overlap_predicate(column, column)
    }

    /// Rows whose `[first, last]` overlaps the window: `last >= since AND first < until`.
    fn overlap_predicate(&self, first: &str, last: &str) -> String {
        let mut parts = Vec::new();
        if let Some(since) = self.since_ns {
            parts.push(format!("{last} >= {}", timestamp_literal(since)));
        }
        if let Some(until) = self.until_ns {
            parts.push(format!("{first} < {}", timestamp_literal(until)));
        }
        if parts.is_empty() {
            "TRUE".to_owned()
        } else {
            parts.join(" AND ")
        }
    }
}

/// A time argument: RFC 3339, or an age (`30s`, `90m`, `6h`, `7d`, `2w`) before `now_ns`.
pub fn parse_time(name: &str, text: &str, now_ns: i64) -> Result<i64, String> {
    let text = text.trim();
    let unit_ns: Option<i64> = match text.chars().last() {
        Some('s') => Some(1_000_000_000),
        Some('m') => Some(60_000_000_000),
        Some('h') => Some(3_600_000_000_000),
        Some('d') => Some(86_400_000_000_000),
        Some('w') => Some(7 * 86_400_000_000_000),
        _ => None,
    };
    if let Some(unit_ns) = unit_ns
        && let Ok(count) = text[..text.len() - 1].parse::<i64>()
        && count >= 0
    {
        return count
            .checked_mul(unit_ns)
            .map(|age| now_ns.saturating_sub(age))
            .ok_or_else(|| format!("{name} = {text:?} is too long ago"));
    }
    arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(text).map_err(|_| {
        format!(
            "{name} = {text:?} is neither an RFC 3339 time (2026-11-01T00:00:00Z) nor an age \
             (30m, 6h, 7d)"
        )
    })
}

/// A SQL string literal holding exactly `text`: quotes doubled, nothing else interpreted
/// (DataFusion's dialect reads backslashes literally).
pub fn string_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A timestamp literal (RFC 3339 text with nanoseconds, compared as a UTC instant).
fn timestamp_literal(nanos: i64) -> String {
    format!("'{}'", format_timestamp_ns(nanos))
}

impl Question {
    /// The question's SQL restricted to `window` (the catalog's SQL verbatim when unbounded).
    pub fn sql_within(&self, window: TimeWindow) -> String {
        if window.is_unbounded() {
            return self.sql.to_owned();
        }
        let (table, body) = match self.window {
            Window::Column { table, column } => (
                table,
                format!("SELECT * FROM {table} WHERE {}", window.predicate(column)),
            ),
            Window::Overlap { table, first, last } => (
                table,
                format!(
                    "SELECT * FROM {table} WHERE {}",
                    window.overlap_predicate(first, last)
                ),
            ),
            Window::Traces => (
                "spans",
                format!(
                    "SELECT * FROM spans WHERE trace_id IN \
                     (SELECT trace_id FROM spans WHERE {})",
                    window.predicate("start_time")
                ),
            ),
        };
        // The CTE shadows the table for the whole query (a CTE's own body still reads the
        // table); a question that starts with WITH gets it as its first CTE.
        match self.sql.strip_prefix("WITH ") {
            Some(rest) => format!("WITH {table} AS ({body}),\n{rest}"),
            None => format!("WITH {table} AS ({body})\n{}", self.sql),
        }
    }
}

/// The question named `name`.
pub fn question(name: &str) -> Option<&'static Question> {
    QUESTIONS.iter().find(|question| question.name == name)
}

/// What [`find_runs_sql`] filters `agent_runs` by; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// `agent_runs.agent_name` equals it.
    pub agent: Option<String>,
    /// `agent_runs.outcome` equals it (`success`, `error`, `refused`).
    pub outcome: Option<String>,
    /// The run's trace has a `tool_calls` row of this tool.
    pub tool: Option<String>,
    /// The run's trace has a `decisions` row with this verdict.
    pub verdict: Option<String>,
    /// `agent_runs.session_id` equals it.
    pub session_id: Option<String>,
    /// `agent_runs.user_id` equals it.
    pub user_id: Option<String>,
    /// The run's session id or user id contains this text (case-sensitive).
    pub search: Option<String>,
    /// The run started in it.
    pub window: TimeWindow,
}

/// The columns [`find_runs_sql`] selects, in order.
pub const FIND_RUNS_COLUMNS: &str = "start_time, trace_id, span_id, session_id, agent_name, \
    outcome, duration_ns, llm_calls, tool_calls, errors, retries, denials, escalations, \
    input_tokens, output_tokens";

/// `agent_runs` rows matching `filter`, newest first (then by trace and span id), at most
/// `limit` rows. Tool and verdict match at the trace level: a trace with several runs matches
/// for all of them.
pub fn find_runs_sql(filter: &RunFilter, limit: usize) -> String {
    format!(
        "SELECT {FIND_RUNS_COLUMNS} FROM agent_runs{} \
         ORDER BY start_time DESC, trace_id, span_id LIMIT {limit}",
        run_conditions(filter)
    )
}

/// The columns [`find_sessions_sql`] selects, in order.
pub const FIND_SESSIONS_COLUMNS: &str = "session_id, user_id, first_start, last_start, agents, \
    runs, errors, denials, escalations, retries, input_tokens, output_tokens";

/// Sessions with a run matching `filter`, most recently active first, at most `limit` rows:
/// one row per session, summed over its matching `agent_runs` rows (runs outside a session
/// are one row with a NULL `session_id`).
pub fn find_sessions_sql(filter: &RunFilter, limit: usize) -> String {
    format!(
        "SELECT session_id, min(user_id) AS user_id, min(start_time) AS first_start, \
         max(start_time) AS last_start, \
         array_to_string(array_sort(array_agg(DISTINCT agent_name)), ', ') AS agents, \
         count(*) AS runs, sum(errors) AS errors, sum(denials) AS denials, \
         sum(escalations) AS escalations, sum(retries) AS retries, \
         sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens \
         FROM agent_runs{} GROUP BY session_id \
         ORDER BY last_start DESC, session_id LIMIT {limit}",
        run_conditions(filter)
    )
}

/// ` WHERE ...` for `filter` over `agent_runs` (empty when nothing filters).
fn run_conditions(filter: &RunFilter) -> String {
    let mut conditions = Vec::new();
    for (column, value) in [
        ("agent_name", &filter.agent),
        ("outcome", &filter.outcome),
        ("session_id", &filter.session_id),
        ("user_id", &filter.user_id),
    ] {
        if let Some(value) = value {
            conditions.push(format!("{column} = {}", string_literal(value)));
        }
    }
    if let Some(text) = &filter.search {
        let text = string_literal(text);
        conditions.push(format!(
            "(strpos(session_id, {text}) > 0 OR strpos(user_id, {text}) > 0)"
        ));
    }
    if let Some(tool) = &filter.tool {
        conditions.push(format!(
            "trace_id IN (SELECT trace_id FROM tool_calls WHERE tool_name = {})",
            string_literal(tool)
        ));
    }
    if let Some(verdict) = &filter.verdict {
        conditions.push(format!(
            "trace_id IN (SELECT trace_id FROM decisions WHERE verdict = {})",
            string_literal(verdict)
        ));
    }
    if !filter.window.is_unbounded() {
        conditions.push(filter.window.predicate("start_time"));
    }
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

/// The questions of `docs/monitoring.md`, in the page's order.
pub const QUESTIONS: &[Question] = &[
    Question {
        name: "retry_rate_by_tool",
        title: "Retry rate by tool",
        description: "Per tool with at least one retry: executions, retries and the \
            attempt-level retry rate (share of executions that were retries); logical calls, \
            retried calls and the operation-level rate (share of calls that needed a retry).",
        window: Window::Column {
            table: "tool_calls",
            column: "start_time",
        },
        sql: r#"WITH operations AS (
    SELECT tool_name, trace_id, operation_span_id, count(*) AS attempts,
        count(*) FILTER (WHERE is_retry) AS retries
    FROM tool_calls
    GROUP BY tool_name, trace_id, operation_span_id
)
SELECT tool_name,
    sum(attempts) AS attempts,
    sum(retries) AS retries,
    round(sum(retries) * 1.0 / sum(attempts), 3) AS attempt_retry_rate,
    count(*) AS operations,
    count(*) FILTER (WHERE retries > 0) AS retried_operations,
    round(count(*) FILTER (WHERE retries > 0) * 1.0 / count(*), 3) AS operation_retry_rate
FROM operations
GROUP BY tool_name
HAVING sum(retries) > 0
ORDER BY attempt_retry_rate DESC, tool_name"#,
    },
    Question {
        name: "retries_by_source",
        title: "Tool retries by source",
        description: "Tool executions by retry source: explicit (the span says so), inferred \
            (the tool called again after it failed) or none.",
        window: Window::Column {
            table: "tool_calls",
            column: "start_time",
        },
        sql: r#"SELECT coalesce(retry_source, 'none') AS source, count(*) FROM tool_calls
GROUP BY 1 ORDER BY 1"#,
    },
    Question {
        name: "denials_by_policy_per_day",
        title: "Denials by policy per day",
        description: "Decisions with verdict deny per UTC day, decision kind and policy id.",
        window: Window::Column {
            table: "decisions",
            column: "time",
        },
        sql: r#"SELECT date_trunc('day', time) AS day, kind, policy_id, count(*) AS denials
FROM decisions
WHERE verdict = 'deny'
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3"#,
    },
    Question {
        name: "error_rate_by_agent",
        title: "Error rate by agent",
        description: "Per agent: top-level runs, runs that ended in error or were refused, the \
            run error rate, failed model and tool calls, and all calls.",
        window: Window::Column {
            table: "agent_runs",
            column: "start_time",
        },
        sql: r#"SELECT agent_name,
    count(*) AS runs,
    count(*) FILTER (WHERE outcome = 'error') AS failed,
    count(*) FILTER (WHERE outcome = 'refused') AS refused,
    round(avg(CASE WHEN outcome = 'error' THEN 1.0 ELSE 0.0 END), 3) AS error_rate,
    sum(errors) AS failed_calls,
    sum(llm_calls + tool_calls) AS calls
FROM agent_runs
GROUP BY agent_name
ORDER BY error_rate DESC, agent_name"#,
    },
    Question {
        name: "tokens_and_latency_by_model",
        title: "Tokens and p95 latency by model",
        description: "Per provider and requested model: model calls, input, output and \
            cache-read tokens, and the 95th percentile call latency in milliseconds.",
        window: Window::Column {
            table: "llm_calls",
            column: "start_time",
        },
        sql: r#"SELECT provider, request_model,
    count(*) AS calls,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cache_read_tokens) AS cache_read_tokens,
    round(percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns) / 1e6, 1) AS p95_ms
FROM llm_calls
GROUP BY provider, request_model
ORDER BY provider, request_model"#,
    },
    Question {
        name: "unguarded_destructive_tools",
        title: "Destructive tools that ran without an allow or an approval",
        description: "Calls of destructive tools that no decision allowed, denied or escalated \
            and no human approved: they ran unguarded.",
        window: Window::Column {
            table: "tool_calls",
            column: "start_time",
        },
        sql: r#"SELECT t.trace_id, t.span_id, t.agent_name, t.tool_name, t.verdict
FROM tool_calls t
LEFT JOIN decisions d ON d.trace_id = t.trace_id AND d.span_id = t.span_id
WHERE t.risk = 'destructive'
GROUP BY t.trace_id, t.span_id, t.agent_name, t.tool_name, t.verdict, t.start_time
HAVING NOT coalesce(
    bool_or(d.verdict IN ('allow', 'deny', 'escalate') OR d.approval_status = 'approved'),
    false
)
ORDER BY t.start_time"#,
    },
    Question {
        name: "top_sessions_by_tokens",
        title: "Top sessions by tokens",
        description: "The five sessions that used the most tokens (input plus output), with \
            their user and number of runs.",
        window: Window::Overlap {
            table: "sessions",
            first: "first_seen",
            last: "last_seen",
        },
        sql: r#"SELECT session_id, user_id, runs, input_tokens + output_tokens AS tokens, input_tokens,
    output_tokens
FROM sessions
ORDER BY tokens DESC NULLS LAST, session_id
LIMIT 5"#,
    },
    Question {
        name: "orphan_spans",
        title: "Spans whose parent is missing",
        description: "Spans whose parent span is not in their trace: broken context propagation, \
            a sampler that dropped the parent, or a parent not received yet.",
        window: Window::Traces,
        sql: r#"SELECT DISTINCT s.trace_id, s.span_id, s.span_name, s.parent_span_id, s.service_name
FROM spans s
WHERE s.parent_span_id IS NOT NULL
    AND NOT EXISTS (
        SELECT 1 FROM spans p WHERE p.trace_id = s.trace_id AND p.span_id = s.parent_span_id
    )
ORDER BY s.trace_id, s.span_id"#,
    },
    Question {
        name: "mcp_servers_without_client_trace",
        title: "MCP server spans that started their own trace",
        description: "MCP server spans with no parent (the client's trace context was not \
            propagated), with the client call they most likely served.",
        window: Window::Traces,
        sql: r#"SELECT DISTINCT server.trace_id, server.span_id, server.service_name,
    server.attributes['gen_ai.tool.name'] AS tool,
    client.trace_id AS client_trace_id, client.span_id AS client_span_id
FROM spans server
LEFT JOIN spans client
    ON client.span_kind = 'client'
    AND client.attributes['mcp.method.name'] = server.attributes['mcp.method.name']
    AND client.attributes['gen_ai.tool.name'] = server.attributes['gen_ai.tool.name']
    AND client.trace_id <> server.trace_id
    AND server.start_time BETWEEN client.start_time AND client.end_time
WHERE server.span_kind = 'server'
    AND server.attributes['mcp.method.name'] IS NOT NULL
    AND server.parent_span_id IS NULL
ORDER BY server.trace_id, server.span_id"#,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_names_are_unique_snake_case() {
        let mut names: Vec<&str> = QUESTIONS.iter().map(|question| question.name).collect();
        assert!(names.iter().all(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|character| character.is_ascii_lowercase() || character == '_')
        }));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), QUESTIONS.len());
        assert_eq!(
            question("orphan_spans").map(|q| q.title),
            Some("Spans whose parent is missing")
        );
        assert_eq!(question("nope"), None);
    }

    #[test]
    fn a_window_shadows_the_question_table_and_merges_with_its_own_ctes() {
        let window = TimeWindow {
            since_ns: Some(1_000_000_000),
            until_ns: Some(2_000_000_000),
        };
        let denials = question("denials_by_policy_per_day").unwrap();
        assert_eq!(denials.sql_within(TimeWindow::default()), denials.sql);
        assert_eq!(
            denials.sql_within(window),
            format!(
                "WITH decisions AS (SELECT * FROM decisions WHERE \
                 time >= '1970-01-01T00:00:01.000000000Z' AND \
                 time < '1970-01-01T00:00:02.000000000Z')\n{}",
                denials.sql
            )
        );
        let retries = question("retry_rate_by_tool").unwrap();
        let windowed = retries.sql_within(TimeWindow {
            since_ns: Some(0),
            until_ns: None,
        });
        assert!(windowed.starts_with(
            "WITH tool_calls AS (SELECT * FROM tool_calls WHERE \
             start_time >= '1970-01-01T00:00:00.000000000Z'),\noperations AS ("
        ));
        let sessions = question("top_sessions_by_tokens").unwrap();
        assert!(sessions.sql_within(window).contains(
            "WHERE last_seen >= '1970-01-01T00:00:01.000000000Z' AND \
             first_seen < '1970-01-01T00:00:02.000000000Z'"
        ));
    }

    #[test]
    fn string_literals_double_quotes_only() {
        assert_eq!(string_literal("it's"), "'it''s'");
        assert_eq!(string_literal(r"a\'b"), r"'a\''b'");
        assert_eq!(string_literal(""), "''");
    }

    #[test]
    fn run_filters_become_escaped_conditions() {
        assert_eq!(
            find_runs_sql(&RunFilter::default(), 11),
            format!(
                "SELECT {FIND_RUNS_COLUMNS} FROM agent_runs \
                 ORDER BY start_time DESC, trace_id, span_id LIMIT 11"
            )
        );
        let filter = RunFilter {
            agent: Some("x' OR '1'='1".to_owned()),
            tool: Some("search".to_owned()),
            verdict: Some("deny".to_owned()),
            window: TimeWindow {
                since_ns: Some(0),
                until_ns: None,
            },
            ..RunFilter::default()
        };
        let sql = find_runs_sql(&filter, 5);
        assert!(
            sql.contains(
                "WHERE agent_name = 'x'' OR ''1''=''1' AND trace_id IN \
                 (SELECT trace_id FROM tool_calls WHERE tool_name = 'search') AND trace_id IN \
                 (SELECT trace_id FROM decisions WHERE verdict = 'deny') AND \
                 start_time >= '1970-01-01T00:00:00.000000000Z' ORDER BY"
            ),
            "{sql}"
        );
    }
}
