//! Decisions: the decision signals of one span (its attributes and its events), merged so that
//! one decision recorded in several forms is one row.
//!
//! The signals are those of docs/sql.md ("decisions"); the merge rule is docs/conventions.md
//! §6 "One decision, one row": two signals of one span are the same decision when both carry a
//! decision id and the ids are equal, or when neither carries one and kind, policy and verdict
//! are equal. The merged row takes each field from the first form that has it, and the event's
//! time when an event form is among them.

use super::spans::{Attributes, Event, Row, SpanRows};

/// Every attribute key a decision signal reads starts with one of these.
const SIGNAL_PREFIXES: [&str; 5] = [
    "agent.decision.",
    "gen_ai.guardrail.",
    "gen_ai.security.",
    "gen_ai.agent.",
    "agent.threat.detection.",
];

/// The five verdicts, in no particular order.
const VERDICTS: [&str; 5] = ["allow", "deny", "modify", "warn", "escalate"];

/// One decision of a span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision<'a> {
    pub(crate) time: i64,
    pub(crate) kind: Option<&'a str>,
    pub(crate) verdict: Option<&'a str>,
    pub(crate) action: Option<&'a str>,
    pub(crate) policy_id: Option<&'a str>,
    pub(crate) risk: Option<&'a str>,
    pub(crate) context_source: Option<&'a str>,
    pub(crate) reasoning: Option<&'a str>,
    pub(crate) decision_id: Option<&'a str>,
    /// Recorded as span attributes (or span status / finish reasons).
    pub(crate) on_span: bool,
    /// Recorded as an event.
    pub(crate) on_event: bool,
}

impl<'a> Decision<'a> {
    fn new(time: i64, kind: Option<&'a str>, verdict: Option<&'a str>) -> Decision<'a> {
        Decision {
            time,
            kind,
            verdict,
            action: None,
            policy_id: None,
            risk: None,
            context_source: None,
            reasoning: None,
            decision_id: None,
            on_span: false,
            on_event: false,
        }
    }

    /// The forms the decision was recorded in: `span`, `event` or `span,event`.
    pub(crate) fn forms(&self) -> &'static str {
        match (self.on_span, self.on_event) {
            (true, true) => "span,event",
            (false, true) => "event",
            _ => "span",
        }
    }

    fn same_decision(&self, other: &Decision<'_>) -> bool {
        match (self.decision_id, other.decision_id) {
            (Some(a), Some(b)) => a == b,
            (None, None) => {
                self.kind == other.kind
                    && self.policy_id == other.policy_id
                    && self.verdict == other.verdict
            }
            _ => false,
        }
    }

    fn absorb(&mut self, other: Decision<'a>) {
        if other.on_event && !self.on_event {
            self.time = other.time;
        }
        self.on_span |= other.on_span;
        self.on_event |= other.on_event;
        let fill = |mine: &mut Option<&'a str>, theirs: Option<&'a str>| {
            if mine.is_none() {
                *mine = theirs;
            }
        };
        fill(&mut self.kind, other.kind);
        fill(&mut self.verdict, other.verdict);
        fill(&mut self.action, other.action);
        fill(&mut self.policy_id, other.policy_id);
        fill(&mut self.risk, other.risk);
        fill(&mut self.context_source, other.context_source);
        fill(&mut self.reasoning, other.reasoning);
        fill(&mut self.decision_id, other.decision_id);
    }
}

/// `value` when it is one of the five verdicts (compared exactly), else `None`.
fn verdict(value: Option<&str>) -> Option<&'static str> {
    let value = value?;
    VERDICTS.into_iter().find(|verdict| *verdict == value)
}

/// The `agent.decision.*` keys of `attributes` as a decision.
fn agent_decision<'a>(time: i64, attributes: &Attributes<'a>) -> Decision<'a> {
    let key = |name: &str| attributes.get(&format!("agent.decision.{name}"));
    Decision {
        action: key("action"),
        policy_id: key("policy.id"),
        risk: key("risk"),
        context_source: key("context_source"),
        reasoning: key("reasoning"),
        decision_id: key("id"),
        ..Decision::new(time, key("kind"), verdict(key("verdict")))
    }
}

/// The signals of conventions §5.3 E that may sit on a span or on any event.
fn foreign_signals<'a>(time: i64, attributes: &Attributes<'a>, out: &mut Vec<Decision<'a>>) {
    for namespace in ["gen_ai.guardrail", "gen_ai.security"] {
        if let Some(value) = attributes.get(&format!("{namespace}.verdict.type")) {
            out.push(Decision {
                action: attributes.get(&format!("{namespace}.action.type")),
                policy_id: attributes.get(&format!("{namespace}.policy.id")),
                ..Decision::new(time, Some("guardrail"), verdict(Some(value)))
            });
        }
    }
    if let Some(outcome) = attributes.get("gen_ai.agent.decision.outcome") {
        let mapped = match outcome {
            "allow" => Some("allow"),
            "block" => Some("deny"),
            "review" | "escalate" | "defer" => Some("escalate"),
            _ => None,
        };
        out.push(Decision {
            action: (outcome == "defer").then_some("defer"),
            decision_id: attributes.get("gen_ai.agent.decision.id"),
            ..Decision::new(time, Some("policy"), mapped)
        });
    }
    if let Some(disposition) = attributes.get("gen_ai.agent.tool.disposition") {
        let mapped = match disposition {
            "allow" => Some("allow"),
            "deny" => Some("deny"),
            "simulate" => Some("modify"),
            _ => None,
        };
        out.push(Decision {
            action: (disposition == "simulate").then_some("simulate"),
            risk: attributes.get("gen_ai.agent.tool.tier"),
            ..Decision::new(time, Some("policy"), mapped)
        });
    }
}

/// `agent.threat.detection.action`: ask -> escalate, block -> deny, warn, allow.
fn threat_detection<'a>(time: i64, attributes: &Attributes<'a>) -> Option<Decision<'a>> {
    let action = attributes.get("agent.threat.detection.action")?;
    let mapped = match action {
        "ask" => Some("escalate"),
        "block" => Some("deny"),
        "warn" => Some("warn"),
        "allow" => Some("allow"),
        _ => None,
    };
    Some(Decision {
        action: (action == "block").then_some("block"),
        policy_id: attributes
            .get("agent.threat.detection.rule_id")
            .or_else(|| attributes.get("agent.threat.detection.ruleset")),
        ..Decision::new(time, Some("threat_detection"), mapped)
    })
}

/// The decision signals a span carries in its attributes, status and finish reasons.
fn span_signals<'a>(rows: &'a SpanRows, row: Row) -> Vec<Decision<'a>> {
    let attributes = rows.attributes(row);
    let start = rows.start_time(row);
    let end = rows.end_time(row);
    let mut out = Vec::new();
    // Without a signal key only the status and finish-reason signals can apply.
    if attributes.any_key_starts_with(&SIGNAL_PREFIXES) {
        if attributes.get("agent.decision.verdict").is_some()
            || attributes.get("agent.decision.id").is_some()
        {
            out.push(agent_decision(start, &attributes));
        }
        foreign_signals(start, &attributes, &mut out);
        out.extend(threat_detection(start, &attributes));
    }
    let failed_guardrail =
        rows.is_error(row) && attributes.get("openinference.span.kind") == Some("GUARDRAIL");
    if failed_guardrail {
        out.push(Decision::new(end, Some("guardrail"), Some("deny")));
    }
    if rows.has_finish_reason(row, "content_filter") {
        out.push(Decision::new(end, Some("guardrail"), Some("deny")));
    }
    for decision in &mut out {
        decision.on_span = true;
    }
    out
}

/// The decision signals one event carries.
fn event_signals<'a>(event: &Event<'a>, out: &mut Vec<Decision<'a>>) {
    let attributes = &event.attributes;
    let start = out.len();
    let named = matches!(
        event.name,
        "agent.decision" | "agent.policy.decision" | "agent.threat.detection"
    );
    if !named && !attributes.any_key_starts_with(&SIGNAL_PREFIXES) {
        return;
    }
    match event.name {
        "agent.decision" => out.push(agent_decision(event.time, attributes)),
        "agent.policy.decision" => out.push(Decision {
            action: attributes.get("agent.decision.action"),
            policy_id: attributes
                .get("agent.policy.name")
                .or_else(|| attributes.get("agent.decision.policy.id")),
            risk: attributes.get("agent.decision.risk"),
            context_source: attributes.get("agent.decision.context_source"),
            reasoning: attributes.get("agent.decision.reasoning"),
            decision_id: attributes.get("agent.decision.id"),
            ..Decision::new(
                event.time,
                Some(attributes.get("agent.decision.kind").unwrap_or("policy")),
                verdict(attributes.get("agent.policy.decision")),
            )
        }),
        _ => {}
    }
    foreign_signals(event.time, attributes, out);
    if event.name == "agent.threat.detection" {
        out.extend(threat_detection(event.time, attributes));
    }
    for decision in &mut out[start..] {
        decision.on_event = true;
    }
}

/// The decisions of one span, each once, in the order of their first form (span attributes
/// first, then events in stored order).
pub(crate) fn span_decisions<'a>(rows: &'a SpanRows, row: Row) -> Vec<Decision<'a>> {
    let mut signals = span_signals(rows, row);
    for event in rows.events(row) {
        event_signals(&event, &mut signals);
    }
    let mut merged: Vec<Decision<'a>> = Vec::with_capacity(signals.len());
    for signal in signals {
        match merged.iter_mut().find(|kept| kept.same_decision(&signal)) {
            Some(kept) => kept.absorb(signal),
            None => merged.push(signal),
        }
    }
    merged
}

/// The latest `agent.approval` of one decision id in a trace: (status, time).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Approval<'a> {
    pub(crate) status: Option<&'a str>,
    pub(crate) time: i64,
}

/// Folds one event into the trace's approvals (keyed by `agent.approval.decision_id`).
pub(crate) fn note_approval<'a>(
    event: &Event<'a>,
    approvals: &mut std::collections::HashMap<&'a str, Approval<'a>>,
) {
    if event.name != "agent.approval" {
        return;
    }
    let Some(decision_id) = event.attributes.get("agent.approval.decision_id") else {
        return;
    };
    let status = event.attributes.get("agent.approval.status");
    approvals
        .entry(decision_id)
        .and_modify(|latest| {
            if event.time >= latest.time {
                *latest = Approval {
                    status,
                    time: event.time,
                };
            }
        })
        .or_insert(Approval {
            status,
            time: event.time,
        });
}
