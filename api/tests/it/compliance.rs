//! `sightline verify` and `sightline hold` as a user runs them.

use std::borrow::Cow;
use std::path::Path;
use std::process::{Command, Output};

use engine::{AgentFields, Engine, Options, SpanBatchBuilder, SpanId, SpanRecord, TraceId};

const BINARY: &str = env!("CARGO_BIN_EXE_sightline");

fn run(args: &[&str], dir: &Path) -> Output {
    Command::new(BINARY)
        .args(args)
        .arg("--data")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sightline")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A store with two sealed segments of session `s1`.
fn store(dir: &Path) {
    let engine = Engine::open(dir, Options::default().with_background_sealing(false)).unwrap();
    for segment in 0..2u8 {
        let mut builder = SpanBatchBuilder::new();
        builder.append(&SpanRecord {
            trace_id: TraceId([segment + 1; 16]),
            span_id: SpanId([segment + 1; 8]),
            name: "step",
            start_time_unix_nano: 1_793_491_200_000_000_000 + i64::from(segment),
            end_time_unix_nano: 1_793_491_200_000_000_100,
            agent: AgentFields {
                session_id: Some(Cow::Borrowed("s1")),
                ..AgentFields::default()
            },
            ..SpanRecord::default()
        });
        engine.write(builder.finish()).unwrap();
        engine.seal().unwrap();
    }
    engine.close().unwrap();
}

#[test]
fn compact_rewrites_a_days_seals_as_one_segment_and_verify_still_passes() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path());
    let compacted = run(&["compact"], dir.path());
    let stdout = text(&compacted.stdout);
    assert!(
        compacted.status.success(),
        "{stdout}{}",
        text(&compacted.stderr)
    );
    assert!(
        stdout.starts_with("compacted standard 2026-11-01: 2 segments (2 rows,")
            && stdout.contains(" into 1 ("),
        "{stdout}"
    );
    let again = run(&["compact"], dir.path());
    assert!(again.status.success());
    assert!(
        text(&again.stdout).starts_with("nothing to compact"),
        "{}",
        text(&again.stdout)
    );
    let verified = run(&["verify"], dir.path());
    assert!(verified.status.success(), "{}", text(&verified.stdout));
    // Both spans, from one segment.
    let engine = Engine::open(
        dir.path(),
        Options::default().with_background_sealing(false),
    )
    .unwrap();
    assert_eq!(engine.segments().len(), 1);
    let request = engine::ScanRequest {
        session_ids: Some(vec!["s1".to_owned()]),
        ..engine::ScanRequest::default()
    };
    let rows: usize = engine
        .scan(&request)
        .unwrap()
        .iter()
        .map(|batch| batch.num_rows())
        .sum();
    assert_eq!(rows, 2);
}

#[test]
fn verify_passes_on_an_untouched_store_and_names_an_altered_segment() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path());
    let ok = run(&["verify"], dir.path());
    let stdout = text(&ok.stdout);
    assert!(ok.status.success(), "{stdout}{}", text(&ok.stderr));
    assert!(stdout.starts_with("OK: 2 entries, 2 segments"), "{stdout}");
    assert!(stdout.contains("head "), "{stdout}");

    let engine = Engine::open(
        dir.path(),
        Options::default().with_background_sealing(false),
    )
    .unwrap();
    let path = dir.path().join(&engine.segments()[1].path);
    drop(engine);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[50] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let failed = run(&["verify"], dir.path());
    let stdout = text(&failed.stdout);
    assert!(!failed.status.success());
    assert!(stdout.starts_with("FAILED"), "{stdout}");
    assert!(
        stdout.contains("segment 2 (segments/") && stdout.contains("altered"),
        "{stdout}"
    );
    assert!(text(&failed.stderr).contains("verification failed: 1 problem"));
}

#[test]
fn holds_are_placed_listed_and_released_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path());
    let placed = run(&["hold", "--session", "s1"], dir.path());
    assert!(placed.status.success(), "{}", text(&placed.stderr));
    assert!(text(&placed.stdout).starts_with("legal hold placed: session s1 since 20"));
    let placed = run(&["hold", "--tier", "decision"], dir.path());
    assert!(placed.status.success(), "{}", text(&placed.stderr));
    let listed = text(&run(&["hold"], dir.path()).stdout);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.contains("session s1 since") && listed.contains("tier decision since"));
    let released = run(&["hold", "--release", "--session", "s1"], dir.path());
    assert!(released.status.success());
    assert_eq!(
        text(&released.stdout),
        "released the legal hold on session s1\n"
    );
    let bare = run(&["hold", "--release"], dir.path());
    assert!(!bare.status.success());
    assert!(text(&bare.stderr).contains("--release needs --session ID or --tier NAME"));
}

#[test]
fn verify_of_a_directory_held_by_another_process_says_to_stop_it() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path());
    let engine = Engine::open(
        dir.path(),
        Options::default().with_background_sealing(false),
    )
    .unwrap();
    let refused = run(&["verify"], dir.path());
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("in use by a running sightline server; stop the server to verify it"),
        "{stderr}"
    );
    drop(engine);
}

/// Runs the CLI against a running server's admin API.
fn run_remote(args: &[&str], url: &str) -> Output {
    Command::new(BINARY)
        .args(args)
        .arg("--url")
        .arg(url)
        .env("RUST_LOG", "warn")
        .env_remove("SIGHTLINE_DATA")
        .output()
        .expect("run sightline")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_runs_against_a_running_server() {
    use prost::Message as _;
    let dir = tempfile::tempdir().unwrap();
    let server = crate::support::TestServer::start(dir.path()).await;
    let mut spans = Vec::new();
    for n in 1..=3u8 {
        let mut span = crate::http::span(40, n);
        span.attributes
            .push(opentelemetry_proto::tonic::common::v1::KeyValue {
                key_strindex: 0,
                key: "session.id".into(),
                value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                    value: Some(
                        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                            "s-online".into(),
                        ),
                    ),
                }),
            });
        spans.push(span);
    }
    let response = reqwest::Client::new()
        .post(format!("{}/v1/traces", server.otlp_http))
        .header("content-type", "application/x-protobuf")
        .body(crate::http::request(spans).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let count = "SELECT count(*) FROM spans WHERE session_id = 's-online'";
    assert_eq!(server.count(count).await, 3);
    let url = server.api.clone();
    let cli = move |args: &'static [&'static str]| {
        let url = url.clone();
        async move {
            tokio::task::spawn_blocking(move || run_remote(args, &url))
                .await
                .unwrap()
        }
    };

    let held = cli(&["hold", "--session", "s-online"]).await;
    assert!(held.status.success(), "{}", text(&held.stderr));
    assert!(
        text(&held.stdout).contains("legal hold placed"),
        "{}",
        text(&held.stdout)
    );
    let refused = cli(&["erase", "--session", "s-online"]).await;
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("nothing was erased"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(server.count(count).await, 3);
    let released = cli(&["hold", "--release", "--session", "s-online"]).await;
    assert!(released.status.success(), "{}", text(&released.stderr));
    let erased = cli(&["erase", "--session", "s-online"]).await;
    assert!(erased.status.success(), "{}", text(&erased.stderr));
    assert!(
        text(&erased.stdout).contains("erased session s-online: 3 spans"),
        "{}",
        text(&erased.stdout)
    );
    assert_eq!(server.count(count).await, 0);
    let verified = cli(&["verify"]).await;
    assert!(
        verified.status.success(),
        "{}{}",
        text(&verified.stdout),
        text(&verified.stderr)
    );
    assert!(
        text(&verified.stdout).starts_with("OK"),
        "{}",
        text(&verified.stdout)
    );
    let retention = cli(&["retention", "run", "--dry-run"]).await;
    assert!(retention.status.success(), "{}", text(&retention.stderr));
    assert!(
        text(&retention.stdout).contains("content: would delete"),
        "{}",
        text(&retention.stdout)
    );
    server.stop().await;
}
