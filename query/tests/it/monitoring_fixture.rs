//! The monitoring fixture: seeded agent traces from `testdata` plus hand-built scenario traces,
//! sent through `ingest::to_span_batch` into an engine (two sealed segments and a memtable).
//!
//! Generated part ([`generator_config`]): 48 agent runs over 3 days (2026-11-01..03), 8
//! sessions, 4 services (support, research, coding, ops agents), with the model re-issuing most
//! tool calls that failed for good. Seed 1 was picked because it holds what the monitoring
//! queries look for: 5 models, denials on 5 policies over 3 days, approvals, explicit retries
//! (`agent.retry.*` and HTTP resends) and inferred ones, failed and refused runs, destructive
//! tools run without any decision.
//!
//! Hand-built part ([`scenario_requests`], all on 2026-11-02 from 12:00Z), the cases a seeded
//! run does not reliably produce:
//! - `e1`: every foreign decision signal of conventions §5.3 E on one run (guardrail and
//!   security verdicts, threat detection on a span and as an event, a decision outcome resolved
//!   by an approval, a tool disposition, a failed OpenInference guardrail span, `agent.decision.*`
//!   on a span, an `agent.policy.decision` event, a final `content_filter`); no `agent.outcome`,
//!   so the run's outcome is derived (refused);
//! - `e2`: a destructive tool denied by policy, nothing after it: derived outcome refused;
//! - `e3`: a failed root with a model call retried once; session only as a conversation id;
//! - `e4`: an HTTP server root, a workflow, a sub-agent, an agent called as a tool, a tool
//!   that fails and is called again with the same arguments (inferred retry) and then with
//!   other arguments (a new call), a tool whose HTTP request was resent;
//! - `e5`: a trace with an orphan span (its parent was never received);
//! - `e6`: an MCP client whose server span (`e7`) started a trace of its own, and a second MCP
//!   call whose server span kept the client's trace.

use std::sync::Arc;

use engine::Engine;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use query::{Options, SqlEngine};
use tempfile::TempDir;
use testdata::AgentTraceConfig;

/// 2026-11-01T00:00:00Z, the generator's default base time.
pub(crate) const BASE_TIME: u64 = testdata::DEFAULT_BASE_TIME_UNIX_NANO;
const MS: u64 = 1_000_000;
const HOUR: u64 = 3_600_000 * MS;
/// 2026-11-02T12:00:00Z: the hand-built scenarios start here.
const SCENARIO_TIME: u64 = BASE_TIME + 36 * HOUR;

/// The seeded part of the fixture.
pub(crate) fn generator_config() -> AgentTraceConfig {
    AgentTraceConfig {
        seed: 1,
        traces: 48,
        sessions: 8,
        services: 4,
        spans_per_trace: 14,
        time_spread_ns: 72 * HOUR,
        tool_reissue_percent: 60,
        ..AgentTraceConfig::default()
    }
}

/// Generated traces per export request.
const TRACES_PER_REQUEST: usize = 4;

/// Every export request of the fixture, in write order: the generated ones, then the
/// scenarios.
pub(crate) fn all_requests() -> Vec<ExportTraceServiceRequest> {
    let mut requests = testdata::export_requests(&generator_config(), TRACES_PER_REQUEST);
    requests.extend(scenario_requests());
    requests
}

pub(crate) struct MonitoringFixture {
    // Holds the engine; dropped first, so the engine closes before the directory goes away.
    pub(crate) sql: SqlEngine,
    _dir: TempDir,
}

impl MonitoringFixture {
    /// Requests 0-4 are sealed into one segment, 5-9 into a second, the rest (the last
    /// generated requests and every scenario) stay in the memtable.
    pub(crate) fn new() -> Self {
        Self::with_resends(false)
    }

    /// The same store, then every request sent again as an exporter re-sends after a timeout:
    /// the second copies arrive after the first ones were sealed, in reverse order, the first
    /// half sealed into segments of their own and the rest left in the memtable.
    pub(crate) fn resent() -> Self {
        Self::with_resends(true)
    }

    fn with_resends(resend: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(
            Engine::open(
                dir.path(),
                engine::Options::default().with_background_sealing(false),
            )
            .unwrap(),
        );
        for (index, request) in all_requests().iter().enumerate() {
            let rows = ingest::to_span_batch(request).unwrap();
            engine.write(rows.batch).unwrap();
            if index == 4 || index == 9 {
                engine.seal().unwrap();
            }
        }
        assert!(engine.stats().segments >= 2);
        assert!(engine.stats().memtable_rows > 0);
        if resend {
            let requests = all_requests();
            for (index, request) in requests.iter().rev().enumerate() {
                let rows = ingest::to_span_batch(request).unwrap();
                engine.write(rows.batch).unwrap();
                if index == requests.len() / 2 {
                    engine.seal().unwrap();
                }
            }
        }
        let sql = SqlEngine::new(Arc::clone(&engine), Options::default()).unwrap();
        MonitoringFixture { sql, _dir: dir }
    }
}

// --- hand-built OTLP ------------------------------------------------------------------------

pub(crate) fn key_value(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

pub(crate) fn string(key: &str, value: &str) -> KeyValue {
    key_value(key, Value::StringValue(value.to_owned()))
}

pub(crate) fn int(key: &str, value: i64) -> KeyValue {
    key_value(key, Value::IntValue(value))
}

fn strings(key: &str, values: &[&str]) -> KeyValue {
    let values = values
        .iter()
        .map(|value| AnyValue {
            value: Some(Value::StringValue((*value).to_owned())),
        })
        .collect();
    key_value(key, Value::ArrayValue(ArrayValue { values }))
}

/// Trace `number` of the scenarios: `e1e1…e1` for 1.
pub(crate) fn scenario_trace_id(number: u8) -> [u8; 16] {
    [0xe0 + number; 16]
}

/// Span `index` of scenario trace `number`: `e1000000000000NN`.
fn scenario_span_id(number: u8, index: u8) -> [u8; 8] {
    [0xe0 + number, 0, 0, 0, 0, 0, 0, index]
}

/// One span of a scenario trace; times in milliseconds after the trace's start.
pub(crate) struct SpanSpec {
    pub(crate) index: u8,
    pub(crate) parent: Option<u8>,
    pub(crate) name: &'static str,
    pub(crate) kind: SpanKind,
    pub(crate) start_ms: u64,
    pub(crate) end_ms: u64,
    pub(crate) attributes: Vec<KeyValue>,
    pub(crate) events: Vec<(u64, &'static str, Vec<KeyValue>)>,
    pub(crate) error: Option<&'static str>,
}

impl SpanSpec {
    pub(crate) fn new(
        index: u8,
        parent: Option<u8>,
        name: &'static str,
        start_ms: u64,
        end_ms: u64,
    ) -> Self {
        SpanSpec {
            index,
            parent,
            name,
            kind: SpanKind::Internal,
            start_ms,
            end_ms,
            attributes: Vec::new(),
            events: Vec::new(),
            error: None,
        }
    }

    pub(crate) fn kind(mut self, kind: SpanKind) -> Self {
        self.kind = kind;
        self
    }

    pub(crate) fn attributes(mut self, attributes: Vec<KeyValue>) -> Self {
        self.attributes = attributes;
        self
    }

    pub(crate) fn event(
        mut self,
        at_ms: u64,
        name: &'static str,
        attributes: Vec<KeyValue>,
    ) -> Self {
        self.events.push((at_ms, name, attributes));
        self
    }

    pub(crate) fn error(mut self, message: &'static str) -> Self {
        self.error = Some(message);
        self
    }
}

/// A trace (or one service's part of it) as one `ResourceSpans`. A parent index with no span
/// of that index makes an orphan.
pub(crate) fn trace(number: u8, start: u64, service: &str, specs: Vec<SpanSpec>) -> ResourceSpans {
    let spans = specs
        .into_iter()
        .map(|spec| Span {
            trace_id: scenario_trace_id(number).to_vec(),
            span_id: scenario_span_id(number, spec.index).to_vec(),
            trace_state: String::new(),
            parent_span_id: spec
                .parent
                .map(|parent| scenario_span_id(number, parent).to_vec())
                .unwrap_or_default(),
            flags: 0x101,
            name: spec.name.to_owned(),
            kind: spec.kind as i32,
            start_time_unix_nano: start + spec.start_ms * MS,
            end_time_unix_nano: start + spec.end_ms * MS,
            attributes: spec.attributes,
            dropped_attributes_count: 0,
            events: spec
                .events
                .into_iter()
                .map(|(at_ms, name, attributes)| Event {
                    time_unix_nano: start + at_ms * MS,
                    name: name.to_owned(),
                    attributes,
                    dropped_attributes_count: 0,
                })
                .collect(),
            dropped_events_count: 0,
            links: Vec::new(),
            dropped_links_count: 0,
            status: spec.error.map(|message| Status {
                message: message.to_owned(),
                code: StatusCode::Error as i32,
            }),
        })
        .collect();
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![string("service.name", service)],
            dropped_attributes_count: 0,
            entity_refs: Vec::new(),
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: testdata::GENAI_SCOPE_NAME.to_owned(),
                version: "1.1b0".to_owned(),
                attributes: Vec::new(),
                dropped_attributes_count: 0,
            }),
            spans,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

fn agent_root(index: u8, name: &'static str, end_ms: u64, session: &[KeyValue]) -> SpanSpec {
    let mut attributes = vec![
        string("gen_ai.operation.name", "invoke_agent"),
        string("gen_ai.agent.name", name),
    ];
    attributes.extend_from_slice(session);
    SpanSpec::new(index, None, "invoke_agent", 0, end_ms).attributes(attributes)
}

fn chat(
    index: u8,
    parent: u8,
    start_ms: u64,
    end_ms: u64,
    model: (&str, &str, &str),
    tokens: (i64, i64),
    finish: &str,
) -> SpanSpec {
    let (provider, request_model, response_model) = model;
    SpanSpec::new(index, Some(parent), "chat", start_ms, end_ms)
        .kind(SpanKind::Client)
        .attributes(vec![
            string("gen_ai.operation.name", "chat"),
            string("gen_ai.provider.name", provider),
            string("gen_ai.request.model", request_model),
            string("gen_ai.response.model", response_model),
            int("gen_ai.usage.input_tokens", tokens.0),
            int("gen_ai.usage.output_tokens", tokens.1),
            strings("gen_ai.response.finish_reasons", &[finish]),
        ])
}

fn tool(
    index: u8,
    parent: u8,
    start_ms: u64,
    end_ms: u64,
    name: &'static str,
    risk_tier: &str,
) -> SpanSpec {
    SpanSpec::new(index, Some(parent), "execute_tool", start_ms, end_ms).attributes(vec![
        string("gen_ai.operation.name", "execute_tool"),
        string("gen_ai.tool.name", name),
        string("agent.tool.risk_tier", risk_tier),
    ])
}

fn with(mut spec: SpanSpec, more: Vec<KeyValue>) -> SpanSpec {
    spec.attributes.extend(more);
    spec
}

const GPT: (&str, &str, &str) = ("openai", "gpt-4.1", "gpt-4.1-2025-04-14");
const HAIKU: (&str, &str, &str) = ("anthropic", "claude-haiku-4-5", "claude-haiku-4-5-20251001");

/// The hand-built traces, one export request each (the MCP server's spans come from another
/// service, in the same request as its client).
pub(crate) fn scenario_requests() -> Vec<ExportTraceServiceRequest> {
    let minute = 60_000 * MS;
    let session = |id: &str, conversation: &str, user: &str| {
        vec![
            string("session.id", id),
            string("gen_ai.conversation.id", conversation),
            string("user.id", user),
        ]
    };
    let gateway = session("sess_gateway", "conv_gateway", "user_gateway");

    // e1: every foreign decision signal; outcome derived from the final content filter.
    let e1 = trace(
        1,
        SCENARIO_TIME,
        "gateway-agent",
        vec![
            agent_root(1, "Gateway Agent", 9_000, &gateway),
            chat(2, 1, 10, 500, GPT, (1_000, 40), "tool_calls"),
            with(
                tool(3, 1, 600, 900, "lookup_customer", "read"),
                vec![
                    string("gen_ai.guardrail.verdict.type", "warn"),
                    string("gen_ai.guardrail.action.type", "allow"),
                    string("gen_ai.guardrail.policy.id", "pii.input"),
                ],
            )
            .event(
                700,
                "gen_ai.security.finding",
                vec![
                    string("gen_ai.security.verdict.type", "modify"),
                    string("gen_ai.security.action.type", "modify"),
                    string("gen_ai.security.policy.id", "secrets.scan"),
                ],
            ),
            with(
                tool(4, 1, 1_000, 1_500, "send_wire", "destructive"),
                vec![string("agent.threat.detection.action", "ask")],
            )
            .event(
                1_100,
                "agent.threat.detection",
                vec![
                    string("agent.threat.detection.action", "block"),
                    string("agent.threat.detection.rule_id", "wire.exfiltration"),
                ],
            ),
            with(
                tool(5, 1, 1_600, 4_000, "archive_mailbox", "write"),
                vec![
                    string("gen_ai.agent.decision.outcome", "defer"),
                    string("gen_ai.agent.decision.id", "gov-1"),
                ],
            )
            .event(
                3_850,
                "agent.approval",
                vec![
                    string("agent.approval.decision_id", "gov-1"),
                    string("agent.approval.status", "approved"),
                    string("agent.approval.approver.type", "human"),
                ],
            ),
            with(
                tool(6, 1, 4_100, 4_300, "delete_records", "destructive"),
                vec![
                    string("gen_ai.agent.tool.disposition", "simulate"),
                    string("gen_ai.agent.tool.tier", "destructive"),
                ],
            ),
            SpanSpec::new(7, Some(1), "output_guard", 4_400, 4_500)
                .attributes(vec![string("openinference.span.kind", "GUARDRAIL")])
                .error("guardrail tripped"),
            with(
                tool(8, 1, 4_600, 5_000, "update_crm", "write"),
                vec![
                    string("agent.decision.verdict", "allow"),
                    string("agent.decision.kind", "policy"),
                    string("agent.decision.policy.id", "crm.write"),
                    string("agent.decision.id", "dec-span-1"),
                ],
            )
            .event(
                4_700,
                "agent.policy.decision",
                vec![
                    string("agent.policy.decision", "deny"),
                    string("agent.policy.name", "crm.legacy_rule"),
                ],
            ),
            chat(9, 1, 5_100, 8_900, GPT, (2_000, 0), "content_filter"),
        ],
    );

    // e2: a destructive tool denied, and nothing after it.
    let e2 = trace(
        2,
        SCENARIO_TIME + 10 * minute,
        "gateway-agent",
        vec![
            agent_root(1, "Gateway Agent", 3_000, &gateway),
            chat(2, 1, 10, 400, HAIKU, (500, 30), "tool_calls"),
            tool(3, 1, 500, 900, "drop_database", "destructive").event(
                600,
                "agent.decision",
                vec![
                    string("agent.decision.id", "dec-e2"),
                    string("agent.decision.kind", "policy"),
                    string("agent.decision.verdict", "deny"),
                    string("agent.decision.policy.id", "db.destructive_ops"),
                    string("agent.decision.risk", "destructive"),
                    string("agent.decision.reasoning", "drops a production database"),
                ],
            ),
        ],
    );

    // e3: a failed run; the model call failed once and was retried by the client library.
    let e3 = trace(
        3,
        SCENARIO_TIME + 20 * minute,
        "gateway-agent",
        vec![
            SpanSpec::new(1, None, "invoke_agent", 0, 5_000)
                .attributes(vec![
                    string("gen_ai.operation.name", "invoke_agent"),
                    string("gen_ai.agent.name", "Gateway Agent"),
                    string("gen_ai.conversation.id", "conv_only"),
                    string("error.type", "ToolchainFailure"),
                ])
                .error("run failed"),
            with(
                chat(2, 1, 10, 300, HAIKU, (0, 0), "error"),
                vec![
                    int("agent.retry.attempt", 0),
                    string("error.type", "rate_limit_exceeded"),
                ],
            )
            .error("rate limited"),
            with(
                chat(3, 1, 1_300, 2_000, HAIKU, (800, 50), "stop"),
                vec![int("agent.retry.attempt", 1)],
            ),
        ],
    );

    // e4: HTTP server root > workflow > (classifier agent, tools, agent-as-tool).
    let e4_session = session("sess_flow", "conv_flow", "user_flow");
    let e4 = trace(
        4,
        SCENARIO_TIME + 30 * minute,
        "triage-service",
        vec![
            SpanSpec::new(1, None, "POST /triage", 0, 20_000)
                .kind(SpanKind::Server)
                .attributes(vec![string("http.request.method", "POST")]),
            with(
                SpanSpec::new(2, Some(1), "invoke_workflow triage_flow", 5, 19_900).attributes(
                    vec![
                        string("gen_ai.operation.name", "invoke_workflow"),
                        string("gen_ai.workflow.name", "triage_flow"),
                        string("agent.outcome", "success"),
                    ],
                ),
                e4_session,
            ),
            agent_like(3, 2, 10, 3_000, "Classifier"),
            chat(4, 3, 20, 2_900, HAIKU, (1_200, 60), "stop"),
            with(
                tool(5, 2, 3_100, 3_400, "fetch_ticket", "read"),
                vec![
                    string("error.type", "404"),
                    string("gen_ai.tool.call.arguments", r#"{"ticket":"T-1"}"#),
                ],
            )
            .error("not found"),
            // The same arguments after the failure: a retry (inferred); then other arguments:
            // a new call, not a retry.
            with(
                tool(6, 2, 3_500, 3_800, "fetch_ticket", "read"),
                vec![string("gen_ai.tool.call.arguments", r#"{"ticket":"T-1"}"#)],
            ),
            with(
                tool(7, 2, 3_900, 4_100, "fetch_ticket", "read"),
                vec![string("gen_ai.tool.call.arguments", r#"{"ticket":"T-2"}"#)],
            ),
            tool(8, 2, 4_200, 6_000, "post_update", "write"),
            SpanSpec::new(9, Some(8), "POST", 4_300, 4_800)
                .kind(SpanKind::Client)
                .attributes(vec![
                    string("http.request.method", "POST"),
                    int("http.response.status_code", 503),
                    string("error.type", "503"),
                ])
                .error(""),
            SpanSpec::new(10, Some(8), "POST", 4_900, 5_500)
                .kind(SpanKind::Client)
                .attributes(vec![
                    string("http.request.method", "POST"),
                    int("http.request.resend_count", 1),
                    int("http.response.status_code", 201),
                ]),
            tool(11, 2, 6_100, 15_000, "ask_expert", "read"),
            agent_like(12, 11, 6_200, 14_900, "Expert"),
            chat(13, 12, 6_300, 14_800, GPT, (3_000, 400), "stop"),
        ],
    );

    // e5: a chat span whose parent never arrived.
    let e5_session = session("sess_orphan", "conv_orphan", "user_orphan");
    let e5 = trace(
        5,
        SCENARIO_TIME + 40 * minute,
        "gateway-agent",
        vec![
            with(
                SpanSpec::new(1, None, "invoke_agent", 0, 4_000).attributes(vec![
                    string("gen_ai.operation.name", "invoke_agent"),
                    string("gen_ai.agent.name", "Gateway Agent"),
                    string("agent.outcome", "success"),
                ]),
                e5_session,
            ),
            chat(2, 1, 10, 900, GPT, (700, 20), "tool_calls"),
            // Parent 9 (a tool span lost on the way) does not exist.
            chat(3, 9, 1_500, 3_000, GPT, (900, 80), "stop"),
        ],
    );

    // e6 (client) and e7 (a server span that started its own trace).
    let e6_session = session("sess_mcp", "conv_mcp", "user_mcp");
    let mcp_call = |index: u8, start_ms: u64, end_ms: u64, tool_name: &'static str| {
        SpanSpec::new(index, Some(1), "tools/call", start_ms, end_ms)
            .kind(SpanKind::Client)
            .attributes(vec![
                string("gen_ai.operation.name", "execute_tool"),
                string("gen_ai.tool.name", tool_name),
                string("mcp.method.name", "tools/call"),
                string("mcp.session.id", "mcp-7"),
            ])
    };
    let mcp_server = |index: u8, parent: Option<u8>, start_ms: u64, end_ms: u64, tool_name| {
        SpanSpec::new(index, parent, "tools/call", start_ms, end_ms)
            .kind(SpanKind::Server)
            .attributes(vec![
                string("gen_ai.operation.name", "execute_tool"),
                string("gen_ai.tool.name", tool_name),
                string("mcp.method.name", "tools/call"),
                string("mcp.session.id", "mcp-7"),
            ])
    };
    let e6_start = SCENARIO_TIME + 50 * minute;
    let e6 = trace(
        6,
        e6_start,
        "gateway-agent",
        vec![
            with(
                SpanSpec::new(1, None, "invoke_agent", 0, 6_000).attributes(vec![
                    string("gen_ai.operation.name", "invoke_agent"),
                    string("gen_ai.agent.name", "Gateway Agent"),
                    string("agent.outcome", "success"),
                ]),
                e6_session,
            ),
            chat(2, 1, 10, 900, GPT, (600, 30), "tool_calls"),
            mcp_call(3, 1_000, 2_000, "search_docs"),
            mcp_call(4, 2_100, 3_000, "list_docs"),
            chat(5, 1, 3_100, 5_900, GPT, (1_100, 90), "stop"),
        ],
    );
    // The server kept the client's trace for list_docs (parent = client span 4)...
    let e6_server = trace(
        6,
        e6_start,
        "docs-mcp-server",
        vec![mcp_server(10, Some(4), 2_200, 2_900, "list_docs")],
    );
    // ...but not for search_docs: a new trace with no parent.
    let e7 = trace(
        7,
        e6_start,
        "docs-mcp-server",
        vec![mcp_server(1, None, 1_100, 1_900, "search_docs")],
    );

    vec![
        request(vec![e1]),
        request(vec![e2]),
        request(vec![e3]),
        request(vec![e4]),
        request(vec![e5]),
        request(vec![e6, e6_server, e7]),
    ]
}

/// An `invoke_agent` span below `parent` (no session attributes: they come from the root).
fn agent_like(index: u8, parent: u8, start_ms: u64, end_ms: u64, name: &'static str) -> SpanSpec {
    SpanSpec::new(index, Some(parent), "invoke_agent", start_ms, end_ms).attributes(vec![
        string("gen_ai.operation.name", "invoke_agent"),
        string("gen_ai.agent.name", name),
    ])
}

pub(crate) fn request(resource_spans: Vec<ResourceSpans>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest { resource_spans }
}
