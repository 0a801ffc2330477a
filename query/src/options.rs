//! [`Options`]: per-query bounds and parallelism.

use std::time::Duration;

/// Settings of a [`SqlEngine`](crate::SqlEngine). Every bound applies to each query on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// Memory one query may reserve for sorts, aggregations and joins, in bytes. Nothing
    /// spills to disk: a query that needs more fails with `Error::ResourcesExhausted`.
    pub memory_limit: usize,
    /// Time one query may take, planning and execution together (`Error::Timeout`).
    pub timeout: Duration,
    /// Rows one result may hold (`Error::TooManyRows`).
    pub max_result_rows: usize,
    /// Partitions a scan is split into (and DataFusion's `target_partitions`).
    pub target_partitions: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            memory_limit: 1 << 30,
            timeout: Duration::from_secs(60),
            max_result_rows: 1_000_000,
            target_partitions: 2,
        }
    }
}

impl Options {
    /// Sets the memory budget of one query, in bytes.
    pub fn with_memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = bytes;
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

    /// Sets the number of partitions a scan is split into (at least 1).
    pub fn with_target_partitions(mut self, partitions: usize) -> Self {
        self.target_partitions = partitions.max(1);
        self
    }
}
