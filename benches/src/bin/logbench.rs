//! `logbench`: what GenAI events sent as OTLP log records cost, in-process (no server).
//!
//! The seeded agent corpus (`testdata`) is stored twice, each in a fresh data directory:
//! - **spans**: the spans alone;
//! - **spans+logs**: the same spans, and for every model-call span the records an OpenTelemetry
//!   GenAI instrumentation sends with event-only capture: one
//!   `gen_ai.client.inference.operation.details` (usage, models, finish reasons, input and
//!   output messages) and one `gen_ai.evaluation.result`.
//!
//! Reported: write throughput (`ingest::prepare` / `prepare_logs` + `Engine::write_batch`, one
//! fsync'd group commit per request), sealed bytes, and the median of `--repeat` runs of span,
//! agent-table and log queries on both stores, so the cost log rows put on span readers shows.
//!
//! ```sh
//! cargo run --release -p benches --bin logbench -- --traces 2000 --repeat 5
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

/// Store the seeded corpus with and without its GenAI event records and compare.
#[derive(Debug, Parser)]
struct Args {
    /// Agent runs (one trace each).
    #[arg(long, default_value_t = 2000)]
    traces: usize,
    /// Traces per export request.
    #[arg(long, default_value_t = 20)]
    traces_per_request: usize,
    /// Runs of each query (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Directory for the two data directories (`spans/`, `logs/`; emptied first).
    #[arg(long, default_value = "/tmp/logbench")]
    dir: std::path::PathBuf,
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

fn value_of<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|pair| pair.key == key)
        .and_then(|pair| pair.value.as_ref()?.value.as_ref())
}

/// The GenAI event records of a request's model-call spans.
fn events_of(request: &ExportTraceServiceRequest) -> ExportLogsServiceRequest {
    let mut out = ExportLogsServiceRequest::default();
    for resource_spans in &request.resource_spans {
        let mut records = Vec::new();
        for span in resource_spans
            .scope_spans
            .iter()
            .flat_map(|scope| &scope.spans)
        {
            let operation = value_of(&span.attributes, "gen_ai.operation.name");
            if !matches!(operation, Some(any_value::Value::StringValue(name)) if name == "chat") {
                continue;
            }
            let mut details = vec![string("gen_ai.operation.name", "chat")];
            for key in [
                "gen_ai.request.model",
                "gen_ai.response.model",
                "gen_ai.usage.input_tokens",
                "gen_ai.usage.output_tokens",
            ] {
                if let Some(value) = value_of(&span.attributes, key) {
                    details.push(KeyValue {
                        key: key.to_owned(),
                        value: Some(AnyValue {
                            value: Some(value.clone()),
                        }),
                        ..KeyValue::default()
                    });
                }
            }
            let question = format!(
                r#"[{{"role":"user","parts":[{{"type":"text","content":"step {} of {}: what next?"}}]}}]"#,
                hex::encode(&span.span_id),
                span.name
            );
            details.push(string("gen_ai.input.messages", &question));
            details.push(string(
                "gen_ai.output.messages",
                r#"[{"role":"assistant","finish_reason":"stop","parts":[{"type":"text","content":"call the search tool"}]}]"#,
            ));
            let record = |event: &str, time: u64, attributes: Vec<KeyValue>| LogRecord {
                time_unix_nano: time,
                observed_time_unix_nano: time,
                severity_number: 9,
                event_name: event.to_owned(),
                trace_id: span.trace_id.clone(),
                span_id: span.span_id.clone(),
                attributes,
                ..LogRecord::default()
            };
            records.push(record(
                "gen_ai.client.inference.operation.details",
                span.end_time_unix_nano,
                details,
            ));
            records.push(record(
                "gen_ai.evaluation.result",
                span.end_time_unix_nano + 1,
                vec![
                    string("gen_ai.evaluation.name", "relevance"),
                    KeyValue {
                        key: "gen_ai.evaluation.score.value".to_owned(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::DoubleValue(0.8)),
                        }),
                        ..KeyValue::default()
                    },
                ],
            ));
        }
        out.resource_logs.push(ResourceLogs {
            resource: resource_spans.resource.clone(),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        });
    }
    out
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

struct Stored {
    rows: u64,
    elapsed: Duration,
    bytes: u64,
}

/// Writes `spans` (and `logs`) into a fresh store at `dir`, seals, and returns the counts.
fn store(
    dir: &Path,
    spans: &[ExportTraceServiceRequest],
    logs: &[ExportLogsServiceRequest],
) -> anyhow::Result<(Stored, Stored)> {
    let _ = std::fs::remove_dir_all(dir);
    let engine = engine::Engine::open(dir, engine::Options::default())?;
    let policy = ingest::ContentPolicy::with_defaults([9; 32]);
    let rules = engine::NoTierRules;
    let mut span_stats = Stored {
        rows: 0,
        elapsed: Duration::ZERO,
        bytes: 0,
    };
    let mut log_stats = Stored {
        rows: 0,
        elapsed: Duration::ZERO,
        bytes: 0,
    };
    for (index, request) in spans.iter().enumerate() {
        let started = Instant::now();
        let write = ingest::prepare(request.clone(), &policy, &rules)?;
        span_stats.rows += write.spans.num_rows() as u64;
        engine.write_batch(write)?;
        span_stats.elapsed += started.elapsed();
        if let Some(request) = logs.get(index) {
            let started = Instant::now();
            let write = ingest::prepare_logs(request.clone(), &policy, &rules)?;
            log_stats.rows += write.spans.num_rows() as u64;
            engine.write_batch(write)?;
            log_stats.elapsed += started.elapsed();
        }
    }
    engine.seal()?;
    engine.close()?;
    let bytes = dir_bytes(dir);
    span_stats.bytes = bytes;
    log_stats.bytes = bytes;
    Ok((span_stats, log_stats))
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

const QUERIES: [(&str, &str); 5] = [
    ("spans count", "SELECT count(*) FROM spans"),
    (
        "spans by service",
        "SELECT service_name, count(*), avg(duration_ns) FROM spans GROUP BY 1",
    ),
    (
        "llm_calls tokens by model",
        "SELECT request_model, sum(input_tokens), sum(output_tokens) FROM llm_calls GROUP BY 1",
    ),
    (
        "logs by event",
        "SELECT event_name, count(*) FROM logs GROUP BY 1",
    ),
    (
        "evaluations by name",
        "SELECT name, avg(score_value), count(*) FROM evaluations GROUP BY 1",
    ),
];

// A report tool: its output is the report.
#[allow(clippy::print_stdout)]
fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = testdata::AgentTraceConfig {
        traces: args.traces,
        ..testdata::AgentTraceConfig::default()
    };
    let spans = testdata::export_requests(&config, args.traces_per_request);
    let logs: Vec<ExportLogsServiceRequest> = spans.iter().map(events_of).collect();
    std::fs::create_dir_all(&args.dir).context("bench directory")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "logbench: {} traces, {} requests of each kind",
        args.traces,
        spans.len()
    );
    for (label, with_logs) in [("spans", false), ("spans+logs", true)] {
        let dir = args.dir.join(if with_logs { "logs" } else { "spans" });
        let (span_stats, log_stats) = store(&dir, &spans, if with_logs { &logs } else { &[] })?;
        println!(
            "{label}: {} spans in {:.2} s ({:.0} spans/s), {} log records in {:.2} s ({:.0} records/s), {} bytes on disk",
            span_stats.rows,
            span_stats.elapsed.as_secs_f64(),
            span_stats.rows as f64 / span_stats.elapsed.as_secs_f64(),
            log_stats.rows,
            log_stats.elapsed.as_secs_f64(),
            log_stats.rows as f64 / log_stats.elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
            span_stats.bytes
        );
        let engine = Arc::new(engine::Engine::open(&dir, engine::Options::default())?);
        let sql = query::SqlEngine::new(Arc::clone(&engine), query::Options::default())?;
        for (name, text) in QUERIES {
            let mut samples = Vec::with_capacity(args.repeat);
            let mut answer = String::new();
            for _ in 0..args.repeat.max(1) {
                let started = Instant::now();
                let output = runtime.block_on(sql.execute(text))?;
                samples.push(started.elapsed());
                answer = format!(
                    "{} rows",
                    output.batches.iter().map(|b| b.num_rows()).sum::<usize>()
                );
            }
            println!(
                "  {name:<28} median {:>8.2} ms ({answer})",
                median(samples).as_secs_f64() * 1000.0
            );
        }
        drop(sql);
        engine.close()?;
    }
    Ok(())
}
