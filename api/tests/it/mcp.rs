//! The MCP server at `/mcp`, driven by the rmcp crate's own streamable HTTP client: the tool
//! list, every tool's answer checked against the same question asked over the SQL API (and
//! counts against the generated input), the caps, refusals, bad arguments and tokens.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use api::ServerConfig;
use api::auth::Scope;
use prost::Message as _;
use rmcp::ServiceExt as _;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::service::{RoleClient, RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

use crate::support::TestServer;

const INGEST: &str = "mcp-ingest";
const QUERY: &str = "mcp-query";
const CONTENT: &str = "mcp-content";

/// The trace holding a prompt (hand-built, content-bearing).
const PROMPT_TRACE: &str = "5af92f3577b34da6a3ce929d0e0e4736";
const PROMPT: &str = "summarize the incident report for ticket 4471";

type Client = RunningService<RoleClient, ClientConfig>;

fn generator() -> testdata::AgentTraceConfig {
    testdata::AgentTraceConfig {
        seed: 3,
        traces: 12,
        sessions: 3,
        services: 2,
        spans_per_trace: 14,
        time_spread_ns: 48 * 3_600_000_000_000,
        tool_reissue_percent: 60,
        ..testdata::AgentTraceConfig::default()
    }
}

/// A server with tokens, holding the generated traces and the prompt trace; the number of
/// spans sent.
async fn seeded_server(dir: &std::path::Path) -> (TestServer, usize) {
    let mut config = ServerConfig::ephemeral(dir);
    config.tokens = crate::support::tokens(&[
        ("collector", INGEST, &[Scope::Ingest]),
        ("analyst", QUERY, &[Scope::Query]),
        ("investigator", CONTENT, &[Scope::Query, Scope::Content]),
    ]);
    let mut server = TestServer::start_with(config).await;
    let http = reqwest::Client::new();
    let mut sent = 0;
    for request in testdata::export_requests(&generator(), 4) {
        sent += testdata::span_count(&request);
        let response = http
            .post(format!("{}/v1/traces", server.otlp_http))
            .header("content-type", "application/x-protobuf")
            .bearer_auth(INGEST)
            .body(request.encode_to_vec())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }
    let prompt = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "agent"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": PROMPT_TRACE, "spanId": "00000000000000a1", "name": "chat m",
            "kind": 3, "startTimeUnixNano": "1700000000000000000",
            "endTimeUnixNano": "1700000001000000000",
            "attributes": [
                {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                {"key": "gen_ai.input.messages", "value": {"stringValue": format!(
                    r#"[{{"role": "user", "parts": [{{"type": "text", "content": "{PROMPT}"}}]}}]"#
                )}}
            ]
        }]}]
    }]});
    let response = http
        .post(format!("{}/v1/traces", server.otlp_http))
        .bearer_auth(INGEST)
        .json(&prompt)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    sent += 1;
    // The helper's SQL client speaks with the content token.
    server.client = crate::support::client_with_token(CONTENT);
    (server, sent)
}

async fn connect(server: &TestServer, token: Option<&str>) -> Result<Client, String> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", server.api));
    if let Some(token) = token {
        config = config.auth_header(token);
    }
    let transport = StreamableHttpClientTransport::from_config(config);
    ClientConfig::default()
        .serve(transport)
        .await
        .map_err(|error| format!("{error:?}"))
}

/// A tool call's outcome: `Ok(text)` or `Err(text)` for an `isError` result.
async fn call(client: &Client, tool: &str, arguments: Value) -> Result<String, String> {
    let result = call_raw(client, tool, arguments)
        .await
        .unwrap_or_else(|error| panic!("{tool}: {error:?}"));
    let json = serde_json::to_value(&result).unwrap();
    let text = json["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{tool}: no text in {json}"))
        .to_owned();
    if json["isError"] == true {
        Err(text)
    } else {
        Ok(text)
    }
}

async fn call_raw(
    client: &Client,
    tool: &str,
    arguments: Value,
) -> Result<rmcp::model::CallToolResult, ServiceError> {
    let Value::Object(arguments) = arguments else {
        panic!("arguments must be an object");
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments))
        .await
}

/// A rows answer: column names, rows, and its last line.
struct Table {
    columns: Vec<String>,
    rows: Vec<Value>,
    last: String,
}

fn table(text: &str) -> Table {
    let mut lines = text
        .lines()
        .skip_while(|line| !line.starts_with("columns: "));
    let header = lines
        .next()
        .unwrap_or_else(|| panic!("no columns line in {text}"));
    let columns: Vec<String> = serde_json::from_str(&header["columns: ".len()..]).unwrap();
    let types = lines.next().unwrap();
    assert!(types.starts_with("types: ["), "{text}");
    let mut rows = Vec::new();
    let mut last = String::new();
    for line in lines {
        if line.starts_with('[') {
            rows.push(serde_json::from_str(line).unwrap_or_else(|error| panic!("{line}: {error}")));
        } else {
            last = line.to_owned();
        }
    }
    Table {
        columns,
        rows,
        last,
    }
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_listed_with_schemas_and_sql_answers_as_the_sql_api() {
    let dir = tempfile::tempdir().unwrap();
    let (server, sent) = seeded_server(dir.path()).await;
    let client = connect(&server, Some(QUERY)).await.unwrap();

    let info = client.peer_info().unwrap();
    assert_eq!(info.server_info.as_ref().unwrap().name, "sightline");
    let tools = client.list_all_tools().await.unwrap();
    let names: BTreeSet<String> = tools.iter().map(|tool| tool.name.to_string()).collect();
    let expected: BTreeSet<String> = [
        "find_runs",
        "get_trace",
        "monitoring",
        "session_summary",
        "sql",
    ]
    .map(str::to_owned)
    .into_iter()
    .collect();
    assert_eq!(names, expected);
    for tool in &tools {
        let schema = Value::Object((*tool.input_schema).clone());
        assert_eq!(schema["type"], "object", "{}: {schema}", tool.name);
        assert!(schema["properties"].is_object(), "{}: {schema}", tool.name);
        assert!(
            tool.description
                .as_deref()
                .is_some_and(|text| text.len() > 40),
            "{}",
            tool.name
        );
    }
    let get_trace = tools.iter().find(|tool| tool.name == "get_trace").unwrap();
    assert_eq!(get_trace.input_schema["required"], json!(["trace_id"]));

    // The same query over MCP and over the SQL API; the span count against the input.
    let query = "SELECT agent_name, outcome, count(*) AS runs, sum(llm_calls) AS llm_calls \
                 FROM agent_runs GROUP BY agent_name, outcome ORDER BY agent_name, outcome";
    let answer = table(&call(&client, "sql", json!({ "sql": query })).await.unwrap());
    assert_eq!(
        answer.columns,
        ["agent_name", "outcome", "runs", "llm_calls"]
    );
    assert_eq!(answer.rows, server.rows(query).await);
    assert!(!answer.rows.is_empty());
    assert_eq!(
        answer.last,
        format!("rows: {}, truncated: false", answer.rows.len())
    );
    let spans = table(
        &call(
            &client,
            "sql",
            json!({ "sql": "SELECT count(*) AS spans FROM spans" }),
        )
        .await
        .unwrap(),
    );
    assert_eq!(spans.rows, vec![json!([sent])]);

    // Row cap: the first rows of the ordered result, and the answer says it was cut.
    let ordered = "SELECT trace_id, span_id FROM spans ORDER BY trace_id, span_id";
    let capped = table(
        &call(&client, "sql", json!({ "sql": ordered, "max_rows": 5 }))
            .await
            .unwrap(),
    );
    assert_eq!(capped.rows, server.rows(ordered).await[..5].to_vec());
    assert!(
        capped.last.starts_with("rows: 5, truncated: true"),
        "{}",
        capped.last
    );
    let default_cap = table(
        &call(&client, "sql", json!({ "sql": ordered }))
            .await
            .unwrap(),
    );
    assert_eq!(default_cap.rows.len(), 100);
    assert!(default_cap.last.contains("truncated: true"));

    // Byte cap: 1000-byte rows stop before 64 KiB, saying so.
    let wide = call(
        &client,
        "sql",
        json!({ "sql": "SELECT repeat('x', 1000) AS padding FROM spans", "max_rows": 1000 }),
    )
    .await
    .unwrap();
    assert!(wide.len() <= 64 * 1024, "{}", wide.len());
    let wide = table(&wide);
    assert!(wide.rows.len() > 10 && wide.rows.len() < sent);
    assert_eq!(
        wide.last,
        format!(
            "rows: {} of {sent}, truncated: true (the answer is capped at 65536 bytes: select \
             fewer columns, or fewer rows with max_rows or filters)",
            wide.rows.len()
        )
    );

    // Writes, content without the content scope, bad SQL and bad caps are tool errors.
    for statement in [
        "CREATE TABLE stolen AS SELECT * FROM spans",
        "INSERT INTO spans SELECT * FROM spans",
        "COPY spans TO '/tmp/out.csv'",
    ] {
        let refused = call(&client, "sql", json!({ "sql": statement }))
            .await
            .unwrap_err();
        assert!(refused.contains("not allowed"), "{statement}: {refused}");
    }
    let withheld = call(
        &client,
        "sql",
        json!({ "sql": "SELECT value FROM content" }),
    )
    .await
    .unwrap_err();
    assert!(withheld.contains("content"), "{withheld}");
    let invalid = call(&client, "sql", json!({ "sql": "SELECT nope FROM spans" }))
        .await
        .unwrap_err();
    assert!(invalid.contains("nope"), "{invalid}");
    let too_many = call(
        &client,
        "sql",
        json!({ "sql": "SELECT 1", "max_rows": 5000 }),
    )
    .await
    .unwrap_err();
    assert_eq!(too_many, "max_rows must be between 1 and 1000, not 5000");

    // Arguments that do not fit the schema: a tool error naming the problem (rmcp answers
    // them as `isError` results rather than JSON-RPC errors).
    for (arguments, problem) in [
        (json!({}), "missing field `sql`"),
        (
            json!({ "sql": 1 }),
            "invalid type: integer `1`, expected a string",
        ),
        (
            json!({ "sql": "SELECT 1", "limit": 3 }),
            "unknown field `limit`",
        ),
    ] {
        let refused = call(&client, "sql", arguments.clone()).await.unwrap_err();
        assert!(
            refused.starts_with("failed to deserialize parameters: ") && refused.contains(problem),
            "{arguments}: {refused}"
        );
    }
    client.cancel().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_trace_draws_what_sightline_trace_draws_and_content_needs_its_scope() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = seeded_server(dir.path()).await;
    let client = connect(&server, Some(QUERY)).await.unwrap();

    // The trace with the most decisions.
    let busiest = server
        .rows(
            "SELECT trace_id, count(*) AS decisions FROM decisions GROUP BY trace_id \
             ORDER BY decisions DESC, trace_id LIMIT 1",
        )
        .await;
    let trace_id = text(&busiest[0][0]);
    let decisions = busiest[0][1].as_i64().unwrap();
    assert!(decisions > 0);
    let drawn = call(
        &client,
        "get_trace",
        json!({ "trace_id": trace_id.to_uppercase() }),
    )
    .await
    .unwrap();
    let spans = server
        .count(&format!(
            "SELECT count(DISTINCT span_id) FROM spans WHERE trace_id = '{trace_id}'"
        ))
        .await;
    let generated = testdata::agent_trace_iter(&generator())
        .find(|trace| hex::encode(trace.trace_id) == trace_id)
        .unwrap();
    assert_eq!(usize::try_from(spans).unwrap(), generated.spans);
    assert!(
        drawn.starts_with(&format!("trace {trace_id}  {spans} spans")),
        "{drawn}"
    );
    // One decision line (its ◆ time mark) per decision row, each naming its policy.
    assert_eq!(
        drawn.lines().filter(|line| line.contains('◆')).count(),
        usize::try_from(decisions).unwrap(),
        "{drawn}"
    );
    for row in server
        .rows(&format!(
            "SELECT verdict, policy_id FROM decisions WHERE trace_id = '{trace_id}'"
        ))
        .await
    {
        if let Some(policy) = row[1].as_str() {
            assert!(
                drawn.contains(&format!("policy={policy}")),
                "{policy}: {drawn}"
            );
        }
    }
    // The very text `sightline trace` prints, without colors, and a note on content.
    let cli = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(["trace", &trace_id, "--url", &server.api, "--color", "never"])
        .env("SIGHTLINE_TOKEN", QUERY)
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let cli = String::from_utf8(cli.stdout).unwrap();
    assert_eq!(
        drawn,
        format!(
            "{cli}\n(content not included: call with include_content = true for prompts and \
             completions)\n"
        )
    );

    // A line cap keeps the first lines and says how many were left out.
    let short = call(
        &client,
        "get_trace",
        json!({ "trace_id": trace_id, "max_lines": 3 }),
    )
    .await
    .unwrap();
    let total = drawn.lines().count();
    let kept: Vec<&str> = short.lines().collect();
    assert_eq!(kept[..3], drawn.lines().take(3).collect::<Vec<_>>()[..]);
    assert_eq!(
        kept[3],
        format!(
            "(truncated: {} more lines not shown; the answer is capped at 3 lines and 65536 \
             bytes)",
            total - 3
        )
    );

    // Unknown and malformed ids are tool errors saying so.
    let missing = call(
        &client,
        "get_trace",
        json!({ "trace_id": "0123456789abcdef0123456789abcdef" }),
    )
    .await
    .unwrap_err();
    assert_eq!(
        missing,
        "trace 0123456789abcdef0123456789abcdef not found in this server"
    );
    let malformed = call(&client, "get_trace", json!({ "trace_id": "42" }))
        .await
        .unwrap_err();
    assert!(
        malformed.starts_with("invalid trace id \"42\""),
        "{malformed}"
    );

    // Content: withheld without the content scope, listed with it.
    let withheld = call(
        &client,
        "get_trace",
        json!({ "trace_id": PROMPT_TRACE, "include_content": true }),
    )
    .await
    .unwrap();
    assert!(!withheld.contains(PROMPT), "{withheld}");
    assert!(
        withheld.ends_with(
            "\ncontent withheld: prompts and completions need a token with the content scope\n"
        ),
        "{withheld}"
    );
    let investigator = connect(&server, Some(CONTENT)).await.unwrap();
    let shown = call(
        &investigator,
        "get_trace",
        json!({ "trace_id": PROMPT_TRACE, "include_content": true }),
    )
    .await
    .unwrap();
    let stored = server
        .rows(&format!(
            "SELECT span_id, key, status FROM content WHERE trace_id = '{PROMPT_TRACE}'"
        ))
        .await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(
        shown.contains(&format!(
            "\ncontent (1 values; each cut at 2000 characters):\n  00000000000000a1 {} [present]: ",
            text(&stored[0][1])
        )),
        "{shown}"
    );
    assert!(shown.contains(PROMPT), "{shown}");
    investigator.cancel().await.unwrap();
    client.cancel().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_runs_and_session_summary_match_sql_and_the_generated_input() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = seeded_server(dir.path()).await;
    let client = connect(&server, Some(QUERY)).await.unwrap();
    let generated: Vec<testdata::AgentTrace> = testdata::agent_trace_iter(&generator()).collect();
    let run_key = |row: &Value| (text(&row[0]), text(&row[1]));

    // Every generated trace is one run; all of them, newest first.
    let all = table(
        &call(&client, "find_runs", json!({ "max_rows": 1000 }))
            .await
            .unwrap(),
    );
    assert_eq!(all.rows.len(), generated.len());
    assert_eq!(all.columns[..3], ["start_time", "trace_id", "span_id"]);
    let by_sql = server
        .rows(
            "SELECT trace_id, span_id FROM agent_runs \
             ORDER BY start_time DESC, trace_id, span_id",
        )
        .await;
    assert_eq!(
        all.rows
            .iter()
            .map(|row| (text(&row[1]), text(&row[2])))
            .collect::<Vec<_>>(),
        by_sql.iter().map(run_key).collect::<Vec<_>>()
    );

    // By session: the generator's traces of that session.
    let session = generated[0].session_id.clone();
    let mut expected: Vec<String> = generated
        .iter()
        .filter(|trace| trace.session_id == session)
        .map(|trace| hex::encode(trace.trace_id))
        .collect();
    expected.sort();
    let found = table(
        &call(&client, "find_runs", json!({ "session_id": session }))
            .await
            .unwrap(),
    );
    let mut found_traces: Vec<String> = found.rows.iter().map(|row| text(&row[1])).collect();
    found_traces.sort();
    assert_eq!(found_traces, expected);

    // By tool, verdict and outcome: the runs a join written another way finds.
    let tool = text(
        &server
            .rows("SELECT tool_name FROM tool_calls GROUP BY tool_name ORDER BY count(*), tool_name LIMIT 1")
            .await[0][0],
    );
    let outcome = text(
        &server
            .rows("SELECT outcome FROM agent_runs GROUP BY outcome ORDER BY count(*), outcome LIMIT 1")
            .await[0][0],
    );
    // The rarest verdict (the generator draws allow and warn).
    let verdict = text(
        &server
            .rows(
                "SELECT verdict FROM decisions GROUP BY verdict ORDER BY count(*), verdict LIMIT 1",
            )
            .await[0][0],
    );
    for (arguments, sql) in [
        (
            json!({ "tool": tool }),
            format!(
                "SELECT DISTINCT r.trace_id, r.span_id, r.start_time FROM agent_runs r \
                 JOIN tool_calls t ON t.trace_id = r.trace_id WHERE t.tool_name = '{tool}' \
                 ORDER BY r.start_time DESC, r.trace_id, r.span_id"
            ),
        ),
        (
            json!({ "verdict": verdict, "outcome": outcome }),
            format!(
                "SELECT DISTINCT r.trace_id, r.span_id, r.start_time FROM agent_runs r \
                 JOIN decisions d ON d.trace_id = r.trace_id \
                 WHERE d.verdict = '{verdict}' AND r.outcome = '{outcome}' \
                 ORDER BY r.start_time DESC, r.trace_id, r.span_id"
            ),
        ),
        (
            json!({ "since": "2026-11-02T00:00:00Z", "until": "2026-11-02T12:00:00Z" }),
            "SELECT trace_id, span_id FROM agent_runs \
             WHERE start_time >= '2026-11-02T00:00:00Z' AND start_time < '2026-11-02T12:00:00Z' \
             ORDER BY start_time DESC, trace_id, span_id"
                .to_owned(),
        ),
    ] {
        let found = table(&call(&client, "find_runs", arguments.clone()).await.unwrap());
        let expected: Vec<(String, String)> = server.rows(&sql).await.iter().map(run_key).collect();
        assert!(!expected.is_empty(), "{arguments}");
        assert_eq!(
            found
                .rows
                .iter()
                .map(|row| (text(&row[1]), text(&row[2])))
                .collect::<Vec<_>>(),
            expected,
            "{arguments}"
        );
    }
    let two = table(
        &call(&client, "find_runs", json!({ "max_rows": 2 }))
            .await
            .unwrap(),
    );
    assert_eq!(two.rows.len(), 2);
    assert!(
        two.last.starts_with("rows: 2, truncated: true"),
        "{}",
        two.last
    );
    let nothing = table(
        &call(
            &client,
            "find_runs",
            json!({ "agent": "nobody' OR '1' = '1" }),
        )
        .await
        .unwrap(),
    );
    assert!(nothing.rows.is_empty());
    let bad_time = call(&client, "find_runs", json!({ "since": "last tuesday" }))
        .await
        .unwrap_err();
    assert!(bad_time.contains("since = \"last tuesday\""), "{bad_time}");
    let crashed = call(&client, "find_runs", json!({ "outcome": "crashed" }))
        .await
        .unwrap_err();
    assert!(
        crashed
            .contains("unknown variant `crashed`, expected one of `success`, `error`, `refused`"),
        "{crashed}"
    );

    // Session summary: the sessions row, the group-bys, and the generated input.
    let summary: Value = serde_json::from_str(
        &call(&client, "session_summary", json!({ "session_id": session }))
            .await
            .unwrap(),
    )
    .unwrap();
    let row = &server
        .rows(&format!(
            "SELECT runs, spans, errors, denials, input_tokens, output_tokens, first_seen, \
             last_seen FROM sessions WHERE session_id = '{session}'"
        ))
        .await[0];
    let in_session: Vec<&testdata::AgentTrace> = generated
        .iter()
        .filter(|trace| trace.session_id == session)
        .collect();
    assert_eq!(summary["runs"], json!(in_session.len()));
    assert_eq!(
        summary["spans"],
        json!(in_session.iter().map(|trace| trace.spans).sum::<usize>())
    );
    for (key, index) in [
        ("runs", 0),
        ("spans", 1),
        ("errors", 2),
        ("denials", 3),
        ("input_tokens", 4),
        ("output_tokens", 5),
        ("first_seen", 6),
        ("last_seen", 7),
    ] {
        assert_eq!(summary[key], row[index], "{key}");
    }
    let outcomes: BTreeMap<String, Value> = server
        .rows(&format!(
            "SELECT outcome, count(*) FROM agent_runs WHERE session_id = '{session}' GROUP BY outcome"
        ))
        .await
        .iter()
        .map(|row| (text(&row[0]), row[1].clone()))
        .collect();
    assert_eq!(summary["runs_by_outcome"], json!(outcomes));
    let tools: Vec<Value> = server
        .rows(&format!(
            "SELECT tool_name, count(*) AS calls, count(*) FILTER (WHERE status_code = 'error'), \
             count(*) FILTER (WHERE is_retry) FROM tool_calls WHERE session_id = '{session}' \
             GROUP BY tool_name ORDER BY calls DESC, tool_name"
        ))
        .await;
    let listed: Vec<Value> = summary["tools"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            json!([
                entry["tool_name"],
                entry["calls"],
                entry["errors"],
                entry["retries"]
            ])
        })
        .collect();
    assert_eq!(listed, tools);
    let denials = server
        .count(&format!(
            "SELECT count(*) FROM decisions WHERE session_id = '{session}' \
             AND verdict IN ('deny', 'escalate')"
        ))
        .await;
    assert_eq!(
        summary["denials_and_escalations"]["entries"]
            .as_array()
            .unwrap()
            .len(),
        usize::try_from(denials).unwrap()
    );
    assert_eq!(
        json!(summary["failed_calls"]["entries"].as_array().unwrap().len()),
        summary["errors"]
    );
    assert_eq!(summary["truncated"], false);
    let small: Value = serde_json::from_str(
        &call(
            &client,
            "session_summary",
            json!({ "session_id": session, "max_rows": 1 }),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    assert_eq!(small["run_list"]["entries"].as_array().unwrap().len(), 1);
    assert_eq!(small["run_list"]["truncated"], in_session.len() > 1);
    assert_eq!(small["truncated"], true);
    let unknown = call(
        &client,
        "session_summary",
        json!({ "session_id": "no-such" }),
    )
    .await
    .unwrap_err();
    assert!(
        unknown.starts_with("session \"no-such\" not found"),
        "{unknown}"
    );
    client.cancel().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_lists_and_runs_the_catalog_questions() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = seeded_server(dir.path()).await;
    let client = connect(&server, Some(QUERY)).await.unwrap();
    let listing = call(&client, "monitoring", json!({})).await.unwrap();
    for question in query::monitoring::QUESTIONS {
        assert!(
            listing.contains(&format!("\n- {}: {}. ", question.name, question.title)),
            "{listing}"
        );
        let answer = call(
            &client,
            "monitoring",
            json!({ "question": question.name, "max_rows": 1000 }),
        )
        .await
        .unwrap();
        assert!(answer.starts_with(&format!(
            "question: {} ({})\nwindow: the whole store\nsql:\n{}\n",
            question.name, question.title, question.sql
        )));
        let answer = table(&answer);
        assert_eq!(
            answer.rows,
            server.rows(question.sql).await,
            "{}",
            question.name
        );
        assert!(
            answer.last.ends_with("truncated: false"),
            "{}",
            question.name
        );
    }
    // Within a window: tool executions by retry source add up to the executions that started
    // in it (from the middle one on).
    let question = query::monitoring::question("retries_by_source").unwrap();
    let starts = server
        .rows("SELECT start_time FROM tool_calls ORDER BY start_time")
        .await;
    let since = text(&starts[starts.len() / 2][0]);
    let expected = server
        .count(&format!(
            "SELECT count(*) FROM tool_calls WHERE start_time >= '{since}'"
        ))
        .await;
    assert!(expected > 0 && expected < i64::try_from(starts.len()).unwrap());
    let answer = call(
        &client,
        "monitoring",
        json!({ "question": question.name, "since": since }),
    )
    .await
    .unwrap();
    let shown_since = &since[..19];
    assert!(
        answer.contains(&format!("\nwindow: since {shown_since}Z until open\n")),
        "{answer}"
    );
    let counted: i64 = table(&answer)
        .rows
        .iter()
        .map(|row| row[1].as_i64().unwrap())
        .sum();
    assert_eq!(counted, expected);
    let unknown = call(&client, "monitoring", json!({ "question": "happiness" }))
        .await
        .unwrap_err();
    assert!(
        unknown.starts_with(
            "no monitoring question \"happiness\"; the questions are: retry_rate_by_tool, "
        ),
        "{unknown}"
    );
    let backwards = call(
        &client,
        "monitoring",
        json!({ "question": "orphan_spans", "since": "1h", "until": "2h" }),
    )
    .await
    .unwrap_err();
    assert_eq!(backwards, "since must be before until");
    client.cancel().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_wants_a_query_token() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = seeded_server(dir.path()).await;
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "curl", "version": "1"}}
    });
    for (token, status) in [
        (None, reqwest::StatusCode::UNAUTHORIZED),
        (Some("guess"), reqwest::StatusCode::UNAUTHORIZED),
        (Some(INGEST), reqwest::StatusCode::FORBIDDEN),
        (Some(QUERY), reqwest::StatusCode::OK),
    ] {
        let mut request = reqwest::Client::new()
            .post(format!("{}/mcp", server.api))
            .header("accept", "application/json, text/event-stream")
            .json(&initialize);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{token:?}");
    }
    // The rmcp client without a token cannot even initialize.
    let refused = connect(&server, None).await.unwrap_err();
    assert!(
        refused.contains("401") || refused.to_lowercase().contains("auth"),
        "{refused}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_messages_get_json_rpc_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = seeded_server(dir.path()).await;
    let post = |body: String| {
        reqwest::Client::new()
            .post(format!("{}/mcp", server.api))
            .bearer_auth(QUERY)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // (body, HTTP status, JSON-RPC error code, id in the answer)
    let cases = [
        ("{\"jsonrpc\":\"2.0\",", 400, -32700, Value::Null),
        ("garbage", 400, -32700, Value::Null),
        ("{}", 400, -32600, Value::Null),
        ("[]", 400, -32600, Value::Null),
        ("{\"jsonrpc\":\"2.0\",\"id\":7}", 400, -32600, json!(7)),
        (
            "{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"params\":{}}",
            400,
            -32600,
            json!("a"),
        ),
        // rmcp's own answer, unchanged: an unknown method.
        (
            "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"nope\"}",
            200,
            -32601,
            json!(3),
        ),
    ];
    for (body, status, code, id) in cases {
        let response = post(body.to_owned()).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{body}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{body}"
        );
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["jsonrpc"], "2.0", "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        assert_eq!(answer["id"], id, "{body}: {answer}");
        assert!(answer["error"]["message"].is_string(), "{body}: {answer}");
    }
    // A body over the limit.
    let huge = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{{\"x\":\"{}\"}}}}",
        "a".repeat(2 << 20)
    );
    let response = post(huge).await.unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    // A wrong content type is still 415, and the server still serves a real client.
    let response = reqwest::Client::new()
        .post(format!("{}/mcp", server.api))
        .bearer_auth(QUERY)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
    let client = connect(&server, Some(QUERY)).await.unwrap();
    let answer = call(&client, "sql", json!({"sql": "SELECT 1 AS one"}))
        .await
        .unwrap();
    assert!(answer.contains("one"), "{answer}");
    server.stop().await;
}
