//! [`Activity`]: counters of the engine's background and maintenance work, and whether writes
//! and seals are failing now, for monitoring and health checks.
//!
//! Invariant: counters only grow (monotonic, as Prometheus counters expect); each seal and
//! each applied expiry pass is counted exactly once, successful or not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Live counters, shared by the engine's threads.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    seals: AtomicU64,
    seal_failures: AtomicU64,
    seal_nanos: AtomicU64,
    expiry_passes: AtomicU64,
    expiry_failures: AtomicU64,
    expiry_nanos: AtomicU64,
    expired_segments: AtomicU64,
    /// Why the last write group failed, until one succeeds.
    write_failure: parking_lot::Mutex<Option<String>>,
    /// Why the last seal failed, until one succeeds.
    seal_failure: parking_lot::Mutex<Option<String>>,
    reopens: AtomicU64,
    reopen_failures: AtomicU64,
    /// When and why the last reopen after a storage fault failed, until one succeeds.
    reopen_failure: parking_lot::Mutex<Option<(std::time::Instant, String)>>,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ActivitySnapshot {
    /// Seals run (background and explicit), failed ones included.
    pub seals: u64,
    /// Seals that failed.
    pub seal_failures: u64,
    /// Time spent sealing, in total.
    pub seal_time: Duration,
    /// Expiry passes applied (not dry runs), failed ones included.
    pub expiry_passes: u64,
    /// Expiry passes that failed.
    pub expiry_failures: u64,
    /// Time spent in expiry passes, in total.
    pub expiry_time: Duration,
    /// Segments deleted by expiry.
    pub expired_segments: u64,
    /// Times the store was reopened after a storage fault (failed attempts included).
    pub reopens: u64,
    /// Reopens that failed.
    pub reopen_failures: u64,
}

/// `error` and its sources, joined by ": " (an I/O error's text, such as "No space left on
/// device", is in a source).
pub fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !chain.ends_with(&text) {
            chain.push_str(": ");
            chain.push_str(&text);
        }
        source = cause.source();
    }
    chain
}

fn nanos(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

impl Activity {
    pub(crate) fn seal(&self, elapsed: Duration, failure: Option<String>) {
        self.seals.fetch_add(1, Ordering::Relaxed);
        if failure.is_some() {
            self.seal_failures.fetch_add(1, Ordering::Relaxed);
        }
        *self.seal_failure.lock() = failure;
        self.seal_nanos.fetch_add(nanos(elapsed), Ordering::Relaxed);
    }

    /// Records how the last write group ended (`None`: durable).
    pub(crate) fn write(&self, failure: Option<String>) {
        let mut current = self.write_failure.lock();
        if current.is_some() || failure.is_some() {
            *current = failure;
        }
    }

    /// Whether the last write group failed.
    pub(crate) fn writes_failing(&self) -> bool {
        self.write_failure.lock().is_some()
    }

    /// Records how a reopen after a storage fault ended (`None`: reopened).
    pub(crate) fn reopen(&self, failure: Option<String>) {
        self.reopens.fetch_add(1, Ordering::Relaxed);
        if failure.is_some() {
            self.reopen_failures.fetch_add(1, Ordering::Relaxed);
        }
        *self.reopen_failure.lock() = failure.map(|why| (std::time::Instant::now(), why));
    }

    /// Why the last reopen failed, if it failed less than `within` ago (reopens are paced).
    pub(crate) fn recent_reopen_failure(&self, within: Duration) -> Option<String> {
        self.reopen_failure
            .lock()
            .as_ref()
            .filter(|(when, _)| when.elapsed() < within)
            .map(|(_, why)| why.clone())
    }

    /// Why writes, seals or reopening the store are failing now, if they are.
    pub(crate) fn trouble(&self) -> Option<String> {
        let reasons: Vec<String> = [
            ("writes are failing", self.write_failure.lock().clone()),
            ("sealing is failing", self.seal_failure.lock().clone()),
            (
                "reopening the store after a storage fault is failing",
                self.reopen_failure
                    .lock()
                    .as_ref()
                    .map(|(_, why)| why.clone()),
            ),
        ]
        .into_iter()
        .filter_map(|(what, why)| why.map(|why| format!("{what}: {why}")))
        .collect();
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    pub(crate) fn expiry(&self, elapsed: Duration, expired_segments: Option<usize>) {
        self.expiry_passes.fetch_add(1, Ordering::Relaxed);
        match expired_segments {
            Some(count) => {
                self.expired_segments
                    .fetch_add(count as u64, Ordering::Relaxed);
            }
            None => {
                self.expiry_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.expiry_nanos
            .fetch_add(nanos(elapsed), Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> ActivitySnapshot {
        ActivitySnapshot {
            seals: self.seals.load(Ordering::Relaxed),
            seal_failures: self.seal_failures.load(Ordering::Relaxed),
            seal_time: Duration::from_nanos(self.seal_nanos.load(Ordering::Relaxed)),
            expiry_passes: self.expiry_passes.load(Ordering::Relaxed),
            expiry_failures: self.expiry_failures.load(Ordering::Relaxed),
            expiry_time: Duration::from_nanos(self.expiry_nanos.load(Ordering::Relaxed)),
            expired_segments: self.expired_segments.load(Ordering::Relaxed),
            reopens: self.reopens.load(Ordering::Relaxed),
            reopen_failures: self.reopen_failures.load(Ordering::Relaxed),
        }
    }
}
