use std::collections::{BTreeMap, BTreeSet};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message as _;

use super::*;
use crate::{export_request_to_json, export_requests, random_request, span_count};

fn config(traces: usize) -> AgentTraceConfig {
    AgentTraceConfig {
        traces,
        ..AgentTraceConfig::default()
    }
}

fn spans(trace: &AgentTrace) -> Vec<&Span> {
    trace
        .resource_spans
        .iter()
        .flat_map(|resource_spans| &resource_spans.scope_spans)
        .flat_map(|scope_spans| &scope_spans.spans)
        .collect()
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|key_value| key_value.key == key)
        .and_then(|key_value| key_value.value.as_ref())
        .and_then(|value| value.value.as_ref())
}

fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attribute(attributes, key) {
        Some(Value::StringValue(text)) => Some(text),
        _ => None,
    }
}

fn operation(span: &Span) -> Option<&str> {
    string_attribute(&span.attributes, "gen_ai.operation.name")
}

#[test]
fn same_seed_gives_identical_bytes() {
    let config = config(50);
    let encode = |requests: Vec<ExportTraceServiceRequest>| -> Vec<Vec<u8>> {
        requests
            .iter()
            .map(|request| request.encode_to_vec())
            .collect()
    };
    let first = encode(export_requests(&config, 4));
    let second = encode(export_requests(&config, 4));
    assert_eq!(first, second);

    let other_seed = AgentTraceConfig {
        seed: 43,
        ..config.clone()
    };
    assert_ne!(first, encode(export_requests(&other_seed, 4)));
}

#[test]
fn indexed_trace_matches_iterator() {
    let config = config(30);
    let traces: Vec<AgentTrace> = agent_trace_iter(&config).collect();
    assert_eq!(traces.len(), 30);
    for index in [0, 7, 29] {
        assert_eq!(agent_trace(&config, index), traces[index]);
        assert_eq!(
            agent_trace_iter(&config).nth(index).as_ref(),
            Some(&traces[index])
        );
    }
    assert_eq!(agent_trace_iter(&config).skip(28).count(), 2);

    let requests = export_requests(&config, 4);
    assert_eq!(requests.len(), 8);
    for index in [0, 3, 7] {
        let skipped: Vec<_> = crate::export_request_iter(&config, 4).skip(index).collect();
        assert_eq!(skipped, requests[index..]);
    }
    assert_eq!(crate::export_request_iter(&config, 4).nth(8), None);
}

#[test]
fn span_count_is_close_to_target() {
    for target in [5usize, 10, 25, 60] {
        let config = AgentTraceConfig {
            spans_per_trace: target,
            ..config(400)
        };
        let traces: Vec<AgentTrace> = agent_trace_iter(&config).collect();
        let total: usize = traces.iter().map(|trace| trace.spans).sum();
        let average = total as f64 / traces.len() as f64;
        assert!(
            (average - target as f64).abs() <= target as f64 * 0.15,
            "target {target}: average {average:.1} spans per trace"
        );
        for trace in &traces {
            assert!(trace.spans >= 2);
            assert_eq!(trace.spans, spans(trace).len());
        }
    }
}

#[test]
fn ids_are_valid_and_parents_exist() {
    let traces: Vec<AgentTrace> = agent_trace_iter(&config(300)).collect();
    let mut trace_ids = BTreeSet::new();
    for trace in &traces {
        assert!(trace.trace_id.iter().any(|&byte| byte != 0));
        assert!(trace_ids.insert(trace.trace_id), "duplicate trace id");
        let spans = spans(trace);
        let mut span_ids = BTreeSet::new();
        for span in &spans {
            assert_eq!(span.trace_id, trace.trace_id);
            assert_eq!(span.span_id.len(), 8);
            assert!(span.span_id.iter().any(|&byte| byte != 0));
            assert!(span_ids.insert(span.span_id.clone()), "duplicate span id");
        }
        let roots: Vec<_> = spans
            .iter()
            .filter(|span| span.parent_span_id.is_empty())
            .collect();
        assert_eq!(roots.len(), 1, "exactly one root");
        assert!(roots[0].name.starts_with("invoke_agent "));
        for span in &spans {
            if !span.parent_span_id.is_empty() {
                assert!(span_ids.contains(&span.parent_span_id), "dangling parent");
            }
        }
    }
}

#[test]
fn children_lie_within_parents() {
    for trace in agent_trace_iter(&config(300)) {
        let spans = spans(&trace);
        let by_id: BTreeMap<&[u8], &Span> = spans
            .iter()
            .map(|span| (span.span_id.as_slice(), *span))
            .collect();
        for span in &spans {
            assert!(span.start_time_unix_nano < span.end_time_unix_nano);
            assert!(span.start_time_unix_nano >= trace.start_time_unix_nano);
            assert!(span.end_time_unix_nano <= trace.end_time_unix_nano);
            for event in &span.events {
                assert!(
                    (span.start_time_unix_nano..=span.end_time_unix_nano)
                        .contains(&event.time_unix_nano),
                    "event {} outside span {}",
                    event.name,
                    span.name
                );
            }
            if let Some(parent) = by_id.get(span.parent_span_id.as_slice()) {
                assert!(
                    span.start_time_unix_nano >= parent.start_time_unix_nano
                        && span.end_time_unix_nano <= parent.end_time_unix_nano,
                    "{} not inside {}",
                    span.name,
                    parent.name
                );
            }
        }
    }
}

#[test]
fn traces_are_spread_in_start_order() {
    let config = config(200);
    let traces: Vec<AgentTrace> = agent_trace_iter(&config).collect();
    let range_end = config.base_time_unix_nano + config.time_spread_ns;
    for pair in traces.windows(2) {
        assert!(pair[0].start_time_unix_nano <= pair[1].start_time_unix_nano);
    }
    for trace in &traces {
        assert!(
            (config.base_time_unix_nano..range_end).contains(&trace.start_time_unix_nano),
            "trace starts outside the configured range"
        );
    }
}

#[test]
fn sessions_services_and_resources() {
    let config = AgentTraceConfig {
        sessions: 7,
        services: 4,
        ..config(500)
    };
    let expected_services: BTreeSet<String> = [
        "support-agent-0",
        "research-agent-1",
        "coding-agent-2",
        "ops-agent-3",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let mut sessions = BTreeSet::new();
    let mut services = BTreeSet::new();
    let mut session_services = BTreeMap::new();
    for trace in agent_trace_iter(&config) {
        sessions.insert(trace.session_id.clone());
        services.insert(trace.service_name.clone());
        let previous =
            session_services.insert(trace.session_id.clone(), trace.service_name.clone());
        assert!(
            previous.is_none_or(|service| service == trace.service_name),
            "a session stays on one service"
        );
        assert_eq!(trace.resource_spans.len(), 1);
        let resource_spans = &trace.resource_spans[0];
        let resource = resource_spans.resource.as_ref().expect("resource");
        assert_eq!(
            string_attribute(&resource.attributes, "service.name"),
            Some(trace.service_name.as_str())
        );
        for key in [
            "telemetry.sdk.name",
            "telemetry.sdk.language",
            "telemetry.sdk.version",
        ] {
            assert!(
                string_attribute(&resource.attributes, key).is_some(),
                "{key}"
            );
        }
        let scope = resource_spans.scope_spans[0].scope.as_ref().expect("scope");
        assert_eq!(scope.name, GENAI_SCOPE_NAME);
        assert!(!scope.version.is_empty());
    }
    assert_eq!(sessions.len(), 7);
    assert_eq!(services, expected_services);
}

/// Counts of the features the generator promises; each must show up in a few hundred traces.
#[derive(Debug, Default)]
struct Seen {
    chat: usize,
    tool: usize,
    http: usize,
    sub_agents: usize,
    tool_errors: usize,
    chat_errors: usize,
    retries: usize,
    decisions: BTreeSet<String>,
    approvals: usize,
    outcomes: BTreeSet<String>,
    finish_reasons: BTreeSet<String>,
}

#[test]
fn spans_carry_genai_attributes() {
    let mut seen = Seen::default();
    for trace in agent_trace_iter(&config(400)) {
        for span in spans(&trace) {
            let attributes = &span.attributes;
            match operation(span) {
                Some("invoke_agent") => {
                    assert_eq!(span.kind, SpanKind::Internal as i32);
                    assert!(string_attribute(attributes, "gen_ai.agent.name").is_some());
                    assert!(string_attribute(attributes, "gen_ai.agent.id").is_some());
                    if span.parent_span_id.is_empty() {
                        for key in ["gen_ai.conversation.id", "session.id", "user.id"] {
                            assert!(string_attribute(attributes, key).is_some(), "{key}");
                        }
                        assert_eq!(
                            string_attribute(attributes, "session.id"),
                            Some(trace.session_id.as_str())
                        );
                        let outcome =
                            string_attribute(attributes, "agent.outcome").expect("outcome");
                        seen.outcomes.insert(outcome.to_owned());
                    } else {
                        seen.sub_agents += 1;
                    }
                }
                Some("chat") => {
                    seen.chat += 1;
                    assert_eq!(span.kind, SpanKind::Client as i32);
                    assert!(span.name.starts_with("chat "));
                    assert!(string_attribute(attributes, "gen_ai.provider.name").is_some());
                    assert!(string_attribute(attributes, "gen_ai.request.model").is_some());
                    assert!(matches!(
                        attribute(attributes, "gen_ai.request.temperature"),
                        Some(Value::DoubleValue(_))
                    ));
                    if span
                        .status
                        .as_ref()
                        .is_some_and(|status| status.code == StatusCode::Error as i32)
                    {
                        seen.chat_errors += 1;
                        assert!(string_attribute(attributes, "error.type").is_some());
                        continue;
                    }
                    assert!(string_attribute(attributes, "gen_ai.response.model").is_some());
                    let Some(Value::IntValue(input)) =
                        attribute(attributes, "gen_ai.usage.input_tokens")
                    else {
                        panic!("input tokens missing on {}", span.name);
                    };
                    let Some(Value::IntValue(output)) =
                        attribute(attributes, "gen_ai.usage.output_tokens")
                    else {
                        panic!("output tokens missing on {}", span.name);
                    };
                    assert!(*input > 0 && *output > 0);
                    if let Some(Value::IntValue(cached)) =
                        attribute(attributes, "gen_ai.usage.cache_read.input_tokens")
                    {
                        assert!(cached <= input);
                    }
                    let Some(Value::ArrayValue(reasons)) =
                        attribute(attributes, "gen_ai.response.finish_reasons")
                    else {
                        panic!("finish reasons missing");
                    };
                    for reason in &reasons.values {
                        let Some(Value::StringValue(reason)) = &reason.value else {
                            panic!("finish reason is not a string");
                        };
                        seen.finish_reasons.insert(reason.clone());
                    }
                }
                Some("execute_tool") => {
                    seen.tool += 1;
                    assert_eq!(span.kind, SpanKind::Internal as i32);
                    let name = string_attribute(attributes, "gen_ai.tool.name").expect("tool name");
                    assert_eq!(span.name, format!("execute_tool {name}"));
                    assert!(string_attribute(attributes, "gen_ai.tool.call.id").is_some());
                    assert!(string_attribute(attributes, "gen_ai.tool.type").is_some());
                    if span
                        .status
                        .as_ref()
                        .is_some_and(|status| status.code == StatusCode::Error as i32)
                    {
                        seen.tool_errors += 1;
                        assert!(string_attribute(attributes, "error.type").is_some());
                    }
                    if attribute(attributes, "agent.retry.attempt").is_some() {
                        seen.retries += 1;
                    }
                    for event in &span.events {
                        match event.name.as_str() {
                            "agent.decision" => {
                                for key in [
                                    "agent.decision.id",
                                    "agent.decision.verdict",
                                    "agent.decision.policy.id",
                                    "agent.decision.risk",
                                ] {
                                    assert!(
                                        string_attribute(&event.attributes, key).is_some(),
                                        "{key}"
                                    );
                                }
                                let verdict =
                                    string_attribute(&event.attributes, "agent.decision.verdict")
                                        .unwrap_or_default();
                                seen.decisions.insert(verdict.to_owned());
                            }
                            "agent.approval" => seen.approvals += 1,
                            other => panic!("unexpected event {other}"),
                        }
                    }
                }
                Some(other) => panic!("unexpected operation {other}"),
                None => {
                    seen.http += 1;
                    assert_eq!(span.kind, SpanKind::Client as i32);
                    assert!(string_attribute(attributes, "http.request.method").is_some());
                }
            }
        }
    }
    assert!(
        seen.chat > 1_000 && seen.tool > 1_000 && seen.http > 100,
        "{seen:?}"
    );
    assert!(seen.sub_agents > 10, "{seen:?}");
    assert!(
        seen.tool_errors > 10 && seen.chat_errors > 10 && seen.retries > 10,
        "{seen:?}"
    );
    assert!(seen.approvals > 10, "{seen:?}");
    for verdict in ["allow", "deny", "escalate", "warn"] {
        assert!(seen.decisions.contains(verdict), "{seen:?}");
    }
    for outcome in ["success", "error", "refused"] {
        assert!(seen.outcomes.contains(outcome), "{seen:?}");
    }
    for reason in ["stop", "tool_calls"] {
        assert!(seen.finish_reasons.contains(reason), "{seen:?}");
    }
}

#[test]
fn requests_hold_every_span_once_grouped_by_resource() {
    let config = AgentTraceConfig {
        services: 2,
        ..config(41)
    };
    let expected: usize = agent_trace_iter(&config).map(|trace| trace.spans).sum();
    let requests = export_requests(&config, 4);
    assert_eq!(requests.len(), 11);
    assert_eq!(requests.iter().map(span_count).sum::<usize>(), expected);
    for request in &requests {
        assert!(
            request.resource_spans.len() <= 2,
            "one ResourceSpans per service"
        );
        for resource_spans in &request.resource_spans {
            let scopes: BTreeSet<_> = resource_spans
                .scope_spans
                .iter()
                .map(|scope_spans| scope_spans.scope.as_ref().map(|scope| scope.name.clone()))
                .collect();
            assert_eq!(
                scopes.len(),
                resource_spans.scope_spans.len(),
                "scopes merged"
            );
        }
    }
}

#[test]
fn random_request_is_deterministic_and_non_empty() {
    for seed in 0..20 {
        let request = random_request(seed);
        assert!(span_count(&request) >= 2);
        assert_eq!(request, random_request(seed));
    }
    assert_ne!(random_request(1), random_request(2));
}

#[test]
fn json_encoding_follows_otlp_mapping() {
    let request = export_requests(&config(3), 3).remove(0);
    let json: serde_json::Value =
        serde_json::from_str(&export_request_to_json(&request)).expect("valid JSON");
    let resource_spans = json["resourceSpans"].as_array().expect("resourceSpans");
    let mut spans = 0;
    for resource_spans in resource_spans {
        assert!(resource_spans["resource"]["attributes"].is_array());
        for scope_spans in resource_spans["scopeSpans"].as_array().expect("scopeSpans") {
            assert!(scope_spans["scope"]["name"].is_string());
            for span in scope_spans["spans"].as_array().expect("spans") {
                spans += 1;
                let trace_id = span["traceId"].as_str().expect("traceId");
                assert_eq!(trace_id.len(), 32);
                assert!(
                    trace_id
                        .bytes()
                        .all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase())
                );
                assert_eq!(span["spanId"].as_str().expect("spanId").len(), 16);
                let start: u64 = span["startTimeUnixNano"]
                    .as_str()
                    .expect("64-bit ints are strings")
                    .parse()
                    .expect("decimal");
                assert!(start >= DEFAULT_BASE_TIME_UNIX_NANO);
                assert!(span["kind"].is_u64());
                for attribute in span["attributes"].as_array().expect("attributes") {
                    let value = &attribute["value"];
                    if let Some(number) = value.get("intValue") {
                        assert!(
                            number
                                .as_str()
                                .is_some_and(|text| text.parse::<i64>().is_ok())
                        );
                    }
                }
            }
        }
    }
    assert_eq!(spans, span_count(&request));
}

/// Failed, untagged `execute_tool` spans followed (under the same parent) by another untagged
/// call of the same tool: the retries only inference can find.
fn untagged_reissues(config: &AgentTraceConfig) -> usize {
    let mut found = 0;
    for trace in agent_trace_iter(config) {
        let mut calls: Vec<&Span> = spans(&trace)
            .into_iter()
            .filter(|span| operation(span) == Some("execute_tool"))
            .filter(|span| attribute(&span.attributes, "agent.retry.attempt").is_none())
            .collect();
        calls.sort_by_key(|span| span.start_time_unix_nano);
        for (index, call) in calls.iter().enumerate() {
            let failed = call
                .status
                .as_ref()
                .is_some_and(|status| status.code == StatusCode::Error as i32);
            let tool = string_attribute(&call.attributes, "gen_ai.tool.name");
            let again = calls[index + 1..].iter().find(|later| {
                later.parent_span_id == call.parent_span_id
                    && string_attribute(&later.attributes, "gen_ai.tool.name") == tool
            });
            if failed
                && again.is_some_and(|later| {
                    later.start_time_unix_nano >= call.end_time_unix_nano
                        && string_attribute(&later.attributes, "gen_ai.tool.call.id")
                            != string_attribute(&call.attributes, "gen_ai.tool.call.id")
                })
            {
                found += 1;
            }
        }
    }
    found
}

#[test]
fn failed_tool_calls_are_reissued_when_asked() {
    let off = config(400);
    let on = AgentTraceConfig {
        tool_reissue_percent: 100,
        ..off.clone()
    };
    let (without, with) = (untagged_reissues(&off), untagged_reissues(&on));
    assert!(with >= without + 10, "{without} without, {with} with");
    // The option changes only the traces where a tool call failed for good (besides the
    // arguments it gives every tool call).
    let without_arguments = |mut trace: AgentTrace| {
        for resource in &mut trace.resource_spans {
            for scope in &mut resource.scope_spans {
                for span in &mut scope.spans {
                    span.attributes
                        .retain(|attribute| attribute.key != "gen_ai.tool.call.arguments");
                }
            }
        }
        trace
    };
    let differing = agent_trace_iter(&off)
        .zip(agent_trace_iter(&on).map(without_arguments))
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        differing > 0 && differing < 100,
        "{differing} traces differ"
    );
}
