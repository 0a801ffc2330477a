//! `jaegerbench`: times the Jaeger v2 remote-storage API of a running server, through the same
//! tonic client Jaeger's `grpc` storage backend would use (protos of `api::jaeger::proto`).
//!
//! Fill a store first (e.g. with `sqlbench`, which writes seeded agent traces), serve it, then:
//!
//! ```sh
//! cargo run --release -p benches --bin sqlbench -- --data /tmp/sl-1m --spans 1000000 --runs 1
//! target/release/sightline serve --data /tmp/sl-1m &
//! cargo run --release -p benches --bin jaegerbench -- --addr http://127.0.0.1:17271
//! ```
//!
//! Every request runs `--runs` times; the median and the fastest are reported, with the traces
//! and spans one answer held.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use api::jaeger::{proto, timestamp};
use clap::Parser;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use proto::capabilities_client::CapabilitiesClient;
use proto::dependency_reader_client::DependencyReaderClient;
use proto::trace_reader_client::TraceReaderClient;
use tonic::transport::Channel;

/// Time the Jaeger remote-storage API of a running sightline server.
#[derive(Debug, Parser)]
struct Args {
    /// The server's `--jaeger-addr`.
    #[arg(long, default_value = "http://127.0.0.1:17271")]
    addr: String,
    /// Runs per request (the median is reported).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// `search_depth` of the searches (Jaeger UI's default limit is 20).
    #[arg(long, default_value_t = 20)]
    depth: i32,
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn nanos(timestamp: Option<&prost_types::Timestamp>) -> i64 {
    timestamp.map_or(0, |t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
}

/// What one answer held: traces and spans (messages for streams).
#[derive(Debug, Default, Clone, Copy)]
struct Answer {
    traces: usize,
    spans: usize,
    messages: usize,
}

async fn collect(mut stream: tonic::Streaming<TracesData>) -> anyhow::Result<Answer> {
    let mut answer = Answer::default();
    let mut last_trace: Option<Vec<u8>> = None;
    while let Some(chunk) = stream.message().await? {
        answer.messages += 1;
        for resource in &chunk.resource_spans {
            for scope in &resource.scope_spans {
                for span in &scope.spans {
                    answer.spans += 1;
                    if last_trace.as_deref() != Some(span.trace_id.as_slice()) {
                        answer.traces += 1;
                        last_trace = Some(span.trace_id.clone());
                    }
                }
            }
        }
    }
    Ok(answer)
}

#[derive(Debug, Clone)]
enum Call {
    Services,
    Operations(String),
    FindTraces(proto::TraceQueryParameters),
    FindTraceIds(proto::TraceQueryParameters),
    Summaries(proto::TraceQueryParameters),
    GetTraces(Vec<Vec<u8>>),
    Dependencies,
}

async fn run(
    reader: &mut TraceReaderClient<Channel>,
    dependencies: &mut DependencyReaderClient<Channel>,
    call: &Call,
) -> anyhow::Result<Answer> {
    Ok(match call {
        Call::Services => {
            let services = reader
                .get_services(proto::GetServicesRequest {})
                .await?
                .into_inner()
                .services;
            Answer {
                traces: services.len(),
                ..Answer::default()
            }
        }
        Call::Operations(service) => {
            let operations = reader
                .get_operations(proto::GetOperationsRequest {
                    service: service.clone(),
                    span_kind: String::new(),
                })
                .await?
                .into_inner()
                .operations;
            Answer {
                traces: operations.len(),
                ..Answer::default()
            }
        }
        Call::FindTraces(query) => {
            collect(
                reader
                    .find_traces(proto::FindTracesRequest {
                        query: Some(query.clone()),
                    })
                    .await?
                    .into_inner(),
            )
            .await?
        }
        Call::FindTraceIds(query) => {
            let ids = reader
                .find_trace_i_ds(proto::FindTraceIDsRequest {
                    query: Some(query.clone()),
                })
                .await?
                .into_inner()
                .trace_ids;
            Answer {
                traces: ids.len(),
                ..Answer::default()
            }
        }
        Call::Summaries(query) => {
            let mut stream = reader
                .find_trace_summaries(proto::FindTraceSummariesRequest {
                    query: Some(query.clone()),
                })
                .await?
                .into_inner();
            let mut answer = Answer::default();
            while let Some(message) = stream.message().await? {
                answer.messages += 1;
                answer.traces += message.summaries.len();
                answer.spans += message
                    .summaries
                    .iter()
                    .map(|summary| usize::try_from(summary.span_count).unwrap_or(0))
                    .sum::<usize>();
            }
            answer
        }
        Call::GetTraces(ids) => {
            collect(
                reader
                    .get_traces(proto::GetTracesRequest {
                        query: ids
                            .iter()
                            .map(|id| proto::GetTraceParams {
                                trace_id: id.clone(),
                                start_time: None,
                                end_time: None,
                            })
                            .collect(),
                    })
                    .await?
                    .into_inner(),
            )
            .await?
        }
        Call::Dependencies => {
            let found = dependencies
                .get_dependencies(proto::GetDependenciesRequest {
                    start_time: None,
                    end_time: None,
                })
                .await?
                .into_inner()
                .dependencies;
            Answer {
                traces: found.len(),
                ..Answer::default()
            }
        }
    })
}

#[allow(clippy::print_stdout)]
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let channel = Channel::from_shared(args.addr.clone())?
        .connect()
        .await
        .with_context(|| format!("connect to {}", args.addr))?;
    let mut reader = TraceReaderClient::new(channel.clone()).max_decoding_message_size(64 << 20);
    let mut dependencies = DependencyReaderClient::new(channel.clone());
    let capabilities = CapabilitiesClient::new(channel)
        .get_capabilities(proto::GetCapabilitiesRequest {})
        .await?
        .into_inner();
    println!("capabilities: {capabilities:?}");

    // Pick a service, its newest traces and the ten minutes before its newest trace.
    let services = reader
        .get_services(proto::GetServicesRequest {})
        .await?
        .into_inner()
        .services;
    let service = services
        .first()
        .cloned()
        .context("the store has no services; fill it first (see the docs of this binary)")?;
    let newest = reader
        .find_trace_i_ds(proto::FindTraceIDsRequest {
            query: Some(proto::TraceQueryParameters {
                service_name: service.clone(),
                search_depth: 100,
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .trace_ids;
    let latest = newest
        .iter()
        .map(|found| nanos(found.start.as_ref()))
        .max()
        .context("no traces for the service")?;
    // Jaeger's UI searches a recent window; the seeded traces span one hour, so ten minutes is
    // a sixth of them.
    let five_minutes = 300_000_000_000;
    let ids: Vec<Vec<u8>> = newest.iter().map(|found| found.trace_id.clone()).collect();
    let string = |key: &str, value: &str| proto::KeyValue {
        key: key.to_owned(),
        value: Some(proto::AnyValue {
            value: Some(proto::any_value::Value::StringValue(value.to_owned())),
        }),
    };
    let by_service = proto::TraceQueryParameters {
        service_name: service.clone(),
        search_depth: args.depth,
        ..Default::default()
    };
    let last_ten_minutes = proto::TraceQueryParameters {
        start_time_min: Some(timestamp(latest - 2 * five_minutes)),
        start_time_max: Some(timestamp(latest)),
        ..by_service.clone()
    };
    let tag_last_ten_minutes = proto::TraceQueryParameters {
        attributes: vec![string("gen_ai.operation.name", "execute_tool")],
        ..last_ten_minutes.clone()
    };
    let no_service_tag_last_ten_minutes = proto::TraceQueryParameters {
        service_name: String::new(),
        ..tag_last_ten_minutes.clone()
    };
    let no_service_tag_all_time = proto::TraceQueryParameters {
        service_name: String::new(),
        attributes: vec![string("gen_ai.operation.name", "execute_tool")],
        search_depth: args.depth,
        ..Default::default()
    };
    let calls = [
        ("GetServices", Call::Services),
        ("GetOperations", Call::Operations(service.clone())),
        ("FindTraces service", Call::FindTraces(by_service.clone())),
        (
            "FindTraces service 10min",
            Call::FindTraces(last_ten_minutes.clone()),
        ),
        (
            "FindTraces service+tag 10min",
            Call::FindTraces(tag_last_ten_minutes),
        ),
        (
            "FindTraces tag 10min",
            Call::FindTraces(no_service_tag_last_ten_minutes),
        ),
        (
            "FindTraces tag all time",
            Call::FindTraces(no_service_tag_all_time),
        ),
        (
            "FindTraceIDs service",
            Call::FindTraceIds(by_service.clone()),
        ),
        ("FindTraceSummaries service", Call::Summaries(by_service)),
        ("GetTraces 1 trace", Call::GetTraces(ids[..1].to_vec())),
        (
            "GetTraces 20 traces",
            Call::GetTraces(ids[..ids.len().min(20)].to_vec()),
        ),
        ("GetDependencies", Call::Dependencies),
    ];
    println!(
        "{:<28} {:>10} {:>10} {:>8} {:>8} {:>9}",
        "request", "median ms", "min ms", "traces", "spans", "messages"
    );
    for (name, call) in &calls {
        let mut samples = Vec::new();
        let mut answer = Answer::default();
        for _ in 0..args.runs.max(1) {
            let started = Instant::now();
            answer = run(&mut reader, &mut dependencies, call)
                .await
                .with_context(|| format!("{name} failed"))?;
            samples.push(started.elapsed());
        }
        let min = samples.iter().min().copied().unwrap_or_default();
        println!(
            "{name:<28} {:>10.2} {:>10.2} {:>8} {:>8} {:>9}",
            median(samples).as_secs_f64() * 1e3,
            min.as_secs_f64() * 1e3,
            answer.traces,
            answer.spans,
            answer.messages
        );
    }
    Ok(())
}
