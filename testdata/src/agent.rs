//! Seeded generator of agent-run traces.
//!
//! Shape of one trace (span counts are per trace, around `spans_per_trace`):
//!
//! ```text
//! invoke_agent <agent>            INTERNAL  root: agent, conversation, session, user, outcome, token aggregates
//! ├─ chat <model>                 CLIENT    finish_reasons ["tool_calls"], usage tokens
//! ├─ execute_tool <tool>          INTERNAL  sometimes an agent.decision (+ agent.approval) event, half
//! │                                         of them also as the same attributes on the span,
//! │  └─ GET / POST …              CLIENT    sometimes an error + retry (agent.retry.*)
//! ├─ invoke_agent <sub-agent>     INTERNAL  sometimes: a nested loop of chat / execute_tool
//! │  └─ …
//! └─ chat <model>                 CLIENT    finish_reasons ["stop"] (or length / content_filter)
//! ```
//!
//! With [`AgentTraceConfig::tool_reissue_percent`], a tool call that failed for good (no
//! framework retry) is sometimes issued again by the model at its next step: a new call (new
//! call id) with the same `gen_ai.tool.call.arguments` and no `agent.retry.*` attributes, the
//! retry that only inference can find. With that option on, every tool call carries arguments.
//! [`AgentTraceIter::label_reissues`] tags those reissues too (`agent.retry.attempt` = the failed
//! call's last attempt + 1, `agent.retry.initiator` = `model`), for a corpus where every true
//! retry is labelled (ground truth for measuring retry inference).
//!
//! Invariants the tests pin: ids are non-zero and unique within a trace, every parent id names a
//! span of the same trace, and every child lies inside its parent's `[start, end]`.
//!
//! Determinism: trace `i` is drawn from its own PRNG stream derived from `(seed, i)`, so it does
//! not depend on how many traces were generated before it, and generation can be split across
//! threads ([`agent_trace`]).

#[cfg(test)]
mod tests;

use std::collections::HashSet;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use crate::catalog::{CHAT_ERRORS, MODELS, Model, ROLES, Risk, Role, TEMPERATURES, Tool};
use crate::prng::SplitMix64;

/// 2026-11-01T00:00:00Z in Unix nanoseconds, the default base time.
pub const DEFAULT_BASE_TIME_UNIX_NANO: u64 = 1_793_491_200_000_000_000;

const MS: u64 = 1_000_000;
const SECOND: u64 = 1_000 * MS;

/// Scope of the GenAI spans (the official OpenTelemetry GenAI instrumentation utilities).
pub const GENAI_SCOPE_NAME: &str = "opentelemetry.util.genai.handler";
/// Scope of the outgoing HTTP spans made by tools.
pub const HTTP_SCOPE_NAME: &str = "opentelemetry.instrumentation.httpx";

const GENAI_SCOPE_VERSION: &str = "1.1b0";
const HTTP_SCOPE_VERSION: &str = "0.59b0";
const GENAI_SCHEMA_URL: &str = "https://opentelemetry.io/schemas/gen-ai/1.42.0";
const RESOURCE_SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.37.0";

/// Sampled, and the W3C "parent is not remote" bit that recent SDKs set (0x100).
const SPAN_FLAGS: u32 = 0x101;

// PRNG streams, so that sessions, services and traces draw independent numbers.
const STREAM_TRACE: u64 = 1;
const STREAM_SESSION: u64 = 2;
const STREAM_SERVICE: u64 = 3;

/// What to generate. Build with struct-update syntax:
///
/// ```
/// let config = testdata::AgentTraceConfig { traces: 10, seed: 7, ..Default::default() };
/// assert_eq!(config.spans_per_trace, 25);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTraceConfig {
    /// Everything is a function of this seed (and the other fields).
    pub seed: u64,
    /// Number of traces (agent runs).
    pub traces: usize,
    /// Number of distinct sessions the traces are spread over (each session keeps one
    /// `session.id`, `gen_ai.conversation.id`, `user.id` and service). 0 is treated as 1.
    pub sessions: usize,
    /// Number of services (`<role>-agent-<i>`, e.g. `support-agent-0`). 0 is treated as 1.
    pub services: usize,
    /// Start of the time range; no wall clock is read.
    pub base_time_unix_nano: u64,
    /// Average spans per trace; each trace draws its own target in 60%..140% of this (at least 2:
    /// the root and one model call).
    pub spans_per_trace: usize,
    /// Trace `i` starts in slot `i` of `[base, base + time_spread_ns)` cut into `traces` slots,
    /// so traces come out in start-time order. Spans of a trace may end after the range.
    pub time_spread_ns: u64,
    /// Percent of failed tool calls that the framework gave up on and that the model then
    /// issues again at its next step, as a new call with no `agent.retry.*` attributes (only
    /// inference can tell it is a retry). 0, the default, draws nothing, so traces are
    /// byte-for-byte those of a generator without this option.
    pub tool_reissue_percent: u32,
}

impl Default for AgentTraceConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            traces: 1_000,
            sessions: 10,
            services: 3,
            base_time_unix_nano: DEFAULT_BASE_TIME_UNIX_NANO,
            spans_per_trace: 25,
            time_spread_ns: 3_600 * SECOND,
            tool_reissue_percent: 0,
        }
    }
}

/// One generated agent run.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentTrace {
    /// The trace id shared by every span.
    pub trace_id: [u8; 16],
    /// The spans, grouped as an SDK would export them: one `ResourceSpans` for the agent's
    /// service, with a GenAI scope and (when tools made HTTP calls) an HTTP scope. Within a
    /// scope, spans are in end-time order (children before parents), as batch exporters send them.
    pub resource_spans: Vec<ResourceSpans>,
    /// Total number of spans in `resource_spans`.
    pub spans: usize,
    /// `service.name` of the resource.
    pub service_name: String,
    /// `session.id` on the root span.
    pub session_id: String,
    /// Start of the root span.
    pub start_time_unix_nano: u64,
    /// End of the root span (every span ends at or before it).
    pub end_time_unix_nano: u64,
}

/// Iterator over the traces of a config, produced one at a time (see [`agent_trace_iter`]).
#[derive(Debug, Clone)]
pub struct AgentTraceIter {
    generator: Generator,
    next: usize,
}

/// Yields the `config.traces` agent runs of `config`, in start-time order, one at a time, so
/// millions of spans never have to be in memory together.
///
/// ```
/// let config = testdata::AgentTraceConfig { traces: 3, ..Default::default() };
/// let traces: Vec<_> = testdata::agent_trace_iter(&config).collect();
/// assert_eq!(traces.len(), 3);
/// assert!(traces.iter().all(|trace| trace.spans >= 2));
/// ```
pub fn agent_trace_iter(config: &AgentTraceConfig) -> AgentTraceIter {
    AgentTraceIter {
        generator: Generator::new(config),
        next: 0,
    }
}

/// Trace number `index` of `config` (the same value `agent_trace_iter` yields at that position),
/// for callers that generate traces in parallel. `index` may exceed `config.traces`; its start
/// time then lies after the configured range.
pub fn agent_trace(config: &AgentTraceConfig, index: usize) -> AgentTrace {
    Generator::new(config).trace(index)
}

impl Iterator for AgentTraceIter {
    type Item = AgentTrace;

    fn next(&mut self) -> Option<AgentTrace> {
        if self.next >= self.generator.config.traces {
            return None;
        }
        let trace = self.generator.trace(self.next);
        self.next += 1;
        Some(trace)
    }

    /// Jumps to trace `n` without generating the ones before it (so `skip` is cheap).
    fn nth(&mut self, n: usize) -> Option<AgentTrace> {
        self.advance(n);
        self.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.generator.config.traces.saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for AgentTraceIter {}

impl AgentTraceIter {
    /// Labels the model's reissues of failed tool calls (see
    /// [`AgentTraceConfig::tool_reissue_percent`]) as retries: the reissue's attempts carry
    /// `agent.retry.attempt` counting on from the failed call's last attempt (so its first
    /// attempt is that + 1), `agent.retry.group_id` = the first call's `gen_ai.tool.call.id`,
    /// and `agent.retry.initiator` = `model` on the reissue itself (`framework` on the
    /// framework's retries of it). Every tool call that is a retry then says so. Nothing else
    /// changes: no random number is drawn for the labels, so with every `agent.retry.*`
    /// attribute removed the traces are those of the unlabelled generator.
    ///
    /// ```
    /// let config = testdata::AgentTraceConfig { traces: 5, tool_reissue_percent: 100, ..Default::default() };
    /// let labelled: Vec<_> = testdata::agent_trace_iter(&config).label_reissues().collect();
    /// assert_eq!(labelled.len(), 5);
    /// ```
    #[must_use]
    pub fn label_reissues(mut self) -> Self {
        self.generator.label_reissues = true;
        self
    }

    /// Skips `n` traces without generating them.
    pub(crate) fn advance(&mut self, n: usize) {
        self.next = self.next.saturating_add(n);
    }
}

/// Per-service values computed once per generator.
#[derive(Debug, Clone)]
struct Service {
    name: String,
    role: &'static Role,
    model: &'static Model,
    sub_model: &'static Model,
    agent_id: String,
    sub_agent_id: String,
    temperature: f64,
    resource: Resource,
}

#[derive(Debug, Clone)]
struct Generator {
    config: AgentTraceConfig,
    services: Vec<Service>,
    /// [`AgentTraceIter::label_reissues`].
    label_reissues: bool,
}

impl Generator {
    fn new(config: &AgentTraceConfig) -> Self {
        let services = (0..config.services.max(1))
            .map(|index| service(config.seed, index))
            .collect();
        Self {
            config: config.clone(),
            services,
            label_reissues: false,
        }
    }

    fn trace(&self, index: usize) -> AgentTrace {
        let config = &self.config;
        let mut rng = SplitMix64::derive(config.seed, STREAM_TRACE, index as u64);

        let sessions = config.sessions.max(1);
        let session_index = rng.below(sessions as u64) as usize;
        let session = session(config.seed, session_index, sessions);
        let service = &self.services[session_index % self.services.len()];

        let slots = config.traces.max(1) as u128;
        let spread = u128::from(config.time_spread_ns);
        let slot_start = spread * index as u128 / slots;
        let slot_width = (spread / slots).max(1) as u64;
        let start = config
            .base_time_unix_nano
            .saturating_add(slot_start as u64)
            .saturating_add(rng.below(slot_width));

        let spans_per_trace = config.spans_per_trace.max(2) as f64;
        let target = ((spans_per_trace * (0.6 + 0.8 * rng.unit())) as usize).max(2);

        let mut builder = TraceBuilder {
            trace_id: rng.nonzero_bytes(),
            rng,
            service,
            tool_reissue_percent: config.tool_reissue_percent.min(100),
            label_reissues: self.label_reissues,
            used_span_ids: HashSet::new(),
            genai: Vec::new(),
            http: Vec::new(),
        };
        let (root, end) = builder.root(start, target, &session);
        builder.genai.push(root);
        builder.finish(session.session_id, start, end)
    }
}

fn service(seed: u64, index: usize) -> Service {
    let mut rng = SplitMix64::derive(seed, STREAM_SERVICE, index as u64);
    let role = &ROLES[index % ROLES.len()];
    let name = format!("{}-agent-{index}", role.role);
    let model = &MODELS[index % MODELS.len()];
    let sub_model = &MODELS[(index + 3) % MODELS.len()];
    let instance_id = {
        let hex = rng.hex(32);
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    };
    let resource = Resource {
        attributes: vec![
            string("service.name", &name),
            string("service.namespace", "agents"),
            string(
                "service.version",
                &format!("2.{}.{}", index % 4, rng.below(10)),
            ),
            string("service.instance.id", &instance_id),
            string("deployment.environment.name", "production"),
            string("host.name", &format!("{}-{}", name, rng.hex(5))),
            string("process.runtime.name", "cpython"),
            string("process.runtime.version", "3.12.11"),
            string("telemetry.sdk.name", "opentelemetry"),
            string("telemetry.sdk.language", "python"),
            string("telemetry.sdk.version", "1.38.0"),
        ],
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    };
    Service {
        name,
        role,
        model,
        sub_model,
        agent_id: format!("asst_{}", rng.alphanumeric(24)),
        sub_agent_id: format!("asst_{}", rng.alphanumeric(24)),
        temperature: *rng.pick(TEMPERATURES),
        resource,
    }
}

#[derive(Debug)]
struct Session {
    session_id: String,
    conversation_id: String,
    user_id: String,
}

fn session(seed: u64, index: usize, sessions: usize) -> Session {
    let mut rng = SplitMix64::derive(seed, STREAM_SESSION, index as u64);
    // About two sessions per user; a user's sessions share the user id.
    let users = sessions.div_ceil(2) as u64;
    let user = index as u64 % users;
    let mut user_rng = SplitMix64::derive(seed, STREAM_SESSION, u64::MAX - user);
    Session {
        session_id: format!("sess_{}", rng.hex(16)),
        conversation_id: format!("conv_{}", rng.alphanumeric(24)),
        user_id: format!("user_{}", user_rng.hex(10)),
    }
}

/// The agent a loop runs as: the root agent or its sub-agent.
#[derive(Debug, Clone, Copy)]
struct AgentIdentity<'a> {
    name: &'a str,
    id: &'a str,
    model: &'static Model,
    tools: &'static [Tool],
    nested: bool,
}

#[derive(Debug, Default)]
struct LoopOutcome {
    end: u64,
    input_tokens: i64,
    output_tokens: i64,
    /// `error.type` of a failure the agent gave up on.
    fatal_error: Option<&'static str>,
    denied: bool,
    content_filtered: bool,
}

#[derive(Debug)]
struct TraceBuilder<'a> {
    rng: SplitMix64,
    trace_id: [u8; 16],
    service: &'a Service,
    /// [`AgentTraceConfig::tool_reissue_percent`], at most 100.
    tool_reissue_percent: u32,
    /// [`AgentTraceIter::label_reissues`].
    label_reissues: bool,
    used_span_ids: HashSet<[u8; 8]>,
    genai: Vec<Span>,
    http: Vec<Span>,
}

impl TraceBuilder<'_> {
    fn span_count(&self) -> usize {
        self.genai.len() + self.http.len()
    }

    fn new_span_id(&mut self) -> [u8; 8] {
        loop {
            let id = self.rng.nonzero_bytes();
            if self.used_span_ids.insert(id) {
                return id;
            }
        }
    }

    /// A gap between consecutive operations, 0.1 to 5 ms.
    fn gap(&mut self) -> u64 {
        self.rng.skewed(100_000, 5 * MS)
    }

    /// Builds the whole run below the root and returns the root span and its end time.
    fn root(&mut self, start: u64, target: usize, session: &Session) -> (Span, u64) {
        let span_id = self.new_span_id();
        let service = self.service;
        let agent = AgentIdentity {
            name: service.role.agent_name,
            id: &service.agent_id,
            model: service.model,
            tools: service.role.tools,
            nested: false,
        };
        let outcome = self.agent_loop(span_id, agent, start, target);
        let end = outcome.end + self.rng.range(200_000, 3 * MS);

        let agent_outcome = if outcome.content_filtered || (outcome.denied && self.rng.chance(0.4))
        {
            "refused"
        } else if outcome.fatal_error.is_some() {
            "error"
        } else {
            "success"
        };
        let mut attributes = vec![
            string("gen_ai.operation.name", "invoke_agent"),
            string("gen_ai.agent.name", agent.name),
            string("gen_ai.agent.id", agent.id),
            string("gen_ai.conversation.id", &session.conversation_id),
            string("session.id", &session.session_id),
            string("user.id", &session.user_id),
            int("gen_ai.usage.input_tokens", outcome.input_tokens),
            int("gen_ai.usage.output_tokens", outcome.output_tokens),
            string("agent.outcome", agent_outcome),
        ];
        let status = match outcome.fatal_error {
            Some(error_type) if agent_outcome == "error" => {
                attributes.push(string("error.type", error_type));
                error_status(&format!("agent run failed: {error_type}"))
            }
            _ => None,
        };
        let span = self.span(SpanInit {
            name: format!("invoke_agent {}", agent.name),
            kind: SpanKind::Internal,
            span_id,
            parent: None,
            start,
            end,
            attributes,
            events: Vec::new(),
            status,
        });
        (span, end)
    }

    /// The agent loop: model call, tool calls, model call, ... until the span budget `limit`
    /// (a total span count for the trace) is nearly used, then a final answer.
    fn agent_loop(
        &mut self,
        parent: [u8; 8],
        agent: AgentIdentity<'_>,
        start: u64,
        limit: usize,
    ) -> LoopOutcome {
        let mut outcome = LoopOutcome::default();
        let mut cursor = start + self.rng.range(50_000, 2 * MS);
        let mut context_tokens = self.rng.range(600, 4_000) as i64;
        // A failed tool call the model issues again at its next step.
        let mut reissue: Option<Reissue> = None;
        loop {
            // Room for this model call, at least one tool call and the final model call.
            let final_step = limit.saturating_sub(self.span_count()) < 3;
            let chat = self.chat(parent, agent, cursor, context_tokens, final_step);
            cursor = chat.end;
            outcome.input_tokens += chat.input_tokens;
            outcome.output_tokens += chat.output_tokens;
            context_tokens += chat.output_tokens;
            if let Some(error_type) = chat.fatal_error {
                outcome.fatal_error = Some(error_type);
                break;
            }
            if final_step {
                outcome.content_filtered |= chat.content_filtered;
                break;
            }

            // One tool call usually, sometimes a few (in parallel half of the time); keep one
            // span for the final model call.
            let room = limit.saturating_sub(self.span_count() + 1).clamp(1, 3);
            let calls = (*self.rng.weighted(&[(1usize, 70), (2, 22), (3, 8)])).min(room);
            let parallel = calls > 1 && self.rng.chance(0.5);
            let mut call_start = cursor + self.gap();
            let mut step_end = cursor;
            let mut reissued = None;
            for _ in 0..calls {
                let room = limit.saturating_sub(self.span_count());
                let forced = reissue.take();
                let end = if forced.is_none() && !agent.nested && room >= 6 && self.rng.chance(0.1)
                {
                    self.sub_agent(parent, call_start, room, &mut outcome)
                } else {
                    let call = self.tool_call(parent, agent, call_start, forced, &mut outcome);
                    reissued = reissued.or(call.reissue);
                    call.end
                };
                step_end = step_end.max(end);
                if !parallel {
                    call_start = end + self.gap();
                }
                context_tokens += self.rng.range(50, 1_500) as i64;
            }
            cursor = step_end + self.gap();
            reissue = reissued;
        }
        outcome.end = cursor;
        outcome
    }

    fn sub_agent(
        &mut self,
        parent: [u8; 8],
        start: u64,
        room: usize,
        outcome: &mut LoopOutcome,
    ) -> u64 {
        let span_id = self.new_span_id();
        let service = self.service;
        let agent = AgentIdentity {
            name: service.role.sub_agent_name,
            id: &service.sub_agent_id,
            model: service.sub_model,
            tools: service.role.tools,
            nested: true,
        };
        // The sub-agent gets part of the remaining budget; the caller keeps room to finish.
        let budget = (room - 2).min(3 + self.rng.below(6) as usize);
        let limit = self.span_count() + budget;
        let inner = self.agent_loop(span_id, agent, start, limit);
        let end = inner.end + self.rng.range(100_000, MS);
        outcome.input_tokens += inner.input_tokens;
        outcome.output_tokens += inner.output_tokens;
        outcome.denied |= inner.denied;
        let mut attributes = vec![
            string("gen_ai.operation.name", "invoke_agent"),
            string("gen_ai.agent.name", agent.name),
            string("gen_ai.agent.id", agent.id),
            int("gen_ai.usage.input_tokens", inner.input_tokens),
            int("gen_ai.usage.output_tokens", inner.output_tokens),
        ];
        // A failed sub-agent is reported to the parent agent, which carries on.
        let status = inner.fatal_error.and_then(|error_type| {
            attributes.push(string("error.type", error_type));
            error_status(&format!("sub-agent failed: {error_type}"))
        });
        let span = self.span(SpanInit {
            name: format!("invoke_agent {}", agent.name),
            kind: SpanKind::Internal,
            span_id,
            parent: Some(parent),
            start,
            end,
            attributes,
            events: Vec::new(),
            status,
        });
        self.genai.push(span);
        end
    }

    /// One logical model call: a failed attempt is retried by the client library (each attempt
    /// is its own span, tagged with `agent.retry.*`), or, rarely, given up on.
    fn chat(
        &mut self,
        parent: [u8; 8],
        agent: AgentIdentity<'_>,
        start: u64,
        input_tokens: i64,
        final_step: bool,
    ) -> ChatResult {
        let mut attempt_start = start;
        let mut attempt = 0u32;
        let mut retrying = false;
        let mut group_id = String::new();
        let mut previous_failure = "";
        loop {
            let failure = if self.rng.chance(0.04) {
                Some(*self.rng.weighted(CHAT_ERRORS))
            } else {
                None
            };
            let will_retry = failure.is_some() && attempt < 2 && self.rng.chance(0.95);
            if will_retry && !retrying {
                retrying = true;
                group_id = format!(
                    "{}{}",
                    agent.model.response_id_prefix,
                    self.rng.alphanumeric(12)
                );
            }
            let retry = retrying.then(|| RetryTag {
                attempt,
                group_id: group_id.as_str(),
                reason: retry_reason(previous_failure),
            });
            let attempt_result = self.chat_attempt(ChatAttempt {
                parent,
                agent,
                start: attempt_start,
                input_tokens,
                final_step,
                failure,
                retry,
            });
            match failure {
                None => return attempt_result,
                Some(error_type) if !will_retry => {
                    return ChatResult {
                        fatal_error: Some(error_type),
                        ..attempt_result
                    };
                }
                Some(error_type) => {
                    previous_failure = error_type;
                    // Client-library backoff before the next attempt.
                    attempt_start = attempt_result.end + self.rng.skewed(200 * MS, 4 * SECOND);
                    attempt += 1;
                }
            }
        }
    }

    fn chat_attempt(&mut self, request: ChatAttempt<'_, '_>) -> ChatResult {
        let ChatAttempt {
            parent,
            agent,
            start,
            input_tokens,
            final_step,
            failure,
            retry,
        } = request;
        let model = agent.model;
        let span_id = self.new_span_id();
        let mut attributes = vec![
            string("gen_ai.operation.name", "chat"),
            string("gen_ai.provider.name", model.provider),
            string("gen_ai.request.model", model.request_model),
            double("gen_ai.request.temperature", self.service.temperature),
            int("gen_ai.request.max_tokens", 4_096),
            string("server.address", model.server_address),
            int("server.port", 443),
        ];
        if let Some(tag) = retry {
            attributes.push(int("agent.retry.attempt", i64::from(tag.attempt)));
            attributes.push(string("agent.retry.group_id", tag.group_id));
            attributes.push(string("agent.retry.initiator", "client_library"));
            if tag.attempt > 0 {
                attributes.push(string("agent.retry.reason", tag.reason));
            }
        }

        let mut result = ChatResult {
            end: start,
            input_tokens: 0,
            output_tokens: 0,
            fatal_error: None,
            content_filtered: false,
        };
        let status;
        if let Some(error_type) = failure {
            let duration = if error_type == "timeout" {
                self.rng.range(30 * SECOND, 60 * SECOND)
            } else {
                self.rng.skewed(20 * MS, 1_500 * MS)
            };
            result.end = start + duration;
            attributes.push(string("error.type", error_type));
            status = error_status(&format!("model call failed: {error_type}"));
        } else {
            let (output_tokens, finish_reason) = if final_step {
                let reason =
                    *self
                        .rng
                        .weighted(&[("stop", 95), ("length", 3), ("content_filter", 2)]);
                (self.rng.skewed(60, 1_200) as i64, reason)
            } else {
                (self.rng.range(15, 220) as i64, "tool_calls")
            };
            let first_token = self.rng.skewed(150 * MS, 1_500 * MS) + input_tokens as u64 * 20_000;
            let per_token = self.rng.range(6 * MS, 25 * MS);
            result.end = start + first_token + output_tokens as u64 * per_token;
            result.input_tokens = input_tokens;
            result.output_tokens = output_tokens;
            result.content_filtered = finish_reason == "content_filter";
            attributes.push(string("gen_ai.response.model", model.response_model));
            attributes.push(string(
                "gen_ai.response.id",
                &format!("{}{}", model.response_id_prefix, self.rng.alphanumeric(24)),
            ));
            attributes.push(string_array(
                "gen_ai.response.finish_reasons",
                &[finish_reason],
            ));
            attributes.push(int("gen_ai.usage.input_tokens", input_tokens));
            attributes.push(int("gen_ai.usage.output_tokens", output_tokens));
            if input_tokens >= 1_024 && self.rng.chance(0.6) {
                // Cached prefix, in whole 128-token blocks; part of the input count, never added.
                let cached = (input_tokens * self.rng.range(30, 90) as i64 / 100) / 128 * 128;
                attributes.push(int("gen_ai.usage.cache_read.input_tokens", cached));
            }
            status = None;
        }
        let span = self.span(SpanInit {
            name: format!("chat {}", model.request_model),
            kind: SpanKind::Client,
            span_id,
            parent: Some(parent),
            start,
            end: result.end,
            attributes,
            events: Vec::new(),
            status,
        });
        self.genai.push(span);
        result
    }

    /// One logical tool call of `forced` (or of a tool drawn from the agent's): possibly gated by
    /// a policy decision (and a human approval), possibly failing and retried by the framework.
    fn tool_call(
        &mut self,
        parent: [u8; 8],
        agent: AgentIdentity<'_>,
        start: u64,
        forced: Option<Reissue>,
        outcome: &mut LoopOutcome,
    ) -> ToolCall {
        let tool = match &forced {
            Some(reissue) => reissue.tool,
            None => self.rng.pick(agent.tools),
        };
        let call_id = format!(
            "{}{}",
            agent.model.tool_call_id_prefix,
            self.rng.alphanumeric(24)
        );
        // Arguments only when reissues are on (no change to default traces): a reissue repeats
        // the failed call's; a new call's are its own (derived from its id, no random draw).
        let arguments = (self.tool_reissue_percent > 0).then(|| match &forced {
            Some(reissue) => reissue.arguments.clone(),
            None => format!("{{\"tool\":\"{}\",\"request\":\"{call_id}\"}}", tool.name),
        });
        // With labelled reissues, a reissue's attempts count on from the failed call's, in the
        // failed call's retry group.
        let (first_attempt, group_id) = match &forced {
            Some(reissue) if self.label_reissues => {
                (reissue.next_attempt, reissue.group_id.clone())
            }
            _ => (0, call_id.clone()),
        };
        let mut attempt_start = start;
        let mut attempt = 0u32;
        let mut retrying = first_attempt > 0;
        loop {
            let span_id = self.new_span_id();
            let mut attributes = vec![
                string("gen_ai.operation.name", "execute_tool"),
                string("gen_ai.tool.name", tool.name),
                string("gen_ai.tool.call.id", &call_id),
                string("gen_ai.tool.type", tool.tool_type),
                string("gen_ai.agent.name", agent.name),
                string("agent.tool.risk_tier", tool.risk.risk_tier()),
            ];
            if let Some(arguments) = &arguments {
                attributes.push(string("gen_ai.tool.call.arguments", arguments));
            }
            let mut events = Vec::new();
            let mut cursor = attempt_start + self.rng.range(20_000, MS);

            // Policy check before the first attempt runs.
            let mut execute = true;
            if attempt == 0 && tool.risk.is_gated() && self.rng.chance(0.6) {
                let gate = self.gate(tool, cursor);
                events.extend(gate.events);
                attributes.extend(gate.span_attributes);
                cursor = gate.end;
                execute = gate.execute;
                outcome.denied |= !gate.execute;
            }

            let failure = if execute && self.rng.chance(0.07) {
                Some(*self.rng.pick(tool.error_types))
            } else {
                None
            };
            if execute {
                cursor += self.rng.skewed(tool.min_ms * MS, tool.max_ms * MS);
                if let Some((method, host, path)) = tool.http {
                    cursor = self.http_calls(span_id, method, host, path, cursor, failure);
                }
                // Read tools sometimes get their output screened by a guardrail.
                if tool.risk == Risk::Read && self.rng.chance(0.05) {
                    cursor += self.rng.range(MS, 20 * MS);
                    events.push(self.output_guardrail(tool, cursor));
                }
            }
            let end = cursor + self.rng.range(50_000, 2 * MS);

            let will_retry = failure.is_some() && attempt < 2 && self.rng.chance(0.6);
            retrying |= will_retry;
            if retrying {
                let label = first_attempt + attempt;
                let initiator = if first_attempt > 0 && attempt == 0 {
                    "model"
                } else {
                    "framework"
                };
                attributes.push(int("agent.retry.attempt", i64::from(label)));
                attributes.push(string("agent.retry.group_id", &group_id));
                attributes.push(string("agent.retry.initiator", initiator));
                if label > 0 {
                    attributes.push(string("agent.retry.reason", "tool_error"));
                }
            }
            let status = failure.and_then(|error_type| {
                attributes.push(string("error.type", error_type));
                error_status(&format!("tool {} failed: {error_type}", tool.name))
            });
            let span = self.span(SpanInit {
                name: format!("execute_tool {}", tool.name),
                kind: SpanKind::Internal,
                span_id,
                parent: Some(parent),
                start: attempt_start,
                end,
                attributes,
                events,
                status,
            });
            self.genai.push(span);

            match failure {
                None => return ToolCall { end, reissue: None },
                Some(error_type) if !will_retry => {
                    // The model sees the error and carries on; the run fails only sometimes.
                    if self.rng.chance(0.3) {
                        outcome.fatal_error = Some(error_type);
                    }
                    // No draw at all when the option is off, so default traces stay the same.
                    let reissue = self.tool_reissue_percent > 0
                        && self.rng.below(100) < u64::from(self.tool_reissue_percent);
                    return ToolCall {
                        end,
                        reissue: reissue.then(|| Reissue {
                            tool,
                            arguments: arguments.clone().unwrap_or_default(),
                            next_attempt: first_attempt + attempt + 1,
                            group_id: group_id.clone(),
                        }),
                    };
                }
                Some(_) => {
                    attempt_start = end + self.rng.skewed(50 * MS, 2 * SECOND);
                    attempt += 1;
                }
            }
        }
    }

    /// An `agent.decision` event from the policy engine before a risky tool runs, and for
    /// escalations the human `agent.approval` that resolved it.
    fn gate(&mut self, tool: &Tool, at: u64) -> Gate {
        let verdict =
            *self
                .rng
                .weighted(&[("allow", 70), ("warn", 8), ("deny", 10), ("escalate", 12)]);
        let kind = if verdict == "escalate" {
            "approval"
        } else {
            *self
                .rng
                .weighted(&[("policy", 70), ("guardrail", 20), ("authorization", 10)])
        };
        let decision_id = format!("dec_{}", self.rng.hex(16));
        let (policy_id, reasoning) = tool
            .policy
            .unwrap_or(("tools.default", "tool call outside the agent's usual scope"));
        let decided_at = at + self.rng.range(100_000, 3 * MS);
        let mut attributes = vec![
            string("agent.decision.id", &decision_id),
            string("agent.decision.kind", kind),
            string("agent.decision.stage", "tool_call"),
            string("agent.decision.verdict", verdict),
            string("agent.decision.policy.id", policy_id),
            string("agent.decision.risk", tool.risk.decision_risk()),
            string("agent.decision.component", "policy-engine"),
            boolean(
                "agent.decision.reversible",
                matches!(tool.risk, Risk::Read | Risk::Write),
            ),
        ];
        if verdict != "allow" || self.rng.chance(0.3) {
            attributes.push(string("agent.decision.reasoning", reasoning));
        }
        // Like many real instrumentations, half of the decisions (by their id, no random draw)
        // are also recorded as the same attributes on the gated span: one decision, two forms.
        let span_attributes = if decision_id.as_bytes()[4] < b'8' {
            attributes.clone()
        } else {
            Vec::new()
        };
        let mut events = vec![event("agent.decision", decided_at, attributes)];

        let mut end = decided_at;
        let execute = match verdict {
            "deny" => false,
            "escalate" => {
                let status =
                    *self
                        .rng
                        .weighted(&[("approved", 75), ("rejected", 15), ("expired", 10)]);
                end += if status == "expired" {
                    300 * SECOND
                } else {
                    self.rng.skewed(3 * SECOND, 180 * SECOND)
                };
                let approver = format!("approver_{}", self.rng.range(1, 12));
                events.push(event(
                    "agent.approval",
                    end,
                    vec![
                        string("agent.approval.decision_id", &decision_id),
                        string("agent.approval.status", status),
                        string("agent.approval.approver.type", "human"),
                        string("agent.approval.approver.id", &approver),
                    ],
                ));
                status == "approved"
            }
            _ => true,
        };
        Gate {
            events,
            span_attributes,
            end,
            execute,
        }
    }

    fn output_guardrail(&mut self, tool: &Tool, at: u64) -> Event {
        let verdict = *self
            .rng
            .weighted(&[("allow", 85), ("warn", 10), ("modify", 5)]);
        let mut attributes = vec![
            string("agent.decision.id", &format!("dec_{}", self.rng.hex(16))),
            string("agent.decision.kind", "guardrail"),
            string("agent.decision.stage", "tool_result"),
            string("agent.decision.verdict", verdict),
            string("agent.decision.policy.id", "pii.output_redaction"),
            string("agent.decision.risk", tool.risk.decision_risk()),
            string("agent.decision.component", "output-guardrail"),
        ];
        if verdict != "allow" {
            attributes.push(string(
                "agent.decision.reasoning",
                "tool output contains an email address",
            ));
        }
        event("agent.decision", at, attributes)
    }

    /// The tool's outgoing HTTP request as a CLIENT child span, preceded by a failed attempt that
    /// the HTTP client resent (5%). `failure` makes the last request fail. Returns its end.
    fn http_calls(
        &mut self,
        parent: [u8; 8],
        method: &str,
        host: &str,
        path: &str,
        start: u64,
        failure: Option<&str>,
    ) -> u64 {
        let url = if path.ends_with('/') {
            format!("https://{host}{path}{}", self.rng.range(10_000, 99_999))
        } else {
            format!("https://{host}{path}")
        };
        let mut cursor = start;
        let resent = self.rng.chance(0.05);
        for resend_count in 0..=u32::from(resent) {
            let last = resend_count == u32::from(resent);
            let span_id = self.new_span_id();
            let request_start = cursor + self.rng.range(20_000, 500_000);
            let error_type = match failure {
                Some(error_type) if last => Some(error_type),
                _ if !last => Some("503"),
                _ => None,
            };
            let duration = if error_type == Some("timeout") {
                self.rng.range(10 * SECOND, 30 * SECOND)
            } else {
                self.rng.skewed(2 * MS, 800 * MS)
            };
            let end = request_start + duration;
            let mut attributes = vec![
                string("http.request.method", method),
                string("url.full", &url),
                string("server.address", host),
                int("server.port", 443),
                string("network.protocol.version", "1.1"),
            ];
            if resend_count > 0 {
                attributes.push(int("http.request.resend_count", i64::from(resend_count)));
            }
            // No response, hence no status code, on a timeout.
            let status_code = match error_type {
                None => Some(if method == "POST" { 201 } else { 200 }),
                Some("timeout") => None,
                // Application errors (PaymentDeclined, ...) come back as 422.
                Some(code) => Some(
                    code.parse::<i64>()
                        .ok()
                        .filter(|code| *code >= 400)
                        .unwrap_or(422),
                ),
            };
            if let Some(code) = status_code {
                attributes.push(int("http.response.status_code", code));
            }
            let status = match (error_type, status_code) {
                (Some(_), Some(code)) => {
                    attributes.push(string("error.type", &code.to_string()));
                    error_status("")
                }
                (Some("timeout"), None) => {
                    attributes.push(string("error.type", "httpx.ReadTimeout"));
                    error_status("timed out")
                }
                _ => None,
            };
            let span = self.span(SpanInit {
                name: method.to_owned(),
                kind: SpanKind::Client,
                span_id,
                parent: Some(parent),
                start: request_start,
                end,
                attributes,
                events: Vec::new(),
                status,
            });
            self.http.push(span);
            cursor = end;
        }
        cursor + self.rng.range(50_000, 3 * MS)
    }

    fn span(&self, init: SpanInit) -> Span {
        debug_assert!(init.start <= init.end, "span ends before it starts");
        Span {
            trace_id: self.trace_id.to_vec(),
            span_id: init.span_id.to_vec(),
            trace_state: String::new(),
            parent_span_id: init.parent.map(|id| id.to_vec()).unwrap_or_default(),
            flags: SPAN_FLAGS,
            name: init.name,
            kind: init.kind as i32,
            start_time_unix_nano: init.start,
            end_time_unix_nano: init.end,
            attributes: init.attributes,
            dropped_attributes_count: 0,
            events: init.events,
            dropped_events_count: 0,
            links: Vec::new(),
            dropped_links_count: 0,
            status: init.status,
        }
    }

    fn finish(mut self, session_id: String, start: u64, end: u64) -> AgentTrace {
        let spans = self.span_count();
        // Batch exporters send spans as they end: children before their parents.
        self.genai.sort_by_key(|span| span.end_time_unix_nano);
        self.http.sort_by_key(|span| span.end_time_unix_nano);
        let mut scope_spans = vec![ScopeSpans {
            scope: Some(scope(GENAI_SCOPE_NAME, GENAI_SCOPE_VERSION)),
            spans: self.genai,
            schema_url: GENAI_SCHEMA_URL.to_owned(),
        }];
        if !self.http.is_empty() {
            scope_spans.push(ScopeSpans {
                scope: Some(scope(HTTP_SCOPE_NAME, HTTP_SCOPE_VERSION)),
                spans: self.http,
                schema_url: String::new(),
            });
        }
        AgentTrace {
            trace_id: self.trace_id,
            resource_spans: vec![ResourceSpans {
                resource: Some(self.service.resource.clone()),
                scope_spans,
                schema_url: RESOURCE_SCHEMA_URL.to_owned(),
            }],
            spans,
            service_name: self.service.name.clone(),
            session_id,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
        }
    }
}

#[derive(Debug)]
struct SpanInit {
    name: String,
    kind: SpanKind,
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    start: u64,
    end: u64,
    attributes: Vec<KeyValue>,
    events: Vec<Event>,
    status: Option<Status>,
}

#[derive(Debug, Clone, Copy)]
struct ChatAttempt<'a, 'b> {
    parent: [u8; 8],
    agent: AgentIdentity<'a>,
    start: u64,
    input_tokens: i64,
    final_step: bool,
    failure: Option<&'static str>,
    /// Set when this call is part of a retry group.
    retry: Option<RetryTag<'b>>,
}

#[derive(Debug, Clone, Copy)]
struct RetryTag<'a> {
    attempt: u32,
    group_id: &'a str,
    /// `agent.retry.reason`, from the previous attempt's failure (unused on attempt 0).
    reason: &'static str,
}

/// `agent.retry.reason` for a model call retried after `error_type`.
fn retry_reason(error_type: &str) -> &'static str {
    match error_type {
        "rate_limit_exceeded" => "rate_limited",
        "timeout" => "timeout",
        _ => "error",
    }
}

#[derive(Debug, Clone, Copy)]
struct ChatResult {
    end: u64,
    input_tokens: i64,
    output_tokens: i64,
    fatal_error: Option<&'static str>,
    content_filtered: bool,
}

/// How a logical tool call ended.
#[derive(Debug, Clone)]
struct ToolCall {
    /// End of its last attempt.
    end: u64,
    /// The tool and its arguments, when it failed for good and the model will issue it again.
    reissue: Option<Reissue>,
}

/// A failed tool call the model issues again: the same tool with the same arguments, under a
/// new call id.
#[derive(Debug, Clone)]
struct Reissue {
    tool: &'static Tool,
    arguments: String,
    /// `agent.retry.attempt` of the reissue when reissues are labelled: the failed call's last
    /// attempt + 1.
    next_attempt: u32,
    /// `agent.retry.group_id` of the failed call (its first call's `gen_ai.tool.call.id`).
    group_id: String,
}

#[derive(Debug)]
struct Gate {
    events: Vec<Event>,
    /// The decision's attributes again, for the gated span (empty when only the event has it).
    span_attributes: Vec<KeyValue>,
    end: u64,
    execute: bool,
}

fn scope(name: &str, version: &str) -> InstrumentationScope {
    InstrumentationScope {
        name: name.to_owned(),
        version: version.to_owned(),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
    }
}

fn event(name: &str, time_unix_nano: u64, attributes: Vec<KeyValue>) -> Event {
    Event {
        time_unix_nano,
        name: name.to_owned(),
        attributes,
        dropped_attributes_count: 0,
    }
}

/// `Some(ERROR)` status; wrapped in `Option` to match the `Span::status` field.
fn error_status(message: &str) -> Option<Status> {
    Some(Status {
        message: message.to_owned(),
        code: StatusCode::Error as i32,
    })
}

fn key_value(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

fn string(key: &str, value: &str) -> KeyValue {
    key_value(key, Value::StringValue(value.to_owned()))
}

fn int(key: &str, value: i64) -> KeyValue {
    key_value(key, Value::IntValue(value))
}

fn double(key: &str, value: f64) -> KeyValue {
    key_value(key, Value::DoubleValue(value))
}

fn boolean(key: &str, value: bool) -> KeyValue {
    key_value(key, Value::BoolValue(value))
}

fn string_array(key: &str, values: &[&str]) -> KeyValue {
    let values = values
        .iter()
        .map(|value| AnyValue {
            value: Some(Value::StringValue((*value).to_owned())),
        })
        .collect();
    key_value(key, Value::ArrayValue(ArrayValue { values }))
}
