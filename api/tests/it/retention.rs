//! Retention configuration end to end: rules place exported spans in tiers (whole traces
//! promoted), `check-config`, and `retention run/status` on a data directory.

use std::process::Command;

use api::ServerConfig;
use api::config_file::DEFAULT_CONFIG;
use prost::Message as _;

use crate::support::TestServer;

const BINARY: &str = env!("CARGO_BIN_EXE_sightline");
/// Trace id of a standard-tier run with content.
const OLD_CONTENT_TRACE: &str = "cccccccccccccccccccccccccccccc03";

/// One trace of two plain spans (no agent attributes): no rule matches it.
async fn export_plain(server: &TestServer) {
    let body = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]},
        "scopeSpans": [{"spans": [
            {"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060708",
             "name": "GET /", "kind": 2,
             "startTimeUnixNano": "1793491200000000000", "endTimeUnixNano": "1793491200000001000"},
            {"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060709",
             "parentSpanId": "0102030405060708", "name": "SELECT", "kind": 3,
             "startTimeUnixNano": "1793491200000000100", "endTimeUnixNano": "1793491200000000900"}
        ]}]
    }]});
    let response = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.otlp_http))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    assert_eq!(
        server
            .count("SELECT count(*) FROM spans WHERE trace_id = '0102030405060708090a0b0c0d0e0f10'")
            .await,
        2
    );
}

async fn export(server: &TestServer, traces: usize) {
    export_plain(server).await;
    let config = testdata::AgentTraceConfig {
        traces,
        seed: 11,
        ..testdata::AgentTraceConfig::default()
    };
    let client = reqwest::Client::new();
    for request in testdata::export_requests(&config, 4) {
        let response = client
            .post(format!("{}/v1/traces", server.otlp_http))
            .header("content-type", "application/x-protobuf")
            .body(request.encode_to_vec())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_rules_keep_whole_decision_traces_in_the_decision_tier() {
    let dir = tempfile::tempdir().unwrap();
    // No background retention pass: the generated spans start on 2026-11-01, so the standard
    // tier's part would be past its 14 days and go at the first pass.
    let config = || ServerConfig {
        retention_interval: std::time::Duration::ZERO,
        ..ServerConfig::ephemeral(dir.path())
    };
    let server = TestServer::start_with(config()).await;
    export(&server, 40).await;
    check_tiers(&server).await;
    // Sealed: the same, and the segments sit in their tiers.
    server.stop().await;
    let server = TestServer::start_with(config()).await;
    check_tiers(&server).await;
    let status = server
        .rows("SELECT tier, spans, segments FROM retention ORDER BY tier")
        .await;
    assert_eq!(status.len(), 3, "{status:?}");
    assert_eq!(status[0][0], "content");
    assert!(status[1][1].as_u64().unwrap() > 0, "{status:?}");
    assert!(status[2][1].as_u64().unwrap() > 0, "{status:?}");
    server.stop().await;
}

async fn check_tiers(server: &TestServer) {
    {
        // One tier per trace: a trace lives in the highest tier any of its spans reached.
        assert_eq!(
            server
                .count(
                    "SELECT count(*) FROM (SELECT trace_id FROM spans GROUP BY trace_id \
                         HAVING count(DISTINCT retention_tier) > 1)"
                )
                .await,
            0
        );
        // Every trace with a decision, a risky tool or a failed tool call is in `decision`.
        assert_eq!(
                server
                    .count(
                        "SELECT count(*) FROM spans s WHERE s.retention_tier <> 'decision' AND \
                         s.trace_id IN (SELECT trace_id FROM spans WHERE decision_verdict IS NOT NULL \
                         OR tool_risk IN ('write', 'destructive', 'external', 'access_change') \
                         OR (operation = 'execute_tool' AND error_type IS NOT NULL))"
                    )
                    .await,
                0
            );
        // ... and the others are in the default tier.
        assert_eq!(
                server
                    .count(
                        "SELECT count(*) FROM spans s WHERE s.retention_tier = 'decision' AND \
                         s.trace_id NOT IN (SELECT trace_id FROM spans WHERE decision_verdict IS NOT NULL \
                         OR tool_risk IN ('write', 'destructive', 'external', 'access_change') \
                         OR (operation = 'execute_tool' AND error_type IS NOT NULL))"
                    )
                    .await,
                0
            );
        let tiers = server
            .rows("SELECT retention_tier, count(*) FROM spans GROUP BY 1 ORDER BY 1")
            .await;
        assert_eq!(tiers.len(), 2, "{tiers:?}");
        assert_eq!(
            server
                .rows(
                    "SELECT DISTINCT retention_tier FROM spans \
                     WHERE trace_id = '0102030405060708090a0b0c0d0e0f10'"
                )
                .await,
            vec![serde_json::json!(["standard"])]
        );
    }
}

fn sightline(args: &[&str]) -> std::process::Output {
    Command::new(BINARY).args(args).output().unwrap()
}

#[test]
fn check_config_accepts_the_default_and_names_a_broken_rule() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("sightline.toml");
    std::fs::write(&good, DEFAULT_CONFIG).unwrap();
    let output = sightline(&["check-config", good.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("tier decision"), "{stdout}");
    assert!(stdout.contains(": OK"), "{stdout}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        DEFAULT_CONFIG.replace(
            "decision_verdict IS NOT NULL",
            "decision_verdict IS NOT NULL AND",
        ),
    )
    .unwrap();
    let output = sightline(&["check-config", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("retention rule \"any decision\""),
        "{stderr}"
    );

    // serve refuses to start with it, naming the rule.
    let data = dir.path().join("data");
    let output = sightline(&[
        "serve",
        "--config",
        bad.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("retention rule \"any decision\""),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_run_with_as_of_shows_then_deletes_what_is_past_its_age() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    export(&server, 20).await;
    // A standard-tier run with content: its references go when its spans expire.
    export_session(&server, OLD_CONTENT_TRACE, "sess-old").await;
    server.stop().await;
    let data = dir.path().to_str().unwrap();

    let status = sightline(&["retention", "status", "--data", data]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(
        text.contains("decision") && text.contains("standard") && text.contains("unsealed"),
        "{text}"
    );
    // The content row: the one prompt of the content run.
    assert!(
        text.contains("content: 1 message(s) (") && text.contains("), 1 reference(s) ("),
        "{text}"
    );

    // The generated spans start on 2026-11-01, weeks before they arrived (now): ages count
    // from arrival, so a run now deletes nothing (the backfill keeps its full keep).
    let now = sightline(&["retention", "run", "--data", data]);
    let text = String::from_utf8_lossy(&now.stdout);
    assert!(now.status.success(), "{text}");
    assert!(!text.contains("deleted segment"), "{text}");

    // Fifteen days after arrival the standard tier (14d) is past its age, the decision tier
    // (400d) is not.
    let later = api::retention_command::format_timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64
            + 15 * 86_400_000_000_000,
    );
    let dry = sightline(&[
        "retention",
        "run",
        "--data",
        data,
        "--as-of",
        &later,
        "--dry-run",
    ]);
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success(), "{text}");
    assert!(text.contains("would delete segment"), "{text}");
    assert!(!text.contains("tier=decision"), "{text}");
    let run = sightline(&["retention", "run", "--data", data, "--as-of", &later]);
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{text}");
    assert!(text.contains("deleted segment"), "{text}");

    let server = TestServer::start_with(ServerConfig::ephemeral(dir.path())).await;
    let tiers = server
        .rows("SELECT DISTINCT retention_tier FROM spans")
        .await;
    assert_eq!(tiers, vec![serde_json::json!(["decision"])]);
    assert_eq!(
        server
            .count(&format!(
                "SELECT count(*) FROM content WHERE trace_id = '{OLD_CONTENT_TRACE}'"
            ))
            .await,
        0
    );
    server.stop().await;

    let bad = sightline(&[
        "retention",
        "run",
        "--data",
        data,
        "--as-of",
        "next tuesday",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("RFC 3339"));
}

/// One agent run of session `session`, with a chat span carrying input messages (content).
async fn export_session(server: &TestServer, trace: &str, session: &str) {
    let body = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "agent"}}]},
        "scopeSpans": [{"spans": [
            {"traceId": trace, "spanId": "1000000000000001", "parentSpanId": "1000000000000002",
             "name": "chat gpt-4o", "kind": 3,
             "startTimeUnixNano": "1793491200000000100", "endTimeUnixNano": "1793491200000000900",
             "attributes": [
                {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                {"key": "gen_ai.input.messages", "value": {"stringValue":
                    "[{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"content\":\"refund order 42\"}]}]"}}
             ]},
            {"traceId": trace, "spanId": "1000000000000002",
             "name": "invoke_agent support", "kind": 1,
             "startTimeUnixNano": "1793491200000000000", "endTimeUnixNano": "1793491200000001000",
             "attributes": [
                {"key": "gen_ai.operation.name", "value": {"stringValue": "invoke_agent"}},
                {"key": "session.id", "value": {"stringValue": session}}
             ]}
        ]}]
    }]});
    let response = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.otlp_http))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
}

#[tokio::test(flavor = "multi_thread")]
async fn erase_removes_a_sessions_spans_and_content_and_verify_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = || ServerConfig {
        retention_interval: std::time::Duration::ZERO,
        ..ServerConfig::ephemeral(dir.path())
    };
    let gone = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1";
    let kept = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2";
    let server = TestServer::start_with(config()).await;
    export_session(&server, gone, "sess-gone").await;
    export_session(&server, kept, "sess-kept").await;
    assert_eq!(
        server
            .count(&format!(
                "SELECT count(*) FROM content WHERE trace_id = '{gone}'"
            ))
            .await,
        1
    );
    server.stop().await;
    let data = dir.path().to_str().unwrap();

    // A legal hold refuses, saying how to release it.
    assert!(
        sightline(&["hold", "--session", "sess-gone", "--data", data])
            .status
            .success()
    );
    let refused = sightline(&["erase", "--session", "sess-gone", "--data", data]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("legal hold"), "{stderr}");
    assert!(
        stderr.contains("sightline hold --release --session sess-gone"),
        "{stderr}"
    );
    assert!(
        sightline(&[
            "hold",
            "--release",
            "--session",
            "sess-gone",
            "--data",
            data
        ])
        .status
        .success()
    );

    let erased = sightline(&["erase", "--session", "sess-gone", "--data", data]);
    let stdout = String::from_utf8_lossy(&erased.stdout);
    assert!(
        erased.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&erased.stderr)
    );
    assert!(
        stdout.contains("erased session sess-gone: 2 spans"),
        "{stdout}"
    );

    let verify = sightline(&["verify", "--data", data]);
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{stdout}");
    assert!(
        stdout.contains("sess-gone"),
        "verify lists the erasure: {stdout}"
    );

    let server = TestServer::start_with(config()).await;
    assert_eq!(
        server
            .count("SELECT count(*) FROM spans WHERE session_id = 'sess-gone'")
            .await,
        0
    );
    assert_eq!(
        server
            .count(&format!(
                "SELECT count(*) FROM spans WHERE trace_id = '{gone}'"
            ))
            .await,
        0
    );
    assert_eq!(
        server
            .count(&format!(
                "SELECT count(*) FROM content WHERE trace_id = '{gone}'"
            ))
            .await,
        0
    );
    assert_eq!(
        server
            .count("SELECT count(*) FROM spans WHERE session_id = 'sess-kept'")
            .await,
        2
    );
    assert_eq!(
        server
            .count(&format!(
                "SELECT count(*) FROM content WHERE trace_id = '{kept}'"
            ))
            .await,
        1
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tier_counting_from_span_time_deletes_a_backfill_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    // Spans dated 2026-11-01 (past the standard keep by span time), arriving now.
    export(&server, 20).await;
    server.stop().await;
    let data = dir.path().to_str().unwrap();
    let config = dir.path().join("span-time.toml");
    std::fs::write(
        &config,
        DEFAULT_CONFIG.replace("keep = \"14d\"", "keep = \"14d\"\nage_from = \"span_time\""),
    )
    .unwrap();
    let run = sightline(&[
        "retention",
        "run",
        "--data",
        data,
        "--config",
        config.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("deleted segment"), "{stdout}");
    assert!(stdout.contains("tier=standard"), "{stdout}");
    assert!(!stdout.contains("tier=decision"), "{stdout}");
    assert!(
        stderr.contains("WARN") && stderr.contains("arrived less than an hour ago"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "standard (keep 1209600s, counted from the span's end time (age_from = span_time))"
        ),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_run_expires_content_by_its_own_keep() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    export_session(&server, OLD_CONTENT_TRACE, "sess-content").await;
    server.stop().await;
    let data = dir.path().to_str().unwrap();
    let days_from_now = |days: i64| {
        api::retention_command::format_timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as i64
                + days * 86_400_000_000_000,
        )
    };

    // Six days on, the content (keep 7d) stays; eight days on it goes, while the spans
    // (standard keep 14d from arrival) stay. A dry run only counts.
    let run = |as_of: &str, dry: bool| {
        let mut args = vec!["retention", "run", "--data", data, "--as-of", as_of];
        if dry {
            args.push("--dry-run");
        }
        let output = sightline(&args);
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let text = run(&days_from_now(6), false);
    assert!(text.contains("content: deleted 0 message(s)"), "{text}");
    let text = run(&days_from_now(8), true);
    assert!(
        text.contains("content: would delete 1 message(s)"),
        "{text}"
    );
    let text = run(&days_from_now(8), false);
    assert!(text.contains("content: deleted 1 message(s)"), "{text}");
    assert!(!text.contains("deleted segment"), "{text}");

    let server = TestServer::start_with(ServerConfig::ephemeral(dir.path())).await;
    assert_eq!(
        server
            .rows(&format!(
                "SELECT status FROM content WHERE trace_id = '{OLD_CONTENT_TRACE}'"
            ))
            .await,
        vec![serde_json::json!(["expired"])]
    );
    assert_eq!(
        server
            .count(&format!(
                "SELECT count(*) FROM spans WHERE trace_id = '{OLD_CONTENT_TRACE}'"
            ))
            .await,
        2
    );
    server.stop().await;
}

#[test]
fn retention_commands_refuse_a_directory_that_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo");
    for args in [
        vec!["retention", "status", "--data"],
        vec!["retention", "run", "--dry-run", "--data"],
        vec!["retention", "run", "--data"],
    ] {
        let mut args = args.clone();
        args.push(typo.to_str().unwrap());
        let output = sightline(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            stderr.contains("is not a sightline data directory"),
            "{stderr}"
        );
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
}
