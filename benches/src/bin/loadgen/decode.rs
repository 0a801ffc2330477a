//! The bare protobuf decode loop: the ceiling an OTLP receiver cannot beat on this machine.

use std::hint::black_box;
use std::io::Read as _;
use std::thread;
use std::time::{Duration, Instant};

use flate2::read::GzDecoder;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

use crate::payloads::Payloads;

#[derive(Debug, Clone, Copy)]
pub(crate) struct DecodeRun {
    pub(crate) threads: usize,
    /// Full passes over the request set (summed over threads).
    pub(crate) passes: u64,
    pub(crate) spans: u64,
    pub(crate) bytes: u64,
    pub(crate) elapsed: Duration,
}

impl DecodeRun {
    pub(crate) fn spans_per_second(&self) -> f64 {
        self.spans as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub(crate) fn megabytes_per_second(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Decodes every body into an `ExportTraceServiceRequest` (gunzipping first when the bodies are
/// gzipped) on `threads` threads, each thread taking every `threads`-th body, repeating full
/// passes until `min_duration` has elapsed. Spans are counted from the decoded messages, which
/// also checks the bytes decode to what was generated.
pub(crate) fn run(
    payloads: &Payloads,
    threads: usize,
    min_duration: Duration,
) -> anyhow::Result<DecodeRun> {
    let threads = threads.max(1);
    let started = Instant::now();
    let deadline = started + min_duration;
    let results: Vec<anyhow::Result<(u64, u64, u64)>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|part| scope.spawn(move || decode_share(payloads, part, threads, deadline)))
            .collect();
        handles
            .into_iter()
            .map(|handle| match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    let elapsed = started.elapsed();
    let mut run = DecodeRun {
        threads,
        passes: 0,
        spans: 0,
        bytes: 0,
        elapsed,
    };
    for result in results {
        let (passes, spans, bytes) = result?;
        run.passes += passes;
        run.spans += spans;
        run.bytes += bytes;
    }
    Ok(run)
}

/// Returns (passes, spans, wire bytes) decoded by thread `part` of `threads`.
fn decode_share(
    payloads: &Payloads,
    part: usize,
    threads: usize,
    deadline: Instant,
) -> anyhow::Result<(u64, u64, u64)> {
    let mut scratch = Vec::new();
    let (mut passes, mut spans, mut bytes) = (0u64, 0u64, 0u64);
    loop {
        for index in (part..payloads.bodies.len()).step_by(threads) {
            let body = &payloads.bodies[index];
            let request = if payloads.gzip {
                scratch.clear();
                GzDecoder::new(&body[..]).read_to_end(&mut scratch)?;
                ExportTraceServiceRequest::decode(&scratch[..])?
            } else {
                ExportTraceServiceRequest::decode(&body[..])?
            };
            let decoded = testdata::span_count(black_box(&request));
            anyhow::ensure!(
                decoded == payloads.spans[index],
                "request {index} decoded to {decoded} spans, expected {}",
                payloads.spans[index]
            );
            spans += decoded as u64;
            bytes += body.len() as u64;
            drop(black_box(request));
        }
        passes += 1;
        if Instant::now() >= deadline {
            return Ok((passes, spans, bytes));
        }
    }
}
