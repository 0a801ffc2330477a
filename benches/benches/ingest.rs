//! Ingest CPU cost per stage, on seeded agent traces (~25 spans per trace, 4 traces a request):
//! protobuf decode (the ceiling), OTLP -> Arrow rows, and decode + rows together.
//!
//! `cargo bench -p benches --bench ingest`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;

fn requests() -> (Vec<Vec<u8>>, u64) {
    let config = testdata::AgentTraceConfig {
        traces: 400,
        ..testdata::AgentTraceConfig::default()
    };
    let requests = testdata::export_requests(&config, 4);
    let spans = requests.iter().map(testdata::span_count).sum::<usize>() as u64;
    (
        requests
            .iter()
            .map(|request| request.encode_to_vec())
            .collect(),
        spans,
    )
}

fn ingest(c: &mut Criterion) {
    let (bodies, spans) = requests();
    let decoded: Vec<_> = bodies
        .iter()
        .map(|body| ingest::decode_traces_protobuf(body).expect("valid request"))
        .collect();
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(spans));
    group.bench_function("decode_protobuf/10k_spans", |b| {
        b.iter(|| {
            for body in &bodies {
                std::hint::black_box(ingest::decode_traces_protobuf(body).expect("valid request"));
            }
        })
    });
    group.bench_function("to_span_batch/10k_spans", |b| {
        b.iter(|| {
            for request in &decoded {
                std::hint::black_box(ingest::to_span_batch(request).expect("valid request"));
            }
        })
    });
    group.bench_function("decode_and_map/10k_spans", |b| {
        b.iter(|| {
            for body in &bodies {
                let request = ingest::decode_traces_protobuf(body).expect("valid request");
                std::hint::black_box(ingest::to_span_batch(&request).expect("valid request"));
            }
        })
    });
    group.finish();
}

fn engine_write(c: &mut Criterion) {
    let (bodies, spans) = requests();
    let batches: Vec<_> = bodies
        .iter()
        .map(|body| {
            let request = ingest::decode_traces_protobuf(body).expect("valid request");
            ingest::to_span_batch(&request)
                .expect("valid request")
                .batch
        })
        .collect();
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(spans));
    group.sample_size(10);
    group.bench_function("write_then_seal/10k_spans", |b| {
        b.iter_with_setup(
            || tempfile::tempdir().expect("temp dir"),
            |dir| {
                let options = engine::Options::default().with_background_sealing(false);
                let engine = engine::Engine::open(dir.path(), options).expect("open");
                // One writer thread: every write is its own fsync'd commit (no grouping).
                for batch in &batches {
                    engine.write(batch.clone()).expect("write");
                }
                engine.seal().expect("seal");
                engine.close().expect("close");
            },
        )
    });
    group.finish();
}

criterion_group!(benches, ingest, engine_write);
criterion_main!(benches);
