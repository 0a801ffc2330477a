//! The lake (issue 15): a server with `[lake]` ships as it seals, `sightline export` on demand;
//! the lake follows expiry, erasure and holds; DuckDB and PySpark (Python packages nobody on
//! the team wrote, `testdata/lake/read_lake.py`) read it and answer every monitoring question
//! as Sightline's own SQL does; two nodes share one lake on S3 (moto's server).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use api::ServerConfig;
use api::config_file::LakeSettings;
use api::lake_shipper::Lake;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message as _;
use serde_json::{Value, json};

use crate::support::TestServer;

/// How long the background shipper may take to catch up.
const CATCH_UP: Duration = Duration::from_secs(60);

fn generator(seed: u64) -> testdata::AgentTraceConfig {
    testdata::AgentTraceConfig {
        seed,
        traces: 36,
        sessions: 5,
        services: 2,
        spans_per_trace: 12,
        time_spread_ns: 48 * 3_600_000_000_000,
        tool_reissue_percent: 60,
        ..testdata::AgentTraceConfig::default()
    }
}

/// The Python with the lake readers (`testdata/lake/requirements.txt`).
fn python() -> PathBuf {
    let path = std::env::var_os("SIGHTLINE_LAKE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/sightline/lake-venv/bin/python")
        });
    assert!(
        path.exists(),
        "{} is missing: `bash .ci/run` installs the lake readers, or run \
         `python3 -m venv ~/.cache/sightline/lake-venv && \
         ~/.cache/sightline/lake-venv/bin/pip install -r testdata/lake/requirements.txt`",
        path.display()
    );
    path
}

fn read_lake_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/lake/read_lake.py")
}

/// `(name, sql)` of every monitoring question, and of the keys every row carries (a late
/// session key must reach spans sealed before it).
fn monitoring_queries() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = query::monitoring::QUESTIONS
        .iter()
        .map(|question| (question.name.to_owned(), question.sql.to_owned()))
        .collect();
    out.push((
        "spans_by_keys".to_owned(),
        "SELECT session_id, conversation_id, user_id, count(*) FROM spans GROUP BY 1, 2, 3"
            .to_owned(),
    ));
    for table in ["llm_calls", "tool_calls", "decisions", "agent_runs"] {
        out.push((
            format!("{table}_by_keys"),
            format!("SELECT session_id, conversation_id, count(*) FROM {table} GROUP BY 1, 2"),
        ));
    }
    out.push((
        "span_times".to_owned(),
        "SELECT trace_id, span_id, start_time, end_time, duration_ns, retention_tier FROM spans"
            .to_owned(),
    ));
    out
}

/// Runs `queries` on the lake with an outside engine; the answers by name.
fn outside(
    engine: &str,
    lake: &str,
    view: &str,
    s3_endpoint: Option<&str>,
    queries: &[(String, String)],
) -> BTreeMap<String, Value> {
    let file = tempfile::NamedTempFile::new().unwrap();
    let list: Vec<Value> = queries
        .iter()
        .map(|(name, sql)| json!({"name": name, "sql": sql}))
        .collect();
    std::fs::write(file.path(), serde_json::to_vec(&list).unwrap()).unwrap();
    let mut command = Command::new(python());
    command
        .arg(read_lake_script())
        .args(["--engine", engine, "--lake", lake, "--view", view])
        .arg(file.path());
    if let Some(endpoint) = s3_endpoint {
        command.args(["--s3-endpoint", endpoint]);
    }
    let output = command.output().expect("python runs");
    assert!(
        output.status.success(),
        "{engine} over {lake}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: BTreeMap<String, Value> =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "{engine}: {error}: {}",
                String::from_utf8_lossy(&output.stdout)
            )
        });
    for (name, answer) in &answers {
        assert!(
            answer.get("error").is_none(),
            "{engine} ({view}) could not run {name}: {answer}"
        );
    }
    answers
}

/// One cell in a form both sides agree on: numbers to 9 significant digits, times as unix µs.
fn canonical(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Number(number) => {
            let number = number.as_f64().unwrap();
            if number == 0.0 {
                "0".to_owned()
            } else {
                format!("{number:.9e}")
            }
        }
        Value::String(text) => {
            if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
                return format!("t{}", time.timestamp_micros());
            }
            if let Ok(time) = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
                return format!("t{}", time.and_utc().timestamp_micros());
            }
            format!("{text:?}")
        }
        other => other.to_string(),
    }
}

/// The rows of an answer, canonical and sorted (ties in ORDER BY may come in any order).
fn canonical_rows(rows: &Value) -> Vec<String> {
    let mut out: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(canonical)
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect();
    out.sort();
    out
}

/// Sightline's own answers to `queries`.
async fn sightline(server: &TestServer, queries: &[(String, String)]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (name, sql) in queries {
        out.insert(name.clone(), server.sql(sql).await);
    }
    out
}

/// Asserts the outside engine's answers are Sightline's, row for row; returns how many rows
/// were compared.
fn assert_same(
    what: &str,
    ours: &BTreeMap<String, Value>,
    theirs: &BTreeMap<String, Value>,
) -> usize {
    let mut compared = 0;
    for (name, answer) in ours {
        let expected = canonical_rows(&answer["rows"]);
        let got = canonical_rows(&theirs[name]["rows"]);
        assert_eq!(
            got, expected,
            "{what}: {name} differs from Sightline's answer"
        );
        compared += expected.len();
    }
    compared
}

/// Splits each scope's spans of `trace` in two: the first half (children, which end first) and
/// the rest (the root, which carries the session, among them).
fn split_trace(trace: &testdata::AgentTrace) -> (Vec<ResourceSpans>, Vec<ResourceSpans>) {
    let mut early = trace.resource_spans.clone();
    let mut late = trace.resource_spans.clone();
    for (early, late) in early.iter_mut().zip(late.iter_mut()) {
        for (early, late) in early
            .scope_spans
            .iter_mut()
            .zip(late.scope_spans.iter_mut())
        {
            let half = early.spans.len() / 2;
            early.spans.truncate(half);
            late.spans.drain(..half);
        }
    }
    (early, late)
}

async fn send(server: &TestServer, resource_spans: Vec<ResourceSpans>) {
    let request = ExportTraceServiceRequest { resource_spans };
    let response = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.otlp_http))
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

async fn admin(server: &TestServer, operation: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/admin", server.api))
        .json(&operation)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{operation}: {status} {body}");
    body
}

/// Seals the memtable (a retention run that expires nothing).
async fn seal(server: &TestServer) {
    admin(server, json!({"operation": "retention_run", "as_of": 0})).await;
}

/// Sends traces `range` of `config` the way real exporters do: a third whole; the others in two
/// halves, children first and, after a seal, the rest (roots with the session) in reverse
/// order; and one request sent twice (a retry after a timeout).
async fn send_traces(
    server: &TestServer,
    config: &testdata::AgentTraceConfig,
    traces: &[usize],
    retry: bool,
) {
    let mut rest = Vec::new();
    let mut first_request = Vec::new();
    for (position, &index) in traces.iter().enumerate() {
        let trace = testdata::agent_trace(config, index);
        if index % 3 == 0 {
            if first_request.is_empty() {
                first_request = trace.resource_spans.clone();
            }
            send(server, trace.resource_spans).await;
        } else {
            let (early, late) = split_trace(&trace);
            send(server, early).await;
            rest.push(late);
        }
        if position % 7 == 6 {
            seal(server).await;
        }
    }
    seal(server).await;
    for late in rest.into_iter().rev() {
        send(server, late).await;
    }
    if retry {
        // The retry of a request the server had already acknowledged.
        send(server, first_request).await;
    }
    seal(server).await;
}

fn lake_config(dir: &Path, lake: &str, node: &str) -> ServerConfig {
    lake_config_with(dir, lake, node, BTreeMap::new())
}

fn lake_config_with(
    dir: &Path,
    lake: &str,
    node: &str,
    options: BTreeMap<String, String>,
) -> ServerConfig {
    let mut config = ServerConfig::ephemeral(dir);
    // Small segments: many of them, and traces split across them.
    config.engine = config.engine.with_seal_max_rows(60);
    config.lake = Some(LakeSettings {
        url: lake.to_owned(),
        node: Some(node.to_owned()),
        interval: Duration::from_millis(50),
        content: false,
        options,
    });
    config
}

/// The tables whose rows both sides count.
const TABLES: [&str; 6] = [
    "spans",
    "llm_calls",
    "tool_calls",
    "decisions",
    "agent_runs",
    "sessions",
];

/// The tables one node's rows add up to the store's in, whatever the sessions fold.
const SPANS_AND_RUNS: [&str; 5] = [
    "spans",
    "llm_calls",
    "tool_calls",
    "decisions",
    "agent_runs",
];

/// Waits until `node`'s live files in `lake` hold `want`'s rows in each of `tables`.
async fn wait_for_tables(lake: &Lake, node: &str, want: &BTreeMap<String, u64>, tables: &[&str]) {
    let expected = want.clone();
    let tables: Vec<String> = tables.iter().map(|table| (*table).to_owned()).collect();
    wait_for_lake(lake, node, want, move |rows| {
        tables
            .iter()
            .all(|table| rows.get(table) == expected.get(table))
    })
    .await;
}

/// Waits until the rows per table of `node`'s live files in `lake` pass `check`.
async fn wait_for_lake(
    lake: &Lake,
    node: &str,
    want: &BTreeMap<String, u64>,
    check: impl Fn(&BTreeMap<String, u64>) -> bool,
) {
    let started = Instant::now();
    loop {
        let live = lake.log().live_files().await.unwrap();
        let mut rows: BTreeMap<String, u64> = BTreeMap::new();
        for file in live.values() {
            if file.path.contains(&format!("node={node}/")) {
                *rows.entry(file.table.clone()).or_default() += file.rows;
            }
        }
        if check(&rows) {
            return;
        }
        assert!(
            started.elapsed() < CATCH_UP,
            "the lake did not catch up: it has {rows:?}, the store {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn table_rows(server: &TestServer) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for table in TABLES {
        let count = server.count(&format!("SELECT count(*) FROM {table}")).await;
        out.insert(table.to_owned(), count as u64);
    }
    out
}

/// Counts per table in the lake as DuckDB sees it (`view`: glob or log).
fn lake_counts(lake: &str, view: &str, s3: Option<&str>) -> BTreeMap<String, u64> {
    let queries: Vec<(String, String)> = TABLES
        .iter()
        .map(|table| (table.to_string(), format!("SELECT count(*) FROM {table}")))
        .collect();
    outside("duckdb", lake, view, s3, &queries)
        .into_iter()
        .map(|(table, answer)| (table, answer["rows"][0][0].as_u64().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lake_follows_the_store_and_duckdb_and_spark_answer_as_sightline_does() {
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let lake_url = lake_dir.display().to_string();
    let config = generator(7);
    let server = TestServer::start_with(lake_config(&dir.path().join("a"), &lake_url, "a")).await;
    let traces: Vec<usize> = (0..config.traces).collect();
    send_traces(&server, &config, &traces, true).await;

    let expected = table_rows(&server).await;
    assert!(expected.values().all(|rows| *rows > 0), "{expected:?}");
    let lake = Lake::open(&lake_url).unwrap();
    wait_for_tables(&lake, "a", &expected, &TABLES).await;

    // The server says how far the lake is.
    let metrics = reqwest::get(format!("{}/metrics", server.api))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let shipped: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("sightline_lake_shipped_chain_entry "))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no lake metrics in {metrics}"));
    assert!(shipped > 5, "{shipped}");
    assert!(
        metrics.contains("sightline_lake_pass_failures_total 0"),
        "{metrics}"
    );

    // Every monitoring question: DuckDB over the files (glob and the log's live files) and
    // Spark over the partitioned directories answer as Sightline does.
    let queries = monitoring_queries();
    let ours = sightline(&server, &queries).await;
    let compared = assert_same(
        "duckdb, glob",
        &ours,
        &outside("duckdb", &lake_url, "glob", None, &queries),
    );
    assert!(compared > 20, "only {compared} rows compared");
    assert_same(
        "duckdb, log",
        &ours,
        &outside("duckdb", &lake_url, "log", None, &queries),
    );
    assert_same(
        "spark",
        &ours,
        &outside("spark", &lake_url, "glob", None, &queries),
    );
    assert_eq!(lake_counts(&lake_url, "glob", None), expected);

    // Erasure: the session leaves every table of the lake, and the log records it.
    let session = server
        .rows("SELECT session_id FROM sessions ORDER BY spans DESC LIMIT 1")
        .await[0][0]
        .as_str()
        .unwrap()
        .to_owned();
    admin(&server, json!({"operation": "erase", "session": session})).await;
    let after_erase = table_rows(&server).await;
    assert!(after_erase["spans"] < expected["spans"]);
    wait_for_tables(&lake, "a", &after_erase, &SPANS_AND_RUNS).await;
    let mine = format!(
        "SELECT count(*) FROM spans WHERE session_id = '{session}' UNION ALL \
         SELECT count(*) FROM tool_calls WHERE session_id = '{session}' UNION ALL \
         SELECT count(*) FROM sessions WHERE session_id = '{session}'"
    );
    let left = outside(
        "duckdb",
        &lake_url,
        "glob",
        None,
        &[("left".to_owned(), mine)],
    );
    assert_eq!(left["left"]["rows"], json!([[0], [0], [0]]));
    let ours = sightline(&server, &queries).await;
    assert_same(
        "duckdb after the erasure",
        &ours,
        &outside("duckdb", &lake_url, "log", None, &queries),
    );
    let history = lake_history(&lake).await;
    assert!(
        history
            .iter()
            .any(|(op, note)| op == "erased" && note.contains(&session)),
        "{history:?}"
    );

    // A hold on the decision tier, then everything past its keep expires: the held tier stays
    // in the lake, the others go, and the log records the hold and each expiry.
    admin(&server, json!({"operation": "hold", "tier": "decision"})).await;
    let far = 4_000_000_000_000_000_000i64;
    admin(&server, json!({"operation": "retention_run", "as_of": far})).await;
    let after_expiry = table_rows(&server).await;
    assert!(after_expiry["spans"] < after_erase["spans"]);
    assert!(after_expiry["spans"] > 0, "the held tier stays");
    wait_for_tables(&lake, "a", &after_expiry, &SPANS_AND_RUNS).await;
    let tiers = outside(
        "duckdb",
        &lake_url,
        "glob",
        None,
        &[(
            "tiers".to_owned(),
            "SELECT DISTINCT tier FROM spans ORDER BY 1".to_owned(),
        )],
    );
    assert_eq!(tiers["tiers"]["rows"], json!([["decision"]]));
    let ours = sightline(&server, &queries).await;
    assert_same(
        "duckdb after expiry",
        &ours,
        &outside("duckdb", &lake_url, "glob", None, &queries),
    );
    let history = lake_history(&lake).await;
    assert!(
        history
            .iter()
            .any(|(op, note)| op == "hold" && note.contains("decision")),
        "{history:?}"
    );
    assert!(history.iter().any(|(op, _)| op == "expired"), "{history:?}");

    // A hold released and placed again is two more commits, and then no more.
    admin(
        &server,
        json!({"operation": "hold", "tier": "decision", "release": true}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    admin(&server, json!({"operation": "hold", "tier": "decision"})).await;
    let holds =
        |history: &[(String, String)]| history.iter().filter(|(op, _)| op == "hold").count();
    let started = Instant::now();
    while holds(&lake_history(&lake).await) < 3 {
        assert!(
            started.elapsed() < CATCH_UP,
            "{:?}",
            lake_history(&lake).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(holds(&lake_history(&lake).await), 3);

    // Stopping seals and ships a last time: a trace sent just before is in the lake. A
    // restart then ships nothing twice: the log does not grow, the counts stay.
    let late = testdata::agent_trace(&generator(8), 0);
    let late_spans = late.spans as u64;
    send(&server, late.resource_spans).await;
    let before = table_rows(&server).await;
    server.stop().await;
    let live = lake.log().live_files().await.unwrap();
    let spans: u64 = live
        .values()
        .filter(|file| file.table == "spans")
        .map(|file| file.rows)
        .sum();
    assert_eq!(
        spans, before["spans"],
        "the {late_spans} spans sent last are shipped"
    );
    let versions = lake.log().versions().await.unwrap().len();
    let server = TestServer::start_with(lake_config(&dir.path().join("a"), &lake_url, "a")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(lake.log().versions().await.unwrap().len(), versions);
    assert_eq!(
        lake_counts(&lake_url, "log", None),
        table_rows(&server).await
    );
    server.stop().await;
}

/// `(op, note)` of every commit in the log.
async fn lake_history(lake: &Lake) -> Vec<(String, String)> {
    let log = lake.log();
    let mut out = Vec::new();
    for version in log.versions().await.unwrap() {
        let commit = log.read(version).await.unwrap();
        let op = serde_json::to_value(commit.op).unwrap();
        out.push((op.as_str().unwrap().to_owned(), commit.note));
    }
    out
}

/// moto's S3 server (`testdata/lake/s3_server.py`), stopped when dropped.
struct S3Server {
    child: std::process::Child,
    endpoint: String,
}

impl S3Server {
    fn start(bucket: &str) -> S3Server {
        use std::io::BufRead as _;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/lake/s3_server.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(bucket)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("moto starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("port ")
            .unwrap_or_else(|| panic!("moto said {line:?}"));
        S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    /// object_store settings for this server.
    fn options(&self) -> BTreeMap<String, String> {
        [
            ("aws_endpoint", self.endpoint.as_str()),
            ("aws_allow_http", "true"),
            ("aws_access_key_id", "test"),
            ("aws_secret_access_key", "test"),
            ("aws_region", "us-east-1"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shard of a trace: the load-balancing exporter routes by trace id.
fn shard(config: &testdata::AgentTraceConfig, index: usize) -> usize {
    usize::from(testdata::agent_trace(config, index).trace_id[15] % 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_lake_on_s3_and_it_answers_as_one_store_with_everything() {
    let s3 = S3Server::start("lake");
    let lake_url = "s3://lake/fleet";
    let dir = tempfile::tempdir().unwrap();
    let config = generator(11);
    let nodes = [
        TestServer::start_with(lake_config_with(
            &dir.path().join("a"),
            lake_url,
            "node-a",
            s3.options(),
        ))
        .await,
        TestServer::start_with(lake_config_with(
            &dir.path().join("b"),
            lake_url,
            "node-b",
            s3.options(),
        ))
        .await,
    ];
    // One store that receives everything, as the single-node answer to compare with.
    let whole = TestServer::start(&dir.path().join("whole")).await;
    let mut shards: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    for index in 0..config.traces {
        shards[shard(&config, index)].push(index);
    }
    assert!(shards.iter().all(|traces| traces.len() > 5), "{shards:?}");
    for (node, traces) in nodes.iter().zip(&shards) {
        send_traces(node, &config, traces, false).await;
        // Each node's exporter retries one request it had sent.
        let retried = testdata::agent_trace(&config, traces[0]).resource_spans;
        send(node, retried.clone()).await;
        send(&whole, retried).await;
        seal(node).await;
    }
    let all: Vec<usize> = (0..config.traces).collect();
    send_traces(&whole, &config, &all, false).await;

    let mut lake = Lake::open_with(lake_url, &s3.options()).unwrap();
    for (node, name) in nodes.iter().zip(["node-a", "node-b"]) {
        wait_for_tables(&lake, name, &table_rows(node).await, &TABLES).await;
    }

    // Across both nodes the lake answers as the store that has everything: each span counted
    // once, and `sessions` folded across nodes from the session parts.
    let mut queries = monitoring_queries();
    queries.push((
        "sessions_folded".to_owned(),
        "SELECT session_id, user_id, first_seen, last_seen, runs, conversations, spans, errors, \
         denials, input_tokens, output_tokens FROM sessions"
            .to_owned(),
    ));
    queries.push((
        "spans_once".to_owned(),
        "SELECT count(*), count(DISTINCT trace_id || span_id) FROM spans".to_owned(),
    ));
    let ours = sightline(&whole, &queries).await;
    let fleet: Vec<(String, String)> = queries
        .iter()
        .map(|(name, sql)| {
            (
                name.clone(),
                sql.replace("FROM sessions", "FROM fleet_sessions"),
            )
        })
        .collect();
    let compared = assert_same(
        "duckdb over S3, two nodes",
        &ours,
        &outside("duckdb", lake_url, "glob", Some(&s3.endpoint), &fleet),
    );
    assert!(compared > 20, "only {compared} rows compared");
    assert_same(
        "duckdb over S3, two nodes, log",
        &ours,
        &outside("duckdb", lake_url, "log", Some(&s3.endpoint), &fleet),
    );
    let nodes_seen = outside(
        "duckdb",
        lake_url,
        "glob",
        Some(&s3.endpoint),
        &[(
            "nodes".to_owned(),
            "SELECT node, count(*) FROM spans GROUP BY 1 ORDER BY 1".to_owned(),
        )],
    );
    assert_eq!(
        nodes_seen["nodes"]["rows"],
        json!([
            ["node-a", table_rows(&nodes[0]).await["spans"]],
            ["node-b", table_rows(&nodes[1]).await["spans"]]
        ])
    );
    // Both nodes' commits interleave in one log, each chain entry of each node once.
    let log = lake.log();
    let mut seen = std::collections::BTreeSet::new();
    for version in log.versions().await.unwrap() {
        let commit = log.read(version).await.unwrap();
        assert!(
            seen.insert(commit.identity()),
            "committed twice: {commit:?}"
        );
    }
    lake = Lake::open_with(lake_url, &s3.options()).unwrap();
    let _ = lake;
    for node in nodes {
        node.stop().await;
    }
    whole.stop().await;
}

/// `sightline export` killed at any point and run again leaves the lake exactly as one
/// uninterrupted export would: every chain entry once, no file no commit names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_killed_at_any_point_and_run_again_ships_everything_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lake_dir = dir.path().join("lake");
    let config = generator(5);
    let mut server_config = ServerConfig::ephemeral(&data);
    server_config.engine = server_config.engine.with_seal_max_rows(40);
    let server = TestServer::start_with(server_config).await;
    let all: Vec<usize> = (0..config.traces).collect();
    send_traces(&server, &config, &all, true).await;
    let expected = table_rows(&server).await;
    server.stop().await;

    let export = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sightline"));
        command
            .args(["export", "--node", "n1", "--lake"])
            .arg(&lake_dir)
            .arg("--data")
            .arg(&data);
        command
    };
    let mut kills = 0;
    let mut delay = Duration::from_millis(40);
    loop {
        let mut child = export()
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        delay += Duration::from_millis(60);
    }
    assert!(kills > 0, "the export was never interrupted");
    // Once more: nothing left to ship.
    let output = export().output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains(": 0 chain entries"), "{said}");

    let lake_url = lake_dir.display().to_string();
    let lake = Lake::open(&lake_url).unwrap();
    let live = lake.log().live_files().await.unwrap();
    let mut on_disk = Vec::new();
    for entry in walk(&lake_dir) {
        let key = entry
            .strip_prefix(&lake_dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if !key.starts_with("_sightline") {
            on_disk.push(key);
        }
    }
    on_disk.sort();
    let listed: Vec<String> = live.keys().cloned().collect();
    assert_eq!(
        on_disk, listed,
        "files no commit names, or commits without files"
    );
    assert!(
        !lake_dir.join("_sightline/pending/n1.json").exists(),
        "the pending marker outlived the last commit"
    );
    let log = lake.log();
    let mut seen = std::collections::BTreeSet::new();
    for version in log.versions().await.unwrap() {
        let commit = log.read(version).await.unwrap();
        assert!(
            seen.insert(commit.identity()),
            "committed twice: {commit:?}"
        );
    }
    assert_eq!(
        lake_counts(&lake_url, "log", None),
        expected,
        "after {kills} kills"
    );

    // Another store (or this one wiped) shipping under the same node name is refused: its
    // chain does not reach where the lake's record of the node ends.
    let other = dir.path().join("other");
    let server = TestServer::start(&other).await;
    send(&server, testdata::agent_trace(&config, 0).resource_spans).await;
    server.stop().await;
    let output = Command::new(env!("CARGO_BIN_EXE_sightline"))
        .args(["export", "--node", "n1", "--lake"])
        .arg(&lake_dir)
        .arg("--data")
        .arg(&other)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("another store"), "{said}");
    assert_eq!(lake_counts(&lake_url, "log", None), expected);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Content goes to the lake only with `[lake] content = true`, as stored (redacted), and leaves
/// it when it passes its keep in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_reaches_the_lake_only_when_allowed_and_leaves_it_at_its_keep() {
    let dir = tempfile::tempdir().unwrap();
    let with = dir.path().join("with");
    let without = dir.path().join("without");
    let mut config = lake_config(&dir.path().join("a"), &with.display().to_string(), "a");
    if let Some(lake) = config.lake.as_mut() {
        lake.content = true;
    }
    let server = TestServer::start_with(config).await;
    let other = TestServer::start_with(lake_config(
        &dir.path().join("b"),
        &without.display().to_string(),
        "b",
    ))
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let prompt = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "agent"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "5af92f3577b34da6a3ce929d0e0e4736", "spanId": "00000000000000a1",
            "name": "chat m", "kind": 3,
            "startTimeUnixNano": now.to_string(), "endTimeUnixNano": (now + 1_000_000).to_string(),
            "attributes": [
                {"key": "session.id", "value": {"stringValue": "s-content"}},
                {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                {"key": "gen_ai.input.messages", "value": {"stringValue":
                    r#"[{"role": "user", "parts": [{"type": "text", "content": "refund order 991 for ann@example.com"}]}]"#}}
            ]
        }]}]
    }]});
    for target in [&server, &other] {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/traces", target.otlp_http))
            .json(&prompt)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        seal(target).await;
    }
    let stored = server
        .rows("SELECT trace_id, span_id, key, value FROM content WHERE value IS NOT NULL")
        .await;
    assert!(!stored.is_empty());
    assert!(
        stored[0][3].as_str().unwrap().contains("[REDACTED:email]"),
        "{stored:?}"
    );
    let lake = Lake::open(&with.display().to_string()).unwrap();
    let rows = stored.len() as u64;
    wait_for_lake(&lake, "a", &BTreeMap::new(), move |tables| {
        tables.get("content") == Some(&rows)
    })
    .await;
    let query = [(
        "content".to_owned(),
        "SELECT trace_id, span_id, key, value FROM content".to_owned(),
    )];
    let theirs = outside("duckdb", &with.display().to_string(), "log", None, &query);
    assert_eq!(
        canonical_rows(&theirs["content"]["rows"]),
        canonical_rows(&Value::Array(stored))
    );
    // The other node ships spans, never content.
    let other_lake = Lake::open(&without.display().to_string()).unwrap();
    wait_for_lake(&other_lake, "b", &BTreeMap::new(), |tables| {
        tables.get("spans") == Some(&1)
    })
    .await;
    assert!(!without.join("content").exists());

    // Eight days on, the content (kept 7 days) has expired in the store; the spans (14 days)
    // stay. The lake follows, and its log says so.
    admin(
        &server,
        json!({"operation": "retention_run", "as_of": now + 8 * 86_400_000_000_000}),
    )
    .await;
    assert_eq!(
        server
            .count("SELECT count(*) FROM content WHERE value IS NOT NULL")
            .await,
        0
    );
    wait_for_lake(&lake, "a", &BTreeMap::new(), |tables| {
        tables.get("content") == Some(&0) && tables.get("spans") == Some(&1)
    })
    .await;
    let history = lake_history(&lake).await;
    assert!(
        history.iter().any(|(op, _)| op == "content_expired"),
        "{history:?}"
    );
    assert!(
        walk(&with).iter().all(|path| {
            let path = path.to_string_lossy();
            !path.contains("/content/") || path.ends_with("-schema.parquet")
        }),
        "a content file with rows is left"
    );
    server.stop().await;
    other.stop().await;
}
