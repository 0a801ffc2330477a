//! `sqlbench`: fills a data directory with seeded agent traces through the real ingest mapping
//! and engine write path (embedded, no server), seals it, and times SQL queries over it.
//!
//! ```sh
//! cargo run --release -p benches --bin sqlbench -- --data /tmp/sl-1m --spans 1000000 --runs 10
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

/// The allocator the `sightline` server ships with (api/src/main.rs), so the times are the
/// server's: glibc's allocator hands large query buffers back to the kernel and faults them in
/// zeroed on the next query.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Fill a store with seeded agent traces and time SQL queries over it.
#[derive(Debug, Parser)]
struct Args {
    /// Data directory (filled if it holds fewer spans than --spans).
    #[arg(long)]
    data: PathBuf,
    /// Spans to hold.
    #[arg(long, default_value_t = 1_000_000)]
    spans: usize,
    /// Runs per query (the median is reported).
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Traces per write while filling.
    #[arg(long, default_value_t = 40)]
    traces_per_write: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Distinct sessions the traces are spread over.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Seal the memtable at this many MiB while filling (the server's `--seal-max-bytes`;
    /// smaller seals make more, smaller segments).
    #[arg(long, default_value_t = 256)]
    seal_max_mib: usize,
    /// Compact the store (every day of every tier into session order) before the queries.
    #[arg(long)]
    compact: bool,
    /// Run only the queries whose name contains this (e.g. `monitoring`).
    #[arg(long)]
    only: Option<String>,
    /// Split every trace while filling: the first half of each scope's spans (children, in end
    /// order) is written with its request, the rest (the root among them) this many requests
    /// later, as batch exporters send a long run. With enough requests in between, most traces
    /// are sealed apart. 0: every trace is written whole.
    #[arg(long, default_value_t = 0)]
    late_halves: usize,
    /// Query memory limit in MiB (the server's default is 1024).
    #[arg(long, default_value_t = 8192)]
    memory_limit_mib: usize,
    /// Also write each result as the HTTP API's JSON and report that time (median) apart.
    #[arg(long)]
    json: bool,
}

/// The queries of docs/monitoring.md, in order.
fn monitoring_queries() -> Vec<String> {
    testdata::sql_blocks(include_str!("../../../docs/monitoring.md"))
}

/// The first half of every scope's spans, and the rest.
fn split_halves(
    request: ExportTraceServiceRequest,
) -> (ExportTraceServiceRequest, ExportTraceServiceRequest) {
    let mut early = request.clone();
    let mut rest = request;
    for (early, rest) in early
        .resource_spans
        .iter_mut()
        .zip(&mut rest.resource_spans)
    {
        for (early, rest) in early.scope_spans.iter_mut().zip(&mut rest.scope_spans) {
            let half = early.spans.len() / 2;
            early.spans.truncate(half);
            rest.spans.drain(..half);
        }
    }
    (early, rest)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[allow(clippy::print_stdout)]
fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let engine = Arc::new(
        engine::Engine::open(
            &args.data,
            // No background compaction: a store filled earlier is quiet, and compacting it
            // under the queries would change what they measure (`--compact` compacts first).
            engine::Options::default()
                .with_seal_max_bytes(args.seal_max_mib << 20)
                .with_compaction_quiet(None),
        )
        .with_context(|| format!("open {}", args.data.display()))?,
    );
    let stats = engine.stats();
    let held = stats.memtable_rows as u64 + stats.segment_rows;
    let config = testdata::AgentTraceConfig {
        seed: args.seed,
        traces: args.spans / 25 + 1,
        sessions: args.sessions,
        ..testdata::AgentTraceConfig::default()
    };
    if (held as usize) < args.spans {
        let started = Instant::now();
        let mut written = 0usize;
        let mut overloaded = 0usize;
        let mut late: std::collections::VecDeque<ExportTraceServiceRequest> =
            std::collections::VecDeque::new();
        let requests = testdata::export_request_iter(&config, args.traces_per_write)
            .map(Some)
            .chain(std::iter::repeat_with(|| None));
        for request in requests {
            let request = match request {
                Some(request) if written < args.spans => {
                    if args.late_halves == 0 {
                        request
                    } else {
                        let (early, rest) = split_halves(request);
                        late.push_back(rest);
                        if late.len() > args.late_halves {
                            let mut merged = early;
                            if let Some(due) = late.pop_front() {
                                merged.resource_spans.extend(due.resource_spans);
                            }
                            merged
                        } else {
                            early
                        }
                    }
                }
                _ => match late.pop_front() {
                    Some(due) => due,
                    None => break,
                },
            };
            let spans = ingest::to_span_batch(&request)?;
            written += spans.batch.num_rows();
            // As a client would: wait the advised time when sealing falls behind.
            loop {
                match engine.write(spans.batch.clone()) {
                    Err(engine::Error::Overloaded { retry_after_ms, .. }) => {
                        overloaded += 1;
                        std::thread::sleep(std::time::Duration::from_millis(retry_after_ms));
                    }
                    other => {
                        other?;
                        break;
                    }
                }
            }
        }
        let filled = started.elapsed();
        engine.seal()?;
        println!(
            "filled {written} spans in {:.1} s ({:.0} spans/s embedded, durable), sealed in {:.1} s total, {overloaded} writes refused as overloaded and retried",
            filled.as_secs_f64(),
            written as f64 / filled.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
    }
    if args.compact {
        let started = Instant::now();
        let report = engine.compact()?;
        let inputs: usize = report.groups.iter().map(|group| group.inputs.len()).sum();
        let outputs: usize = report.groups.iter().map(|group| group.outputs.len()).sum();
        let rows: u64 = report.groups.iter().map(|group| group.rows).sum();
        println!(
            "compacted {} groups: {inputs} segments into {outputs}, {rows} rows in {:.1} s ({:.0} rows/s)",
            report.groups.len(),
            started.elapsed().as_secs_f64(),
            rows as f64 / started.elapsed().as_secs_f64()
        );
    }
    // A trace (and its session) from the middle of the data set.
    let middle = testdata::agent_trace(&config, config.traces / 2);
    let trace = hex::encode(middle.trace_id);
    let session = middle.session_id;
    let stats = engine.stats();
    println!(
        "store: {} spans in {} segments, {} bytes on disk = {:.1} bytes/span (+ {} spans in memtable)",
        stats.segment_rows,
        stats.segments,
        stats.segment_bytes,
        stats.segment_bytes as f64 / stats.segment_rows.max(1) as f64,
        stats.memtable_rows
    );

    // Full scans return every row: lift the result cap and give them memory.
    let options = query::Options::default()
        .with_max_result_rows(usize::MAX)
        .with_memory_limit(args.memory_limit_mib << 20)
        // As `sightline serve` does: past the memory budget, sorts and joins spill.
        .with_spill(args.data.join("query-spill"), 10 << 30);
    let sql = query::SqlEngine::new(Arc::clone(&engine), options)?;
    let monitoring: Vec<(String, String)> = monitoring_queries()
        .into_iter()
        .enumerate()
        .map(|(index, text)| (format!("monitoring_{}", index + 1), text))
        .collect();
    let queries = [
        ("count", "SELECT count(*) FROM spans".to_owned()),
        ("trace_lookup", format!("SELECT span_id, span_name, duration_ns FROM spans WHERE trace_id = '{trace}'")),
        ("trace_lookup_full_rows", format!("SELECT * FROM spans WHERE trace_id = '{trace}'")),
        ("group_by_service", "SELECT service_name, count(*) FROM spans GROUP BY service_name".to_owned()),
        ("all_rows_5_columns", "SELECT trace_id, span_id, span_name, start_time, duration_ns FROM spans".to_owned()),
        ("session_5_columns", format!("SELECT trace_id, span_id, span_name, start_time, duration_ns FROM spans WHERE session_id = '{session}'")),
        ("all_rows_all_columns", "SELECT * FROM spans".to_owned()),
        ("session_all_columns", format!("SELECT * FROM spans WHERE session_id = '{session}'")),
        ("session_llm_calls", format!("SELECT request_model, input_tokens, output_tokens FROM llm_calls WHERE session_id = '{session}'")),
        ("session_decisions", format!("SELECT time, verdict, policy_id FROM decisions WHERE session_id = '{session}'")),
        ("session_runs", format!("SELECT trace_id, agent_name, outcome, input_tokens FROM agent_runs WHERE session_id = '{session}'")),
        ("session_summary", format!("SELECT * FROM sessions WHERE session_id = '{session}'")),
        (
            "tokens_by_model",
            "SELECT attributes['gen_ai.request.model'] AS model, sum(CAST(attributes['gen_ai.usage.input_tokens'] AS BIGINT)) FROM spans WHERE span_name LIKE 'chat%' GROUP BY 1".to_owned(),
        ),
    ];
    println!(
        "{:<24} {:>12} {:>12} {:>9} {:>14} {:>12}",
        "query", "median ms", "min ms", "rows", "bytes read", "rows scanned"
    );
    let mut json = Vec::new();
    let all = queries
        .iter()
        .map(|(name, text)| ((*name).to_owned(), text.clone()))
        .chain(monitoring);
    for (name, text) in all {
        if args
            .only
            .as_ref()
            .is_some_and(|only| !name.contains(only.as_str()))
        {
            continue;
        }
        let mut samples = Vec::new();
        let mut json_samples = Vec::new();
        let mut rows = 0;
        let mut scanned = engine::ScanMetricsSnapshot::default();
        for _ in 0..args.runs.max(1) {
            let started = Instant::now();
            let output = match runtime.block_on(sql.execute(&text)) {
                Ok(output) => output,
                Err(error) => {
                    println!("{name:<24} failed: {error}");
                    break;
                }
            };
            samples.push(started.elapsed());
            if args.json {
                let started = Instant::now();
                match query::format::to_json_bytes(&output, usize::MAX) {
                    Ok(text) => {
                        json_samples.push(started.elapsed());
                        std::hint::black_box(text);
                    }
                    Err(error) => println!("{name:<24} JSON failed: {error}"),
                }
            }
            rows = output.num_rows();
            scanned = output.scan_metrics;
        }
        if samples.is_empty() {
            continue;
        }
        let min = samples.iter().min().copied().unwrap_or_default();
        let json_median = (!json_samples.is_empty()).then(|| median(json_samples));
        let median = median(samples);
        println!(
            "{name:<24} {:>12.2} {:>12.2} {rows:>9} {:>14} {:>12}",
            median.as_secs_f64() * 1e3,
            min.as_secs_f64() * 1e3,
            scanned.bytes_read,
            scanned.rows_scanned
        );
        if let Some(json_median) = json_median {
            println!(
                "{:<24} {:>12.2}",
                format!("  {name} as JSON"),
                json_median.as_secs_f64() * 1e3
            );
        }
        let json_ms = json_median.map_or_else(String::new, |json_median| {
            format!(",\"json_median_ms\":{:.3}", json_median.as_secs_f64() * 1e3)
        });
        json.push(format!(
            "\"{name}\":{{\"median_ms\":{:.3},\"rows\":{rows},\"bytes_read\":{}{json_ms}}}",
            median.as_secs_f64() * 1e3,
            scanned.bytes_read
        ));
    }
    println!("{{{}}}", json.join(","));
    drop(sql);
    engine.close_without_sealing();
    Ok(())
}
