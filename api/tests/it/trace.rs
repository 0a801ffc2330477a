//! `sightline trace` as a user runs it, on the seeded agent traces: against a running server
//! (`--url`) and, after it stopped, against its data directory (`--data`).
//!
//! `trace_draws_every_span_once_from_a_server_and_a_data_directory` needs only the `spans`
//! table. `trace_shows_decisions_retries_models_and_session_runs` also needs the `decisions`,
//! `tool_calls` and `agent_runs` views (query) and ingest normalization (model, tokens, retry
//! attempts, session ids).

use std::collections::HashMap;
use std::process::{Command, Output};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde_json::Value;

use crate::support::TestServer;

const BINARY: &str = env!("CARGO_BIN_EXE_sightline");
/// Column (in chars) where the tree starts on a span line: `[`, 30 bar cells, `]`, a space,
/// the 7-character duration, two spaces.
const TREE_COLUMN: usize = 42;

/// Runs the binary with the given arguments, unaffected by the caller's environment.
async fn sightline(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(BINARY)
            .args(&args)
            .env_remove("SIGHTLINE_URL")
            .env_remove("SIGHTLINE_DATA")
            .env_remove("SIGHTLINE_COLOR")
            .env_remove("NO_COLOR")
            .env_remove("RUST_LOG")
            .output()
            .expect("run sightline")
    })
    .await
    .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf-8 output")
}

fn failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "expected a failure, got: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A server holding the seeded traces of `config`.
async fn server_with(dir: &std::path::Path, config: &testdata::AgentTraceConfig) -> TestServer {
    let server = TestServer::start(dir).await;
    let mut client = TraceServiceClient::connect(server.otlp_grpc.clone())
        .await
        .unwrap();
    for request in testdata::export_requests(config, 4) {
        client.export(request).await.expect("export acknowledged");
    }
    server
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| value.to_string())
}

/// Depth of every span of a trace (0 for roots), from its parent ids as SQL returns them.
async fn depths(server: &TestServer, trace_id: &str) -> HashMap<String, usize> {
    let rows = server
        .rows(&format!(
            "SELECT span_id, parent_span_id FROM spans WHERE trace_id = '{trace_id}'"
        ))
        .await;
    let parents: HashMap<String, Option<String>> = rows
        .iter()
        .map(|row| (text(&row[0]), row[1].as_str().map(str::to_owned)))
        .collect();
    parents
        .keys()
        .map(|span_id| {
            let mut depth = 0;
            let mut node = span_id;
            while let Some(Some(parent)) = parents.get(node) {
                depth += 1;
                node = parent;
            }
            (span_id.clone(), depth)
        })
        .collect()
}

/// The line drawing each span, by the span id that ends it (uncolored output).
fn span_lines<'a>(
    output: &'a str,
    span_ids: &HashMap<String, usize>,
) -> HashMap<&'a str, Vec<usize>> {
    let mut found: HashMap<&str, Vec<usize>> = HashMap::new();
    for (number, line) in output.lines().enumerate() {
        if let Some(last) = line.split_whitespace().last()
            && span_ids.contains_key(last)
        {
            found.entry(last).or_default().push(number);
        }
    }
    found
}

/// Depth of a drawn span line: the tree characters after the fixed columns, three per level.
fn drawn_depth(line: &str) -> usize {
    let tree = line
        .chars()
        .skip(TREE_COLUMN)
        .take_while(|character| "│├└─ ".contains(*character))
        .count();
    assert_eq!(tree % 3, 0, "tree prefix of {line:?}");
    tree / 3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_draws_every_span_once_from_a_server_and_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let config = testdata::AgentTraceConfig {
        traces: 6,
        ..testdata::AgentTraceConfig::default()
    };
    let server = server_with(dir.path(), &config).await;
    // The largest trace: the most branches and nesting to draw.
    let trace = testdata::agent_trace_iter(&config)
        .max_by_key(|trace| trace.spans)
        .unwrap();
    let trace_id = hex::encode(trace.trace_id);
    let depths = depths(&server, &trace_id).await;
    assert_eq!(depths.len(), trace.spans);
    assert!(depths.values().any(|depth| *depth >= 2), "{depths:?}");

    let remote = stdout(&sightline(&["trace", &trace_id, "--url", &server.api]).await);
    assert!(!remote.contains('\x1b'), "no colors into a pipe:\n{remote}");
    assert!(remote.starts_with(&format!("trace {trace_id}  {} spans", trace.spans)));
    let lines: Vec<&str> = remote.lines().collect();
    let drawn = span_lines(&remote, &depths);
    assert_eq!(drawn.len(), trace.spans, "every span drawn:\n{remote}");
    for (span_id, depth) in &depths {
        let numbers = &drawn[span_id.as_str()];
        assert_eq!(numbers.len(), 1, "{span_id} drawn once:\n{remote}");
        assert_eq!(
            drawn_depth(lines[numbers[0]]),
            *depth,
            "{span_id} indented by its depth:\n{remote}"
        );
    }
    // Depth first: a span's line comes after its parent's line.
    let rows = server
        .rows(&format!(
            "SELECT span_id, parent_span_id FROM spans WHERE trace_id = '{trace_id}' \
             AND parent_span_id IS NOT NULL"
        ))
        .await;
    for row in &rows {
        let (child, parent) = (text(&row[0]), text(&row[1]));
        assert!(
            drawn[child.as_str()][0] > drawn[parent.as_str()][0],
            "{remote}"
        );
    }

    let colored = stdout(
        &sightline(&[
            "trace",
            &trace_id,
            "--url",
            &server.api,
            "--color",
            "always",
        ])
        .await,
    );
    assert!(colored.contains("\x1b["), "{colored}");

    let message = failure(
        &sightline(&[
            "trace",
            "0123456789abcdef0123456789abcdef",
            "--url",
            &server.api,
        ])
        .await,
    );
    assert!(
        message.contains("trace 0123456789abcdef0123456789abcdef not found"),
        "{message}"
    );
    let message = failure(&sightline(&["trace", "not-a-trace-id", "--url", &server.api]).await);
    assert!(message.contains("invalid trace id"), "{message}");
    failure(
        &sightline(&[
            "trace",
            "--session",
            "no-such-session",
            "--url",
            &server.api,
        ])
        .await,
    );

    // The server holds the directory: embedded mode refuses and points at --url.
    let data = dir.path().to_str().unwrap();
    let message = failure(&sightline(&["trace", &trace_id, "--data", data]).await);
    assert!(message.contains("--url"), "{message}");

    server.stop().await;
    let embedded = stdout(&sightline(&["trace", &trace_id, "--data", data]).await);
    assert_eq!(
        embedded, remote,
        "the same drawing from the directory and the server"
    );
    let message =
        failure(&sightline(&["trace", "0123456789abcdef0123456789abcdef", "--data", data]).await);
    assert!(message.contains("not found"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_shows_decisions_retries_models_and_session_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = testdata::AgentTraceConfig {
        traces: 80,
        // Failed calls issued again with the same arguments: the inferred retries.
        tool_reissue_percent: 60,
        ..testdata::AgentTraceConfig::default()
    };
    let server = server_with(dir.path(), &config).await;

    // A denied tool call whose decision was recorded both as span attributes and as an event:
    // it is drawn once, right under its span.
    let denied = server
        .rows(
            "SELECT trace_id, span_id, policy_id FROM decisions WHERE verdict = 'deny' \
             AND forms = 'span,event' ORDER BY trace_id, span_id LIMIT 1",
        )
        .await;
    let (trace_id, span_id, policy) = (
        text(&denied[0][0]),
        text(&denied[0][1]),
        text(&denied[0][2]),
    );
    let output = stdout(&sightline(&["trace", &trace_id, "--url", &server.api]).await);
    assert!(!output.contains("view in this store"), "{output}");
    let lines: Vec<&str> = output.lines().collect();
    let at = lines
        .iter()
        .position(|line| line.ends_with(&span_id))
        .unwrap_or_else(|| panic!("{span_id} in\n{output}"));
    let below = lines[at + 1];
    assert!(
        below.contains("✗ deny") && below.contains(&format!("policy={policy}")),
        "{output}"
    );
    assert!(
        lines
            .get(at + 2)
            .is_none_or(|line| !line.contains(&format!("policy={policy}"))),
        "the decision is drawn once:\n{output}"
    );
    assert!(output.lines().nth(1).unwrap().contains("deny"), "{output}");

    // Retried tool calls are marked with their attempt, and inferred ones say so.
    for source in ["explicit", "inferred"] {
        let retried = server
            .rows(&format!(
                "SELECT trace_id, span_id, attempt FROM tool_calls \
                 WHERE is_retry AND attempt > 0 AND retry_source = '{source}' \
                 ORDER BY trace_id, span_id LIMIT 1"
            ))
            .await;
        let (trace_id, span_id, attempt) = (
            text(&retried[0][0]),
            text(&retried[0][1]),
            text(&retried[0][2]),
        );
        let output = stdout(&sightline(&["trace", &trace_id, "--url", &server.api]).await);
        let line = output
            .lines()
            .find(|line| line.ends_with(&span_id))
            .unwrap_or_else(|| panic!("{span_id} in\n{output}"));
        let mark = match source {
            "inferred" => format!("retry #{attempt} (inferred)"),
            _ => format!("retry #{attempt}  "),
        };
        assert!(line.contains(&mark), "{line}");
    }

    // Model calls show the model and their tokens (normalized columns).
    let chat = server
        .rows(
            "SELECT trace_id, span_id, input_tokens, output_tokens FROM spans \
             WHERE operation = 'chat' AND input_tokens IS NOT NULL \
             ORDER BY trace_id, span_id LIMIT 1",
        )
        .await;
    let (trace_id, span_id) = (text(&chat[0][0]), text(&chat[0][1]));
    let output = stdout(&sightline(&["trace", &trace_id, "--url", &server.api]).await);
    let line = output
        .lines()
        .find(|line| line.ends_with(&span_id))
        .unwrap_or_else(|| panic!("{span_id} in\n{output}"));
    assert!(
        line.contains("model=") && line.contains(&format!("tokens={}/{}", chat[0][2], chat[0][3])),
        "{line}"
    );

    // A session: one line per run, oldest first, and a summary.
    let busiest = server
        .rows(
            "SELECT session_id, count(*) FROM agent_runs GROUP BY session_id \
             ORDER BY 2 DESC, 1 LIMIT 1",
        )
        .await;
    let session_id = text(&busiest[0][0]);
    let runs = server
        .rows(&format!(
            "SELECT trace_id FROM agent_runs WHERE session_id = '{session_id}' \
             ORDER BY start_time, trace_id"
        ))
        .await;
    let output =
        stdout(&sightline(&["trace", "--session", &session_id, "--url", &server.api]).await);
    let listed: Vec<&str> = output
        .lines()
        .filter(|line| line.starts_with("20"))
        .map(|line| line.split_whitespace().nth(1).unwrap())
        .collect();
    let expected: Vec<String> = runs.iter().map(|row| text(&row[0])).collect();
    assert_eq!(listed, expected, "{output}");
    assert!(
        output.contains(&format!("\n{} runs: ", runs.len())) || runs.len() == 1,
        "{output}"
    );
    let message = failure(
        &sightline(&[
            "trace",
            "--session",
            "no-such-session",
            "--url",
            &server.api,
        ])
        .await,
    );
    assert!(
        message.contains("no spans of session \"no-such-session\""),
        "{message}"
    );
    // A session with spans but no run (no `invoke_agent` span) says so.
    let mut chat = crate::http::span(0xc7, 1);
    chat.attributes.push(KeyValue {
        key: "session.id".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue("chat-only".into())),
        }),
        ..KeyValue::default()
    });
    TraceServiceClient::connect(server.otlp_grpc.clone())
        .await
        .unwrap()
        .export(crate::http::request(vec![chat]))
        .await
        .expect("export acknowledged");
    let message =
        failure(&sightline(&["trace", "--session", "chat-only", "--url", &server.api]).await);
    assert!(
        message.contains("session \"chat-only\" has 1 spans in 1 traces")
            && message.contains("no agent runs"),
        "{message}"
    );

    // The directory is in use: the CLI points at the running server's own address.
    let data = dir.path().to_str().unwrap();
    let message = failure(&sightline(&["sql", "--data", data, "SELECT 1"]).await);
    assert!(
        message.contains(&format!("query the server instead: --url {}", server.api)),
        "{message}"
    );
    server.stop().await;
    assert!(
        !dir.path().join("api.addr").exists(),
        "api.addr left after stop"
    );
    let embedded = stdout(&sightline(&["trace", "--session", &session_id, "--data", data]).await);
    assert_eq!(embedded, output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_trace_is_drawn_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = testdata::AgentTraceConfig {
        traces: 3,
        ..testdata::AgentTraceConfig::default()
    };
    let server = server_with(dir.path(), &config).await;
    // The exporter re-sends everything after a timeout.
    let mut client = TraceServiceClient::connect(server.otlp_grpc.clone())
        .await
        .unwrap();
    for request in testdata::export_requests(&config, 4) {
        client.export(request).await.expect("export acknowledged");
    }
    let rows = server
        .rows("SELECT trace_id, count(*), count(DISTINCT span_id) FROM spans GROUP BY 1 LIMIT 1")
        .await;
    let (trace_id, stored, distinct) = (
        text(&rows[0][0]),
        rows[0][1].as_i64().unwrap(),
        rows[0][2].as_i64().unwrap(),
    );
    assert_eq!(stored, 2 * distinct);
    let output = stdout(&sightline(&["trace", &trace_id, "--url", &server.api]).await);
    let spans = depths(&server, &trace_id).await;
    for span_id in spans.keys() {
        let drawn = output
            .lines()
            .filter(|line| line.ends_with(span_id.as_str()))
            .count();
        assert_eq!(drawn, 1, "{span_id}:\n{output}");
    }
    assert!(output.contains(&format!("{distinct} spans")), "{output}");
}
