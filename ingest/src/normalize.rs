//! Agent columns: one span's attributes, events and status in, [`engine::AgentFields`] out
//! ([`agent_fields`]).
//!
//! Agent instrumentations speak several dialects (current and deprecated OpenTelemetry GenAI
//! keys, OpenInference, OpenLLMetry/Traceloop, Langfuse, the Vercel AI SDK, Sightline's own
//! `agent.*` keys, MCP). Each column has a fallback list of source keys; the first one that
//! holds a usable value wins. The lists, the value mappings, the decision table and the
//! `dialect` stamp are specified in `docs/conventions.md`; this module implements that page,
//! and a change to one is a change to the other. Raw keys are never removed: they stay in the
//! `attributes` column as sent.
//!
//! Only what the span itself says is resolved here. Propagating session, conversation and user
//! across the spans of a trace (and the `session_id := conversation_id` fallback) is the
//! engine's job.
//!
//! # Cost
//!
//! This runs for every span on the ingest path, so it makes one pass over the span's attributes
//! and one over its events. Each attribute key is recognised by its namespace first (a couple
//! of comparisons reject an unrelated key), and the first value of every recognised key is kept
//! in a fixed array indexed by [`Key`]; the columns then read their fallback lists from that
//! array. Values are borrowed from the request (the model in `llm.invocation_parameters` is
//! found by a scan, not a parse). Allocation happens only where a value has to be rewritten:
//! lower-casing, an integer used as an id, a JSON string with escapes, a finish-reason array
//! sent as JSON, the finish-reason list itself, and indexed `gen_ai.completion.{i}.finish_reason`
//! keys. `gen_ai.output.messages` is parsed (only the `finish_reason` members are decoded) when
//! no other key gave finish reasons.

use std::borrow::Cow;
use std::sync::OnceLock;

use engine::AgentFields;

use crate::content::ExtractedFinishReasons;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

/// OTLP `STATUS_CODE_ERROR`.
const STATUS_CODE_ERROR: i32 = 2;

/// Resolves the agent columns of one span (see the module docs and `docs/conventions.md`).
/// `extracted`: the finish reasons of output messages that content extraction replaced by a
/// reference (empty when the request was not extracted).
pub(crate) fn agent_fields<'a>(
    span: &'a Span,
    extracted: &'a ExtractedFinishReasons,
) -> AgentFields<'a> {
    let mut found = Found::default();
    for pair in &span.attributes {
        let Some(key) = recognize(&pair.key) else {
            continue;
        };
        let slot = &mut found.values[key as usize];
        if slot.is_none() {
            *slot = pair.value.as_ref().and_then(|value| value.value.as_ref());
        }
    }
    let status_code = span.status.as_ref().map_or(0, |status| status.code);
    found.resolve(span, status_code, extracted)
}

/// A set of dialects, one bit each, in the order they are listed in the `dialect` column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Dialects(u8);

impl Dialects {
    /// Core OpenTelemetry keys (`session.id`, `error.type`, ...): no dialect stamp.
    const NONE: Dialects = Dialects(0);
    const GEN_AI: Dialects = Dialects(1);
    const GEN_AI_DEPRECATED: Dialects = Dialects(1 << 1);
    const OPENINFERENCE: Dialects = Dialects(1 << 2);
    const TRACELOOP: Dialects = Dialects(1 << 3);
    const LANGFUSE: Dialects = Dialects(1 << 4);
    const VERCEL_AI: Dialects = Dialects(1 << 5);
    const AGENT: Dialects = Dialects(1 << 6);
    const MCP: Dialects = Dialects(1 << 7);

    /// Names in bit order, which is the order of the `dialect` column.
    const NAMES: [&'static str; 8] = [
        "gen_ai",
        "gen_ai_deprecated",
        "openinference",
        "traceloop",
        "langfuse",
        "vercel_ai",
        "agent",
        "mcp",
    ];

    fn insert(&mut self, other: Dialects) {
        self.0 |= other.0;
    }

    /// The `dialect` column: names joined by `,`, or `None` for the empty set. The 255
    /// possible strings are built once, so no span allocates one.
    fn column(self) -> Option<&'static str> {
        static JOINED: OnceLock<Vec<String>> = OnceLock::new();
        if self.0 == 0 {
            return None;
        }
        let joined = JOINED.get_or_init(|| {
            (0..=u8::MAX)
                .map(|bits| {
                    let names: Vec<&str> = Dialects::NAMES
                        .iter()
                        .enumerate()
                        .filter(|(bit, _)| bits & (1 << bit) != 0)
                        .map(|(_, name)| *name)
                        .collect();
                    names.join(",")
                })
                .collect()
        });
        joined.get(usize::from(self.0)).map(String::as_str)
    }
}

/// Declares [`Key`] with its attribute name and dialect, from one list.
macro_rules! keys {
    ($($key:ident = $name:literal, $dialect:ident;)*) => {
        /// A span attribute key that feeds an agent column.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Key {
            $($key,)*
        }

        impl Key {
            /// Every key, in declaration order.
            #[cfg(test)]
            const ALL: &[Key] = &[$(Key::$key,)*];

            /// The attribute name (for the indexed completion key: index 0).
            #[cfg(test)]
            fn name(self) -> &'static str {
                match self {
                    $(Key::$key => $name,)*
                }
            }

            /// The dialect stamped when this key supplies a column.
            fn dialect(self) -> Dialects {
                match self {
                    $(Key::$key => Dialects::$dialect,)*
                }
            }
        }

        /// Number of [`Key`] variants.
        const KEY_COUNT: usize = [$(Key::$key,)*].len();
    };
}

keys! {
    // session_id
    SessionId = "session.id", NONE;
    LangfuseSessionId = "langfuse.session.id", LANGFUSE;
    TraceloopSessionId = "traceloop.association.properties.session_id", TRACELOOP;
    VercelSessionId = "ai.telemetry.metadata.sessionId", VERCEL_AI;
    LangfuseTraceMetadataSessionId = "langfuse.trace.metadata.langfuse_session_id", LANGFUSE;
    LangfuseObservationMetadataSessionId =
        "langfuse.observation.metadata.langfuse_session_id", LANGFUSE;
    // conversation_id
    ConversationId = "gen_ai.conversation.id", GEN_AI;
    // user_id
    UserId = "user.id", NONE;
    LangfuseUserId = "langfuse.user.id", LANGFUSE;
    EnduserId = "enduser.id", NONE;
    TraceloopUserId = "traceloop.association.properties.user_id", TRACELOOP;
    GenAiUser = "gen_ai.user", GEN_AI_DEPRECATED;
    LlmUser = "llm.user", TRACELOOP;
    VercelUserId = "ai.telemetry.metadata.userId", VERCEL_AI;
    // operation
    OperationName = "gen_ai.operation.name", GEN_AI;
    OpenInferenceSpanKind = "openinference.span.kind", OPENINFERENCE;
    TraceloopSpanKind = "traceloop.span.kind", TRACELOOP;
    LlmRequestType = "llm.request.type", TRACELOOP;
    LangfuseObservationType = "langfuse.observation.type", LANGFUSE;
    McpMethodName = "mcp.method.name", MCP;
    VercelOperationId = "ai.operationId", VERCEL_AI;
    // provider
    ProviderName = "gen_ai.provider.name", GEN_AI;
    GenAiSystem = "gen_ai.system", GEN_AI_DEPRECATED;
    LlmProvider = "llm.provider", OPENINFERENCE;
    LlmSystem = "llm.system", OPENINFERENCE;
    // request_model, response_model
    RequestModel = "gen_ai.request.model", GEN_AI;
    LlmRequestModelName = "llm.request.model_name", OPENINFERENCE;
    LlmInvocationParameters = "llm.invocation_parameters", OPENINFERENCE;
    LangfuseModelName = "langfuse.observation.model.name", LANGFUSE;
    ResponseModel = "gen_ai.response.model", GEN_AI;
    LlmResponseModelName = "llm.response.model_name", OPENINFERENCE;
    LlmModelName = "llm.model_name", OPENINFERENCE;
    // agent_name, agent_id, workflow_name
    AgentName = "gen_ai.agent.name", GEN_AI;
    OpenInferenceAgentName = "agent.name", OPENINFERENCE;
    TraceloopEntityName = "traceloop.entity.name", TRACELOOP;
    AgentId = "gen_ai.agent.id", GEN_AI;
    MainAgentId = "gen_ai.main_agent.id", GEN_AI;
    WorkflowName = "gen_ai.workflow.name", GEN_AI;
    TraceloopWorkflowName = "traceloop.workflow.name", TRACELOOP;
    LangfuseTraceName = "langfuse.trace.name", LANGFUSE;
    // tool_name, tool_call_id, tool_type, tool_risk
    ToolName = "gen_ai.tool.name", GEN_AI;
    OpenInferenceToolName = "tool.name", OPENINFERENCE;
    VercelToolCallName = "ai.toolCall.name", VERCEL_AI;
    McpToolName = "mcp.tool.name", MCP;
    ToolCallId = "gen_ai.tool.call.id", GEN_AI;
    OpenInferenceToolId = "tool.id", OPENINFERENCE;
    OpenInferenceToolCallId = "tool_call.id", OPENINFERENCE;
    VercelToolCallId = "ai.toolCall.id", VERCEL_AI;
    ToolType = "gen_ai.tool.type", GEN_AI;
    DecisionRisk = "agent.decision.risk", AGENT;
    ToolRiskTier = "agent.tool.risk_tier", AGENT;
    // Counts only next to `gen_ai.agent.tool.disposition` (a decision's risk).
    ToolTier = "gen_ai.agent.tool.tier", GEN_AI;
    // input_tokens
    InputTokens = "gen_ai.usage.input_tokens", GEN_AI;
    PromptTokens = "gen_ai.usage.prompt_tokens", GEN_AI_DEPRECATED;
    LlmPromptTokens = "llm.token_count.prompt", OPENINFERENCE;
    VercelPromptTokens = "ai.usage.promptTokens", VERCEL_AI;
    VercelInputTokens = "ai.usage.inputTokens", VERCEL_AI;
    // output_tokens
    OutputTokens = "gen_ai.usage.output_tokens", GEN_AI;
    CompletionTokens = "gen_ai.usage.completion_tokens", GEN_AI_DEPRECATED;
    LlmCompletionTokens = "llm.token_count.completion", OPENINFERENCE;
    VercelCompletionTokens = "ai.usage.completionTokens", VERCEL_AI;
    VercelOutputTokens = "ai.usage.outputTokens", VERCEL_AI;
    // cache_read_tokens
    CacheReadTokens = "gen_ai.usage.cache_read.input_tokens", GEN_AI;
    CacheReadInputTokens = "gen_ai.usage.cache_read_input_tokens", GEN_AI_DEPRECATED;
    LlmCacheReadTokens = "llm.token_count.prompt_details.cache_read", OPENINFERENCE;
    VercelCachedInputTokens = "ai.usage.cachedInputTokens", VERCEL_AI;
    // cache_write_tokens
    CacheWriteTokens = "gen_ai.usage.cache_write.input_tokens", GEN_AI;
    CacheCreationTokens = "gen_ai.usage.cache_creation.input_tokens", GEN_AI_DEPRECATED;
    CacheCreationInputTokens = "gen_ai.usage.cache_creation_input_tokens", GEN_AI_DEPRECATED;
    LlmCacheWriteTokens = "llm.token_count.prompt_details.cache_write", OPENINFERENCE;
    // reasoning_tokens
    ReasoningTokens = "gen_ai.usage.reasoning.output_tokens", GEN_AI;
    ReasoningTokensFlat = "gen_ai.usage.reasoning_tokens", GEN_AI_DEPRECATED;
    LlmUsageReasoningTokens = "llm.usage.reasoning_tokens", TRACELOOP;
    LlmReasoningTokens = "llm.token_count.completion_details.reasoning", OPENINFERENCE;
    VercelReasoningTokens = "ai.usage.reasoningTokens", VERCEL_AI;
    // finish_reasons
    FinishReasons = "gen_ai.response.finish_reasons", GEN_AI;
    LlmFinishReason = "llm.finish_reason", OPENINFERENCE;
    FinishReason = "gen_ai.response.finish_reason", GEN_AI_DEPRECATED;
    // Any `gen_ai.completion.{i}.finish_reason`; the slot only records that one is present.
    CompletionFinishReason = "gen_ai.completion.0.finish_reason", GEN_AI_DEPRECATED;
    // The `finish_reason` of each output message (last resort).
    OutputMessages = "gen_ai.output.messages", GEN_AI;
    // error_type, retry_attempt
    ErrorType = "error.type", NONE;
    RetryAttempt = "agent.retry.attempt", AGENT;
    HttpResendCount = "http.request.resend_count", NONE;
    // decision_verdict (span attributes; events are read separately)
    DecisionVerdict = "agent.decision.verdict", AGENT;
    GuardrailVerdict = "gen_ai.guardrail.verdict.type", GEN_AI;
    SecurityVerdict = "gen_ai.security.verdict.type", GEN_AI;
    ThreatDetectionAction = "agent.threat.detection.action", AGENT;
    DecisionOutcome = "gen_ai.agent.decision.outcome", GEN_AI;
    ToolDisposition = "gen_ai.agent.tool.disposition", GEN_AI;
}

/// The [`Key`] of an attribute name, or `None` for every other key. Dispatches on the
/// namespace (the text before the first `.`) so an unrelated key costs a few comparisons.
///
/// Written by hand for speed; the test `every_key_is_recognized_by_its_name` checks it against
/// the names declared in `keys!`.
fn recognize(name: &str) -> Option<Key> {
    use Key::*;
    let (namespace, rest) = name.split_once('.')?;
    let key = match namespace {
        "gen_ai" => return recognize_gen_ai(rest),
        "llm" => match rest {
            "user" => LlmUser,
            "request.type" => LlmRequestType,
            "provider" => LlmProvider,
            "system" => LlmSystem,
            "request.model_name" => LlmRequestModelName,
            "invocation_parameters" => LlmInvocationParameters,
            "response.model_name" => LlmResponseModelName,
            "model_name" => LlmModelName,
            "token_count.prompt" => LlmPromptTokens,
            "token_count.completion" => LlmCompletionTokens,
            "token_count.prompt_details.cache_read" => LlmCacheReadTokens,
            "token_count.prompt_details.cache_write" => LlmCacheWriteTokens,
            "usage.reasoning_tokens" => LlmUsageReasoningTokens,
            "token_count.completion_details.reasoning" => LlmReasoningTokens,
            "finish_reason" => LlmFinishReason,
            _ => return None,
        },
        "langfuse" => match rest {
            "session.id" => LangfuseSessionId,
            "trace.metadata.langfuse_session_id" => LangfuseTraceMetadataSessionId,
            "observation.metadata.langfuse_session_id" => LangfuseObservationMetadataSessionId,
            "user.id" => LangfuseUserId,
            "observation.type" => LangfuseObservationType,
            "observation.model.name" => LangfuseModelName,
            "trace.name" => LangfuseTraceName,
            _ => return None,
        },
        "traceloop" => match rest {
            "association.properties.session_id" => TraceloopSessionId,
            "association.properties.user_id" => TraceloopUserId,
            "span.kind" => TraceloopSpanKind,
            "entity.name" => TraceloopEntityName,
            "workflow.name" => TraceloopWorkflowName,
            _ => return None,
        },
        "ai" => match rest {
            "telemetry.metadata.sessionId" => VercelSessionId,
            "telemetry.metadata.userId" => VercelUserId,
            "operationId" => VercelOperationId,
            "toolCall.name" => VercelToolCallName,
            "toolCall.id" => VercelToolCallId,
            "usage.promptTokens" => VercelPromptTokens,
            "usage.inputTokens" => VercelInputTokens,
            "usage.completionTokens" => VercelCompletionTokens,
            "usage.outputTokens" => VercelOutputTokens,
            "usage.cachedInputTokens" => VercelCachedInputTokens,
            "usage.reasoningTokens" => VercelReasoningTokens,
            _ => return None,
        },
        "agent" => match rest {
            "name" => OpenInferenceAgentName,
            "decision.risk" => DecisionRisk,
            "decision.verdict" => DecisionVerdict,
            "tool.risk_tier" => ToolRiskTier,
            "retry.attempt" => RetryAttempt,
            "threat.detection.action" => ThreatDetectionAction,
            _ => return None,
        },
        "tool" => match rest {
            "name" => OpenInferenceToolName,
            "id" => OpenInferenceToolId,
            _ => return None,
        },
        "tool_call" if rest == "id" => OpenInferenceToolCallId,
        "session" if rest == "id" => SessionId,
        "user" if rest == "id" => UserId,
        "enduser" if rest == "id" => EnduserId,
        "error" if rest == "type" => ErrorType,
        "openinference" if rest == "span.kind" => OpenInferenceSpanKind,
        "mcp" => match rest {
            "method.name" => McpMethodName,
            "tool.name" => McpToolName,
            _ => return None,
        },
        "http" if rest == "request.resend_count" => HttpResendCount,
        _ => return None,
    };
    Some(key)
}

/// [`recognize`] for the text after `gen_ai.`.
fn recognize_gen_ai(rest: &str) -> Option<Key> {
    use Key::*;
    let (group, name) = rest.split_once('.').unwrap_or((rest, ""));
    let key = match (group, name) {
        ("usage", name) => match name {
            "input_tokens" => InputTokens,
            "prompt_tokens" => PromptTokens,
            "output_tokens" => OutputTokens,
            "completion_tokens" => CompletionTokens,
            "cache_read.input_tokens" => CacheReadTokens,
            "cache_read_input_tokens" => CacheReadInputTokens,
            "cache_write.input_tokens" => CacheWriteTokens,
            "cache_creation.input_tokens" => CacheCreationTokens,
            "cache_creation_input_tokens" => CacheCreationInputTokens,
            "reasoning.output_tokens" => ReasoningTokens,
            "reasoning_tokens" => ReasoningTokensFlat,
            _ => return None,
        },
        ("operation", "name") => OperationName,
        ("provider", "name") => ProviderName,
        ("system", "") => GenAiSystem,
        ("request", "model") => RequestModel,
        ("response", name) => match name {
            "model" => ResponseModel,
            "finish_reasons" => FinishReasons,
            "finish_reason" => FinishReason,
            _ => return None,
        },
        ("conversation", "id") => ConversationId,
        ("output", "messages") => OutputMessages,
        ("user", "") => GenAiUser,
        ("agent", name) => match name {
            "name" => AgentName,
            "id" => AgentId,
            "decision.outcome" => DecisionOutcome,
            "tool.disposition" => ToolDisposition,
            "tool.tier" => ToolTier,
            _ => return None,
        },
        ("main_agent", "id") => MainAgentId,
        ("workflow", "name") => WorkflowName,
        ("tool", name) => match name {
            "name" => ToolName,
            "call.id" => ToolCallId,
            "type" => ToolType,
            _ => return None,
        },
        ("guardrail", "verdict.type") => GuardrailVerdict,
        ("security", "verdict.type") => SecurityVerdict,
        ("completion", name) if completion_index(name).is_some() => CompletionFinishReason,
        _ => return None,
    };
    Some(key)
}

/// `i` of `{i}.finish_reason` (the rest of a `gen_ai.completion.{i}.finish_reason` key).
fn completion_index(rest: &str) -> Option<usize> {
    let index = rest.strip_suffix(".finish_reason")?;
    if index.is_empty() || !index.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    index.parse().ok()
}

/// The first value of each recognised key on one span.
#[derive(Debug)]
struct Found<'a> {
    values: [Option<&'a Value>; KEY_COUNT],
    dialects: Dialects,
}

impl Default for Found<'_> {
    fn default() -> Self {
        Found {
            values: [None; KEY_COUNT],
            dialects: Dialects::NONE,
        }
    }
}

impl<'a> Found<'a> {
    fn get(&self, key: Key) -> Option<&'a Value> {
        self.values[key as usize]
    }

    fn string(&self, key: Key) -> Option<&'a str> {
        self.get(key).and_then(string)
    }

    /// The first key of `keys` whose value `convert` accepts; stamps that key's dialect.
    fn first<T>(
        &mut self,
        keys: &[Key],
        mut convert: impl FnMut(Key, &'a Value) -> Option<T>,
    ) -> Option<T> {
        for &key in keys {
            if let Some(value) = self.get(key)
                && let Some(out) = convert(key, value)
            {
                self.dialects.insert(key.dialect());
                return Some(out);
            }
        }
        None
    }

    /// [`Found::first`] for plain text columns.
    fn first_text(&mut self, keys: &[Key]) -> Option<Cow<'a, str>> {
        self.first(keys, |_, value| text(value))
    }

    /// [`Found::first`] for counts (tokens, attempts).
    fn first_count(&mut self, keys: &[Key]) -> Option<i64> {
        self.first(keys, |_, value| count(value))
    }

    fn resolve(
        mut self,
        span: &'a Span,
        status_code: i32,
        extracted: &'a ExtractedFinishReasons,
    ) -> AgentFields<'a> {
        use Key::*;
        let session_id = self.first_text(&[
            SessionId,
            LangfuseSessionId,
            TraceloopSessionId,
            VercelSessionId,
            LangfuseTraceMetadataSessionId,
            LangfuseObservationMetadataSessionId,
        ]);
        let conversation_id = self.first_text(&[ConversationId]);
        let user_id = self.first_text(&[
            UserId,
            LangfuseUserId,
            EnduserId,
            TraceloopUserId,
            GenAiUser,
            LlmUser,
            VercelUserId,
        ]);
        let operation = self.first(
            &[
                OperationName,
                OpenInferenceSpanKind,
                TraceloopSpanKind,
                LlmRequestType,
                LangfuseObservationType,
                McpMethodName,
                VercelOperationId,
            ],
            |key, value| {
                let raw = string(value)?;
                match key {
                    OpenInferenceSpanKind => openinference_operation(raw).map(Cow::Borrowed),
                    TraceloopSpanKind => traceloop_operation(raw).map(Cow::Borrowed),
                    LlmRequestType => llm_request_type_operation(raw).map(Cow::Borrowed),
                    LangfuseObservationType => langfuse_operation(raw).map(Cow::Borrowed),
                    VercelOperationId => vercel_operation(raw).map(Cow::Borrowed),
                    _ => Some(Cow::Borrowed(raw)),
                }
            },
        );
        let provider = self.first(
            &[ProviderName, GenAiSystem, LlmProvider, LlmSystem],
            |key, value| {
                let raw = string(value)?;
                Some(match key {
                    ProviderName => Cow::Borrowed(raw),
                    GenAiSystem => gen_ai_system_provider(raw),
                    _ => openinference_provider(raw),
                })
            },
        );
        let request_model = self.first(
            &[
                RequestModel,
                LlmRequestModelName,
                LlmInvocationParameters,
                LangfuseModelName,
            ],
            |key, value| match key {
                LlmInvocationParameters => model_in_invocation_parameters(string(value)?),
                _ => text(value),
            },
        );
        let response_model = self.first_text(&[ResponseModel, LlmResponseModelName, LlmModelName]);

        let traceloop_kind = self.string(TraceloopSpanKind);
        let agent_name = self.first(
            &[AgentName, OpenInferenceAgentName, TraceloopEntityName],
            |key, value| match key {
                TraceloopEntityName if traceloop_kind != Some("agent") => None,
                _ => text(value),
            },
        );
        let agent_id = self.first_text(&[AgentId, MainAgentId]);
        let workflow_name =
            self.first_text(&[WorkflowName, TraceloopWorkflowName, LangfuseTraceName]);
        let mcp_tool_call = self.string(McpMethodName) == Some("tools/call");
        let tool_name = self.first(
            &[
                ToolName,
                OpenInferenceToolName,
                TraceloopEntityName,
                VercelToolCallName,
                McpToolName,
            ],
            |key, value| match key {
                TraceloopEntityName if traceloop_kind != Some("tool") => None,
                McpToolName if !mcp_tool_call => None,
                _ => text(value),
            },
        );
        let tool_call_id = self.first_text(&[
            ToolCallId,
            OpenInferenceToolId,
            OpenInferenceToolCallId,
            VercelToolCallId,
        ]);
        let tool_type = self.first_text(&[ToolType]);

        let counts_tokens = !self.is_aggregate_span(operation.as_deref());
        let mut tokens = |keys: &[Key]| {
            if counts_tokens {
                self.first_count(keys)
            } else {
                None
            }
        };
        let input_tokens = tokens(&[
            InputTokens,
            PromptTokens,
            LlmPromptTokens,
            VercelPromptTokens,
            VercelInputTokens,
        ]);
        let output_tokens = tokens(&[
            OutputTokens,
            CompletionTokens,
            LlmCompletionTokens,
            VercelCompletionTokens,
            VercelOutputTokens,
        ]);
        let cache_read_tokens = tokens(&[
            CacheReadTokens,
            CacheReadInputTokens,
            LlmCacheReadTokens,
            VercelCachedInputTokens,
        ]);
        let cache_write_tokens = tokens(&[
            CacheWriteTokens,
            CacheCreationTokens,
            CacheCreationInputTokens,
            LlmCacheWriteTokens,
        ]);
        let reasoning_tokens = tokens(&[
            ReasoningTokens,
            ReasoningTokensFlat,
            LlmUsageReasoningTokens,
            LlmReasoningTokens,
            VercelReasoningTokens,
        ]);

        let mut finish_reasons = self.first(
            &[FinishReasons, LlmFinishReason, FinishReason],
            |_, value| finish_reasons(value),
        );
        if finish_reasons.is_none() && self.get(CompletionFinishReason).is_some() {
            finish_reasons = indexed_completion_finish_reasons(span);
            if finish_reasons.is_some() {
                self.dialects.insert(CompletionFinishReason.dialect());
            }
        }
        if finish_reasons.is_none() {
            finish_reasons = self.first(&[OutputMessages], |_, value| match value {
                Value::StringValue(reference) if crate::content::is_reference_text(reference) => {
                    let reasons = extracted.get(reference.as_str())?;
                    Some(
                        reasons
                            .iter()
                            .map(|reason| Cow::Borrowed(reason.as_str()))
                            .collect(),
                    )
                }
                _ => output_message_finish_reasons(value),
            });
        }

        let retry_attempt = self.first_count(&[RetryAttempt, HttpResendCount]);

        // Decisions: span attributes, then events in order; the strongest verdict wins, the
        // first of equals on a tie. Only the winner's dialect is stamped.
        let mut strongest = Strongest::default();
        // Risks of the span's decisions, gathered along: span attributes first (as the
        // decisions are listed in `docs/sql.md`), then events in order.
        let mut riskiest = Riskiest::default();
        if let Some(risk) = self.get(DecisionRisk).and_then(text) {
            riskiest.offer(risk, DecisionRisk.dialect());
        }
        if self.get(ToolDisposition).is_some()
            && let Some(tier) = self.get(ToolTier).and_then(text)
        {
            riskiest.offer(tier, ToolTier.dialect());
        }
        let span_decisions: [(Key, VerdictMapping); 6] = [
            (DecisionVerdict, Verdict::parse),
            (GuardrailVerdict, Verdict::parse),
            (SecurityVerdict, Verdict::parse),
            (ThreatDetectionAction, Verdict::from_threat_detection_action),
            (DecisionOutcome, Verdict::from_decision_outcome),
            (ToolDisposition, Verdict::from_tool_disposition),
        ];
        for (key, parse) in span_decisions {
            strongest.offer(self.string(key).and_then(parse), key.dialect());
        }
        let events = EventFacts::of(span, &mut strongest, &mut riskiest);
        if self.string(OpenInferenceSpanKind) == Some("GUARDRAIL")
            && status_code == STATUS_CODE_ERROR
        {
            strongest.offer(Some(Verdict::Deny), Dialects::OPENINFERENCE);
        }
        if finish_reasons
            .as_ref()
            .is_some_and(|reasons| reasons.iter().any(|reason| reason == "content_filter"))
        {
            // The finish-reason key already stamped its dialect.
            strongest.offer(Some(Verdict::Deny), Dialects::NONE);
        }
        let decision_verdict = strongest
            .verdict
            .map(|verdict| Cow::Borrowed(verdict.as_str()));
        self.dialects.insert(strongest.dialects);

        // The span's own risk class, else the most severe risk of its decisions.
        let mut tool_risk = self.first_text(&[ToolRiskTier]);
        if tool_risk.is_none()
            && let Some(risk) = riskiest.risk
        {
            tool_risk = Some(risk);
            self.dialects.insert(riskiest.dialects);
        }

        let mut error_type = self.first_text(&[ErrorType]);
        if error_type.is_none()
            && let Some((exception_type, dialect)) = events.exception_type
        {
            error_type = Some(exception_type);
            self.dialects.insert(dialect);
        }
        if error_type.is_none() && status_code == STATUS_CODE_ERROR {
            error_type = Some(Cow::Borrowed("_OTHER"));
        }

        AgentFields {
            session_id,
            conversation_id,
            user_id,
            operation,
            provider,
            request_model,
            response_model,
            agent_name,
            agent_id,
            workflow_name,
            tool_name,
            tool_call_id,
            tool_type,
            tool_risk,
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_write_tokens,
            reasoning_tokens,
            finish_reasons,
            error_type,
            retry_attempt,
            decision_verdict,
            dialect: self.dialects.column().map(Cow::Borrowed),
        }
    }

    /// Agent, workflow and task spans (and Vercel AI SDK top-level calls) carry token
    /// aggregates of their children; counting them would count tokens twice.
    fn is_aggregate_span(&self, operation: Option<&str>) -> bool {
        matches!(
            operation,
            Some(
                "invoke_agent"
                    | "invoke_workflow"
                    | "handle_conversation_turn"
                    | "create_agent"
                    | "execute_task"
            )
        ) || matches!(
            self.string(Key::OpenInferenceSpanKind),
            Some("AGENT" | "CHAIN")
        ) || matches!(
            self.string(Key::TraceloopSpanKind),
            Some("workflow" | "agent" | "task")
        ) || matches!(
            self.string(Key::VercelOperationId),
            Some("ai.generateText" | "ai.streamText" | "ai.generateObject" | "ai.streamObject")
        )
    }
}

/// What the span's events contribute, read in one pass over them.
#[derive(Debug, Default)]
struct EventFacts<'a> {
    /// `exception.type` of the first exception event that has one, with its dialect.
    exception_type: Option<(Cow<'a, str>, Dialects)>,
}

/// Which rules apply to an event, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    Decision,
    PolicyDecision,
    ThreatDetection,
    Exception(Dialects),
    Other,
}

impl<'a> EventFacts<'a> {
    /// Reads every event once; decision signals go to `strongest`, the risks decisions carry
    /// to `riskiest`.
    fn of(
        span: &'a Span,
        strongest: &mut Strongest,
        riskiest: &mut Riskiest<'a>,
    ) -> EventFacts<'a> {
        let mut facts = EventFacts::default();
        for event in &span.events {
            let kind = match event.name.as_str() {
                "agent.decision" => EventKind::Decision,
                "agent.policy.decision" => EventKind::PolicyDecision,
                "agent.threat.detection" => EventKind::ThreatDetection,
                "exception" => EventKind::Exception(Dialects::NONE),
                "gen_ai.client.operation.exception" => EventKind::Exception(Dialects::GEN_AI),
                _ => EventKind::Other,
            };
            let mut decision_risk: Option<Cow<'a, str>> = None;
            let mut tool_tier: Option<Cow<'a, str>> = None;
            let mut has_disposition = false;
            for pair in &event.attributes {
                let Some(value) = pair.value.as_ref().and_then(|value| value.value.as_ref()) else {
                    continue;
                };
                match (kind, pair.key.as_str()) {
                    (EventKind::Decision, "agent.decision.verdict") => {
                        strongest.offer(string(value).and_then(Verdict::parse), Dialects::AGENT);
                    }
                    (EventKind::Decision | EventKind::PolicyDecision, "agent.decision.risk") => {
                        decision_risk = decision_risk.or_else(|| text(value));
                    }
                    (EventKind::PolicyDecision, "agent.policy.decision") => {
                        strongest.offer(string(value).and_then(Verdict::parse), Dialects::AGENT);
                    }
                    (EventKind::ThreatDetection, "agent.threat.detection.action") => {
                        strongest.offer(
                            string(value).and_then(Verdict::from_threat_detection_action),
                            Dialects::AGENT,
                        );
                    }
                    (EventKind::Exception(dialect), "exception.type") => {
                        if facts.exception_type.is_none()
                            && let Some(exception_type) = text(value)
                        {
                            facts.exception_type = Some((exception_type, dialect));
                        }
                    }
                    (_, "gen_ai.guardrail.verdict.type" | "gen_ai.security.verdict.type") => {
                        strongest.offer(string(value).and_then(Verdict::parse), Dialects::GEN_AI);
                    }
                    (_, "gen_ai.agent.decision.outcome") => {
                        strongest.offer(
                            string(value).and_then(Verdict::from_decision_outcome),
                            Dialects::GEN_AI,
                        );
                    }
                    (_, "gen_ai.agent.tool.disposition") => {
                        has_disposition = true;
                        strongest.offer(
                            string(value).and_then(Verdict::from_tool_disposition),
                            Dialects::GEN_AI,
                        );
                    }
                    (_, "gen_ai.agent.tool.tier") => {
                        tool_tier = tool_tier.or_else(|| text(value));
                    }
                    _ => {}
                }
            }
            if let Some(risk) = decision_risk {
                riskiest.offer(risk, Dialects::AGENT);
            }
            if has_disposition && let Some(tier) = tool_tier {
                riskiest.offer(tier, Dialects::GEN_AI);
            }
        }
        facts
    }
}

/// Maps one signal's value to a verdict (`None`: not a verdict).
type VerdictMapping = fn(&str) -> Option<Verdict>;

/// A decision verdict, weakest first, so `Ord` ranks them: deny > escalate > modify > warn >
/// allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Allow,
    Warn,
    Modify,
    Escalate,
    Deny,
}

impl Verdict {
    /// `allow` `deny` `modify` `warn` `escalate`, exactly (`agent.decision.verdict`,
    /// `agent.policy.decision`, `gen_ai.guardrail.verdict.type`, `gen_ai.security.verdict.type`).
    fn parse(text: &str) -> Option<Verdict> {
        Some(match text {
            "allow" => Verdict::Allow,
            "warn" => Verdict::Warn,
            "modify" => Verdict::Modify,
            "escalate" => Verdict::Escalate,
            "deny" => Verdict::Deny,
            _ => return None,
        })
    }

    fn from_threat_detection_action(text: &str) -> Option<Verdict> {
        Some(match text {
            "allow" => Verdict::Allow,
            "warn" => Verdict::Warn,
            "ask" => Verdict::Escalate,
            "block" => Verdict::Deny,
            _ => return None,
        })
    }

    fn from_decision_outcome(text: &str) -> Option<Verdict> {
        Some(match text {
            "allow" => Verdict::Allow,
            "review" | "escalate" | "defer" => Verdict::Escalate,
            "block" => Verdict::Deny,
            _ => return None,
        })
    }

    fn from_tool_disposition(text: &str) -> Option<Verdict> {
        Some(match text {
            "allow" => Verdict::Allow,
            "simulate" => Verdict::Modify,
            "deny" => Verdict::Deny,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Warn => "warn",
            Verdict::Modify => "modify",
            Verdict::Escalate => "escalate",
            Verdict::Deny => "deny",
        }
    }
}

/// The strongest verdict offered so far and the dialect of the signal that gave it.
#[derive(Debug, Default)]
struct Strongest {
    verdict: Option<Verdict>,
    dialects: Dialects,
}

impl Strongest {
    fn offer(&mut self, verdict: Option<Verdict>, dialect: Dialects) {
        if let Some(verdict) = verdict
            && self.verdict.is_none_or(|best| verdict > best)
        {
            self.verdict = Some(verdict);
            self.dialects = dialect;
        }
    }
}

/// The most severe risk offered so far and the dialect of the key that gave it.
#[derive(Debug, Default)]
struct Riskiest<'a> {
    risk: Option<Cow<'a, str>>,
    dialects: Dialects,
}

impl<'a> Riskiest<'a> {
    /// Keeps `risk` when it is more severe than the one kept so far (the first wins a tie).
    fn offer(&mut self, risk: Cow<'a, str>, dialect: Dialects) {
        if self
            .risk
            .as_deref()
            .is_none_or(|best| risk_severity(&risk) > risk_severity(best))
        {
            self.risk = Some(risk);
            self.dialects = dialect;
        }
    }
}

/// Rank of a risk class, most severe highest: `destructive`, `access_change`, `write`,
/// `external`, `read`, then any other value (compared exactly).
fn risk_severity(risk: &str) -> u8 {
    match risk {
        "destructive" => 5,
        "access_change" => 4,
        "write" => 3,
        "external" => 2,
        "read" => 1,
        _ => 0,
    }
}

/// A non-empty string value.
fn string(value: &Value) -> Option<&str> {
    match value {
        Value::StringValue(text) if !text.is_empty() => Some(text),
        _ => None,
    }
}

/// A text column's value: a non-empty string as is, an integer in decimal (ids sent as ints).
fn text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::StringValue(text) if !text.is_empty() => Some(Cow::Borrowed(text)),
        Value::IntValue(number) => Some(Cow::Owned(number.to_string())),
        _ => None,
    }
}

/// A count (tokens, attempts): a non-negative int, integer string or integral double.
fn count(value: &Value) -> Option<i64> {
    let number = match value {
        Value::IntValue(number) => *number,
        Value::StringValue(text) => text.parse().ok()?,
        // `i64::MAX as f64` is 2^63, so every double in the range converts exactly.
        Value::DoubleValue(number)
            if number.fract() == 0.0 && (0.0..i64::MAX as f64).contains(number) =>
        {
            *number as i64
        }
        _ => return None,
    };
    (number >= 0).then_some(number)
}

/// `text` lower-cased, borrowed when it already is.
fn lower_case(text: &str) -> Cow<'_, str> {
    if text.bytes().any(|byte| byte.is_ascii_uppercase()) {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        Cow::Borrowed(text)
    }
}

fn openinference_operation(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "LLM" => "chat",
        "EMBEDDING" => "embeddings",
        "RETRIEVER" => "retrieval",
        "TOOL" => "execute_tool",
        "AGENT" => "invoke_agent",
        "CHAIN" => "invoke_workflow",
        "RERANKER" => "rerank",
        "GUARDRAIL" => "apply_guardrail",
        "EVALUATOR" => "evaluate",
        "PROMPT" => "render_prompt",
        _ => return None,
    })
}

fn traceloop_operation(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "workflow" => "invoke_workflow",
        "agent" => "invoke_agent",
        "tool" => "execute_tool",
        "task" => "execute_task",
        _ => return None,
    })
}

fn llm_request_type_operation(request_type: &str) -> Option<&'static str> {
    Some(match request_type {
        "chat" => "chat",
        "completion" => "text_completion",
        "embedding" => "embeddings",
        "rerank" => "rerank",
        _ => return None,
    })
}

fn langfuse_operation(observation_type: &str) -> Option<&'static str> {
    Some(match observation_type {
        "generation" => "chat",
        "agent" => "invoke_agent",
        "tool" => "execute_tool",
        "retriever" => "retrieval",
        "embedding" => "embeddings",
        "chain" => "invoke_workflow",
        _ => return None,
    })
}

/// Vercel AI SDK `ai.operationId` of a provider call or tool call. The top-level calls
/// (`ai.generateText`, ...) stay NULL: one may span several model calls and tool calls.
fn vercel_operation(operation_id: &str) -> Option<&'static str> {
    Some(match operation_id {
        "ai.generateText.doGenerate"
        | "ai.streamText.doStream"
        | "ai.generateObject.doGenerate"
        | "ai.streamObject.doStream" => "chat",
        "ai.embed.doEmbed" | "ai.embedMany.doEmbed" => "embeddings",
        "ai.toolCall" => "execute_tool",
        _ => return None,
    })
}

/// Deprecated `gen_ai.system` -> `gen_ai.provider.name` vocabulary, lower-cased.
fn gen_ai_system_provider(system: &str) -> Cow<'_, str> {
    let lower = lower_case(system);
    let renamed = match lower.as_ref() {
        "az.ai.openai" => "azure.ai.openai",
        "az.ai.inference" => "azure.ai.inference",
        "xai" => "x_ai",
        "vertex_ai" => "gcp.vertex_ai",
        "gemini" => "gcp.gemini",
        _ => return lower,
    };
    Cow::Borrowed(renamed)
}

/// OpenInference `llm.provider` / `llm.system` -> `gen_ai.provider.name` vocabulary.
fn openinference_provider(provider: &str) -> Cow<'_, str> {
    let lower = lower_case(provider);
    let renamed = match lower.as_ref() {
        "azure" => "azure.ai.openai",
        "aws" => "aws.bedrock",
        "google" => "gcp.gen_ai",
        "mistralai" => "mistral_ai",
        "xai" => "x_ai",
        "vertexai" => "gcp.vertex_ai",
        _ => return lower,
    };
    Cow::Borrowed(renamed)
}

/// The top-level `"model"` string of OpenInference's `llm.invocation_parameters` JSON object,
/// borrowed when it has no escapes.
///
/// A scan rather than a parse: this runs on every OpenInference model call, and building the
/// whole object to read one member costs several times the rest of the span's normalization.
/// The scan skips strings (with their escapes) and nested values up to the member; it does not
/// validate the rest of the document.
fn model_in_invocation_parameters(json: &str) -> Option<Cow<'_, str>> {
    let bytes = json.as_bytes();
    let mut at = skip_whitespace(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    let mut depth = 0usize;
    // Whether the next string at depth 1 is a member name.
    let mut expect_name = false;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'{' | b'[' => {
                depth += 1;
                expect_name = depth == 1;
                at += 1;
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                at += 1;
            }
            b',' => {
                expect_name = depth == 1;
                at += 1;
            }
            b'"' => {
                let end = json_string_end(bytes, at)?;
                if depth == 1 && expect_name {
                    expect_name = false;
                    if &bytes[at..end] == br#""model""# {
                        return json_string_member_value(json, end);
                    }
                }
                at = end;
            }
            _ => at += 1,
        }
    }
    None
}

/// The string value after a member name that ends at `name_end`: `None` unless `: "..."`
/// follows, or when the string is empty.
fn json_string_member_value(json: &str, name_end: usize) -> Option<Cow<'_, str>> {
    let bytes = json.as_bytes();
    let colon = skip_whitespace(bytes, name_end);
    if bytes.get(colon) != Some(&b':') {
        return None;
    }
    let start = skip_whitespace(bytes, colon + 1);
    if bytes.get(start) != Some(&b'"') {
        return None;
    }
    let end = json_string_end(bytes, start)?;
    // Both ends are ASCII quotes, hence char boundaries.
    let quoted = json.get(start..end)?;
    let text = quoted.get(1..quoted.len() - 1)?;
    let text = if text.contains('\\') {
        Cow::Owned(serde_json::from_str::<String>(quoted).ok()?)
    } else {
        Cow::Borrowed(text)
    };
    (!text.is_empty()).then_some(text)
}

fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

/// The index after the closing quote of the JSON string whose opening quote is at `start`.
/// UTF-8 continuation bytes are never `"` or `\`, so scanning bytes is exact.
fn json_string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut at = start + 1;
    loop {
        match bytes.get(at)? {
            b'\\' => at += 2,
            b'"' => return Some(at + 1),
            _ => at += 1,
        }
    }
}

/// Finish reasons from a string array, a single string, or a JSON array in a string; `None`
/// when that gives no reason.
fn finish_reasons(value: &Value) -> Option<Vec<Cow<'_, str>>> {
    let mut reasons = Vec::new();
    match value {
        Value::ArrayValue(array) => {
            for item in &array.values {
                if let Some(reason) = item.value.as_ref().and_then(string) {
                    reasons.push(finish_reason(reason));
                }
            }
        }
        Value::StringValue(text) if text.trim_start().starts_with('[') => {
            let items: Vec<serde_json::Value> = serde_json::from_str(text).ok()?;
            for item in items {
                if let serde_json::Value::String(reason) = item
                    && !reason.is_empty()
                {
                    reasons.push(Cow::Owned(finish_reason(&reason).into_owned()));
                }
            }
        }
        _ => reasons.push(finish_reason(string(value)?)),
    }
    (!reasons.is_empty()).then_some(reasons)
}

/// One finish reason in the store's vocabulary: lower-case, with the provider synonyms merged.
fn finish_reason(raw: &str) -> Cow<'_, str> {
    let lower = lower_case(raw);
    let merged = match lower.as_ref() {
        "tool_call" | "tool_calls" | "function_call" | "tool-calls" => "tool_calls",
        "max_tokens" | "length" => "length",
        "end_turn" | "stop_sequence" | "stop" => "stop",
        "content_filter" | "safety" | "content-filter" => "content_filter",
        _ => return lower,
    };
    Cow::Borrowed(merged)
}

/// The `finish_reason` of each message in `gen_ai.output.messages`, in message order (messages
/// without one are skipped): a string holding a JSON array of message objects (the official
/// Python instrumentation), or an array of key-value lists. (A content reference in their place
/// is looked up in what extraction read; see [`agent_fields`].)
pub(crate) fn output_message_finish_reasons(value: &Value) -> Option<Vec<Cow<'_, str>>> {
    let mut reasons = Vec::new();
    match value {
        Value::StringValue(text) if text.trim_start().starts_with('[') => {
            // Only the `finish_reason` members are decoded; message parts stay raw.
            let messages: Vec<&serde_json::value::RawValue> = serde_json::from_str(text).ok()?;
            for message in messages {
                let Ok(members) = serde_json::from_str::<
                    std::collections::HashMap<String, &serde_json::value::RawValue>,
                >(message.get()) else {
                    continue;
                };
                if let Some(raw) = members.get("finish_reason")
                    && let Ok(reason) = serde_json::from_str::<String>(raw.get())
                    && !reason.is_empty()
                {
                    reasons.push(Cow::Owned(finish_reason(&reason).into_owned()));
                }
            }
        }
        Value::ArrayValue(array) => {
            for message in &array.values {
                let Some(Value::KvlistValue(members)) = &message.value else {
                    continue;
                };
                if let Some(reason) = members
                    .values
                    .iter()
                    .find(|member| member.key == "finish_reason")
                    .and_then(|member| member.value.as_ref()?.value.as_ref())
                    .and_then(string)
                {
                    reasons.push(finish_reason(reason));
                }
            }
        }
        _ => {}
    }
    (!reasons.is_empty()).then_some(reasons)
}

/// `gen_ai.completion.{i}.finish_reason` values in index order (OpenLLMetry before #3844).
fn indexed_completion_finish_reasons(span: &Span) -> Option<Vec<Cow<'_, str>>> {
    let mut indexed: Vec<(usize, Cow<'_, str>)> = Vec::new();
    for pair in &span.attributes {
        let Some(index) = pair
            .key
            .strip_prefix("gen_ai.completion.")
            .and_then(completion_index)
        else {
            continue;
        };
        if let Some(reason) = pair
            .value
            .as_ref()
            .and_then(|value| value.value.as_ref())
            .and_then(string)
        {
            indexed.push((index, finish_reason(reason)));
        }
    }
    // Stable: equal indexes keep attribute order.
    indexed.sort_by_key(|(index, _)| *index);
    let reasons: Vec<_> = indexed.into_iter().map(|(_, reason)| reason).collect();
    (!reasons.is_empty()).then_some(reasons)
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::{Status, span::Event};

    use super::*;

    fn attribute(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            key_strindex: 0,
        }
    }

    fn s(key: &str, text: &str) -> KeyValue {
        attribute(key, Value::StringValue(text.to_owned()))
    }

    fn int(key: &str, number: i64) -> KeyValue {
        attribute(key, Value::IntValue(number))
    }

    fn strings(key: &str, items: &[&str]) -> KeyValue {
        let values = items
            .iter()
            .map(|item| AnyValue {
                value: Some(Value::StringValue((*item).to_owned())),
            })
            .collect();
        attribute(key, Value::ArrayValue(ArrayValue { values }))
    }

    fn event(name: &str, attributes: Vec<KeyValue>) -> Event {
        Event {
            name: name.to_owned(),
            attributes,
            ..Event::default()
        }
    }

    fn span(attributes: Vec<KeyValue>) -> Span {
        Span {
            attributes,
            ..Span::default()
        }
    }

    fn with_events(attributes: Vec<KeyValue>, events: Vec<Event>) -> Span {
        Span {
            attributes,
            events,
            ..Span::default()
        }
    }

    fn with_error_status(mut span: Span) -> Span {
        span.status = Some(Status {
            code: STATUS_CODE_ERROR,
            message: String::new(),
        });
        span
    }

    /// [`agent_fields`] with every value copied, so a test can build the span inline.
    fn resolve(span: Span) -> AgentFields<'static> {
        fn own(text: Option<Cow<'_, str>>) -> Option<Cow<'static, str>> {
            text.map(|text| Cow::Owned(text.into_owned()))
        }
        let none = ExtractedFinishReasons::new();
        let fields = agent_fields(&span, &none);
        AgentFields {
            session_id: own(fields.session_id),
            conversation_id: own(fields.conversation_id),
            user_id: own(fields.user_id),
            operation: own(fields.operation),
            provider: own(fields.provider),
            request_model: own(fields.request_model),
            response_model: own(fields.response_model),
            agent_name: own(fields.agent_name),
            agent_id: own(fields.agent_id),
            workflow_name: own(fields.workflow_name),
            tool_name: own(fields.tool_name),
            tool_call_id: own(fields.tool_call_id),
            tool_type: own(fields.tool_type),
            tool_risk: own(fields.tool_risk),
            input_tokens: fields.input_tokens,
            output_tokens: fields.output_tokens,
            cache_read_tokens: fields.cache_read_tokens,
            cache_write_tokens: fields.cache_write_tokens,
            reasoning_tokens: fields.reasoning_tokens,
            finish_reasons: fields.finish_reasons.map(|reasons| {
                reasons
                    .into_iter()
                    .map(|r| Cow::Owned(r.into_owned()))
                    .collect()
            }),
            error_type: own(fields.error_type),
            retry_attempt: fields.retry_attempt,
            decision_verdict: own(fields.decision_verdict),
            dialect: own(fields.dialect),
        }
    }

    #[test]
    fn every_key_is_recognized_by_its_name() {
        assert_eq!(Key::ALL.len(), KEY_COUNT);
        for (index, key) in Key::ALL.iter().enumerate() {
            assert_eq!(*key as usize, index);
            assert_eq!(recognize(key.name()), Some(*key), "{}", key.name());
        }
    }

    #[test]
    fn near_miss_keys_are_not_recognized() {
        for name in [
            "gen_ai",
            "gen_ai.",
            "gen_ai.usage",
            "gen_ai.usage.total_tokens",
            "gen_ai.system.extra",
            "gen_ai.user.id",
            "gen_ai.completion.0.content",
            "gen_ai.completion.x.finish_reason",
            "gen_ai.completion..finish_reason",
            "gen_ai.completion.finish_reason",
            "llm.token_count.total",
            "session",
            "session.id.x",
            "tool_call.function.name",
            "agent.decision.kind",
            "input.value",
            "",
        ] {
            assert_eq!(recognize(name), None, "{name}");
        }
        assert_eq!(
            recognize("gen_ai.completion.12.finish_reason"),
            Some(Key::CompletionFinishReason)
        );
    }

    #[test]
    fn first_source_in_fallback_order_wins_whatever_the_attribute_order() {
        let request = span(vec![
            s("traceloop.association.properties.session_id", "tl"),
            s("langfuse.session.id", "lf"),
            s("session.id", "core"),
            s("llm.user", "llm-user"),
            s("enduser.id", "end-user"),
        ]);
        let none = ExtractedFinishReasons::new();
        let fields = agent_fields(&request, &none);
        assert_eq!(fields.session_id.as_deref(), Some("core"));
        assert_eq!(fields.user_id.as_deref(), Some("end-user"));
        // Borrowed from the request, not copied.
        assert!(matches!(fields.session_id, Some(Cow::Borrowed(_))));
        // Core keys stamp no dialect, and the losing keys stamp nothing.
        assert_eq!(fields.dialect, None);
    }

    #[test]
    fn session_never_falls_back_to_the_conversation() {
        let fields = resolve(span(vec![s("gen_ai.conversation.id", "conv_1")]));
        assert_eq!(fields.session_id, None);
        assert_eq!(fields.conversation_id.as_deref(), Some("conv_1"));
        assert_eq!(fields.dialect.as_deref(), Some("gen_ai"));
    }

    #[test]
    fn empty_strings_and_unusable_values_fall_through() {
        let fields = resolve(span(vec![
            s("session.id", ""),
            s("langfuse.session.id", "lf"),
            s("gen_ai.usage.input_tokens", "many"),
            int("gen_ai.usage.prompt_tokens", 12),
            int("gen_ai.usage.output_tokens", -3),
            int("user.id", 4711),
        ]));
        assert_eq!(fields.session_id.as_deref(), Some("lf"));
        assert_eq!(fields.input_tokens, Some(12));
        assert_eq!(fields.output_tokens, None);
        assert_eq!(fields.user_id.as_deref(), Some("4711"));
        assert_eq!(
            fields.dialect.as_deref(),
            Some("gen_ai_deprecated,langfuse")
        );
    }

    #[test]
    fn duplicate_keys_keep_the_first_value() {
        let fields = resolve(span(vec![
            s("gen_ai.request.model", "first"),
            s("gen_ai.request.model", "second"),
        ]));
        assert_eq!(fields.request_model.as_deref(), Some("first"));
    }

    #[test]
    fn counts_accept_ints_integer_strings_and_integral_doubles() {
        assert_eq!(count(&Value::IntValue(7)), Some(7));
        assert_eq!(count(&Value::StringValue("1834".into())), Some(1834));
        assert_eq!(count(&Value::StringValue(" 1".into())), None);
        assert_eq!(count(&Value::StringValue("1.5".into())), None);
        assert_eq!(count(&Value::DoubleValue(96.0)), Some(96));
        assert_eq!(count(&Value::DoubleValue(96.5)), None);
        assert_eq!(count(&Value::DoubleValue(f64::NAN)), None);
        assert_eq!(count(&Value::DoubleValue(1e19)), None);
        assert_eq!(count(&Value::IntValue(-1)), None);
        assert_eq!(count(&Value::BoolValue(true)), None);
    }

    #[test]
    fn tokens_are_null_on_agent_workflow_and_task_spans() {
        let usage = || {
            vec![
                int("gen_ai.usage.input_tokens", 5000),
                int("gen_ai.usage.output_tokens", 400),
                int("gen_ai.usage.cache_read.input_tokens", 1000),
                int("gen_ai.usage.cache_write.input_tokens", 10),
                int("gen_ai.usage.reasoning.output_tokens", 20),
            ]
        };
        for marker in [
            s("gen_ai.operation.name", "invoke_agent"),
            s("gen_ai.operation.name", "invoke_workflow"),
            s("gen_ai.operation.name", "handle_conversation_turn"),
            s("gen_ai.operation.name", "create_agent"),
            s("openinference.span.kind", "AGENT"),
            s("openinference.span.kind", "CHAIN"),
            s("traceloop.span.kind", "workflow"),
            s("traceloop.span.kind", "agent"),
            s("traceloop.span.kind", "task"),
            s("ai.operationId", "ai.generateText"),
        ] {
            let mut attributes = usage();
            attributes.push(marker.clone());
            let fields = resolve(span(attributes));
            assert_eq!(
                (
                    fields.input_tokens,
                    fields.output_tokens,
                    fields.cache_read_tokens,
                    fields.cache_write_tokens,
                    fields.reasoning_tokens
                ),
                (None, None, None, None, None),
                "{marker:?}"
            );
        }
        // Even when gen_ai.operation.name says otherwise, an AGENT kind marks an aggregate.
        let fields = resolve(span(vec![
            s("gen_ai.operation.name", "chat"),
            s("openinference.span.kind", "AGENT"),
            int("llm.token_count.prompt", 10),
        ]));
        assert_eq!(fields.input_tokens, None);
        let mut attributes = usage();
        attributes.push(s("gen_ai.operation.name", "chat"));
        let fields = resolve(span(attributes));
        assert_eq!(fields.input_tokens, Some(5000));
        assert_eq!(fields.reasoning_tokens, Some(20));
    }

    #[test]
    fn operations_map_from_every_dialect() {
        let operation = |attributes| resolve(span(attributes)).operation;
        assert_eq!(
            operation(vec![
                s("openinference.span.kind", "RERANKER"),
                s("gen_ai.operation.name", "chat")
            ])
            .as_deref(),
            Some("chat")
        );
        for (key, raw, expected) in [
            (
                "openinference.span.kind",
                "GUARDRAIL",
                Some("apply_guardrail"),
            ),
            ("openinference.span.kind", "EVALUATOR", Some("evaluate")),
            ("openinference.span.kind", "PROMPT", Some("render_prompt")),
            ("openinference.span.kind", "UNKNOWN", None),
            ("openinference.span.kind", "llm", None),
            ("traceloop.span.kind", "task", Some("execute_task")),
            ("llm.request.type", "completion", Some("text_completion")),
            ("llm.request.type", "rerank", Some("rerank")),
            ("langfuse.observation.type", "generation", Some("chat")),
            ("langfuse.observation.type", "span", None),
            ("mcp.method.name", "tools/call", Some("tools/call")),
            ("ai.operationId", "ai.streamText.doStream", Some("chat")),
            ("ai.operationId", "ai.embedMany.doEmbed", Some("embeddings")),
            ("ai.operationId", "ai.toolCall", Some("execute_tool")),
            ("ai.operationId", "ai.generateText", None),
        ] {
            assert_eq!(operation(vec![s(key, raw)]).as_deref(), expected, "{raw}");
        }
        // An unmapped value falls through to the next source.
        assert_eq!(
            operation(vec![
                s("openinference.span.kind", "UNKNOWN"),
                s("mcp.method.name", "resources/read")
            ])
            .as_deref(),
            Some("resources/read")
        );
    }

    #[test]
    fn providers_are_normalized() {
        let provider = |attributes| resolve(span(attributes)).provider;
        for (system, expected) in [
            ("az.ai.openai", "azure.ai.openai"),
            ("az.ai.inference", "azure.ai.inference"),
            ("xai", "x_ai"),
            ("vertex_ai", "gcp.vertex_ai"),
            ("gemini", "gcp.gemini"),
            ("Anthropic", "anthropic"),
            ("openai", "openai"),
        ] {
            assert_eq!(
                provider(vec![s("gen_ai.system", system)]).as_deref(),
                Some(expected)
            );
        }
        assert_eq!(
            provider(vec![
                s("gen_ai.system", "openai"),
                s("gen_ai.provider.name", "azure.ai.openai")
            ])
            .as_deref(),
            Some("azure.ai.openai")
        );
        for (llm_provider, expected) in [
            ("azure", "azure.ai.openai"),
            ("aws", "aws.bedrock"),
            ("google", "gcp.gen_ai"),
            ("mistralai", "mistral_ai"),
            ("xai", "x_ai"),
            ("Groq", "groq"),
        ] {
            assert_eq!(
                provider(vec![
                    s("llm.system", "openai"),
                    s("llm.provider", llm_provider)
                ])
                .as_deref(),
                Some(expected)
            );
        }
        assert_eq!(
            provider(vec![s("llm.system", "vertexai")]).as_deref(),
            Some("gcp.vertex_ai")
        );
    }

    #[test]
    fn request_model_from_invocation_parameters_but_never_from_llm_model_name() {
        let fields = resolve(span(vec![
            s("llm.model_name", "gpt-4o-2024-08-06"),
            s(
                "llm.invocation_parameters",
                r#"{"temperature": 0.1, "model": "gpt-4o", "metadata": {"model": "x"}}"#,
            ),
        ]));
        assert_eq!(fields.request_model.as_deref(), Some("gpt-4o"));
        assert_eq!(fields.response_model.as_deref(), Some("gpt-4o-2024-08-06"));
        for (parameters, model) in [
            (r#"{"model":"gpt-4o"}"#, "gpt-4o"),
            (
                r#" { "stop": ["\"model\": \"x\"", "}"], "n": [{"model": "y"}], "model" : "o3" }"#,
                "o3",
            ),
            (r#"{"model": "gpt\u002d4o", "x": 1}"#, "gpt-4o"),
            (r#"{"name": "model", "model": "modèle"}"#, "modèle"),
        ] {
            assert_eq!(
                model_in_invocation_parameters(parameters).as_deref(),
                Some(model),
                "{parameters}"
            );
        }
        assert!(matches!(
            model_in_invocation_parameters(r#"{"model": "gpt-4o"}"#),
            Some(Cow::Borrowed("gpt-4o"))
        ));
        for parameters in [
            r#"{"temperature": 0.1}"#,
            r#"{"metadata": {"model": "nested"}}"#,
            r#"{"model": 4}"#,
            r#"["model"]"#,
            r#"{"model": "#,
            r#"{"model": ""}"#,
            r#"{"model": "unterminated}"#,
            r#"{"a": "\"}, \"model\": \"z\""}"#,
            r#"{"model" "x"}"#,
            r#"{"model": "bad \q escape"}"#,
            "",
        ] {
            let fields = resolve(span(vec![
                s("llm.invocation_parameters", parameters),
                s("langfuse.observation.model.name", "fallback"),
            ]));
            assert_eq!(
                fields.request_model.as_deref(),
                Some("fallback"),
                "{parameters}"
            );
        }
    }

    #[test]
    fn traceloop_entity_name_counts_only_for_its_kind() {
        let fields = resolve(span(vec![
            s("traceloop.span.kind", "agent"),
            s("traceloop.entity.name", "planner"),
        ]));
        assert_eq!(fields.agent_name.as_deref(), Some("planner"));
        assert_eq!(fields.tool_name, None);
        let fields = resolve(span(vec![
            s("traceloop.span.kind", "tool"),
            s("traceloop.entity.name", "search"),
        ]));
        assert_eq!(fields.agent_name, None);
        assert_eq!(fields.tool_name.as_deref(), Some("search"));
        let fields = resolve(span(vec![
            s("traceloop.span.kind", "task"),
            s("traceloop.entity.name", "format"),
        ]));
        assert_eq!((fields.agent_name, fields.tool_name), (None, None));
    }

    #[test]
    fn mcp_tool_name_counts_only_on_tools_call() {
        let fields = resolve(span(vec![
            s("mcp.method.name", "tools/call"),
            s("mcp.tool.name", "run_shell"),
        ]));
        assert_eq!(fields.tool_name.as_deref(), Some("run_shell"));
        assert_eq!(fields.dialect.as_deref(), Some("mcp"));
        let fields = resolve(span(vec![
            s("mcp.method.name", "prompts/get"),
            s("mcp.tool.name", "run_shell"),
        ]));
        assert_eq!(fields.tool_name, None);
    }

    #[test]
    fn finish_reasons_in_every_shape_map_to_one_vocabulary() {
        let reasons = |value: KeyValue| resolve(span(vec![value])).finish_reasons;
        fn owned(items: &[&'static str]) -> Option<Vec<Cow<'static, str>>> {
            Some(items.iter().map(|item| Cow::Borrowed(*item)).collect())
        }
        assert_eq!(
            reasons(strings(
                "gen_ai.response.finish_reasons",
                &[
                    "tool_call",
                    "MAX_TOKENS",
                    "end_turn",
                    "SAFETY",
                    "Error",
                    "tool-calls",
                    "content-filter"
                ]
            )),
            owned(&[
                "tool_calls",
                "length",
                "stop",
                "content_filter",
                "error",
                "tool_calls",
                "content_filter"
            ])
        );
        assert_eq!(
            reasons(s("gen_ai.response.finish_reasons", "function_call")),
            owned(&["tool_calls"])
        );
        assert_eq!(
            reasons(s(
                "gen_ai.response.finish_reasons",
                r#"["stop_sequence", "length"]"#
            )),
            owned(&["stop", "length"])
        );
        assert_eq!(
            reasons(s("gen_ai.response.finish_reasons", "[not json")),
            None
        );
        assert_eq!(
            reasons(strings("gen_ai.response.finish_reasons", &[])),
            None
        );
        assert_eq!(reasons(s("llm.finish_reason", "STOP")), owned(&["stop"]));
        assert_eq!(
            reasons(s("gen_ai.response.finish_reason", "tool_calls")),
            owned(&["tool_calls"])
        );
    }

    #[test]
    fn indexed_completion_finish_reasons_come_in_index_order() {
        let fields = resolve(span(vec![
            s("gen_ai.completion.10.finish_reason", "length"),
            s("gen_ai.completion.2.content", "…"),
            s("gen_ai.completion.2.finish_reason", "end_turn"),
            s("gen_ai.completion.0.finish_reason", "tool_calls"),
        ]));
        assert_eq!(
            fields.finish_reasons,
            Some(vec![
                Cow::Borrowed("tool_calls"),
                Cow::Borrowed("stop"),
                Cow::Borrowed("length")
            ])
        );
        assert_eq!(fields.dialect.as_deref(), Some("gen_ai_deprecated"));
        // Lower priority than the single-string keys.
        let fields = resolve(span(vec![
            s("gen_ai.completion.0.finish_reason", "length"),
            s("llm.finish_reason", "stop"),
        ]));
        assert_eq!(fields.finish_reasons, Some(vec![Cow::Borrowed("stop")]));
        assert_eq!(fields.dialect.as_deref(), Some("openinference"));
    }

    /// `gen_ai.output.messages` as the official Python instrumentation sends it: a JSON string.
    fn output_messages(reasons: &[Option<&str>]) -> KeyValue {
        let messages: Vec<serde_json::Value> = reasons
            .iter()
            .map(|reason| {
                let mut message = serde_json::json!({
                    "role": "assistant",
                    "parts": [{"type": "text", "content": "finish_reason: length"}],
                });
                if let Some(reason) = reason {
                    message["finish_reason"] = serde_json::json!(reason);
                }
                message
            })
            .collect();
        s(
            "gen_ai.output.messages",
            &serde_json::to_string(&messages).unwrap(),
        )
    }

    #[test]
    fn finish_reasons_fall_back_to_the_output_messages() {
        let fields = resolve(span(vec![
            s("gen_ai.operation.name", "chat"),
            output_messages(&[Some("STOP"), None, Some("tool_call"), Some("")]),
        ]));
        assert_eq!(
            fields.finish_reasons,
            Some(vec![Cow::Borrowed("stop"), Cow::Borrowed("tool_calls")])
        );
        assert_eq!(fields.dialect.as_deref(), Some("gen_ai"));
        // Structured messages (an array of key-value lists).
        let message = |reason: Option<&str>| {
            let mut members = vec![s("role", "assistant")];
            if let Some(reason) = reason {
                members.push(s("finish_reason", reason));
            }
            AnyValue {
                value: Some(Value::KvlistValue(
                    opentelemetry_proto::tonic::common::v1::KeyValueList { values: members },
                )),
            }
        };
        let structured = attribute(
            "gen_ai.output.messages",
            Value::ArrayValue(ArrayValue {
                values: vec![
                    message(Some("max_tokens")),
                    message(None),
                    message(Some("content_filter")),
                ],
            }),
        );
        let fields = resolve(span(vec![structured]));
        assert_eq!(
            fields.finish_reasons,
            Some(vec![
                Cow::Borrowed("length"),
                Cow::Borrowed("content_filter")
            ])
        );
        // Content filtering inside the messages is a deny like any other.
        assert_eq!(fields.decision_verdict.as_deref(), Some("deny"));
        // Nothing usable: no column.
        for value in [
            output_messages(&[None, Some("")]),
            s("gen_ai.output.messages", "[not json"),
            s("gen_ai.output.messages", r#"{"finish_reason": "stop"}"#),
            s(
                "gen_ai.output.messages",
                r#"["stop", 1, {"finish_reason": 2}]"#,
            ),
            strings("gen_ai.output.messages", &["stop"]),
            // A reference no extraction on this thread recorded.
            s(
                "gen_ai.output.messages",
                &format!("{}{}", crate::CONTENT_REF_PREFIX, "ab".repeat(32)),
            ),
        ] {
            assert_eq!(
                resolve(span(vec![value.clone()])).finish_reasons,
                None,
                "{value:?}"
            );
        }
    }

    #[test]
    fn every_finish_reason_attribute_wins_over_the_output_messages() {
        for attribute in [
            strings("gen_ai.response.finish_reasons", &["length"]),
            s("llm.finish_reason", "length"),
            s("gen_ai.response.finish_reason", "length"),
            s("gen_ai.completion.0.finish_reason", "length"),
        ] {
            for attributes in [
                vec![attribute.clone(), output_messages(&[Some("stop")])],
                vec![output_messages(&[Some("stop")]), attribute.clone()],
            ] {
                assert_eq!(
                    resolve(span(attributes)).finish_reasons,
                    Some(vec![Cow::Borrowed("length")]),
                    "{attribute:?}"
                );
            }
        }
        // The losing messages stamp nothing.
        let fields = resolve(span(vec![
            output_messages(&[Some("stop")]),
            s("llm.finish_reason", "length"),
        ]));
        assert_eq!(fields.dialect.as_deref(), Some("openinference"));
    }

    #[test]
    fn error_type_from_attribute_then_exception_event_then_status() {
        let exception = |name: &str, exception_type: &str| {
            event(name, vec![s("exception.type", exception_type)])
        };
        let fields = resolve(with_error_status(with_events(
            vec![s("error.type", "rate_limit_exceeded")],
            vec![exception("exception", "openai.RateLimitError")],
        )));
        assert_eq!(fields.error_type.as_deref(), Some("rate_limit_exceeded"));
        let fields = resolve(with_events(
            vec![],
            vec![
                event("exception", vec![s("exception.message", "no type")]),
                exception("gen_ai.client.operation.exception", "TimeoutError"),
                exception("exception", "ValueError"),
            ],
        ));
        assert_eq!(fields.error_type.as_deref(), Some("TimeoutError"));
        assert_eq!(fields.dialect.as_deref(), Some("gen_ai"));
        let fields = resolve(with_error_status(span(vec![])));
        assert_eq!(fields.error_type.as_deref(), Some("_OTHER"));
        assert_eq!(fields.dialect, None);
        assert_eq!(resolve(span(vec![])).error_type, None);
    }

    #[test]
    fn strongest_verdict_wins_across_span_and_events() {
        let fields = resolve(with_events(
            vec![s("agent.decision.verdict", "warn")],
            vec![
                event(
                    "agent.decision",
                    vec![s("agent.decision.verdict", "modify")],
                ),
                event(
                    "agent.policy.decision",
                    vec![s("agent.policy.decision", "escalate")],
                ),
                event("agent.decision", vec![s("agent.decision.verdict", "allow")]),
            ],
        ));
        assert_eq!(fields.decision_verdict.as_deref(), Some("escalate"));
        assert_eq!(fields.dialect.as_deref(), Some("agent"));
    }

    #[test]
    fn foreign_signals_map_onto_verdicts() {
        let verdict = |attributes: Vec<KeyValue>| resolve(span(attributes)).decision_verdict;
        for (key, raw, expected) in [
            ("gen_ai.guardrail.verdict.type", "modify", Some("modify")),
            ("gen_ai.security.verdict.type", "escalate", Some("escalate")),
            ("agent.threat.detection.action", "ask", Some("escalate")),
            ("agent.threat.detection.action", "block", Some("deny")),
            ("agent.threat.detection.action", "warn", Some("warn")),
            ("agent.threat.detection.action", "log", None),
            ("gen_ai.agent.decision.outcome", "review", Some("escalate")),
            ("gen_ai.agent.decision.outcome", "defer", Some("escalate")),
            ("gen_ai.agent.decision.outcome", "block", Some("deny")),
            ("gen_ai.agent.tool.disposition", "simulate", Some("modify")),
            ("gen_ai.agent.tool.disposition", "deny", Some("deny")),
            ("agent.decision.verdict", "block", None),
            ("agent.decision.verdict", "DENY", None),
        ] {
            assert_eq!(
                verdict(vec![s(key, raw)]).as_deref(),
                expected,
                "{key}={raw}"
            );
        }
        let fields = resolve(with_error_status(span(vec![s(
            "openinference.span.kind",
            "GUARDRAIL",
        )])));
        assert_eq!(fields.decision_verdict.as_deref(), Some("deny"));
        assert_eq!(
            verdict(vec![s("openinference.span.kind", "GUARDRAIL")]),
            None
        );
        let fields = resolve(span(vec![
            strings("gen_ai.response.finish_reasons", &["stop", "safety"]),
            s("gen_ai.guardrail.verdict.type", "warn"),
        ]));
        assert_eq!(fields.decision_verdict.as_deref(), Some("deny"));
    }

    #[test]
    fn approvals_chunks_and_misnamed_events_are_not_decisions() {
        let fields = resolve(with_events(
            vec![],
            vec![
                event(
                    "agent.approval",
                    vec![
                        s("agent.approval.status", "rejected"),
                        s("agent.decision.verdict", "deny"),
                    ],
                ),
                event("llm.content.completion.chunk", vec![]),
                event("gen_ai.choice", vec![s("finish_reason", "content_filter")]),
                event("agent.decision", vec![s("agent.policy.decision", "deny")]),
                event(
                    "agent.policy.decision",
                    vec![s("agent.decision.verdict", "deny")],
                ),
                event(
                    "agent.decision",
                    vec![s("agent.threat.detection.action", "block")],
                ),
            ],
        ));
        assert_eq!(fields.decision_verdict, None);
        assert_eq!(fields.dialect, None);
        // Foreign verdict keys count on any event.
        let fields = resolve(with_events(
            vec![],
            vec![event(
                "gen_ai.guardrail.result",
                vec![s("gen_ai.guardrail.verdict.type", "deny")],
            )],
        ));
        assert_eq!(fields.decision_verdict.as_deref(), Some("deny"));
        assert_eq!(fields.dialect.as_deref(), Some("gen_ai"));
    }

    #[test]
    fn only_the_winning_decision_signal_stamps_its_dialect() {
        let fields = resolve(with_events(
            vec![
                s("gen_ai.agent.tool.disposition", "simulate"),
                s("agent.decision.verdict", "escalate"),
            ],
            vec![event(
                "agent.threat.detection",
                vec![s("agent.threat.detection.action", "ask")],
            )],
        ));
        // Span attributes come first; the event's equal verdict does not replace it.
        assert_eq!(fields.decision_verdict.as_deref(), Some("escalate"));
        assert_eq!(fields.dialect.as_deref(), Some("agent"));
    }

    fn policy_decision(verdict: &str, risk: &str) -> Event {
        event(
            "agent.policy.decision",
            vec![
                s("agent.policy.decision", verdict),
                s("agent.policy.name", "p"),
                s("agent.decision.risk", risk),
            ],
        )
    }

    /// `tool_risk` and `dialect` of a span.
    fn risk_of(span: Span) -> (Option<String>, Option<String>) {
        let fields = resolve(span);
        (
            fields.tool_risk.map(Cow::into_owned),
            fields.dialect.map(Cow::into_owned),
        )
    }

    fn stamped(risk: &str, dialect: &str) -> (Option<String>, Option<String>) {
        (Some(risk.to_owned()), Some(dialect.to_owned()))
    }

    #[test]
    fn tool_risk_from_each_decision_source_alone() {
        // `agent.decision.risk` on the span.
        assert_eq!(
            risk_of(span(vec![s("agent.decision.risk", "write")])),
            stamped("write", "agent")
        );
        // ... of an `agent.decision` event.
        assert_eq!(
            risk_of(with_events(
                vec![],
                vec![event(
                    "agent.decision",
                    vec![
                        s("agent.decision.verdict", "allow"),
                        s("agent.decision.risk", "external"),
                    ],
                )],
            )),
            stamped("external", "agent")
        );
        // ... of an `agent.policy.decision` event (the reported bug: it was ignored).
        assert_eq!(
            risk_of(with_events(
                vec![],
                vec![policy_decision("deny", "destructive")]
            )),
            stamped("destructive", "agent")
        );
        // `gen_ai.agent.tool.tier` next to a disposition, on the span or on any event.
        assert_eq!(
            risk_of(span(vec![
                s("gen_ai.agent.tool.tier", "decommission"),
                s("gen_ai.agent.tool.disposition", "simulate"),
            ])),
            stamped("decommission", "gen_ai")
        );
        assert_eq!(
            risk_of(with_events(
                vec![],
                vec![event(
                    "gate.result",
                    vec![
                        s("gen_ai.agent.tool.disposition", "allow"),
                        s("gen_ai.agent.tool.tier", "read"),
                    ],
                )],
            )),
            stamped("read", "gen_ai")
        );
    }

    #[test]
    fn risk_outside_a_decision_does_not_count() {
        let (risk, dialect) = risk_of(with_events(
            vec![s("gen_ai.agent.tool.tier", "destructive")],
            vec![
                // A tier without a disposition on the same event.
                event("gate.result", vec![s("gen_ai.agent.tool.tier", "write")]),
                // The disposition on the span does not lend itself to an event's tier.
                event("agent.approval", vec![s("agent.decision.risk", "read")]),
                event(
                    "agent.threat.detection",
                    vec![s("agent.decision.risk", "access_change")],
                ),
                event("gen_ai.choice", vec![s("agent.decision.risk", "write")]),
            ],
        ));
        assert_eq!((risk, dialect), (None, None));
        let (risk, _) = risk_of(with_events(
            vec![s("gen_ai.agent.tool.disposition", "allow")],
            vec![event(
                "gate.result",
                vec![s("gen_ai.agent.tool.tier", "write")],
            )],
        ));
        assert_eq!(risk, None);
        // Empty strings are no risk.
        let (risk, _) = risk_of(with_events(
            vec![s("agent.decision.risk", "")],
            vec![policy_decision("deny", "")],
        ));
        assert_eq!(risk, None);
    }

    #[test]
    fn own_risk_tier_wins_over_every_decision() {
        assert_eq!(
            risk_of(with_events(
                vec![
                    s("agent.decision.risk", "destructive"),
                    s("agent.tool.risk_tier", "read"),
                    s("gen_ai.agent.tool.disposition", "deny"),
                    s("gen_ai.agent.tool.tier", "destructive"),
                ],
                vec![
                    policy_decision("deny", "destructive"),
                    event(
                        "agent.decision",
                        vec![
                            s("agent.decision.verdict", "deny"),
                            s("agent.decision.risk", "access_change"),
                        ],
                    ),
                ],
            )),
            // The disposition stamps gen_ai (the strongest verdict: span attributes first).
            stamped("read", "gen_ai,agent")
        );
        assert_eq!(
            risk_of(span(vec![s("agent.tool.risk_tier", "provision")])),
            stamped("provision", "agent")
        );
    }

    #[test]
    fn the_most_severe_decision_risk_wins_whatever_the_verdicts() {
        let decision = |verdict: &str, risk: &str| {
            event(
                "agent.decision",
                vec![
                    s("agent.decision.verdict", verdict),
                    s("agent.decision.risk", risk),
                ],
            )
        };
        // destructive > access_change > write > external > read, whichever verdict said it.
        let ladder = ["read", "external", "write", "access_change", "destructive"];
        for (index, weaker) in ladder.iter().enumerate() {
            for stronger in &ladder[index + 1..] {
                for events in [
                    vec![decision("deny", weaker), decision("allow", stronger)],
                    vec![decision("allow", stronger), decision("deny", weaker)],
                ] {
                    let (risk, _) = risk_of(with_events(vec![], events));
                    assert_eq!(risk.as_deref(), Some(*stronger), "{weaker} vs {stronger}");
                }
            }
        }
        // Across sources: the span's decision, a policy decision, a disposition's tier.
        assert_eq!(
            risk_of(with_events(
                vec![s("agent.decision.risk", "read")],
                vec![
                    policy_decision("allow", "write"),
                    event(
                        "gate.result",
                        vec![
                            s("gen_ai.agent.tool.disposition", "allow"),
                            s("gen_ai.agent.tool.tier", "destructive"),
                        ],
                    ),
                    decision("escalate", "external"),
                ],
            )),
            // The tier stamps gen_ai, the escalating decision (the strongest verdict) agent.
            stamped("destructive", "gen_ai,agent")
        );
        // A value outside the vocabulary ranks below read; among equals the first seen wins
        // (span attributes, then events in order).
        assert_eq!(
            risk_of(with_events(
                vec![],
                vec![decision("allow", "provision"), decision("allow", "read")],
            ))
            .0
            .as_deref(),
            Some("read")
        );
        assert_eq!(
            risk_of(with_events(
                vec![s("agent.decision.risk", "provision")],
                vec![decision("allow", "decommission")],
            ))
            .0
            .as_deref(),
            Some("provision")
        );
        assert_eq!(
            risk_of(with_events(
                vec![
                    s("gen_ai.agent.tool.disposition", "simulate"),
                    s("gen_ai.agent.tool.tier", "write"),
                ],
                vec![decision("deny", "write")],
            )),
            // Equal risks: the span's tier is seen first; the deny event stamps agent.
            stamped("write", "gen_ai,agent")
        );
    }

    #[test]
    fn retry_attempt_from_agent_key_then_http_resend_count() {
        let fields = resolve(span(vec![
            int("http.request.resend_count", 2),
            s("agent.retry.attempt", "1"),
        ]));
        assert_eq!(fields.retry_attempt, Some(1));
        assert_eq!(fields.dialect.as_deref(), Some("agent"));
        let fields = resolve(span(vec![int("http.request.resend_count", 2)]));
        assert_eq!(fields.retry_attempt, Some(2));
        assert_eq!(fields.dialect, None);
    }

    #[test]
    fn dialect_lists_every_contributing_dialect_once_in_fixed_order() {
        let fields = resolve(span(vec![
            s("mcp.method.name", "tools/call"),
            s("ai.telemetry.metadata.sessionId", "s"),
            int("agent.retry.attempt", 0),
            s("traceloop.workflow.name", "w"),
            s("llm.model_name", "m"),
            s("langfuse.user.id", "u"),
            s("gen_ai.system", "openai"),
            s("gen_ai.tool.name", "t"),
            s("gen_ai.tool.type", "function"),
        ]));
        assert_eq!(
            fields.dialect.as_deref(),
            Some("gen_ai,gen_ai_deprecated,openinference,traceloop,langfuse,vercel_ai,agent,mcp")
        );
        assert_eq!(Dialects::NONE.column(), None);
        assert_eq!(Dialects::MCP.column(), Some("mcp"));
    }

    #[test]
    fn plain_spans_resolve_to_nothing() {
        let fields = resolve(span(vec![
            s("http.request.method", "POST"),
            s("server.address", "api.openai.com"),
        ]));
        assert_eq!(fields, AgentFields::default());
    }
}
