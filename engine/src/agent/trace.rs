//! The agent facts of one trace: its logical spans' model calls, tool calls (with retries),
//! decisions and top-level runs.
//!
//! Everything here looks only at the logical spans of one trace (copies already dropped), so a
//! trace's facts do not depend on any other trace. Spans of the trace that carry a session of
//! their own, different from the trace's, are joined only with spans of their own session
//! (their parent, their run, their retries), as docs/sql.md says.

use std::collections::HashMap;

use super::AgentTable;
use super::decisions::{Approval, Decision, note_approval, span_decisions};
use super::spans::{Row, SpanRows};

/// `operation` values of model calls.
pub(crate) const MODEL_OPERATIONS: [&str; 4] =
    ["chat", "text_completion", "generate_content", "embeddings"];

/// Operations that start an agent run when no enclosing span has one of them.
pub(crate) const RUN_OPERATIONS: [&str; 3] = [
    "invoke_agent",
    "invoke_workflow",
    "handle_conversation_turn",
];

/// Attributes holding a tool call's arguments (or their content reference), in lookup order:
/// GenAI semconv, OpenInference, OpenLLMetry, Vercel AI.
const ARGUMENT_KEYS: [&str; 4] = [
    "gen_ai.tool.call.arguments",
    "input.value",
    "traceloop.entity.input",
    "ai.toolCall.args",
];

pub(crate) fn is_model_call(rows: &SpanRows, row: Row) -> bool {
    rows.operation(row)
        .is_some_and(|operation| MODEL_OPERATIONS.contains(&operation))
}

fn is_run_operation(rows: &SpanRows, row: Row) -> bool {
    rows.operation(row)
        .is_some_and(|operation| RUN_OPERATIONS.contains(&operation))
}

/// How a tool execution relates to earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetrySource {
    /// Not a retry.
    None,
    /// Marked by the instrumentation (`retry_attempt > 0` or an HTTP resend below it).
    Explicit,
    /// The same tool with the same arguments or call id, after that call failed.
    Inferred,
}

/// One tool execution.
#[derive(Debug)]
pub(crate) struct ToolCall {
    pub(crate) row: Row,
    pub(crate) attempt: i64,
    pub(crate) retry: RetrySource,
    /// The first attempt (`attempt` 0) this execution belongs to: itself, or the latest
    /// earlier first attempt of the same tool in the same session; `None` for a retry with no
    /// first attempt before it.
    pub(crate) operation: Option<Row>,
}

/// One decision with the span it gates and its approval.
#[derive(Debug)]
pub(crate) struct GatedDecision<'a> {
    pub(crate) row: Row,
    pub(crate) decision: Decision<'a>,
    pub(crate) approval: Option<Approval<'a>>,
}

/// One top-level run and what happened in it.
#[derive(Debug, Default)]
pub(crate) struct Run {
    pub(crate) llm_calls: i64,
    pub(crate) tool_calls: i64,
    pub(crate) errors: i64,
    pub(crate) retries: i64,
    pub(crate) denials: i64,
    pub(crate) escalations: i64,
    pub(crate) input_tokens: Option<i64>,
    pub(crate) output_tokens: Option<i64>,
    last_llm: Option<i64>,
    last_filtered_llm: Option<i64>,
    last_call: Option<i64>,
    last_decision: Option<i64>,
    last_denial: Option<i64>,
}

impl Run {
    /// `agent.outcome` when it is one of the three, else error status, else refused by a
    /// content filter or a final denial, else success.
    pub(crate) fn outcome(&self, declared: Option<&str>, failed: bool) -> &'static str {
        match declared {
            Some("success") => return "success",
            Some("error") => return "error",
            Some("refused") => return "refused",
            _ => {}
        }
        if failed {
            return "error";
        }
        if self.last_filtered_llm.is_some() && self.last_filtered_llm == self.last_llm {
            return "refused";
        }
        if let Some(denial) = self.last_denial
            && Some(denial) == self.last_decision
            && self.last_call.is_none_or(|call| call <= denial)
        {
            return "refused";
        }
        "success"
    }
}

fn add(total: &mut Option<i64>, value: Option<i64>) {
    if let Some(value) = value {
        *total = Some(total.unwrap_or(0).saturating_add(value));
    }
}

fn latest(slot: &mut Option<i64>, time: i64) {
    *slot = Some(slot.map_or(time, |current| current.max(time)));
}

/// The derived facts of one trace.
#[derive(Debug)]
pub(crate) struct TraceFacts<'a> {
    /// Logical spans of the trace.
    pub(crate) spans: Vec<Row>,
    /// Model-call spans, in trace order.
    pub(crate) llm_calls: Vec<Row>,
    /// Tool executions ordered by start time, then span id.
    pub(crate) tool_calls: Vec<ToolCall>,
    /// Decisions, span by span.
    pub(crate) decisions: Vec<GatedDecision<'a>>,
    /// Top-level runs with their totals.
    pub(crate) runs: Vec<(Row, Run)>,
    /// The top-level run each span descends from by parent links, when it does.
    owners: HashMap<Row, Row>,
    /// Agent name of each `invoke_agent` span, by (session, span id).
    agents: HashMap<(Option<&'a str>, &'a str), &'a str>,
}

impl<'a> TraceFacts<'a> {
    /// Derives the facts of one trace (`spans`: its logical spans). Decisions are only
    /// derived when `with_decisions` (they need the events).
    /// Only what `table` shows is derived: model calls always (they are cheap), tool calls for
    /// `tool_calls` and the runs, decisions for `decisions` and the runs, runs with their
    /// totals for `agent_runs` and `sessions`.
    pub(crate) fn derive(rows: &'a SpanRows, spans: Vec<Row>, table: AgentTable) -> Self {
        let with_runs = matches!(table, AgentTable::AgentRuns | AgentTable::Sessions);
        let with_tool_calls = with_runs || table == AgentTable::ToolCalls;
        let with_decisions = with_runs || table == AgentTable::Decisions;
        let mut agents: HashMap<(Option<&str>, &str), &str> = HashMap::new();
        for &row in &spans {
            if rows.operation(row) == Some("invoke_agent")
                && let Some(name) = rows.agent_name(row)
            {
                let slot = agents
                    .entry((rows.session_id(row), rows.span_id(row)))
                    .or_insert(name);
                // Two copies with different names (not copies, then): the larger, as max().
                if name > *slot {
                    *slot = name;
                }
            }
        }
        let llm_calls = spans
            .iter()
            .copied()
            .filter(|&row| is_model_call(rows, row))
            .collect();
        let run_rows = if with_tool_calls {
            top_level_runs(rows, &spans)
        } else {
            Vec::new()
        };
        let owners = run_owners(rows, &spans, &run_rows);
        let tool_calls = if with_tool_calls {
            tool_calls(rows, &spans, &run_rows, &owners)
        } else {
            Vec::new()
        };
        let decisions = if with_decisions {
            decisions(rows, &spans)
        } else {
            Vec::new()
        };
        let mut facts = TraceFacts {
            spans,
            llm_calls,
            tool_calls,
            decisions,
            runs: Vec::new(),
            owners,
            agents,
        };
        if with_runs {
            facts.runs = run_rows
                .into_iter()
                .map(|run| (run, facts.run_totals(rows, run)))
                .collect();
        }
        facts
    }

    /// The span's own agent name, else its parent's when the parent is an `invoke_agent` span.
    pub(crate) fn agent_name(&self, rows: &'a SpanRows, row: Row) -> Option<&'a str> {
        rows.agent_name(row).or_else(|| {
            let parent = rows.parent_span_id(row)?;
            self.agents.get(&(rows.session_id(row), parent)).copied()
        })
    }

    fn run_totals(&self, rows: &SpanRows, run: Row) -> Run {
        let session = rows.session_id(run);
        let (start, end) = (rows.start_time(run), rows.end_time(run));
        // A span of a run's subtree belongs to that run, whatever its clock says (spans from
        // other services are skewed); a span outside every run's subtree, to the runs whose
        // time range holds it.
        let inside = |row: Row, time: i64| match self.owners.get(&row) {
            Some(&owner) => owner == run,
            None => rows.session_id(row) == session && time >= start && time <= end,
        };
        let mut totals = Run::default();
        for &call in &self.llm_calls {
            let time = rows.start_time(call);
            if !inside(call, time) {
                continue;
            }
            totals.llm_calls += 1;
            if rows.is_error(call) {
                totals.errors += 1;
            }
            if rows.retry_attempt(call).is_some_and(|attempt| attempt > 0) {
                totals.retries += 1;
            }
            add(&mut totals.input_tokens, rows.input_tokens(call));
            add(&mut totals.output_tokens, rows.output_tokens(call));
            latest(&mut totals.last_llm, time);
            latest(&mut totals.last_call, time);
            if rows.has_finish_reason(call, "content_filter") {
                latest(&mut totals.last_filtered_llm, time);
            }
        }
        for call in &self.tool_calls {
            let time = rows.start_time(call.row);
            if !inside(call.row, time) {
                continue;
            }
            totals.tool_calls += 1;
            if rows.is_error(call.row) {
                totals.errors += 1;
            }
            if call.retry != RetrySource::None {
                totals.retries += 1;
            }
            latest(&mut totals.last_call, time);
        }
        for gated in &self.decisions {
            let time = gated.decision.time;
            if !inside(gated.row, time) {
                continue;
            }
            latest(&mut totals.last_decision, time);
            match gated.decision.verdict {
                Some("deny") => {
                    totals.denials += 1;
                    latest(&mut totals.last_denial, time);
                }
                Some("escalate") => totals.escalations += 1,
                _ => {}
            }
        }
        totals
    }
}

/// Agent, workflow and conversation-turn spans that no other such span encloses
/// (docs/sql.md, `agent_runs`), in start order.
fn top_level_runs(rows: &SpanRows, spans: &[Row]) -> Vec<Row> {
    let mut agent_spans: Vec<Row> = spans
        .iter()
        .copied()
        .filter(|&row| is_run_operation(rows, row))
        .collect();
    agent_spans.sort_by(|&a, &b| {
        (rows.session_id(a), rows.start_time(a))
            .cmp(&(rows.session_id(b), rows.start_time(b)))
            .then(rows.end_time(b).cmp(&rows.end_time(a)))
            .then(rows.span_id(a).cmp(rows.span_id(b)))
    });
    let agent_ids: std::collections::HashSet<(Option<&str>, &str)> = agent_spans
        .iter()
        .map(|&row| (rows.session_id(row), rows.span_id(row)))
        .collect();
    let mut runs = Vec::new();
    let mut earlier_end: Option<(Option<&str>, i64)> = None;
    for &row in &agent_spans {
        let session = rows.session_id(row);
        let before = earlier_end
            .filter(|(earlier_session, _)| *earlier_session == session)
            .map(|(_, end)| end);
        let top_level = match rows.parent_span_id(row) {
            None => true,
            Some(parent) => {
                !agent_ids.contains(&(session, parent))
                    && before.is_none_or(|end| end < rows.end_time(row))
            }
        };
        if top_level {
            runs.push(row);
        }
        let end = rows.end_time(row);
        earlier_end = Some((session, before.map_or(end, |before| before.max(end))));
    }
    runs.sort_by_key(|&row| (rows.start_time(row), rows.span_id(row)));
    runs
}

/// The top-level run each span descends from by parent links (itself for a run span), for
/// the spans below some run.
fn run_owners(rows: &SpanRows, spans: &[Row], runs: &[Row]) -> HashMap<Row, Row> {
    /// Longest parent chain followed (a cycle of parent ids ends there).
    const MAX_DEPTH: usize = 256;
    if runs.is_empty() {
        return HashMap::new();
    }
    let by_id: HashMap<(Option<&str>, &str), Row> = spans
        .iter()
        .map(|&row| ((rows.session_id(row), rows.span_id(row)), row))
        .collect();
    let run_set: std::collections::HashSet<Row> = runs.iter().copied().collect();
    let mut owners = HashMap::new();
    for &row in spans {
        let mut current = row;
        for _ in 0..MAX_DEPTH {
            if run_set.contains(&current) {
                owners.insert(row, current);
                break;
            }
            let Some(parent) = rows.parent_span_id(current) else {
                break;
            };
            match by_id.get(&(rows.session_id(current), parent)) {
                Some(&next) => current = next,
                None => break,
            }
        }
    }
    owners
}

/// The call's run: the one it descends from, else the first top-level run of its session
/// whose time range holds `time`.
fn run_of(
    rows: &SpanRows,
    runs: &[Row],
    owners: &HashMap<Row, Row>,
    row: Row,
    time: i64,
) -> Option<Row> {
    if let Some(&owner) = owners.get(&row) {
        return Some(owner);
    }
    let session = rows.session_id(row);
    runs.iter().copied().find(|&run| {
        rows.session_id(run) == session
            && rows.start_time(run) <= time
            && time <= rows.end_time(run)
    })
}

fn arguments(rows: &SpanRows, row: Row) -> Option<&str> {
    let attributes = rows.attributes(row);
    ARGUMENT_KEYS.iter().find_map(|key| attributes.get(key))
}

/// Tool executions with their attempts and retry sources (docs/sql.md, `tool_calls`).
fn tool_calls(
    rows: &SpanRows,
    spans: &[Row],
    runs: &[Row],
    owners: &HashMap<Row, Row>,
) -> Vec<ToolCall> {
    let mut calls: Vec<Row> = spans
        .iter()
        .copied()
        .filter(|&row| rows.operation(row) == Some("execute_tool"))
        .collect();
    if calls.is_empty() {
        return Vec::new();
    }
    calls.sort_by(|&a, &b| {
        rows.start_time(a)
            .cmp(&rows.start_time(b))
            .then(rows.span_id(a).cmp(rows.span_id(b)))
    });
    // Calls whose HTTP client resent the request: the parents of spans saying so.
    let call_ids: std::collections::HashSet<(Option<&str>, &str)> = calls
        .iter()
        .map(|&row| (rows.session_id(row), rows.span_id(row)))
        .collect();
    let resent: std::collections::HashSet<(Option<&str>, &str)> = spans
        .iter()
        .filter(|&&row| {
            rows.parent_span_id(row)
                .is_some_and(|parent| call_ids.contains(&(rows.session_id(row), parent)))
        })
        .filter(|&&row| {
            rows.attributes(row)
                .get("http.request.resend_count")
                .and_then(|count| count.trim().parse::<i64>().ok())
                .is_some_and(|count| count > 0)
        })
        .filter_map(|&row| Some((rows.session_id(row), rows.parent_span_id(row)?)))
        .collect();
    let call_runs: Vec<Option<Row>> = calls
        .iter()
        .map(|&row| run_of(rows, runs, owners, row, rows.start_time(row)))
        .collect();
    let call_arguments: Vec<Option<&str>> = calls.iter().map(|&row| arguments(rows, row)).collect();
    let mut out: Vec<ToolCall> = Vec::with_capacity(calls.len());
    let mut operations: HashMap<(Option<&str>, Option<&str>), Row> = HashMap::new();
    for (index, &row) in calls.iter().enumerate() {
        let explicit = rows.retry_attempt(row).is_some_and(|attempt| attempt > 0)
            || resent.contains(&(rows.session_id(row), rows.span_id(row)));
        let mut attempt = rows.retry_attempt(row);
        let mut inferred = false;
        if attempt.is_none() {
            let start = rows.start_time(row);
            let tool = rows.tool_name(row);
            let call_id = rows.tool_call_id(row);
            let args = call_arguments[index];
            let previous = (0..index)
                .rev()
                .map(|at| (at, &out[at]))
                .find(|(at, earlier)| {
                    let other = earlier.row;
                    call_runs[*at] == call_runs[index]
                        && rows.session_id(other) == rows.session_id(row)
                        && rows.tool_name(other) == tool
                        && ((call_id.is_some() && rows.tool_call_id(other) == call_id)
                            || (args.is_some() && call_arguments[*at] == args))
                });
            let previous = previous.map(|(_, earlier)| earlier);
            if let Some(previous) = previous
                && rows.is_error(previous.row)
                && rows.end_time(previous.row) <= start
            {
                inferred = true;
                attempt = Some(previous.attempt + 1);
            }
        }
        let attempt = attempt.unwrap_or(0);
        let key = (rows.session_id(row), rows.tool_name(row));
        if attempt == 0 {
            operations.insert(key, row);
        }
        out.push(ToolCall {
            row,
            operation: operations.get(&key).copied(),
            attempt,
            retry: if explicit {
                RetrySource::Explicit
            } else if inferred {
                RetrySource::Inferred
            } else {
                RetrySource::None
            },
        });
    }
    out
}

/// Every decision of the trace's spans with its approval.
fn decisions<'a>(rows: &'a SpanRows, spans: &[Row]) -> Vec<GatedDecision<'a>> {
    let mut approvals: HashMap<(Option<&str>, &str), Approval<'a>> = HashMap::new();
    let mut found = Vec::new();
    for &row in spans {
        let session = rows.session_id(row);
        let mut by_id = HashMap::new();
        for event in rows.events(row) {
            note_approval(&event, &mut by_id);
        }
        for (id, approval) in by_id {
            approvals
                .entry((session, id))
                .and_modify(|latest| {
                    if approval.time >= latest.time {
                        *latest = approval;
                    }
                })
                .or_insert(approval);
        }
        for decision in span_decisions(rows, row) {
            found.push(GatedDecision {
                row,
                decision,
                approval: None,
            });
        }
    }
    for gated in &mut found {
        if let Some(id) = gated.decision.decision_id {
            gated.approval = approvals.get(&(rows.session_id(gated.row), id)).copied();
        }
    }
    found
}
