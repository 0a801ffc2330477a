//! The `sightline` binary as a user runs it: crash safety under SIGKILL, graceful SIGTERM,
//! `sightline sql` embedded and remote, `--help`.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use api::jaeger::proto::GetServicesRequest;
use api::jaeger::proto::trace_reader_client::TraceReaderClient;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

pub(crate) const BINARY: &str = env!("CARGO_BIN_EXE_sightline");

pub(crate) struct ServerProcess {
    pub(crate) child: Child,
    pub(crate) grpc: String,
    pub(crate) api: String,
    pub(crate) jaeger: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // A failed test must not leave a server behind; a stopped one is reaped here too.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Starts `sightline serve` on ports chosen by the OS and reads the bound addresses from its log.
fn spawn_server(dir: &Path) -> ServerProcess {
    spawn_server_with(dir, &[])
}

/// [`spawn_server`] with more `serve` arguments.
// The child is owned by the returned ServerProcess, whose Drop reaps it.
#[allow(clippy::zombie_processes)]
pub(crate) fn spawn_server_with(dir: &Path, extra: &[&std::ffi::OsStr]) -> ServerProcess {
    let mut child = Command::new(BINARY)
        .args(["serve", "--data"])
        .arg(dir)
        .args([
            "--otlp-grpc-addr",
            "127.0.0.1:0",
            "--otlp-http-addr",
            "127.0.0.1:0",
            "--api-addr",
            "127.0.0.1:0",
            "--jaeger-addr",
            "127.0.0.1:0",
            "--pg-addr",
            "127.0.0.1:0",
        ])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sightline");
    let stderr = child.stderr.take().expect("stderr");
    let (sender, receiver) = mpsc::channel();
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let field = |line: &str, name: &str| {
        line.split_whitespace()
            .find_map(|part| part.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
    };
    loop {
        let line = receiver
            .recv_timeout(Duration::from_secs(60))
            .expect("server logs its listening addresses within 60 s");
        if line.contains("sightline listening") {
            let grpc = field(&line, "otlp_grpc").expect("otlp_grpc address");
            let api = field(&line, "api").expect("api address");
            let jaeger = field(&line, "jaeger").expect("jaeger address");
            return ServerProcess {
                child,
                grpc: format!("http://{grpc}"),
                api: format!("http://{api}"),
                jaeger: format!("http://{jaeger}"),
            };
        }
    }
}

fn sql(dir: &Path, query: &str) -> std::process::Output {
    Command::new(BINARY)
        .args(["sql", "--format", "csv", "--data"])
        .arg(dir)
        .arg(query)
        .output()
        .expect("run sightline sql")
}

fn requests(
    traces: usize,
) -> (
    Vec<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>,
    usize,
) {
    let config = testdata::AgentTraceConfig {
        traces,
        ..testdata::AgentTraceConfig::default()
    };
    let requests = testdata::export_requests(&config, 2);
    let spans = requests
        .iter()
        .flat_map(|request| &request.resource_spans)
        .flat_map(|resource| &resource.scope_spans)
        .map(|scope| scope.spans.len())
        .sum();
    (requests, spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_span_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_server(dir.path());
    let (requests, spans) = requests(20);
    let mut client = TraceServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    for request in requests {
        client.export(request).await.expect("export acknowledged");
    }
    // Acknowledged: now crash without any chance to flush or seal.
    kill(Pid::from_raw(server.child.id() as i32), Signal::SIGKILL).unwrap();
    server.child.wait().unwrap();

    let output = sql(
        dir.path(),
        "SELECT count(*) AS n, count(DISTINCT span_id) AS ids FROM spans",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let counts: Vec<&str> = text.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(counts[0], spans.to_string(), "{text}");

    // The restarted server serves them too.
    let mut server = spawn_server(dir.path());
    let reply: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/api/v1/sql", server.api))
        .json(&serde_json::json!({"sql": "SELECT count(*) FROM spans"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["rows"][0][0], spans);
    kill(Pid::from_raw(server.child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(server.child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_seals_and_exits_cleanly_and_sql_cli_works_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_server(dir.path());
    let (requests, spans) = requests(6);
    let mut client = TraceServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    for request in requests {
        client.export(request).await.unwrap();
    }

    // Jaeger's reader sees the same spans on the binary's --jaeger-addr.
    let mut jaeger = TraceReaderClient::connect(server.jaeger.clone())
        .await
        .unwrap();
    let services = jaeger
        .get_services(GetServicesRequest {})
        .await
        .unwrap()
        .into_inner()
        .services;
    assert!(!services.is_empty(), "no services over the Jaeger API");

    // While the server runs, embedded mode refuses and points at --url.
    let output = sql(dir.path(), "SELECT 1");
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("--url"), "{message}");

    let output = Command::new(BINARY)
        .args([
            "sql",
            "--url",
            &server.api,
            "SELECT count(*) AS n FROM spans",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(
        table.contains(&spans.to_string()) && table.contains('n'),
        "{table}"
    );

    kill(Pid::from_raw(server.child.id() as i32), Signal::SIGTERM).unwrap();
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");

    // Shutdown sealed the memtable: nothing left to replay, everything in segments.
    {
        let engine = engine::Engine::open(
            dir.path(),
            engine::Options::default().with_background_sealing(false),
        )
        .unwrap();
        assert_eq!(engine.recovery().wal_records, 0);
        assert_eq!(engine.stats().segment_rows, spans as u64);
        engine.close_without_sealing();
    }
    let output = Command::new(BINARY)
        .args(["sql", "--format", "json", "--data"])
        .arg(dir.path())
        .arg("SELECT count(*) AS n FROM spans")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(reply["rows"][0][0], spans);

    let output = sql(dir.path(), "DELETE FROM spans");
    assert!(!output.status.success());
}

#[test]
fn help_lists_every_serve_flag_with_its_env_var() {
    let output = Command::new(BINARY)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for (flag, env) in [
        ("--data", "SIGHTLINE_DATA"),
        ("--otlp-grpc-addr", "SIGHTLINE_OTLP_GRPC_ADDR"),
        ("--otlp-http-addr", "SIGHTLINE_OTLP_HTTP_ADDR"),
        ("--api-addr", "SIGHTLINE_API_ADDR"),
        ("--jaeger-addr", "SIGHTLINE_JAEGER_ADDR"),
        ("--pg-addr", "SIGHTLINE_PG_ADDR"),
        ("--enable-purge", "SIGHTLINE_ENABLE_PURGE"),
        ("--max-request-bytes", "SIGHTLINE_MAX_REQUEST_BYTES"),
        ("--query-timeout", "SIGHTLINE_QUERY_TIMEOUT"),
        ("--query-memory-limit", "SIGHTLINE_QUERY_MEMORY_LIMIT"),
    ] {
        assert!(
            help.contains(flag) && help.contains(env),
            "{flag} / {env} missing from:\n{help}"
        );
    }
    assert!(help.contains("127.0.0.1:4317") && help.contains("./sightline-data"));
    assert!(help.contains("127.0.0.1:17271"), "{help}");
    assert!(help.contains("127.0.0.1:5433"), "{help}");
}

#[test]
fn serve_flags_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    // An unusable address from the environment must be what the server tries.
    let output = Command::new(BINARY)
        .arg("serve")
        .env("SIGHTLINE_DATA", dir.path())
        .env("SIGHTLINE_API_ADDR", "not-an-address")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("not-an-address"), "{message}");
}

#[test]
fn token_prints_a_token_and_the_entry_holding_its_hash() {
    let output = Command::new(BINARY)
        .args(["token", "--name", "collector", "--scopes", "ingest,query"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let token = text
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("sl_"))
        .expect("a token line");
    let expected = api::auth::token_hash(token);
    assert!(text.contains(&format!("sha256 = \"{expected}\"")), "{text}");
    assert!(text.contains("scopes = [\"ingest\", \"query\"]"), "{text}");
    assert!(
        !text.contains(&format!("sha256 = \"{token}")),
        "the token itself is not the hash"
    );
    // The printed entry is a valid configuration.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sightline.toml");
    let entry = &text[text.find("[[auth.tokens]]").unwrap()..];
    std::fs::write(&config, entry).unwrap();
    let file = api::config_file::FileConfig::load(&config).unwrap();
    assert!(!file.tokens.is_empty());
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    engine::Engine::open(
        dir.path(),
        engine::Options::default().with_background_sealing(false),
    )
    .unwrap()
    .close()
    .unwrap();
    let output = Command::new(BINARY)
        .args(["--log-format", "json", "retention", "status", "--data"])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().filter(|line| !line.is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines");
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("{line}: {error}"));
        assert!(
            value["level"].is_string() && value["fields"].is_object(),
            "{line}"
        );
    }
}
