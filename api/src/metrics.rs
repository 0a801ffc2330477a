//! `GET /metrics`: Prometheus text exposition of ingest, queries, the engine's seals and
//! expiry, storage per tier, and memory.
//!
//! Invariants: counters only grow; every ingest request and every SQL request is counted
//! once, under the HTTP status it was answered with (gRPC codes are mapped to the HTTP status
//! of the same meaning by `EdgeError`); histograms are cumulative (`le` buckets, `_sum`,
//! `_count`), as Prometheus expects.

use crate::otlp::Signal;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::sync::Mutex;

/// Upper bounds of the latency histograms' buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A latency histogram with [`BUCKETS`].
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// The server's own counters (the engine keeps its own; see [`Metrics::render`]).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Ingest requests by (protocol, HTTP status).
    ingest_requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    ingest_spans: AtomicU64,
    ingest_logs: AtomicU64,
    ingest_bytes: AtomicU64,
    commit_latency: Histogram,
    /// SQL requests by HTTP status.
    queries: Mutex<BTreeMap<u16, u64>>,
    query_latency: Histogram,
    /// Requests refused before any handler (Host, Origin, token, scope) by (listener, status).
    refusals: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// The lake shipper's progress (none rendered without `[lake]`).
    lake: LakeMetrics,
}

/// What the lake shipper reports ([`Metrics::lake_pass`]).
#[derive(Debug, Default)]
struct LakeMetrics {
    enabled: std::sync::atomic::AtomicBool,
    shipped_chain_entry: AtomicU64,
    entries: AtomicU64,
    bytes: AtomicU64,
    failures: AtomicU64,
    last_success_unix_seconds: AtomicU64,
}

/// Adds one to `key`'s count.
fn bump<K: Ord>(counts: &Mutex<BTreeMap<K, u64>>, key: K) {
    *counts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(key)
        .or_default() += 1;
}

/// A counter family: one `name{labels} count` line per key of `counts`.
fn family<K>(
    out: &mut String,
    name: &str,
    help: &str,
    counts: &Mutex<BTreeMap<K, u64>>,
    labels: impl Fn(&K) -> String,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (key, count) in counts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
    {
        let _ = writeln!(out, "{name}{{{}}} {count}", labels(key));
    }
}

impl Metrics {
    /// One lake shipping pass: `Ok((chain entry now shipped, entries, bytes))`, or a failure.
    pub fn lake_pass(&self, outcome: Result<(u64, u64, u64), ()>) {
        let lake = &self.lake;
        lake.enabled.store(true, Ordering::Relaxed);
        match outcome {
            Ok((chain_entry, entries, bytes)) => {
                lake.shipped_chain_entry
                    .store(chain_entry, Ordering::Relaxed);
                lake.entries.fetch_add(entries, Ordering::Relaxed);
                lake.bytes.fetch_add(bytes, Ordering::Relaxed);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |elapsed| elapsed.as_secs());
                lake.last_success_unix_seconds.store(now, Ordering::Relaxed);
            }
            Err(()) => {
                lake.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// One ingest request over `protocol` (`grpc`, `http`), answered with `status`.
    pub fn ingest_request(&self, protocol: &'static str, status: u16) {
        bump(&self.ingest_requests, (protocol, status));
    }

    /// One request refused on `listener` (`http`, `grpc`) before reaching its handler, with
    /// `status` (401, 403).
    pub fn refused(&self, listener: &'static str, status: u16) {
        bump(&self.refusals, (listener, status));
    }

    /// One stored export: its spans or log records, its request bytes, and how long the durable
    /// write took.
    pub(crate) fn stored(&self, signal: Signal, rows: usize, bytes: usize, commit: Duration) {
        let counter = match signal {
            Signal::Traces => &self.ingest_spans,
            Signal::Logs => &self.ingest_logs,
        };
        counter.fetch_add(rows as u64, Ordering::Relaxed);
        self.ingest_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.commit_latency.observe(commit);
    }

    /// One SQL request answered with `status` after `elapsed`.
    pub fn query(&self, status: u16, elapsed: Duration) {
        bump(&self.queries, status);
        self.query_latency.observe(elapsed);
    }

    /// The exposition text: these counters, plus `engine`'s.
    pub fn render(&self, engine: &engine::Engine) -> String {
        let mut out = String::new();
        family(
            &mut out,
            "sightline_ingest_requests_total",
            "OTLP export requests by protocol and HTTP status.",
            &self.ingest_requests,
            |(protocol, status)| format!("protocol=\"{protocol}\",status=\"{status}\""),
        );
        family(
            &mut out,
            "sightline_auth_refusals_total",
            "Requests refused before their handler (Host, Origin, token, scope) by listener kind and HTTP status.",
            &self.refusals,
            |(listener, status)| format!("listener=\"{listener}\",status=\"{status}\""),
        );
        counter(
            &mut out,
            "sightline_ingest_spans_total",
            "Spans stored.",
            self.ingest_spans.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "sightline_ingest_log_records_total",
            "OTLP log records stored.",
            self.ingest_logs.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "sightline_ingest_bytes_total",
            "Request bytes of stored exports (as received).",
            self.ingest_bytes.load(Ordering::Relaxed),
        );
        self.commit_latency.render(
            &mut out,
            "sightline_commit_seconds",
            "Time of the durable write of one export (WAL append and fsync).",
        );
        family(
            &mut out,
            "sightline_queries_total",
            "SQL requests by HTTP status.",
            &self.queries,
            |status| format!("status=\"{status}\""),
        );
        self.query_latency.render(
            &mut out,
            "sightline_query_seconds",
            "Time of one SQL request, errors included.",
        );
        let lake = &self.lake;
        if lake.enabled.load(Ordering::Relaxed) {
            gauge(
                &mut out,
                "sightline_lake_shipped_chain_entry",
                "The store's segment chain is in the lake up to this entry.",
                lake.shipped_chain_entry.load(Ordering::Relaxed),
            );
            gauge(
                &mut out,
                "sightline_lake_last_success_timestamp_seconds",
                "When a lake shipping pass last succeeded (unix seconds; 0: not yet).",
                lake.last_success_unix_seconds.load(Ordering::Relaxed),
            );
            counter(
                &mut out,
                "sightline_lake_entries_total",
                "Chain entries committed to the lake.",
                lake.entries.load(Ordering::Relaxed),
            );
            counter(
                &mut out,
                "sightline_lake_bytes_total",
                "Bytes put into the lake.",
                lake.bytes.load(Ordering::Relaxed),
            );
            counter(
                &mut out,
                "sightline_lake_pass_failures_total",
                "Lake shipping passes (or starts) that failed; each is retried at the next interval.",
                lake.failures.load(Ordering::Relaxed),
            );
        }

        let activity = engine.activity();
        counter(
            &mut out,
            "sightline_seals_total",
            "Seals run.",
            activity.seals,
        );
        counter(
            &mut out,
            "sightline_seal_failures_total",
            "Seals that failed.",
            activity.seal_failures,
        );
        seconds(
            &mut out,
            "sightline_seal_seconds_total",
            "Time spent sealing.",
            activity.seal_time,
        );
        counter(
            &mut out,
            "sightline_expiry_passes_total",
            "Expiry passes applied.",
            activity.expiry_passes,
        );
        counter(
            &mut out,
            "sightline_expiry_failures_total",
            "Expiry passes that failed.",
            activity.expiry_failures,
        );
        seconds(
            &mut out,
            "sightline_expiry_seconds_total",
            "Time spent in expiry passes.",
            activity.expiry_time,
        );
        counter(
            &mut out,
            "sightline_expired_segments_total",
            "Segments deleted by expiry.",
            activity.expired_segments,
        );
        counter(
            &mut out,
            "sightline_store_reopens_total",
            "Times the store was reopened in place after a storage fault (failed attempts included).",
            activity.reopens,
        );
        counter(
            &mut out,
            "sightline_store_reopen_failures_total",
            "Reopens after a storage fault that failed (retried).",
            activity.reopen_failures,
        );

        let mut tiers: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        for segment in engine.segments() {
            let entry = tiers.entry(segment.tier.clone()).or_default();
            entry.0 += 1;
            entry.1 += segment.bytes;
            entry.2 += segment.rows;
        }
        for (name, help, pick) in [
            ("sightline_segments", "Sealed segments per tier.", 0),
            (
                "sightline_segment_bytes",
                "Bytes of sealed segment files per tier.",
                1,
            ),
            (
                "sightline_segment_rows",
                "Rows in sealed segments per tier.",
                2,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (tier, values) in &tiers {
                let value = [values.0, values.1, values.2][pick];
                let _ = writeln!(out, "{name}{{tier=\"{tier}\"}} {value}");
            }
        }
        let stats = engine.stats();
        gauge(
            &mut out,
            "sightline_memtable_bytes",
            "Bytes of unsealed rows in memory.",
            stats.memtable_bytes as u64,
        );
        gauge(
            &mut out,
            "sightline_memtable_rows",
            "Unsealed rows in memory.",
            stats.memtable_rows as u64,
        );
        if let Some(rss) = resident_bytes() {
            gauge(
                &mut out,
                "sightline_resident_memory_bytes",
                "Resident memory of the server process.",
                rss,
            );
        }
        out
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn seconds(out: &mut String, name: &str, help: &str, value: Duration) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
        value.as_secs_f64()
    );
}

/// Resident set size from `/proc/self/statm` (Linux; `None` elsewhere).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let histogram = Histogram::default();
        for millis in [1, 3, 3, 40, 20_000] {
            histogram.observe(Duration::from_millis(millis));
        }
        let mut out = String::new();
        histogram.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.005\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.05\"} 4\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"10\"} 4\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 5\n"), "{out}");
        assert!(out.contains("x_count 5\n"), "{out}");
    }
}
