//! The web page in a real browser (headless Chromium over the DevTools protocol,
//! `testdata::browser`): a seeded store behind tokens; each view opened; the numbers it renders
//! compared with SQL answers over HTTP; a click-through from a session to a run to a decision;
//! content only with the content scope; a screenshot of each view.
//!
//! Screenshots go to a temporary directory; with `SIGHTLINE_SCREENSHOTS=1` they replace the ones
//! in `docs/screenshots/` (how those were made).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use api::ServerConfig;
use api::auth::Scope;
use prost::Message as _;
use serde_json::{Value, json};
use testdata::browser::Browser;

use crate::support::TestServer;

const INGEST: &str = "tok-web-ingest";
const QUERY: &str = "tok-web-query";
const CONTENT: &str = "tok-web-content";
const ADMIN: &str = "tok-web-admin";
const WAIT: Duration = Duration::from_secs(30);
/// Text of the prompt added to one run; its e-mail address is redacted at ingest.
const PROMPT: &str = "refund order 991 and mail the receipt to ada@example.com";

fn generator() -> testdata::AgentTraceConfig {
    testdata::AgentTraceConfig {
        seed: 11,
        traces: 40,
        sessions: 6,
        services: 3,
        spans_per_trace: 18,
        time_spread_ns: 48 * 3_600_000_000_000,
        tool_reissue_percent: 60,
        ..testdata::AgentTraceConfig::default()
    }
}

/// A server with tokens holding the generated runs, each sent twice (an exporter re-sending
/// after a timeout), and one prompt span added to the first run. Its SQL client uses the
/// content token.
async fn seeded_server(dir: &std::path::Path) -> TestServer {
    let mut config = ServerConfig::ephemeral(dir);
    config.tokens = crate::support::tokens(&[
        ("collector", INGEST, &[Scope::Ingest]),
        ("analyst", QUERY, &[Scope::Query]),
        ("investigator", CONTENT, &[Scope::Query, Scope::Content]),
        ("operator", ADMIN, &[Scope::Admin]),
    ]);
    let mut server = TestServer::start_with(config).await;
    let http = reqwest::Client::new();
    let post = |body: Vec<u8>| {
        http.post(format!("{}/v1/traces", server.otlp_http))
            .header("content-type", "application/x-protobuf")
            .bearer_auth(INGEST)
            .body(body)
            .send()
    };
    let requests = testdata::export_requests(&generator(), 4);
    for request in requests.iter().chain(requests.iter().take(3)) {
        let response = post(request.encode_to_vec()).await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }
    server.client = crate::support::client_with_token(CONTENT);
    // A chat span with a prompt, under the root of the earliest run.
    let root = &server
        .rows(
            "SELECT trace_id, span_id, arrow_cast(start_time, 'Int64') FROM agent_runs \
             ORDER BY start_time LIMIT 1",
        )
        .await[0];
    let start = root[2].as_i64().unwrap();
    let prompt = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web-test"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": root[0], "spanId": "00000000000000c1", "parentSpanId": root[1],
            "name": "chat prompt-model", "kind": 3,
            "startTimeUnixNano": (start + 1_000_000).to_string(),
            "endTimeUnixNano": (start + 2_000_000_000).to_string(),
            "attributes": [
                {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                {"key": "gen_ai.request.model", "value": {"stringValue": "prompt-model"}},
                {"key": "gen_ai.input.messages", "value": {"stringValue": format!(
                    r#"[{{"role": "user", "parts": [{{"type": "text", "content": "{PROMPT}"}}]}}]"#
                )}}
            ]
        }, {
            // A span whose parent never arrived.
            "traceId": root[0], "spanId": "00000000000000c2", "parentSpanId": "00000000000000ff",
            "name": "late child", "kind": 1,
            "startTimeUnixNano": (start + 3_000_000).to_string(),
            "endTimeUnixNano": (start + 4_000_000).to_string()
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
    server
}

/// Where the screenshot of `name` goes (see the module doc).
fn screenshot_path(scratch: &std::path::Path, name: &str) -> PathBuf {
    if std::env::var_os("SIGHTLINE_SCREENSHOTS").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../docs/screenshots")
            .join(format!("{name}.png"))
    } else {
        scratch.join(format!("{name}.png"))
    }
}

async fn screenshot(browser: &mut Browser, scratch: &std::path::Path, name: &str) {
    let path = screenshot_path(scratch, name);
    browser.screenshot(&path).await.unwrap();
    let png = std::fs::read(&path).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{path:?}");
    assert!(png.len() > 10_000, "{path:?} is {} bytes", png.len());
}

/// Opens `path` and waits until `view` has rendered its data, with no script error or Content
/// Security Policy violation on the way.
async fn open(browser: &mut Browser, base: &str, path: &str, view: &str) {
    browser.goto(&format!("{base}{path}")).await.unwrap();
    rendered(browser, view).await;
    assert_eq!(
        browser.page_errors().await.unwrap(),
        Vec::<String>::new(),
        "{path}"
    );
}

async fn rendered(browser: &mut Browser, view: &str) {
    browser
        .wait_for(&format!("document.body.dataset.ready === '{view}'"), WAIT)
        .await
        .unwrap();
}

/// Runs `action` (JavaScript) after clearing the ready mark, then waits for `view` to render.
async fn act(browser: &mut Browser, action: &str, view: &str) {
    browser
        .eval(&format!("delete document.body.dataset.ready; {action}"))
        .await
        .unwrap();
    rendered(browser, view).await;
}

/// The cells of the rows of `selector` (a `table.data`), by `data-col`, as rendered text.
async fn table_rows(browser: &mut Browser, selector: &str) -> Vec<BTreeMap<String, String>> {
    let value = browser
        .eval(&format!(
            "[...document.querySelectorAll('{selector} tbody tr')]\
             .filter(tr => tr.querySelector('td[data-col]'))\
             .map(tr => Object.fromEntries([...tr.querySelectorAll('td[data-col]')]\
             .map(td => [td.dataset.col, td.innerText.trim()])))"
        ))
        .await
        .unwrap();
    serde_json::from_value(value).unwrap()
}

/// A rendered number back as a value: `1,234` → 1234, `0.086` → 0.086, `–` → null.
fn rendered_value(text: &str) -> Value {
    if text == "–" {
        return Value::Null;
    }
    let plain = text.replace(',', "");
    if let Ok(integer) = plain.parse::<i64>() {
        return json!(integer);
    }
    if let Ok(float) = plain.parse::<f64>() {
        return json!(float);
    }
    Value::String(text.to_owned())
}

/// SQL answer rows as maps of column name to JSON value.
async fn answer(server: &TestServer, sql: &str) -> Vec<BTreeMap<String, Value>> {
    let body = server.sql(sql).await;
    let columns: Vec<String> = body["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|column| column["name"].as_str().unwrap().to_owned())
        .collect();
    body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            columns
                .iter()
                .cloned()
                .zip(row.as_array().unwrap().iter().cloned())
                .collect()
        })
        .collect()
}

/// The runs the runs view lists, as `trace/span`.
async fn shown_runs(browser: &mut Browser) -> BTreeSet<String> {
    serde_json::from_value(
        browser
            .eval(
                "[...document.querySelectorAll('table.runs tbody tr[data-trace]')]\
                 .map(tr => tr.dataset.trace + '/' + tr.dataset.span)",
            )
            .await
            .unwrap(),
    )
    .unwrap()
}

/// The text in `column` of the first row of `sql`.
async fn first_text(server: &TestServer, sql: &str, column: &str) -> String {
    answer(server, sql).await[0][column]
        .as_str()
        .unwrap_or_else(|| panic!("{sql}: {column} is not text"))
        .to_owned()
}

/// `trace/span` of the rows of `sql` (which selects `trace_id, span_id`).
async fn run_ids(server: &TestServer, sql: &str) -> BTreeSet<String> {
    answer(server, sql)
        .await
        .iter()
        .map(|row| {
            format!(
                "{}/{}",
                row["trace_id"].as_str().unwrap(),
                row["span_id"].as_str().unwrap()
            )
        })
        .collect()
}

fn same_number(shown: &Value, expected: &Value) -> bool {
    match (shown.as_f64(), expected.as_f64()) {
        (Some(shown), Some(expected)) => (shown - expected).abs() < 1e-9,
        _ => shown == expected,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_what_sql_answers_and_clicks_through_to_a_decision() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let server = seeded_server(dir.path()).await;
    let base = server.api.clone();
    let mut browser = Browser::launch(1400, 1000)
        .await
        .expect("headless Chromium starts (install Debian's chromium package)");

    // Without a token the page loads and asks for one; the data needs the token.
    open(&mut browser, &base, "/", "sessions").await;
    assert_eq!(
        browser.eval("window.location.pathname").await.unwrap(),
        json!("/sessions")
    );
    let text = browser.eval("document.body.innerText").await.unwrap();
    assert!(
        text.as_str().unwrap().contains("This server needs a token"),
        "{text}"
    );
    // A wrong token is said to be refused; the right one shows the data.
    for token in ["not-a-token", QUERY] {
        act(
            &mut browser,
            &format!(
                "document.getElementById('token-button').click();\
                 document.getElementById('token-input').value = '{token}';\
                 document.querySelector('#token-form button[value=save]').click();"
            ),
            "sessions",
        )
        .await;
        let text = browser.eval("document.body.innerText").await.unwrap();
        assert_eq!(
            text.as_str()
                .unwrap()
                .contains("The server refused your token"),
            token != QUERY,
            "{token}: {text}"
        );
        let button = browser
            .eval("document.getElementById('token-button').textContent")
            .await
            .unwrap();
        let expected = if token == QUERY {
            "Token ✓"
        } else {
            "Token ✗"
        };
        assert_eq!(button, json!(expected), "{token}");
    }

    // Sessions over all time: every number equals the SQL answer over agent_runs.
    open(&mut browser, &base, "/sessions?range=all", "sessions").await;
    let shown = table_rows(&mut browser, "table.sessions").await;
    let expected = answer(
        &server,
        "SELECT session_id, count(*) AS runs, sum(errors) AS errors, sum(denials) AS denials, \
         sum(escalations) AS escalations, sum(retries) AS retries, \
         sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens \
         FROM agent_runs GROUP BY session_id",
    )
    .await;
    assert_eq!(shown.len(), expected.len(), "{shown:?}");
    assert_eq!(expected.len(), generator().sessions);
    let mut runs_shown = 0;
    for row in &expected {
        let session = row["session_id"].as_str().unwrap();
        let cells = shown
            .iter()
            .find(|cells| cells["session_id"] == session)
            .unwrap_or_else(|| panic!("session {session} not shown"));
        for column in [
            "runs",
            "errors",
            "denials",
            "escalations",
            "retries",
            "input_tokens",
            "output_tokens",
        ] {
            assert_eq!(
                rendered_value(&cells[column]),
                row[column],
                "{session} {column}"
            );
        }
        runs_shown += rendered_value(&cells["runs"]).as_i64().unwrap();
    }
    // Independent of the code under test: one run per generated trace, re-sends counted once.
    assert_eq!(runs_shown, i64::try_from(generator().traces).unwrap());
    assert!(
        shown.iter().any(|cells| cells["denials"] != "0"),
        "the seeded store has denials: {shown:?}"
    );
    screenshot(&mut browser, scratch.path(), "sessions").await;

    // Filters from the form: runs of one agent with a denial.
    let agent = first_text(
        &server,
        "SELECT agent_name FROM agent_runs WHERE denials > 0 ORDER BY agent_name LIMIT 1",
        "agent_name",
    )
    .await;
    open(
        &mut browser,
        &base,
        "/sessions?range=all&view=runs",
        "sessions",
    )
    .await;
    act(
        &mut browser,
        &format!(
            "const form = document.getElementById('filters');\
             form.elements.agent.value = {agent:?};\
             form.elements.verdict.value = 'deny';\
             form.requestSubmit();"
        ),
        "sessions",
    )
    .await;
    let search = browser.eval("window.location.search").await.unwrap();
    assert!(
        search.as_str().unwrap().contains("verdict=deny"),
        "{search}"
    );
    let shown = shown_runs(&mut browser).await;
    let expected = run_ids(
        &server,
        &format!(
            "SELECT trace_id, span_id FROM agent_runs WHERE agent_name = '{agent}' \
             AND trace_id IN (SELECT trace_id FROM decisions WHERE verdict = 'deny')"
        ),
    )
    .await;
    assert!(!expected.is_empty());
    assert_eq!(shown, expected);
    screenshot(&mut browser, scratch.path(), "runs").await;

    // The other filters, as a shared URL carries them: user and tool, a search in the ids, and
    // a custom time range.
    let pick = &answer(
        &server,
        "SELECT r.user_id, t.tool_name, r.session_id FROM agent_runs r \
         JOIN tool_calls t ON t.trace_id = r.trace_id ORDER BY r.start_time, t.tool_name LIMIT 1",
    )
    .await[0];
    let (user, tool, piece) = (
        pick["user_id"].as_str().unwrap(),
        pick["tool_name"].as_str().unwrap(),
        &pick["session_id"].as_str().unwrap()[5..9],
    );
    for (query, condition) in [
        (
            format!("user={user}&tool={tool}"),
            format!(
                "user_id = '{user}' AND trace_id IN \
                 (SELECT trace_id FROM tool_calls WHERE tool_name = '{tool}')"
            ),
        ),
        (
            format!("q={piece}"),
            format!("(strpos(session_id, '{piece}') > 0 OR strpos(user_id, '{piece}') > 0)"),
        ),
        (
            "since=2026-11-02T00:00:00Z&until=2026-11-02T12:00:00Z".to_owned(),
            "start_time >= '2026-11-02T00:00:00Z' AND start_time < '2026-11-02T12:00:00Z'"
                .to_owned(),
        ),
    ] {
        open(
            &mut browser,
            &base,
            &format!("/sessions?view=runs&range=all&{query}"),
            "sessions",
        )
        .await;
        let expected = run_ids(
            &server,
            &format!("SELECT trace_id, span_id FROM agent_runs WHERE {condition}"),
        )
        .await;
        assert!(!expected.is_empty(), "{query}");
        assert_eq!(shown_runs(&mut browser).await, expected, "{query}");
    }

    // Click through: the session with the most denials, then its run with a denial.
    open(&mut browser, &base, "/sessions?range=all", "sessions").await;
    let session = first_text(
        &server,
        "SELECT session_id FROM agent_runs GROUP BY session_id \
         ORDER BY sum(denials) DESC, session_id LIMIT 1",
        "session_id",
    )
    .await;
    act(
        &mut browser,
        &format!(
            "document.querySelector('table.sessions tr[data-session=\"{session}\"] a').click()"
        ),
        "sessions",
    )
    .await;
    let runs = table_rows(&mut browser, "table.runs").await;
    // The click keeps the time range of the list it came from (all time).
    assert!(
        browser
            .eval("window.location.search")
            .await
            .unwrap()
            .as_str()
            .unwrap()
            .contains("range=all")
    );
    let in_session = answer(
        &server,
        &format!("SELECT trace_id, span_id, denials FROM agent_runs WHERE session_id = '{session}' ORDER BY start_time DESC"),
    )
    .await;
    assert_eq!(runs.len(), in_session.len());
    assert!(runs.iter().all(|cells| cells["session_id"] == session));
    let run = in_session
        .iter()
        .find(|row| row["denials"].as_i64() > Some(0))
        .expect("a run with a denial");
    let trace_id = run["trace_id"].as_str().unwrap().to_owned();
    act(
        &mut browser,
        &format!(
            "document.querySelector('table.runs tr[data-trace=\"{trace_id}\"][data-span=\"{}\"] a').click()",
            run["span_id"].as_str().unwrap()
        ),
        "run",
    )
    .await;
    assert_eq!(
        browser.eval("window.location.pathname").await.unwrap(),
        json!(format!("/runs/{trace_id}"))
    );
    check_run(&mut browser, &server, &trace_id).await;
    screenshot(&mut browser, scratch.path(), "run").await;

    // A decision's span: one click shows its attributes, and the URL names the span.
    let decision = first_text(
        &server,
        &format!(
            "SELECT span_id FROM decisions WHERE trace_id = '{trace_id}' AND verdict = 'deny' \
             ORDER BY time LIMIT 1"
        ),
        "span_id",
    )
    .await;
    browser
        .eval(&format!(
            "document.querySelector('.wf-row[data-span=\"{decision}\"]').click()"
        ))
        .await
        .unwrap();
    let keys = browser
        .wait_for(
            &format!(
                "(() => {{ const details = document.querySelector('.span-details[data-span=\"{decision}\"][data-loaded=yes]');\
                 return details && [...details.querySelectorAll('td[data-col=key]')].map(td => td.innerText); }})()"
            ),
            WAIT,
        )
        .await
        .unwrap();
    let attribute_keys = answer(
        &server,
        &format!(
            "SELECT DISTINCT unnest(map_keys(attributes)) AS key FROM spans \
             WHERE trace_id = '{trace_id}' AND span_id = '{decision}'"
        ),
    )
    .await;
    for row in &attribute_keys {
        assert!(
            keys.as_array().unwrap().contains(&row["key"]),
            "{row:?} not in {keys}"
        );
    }
    assert!(
        browser
            .eval("window.location.search")
            .await
            .unwrap()
            .as_str()
            .unwrap()
            .contains(&decision)
    );
    screenshot(&mut browser, scratch.path(), "decision").await;

    // That URL, shared: the span is selected when it opens.
    let url = browser.eval("window.location.href").await.unwrap();
    browser.goto(url.as_str().unwrap()).await.unwrap();
    rendered(&mut browser, "run").await;
    assert_eq!(
        browser
            .eval("document.querySelector('.wf-row.selected').dataset.span")
            .await
            .unwrap(),
        json!(decision)
    );
    browser
        .wait_for(
            &format!(
                "document.querySelector('.span-details[data-span=\"{decision}\"][data-loaded=yes]')"
            ),
            WAIT,
        )
        .await
        .unwrap();

    // Content: refused for the query token, shown (redacted where the rules say) for the
    // content token.
    let prompt_trace = first_text(
        &server,
        "SELECT trace_id FROM spans WHERE span_id = '00000000000000c1'",
        "trace_id",
    )
    .await;
    open(&mut browser, &base, &format!("/runs/{prompt_trace}"), "run").await;
    browser
        .eval("document.getElementById('show-content').click()")
        .await
        .unwrap();
    let refused = browser
        .wait_for(
            "document.querySelector('.content-status.error')?.innerText",
            WAIT,
        )
        .await
        .unwrap();
    assert!(
        refused.as_str().unwrap().contains("content scope"),
        "{refused}"
    );
    browser
        .eval(&format!(
            "localStorage.setItem('sightline.token', '{CONTENT}')"
        ))
        .await
        .unwrap();
    open(&mut browser, &base, &format!("/runs/{prompt_trace}"), "run").await;
    browser
        .eval("document.getElementById('show-content').click()")
        .await
        .unwrap();
    browser
        .wait_for(
            "document.querySelectorAll('.content-item').length > 0",
            WAIT,
        )
        .await
        .unwrap();
    let items = browser
        .eval(
            "[...document.querySelectorAll('.span-content[data-span=\"00000000000000c1\"] .content-item')]\
             .map(item => ({key: item.dataset.key, status: item.dataset.status,\
             text: item.querySelector('details.raw pre, pre.content-value')?.textContent,\
             roles: [...item.querySelectorAll('.message .badge')].map(b => b.textContent),\
             parts: [...item.querySelectorAll('pre.message-part')].map(p => p.textContent),\
             redacted: !!item.querySelector('mark.redacted')}))",
        )
        .await
        .unwrap();
    let stored = answer(
        &server,
        &format!(
            "SELECT key, value, status FROM content WHERE trace_id = '{prompt_trace}' \
             AND span_id = '00000000000000c1'"
        ),
    )
    .await;
    assert_eq!(items.as_array().unwrap().len(), stored.len(), "{items}");
    let item = &items[0];
    assert_eq!(item["key"], json!("gen_ai.input.messages"));
    assert_eq!(item["status"], json!("present"));
    assert_eq!(item["text"], stored[0]["value"]);
    assert_eq!(item["redacted"], json!(true));
    // Shown as the message it is: one user message, its text part redacted.
    assert_eq!(item["roles"], json!(["user"]));
    assert_eq!(
        item["parts"],
        json!(["refund order 991 and mail the receipt to [REDACTED:email]"])
    );
    // The span whose parent is missing says so; the others do not.
    let orphans = browser
        .eval("[...document.querySelectorAll('.wf-row')].filter(row => row.querySelector('[data-field=orphan]')).map(row => row.dataset.span)")
        .await
        .unwrap();
    let expected_orphans: Vec<Value> = answer(
        &server,
        &format!(
            "SELECT DISTINCT s.span_id FROM spans s WHERE s.trace_id = '{prompt_trace}' \
             AND s.parent_span_id IS NOT NULL AND s.parent_span_id NOT IN \
             (SELECT span_id FROM spans WHERE trace_id = '{prompt_trace}')"
        ),
    )
    .await
    .iter()
    .map(|row| row["span_id"].clone())
    .collect();
    assert_eq!(orphans, json!(expected_orphans));
    assert_eq!(orphans, json!(["00000000000000c2"]));
    let page_text = browser.eval("document.body.innerText").await.unwrap();
    assert!(!page_text.as_str().unwrap().contains("ada@example.com"));
    assert!(
        page_text
            .as_str()
            .unwrap()
            .contains("refund order 991 and mail the receipt to [REDACTED:email]")
    );
    screenshot(&mut browser, scratch.path(), "content").await;
    // The button now hides the content, and shows it again without asking the server.
    browser
        .eval("document.getElementById('show-content').click()")
        .await
        .unwrap();
    let text = browser.eval("document.body.innerText").await.unwrap();
    assert!(
        !text.as_str().unwrap().contains("refund order 991"),
        "{text}"
    );
    browser
        .eval("document.getElementById('show-content').click()")
        .await
        .unwrap();
    let text = browser.eval("document.body.innerText").await.unwrap();
    assert!(text.as_str().unwrap().contains("refund order 991"));

    // Eight days on, the content (keep 7 days) has expired while its spans (14 days from
    // arrival) stay: the page says so instead of showing text.
    let in_eight_days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        + 8 * 86_400_000_000_000;
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/admin"))
        .bearer_auth(ADMIN)
        .json(&json!({"operation": "retention_run", "as_of": in_eight_days as i64}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    open(&mut browser, &base, &format!("/runs/{prompt_trace}"), "run").await;
    browser
        .eval("document.getElementById('show-content').click()")
        .await
        .unwrap();
    let expired = browser
        .wait_for(
            "(() => { const item = document.querySelector('.span-content[data-span=\"00000000000000c1\"] .content-item');\
             return item && [item.dataset.status, item.innerText]; })()",
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(expired[0], json!("expired"), "{expired}");
    assert!(
        expired[1]
            .as_str()
            .unwrap()
            .contains("Expired: this text passed its retention keep"),
        "{expired}"
    );
    assert!(!expired[1].as_str().unwrap().contains("refund order 991"));
    let status = browser
        .eval("document.querySelector('.content-status').innerText")
        .await
        .unwrap();
    assert!(status.as_str().unwrap().contains("expired"), "{status}");

    check_monitoring(&mut browser, &server, &base, scratch.path()).await;
    drop(browser);
    server.stop().await;
}

/// The run page of `trace_id` against SQL: one row per span (copies once), each decision under
/// the span it gated with its verdict and policy, retries, errors and tokens per span.
async fn check_run(browser: &mut Browser, server: &TestServer, trace_id: &str) {
    let where_trace = format!("WHERE trace_id = '{trace_id}'");
    let rows: Vec<String> = serde_json::from_value(
        browser
            .eval("[...document.querySelectorAll('.wf-row')].map(row => row.dataset.span)")
            .await
            .unwrap(),
    )
    .unwrap();
    let stored = answer(
        server,
        &format!("SELECT DISTINCT span_id, start_time, end_time FROM spans {where_trace}"),
    )
    .await;
    let spans: BTreeSet<String> = stored
        .iter()
        .map(|row| row["span_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(rows.len(), stored.len(), "one row per span: {rows:?}");
    assert_eq!(rows.iter().cloned().collect::<BTreeSet<_>>(), spans);

    // Decisions: each under its span, as many as SQL has, with verdict and policy.
    let shown = browser
        .eval(
            "[...document.querySelectorAll('.decisions')].flatMap(group => {\
               const span = group.previousElementSibling.dataset.span;\
               return [...group.querySelectorAll('.decision')].map(d => ({\
                 row_span: span, span: d.dataset.span, verdict: d.dataset.verdict,\
                 text: d.innerText }));\
             })",
        )
        .await
        .unwrap();
    let shown = shown.as_array().unwrap();
    let decisions = answer(
        server,
        &format!("SELECT span_id, verdict, policy_id FROM decisions {where_trace}"),
    )
    .await;
    assert_eq!(shown.len(), decisions.len(), "{shown:?}");
    assert!(decisions.iter().any(|row| row["verdict"] == "deny"));
    for decision in shown {
        assert_eq!(decision["row_span"], decision["span"], "{decision}");
    }
    for row in &decisions {
        let found = shown.iter().any(|decision| {
            decision["span"] == row["span_id"]
                && decision["verdict"] == row["verdict"]
                && row["policy_id"].as_str().is_none_or(|policy| {
                    decision["text"]
                        .as_str()
                        .unwrap()
                        .contains(&format!("policy {policy}"))
                })
        });
        assert!(found, "{row:?} not shown: {shown:?}");
    }

    // Badges per span.
    let badges = |field: &str| {
        format!(
            "Object.fromEntries([...document.querySelectorAll('.wf-row')]\
             .filter(row => row.querySelector('[data-field={field}]'))\
             .map(row => [row.dataset.span, row.querySelector('[data-field={field}]').innerText]))"
        )
    };
    let retries: BTreeMap<String, String> =
        serde_json::from_value(browser.eval(&badges("retry")).await.unwrap()).unwrap();
    let expected_retries = answer(
        server,
        &format!(
            "SELECT span_id, attempt FROM tool_calls {where_trace} AND is_retry \
             UNION ALL SELECT DISTINCT span_id, retry_attempt FROM llm_calls {where_trace} \
             AND retry_attempt > 0"
        ),
    )
    .await;
    assert_eq!(retries.len(), expected_retries.len(), "{retries:?}");
    for row in &expected_retries {
        let text = &retries[row["span_id"].as_str().unwrap()];
        assert!(
            text.starts_with(&format!("retry #{}", row["attempt"])),
            "{text} {row:?}"
        );
    }
    let errors: BTreeMap<String, String> =
        serde_json::from_value(browser.eval(&badges("error")).await.unwrap()).unwrap();
    let expected_errors = answer(
        server,
        &format!("SELECT DISTINCT span_id FROM spans {where_trace} AND status_code = 'error'"),
    )
    .await;
    assert_eq!(errors.len(), expected_errors.len(), "{errors:?}");
    let tokens: BTreeMap<String, String> =
        serde_json::from_value(browser.eval(&badges("tokens")).await.unwrap()).unwrap();
    let calls = answer(
        server,
        &format!("SELECT span_id, input_tokens, output_tokens FROM llm_calls {where_trace}"),
    )
    .await;
    for call in &calls {
        if call["input_tokens"].is_null() && call["output_tokens"].is_null() {
            continue;
        }
        let text = &tokens[call["span_id"].as_str().unwrap()];
        let (input, output) = text.split_once(" in / ").unwrap();
        assert_eq!(rendered_value(input), call["input_tokens"], "{text}");
        assert_eq!(
            rendered_value(output.trim_end_matches(" out")),
            call["output_tokens"],
            "{text}"
        );
    }
}

/// The four charts of the monitoring view: each table equals its question's SQL answer, over all
/// time and over one day; the SQL shown is the question's.
async fn check_monitoring(
    browser: &mut Browser,
    server: &TestServer,
    base: &str,
    scratch: &std::path::Path,
) {
    let day = 86_400_000_000_000_i64;
    let start = i64::try_from(testdata::DEFAULT_BASE_TIME_UNIX_NANO).unwrap();
    let windows = [
        ("/monitoring?range=all".to_owned(), None),
        (
            format!(
                "/monitoring?since={}&until={}",
                "2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z"
            ),
            Some(query::monitoring::TimeWindow {
                since_ns: Some(start + day),
                until_ns: Some(start + 2 * day),
            }),
        ),
    ];
    assert_eq!(
        testdata::DEFAULT_BASE_TIME_UNIX_NANO,
        1_793_491_200_000_000_000,
        "the dates above are the generator's first two days"
    );
    for (path, window) in windows {
        if window.is_some() {
            // A custom range typed into From and To, as a user would.
            open(browser, base, "/monitoring?range=all", "monitoring").await;
            act(
                browser,
                "const form = document.getElementById('filters');\
                 form.elements.since.value = '2026-11-02T00:00:00Z';\
                 form.elements.until.value = '2026-11-03T00:00:00Z';\
                 form.requestSubmit();",
                "monitoring",
            )
            .await;
            let location = browser
                .eval("window.location.pathname + window.location.search")
                .await
                .unwrap();
            assert_eq!(location, json!(path.replace(":", "%3A")));
        } else {
            open(browser, base, &path, "monitoring").await;
        }
        for name in [
            "retry_rate_by_tool",
            "denials_by_policy_per_day",
            "error_rate_by_agent",
            "tokens_and_latency_by_model",
        ] {
            let question = query::monitoring::question(name).unwrap();
            let sql = question.sql_within(window.unwrap_or_default());
            let card = format!(".card[data-question={name}]");
            let shown_sql = browser
                .eval(&format!(
                    "document.querySelector('{card} pre.sql').textContent"
                ))
                .await
                .unwrap();
            assert_eq!(shown_sql, json!(sql), "{name}");
            let shown = table_rows(browser, &format!("{card} table.answer")).await;
            let expected = answer(server, &sql).await;
            assert!(!expected.is_empty(), "{name} {path}: no rows to compare");
            assert_eq!(shown.len(), expected.len(), "{name} {path}: {shown:?}");
            for (cells, row) in shown.iter().zip(&expected) {
                for (column, value) in row {
                    let text = &cells[column];
                    let matches = if column == "day" {
                        value.as_str().unwrap().starts_with(text.as_str())
                    } else {
                        same_number(&rendered_value(text), value)
                    };
                    assert!(matches, "{name} {path} {column}: shown {text}, SQL {value}");
                }
            }
            // The chart drew one label per row (per day for denials) and some points.
            let drawn = browser
                .eval(&format!(
                    "(() => {{ const canvas = document.querySelector('{card} canvas');\
                     return canvas && [Number(canvas.dataset.labels), Number(canvas.dataset.points)]; }})()"
                ))
                .await
                .unwrap();
            let labels = if name == "denials_by_policy_per_day" {
                expected
                    .iter()
                    .map(|row| row["day"].as_str().unwrap()[..10].to_owned())
                    .collect::<BTreeSet<_>>()
                    .len()
            } else {
                expected.len()
            };
            assert_eq!(drawn[0], json!(labels), "{name}: chart labels");
            assert!(drawn[1].as_u64() >= Some(labels as u64), "{name}: {drawn}");
        }
        // The SQL can be copied: to the clipboard, or selected where the page may not write it.
        let copied = browser
            .eval(
                "(async () => { document.querySelector('.card .copy-sql').click();\
                 for (let i = 0; i < 100 && !document.querySelector('.card .copy-status').textContent; i++)\
                   await new Promise(done => setTimeout(done, 50));\
                 const status = document.querySelector('.card .copy-status').textContent;\
                 const pasted = status === 'copied' ? await navigator.clipboard.readText()\
                   : String(window.getSelection());\
                 return [status, pasted === document.querySelector('.card pre.sql').textContent]; })()",
            )
            .await
            .unwrap();
        assert!(
            copied[0] == "copied" || copied[0] == "selected: press Ctrl-C",
            "{copied}"
        );
        assert_eq!(copied[1], json!(true), "the copied text is the SQL shown");
        if window.is_none() {
            screenshot(browser, scratch, "monitoring").await;
        }
    }
}

/// `GET /api/v1/queries` needs the query scope and says what is wrong with a filter; the page's
/// paths answer GET without a token and nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn page_queries_need_a_token_and_refuse_bad_filters() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::ephemeral(dir.path());
    config.tokens = crate::support::tokens(&[("analyst", QUERY, &[Scope::Query])]);
    let server = TestServer::start_with(config).await;
    let http = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut request = http.get(format!("{}{path}", server.api));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    for path in [
        "/",
        "/sessions?range=all",
        "/monitoring",
        "/runs/abc",
        "/assets/app.js",
        "/assets/app.css",
    ] {
        let response = get(path, None).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let page = get("/", None).await.unwrap();
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("default-src 'self'"), "{policy}");
    assert!(page.text().await.unwrap().contains("/assets/app.js"));
    // Only GET skips the token: anything else on a page path is an API request.
    let posted = http.post(format!("{}/", server.api)).send().await.unwrap();
    assert_eq!(posted.status(), 401);
    assert_eq!(get("/api/v1/queries", None).await.unwrap().status(), 401);

    let answer = get(
        "/api/v1/queries?since=7d&agent=it%27s&verdict=DENY",
        Some(QUERY),
    )
    .await
    .unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    let runs = body["runs"].as_str().unwrap();
    assert!(runs.contains("agent_name = 'it''s'"), "{runs}");
    assert!(runs.contains("verdict = 'deny'"), "{runs}");
    assert!(body["since_ns"].as_i64().is_some());
    assert_eq!(
        body["monitoring"].as_array().unwrap().len(),
        query::monitoring::QUESTIONS.len()
    );
    for (query, says) in [
        ("since=yesterday", "neither an RFC 3339 time"),
        ("since=1h&until=2h", "since must be before until"),
        ("colour=red", "unknown field"),
        ("since=1h&since=2h", "duplicate field"),
    ] {
        let response = get(&format!("/api/v1/queries?{query}"), Some(QUERY))
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains(says),
            "{query}: {body}"
        );
    }
    server.stop().await;
}
