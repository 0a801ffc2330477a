//! `loadgen`: replays seeded agent traces against an OTLP endpoint, or measures the bare protobuf
//! decode ceiling.
//!
//! ```text
//! cargo run --release -p benches --bin loadgen -- --target grpc|http|http-json|decode \
//!     --addr 127.0.0.1:4317 --connections 8 --traces 40000 --traces-per-request 4 --seed 42 \
//!     [--duration-secs N] [--gzip]
//! ```
//!
//! All requests are generated (with `testdata`) and encoded before the clock starts; the run then
//! sends every request once (or loops over them for `--duration-secs`) over `--connections`
//! concurrent connections, retrying throttled requests (HTTP 429/503, gRPC RESOURCE_EXHAUSTED /
//! UNAVAILABLE) with backoff. It prints a human summary and, last, one JSON line for
//! BENCHMARKS.md. Exit status: 0 when at least one request was accepted, 1 when every request
//! failed, 2 when the run could not start (endpoint unreachable, invalid arguments).

mod decode;
mod grpc;
mod http;
mod payloads;
mod send;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use serde_json::json;
use testdata::AgentTraceConfig;

use crate::decode::DecodeRun;
use crate::payloads::{Encoding, Payloads};
use crate::send::{FailureKind, SendOptions, SendStats, Transport};

/// Replay seeded agent traces against an OTLP endpoint, or measure the protobuf decode ceiling.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Args {
    /// What to drive: OTLP/gRPC, OTLP/HTTP protobuf, OTLP/HTTP JSON, or the in-process
    /// protobuf decode loop (no network).
    #[arg(long, value_enum)]
    target: Target,

    /// Endpoint as host:port or URL [default: 127.0.0.1:4317 for grpc, 127.0.0.1:4318 for
    /// http and http-json, which post to /v1/traces unless the URL has a path].
    #[arg(long)]
    addr: Option<String>,

    /// PEM CA certificate to trust for an `https://` address (a server with TLS).
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<std::path::PathBuf>,

    /// API token sent as `Authorization: Bearer` (a server with tokens; ingest scope).
    #[arg(long, env = "SIGHTLINE_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Concurrent connections (one sending task each); for decode, the thread count of the
    /// multi-threaded run.
    #[arg(long, default_value_t = 8)]
    connections: usize,

    /// Agent traces to generate (about 25 spans each by default).
    #[arg(long, default_value_t = 40_000)]
    traces: usize,

    /// Traces batched into one export request.
    #[arg(long, default_value_t = 4)]
    traces_per_request: usize,

    /// Seed of the generated traces.
    #[arg(long, default_value_t = 42)]
    seed: u64,

    /// Average spans per trace.
    #[arg(long, default_value_t = 25)]
    spans_per_trace: usize,

    /// Distinct services (`<role>-agent-<i>`).
    #[arg(long, default_value_t = 3)]
    services: usize,

    /// Distinct sessions the traces are spread over.
    #[arg(long, default_value_t = 100)]
    sessions: usize,

    /// Keep looping over the requests for this long (resending identical spans) instead of
    /// sending each once; for decode, the minimum measuring time per run [decode default: 3].
    #[arg(long)]
    duration_secs: Option<u64>,

    /// Gzip request bodies (HTTP: compressed up front; gRPC: tonic compresses per message on the
    /// client). For decode, include gunzip in the loop.
    #[arg(long)]
    gzip: bool,

    /// Retries of a throttled request before counting it as failed.
    #[arg(long, default_value_t = 10)]
    max_retries: u32,

    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,

    /// Give every chat span its conversation so far as `gen_ai.input.messages` (content): each
    /// chat turn of a trace adds one user message of about this many bytes, and every turn
    /// re-sends the whole history, as agents do. 0: no content.
    #[arg(long, default_value_t = 0)]
    history_message_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    Grpc,
    Http,
    HttpJson,
    Decode,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Grpc => "grpc",
            Target::Http => "http",
            Target::HttpJson => "http-json",
            Target::Decode => "decode",
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(error) => {
            report_error(&error);
            ExitCode::from(2)
        }
    }
}

// An expected failure (endpoint unreachable, bad flag value) gets one line, not the backtrace
// that returning the error from `main` would print under RUST_BACKTRACE=1.
#[allow(clippy::print_stderr)]
fn report_error(error: &anyhow::Error) {
    eprintln!("loadgen: error: {error:#}");
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(args.traces > 0, "--traces must be at least 1");
    let config = AgentTraceConfig {
        seed: args.seed,
        traces: args.traces,
        sessions: args.sessions,
        services: args.services,
        spans_per_trace: args.spans_per_trace,
        ..AgentTraceConfig::default()
    };
    let (encoding, pre_gzip) = match args.target {
        Target::HttpJson => (Encoding::Json, args.gzip),
        Target::Http | Target::Decode => (Encoding::Protobuf, args.gzip),
        // tonic applies gRPC message compression itself.
        Target::Grpc => (Encoding::Protobuf, false),
    };
    let build_threads = std::thread::available_parallelism().map_or(1, usize::from);
    let payloads = payloads::build(
        &config,
        &payloads::Shape {
            traces_per_request: args.traces_per_request,
            encoding,
            gzip: pre_gzip,
            history_message_bytes: args.history_message_bytes,
        },
        build_threads,
    );
    print_payloads(args, &payloads);

    if args.target == Target::Decode {
        let min_duration = Duration::from_secs(args.duration_secs.unwrap_or(3));
        let single = decode::run(&payloads, 1, min_duration)?;
        let multi = decode::run(&payloads, args.connections, min_duration)?;
        print_decode(args, &payloads, &single, &multi);
        return Ok(ExitCode::SUCCESS);
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    let stats = runtime.block_on(run_network(args, encoding, Arc::new(payloads)))?;
    print_load(args, &stats);
    if stats.requests > 0 && stats.requests_accepted == 0 {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_network(
    args: &Args,
    encoding: Encoding,
    payloads: Arc<Payloads>,
) -> anyhow::Result<SendStats> {
    let timeout = Duration::from_secs(args.timeout_secs);
    let ca = match &args.ca_cert {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read --ca-cert {}", path.display()))?,
        ),
        None => None,
    };
    let mut transports = Vec::with_capacity(args.connections);
    match args.target {
        Target::Grpc => {
            let addr = args.addr.as_deref().unwrap_or("127.0.0.1:4317");
            let url = if addr.contains("://") {
                addr.to_owned()
            } else {
                format!("http://{addr}")
            };
            for _ in 0..args.connections {
                transports.push(Transport::Grpc(
                    grpc::connect(
                        &url,
                        args.gzip,
                        timeout,
                        ca.as_deref(),
                        args.token.as_deref(),
                    )
                    .await?,
                ));
            }
        }
        Target::Http | Target::HttpJson => {
            let addr = args.addr.as_deref().unwrap_or("127.0.0.1:4318");
            let url = http::traces_url(addr)?;
            http::check_reachable(&url).await?;
            for _ in 0..args.connections {
                transports.push(Transport::Http(http::client(
                    url.clone(),
                    encoding,
                    args.gzip,
                    timeout,
                    ca.as_deref(),
                    args.token.as_deref(),
                )?));
            }
        }
        Target::Decode => anyhow::bail!("decode is not a network target"),
    }
    let options = SendOptions {
        duration: args.duration_secs.map(Duration::from_secs),
        max_retries: args.max_retries,
    };
    Ok(send::run(transports, payloads, options).await)
}

// Printing the results is this binary's job; everything below writes to stdout on purpose.
#[allow(clippy::print_stdout)]
fn print_payloads(args: &Args, payloads: &Payloads) {
    println!(
        "loadgen: target={} seed={} traces={} traces/request={} -> {} requests, {} spans, \
         {:.1} MB {} ({:.0} B/span), {:.1} MB on the wire{}{} (built in {:.2}s)",
        args.target.name(),
        args.seed,
        args.traces,
        args.traces_per_request,
        payloads.bodies.len(),
        payloads.total_spans,
        payloads.encoded_bytes as f64 / 1e6,
        payloads.encoding.name(),
        payloads.encoded_bytes as f64 / payloads.total_spans.max(1) as f64,
        payloads.wire_bytes as f64 / 1e6,
        if payloads.gzip { " (gzip)" } else { "" },
        if args.history_message_bytes > 0 {
            format!(
                ", chat histories of {} B messages",
                args.history_message_bytes
            )
        } else {
            String::new()
        },
        payloads.build_elapsed.as_secs_f64(),
    );
}

#[allow(clippy::print_stdout)]
fn print_decode(args: &Args, payloads: &Payloads, single: &DecodeRun, multi: &DecodeRun) {
    for run in [single, multi] {
        println!(
            "decode {} thread{}: {:.0} spans/s, {:.1} MB/s ({} spans in {:.2}s)",
            run.threads,
            if run.threads == 1 { "" } else { "s" },
            run.spans_per_second(),
            run.megabytes_per_second(),
            run.spans,
            run.elapsed.as_secs_f64(),
        );
    }
    let line = json!({
        "target": "decode",
        "seed": args.seed,
        "traces": args.traces,
        "traces_per_request": args.traces_per_request,
        "requests": payloads.bodies.len(),
        "spans": payloads.total_spans,
        "encoded_bytes": payloads.encoded_bytes,
        "wire_bytes": payloads.wire_bytes,
        "gzip": payloads.gzip,
        "cpus": std::thread::available_parallelism().map_or(1, usize::from),
        "single_thread_spans_per_sec": single.spans_per_second().round(),
        "single_thread_mb_per_sec": (single.megabytes_per_second() * 10.0).round() / 10.0,
        "threads": multi.threads,
        "multi_thread_spans_per_sec": multi.spans_per_second().round(),
        "multi_thread_mb_per_sec": (multi.megabytes_per_second() * 10.0).round() / 10.0,
    });
    println!("{line}");
}

#[allow(clippy::print_stdout)]
fn print_load(args: &Args, stats: &SendStats) {
    let elapsed = stats.elapsed.as_secs_f64().max(1e-9);
    let millis = |quantile: f64| stats.latency_us.value_at_quantile(quantile) as f64 / 1_000.0;
    let (p50, p99) = (millis(0.5), millis(0.99));
    let max = stats.latency_us.max() as f64 / 1_000.0;
    let count = |map: &std::collections::BTreeMap<FailureKind, u64>, kind| {
        map.get(&kind).copied().unwrap_or(0)
    };
    println!(
        "sent {} requests ({} accepted, {} attempts), {} spans in {:.2}s",
        stats.requests, stats.requests_accepted, stats.attempts, stats.spans_sent, elapsed,
    );
    println!(
        "accepted {} spans ({} rejected by partial success): {:.0} spans/s, {:.1} MB/s on the wire",
        stats.spans_accepted,
        stats.spans_rejected,
        stats.spans_accepted as f64 / elapsed,
        stats.bytes_sent as f64 / 1e6 / elapsed,
    );
    println!("latency per attempt: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms");
    println!(
        "retried: 429={} 503={} other={}; failed: 429={} 503={} other={}",
        count(&stats.retries, FailureKind::Status429),
        count(&stats.retries, FailureKind::Status503),
        count(&stats.retries, FailureKind::Other),
        count(&stats.failures, FailureKind::Status429),
        count(&stats.failures, FailureKind::Status503),
        count(&stats.failures, FailureKind::Other),
    );
    for (label, failed) in &stats.failure_labels {
        println!("  failed {label}: {failed}");
    }
    if let Some(error) = &stats.first_error {
        println!("first failure: {error}");
    }
    if stats.requests > 0 && stats.requests_accepted == 0 {
        println!("error: every request failed");
    }
    let line = json!({
        "target": args.target.name(),
        "addr": args.addr,
        "connections": args.connections,
        "seed": args.seed,
        "traces": args.traces,
        "traces_per_request": args.traces_per_request,
        "gzip": args.gzip,
        "duration_secs": args.duration_secs,
        "cpus": std::thread::available_parallelism().map_or(1, usize::from),
        "requests": stats.requests,
        "requests_accepted": stats.requests_accepted,
        "attempts": stats.attempts,
        "spans_sent": stats.spans_sent,
        "spans_accepted": stats.spans_accepted,
        "spans_rejected": stats.spans_rejected,
        "wire_bytes": stats.bytes_sent,
        "elapsed_secs": (elapsed * 1_000.0).round() / 1_000.0,
        "spans_per_sec": (stats.spans_accepted as f64 / elapsed).round(),
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": max,
        "retries": {
            "429": count(&stats.retries, FailureKind::Status429),
            "503": count(&stats.retries, FailureKind::Status503),
            "other": count(&stats.retries, FailureKind::Other),
        },
        "failures": {
            "429": count(&stats.failures, FailureKind::Status429),
            "503": count(&stats.failures, FailureKind::Status503),
            "other": count(&stats.failures, FailureKind::Other),
        },
    });
    println!("{line}");
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Args::command().debug_assert();
    }

    #[test]
    fn cli_parses_the_documented_command() {
        let args = Args::try_parse_from([
            "loadgen",
            "--target",
            "http-json",
            "--addr",
            "127.0.0.1:4318",
            "--connections",
            "8",
            "--traces",
            "40000",
            "--traces-per-request",
            "4",
            "--seed",
            "42",
            "--duration-secs",
            "10",
            "--gzip",
        ])
        .expect("parses");
        assert_eq!(args.target, Target::HttpJson);
        assert_eq!(args.duration_secs, Some(10));
        assert!(args.gzip);
    }
}
