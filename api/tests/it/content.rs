//! Content governance end to end: redaction before the WAL, extraction into the content store,
//! `GET /api/v1/traces/{id}?content=true`, expiry and capture off.

use api::ServerConfig;
use serde_json::{Value, json};

use crate::support::TestServer;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SECRET: &str = "sk-proj-abcdefghijklmnopqrstuv123456";
const EMAIL: &str = "jane.roe@example.com";

fn messages(turns: usize) -> String {
    let mut history = Vec::new();
    for turn in 0..turns {
        history.push(format!(
            r#"{{"role": "user", "parts": [{{"type": "text", "content": "question {turn}"}}]}}"#
        ));
    }
    format!("[{}]", history.join(", "))
}

fn export(span: u8, attributes: Value) -> Value {
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "agent"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": TRACE, "spanId": format!("{span:016x}"), "name": "chat m",
            "kind": 3, "startTimeUnixNano": "1700000000000000000",
            "endTimeUnixNano": "1700000001000000000",
            "attributes": attributes
        }]}]
    }]})
}

async fn post(server: &TestServer, body: &Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.otlp_http))
        .json(body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

async fn get_trace(server: &TestServer, content: bool) -> (Option<String>, Value) {
    let query = if content { "?content=true" } else { "" };
    let response = reqwest::get(format!("{}/api/v1/traces/{TRACE}{query}", server.api))
        .await
        .unwrap();
    assert!(response.status().is_success());
    let header = response
        .headers()
        .get("x-sightline-content")
        .map(|value| value.to_str().unwrap().to_owned());
    (header, response.json().await.unwrap())
}

/// `key` -> string value of the first span with that span id.
fn attribute(trace: &Value, span: u8, key: &str) -> Option<String> {
    let spans = trace["resourceSpans"][0]["scopeSpans"][0]["spans"].as_array()?;
    let span = spans
        .iter()
        .find(|candidate| candidate["spanId"] == format!("{span:016x}"))?;
    span["attributes"]
        .as_array()?
        .iter()
        .find(|pair| pair["key"] == key)
        .and_then(|pair| pair["value"]["stringValue"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn content_is_redacted_before_the_wal_deduplicated_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    // The default configuration redacts e-mail addresses on every key.
    for turn in 1..=10u8 {
        post(
            &server,
            &export(
                turn,
                json!([
                    {"key": "gen_ai.input.messages", "value": {"stringValue": messages(turn.into())}},
                    {"key": "gen_ai.request.model", "value": {"stringValue": "m"}},
                    {"key": "user.contact", "value": {"stringValue": format!("mail {EMAIL}")}}
                ]),
            ),
        )
        .await;
    }

    // The skeleton keeps a keyed digest; the e-mail address is redacted on a plain attribute.
    let (header, skeleton) = get_trace(&server, false).await;
    assert_eq!(header, None);
    let reference = attribute(&skeleton, 3, "gen_ai.input.messages").unwrap();
    assert!(
        reference.starts_with("sightline-content:v1:"),
        "{reference}"
    );
    assert_eq!(
        attribute(&skeleton, 3, "user.contact").unwrap(),
        "mail [REDACTED:email]"
    );

    // With content=true every value is back, exactly.
    let (header, full) = get_trace(&server, true).await;
    assert_eq!(header.as_deref(), Some("complete"));
    for turn in 1..=10u8 {
        assert_eq!(
            attribute(&full, turn, "gen_ai.input.messages").unwrap(),
            messages(turn.into())
        );
    }

    // Each message stored once: 10 distinct messages behind 10 references.
    let rows = server
        .rows(&format!(
            "SELECT count(*), count(DISTINCT value) FROM content WHERE trace_id = '{TRACE}' AND status = 'present'"
        ))
        .await;
    assert_eq!(rows[0], json!([10, 10]));
    server.stop().await;

    // Nothing of a redacted value reached any file of the store (WAL, segments, content).
    let mut files = vec![dir.path().to_path_buf()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                files.push(entry.unwrap().path());
            }
        } else {
            let bytes = std::fs::read(&path).unwrap();
            let found = bytes
                .windows(EMAIL.len())
                .any(|window| window == EMAIL.as_bytes());
            assert!(!found, "{} holds the e-mail address", path.display());
        }
    }
}

#[tokio::test]
async fn secrets_never_reach_the_redb_file_and_capture_off_keeps_digests() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::ephemeral(dir.path());
    config.content.capture = false;
    let mut rule = config.content.redaction[0].clone();
    rule.name = "keys".into();
    rule.detectors = vec!["api_key".into(), "bearer".into()];
    config.content.redaction.push(rule);
    let server = TestServer::start_with(config).await;
    post(
        &server,
        &export(
            1,
            json!([
                {"key": "gen_ai.tool.call.arguments", "value": {"stringValue": "{\"q\": \"weather\"}"}},
                {"key": "http.note", "value": {"stringValue": format!("key {SECRET}")}}
            ]),
        ),
    )
    .await;
    let (header, full) = get_trace(&server, true).await;
    assert_eq!(header.as_deref(), Some("not_captured"));
    let value = attribute(&full, 1, "gen_ai.tool.call.arguments").unwrap();
    assert!(value.starts_with("[NOT_CAPTURED:"), "{value}");
    assert_eq!(
        attribute(&full, 1, "http.note").unwrap(),
        "key [REDACTED:keys]"
    );
    let rows = server.rows("SELECT key, status, value FROM content").await;
    assert_eq!(
        rows,
        vec![json!(["gen_ai.tool.call.arguments", "not_captured", null])]
    );
    server.stop().await;
    let redb = std::fs::read(dir.path().join("sightline.redb")).unwrap();
    assert!(
        !redb
            .windows(SECRET.len())
            .any(|window| window == SECRET.as_bytes())
    );
    assert!(!redb.windows(7).any(|window| window == b"weather"));
}

#[tokio::test]
async fn expired_content_reads_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    post(
        &server,
        &export(
            1,
            json!([{"key": "input.value", "value": {"stringValue": "what is the plan"}}]),
        ),
    )
    .await;
    let engine = std::sync::Arc::clone(server.server.as_ref().unwrap().engine());
    let expired = tokio::task::spawn_blocking(move || engine.expire_content(u64::MAX, false))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(expired.messages, 1);
    let (header, full) = get_trace(&server, true).await;
    assert_eq!(header.as_deref(), Some("expired"));
    let value = attribute(&full, 1, "input.value").unwrap();
    assert!(value.starts_with("[EXPIRED:"), "{value}");
    let rows = server.rows("SELECT status FROM content").await;
    assert_eq!(rows, vec![json!(["expired"])]);
    server.stop().await;
}

const KEEPING_CONFIG: &str = r#"
[retention]
default_tier = "standard"

[[retention.tiers]]
name = "standard"
keep = "14d"

[[retention.tiers]]
name = "kept"
keep = "400d"
content_keep = "30d"

[[retention.rules]]
name = "keep chats named so"
tier = "kept"
when = "span_name = 'chat keep'"

[content]
keep = "7d"
"#;

#[tokio::test]
async fn content_of_a_tier_with_a_longer_content_keep_outlives_the_default_keep() {
    let dir = tempfile::tempdir().unwrap();
    let file = api::config_file::FileConfig::parse(KEEPING_CONFIG, "test.toml").unwrap();
    let mut config = ServerConfig::ephemeral(dir.path());
    config.engine = config.engine.clone().with_retention(file.retention);
    config.rules = file.rules;
    config.content_keep = file.content_keep;
    config.tier_content_keep = file.tier_content_keep;
    let server = TestServer::start_with(config.clone()).await;
    // Two traces (a trace's spans share the highest tier any of them reaches): one placed in
    // "kept" by the rule, one in the default tier. Same messages, so the blob is shared too.
    let other_trace = "0af7651916cd43dd8448eb211c80319c";
    for (trace, name, span) in [(TRACE, "chat keep", 1u8), (other_trace, "chat m", 2)] {
        let mut body = export(
            span,
            json!([
                {"key": "gen_ai.input.messages", "value": {"stringValue": messages(2)}},
                {"key": "input.value", "value": {"stringValue": format!("only in {name}")}}
            ]),
        );
        let spans = &mut body["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        spans["traceId"] = json!(trace);
        spans["name"] = json!(name);
        post(&server, &body).await;
    }

    // A pass ten days on, as the server's background task builds it: past the default 7d, within
    // the tier's 30d. The wall clock is read once; the margin is days, the test takes seconds.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let request = config.content_expiry_request(now + 10 * 86_400_000_000_000);
    let engine = std::sync::Arc::clone(server.server.as_ref().unwrap().engine());
    let expired = tokio::task::spawn_blocking(move || engine.expire_content_with(&request))
        .await
        .unwrap()
        .unwrap();
    // Only the default-tier span's own value goes; the shared messages stay for "kept".
    assert_eq!(expired.messages, 1);
    let rows = server
        .rows("SELECT trace_id, key, status FROM content ORDER BY trace_id, key")
        .await;
    assert_eq!(
        rows,
        vec![
            json!([other_trace, "gen_ai.input.messages", "present"]),
            json!([other_trace, "input.value", "expired"]),
            json!([TRACE, "gen_ai.input.messages", "present"]),
            json!([TRACE, "input.value", "present"]),
        ]
    );

    // Forty days on, the tier's content keep has passed too.
    let request = config.content_expiry_request(now + 40 * 86_400_000_000_000);
    let engine = std::sync::Arc::clone(server.server.as_ref().unwrap().engine());
    let expired = tokio::task::spawn_blocking(move || engine.expire_content_with(&request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(expired.messages, 3);
    let rows = server
        .rows("SELECT count(*) FROM content WHERE status = 'expired'")
        .await;
    assert_eq!(rows, vec![json!([4])]);
    server.stop().await;
}

#[tokio::test]
async fn an_export_sent_twice_keeps_every_content_read_working() {
    // Issue 11: two chat spans in one export, the second's input extending the first's, sent
    // twice as an exporter does after a timeout, used to make every content read answer 500.
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut body = export(
        1,
        json!([{"key": "gen_ai.input.messages", "value": {"stringValue": messages(6)}}]),
    );
    let second = export(
        2,
        json!([{"key": "gen_ai.input.messages", "value": {"stringValue": messages(9)}}]),
    );
    let spans = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array_mut()
        .unwrap();
    spans.push(second["resourceSpans"][0]["scopeSpans"][0]["spans"][0].clone());
    post(&server, &body).await;
    post(&server, &body).await;

    let (header, full) = get_trace(&server, true).await;
    assert_eq!(header.as_deref(), Some("complete"));
    assert_eq!(
        attribute(&full, 1, "gen_ai.input.messages").unwrap(),
        messages(6)
    );
    assert_eq!(
        attribute(&full, 2, "gen_ai.input.messages").unwrap(),
        messages(9)
    );
    let rows = server
        .rows(&format!(
            "SELECT span_id, value FROM content WHERE trace_id = '{TRACE}' AND status = 'present' ORDER BY span_id"
        ))
        .await;
    assert_eq!(
        rows,
        vec![
            json!([format!("{:016x}", 1), messages(6)]),
            json!([format!("{:016x}", 2), messages(9)])
        ]
    );
    // Each present row's digest is the one in its span's reference.
    let (_, skeleton) = get_trace(&server, false).await;
    let digests = server
        .rows(&format!(
            "SELECT span_id, digest FROM content WHERE trace_id = '{TRACE}' ORDER BY span_id"
        ))
        .await;
    for (index, span) in [1u8, 2].into_iter().enumerate() {
        let reference = attribute(&skeleton, span, "gen_ai.input.messages").unwrap();
        let digest = digests[index][1].as_str().unwrap();
        assert_eq!(digest.len(), 64, "{digests:?}");
        assert_eq!(reference, format!("sightline-content:v1:{digest}"));
    }
    // A LIMIT reads only the first rows, in the table's order (trace, span, key); a filter
    // the table does not apply itself is applied before the limit.
    let all = server.rows("SELECT span_id, value FROM content").await;
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(
        server
            .rows("SELECT span_id, value FROM content LIMIT 1")
            .await,
        all[..1].to_vec()
    );
    assert_eq!(
        server
            .rows(&format!(
                "SELECT span_id, value FROM content WHERE span_id = '{:016x}' LIMIT 1",
                2
            ))
            .await,
        all[1..].to_vec()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_span_re_sent_with_a_changed_value_reads_each_copy_as_it_was_sent() {
    // Outside tester: a span re-sent with a different `gen_ai.output.messages` showed the newest
    // text in every copy, so a copy's text no longer matched its own digest.
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let first = r#"[{"role":"assistant","parts":[{"type":"text","content":"first answer"}]}]"#;
    let changed =
        r#"[{"role":"assistant","parts":[{"type":"text","content":"changed on resend"}]}]"#;
    for value in [first, changed] {
        post(
            &server,
            &export(
                1,
                json!([{"key": "gen_ai.output.messages", "value": {"stringValue": value}}]),
            ),
        )
        .await;
    }
    let (header, full) = get_trace(&server, true).await;
    assert_eq!(header.as_deref(), Some("complete"));
    let copies: Vec<String> = full["resourceSpans"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|resource| resource["scopeSpans"].as_array().unwrap().iter())
        .flat_map(|scope| scope["spans"].as_array().unwrap().iter())
        .map(|span| {
            span["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|pair| pair["key"] == "gen_ai.output.messages")
                .and_then(|pair| pair["value"]["stringValue"].as_str())
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut sorted = copies.clone();
    sorted.sort();
    let mut expected = vec![first.to_owned(), changed.to_owned()];
    expected.sort();
    assert_eq!(sorted, expected, "{copies:?}");
    // The content table has one row per value, each with its own digest.
    let rows = server
        .rows(&format!(
            "SELECT value FROM content WHERE trace_id = '{TRACE}' ORDER BY value"
        ))
        .await;
    assert_eq!(rows, vec![json!([changed]), json!([first])]);
    // A bad `content` value gets the API's JSON 400 naming the accepted values (outside tester:
    // it was axum's plain-text rejection).
    let response = reqwest::get(format!("{}/api/v1/traces/{TRACE}?content=yes", server.api))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body.to_string().contains("?content=true or ?content=false"),
        "{body}"
    );
    server.stop().await;
}
