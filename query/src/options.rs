//! [`Options`]: per-query bounds and parallelism.

use std::path::PathBuf;
use std::time::Duration;

/// Settings of a [`SqlEngine`](crate::SqlEngine). Every bound applies to each query on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// Memory one query may reserve for sorts, aggregations and joins, in bytes. A query that
    /// needs more fails with `Error::ResourcesExhausted`, except one whose plan holds a hash
    /// join: with [`Options::spill_dir`] set, it runs once more with sort-merge joins, which
    /// spill there (and fails the same way if that run needs more still).
    pub memory_limit: usize,
    /// Directory for the spill files of joins that outgrow `memory_limit`; `None` (the
    /// default) spills nothing. Its stale files are removed when the
    /// [`SqlEngine`](crate::SqlEngine) starts, so it must belong to this engine alone.
    pub spill_dir: Option<PathBuf>,
    /// Bytes all running queries together may keep in [`Options::spill_dir`]
    /// (`Error::ResourcesExhausted` past it); 0 spills nothing.
    pub spill_limit: u64,
    /// Time one query may take, planning and execution together (`Error::Timeout`).
    pub timeout: Duration,
    /// Rows one result may hold (`Error::TooManyRows`).
    pub max_result_rows: usize,
    /// Bytes one result may hold in memory (`Error::TooLarge`), also the cap on the bytes of
    /// its response once formatted.
    pub max_result_bytes: usize,
    /// Partitions a scan is split into (and DataFusion's `target_partitions`).
    pub target_partitions: usize,
    /// Threads queries run on, apart from the caller's runtime.
    pub threads: usize,
    /// Queries that run at once; more wait for a slot within their timeout.
    pub max_concurrent: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            memory_limit: 1 << 30,
            spill_dir: None,
            spill_limit: 0,
            timeout: Duration::from_secs(60),
            max_result_rows: 1_000_000,
            max_result_bytes: 256 << 20,
            target_partitions: 2,
            threads: std::thread::available_parallelism().map_or(2, usize::from),
            max_concurrent: 4,
        }
    }
}

impl Options {
    /// Sets the memory budget of one query, in bytes.
    pub fn with_memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// Lets joins that outgrow their memory budget spill to `dir`, at most `limit` bytes
    /// for all of them together (0 spills nothing).
    pub fn with_spill(mut self, dir: impl Into<PathBuf>, limit: u64) -> Self {
        self.spill_dir = Some(dir.into());
        self.spill_limit = limit;
        self
    }

    /// Sets the time budget of one query.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the maximum number of rows of one result.
    pub fn with_max_result_rows(mut self, rows: usize) -> Self {
        self.max_result_rows = rows;
        self
    }

    /// Sets the maximum bytes of one result (in memory, and once formatted).
    pub fn with_max_result_bytes(mut self, bytes: usize) -> Self {
        self.max_result_bytes = bytes;
        self
    }

    /// Sets how many queries run at once (at least 1).
    pub fn with_max_concurrent(mut self, queries: usize) -> Self {
        self.max_concurrent = queries.max(1);
        self
    }

    /// Sets how many threads run queries (at least 1).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Sets the number of partitions a scan is split into (at least 1).
    pub fn with_target_partitions(mut self, partitions: usize) -> Self {
        self.target_partitions = partitions.max(1);
        self
    }
}
