//! The replay loop: N tasks, one connection each, pulling request numbers from a shared counter.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::grpc::GrpcTransport;
use crate::http::HttpTransport;
use crate::payloads::Payloads;

/// How a request (or one attempt of it) ended, for the failure counters of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum FailureKind {
    /// HTTP 429 / gRPC RESOURCE_EXHAUSTED.
    Status429,
    /// HTTP 503 / gRPC UNAVAILABLE.
    Status503,
    Other,
}

impl FailureKind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            FailureKind::Status429 => "429",
            FailureKind::Status503 => "503",
            FailureKind::Other => "other",
        }
    }
}

/// Result of one attempt.
#[derive(Debug)]
pub(crate) enum Attempt {
    Accepted {
        rejected_spans: u64,
    },
    /// Retryable refusal (backpressure).
    Throttled {
        kind: FailureKind,
        retry_after: Option<Duration>,
        message: String,
    },
    /// Not retried.
    Failed {
        kind: FailureKind,
        label: String,
        message: String,
    },
}

#[derive(Debug)]
pub(crate) enum Transport {
    Grpc(GrpcTransport),
    Http(HttpTransport),
}

impl Transport {
    async fn send(&mut self, body: bytes::Bytes) -> Attempt {
        match self {
            Transport::Grpc(transport) => transport.send(body).await,
            Transport::Http(transport) => transport.send(body).await,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct SendOptions {
    /// Loop over the requests until this much time has passed; `None` sends each request once.
    pub(crate) duration: Option<Duration>,
    /// Retries per request after a throttled attempt.
    pub(crate) max_retries: u32,
}

/// Totals of a run, merged over all tasks.
#[derive(Debug)]
pub(crate) struct SendStats {
    /// Logical requests finished (accepted or given up on).
    pub(crate) requests: u64,
    pub(crate) requests_accepted: u64,
    pub(crate) attempts: u64,
    pub(crate) spans_sent: u64,
    pub(crate) spans_accepted: u64,
    /// Spans the server reported as rejected in a partial success.
    pub(crate) spans_rejected: u64,
    pub(crate) bytes_sent: u64,
    /// Throttled attempts that were retried, by kind.
    pub(crate) retries: BTreeMap<FailureKind, u64>,
    /// Requests given up on, by kind.
    pub(crate) failures: BTreeMap<FailureKind, u64>,
    /// Requests given up on, by a finer label ("http 400", "grpc connection", ...).
    pub(crate) failure_labels: BTreeMap<String, u64>,
    pub(crate) first_error: Option<String>,
    /// Latency of every attempt, in microseconds.
    pub(crate) latency_us: Histogram<u64>,
    pub(crate) elapsed: Duration,
}

impl SendStats {
    fn new() -> Self {
        Self {
            requests: 0,
            requests_accepted: 0,
            attempts: 0,
            spans_sent: 0,
            spans_accepted: 0,
            spans_rejected: 0,
            bytes_sent: 0,
            retries: BTreeMap::new(),
            failures: BTreeMap::new(),
            failure_labels: BTreeMap::new(),
            first_error: None,
            // 1 µs to 10 min at 3 significant digits; `saturating_record` clamps outliers.
            latency_us: Histogram::new_with_bounds(1, 600_000_000, 3)
                .expect("constant histogram bounds are valid"),
            elapsed: Duration::ZERO,
        }
    }

    fn merge(&mut self, other: SendStats) {
        self.requests += other.requests;
        self.requests_accepted += other.requests_accepted;
        self.attempts += other.attempts;
        self.spans_sent += other.spans_sent;
        self.spans_accepted += other.spans_accepted;
        self.spans_rejected += other.spans_rejected;
        self.bytes_sent += other.bytes_sent;
        for (kind, count) in other.retries {
            *self.retries.entry(kind).or_default() += count;
        }
        for (kind, count) in other.failures {
            *self.failures.entry(kind).or_default() += count;
        }
        for (label, count) in other.failure_labels {
            *self.failure_labels.entry(label).or_default() += count;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
    }

    fn fail(&mut self, kind: FailureKind, label: &str, message: &str) {
        *self.failures.entry(kind).or_default() += 1;
        *self.failure_labels.entry(label.to_owned()).or_default() += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{label}: {message}"));
        }
    }
}

/// Replays `payloads` over `transports` (one task per transport) and returns the merged totals.
pub(crate) async fn run(
    transports: Vec<Transport>,
    payloads: Arc<Payloads>,
    options: SendOptions,
) -> SendStats {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = options.duration.map(|duration| started + duration);
    let tasks: Vec<_> = transports
        .into_iter()
        .enumerate()
        .map(|(task, transport)| {
            let payloads = Arc::clone(&payloads);
            let next = Arc::clone(&next);
            tokio::spawn(send_loop(
                task, transport, payloads, next, deadline, options,
            ))
        })
        .collect();
    let mut total = SendStats::new();
    for task in tasks {
        match task.await {
            Ok(stats) => total.merge(stats),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => total.fail(FailureKind::Other, "task", &error.to_string()),
        }
    }
    total.elapsed = started.elapsed();
    total
}

async fn send_loop(
    task: usize,
    mut transport: Transport,
    payloads: Arc<Payloads>,
    next: Arc<AtomicUsize>,
    deadline: Option<Instant>,
    options: SendOptions,
) -> SendStats {
    let mut stats = SendStats::new();
    let mut jitter = Jitter::new(task as u64);
    let count = payloads.bodies.len();
    if count == 0 {
        return stats;
    }
    loop {
        let ticket = next.fetch_add(1, Ordering::Relaxed);
        let index = match deadline {
            None if ticket >= count => break,
            None => ticket,
            Some(deadline) if Instant::now() >= deadline => break,
            Some(_) => ticket % count,
        };
        let body = &payloads.bodies[index];
        let spans = payloads.spans[index] as u64;
        stats.requests += 1;
        stats.spans_sent += spans;
        let mut retries = 0;
        loop {
            let attempt_started = Instant::now();
            let attempt = transport.send(body.clone()).await;
            let latency = attempt_started.elapsed().as_micros();
            stats
                .latency_us
                .saturating_record(u64::try_from(latency).unwrap_or(u64::MAX));
            stats.attempts += 1;
            stats.bytes_sent += body.len() as u64;
            match attempt {
                Attempt::Accepted { rejected_spans } => {
                    let rejected = rejected_spans.min(spans);
                    stats.requests_accepted += 1;
                    stats.spans_accepted += spans - rejected;
                    stats.spans_rejected += rejected;
                    break;
                }
                Attempt::Throttled {
                    kind,
                    retry_after,
                    message,
                } => {
                    if retries >= options.max_retries {
                        stats.fail(
                            kind,
                            &format!("{} after {retries} retries", kind.label()),
                            &message,
                        );
                        break;
                    }
                    retries += 1;
                    *stats.retries.entry(kind).or_default() += 1;
                    tokio::time::sleep(backoff(retries, retry_after, &mut jitter)).await;
                }
                Attempt::Failed {
                    kind,
                    label,
                    message,
                } => {
                    stats.fail(kind, &label, &message);
                    break;
                }
            }
        }
    }
    stats
}

/// Exponential backoff from 10 ms, capped at 1 s, with ±50% jitter so throttled tasks do not
/// retry in lockstep; a server's Retry-After (capped at 5 s) wins.
fn backoff(retry: u32, retry_after: Option<Duration>, jitter: &mut Jitter) -> Duration {
    if let Some(retry_after) = retry_after {
        return retry_after.min(Duration::from_secs(5));
    }
    let base_ms = (10u64 << retry.saturating_sub(1).min(7)).min(1_000);
    let factor = 0.5 + jitter.unit();
    Duration::from_micros((base_ms as f64 * 1_000.0 * factor) as u64)
}

/// xorshift64*, just for backoff jitter.
#[derive(Debug)]
struct Jitter(u64);

impl Jitter {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut jitter = Jitter::new(1);
        for retry in 1..=20 {
            let delay = backoff(retry, None, &mut jitter);
            let base = Duration::from_millis((10u64 << (retry - 1).min(7)).min(1_000));
            assert!(
                delay >= base / 2 && delay <= base * 3 / 2,
                "{retry}: {delay:?}"
            );
        }
        assert_eq!(
            backoff(1, Some(Duration::from_secs(60)), &mut jitter),
            Duration::from_secs(5)
        );
    }
}
