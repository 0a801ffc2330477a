//! The fixed vocabulary of the agent-trace generator: agent roles, their tools, models,
//! policies and error types. Plain data, so a reviewer can see every value the generator can emit.

/// One kind of agent; service `i` runs role `ROLES[i % ROLES.len()]` as `<role>-agent-<i>`.
#[derive(Debug)]
pub(crate) struct Role {
    pub(crate) role: &'static str,
    pub(crate) agent_name: &'static str,
    pub(crate) sub_agent_name: &'static str,
    pub(crate) tools: &'static [Tool],
}

#[derive(Debug)]
pub(crate) struct Tool {
    pub(crate) name: &'static str,
    /// `gen_ai.tool.type`: function | extension | datastore.
    pub(crate) tool_type: &'static str,
    /// `agent.tool.risk_tier` and `agent.decision.risk`.
    pub(crate) risk: Risk,
    /// The outgoing HTTP call the tool makes, if any: method, host, path.
    pub(crate) http: Option<(&'static str, &'static str, &'static str)>,
    /// Own processing time bounds in milliseconds (HTTP time comes on top).
    pub(crate) min_ms: u64,
    pub(crate) max_ms: u64,
    /// `error.type` values this tool fails with.
    pub(crate) error_types: &'static [&'static str],
    /// `agent.decision.policy.id` and a short reasoning used when a policy gates the call.
    pub(crate) policy: Option<(&'static str, &'static str)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Risk {
    Read,
    Write,
    Destructive,
    External,
}

impl Risk {
    /// `agent.decision.risk`.
    pub(crate) fn decision_risk(self) -> &'static str {
        match self {
            Risk::Read => "read",
            Risk::Write => "write",
            Risk::Destructive => "destructive",
            Risk::External => "external",
        }
    }

    /// `agent.tool.risk_tier` (its vocabulary has no `external`: external calls are writes).
    pub(crate) fn risk_tier(self) -> &'static str {
        match self {
            Risk::Read => "read",
            Risk::Write | Risk::External => "write",
            Risk::Destructive => "destructive",
        }
    }

    /// Whether a policy engine looks at calls of this risk by default.
    pub(crate) fn is_gated(self) -> bool {
        self != Risk::Read
    }
}

// One positional row per tool keeps the ROLES table readable.
#[allow(clippy::too_many_arguments)]
const fn tool(
    name: &'static str,
    tool_type: &'static str,
    risk: Risk,
    http: Option<(&'static str, &'static str, &'static str)>,
    min_ms: u64,
    max_ms: u64,
    error_types: &'static [&'static str],
    policy: Option<(&'static str, &'static str)>,
) -> Tool {
    Tool {
        name,
        tool_type,
        risk,
        http,
        min_ms,
        max_ms,
        error_types,
        policy,
    }
}

pub(crate) const ROLES: &[Role] = &[
    Role {
        role: "support",
        agent_name: "Support Triage",
        sub_agent_name: "Refund Specialist",
        tools: &[
            tool(
                "search_knowledge_base",
                "datastore",
                Risk::Read,
                None,
                15,
                400,
                &["timeout"],
                None,
            ),
            tool(
                "get_order_status",
                "function",
                Risk::Read,
                Some(("GET", "orders.internal.example.com", "/v2/orders/")),
                2,
                40,
                &["404", "timeout"],
                None,
            ),
            tool(
                "issue_refund",
                "function",
                Risk::Write,
                Some(("POST", "payments.internal.example.com", "/v1/refunds")),
                5,
                80,
                &["PaymentDeclined", "timeout"],
                Some((
                    "refunds.auto_approve_limit",
                    "refund amount above the auto-approve limit",
                )),
            ),
            tool(
                "send_email",
                "extension",
                Risk::External,
                Some(("POST", "api.mailer.example.com", "/v3/mail/send")),
                3,
                60,
                &["429", "InvalidRecipient"],
                Some((
                    "email.external_recipients",
                    "recipient outside the customer's domain",
                )),
            ),
            tool(
                "close_ticket",
                "function",
                Risk::Write,
                None,
                2,
                30,
                &["TicketLocked"],
                Some((
                    "tickets.close_requires_resolution",
                    "ticket has no resolution note",
                )),
            ),
        ],
    },
    Role {
        role: "research",
        agent_name: "Research Assistant",
        sub_agent_name: "Source Summarizer",
        tools: &[
            tool(
                "web_search",
                "extension",
                Risk::Read,
                Some(("GET", "api.search.example.com", "/v1/search")),
                5,
                120,
                &["429", "timeout"],
                None,
            ),
            tool(
                "fetch_url",
                "function",
                Risk::Read,
                Some(("GET", "docs.example.org", "/articles/")),
                3,
                90,
                &["404", "403", "timeout"],
                None,
            ),
            tool(
                "summarize_document",
                "function",
                Risk::Read,
                None,
                40,
                900,
                &["DocumentTooLarge"],
                None,
            ),
            tool(
                "save_report",
                "datastore",
                Risk::Write,
                None,
                5,
                120,
                &["QuotaExceeded"],
                Some(("reports.workspace_write", "writes to a shared workspace")),
            ),
        ],
    },
    Role {
        role: "coding",
        agent_name: "Code Assistant",
        sub_agent_name: "Test Runner",
        tools: &[
            tool(
                "read_file",
                "function",
                Risk::Read,
                None,
                1,
                15,
                &["FileNotFoundError"],
                None,
            ),
            tool(
                "search_code",
                "datastore",
                Risk::Read,
                None,
                10,
                300,
                &["timeout"],
                None,
            ),
            tool(
                "apply_patch",
                "function",
                Risk::Write,
                None,
                5,
                150,
                &["PatchConflict"],
                Some((
                    "repo.write_protected_paths",
                    "patch touches a protected path",
                )),
            ),
            tool(
                "run_tests",
                "function",
                Risk::Read,
                None,
                800,
                45_000,
                &["1", "timeout"],
                None,
            ),
            tool(
                "run_shell",
                "function",
                Risk::Destructive,
                None,
                20,
                8_000,
                &["1", "2", "127"],
                Some((
                    "shell.destructive_commands",
                    "command deletes files outside the workspace",
                )),
            ),
        ],
    },
    Role {
        role: "ops",
        agent_name: "Ops Copilot",
        sub_agent_name: "Incident Analyst",
        tools: &[
            tool(
                "query_metrics",
                "datastore",
                Risk::Read,
                Some((
                    "POST",
                    "metrics.internal.example.com",
                    "/api/v1/query_range",
                )),
                5,
                250,
                &["timeout", "400"],
                None,
            ),
            tool(
                "search_logs",
                "datastore",
                Risk::Read,
                Some(("POST", "logs.internal.example.com", "/api/search")),
                20,
                1_500,
                &["timeout"],
                None,
            ),
            tool(
                "restart_service",
                "function",
                Risk::Destructive,
                Some((
                    "POST",
                    "deploy.internal.example.com",
                    "/v1/rollouts/restart",
                )),
                50,
                4_000,
                &["RolloutFailed", "403"],
                Some((
                    "prod.destructive_operations",
                    "restart of a production service",
                )),
            ),
            tool(
                "scale_deployment",
                "function",
                Risk::Write,
                Some(("PATCH", "deploy.internal.example.com", "/v1/deployments/")),
                20,
                900,
                &["QuotaExceeded", "403"],
                Some((
                    "prod.capacity_changes",
                    "replica count above the change budget",
                )),
            ),
            tool(
                "page_oncall",
                "extension",
                Risk::External,
                Some(("POST", "events.pager.example.com", "/v2/enqueue")),
                5,
                200,
                &["429"],
                Some((
                    "oncall.paging_policy",
                    "pages a human outside business hours",
                )),
            ),
        ],
    },
];

/// A model as seen by `gen_ai.*` attributes.
#[derive(Debug)]
pub(crate) struct Model {
    pub(crate) provider: &'static str,
    pub(crate) request_model: &'static str,
    pub(crate) response_model: &'static str,
    pub(crate) server_address: &'static str,
    pub(crate) response_id_prefix: &'static str,
    pub(crate) tool_call_id_prefix: &'static str,
}

const fn model(
    provider: &'static str,
    request_model: &'static str,
    response_model: &'static str,
    server_address: &'static str,
    response_id_prefix: &'static str,
    tool_call_id_prefix: &'static str,
) -> Model {
    Model {
        provider,
        request_model,
        response_model,
        server_address,
        response_id_prefix,
        tool_call_id_prefix,
    }
}

/// Main models; service `i` uses `MODELS[i % MODELS.len()]`, its sub-agent the next one.
pub(crate) const MODELS: &[Model] = &[
    model(
        "openai",
        "gpt-4.1",
        "gpt-4.1-2025-04-14",
        "api.openai.com",
        "chatcmpl-",
        "call_",
    ),
    model(
        "anthropic",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        "api.anthropic.com",
        "msg_",
        "toolu_",
    ),
    model(
        "aws.bedrock",
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        "bedrock-runtime.us-east-1.amazonaws.com",
        "msg_bdrk_",
        "tooluse_",
    ),
    model(
        "openai",
        "gpt-4.1-mini",
        "gpt-4.1-mini-2025-04-14",
        "api.openai.com",
        "chatcmpl-",
        "call_",
    ),
    model(
        "gcp.gemini",
        "gemini-2.5-flash",
        "gemini-2.5-flash",
        "generativelanguage.googleapis.com",
        "resp-",
        "fc_",
    ),
];

/// `gen_ai.request.temperature` values agents are configured with.
pub(crate) const TEMPERATURES: &[f64] = &[0.0, 0.2, 0.3, 0.7, 1.0];

/// `error.type` of a failed model call, weighted.
pub(crate) const CHAT_ERRORS: &[(&str, u32)] = &[
    ("rate_limit_exceeded", 6),
    ("timeout", 2),
    ("500", 1),
    ("overloaded_error", 1),
];
