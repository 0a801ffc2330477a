//! [`FaultInjector`]: makes storage operations fail on purpose, to test that failures lose
//! nothing acknowledged and leave nothing half-visible. Off unless a test passes one in
//! [`crate::Options::faults`]; the server never does.
//!
//! It fails the database file's reads, writes, length changes and fsyncs, and the WAL's appends
//! and fsyncs, each with the configured probability, from a seeded generator (a failing run
//! repeats with its seed, as far as thread scheduling allows).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// What is about to be done to storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageOp {
    /// A read of the database file.
    Read,
    /// A write to the database file or a WAL file.
    Write,
    /// An fsync of the database file or a WAL file.
    Sync,
    /// A length change of the database file or a WAL file.
    SetLen,
}

/// Fails storage operations at random while armed.
#[derive(Debug)]
pub struct FaultInjector {
    /// Probability of failing one operation, in millionths (0: disarmed).
    parts_per_million: AtomicU32,
    state: AtomicU64,
    injected: AtomicU64,
}

impl FaultInjector {
    /// A disarmed injector whose random choices follow `seed`.
    pub fn new(seed: u64) -> FaultInjector {
        FaultInjector {
            parts_per_million: AtomicU32::new(0),
            state: AtomicU64::new(seed | 1),
            injected: AtomicU64::new(0),
        }
    }

    /// Fails each operation with probability `parts_per_million` / 1,000,000 (0 disarms).
    pub fn arm(&self, parts_per_million: u32) {
        self.parts_per_million
            .store(parts_per_million.min(1_000_000), Ordering::SeqCst);
    }

    /// Stops failing operations.
    pub fn disarm(&self) {
        self.arm(0);
    }

    /// Failures injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// An error for `op` if this one is chosen to fail.
    pub(crate) fn check(&self, op: StorageOp) -> std::io::Result<()> {
        let ppm = self.parts_per_million.load(Ordering::Relaxed);
        if ppm == 0 {
            return Ok(());
        }
        // xorshift64*, advanced atomically.
        let next = self
            .state
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |mut x| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                Some(x)
            })
            .unwrap_or(1);
        let draw = next.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32;
        if draw % 1_000_000 >= u64::from(ppm) {
            return Ok(());
        }
        self.injected.fetch_add(1, Ordering::SeqCst);
        Err(std::io::Error::other(format!("injected {op:?} fault")))
    }
}

/// `injector`'s verdict on `op`, or success without one.
pub(crate) fn check(
    injector: Option<&std::sync::Arc<FaultInjector>>,
    op: StorageOp,
) -> std::io::Result<()> {
    injector.map_or(Ok(()), |injector| injector.check(op))
}
