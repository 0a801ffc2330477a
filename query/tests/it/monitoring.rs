//! The numbers of `tests/slt/monitoring/monitoring.slt`, recomputed without SQL from the OTLP
//! messages the monitoring fixture is built from, and compared with the views.
//!
//! The recomputation follows the written rules (docs/sql.md, conventions §5.3) on the raw
//! attributes and events, with its own code: decisions are read from every signal, runs are
//! found by walking each span's ancestors to the root (the views use the parent and time
//! enclosure instead), retries by sorting each trace's calls of a tool.

use std::collections::{BTreeMap, BTreeSet};

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Otlp;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde_json::{Value, json};

use crate::monitoring_fixture::{MonitoringFixture, all_requests};

const DAY: u64 = 86_400_000_000_000;
const MODEL_OPERATIONS: [&str; 4] = ["chat", "text_completion", "generate_content", "embeddings"];
const RUN_OPERATIONS: [&str; 3] = [
    "invoke_agent",
    "invoke_workflow",
    "handle_conversation_turn",
];

/// An attribute value, as far as these checks need it.
#[derive(Debug, Clone, PartialEq)]
enum Attribute {
    Text(String),
    Int(i64),
    Texts(Vec<String>),
    Other,
}

type Attributes = BTreeMap<String, Attribute>;

fn attributes(list: &[KeyValue]) -> Attributes {
    let mut out = Attributes::new();
    for pair in list {
        let value = match pair.value.as_ref().and_then(|value| value.value.as_ref()) {
            Some(Otlp::StringValue(text)) => Attribute::Text(text.clone()),
            Some(Otlp::IntValue(number)) => Attribute::Int(*number),
            Some(Otlp::ArrayValue(array)) => Attribute::Texts(
                array
                    .values
                    .iter()
                    .filter_map(|value| match &value.value {
                        Some(Otlp::StringValue(text)) => Some(text.clone()),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => Attribute::Other,
        };
        // First value wins, as in ingest.
        out.entry(pair.key.clone()).or_insert(value);
    }
    out
}

fn text<'a>(attributes: &'a Attributes, key: &str) -> Option<&'a str> {
    match attributes.get(key) {
        Some(Attribute::Text(text)) if !text.is_empty() => Some(text),
        _ => None,
    }
}

fn int(attributes: &Attributes, key: &str) -> Option<i64> {
    match attributes.get(key) {
        Some(Attribute::Int(number)) => Some(*number),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[derive(Debug)]
struct Event {
    time: u64,
    name: String,
    attributes: Attributes,
}

/// One span of the fixture, flattened out of its request.
#[derive(Debug)]
struct FlatSpan {
    trace: String,
    span: String,
    parent: Option<String>,
    start: u64,
    end: u64,
    failed: bool,
    attributes: Attributes,
    events: Vec<Event>,
}

impl FlatSpan {
    fn operation(&self) -> Option<&str> {
        text(&self.attributes, "gen_ai.operation.name")
    }

    fn is_model_call(&self) -> bool {
        self.operation()
            .is_some_and(|operation| MODEL_OPERATIONS.contains(&operation))
    }
}

fn flat_spans() -> Vec<FlatSpan> {
    let mut out = Vec::new();
    for request in all_requests() {
        for resource_spans in &request.resource_spans {
            for scope_spans in &resource_spans.scope_spans {
                for span in &scope_spans.spans {
                    out.push(FlatSpan {
                        trace: hex(&span.trace_id),
                        span: hex(&span.span_id),
                        parent: (!span.parent_span_id.is_empty())
                            .then(|| hex(&span.parent_span_id)),
                        start: span.start_time_unix_nano,
                        end: span.end_time_unix_nano,
                        failed: span
                            .status
                            .as_ref()
                            .is_some_and(|status| status.code == StatusCode::Error as i32),
                        attributes: attributes(&span.attributes),
                        events: span
                            .events
                            .iter()
                            .map(|event| Event {
                                time: event.time_unix_nano,
                                name: event.name.clone(),
                                attributes: attributes(&event.attributes),
                            })
                            .collect(),
                    });
                }
            }
        }
    }
    out
}

/// One decision, read from the raw signals.
#[derive(Debug, Clone)]
struct Decision {
    trace: String,
    span: String,
    time: u64,
    kind: Option<String>,
    verdict: Option<String>,
    policy: Option<String>,
    risk: Option<String>,
    id: Option<String>,
}

fn owned(value: Option<&str>) -> Option<String> {
    value.map(str::to_owned)
}

/// Decisions of the signals that may sit on a span or on any event.
fn foreign_decisions(
    attributes: &Attributes,
    time: u64,
    make: &dyn Fn(Decision) -> Decision,
) -> Vec<Decision> {
    let mut out = Vec::new();
    let blank = Decision {
        trace: String::new(),
        span: String::new(),
        time,
        kind: None,
        verdict: None,
        policy: None,
        risk: None,
        id: None,
    };
    for namespace in ["gen_ai.guardrail", "gen_ai.security"] {
        if let Some(verdict) = text(attributes, &format!("{namespace}.verdict.type")) {
            out.push(make(Decision {
                kind: Some("guardrail".into()),
                verdict: Some(verdict.into()),
                policy: owned(text(attributes, &format!("{namespace}.policy.id"))),
                ..blank.clone()
            }));
        }
    }
    if let Some(outcome) = text(attributes, "gen_ai.agent.decision.outcome") {
        let verdict = match outcome {
            "allow" => Some("allow"),
            "block" => Some("deny"),
            "review" | "escalate" | "defer" => Some("escalate"),
            _ => None,
        };
        out.push(make(Decision {
            kind: Some("policy".into()),
            verdict: owned(verdict),
            id: owned(text(attributes, "gen_ai.agent.decision.id")),
            ..blank.clone()
        }));
    }
    if let Some(disposition) = text(attributes, "gen_ai.agent.tool.disposition") {
        let verdict = match disposition {
            "allow" => Some("allow"),
            "deny" => Some("deny"),
            "simulate" => Some("modify"),
            _ => None,
        };
        out.push(make(Decision {
            kind: Some("policy".into()),
            verdict: owned(verdict),
            risk: owned(text(attributes, "gen_ai.agent.tool.tier")),
            ..blank.clone()
        }));
    }
    out
}

fn threat_decision(attributes: &Attributes, time: u64) -> Option<Decision> {
    let action = text(attributes, "agent.threat.detection.action")?;
    let verdict = match action {
        "ask" => Some("escalate"),
        "block" => Some("deny"),
        "warn" => Some("warn"),
        "allow" => Some("allow"),
        _ => None,
    };
    Some(Decision {
        trace: String::new(),
        span: String::new(),
        time,
        kind: Some("threat_detection".into()),
        verdict: owned(verdict),
        policy: owned(
            text(attributes, "agent.threat.detection.rule_id")
                .or_else(|| text(attributes, "agent.threat.detection.ruleset")),
        ),
        risk: None,
        id: None,
    })
}

fn agent_decision(attributes: &Attributes, time: u64) -> Decision {
    let key = |name: &str| owned(text(attributes, &format!("agent.decision.{name}")));
    Decision {
        trace: String::new(),
        span: String::new(),
        time,
        kind: key("kind"),
        verdict: key("verdict"),
        policy: key("policy.id"),
        risk: key("risk"),
        id: key("id"),
    }
}

/// Every decision a span carries, in no particular order: the signals of its attributes and
/// events, one decision recorded in several forms counted once (conventions §6, "One decision,
/// one row": same id, or no ids and the same kind, policy and verdict).
fn decisions(span: &FlatSpan) -> Vec<Decision> {
    let (signals, on_span) = signals(span);
    let mut merged: Vec<(Decision, bool)> = Vec::new();
    for (index, signal) in signals.into_iter().enumerate() {
        let event_form = index >= on_span;
        let same = |kept: &Decision| match (&kept.id, &signal.id) {
            (Some(a), Some(b)) => a == b,
            (None, None) => {
                (&kept.kind, &kept.policy, &kept.verdict)
                    == (&signal.kind, &signal.policy, &signal.verdict)
            }
            _ => false,
        };
        match merged.iter_mut().find(|(kept, _)| same(kept)) {
            Some((kept, has_event)) => {
                if event_form && !*has_event {
                    kept.time = signal.time;
                    *has_event = true;
                }
                kept.kind = kept.kind.take().or(signal.kind);
                kept.verdict = kept.verdict.take().or(signal.verdict);
                kept.policy = kept.policy.take().or(signal.policy);
                kept.risk = kept.risk.take().or(signal.risk);
            }
            None => merged.push((signal, event_form)),
        }
    }
    merged.into_iter().map(|(decision, _)| decision).collect()
}

/// Every decision signal of a span, span-borne ones first, and how many those are.
fn signals(span: &FlatSpan) -> (Vec<Decision>, usize) {
    let mut found = Vec::new();
    let attributes = &span.attributes;
    if text(attributes, "agent.decision.verdict").is_some()
        || text(attributes, "agent.decision.id").is_some()
    {
        found.push(agent_decision(attributes, span.start));
    }
    found.extend(foreign_decisions(attributes, span.start, &|decision| {
        decision
    }));
    found.extend(threat_decision(attributes, span.start));
    let deny = |time| Decision {
        trace: String::new(),
        span: String::new(),
        time,
        kind: Some("guardrail".into()),
        verdict: Some("deny".into()),
        policy: None,
        risk: None,
        id: None,
    };
    if text(attributes, "openinference.span.kind") == Some("GUARDRAIL") && span.failed {
        found.push(deny(span.end));
    }
    if let Some(Attribute::Texts(reasons)) = attributes.get("gen_ai.response.finish_reasons")
        && reasons.iter().any(|reason| reason == "content_filter")
    {
        found.push(deny(span.end));
    }
    let on_span = found.len();
    for event in &span.events {
        let attributes = &event.attributes;
        match event.name.as_str() {
            "agent.decision" => found.push(agent_decision(attributes, event.time)),
            "agent.policy.decision" => found.push(Decision {
                kind: Some(
                    text(attributes, "agent.decision.kind")
                        .unwrap_or("policy")
                        .to_owned(),
                ),
                verdict: owned(text(attributes, "agent.policy.decision")),
                policy: owned(
                    text(attributes, "agent.policy.name")
                        .or_else(|| text(attributes, "agent.decision.policy.id")),
                ),
                ..agent_decision(attributes, event.time)
            }),
            "agent.threat.detection" => found.extend(threat_decision(attributes, event.time)),
            _ => {}
        }
        found.extend(foreign_decisions(attributes, event.time, &|decision| {
            decision
        }));
    }
    for decision in &mut found {
        decision.trace = span.trace.clone();
        decision.span = span.span.clone();
    }
    (found, on_span)
}

fn rank(verdict: &str) -> Option<u8> {
    ["allow", "warn", "modify", "escalate", "deny"]
        .iter()
        .position(|known| *known == verdict)
        .map(|position| position as u8)
}

/// Latest approval status per (trace, decision id).
fn approvals(spans: &[FlatSpan]) -> BTreeMap<(String, String), String> {
    let mut latest: BTreeMap<(String, String), (u64, String)> = BTreeMap::new();
    for span in spans {
        for event in span
            .events
            .iter()
            .filter(|event| event.name == "agent.approval")
        {
            let (Some(id), Some(status)) = (
                text(&event.attributes, "agent.approval.decision_id"),
                text(&event.attributes, "agent.approval.status"),
            ) else {
                continue;
            };
            let entry = latest
                .entry((span.trace.clone(), id.to_owned()))
                .or_insert((event.time, status.to_owned()));
            if event.time >= entry.0 {
                *entry = (event.time, status.to_owned());
            }
        }
    }
    latest
        .into_iter()
        .map(|(key, (_, status))| (key, status))
        .collect()
}

/// One execution of a tool, with its retry facts.
#[derive(Debug)]
struct ToolRun<'a> {
    span: &'a FlatSpan,
    attempt: i64,
    is_retry: bool,
}

/// Tool calls with attempt numbers and retry flags, per the rules of docs/sql.md: explicit
/// (`agent.retry.attempt > 0` or an HTTP resend below the call), or inferred: no attempt of its
/// own, and the latest earlier call of the same tool in the same run with the same call id or
/// the same arguments failed and ended before this one started.
fn tool_runs(spans: &[FlatSpan]) -> Vec<ToolRun<'_>> {
    let resent: BTreeSet<(&str, &str)> = spans
        .iter()
        .filter(|span| int(&span.attributes, "http.request.resend_count").unwrap_or(0) > 0)
        .filter_map(|span| Some((span.trace.as_str(), span.parent.as_deref()?)))
        .collect();
    let by_id: BTreeMap<(&str, &str), &FlatSpan> = spans
        .iter()
        .map(|span| ((span.trace.as_str(), span.span.as_str()), span))
        .collect();
    // The run of a call: its outermost agent or workflow ancestor (by parent links).
    let run_of = |call: &FlatSpan| -> Option<String> {
        let mut run = None;
        let mut ancestor = call.parent.as_deref();
        while let Some(parent) = ancestor.and_then(|id| by_id.get(&(call.trace.as_str(), id))) {
            if parent
                .operation()
                .is_some_and(|op| RUN_OPERATIONS.contains(&op))
            {
                run = Some(parent.span.clone());
            }
            ancestor = parent.parent.as_deref();
        }
        run
    };
    // (trace, tool, run) -> calls
    type CallKey<'a> = (&'a str, Option<&'a str>, Option<String>);
    let mut by_tool: BTreeMap<CallKey<'_>, Vec<&FlatSpan>> = BTreeMap::new();
    for span in spans
        .iter()
        .filter(|span| span.operation() == Some("execute_tool"))
    {
        by_tool
            .entry((
                span.trace.as_str(),
                text(&span.attributes, "gen_ai.tool.name"),
                run_of(span),
            ))
            .or_default()
            .push(span);
    }
    let same_call = |a: &FlatSpan, b: &FlatSpan| {
        let id = |span: &FlatSpan| text(&span.attributes, "gen_ai.tool.call.id").map(str::to_owned);
        let args = |span: &FlatSpan| {
            text(&span.attributes, "gen_ai.tool.call.arguments").map(str::to_owned)
        };
        (id(a).is_some() && id(a) == id(b)) || (args(a).is_some() && args(a) == args(b))
    };
    let mut out = Vec::new();
    for calls in by_tool.values_mut() {
        calls.sort_by(|a, b| (a.start, &a.span).cmp(&(b.start, &b.span)));
        let mut earlier: Vec<(&FlatSpan, i64)> = Vec::new();
        for call in calls.iter() {
            let explicit = int(&call.attributes, "agent.retry.attempt");
            let previous = earlier
                .iter()
                .rev()
                .find(|(before, _)| same_call(before, call))
                .copied();
            let inferred = explicit.is_none()
                && previous.is_some_and(|(before, _)| before.failed && before.end <= call.start);
            let attempt = match (explicit, previous) {
                (Some(attempt), _) => attempt,
                (None, Some((_, before))) if inferred => before + 1,
                (None, _) => 0,
            };
            let http = resent.contains(&(call.trace.as_str(), call.span.as_str()));
            out.push(ToolRun {
                span: call,
                attempt,
                is_retry: explicit.unwrap_or(0) > 0 || http || inferred,
            });
            earlier.push((call, attempt));
        }
    }
    out
}

async fn rows(fixture: &MonitoringFixture, sql: &str) -> Vec<Value> {
    let output = match fixture.sql.execute(sql).await {
        Ok(output) => output,
        Err(error) => panic!("{sql}: {error}"),
    };
    match query::format::to_json(&output)["rows"].take() {
        Value::Array(rows) => rows,
        other => panic!("rows are not an array: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_and_latency_by_model_match_the_otlp() {
    let spans = flat_spans();
    #[derive(Default)]
    struct ModelTotals {
        calls: i64,
        input: i64,
        output: i64,
        cached: i64,
        durations: Vec<i64>,
    }
    let mut expected: BTreeMap<(String, String), ModelTotals> = BTreeMap::new();
    for span in spans.iter().filter(|span| span.is_model_call()) {
        let key = (
            text(&span.attributes, "gen_ai.provider.name")
                .unwrap()
                .to_owned(),
            text(&span.attributes, "gen_ai.request.model")
                .unwrap()
                .to_owned(),
        );
        let totals = expected.entry(key).or_default();
        totals.calls += 1;
        totals.input += int(&span.attributes, "gen_ai.usage.input_tokens").unwrap_or(0);
        totals.output += int(&span.attributes, "gen_ai.usage.output_tokens").unwrap_or(0);
        totals.cached += int(&span.attributes, "gen_ai.usage.cache_read.input_tokens").unwrap_or(0);
        totals.durations.push((span.end - span.start) as i64);
    }
    let expected: Vec<Value> = expected
        .into_iter()
        .map(|((provider, model), totals)| {
            let ModelTotals {
                calls,
                input,
                output,
                cached,
                mut durations,
            } = totals;
            durations.sort_unstable();
            // percentile_cont: linear interpolation between the closest ranks.
            let rank = 0.95 * (durations.len() - 1) as f64;
            let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
            let p95 = durations[low] as f64
                + (durations[high] - durations[low]) as f64 * (rank - low as f64);
            let p95_ms = ((p95 as i64) as f64 / 1e6 * 10.0).round() / 10.0;
            json!([
                provider,
                model,
                calls,
                input,
                output,
                (cached > 0).then_some(cached),
                p95_ms
            ])
        })
        .collect();
    assert!(expected.len() >= 5, "several models: {expected:?}");
    let fixture = MonitoringFixture::new();
    let actual = rows(
        &fixture,
        "SELECT provider, request_model, count(*), sum(input_tokens), sum(output_tokens), \
         sum(cache_read_tokens), \
         round(percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns) / 1e6, 1) \
         FROM llm_calls GROUP BY provider, request_model ORDER BY provider, request_model",
    )
    .await;
    assert_eq!(actual, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_by_tool_match_the_otlp() {
    let spans = flat_spans();
    let runs = tool_runs(&spans);
    // tool -> (attempts, retries)
    let mut attempts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    // (tool, trace, operation number) -> retried
    let mut operations: BTreeMap<(String, String, i64), bool> = BTreeMap::new();
    let mut per_tool_trace: BTreeMap<(String, String), Vec<&ToolRun<'_>>> = BTreeMap::new();
    for run in &runs {
        let tool = text(&run.span.attributes, "gen_ai.tool.name")
            .unwrap()
            .to_owned();
        let entry = attempts.entry(tool.clone()).or_default();
        entry.0 += 1;
        entry.1 += i64::from(run.is_retry);
        per_tool_trace
            .entry((tool, run.span.trace.clone()))
            .or_default()
            .push(run);
    }
    for ((tool, trace), mut calls) in per_tool_trace {
        calls.sort_by(|a, b| (a.span.start, &a.span.span).cmp(&(b.span.start, &b.span.span)));
        let mut operation = 0;
        for call in calls {
            operation += i64::from(call.attempt == 0);
            *operations
                .entry((tool.clone(), trace.clone(), operation))
                .or_default() |= call.is_retry;
        }
    }
    let mut expected: Vec<(String, i64, i64, i64, i64)> = Vec::new();
    for (tool, (total, retries)) in &attempts {
        let ops: Vec<bool> = operations
            .iter()
            .filter(|((name, _, _), _)| name == tool)
            .map(|(_, retried)| *retried)
            .collect();
        let retried = ops.iter().filter(|retried| **retried).count() as i64;
        expected.push((tool.clone(), *total, *retries, ops.len() as i64, retried));
    }
    let fixture = MonitoringFixture::new();
    let expected: Vec<Value> = expected
        .into_iter()
        .map(|(tool, total, retries, ops, retried)| json!([tool, total, retries, ops, retried]))
        .collect();
    // The docs query groups by `operation_span_id`...
    let by_operation = rows(
        &fixture,
        "WITH operations AS (
            SELECT tool_name, trace_id, operation_span_id, count(*) AS attempts,
                count(*) FILTER (WHERE is_retry) AS retries
            FROM tool_calls GROUP BY tool_name, trace_id, operation_span_id
        )
        SELECT tool_name, sum(attempts), sum(retries), count(*),
            count(*) FILTER (WHERE retries > 0)
        FROM operations GROUP BY tool_name ORDER BY tool_name",
    )
    .await;
    assert_eq!(by_operation, expected);
    // ... which numbers logical calls as this window over `attempt` does.
    let actual = rows(
        &fixture,
        "WITH numbered AS (
            SELECT tool_name, trace_id, is_retry,
                sum(CASE WHEN attempt = 0 THEN 1 ELSE 0 END) OVER (
                    PARTITION BY trace_id, session_id, tool_name ORDER BY start_time, span_id
                ) AS operation
            FROM tool_calls
        ),
        operations AS (
            SELECT tool_name, trace_id, operation, count(*) AS attempts,
                count(*) FILTER (WHERE is_retry) AS retries
            FROM numbered GROUP BY tool_name, trace_id, operation
        )
        SELECT tool_name, sum(attempts), sum(retries), count(*),
            count(*) FILTER (WHERE retries > 0)
        FROM operations GROUP BY tool_name ORDER BY tool_name",
    )
    .await;
    assert_eq!(actual, expected);

    let explicit = runs.iter().filter(|run| {
        int(&run.span.attributes, "agent.retry.attempt").unwrap_or(0) > 0
            || spans.iter().any(|child| {
                child.parent.as_deref() == Some(run.span.span.as_str())
                    && child.trace == run.span.trace
                    && int(&child.attributes, "http.request.resend_count").unwrap_or(0) > 0
            })
    });
    let explicit = explicit.count() as i64;
    let retries: i64 = attempts.values().map(|(_, retries)| retries).sum();
    let by_source = rows(
        &fixture,
        "SELECT retry_source, count(*) FROM tool_calls WHERE is_retry \
         GROUP BY 1 ORDER BY 1",
    )
    .await;
    assert_eq!(
        by_source,
        [("explicit", explicit), ("inferred", retries - explicit)]
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .map(|(source, count)| json!([source, count]))
            .collect::<Vec<_>>()
    );
    assert!(explicit >= 10 && retries - explicit >= 3, "{by_source:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn denials_by_policy_and_day_match_the_otlp() {
    let spans = flat_spans();
    let mut expected: BTreeMap<(u64, Option<String>, Option<String>), i64> = BTreeMap::new();
    for decision in spans.iter().flat_map(decisions) {
        if decision.verdict.as_deref() == Some("deny") {
            *expected
                .entry((decision.time / DAY * DAY, decision.kind, decision.policy))
                .or_default() += 1;
        }
    }
    let days: BTreeSet<u64> = expected.keys().map(|(day, _, _)| *day).collect();
    let policies: BTreeSet<&Option<String>> =
        expected.keys().map(|(_, _, policy)| policy).collect();
    assert!(days.len() == 3 && policies.len() >= 6, "{expected:?}");
    let fixture = MonitoringFixture::new();
    let actual = rows(
        &fixture,
        "SELECT arrow_cast(date_trunc('day', time), 'Int64'), kind, policy_id, count(*) \
         FROM decisions WHERE verdict = 'deny' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    .await;
    let expected: Vec<Value> = expected
        .into_iter()
        .map(|((day, kind, policy), count)| json!([day, kind, policy, count]))
        .collect();
    assert_eq!(actual, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_decision_and_approval_matches_the_otlp() {
    let spans = flat_spans();
    let approvals = approvals(&spans);
    let mut expected: Vec<Value> = spans
        .iter()
        .flat_map(decisions)
        .map(|decision| {
            let approval = decision
                .id
                .as_ref()
                .and_then(|id| approvals.get(&(decision.trace.clone(), id.clone())));
            json!([
                decision.trace,
                decision.span,
                decision.time,
                decision.kind,
                decision.verdict,
                decision.policy,
                decision.risk,
                decision.id,
                approval
            ])
        })
        .collect();
    expected.sort_by_key(Value::to_string);
    let fixture = MonitoringFixture::new();
    let mut actual = rows(
        &fixture,
        "SELECT trace_id, span_id, arrow_cast(time, 'Int64'), kind, verdict, policy_id, risk, \
         decision_id, approval_status FROM decisions",
    )
    .await;
    actual.sort_by_key(Value::to_string);
    assert_eq!(actual, expected);
    // The fixture has decisions recorded both as span attributes and as an event (the
    // generator does that for half of its gates), so the merge above was exercised.
    let both_forms = rows(
        &fixture,
        "SELECT count(*) FROM decisions WHERE forms = 'span,event'",
    )
    .await;
    assert!(both_forms[0][0].as_i64().unwrap() >= 10, "{both_forms:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn span_verdicts_are_the_strongest_decision() {
    let spans = flat_spans();
    let mut expected = Vec::new();
    for span in &spans {
        let strongest = decisions(span)
            .into_iter()
            .filter_map(|decision| decision.verdict)
            .filter_map(|verdict| Some((rank(&verdict)?, verdict)))
            .max()
            .map(|(_, verdict)| verdict);
        if let Some(verdict) = strongest {
            expected.push(json!([span.trace, span.span, verdict]));
        }
    }
    expected.sort_by_key(Value::to_string);
    let fixture = MonitoringFixture::new();
    let mut actual = rows(
        &fixture,
        "SELECT trace_id, span_id, decision_verdict FROM spans \
         WHERE decision_verdict IS NOT NULL",
    )
    .await;
    actual.sort_by_key(Value::to_string);
    assert_eq!(actual, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn unguarded_destructive_calls_match_the_otlp() {
    let spans = flat_spans();
    let approvals = approvals(&spans);
    let mut expected = Vec::new();
    for span in spans
        .iter()
        .filter(|span| span.operation() == Some("execute_tool"))
    {
        let decisions = decisions(span);
        let destructive = text(&span.attributes, "agent.tool.risk_tier") == Some("destructive")
            || decisions
                .iter()
                .any(|decision| decision.risk.as_deref() == Some("destructive"));
        let guarded_or_blocked = decisions.iter().any(|decision| {
            matches!(
                decision.verdict.as_deref(),
                Some("allow" | "deny" | "escalate")
            ) || decision.id.as_ref().is_some_and(|id| {
                approvals
                    .get(&(span.trace.clone(), id.clone()))
                    .map(String::as_str)
                    == Some("approved")
            })
        });
        if destructive && !guarded_or_blocked {
            expected.push((span.start, json!([span.trace, span.span])));
        }
    }
    expected.sort_by_key(|(start, _)| *start);
    let expected: Vec<Value> = expected.into_iter().map(|(_, row)| row).collect();
    assert!(expected.len() >= 10, "{expected:?}");
    let fixture = MonitoringFixture::new();
    let actual = rows(
        &fixture,
        "SELECT t.trace_id, t.span_id
        FROM tool_calls t
        LEFT JOIN decisions d ON d.trace_id = t.trace_id AND d.span_id = t.span_id
        WHERE t.risk = 'destructive'
        GROUP BY t.trace_id, t.span_id, t.start_time
        HAVING NOT coalesce(
            bool_or(d.verdict IN ('allow', 'deny', 'escalate') OR d.approval_status = 'approved'),
            false
        )
        ORDER BY t.start_time",
    )
    .await;
    assert_eq!(actual, expected);
}

/// The session of each trace: a `session.id` on any of its spans, else a conversation id.
fn trace_sessions(spans: &[FlatSpan]) -> BTreeMap<&str, String> {
    let mut sessions = BTreeMap::new();
    for key in ["session.id", "gen_ai.conversation.id"] {
        for span in spans {
            if let Some(id) = text(&span.attributes, key) {
                sessions
                    .entry(span.trace.as_str())
                    .or_insert_with(|| id.to_owned());
            }
        }
    }
    sessions
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_by_agent_and_tokens_by_session_match_the_otlp() {
    let spans = flat_spans();
    let by_id: BTreeMap<(&str, &str), &FlatSpan> = spans
        .iter()
        .map(|span| ((span.trace.as_str(), span.span.as_str()), span))
        .collect();
    let is_run_operation = |span: &FlatSpan| {
        span.operation()
            .is_some_and(|op| RUN_OPERATIONS.contains(&op))
    };
    // (agent) -> (runs, failed, refused)
    let mut expected: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for run in spans.iter().filter(|span| is_run_operation(span)) {
        // Top-level: no ancestor, however far up, runs an agent or workflow.
        let mut ancestor = run.parent.as_deref();
        let mut nested = false;
        while let Some(parent) = ancestor.and_then(|id| by_id.get(&(run.trace.as_str(), id))) {
            nested |= is_run_operation(parent);
            ancestor = parent.parent.as_deref();
        }
        if nested {
            continue;
        }
        let outcome = match text(&run.attributes, "agent.outcome") {
            Some(outcome) => outcome.to_owned(),
            None if run.failed => "error".to_owned(),
            None => {
                // Derived: the last model call was filtered, or a denial was the last decision
                // and no call started after it.
                let inside: Vec<&FlatSpan> = spans
                    .iter()
                    .filter(|span| span.trace == run.trace)
                    .filter(|span| (run.start..=run.end).contains(&span.start))
                    .collect();
                let last_call = inside
                    .iter()
                    .filter(|span| span.is_model_call())
                    .max_by_key(|span| span.start);
                let filtered = last_call.is_some_and(|call| {
                    matches!(call.attributes.get("gen_ai.response.finish_reasons"),
                        Some(Attribute::Texts(reasons)) if reasons.iter().any(|r| r == "content_filter"))
                });
                let last_decision = inside
                    .iter()
                    .flat_map(|span| decisions(span))
                    .max_by_key(|decision| decision.time);
                let calls_after = |time: u64| {
                    inside.iter().any(|span| {
                        (span.is_model_call() || span.operation() == Some("execute_tool"))
                            && span.start > time
                    })
                };
                let denied_last = last_decision.is_some_and(|decision| {
                    decision.verdict.as_deref() == Some("deny") && !calls_after(decision.time)
                });
                if filtered || denied_last {
                    "refused"
                } else {
                    "success"
                }
                .to_owned()
            }
        };
        let agent = text(&run.attributes, "gen_ai.agent.name")
            .or_else(|| text(&run.attributes, "gen_ai.workflow.name"))
            .unwrap()
            .to_owned();
        let entry = expected.entry(agent).or_default();
        entry.0 += 1;
        entry.1 += i64::from(outcome == "error");
        entry.2 += i64::from(outcome == "refused");
    }
    let fixture = MonitoringFixture::new();
    let actual = rows(
        &fixture,
        "SELECT agent_name, count(*), count(*) FILTER (WHERE outcome = 'error'), \
         count(*) FILTER (WHERE outcome = 'refused') FROM agent_runs \
         GROUP BY agent_name ORDER BY agent_name",
    )
    .await;
    let expected: Vec<Value> = expected
        .into_iter()
        .map(|(agent, (runs, failed, refused))| json!([agent, runs, failed, refused]))
        .collect();
    assert_eq!(actual, expected);

    let sessions = trace_sessions(&spans);
    let mut tokens: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for span in spans.iter().filter(|span| span.is_model_call()) {
        if let Some(session) = sessions.get(span.trace.as_str()) {
            let entry = tokens.entry(session).or_default();
            entry.0 += int(&span.attributes, "gen_ai.usage.input_tokens").unwrap_or(0);
            entry.1 += int(&span.attributes, "gen_ai.usage.output_tokens").unwrap_or(0);
        }
    }
    let mut expected: Vec<(i64, &str, i64, i64)> = tokens
        .into_iter()
        .map(|(session, (input, output))| (-(input + output), session, input, output))
        .collect();
    expected.sort();
    let expected: Vec<Value> = expected
        .into_iter()
        .take(5)
        .map(|(total, session, input, output)| json!([session, -total, input, output]))
        .collect();
    let actual = rows(
        &fixture,
        "SELECT session_id, input_tokens + output_tokens AS tokens, input_tokens, output_tokens \
         FROM sessions ORDER BY tokens DESC NULLS LAST, session_id LIMIT 5",
    )
    .await;
    assert_eq!(actual, expected);
}
