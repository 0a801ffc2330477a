//! The agent views: `llm_calls`, `tool_calls`, `decisions`, `agent_runs` and `sessions`, SQL
//! views over `spans` registered in every [`SqlEngine`](crate::SqlEngine) session.
//!
//! Each view is plain SQL, planned once when the session is built and inlined into every query
//! that names it, so the read-only guard sees an ordinary query and the optimizer sees the
//! whole plan. `docs/sql.md` documents every column; this module keeps the definitions and
//! the reasoning behind their shape.
//!
//! # Pushdown
//!
//! Filters on `trace_id` and `session_id` must reach every scan of `spans` a view makes, not
//! stay above a join, window or aggregate. The definitions are written so that DataFusion can
//! move them down:
//! - every self-join of `spans` (the parent lookup, HTTP resends, approvals, runs with their
//!   calls) joins on `trace_id` **and** `session_id`, so a filter on either is inferred for
//!   both sides. The keys are compared with `IS NOT DISTINCT FROM` (all of them: DataFusion
//!   only turns them into hash-join keys when no plain `=` key is mixed in) so that spans
//!   without a session still match. Joining on `session_id` is exact because the engine
//!   gives every span of a trace the same session (propagation), unless a span carries a
//!   session of its own that differs from the trace's: its parent lookup then finds nothing;
//! - every window partitions by `trace_id, session_id` (plus its own keys), and every
//!   aggregate groups by them;
//! - event-borne signals come from `unnest(spans.events)` rather than from `span_events`, so
//!   the owning span's columns are at hand without another join.
//!
//! A `start_time` filter reaches the main scan of `llm_calls` only: the retry inference of
//! `tool_calls` and the run detection of `agent_runs` look at earlier spans of the same trace,
//! so DataFusion (rightly) keeps time filters above their windows, and the lookups they join
//! have no time key.

use std::sync::Arc;

use datafusion::catalog::view::ViewTable;
use datafusion::prelude::SessionContext;
use futures::FutureExt as _;

use crate::error::{Error, Result};

/// `gen_ai.operation.name` values of model calls.
const MODEL_OPERATIONS: &str = "('chat', 'text_completion', 'generate_content', 'embeddings')";

/// Operations that start an agent run when no enclosing span has one of them.
const RUN_OPERATIONS: &str = "('invoke_agent', 'invoke_workflow', 'handle_conversation_turn')";

/// `LEFT JOIN` bringing `parent.agent_name`: the agent name of the span's parent when the parent
/// is an `invoke_agent` span. Joined to a relation aliased `s` with `trace_id`, `session_id`
/// and `parent_span_id`. Grouped so that a span stored twice does not duplicate its children.
///
/// Every `IS NOT DISTINCT FROM` of the views is parenthesized: the SQL parser reads
/// `a IS NOT DISTINCT FROM b AND c` as `a IS NOT DISTINCT FROM (b AND c)`.
const PARENT_AGENT_JOIN: &str = "
LEFT JOIN (
    SELECT trace_id, session_id, span_id, max(agent_name) AS agent_name
    FROM spans
    WHERE operation = 'invoke_agent'
    GROUP BY trace_id, session_id, span_id
) parent
    ON (parent.trace_id IS NOT DISTINCT FROM s.trace_id)
    AND (parent.session_id IS NOT DISTINCT FROM s.session_id)
    AND (parent.span_id IS NOT DISTINCT FROM s.parent_span_id)";

/// A typed NULL string, so every branch of a decision has the same struct type.
const NULL_TEXT: &str = "arrow_cast(NULL, 'Utf8')";

/// One decision signal: when `condition` holds on a span (or event), it yields one decision
/// row with these fields (SQL expressions; `None` is a NULL).
struct Signal {
    condition: String,
    time: &'static str,
    kind: String,
    verdict: String,
    action: Option<String>,
    policy_id: Option<String>,
    risk: Option<String>,
    context_source: Option<String>,
    reasoning: Option<String>,
    decision_id: Option<String>,
}

impl Signal {
    /// `CASE WHEN condition THEN named_struct(...) END`: the decision, or NULL.
    fn to_sql(&self) -> String {
        let text = |value: &Option<String>| value.clone().unwrap_or_else(|| NULL_TEXT.to_owned());
        format!(
            "CASE WHEN {condition} THEN named_struct(\
             'time', {time}, 'kind', {kind}, 'verdict', {verdict}, 'action', {action}, \
             'policy_id', {policy_id}, 'risk', {risk}, 'context_source', {context_source}, \
             'reasoning', {reasoning}, 'decision_id', {decision_id}) END",
            condition = self.condition,
            time = self.time,
            kind = self.kind,
            verdict = self.verdict,
            action = text(&self.action),
            policy_id = text(&self.policy_id),
            risk = text(&self.risk),
            context_source = text(&self.context_source),
            reasoning = text(&self.reasoning),
            decision_id = text(&self.decision_id),
        )
    }
}

fn literal(text: &str) -> String {
    format!("'{text}'")
}

/// `value` when it is one of the five verdicts (compared exactly), else NULL: a value outside
/// the vocabulary gives no verdict, as in ingest's `decision_verdict`.
fn verdict(value: &str) -> String {
    format!("CASE WHEN {value} IN ('allow', 'deny', 'modify', 'warn', 'escalate') THEN {value} END")
}

/// The `agent.decision.*` attributes of `attributes` (a span's or an event's), as a decision.
fn agent_decision(condition: String, time: &'static str, attributes: &str) -> Signal {
    let key = |name: &str| Some(format!("{attributes}['agent.decision.{name}']"));
    Signal {
        condition,
        time,
        kind: format!("{attributes}['agent.decision.kind']"),
        verdict: verdict(&format!("{attributes}['agent.decision.verdict']")),
        action: key("action"),
        policy_id: key("policy.id"),
        risk: key("risk"),
        context_source: key("context_source"),
        reasoning: key("reasoning"),
        decision_id: key("id"),
    }
}

/// The foreign decision signals of conventions §5.3 E that may sit on a span or on any event:
/// guardrail and security verdicts (proposal #427), decision outcomes (#239), tool
/// dispositions (#457).
fn foreign_signals(time: &'static str, attributes: &str) -> Vec<Signal> {
    let key = |name: &str| format!("{attributes}['{name}']");
    let mut signals = Vec::new();
    for namespace in ["gen_ai.guardrail", "gen_ai.security"] {
        let value = key(&format!("{namespace}.verdict.type"));
        signals.push(Signal {
            condition: format!("{value} IS NOT NULL"),
            time,
            kind: literal("guardrail"),
            verdict: verdict(&value),
            action: Some(key(&format!("{namespace}.action.type"))),
            policy_id: Some(key(&format!("{namespace}.policy.id"))),
            risk: None,
            context_source: None,
            reasoning: None,
            decision_id: None,
        });
    }
    let outcome = key("gen_ai.agent.decision.outcome");
    signals.push(Signal {
        condition: format!("{outcome} IS NOT NULL"),
        time,
        kind: literal("policy"),
        verdict: format!(
            "CASE {outcome} WHEN 'allow' THEN 'allow' WHEN 'block' THEN 'deny' \
             WHEN 'review' THEN 'escalate' WHEN 'escalate' THEN 'escalate' \
             WHEN 'defer' THEN 'escalate' END"
        ),
        action: Some(format!("CASE WHEN {outcome} = 'defer' THEN 'defer' END")),
        policy_id: None,
        risk: None,
        context_source: None,
        reasoning: None,
        decision_id: Some(key("gen_ai.agent.decision.id")),
    });
    let disposition = key("gen_ai.agent.tool.disposition");
    signals.push(Signal {
        condition: format!("{disposition} IS NOT NULL"),
        time,
        kind: literal("policy"),
        verdict: format!(
            "CASE {disposition} WHEN 'allow' THEN 'allow' WHEN 'deny' THEN 'deny' \
             WHEN 'simulate' THEN 'modify' END"
        ),
        action: Some(format!(
            "CASE WHEN {disposition} = 'simulate' THEN 'simulate' END"
        )),
        policy_id: None,
        risk: Some(key("gen_ai.agent.tool.tier")),
        context_source: None,
        reasoning: None,
        decision_id: None,
    });
    signals
}

/// `agent.threat.detection.action` (proposal #165): ask -> escalate, block -> deny (action
/// block), warn -> warn, allow -> allow.
fn threat_detection(condition: String, time: &'static str, attributes: &str) -> Signal {
    let action = format!("{attributes}['agent.threat.detection.action']");
    Signal {
        condition: format!("{condition} AND {action} IS NOT NULL"),
        time,
        kind: literal("threat_detection"),
        verdict: format!(
            "CASE {action} WHEN 'ask' THEN 'escalate' WHEN 'block' THEN 'deny' \
             WHEN 'warn' THEN 'warn' WHEN 'allow' THEN 'allow' END"
        ),
        action: Some(format!("CASE WHEN {action} = 'block' THEN 'block' END")),
        policy_id: Some(format!(
            "coalesce({attributes}['agent.threat.detection.rule_id'], \
             {attributes}['agent.threat.detection.ruleset'])"
        )),
        risk: None,
        context_source: None,
        reasoning: None,
        decision_id: None,
    }
}

/// Decisions a span carries in its own attributes and status.
fn span_signals() -> Vec<Signal> {
    let mut signals = vec![agent_decision(
        "(attributes['agent.decision.verdict'] IS NOT NULL \
         OR attributes['agent.decision.id'] IS NOT NULL)"
            .to_owned(),
        "start_time",
        "attributes",
    )];
    signals.extend(foreign_signals("start_time", "attributes"));
    signals.push(threat_detection(
        "true".to_owned(),
        "start_time",
        "attributes",
    ));
    let guardrail = |condition: &str| Signal {
        condition: condition.to_owned(),
        time: "end_time",
        kind: literal("guardrail"),
        verdict: literal("deny"),
        action: None,
        policy_id: None,
        risk: None,
        context_source: None,
        reasoning: None,
        decision_id: None,
    };
    // An OpenInference guardrail span that failed, and a provider's content filter.
    signals.push(guardrail(
        "attributes['openinference.span.kind'] = 'GUARDRAIL' AND status_code = 'error'",
    ));
    signals.push(guardrail("array_has(finish_reasons, 'content_filter')"));
    signals
}

/// Decisions carried by one span event (`event` is the unnested struct).
fn event_signals() -> Vec<Signal> {
    let attributes = "event['attributes']";
    let mut signals = vec![agent_decision(
        "event['name'] = 'agent.decision'".to_owned(),
        "event['time']",
        attributes,
    )];
    signals.push(Signal {
        condition: "event['name'] = 'agent.policy.decision'".to_owned(),
        time: "event['time']",
        kind: format!("coalesce({attributes}['agent.decision.kind'], 'policy')"),
        verdict: verdict(&format!("{attributes}['agent.policy.decision']")),
        action: Some(format!("{attributes}['agent.decision.action']")),
        policy_id: Some(format!(
            "coalesce({attributes}['agent.policy.name'], {attributes}['agent.decision.policy.id'])"
        )),
        risk: Some(format!("{attributes}['agent.decision.risk']")),
        context_source: Some(format!("{attributes}['agent.decision.context_source']")),
        reasoning: Some(format!("{attributes}['agent.decision.reasoning']")),
        decision_id: Some(format!("{attributes}['agent.decision.id']")),
    });
    signals.extend(foreign_signals("event['time']", attributes));
    signals.push(threat_detection(
        "event['name'] = 'agent.threat.detection'".to_owned(),
        "event['time']",
        attributes,
    ));
    signals
}

/// `unnest(make_array(<signal or NULL>, ...)) AS decision`, and the condition that any signal
/// is present (to skip the others early).
fn decision_array(signals: &[Signal]) -> (String, String) {
    let array = signals
        .iter()
        .map(Signal::to_sql)
        .collect::<Vec<_>>()
        .join(",\n            ");
    let any = signals
        .iter()
        .map(|signal| format!("({})", signal.condition))
        .collect::<Vec<_>>()
        .join("\n        OR ");
    (
        format!("unnest(make_array(\n            {array}\n        )) AS decision"),
        any,
    )
}

fn llm_calls_sql() -> String {
    format!(
        "SELECT s.trace_id, s.span_id, s.session_id, s.conversation_id,
    coalesce(s.agent_name, parent.agent_name) AS agent_name,
    s.provider, s.request_model, s.response_model, s.start_time, s.duration_ns,
    s.input_tokens, s.output_tokens, s.cache_read_tokens, s.reasoning_tokens,
    s.finish_reasons, s.status_code, s.error_type
FROM spans s
{PARENT_AGENT_JOIN}
WHERE s.operation IN {MODEL_OPERATIONS}"
    )
}

fn tool_calls_sql() -> String {
    format!(
        "WITH calls AS (
    SELECT s.trace_id, s.span_id, s.session_id, s.conversation_id,
        coalesce(s.agent_name, parent.agent_name) AS agent_name,
        s.tool_name, s.start_time, s.end_time, s.duration_ns, s.status_code, s.error_type,
        s.retry_attempt, s.tool_risk, s.decision_verdict,
        resent.span_id IS NOT NULL AS http_resent
    FROM spans s
    {PARENT_AGENT_JOIN}
    LEFT JOIN (
        SELECT DISTINCT trace_id, session_id, parent_span_id AS span_id
        FROM spans
        WHERE parent_span_id IS NOT NULL
            AND try_cast(attributes['http.request.resend_count'] AS BIGINT) > 0
    ) resent
        ON (resent.trace_id IS NOT DISTINCT FROM s.trace_id)
        AND (resent.session_id IS NOT DISTINCT FROM s.session_id)
        AND (resent.span_id IS NOT DISTINCT FROM s.span_id)
    WHERE s.operation = 'execute_tool'
),
previous AS (
    SELECT *,
        lag(status_code) OVER same_tool AS previous_status,
        lag(end_time) OVER same_tool AS previous_end
    FROM calls
    WINDOW same_tool AS (
        PARTITION BY trace_id, session_id, tool_name ORDER BY start_time, span_id
    )
),
marked AS (
    SELECT *,
        coalesce(
            retry_attempt IS NULL AND previous_status = 'error' AND previous_end <= start_time,
            false
        ) AS inferred
    FROM previous
),
chained AS (
    SELECT *,
        sum(CASE WHEN inferred THEN 0 ELSE 1 END) OVER (
            PARTITION BY trace_id, session_id, tool_name ORDER BY start_time, span_id
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS chain
    FROM marked
),
numbered AS (
    SELECT *,
        first_value(coalesce(retry_attempt, 0)) OVER same_chain
            + arrow_cast(row_number() OVER same_chain, 'Int64') - 1 AS chain_attempt
    FROM chained
    WINDOW same_chain AS (
        PARTITION BY trace_id, session_id, tool_name, chain ORDER BY start_time, span_id
    )
)
SELECT trace_id, span_id, session_id, conversation_id, agent_name, tool_name, start_time,
    duration_ns, status_code, error_type,
    coalesce(retry_attempt, chain_attempt) AS attempt,
    coalesce(retry_attempt > 0, false) OR http_resent OR inferred AS is_retry,
    CASE
        WHEN coalesce(retry_attempt > 0, false) OR http_resent THEN 'explicit'
        WHEN inferred THEN 'inferred'
    END AS retry_source,
    tool_risk AS risk,
    decision_verdict AS verdict
FROM numbered"
    )
}

fn decisions_sql() -> String {
    let (span_array, span_any) = decision_array(&span_signals());
    let (event_array, event_any) = decision_array(&event_signals());
    format!(
        "WITH found AS (
    SELECT trace_id, span_id, parent_span_id, session_id, conversation_id, agent_name,
        tool_name,
        {span_array}
    FROM spans
    WHERE {span_any}
    UNION ALL
    SELECT trace_id, span_id, parent_span_id, session_id, conversation_id, agent_name,
        tool_name,
        {event_array}
    FROM (
        SELECT trace_id, span_id, parent_span_id, session_id, conversation_id, agent_name,
            tool_name, unnest(events) AS event
        FROM spans
    ) events
    WHERE {event_any}
),
approvals AS (
    SELECT trace_id, session_id, decision_id,
        last_value(status ORDER BY time) AS status,
        max(time) AS resolved_at
    FROM (
        SELECT trace_id, session_id, event['time'] AS time,
            event['attributes']['agent.approval.decision_id'] AS decision_id,
            event['attributes']['agent.approval.status'] AS status
        FROM (SELECT trace_id, session_id, unnest(events) AS event FROM spans) events
        WHERE event['name'] = 'agent.approval'
    ) approval_events
    WHERE decision_id IS NOT NULL
    GROUP BY trace_id, session_id, decision_id
)
SELECT s.decision['time'] AS time, s.trace_id, s.span_id, s.session_id, s.conversation_id,
    coalesce(s.agent_name, parent.agent_name) AS agent_name,
    s.tool_name,
    s.decision['kind'] AS kind,
    s.decision['verdict'] AS verdict,
    s.decision['action'] AS action,
    s.decision['policy_id'] AS policy_id,
    s.decision['risk'] AS risk,
    s.decision['context_source'] AS context_source,
    s.decision['reasoning'] AS reasoning,
    s.decision['decision_id'] AS decision_id,
    approval.status AS approval_status,
    (arrow_cast(approval.resolved_at, 'Int64') - arrow_cast(s.decision['time'], 'Int64'))
        / 1000000 AS approval_latency_ms
FROM found s
{PARENT_AGENT_JOIN}
LEFT JOIN approvals approval
    ON (approval.trace_id IS NOT DISTINCT FROM s.trace_id)
    AND (approval.session_id IS NOT DISTINCT FROM s.session_id)
    AND (approval.decision_id IS NOT DISTINCT FROM s.decision['decision_id'])
WHERE s.decision IS NOT NULL"
    )
}

fn agent_runs_sql() -> String {
    format!(
        "WITH agent_spans AS (
    SELECT trace_id, span_id, parent_span_id, session_id, conversation_id, user_id,
        coalesce(agent_name, workflow_name) AS agent_name, start_time, end_time, duration_ns,
        status_code, attributes['agent.outcome'] AS declared_outcome
    FROM spans
    WHERE operation IN {RUN_OPERATIONS}
),
enclosed AS (
    SELECT *,
        max(end_time) OVER (
            PARTITION BY trace_id, session_id ORDER BY start_time, end_time DESC, span_id
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ) AS earlier_end
    FROM agent_spans
),
runs AS (
    SELECT s.*
    FROM enclosed s
    LEFT JOIN (SELECT DISTINCT trace_id, session_id, span_id FROM agent_spans) agent_parent
        ON (agent_parent.trace_id IS NOT DISTINCT FROM s.trace_id)
        AND (agent_parent.session_id IS NOT DISTINCT FROM s.session_id)
        AND (agent_parent.span_id IS NOT DISTINCT FROM s.parent_span_id)
    WHERE s.parent_span_id IS NULL
        OR (agent_parent.span_id IS NULL
            AND (s.earlier_end IS NULL OR s.earlier_end < s.end_time))
),
facts AS (
    SELECT trace_id, session_id, start_time AS time, 'llm' AS fact, status_code,
        coalesce(retry_attempt > 0, false) AS is_retry,
        coalesce(array_has(finish_reasons, 'content_filter'), false) AS content_filtered,
        arrow_cast(NULL, 'Utf8') AS verdict, input_tokens, output_tokens
    FROM spans
    WHERE operation IN {MODEL_OPERATIONS}
    UNION ALL
    SELECT trace_id, session_id, start_time, 'tool', status_code, is_retry, false,
        arrow_cast(NULL, 'Utf8'), arrow_cast(NULL, 'Int64'), arrow_cast(NULL, 'Int64')
    FROM tool_calls
    UNION ALL
    SELECT trace_id, session_id, time, 'decision', arrow_cast(NULL, 'Utf8'), false, false,
        verdict, arrow_cast(NULL, 'Int64'), arrow_cast(NULL, 'Int64')
    FROM decisions
),
totals AS (
    SELECT r.trace_id, r.span_id, r.session_id, r.conversation_id, r.user_id, r.agent_name,
        r.start_time, r.duration_ns, r.status_code, r.declared_outcome,
        count(f.fact) FILTER (WHERE f.fact = 'llm') AS llm_calls,
        count(f.fact) FILTER (WHERE f.fact = 'tool') AS tool_calls,
        count(f.fact) FILTER (WHERE f.fact IN ('llm', 'tool') AND f.status_code = 'error')
            AS errors,
        count(f.fact) FILTER (WHERE f.is_retry) AS retries,
        count(f.fact) FILTER (WHERE f.verdict = 'deny') AS denials,
        count(f.fact) FILTER (WHERE f.verdict = 'escalate') AS escalations,
        sum(f.input_tokens) AS input_tokens,
        sum(f.output_tokens) AS output_tokens,
        max(f.time) FILTER (WHERE f.fact = 'llm') AS last_llm,
        max(f.time) FILTER (WHERE f.fact = 'llm' AND f.content_filtered) AS last_filtered_llm,
        max(f.time) FILTER (WHERE f.fact IN ('llm', 'tool')) AS last_call,
        max(f.time) FILTER (WHERE f.fact = 'decision') AS last_decision,
        max(f.time) FILTER (WHERE f.verdict = 'deny') AS last_denial
    FROM runs r
    LEFT JOIN facts f
        ON (f.trace_id IS NOT DISTINCT FROM r.trace_id)
        AND (f.session_id IS NOT DISTINCT FROM r.session_id)
        AND f.time >= r.start_time
        AND f.time <= r.end_time
    GROUP BY r.trace_id, r.span_id, r.session_id, r.conversation_id, r.user_id, r.agent_name,
        r.start_time, r.duration_ns, r.status_code, r.declared_outcome
)
SELECT trace_id, span_id, session_id, conversation_id, user_id, agent_name, start_time,
    duration_ns,
    CASE
        WHEN declared_outcome IN ('success', 'error', 'refused') THEN declared_outcome
        WHEN status_code = 'error' THEN 'error'
        WHEN last_filtered_llm IS NOT NULL AND last_filtered_llm = last_llm THEN 'refused'
        WHEN last_denial IS NOT NULL AND last_denial = last_decision
            AND (last_call IS NULL OR last_call <= last_denial) THEN 'refused'
        ELSE 'success'
    END AS outcome,
    llm_calls, tool_calls, errors, retries, denials, escalations, input_tokens, output_tokens
FROM totals"
    )
}

fn sessions_sql() -> String {
    format!(
        "WITH span_totals AS (
    SELECT session_id, min(user_id) AS user_id, min(start_time) AS first_seen,
        max(end_time) AS last_seen, count(*) AS spans,
        count(DISTINCT conversation_id) AS conversations,
        count(*) FILTER (
            WHERE status_code = 'error'
                AND (operation IN {MODEL_OPERATIONS} OR operation = 'execute_tool')
        ) AS errors,
        sum(input_tokens) FILTER (WHERE operation IN {MODEL_OPERATIONS}) AS input_tokens,
        sum(output_tokens) FILTER (WHERE operation IN {MODEL_OPERATIONS}) AS output_tokens
    FROM spans
    WHERE session_id IS NOT NULL
    GROUP BY session_id
),
run_totals AS (
    SELECT session_id, count(*) AS runs
    FROM agent_runs
    WHERE session_id IS NOT NULL
    GROUP BY session_id
),
denial_totals AS (
    SELECT session_id, count(*) AS denials
    FROM decisions
    WHERE session_id IS NOT NULL AND verdict = 'deny'
    GROUP BY session_id
)
SELECT t.session_id, t.user_id, t.first_seen, t.last_seen,
    coalesce(r.runs, 0) AS runs, t.conversations, t.spans, t.errors,
    coalesce(d.denials, 0) AS denials, t.input_tokens, t.output_tokens
FROM span_totals t
LEFT JOIN run_totals r ON r.session_id = t.session_id
LEFT JOIN denial_totals d ON d.session_id = t.session_id"
    )
}

/// The views in registration order (a view may use the ones before it).
fn definitions() -> [(&'static str, String); 5] {
    [
        ("llm_calls", llm_calls_sql()),
        ("tool_calls", tool_calls_sql()),
        ("decisions", decisions_sql()),
        ("agent_runs", agent_runs_sql()),
        ("sessions", sessions_sql()),
    ]
}

/// Plans every view and registers it in `context`, after the tables it reads.
pub(crate) fn register(context: &SessionContext) -> Result<()> {
    for (name, sql) in definitions() {
        let state = context.state();
        // Planning only resolves tables of the in-memory catalog, whose lookups complete at
        // once; a pending future would mean a catalog that does I/O, which this session
        // does not have.
        let plan = match state.create_logical_plan(&sql).now_or_never() {
            Some(plan) => plan.map_err(|error| view_error(name, &error.strip_backtrace()))?,
            None => return Err(view_error(name, "planning did not complete synchronously")),
        };
        context
            .register_table(name, Arc::new(ViewTable::new(plan, Some(sql))))
            .map_err(Error::from_datafusion)?;
    }
    Ok(())
}

/// A view that does not plan is a bug in this module, not the caller's.
fn view_error(name: &str, message: &str) -> Error {
    Error::Internal(format!("view {name} does not plan: {message}"))
}
