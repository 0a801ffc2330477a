//! The engine's error type, in three families: caller, transient, corruption/internal.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// `Result` with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from the embedded key-value store, kept opaque so its types do not leak.
#[derive(Debug)]
pub struct StoreError(pub(crate) redb::Error);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for StoreError {}

/// Which family an error belongs to; decides how the edge reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller sent something wrong (4xx).
    Caller,
    /// Retry later: I/O trouble, overload, shutting down (503/429).
    Transient,
    /// Stored data is damaged or an invariant broke (500).
    Corruption,
}

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The data directory is held by another process (a running server).
    #[error("data directory {path} is in use by another process")]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
    /// An I/O operation on a file of the store failed.
    #[error("{operation} {path}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The embedded store failed.
    #[error("store operation failed: {operation}")]
    Store {
        /// What was being done.
        operation: &'static str,
        /// The cause.
        #[source]
        source: StoreError,
    },
    /// A segment file could not be written or read.
    #[error("segment {segment_id} ({path})")]
    Segment {
        /// The segment.
        segment_id: u64,
        /// Its file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Stored bytes are not what they should be.
    #[error("corrupt data in {location}: {detail}")]
    Corrupt {
        /// Which file, table or entry.
        location: String,
        /// Expected vs found.
        detail: String,
    },
    /// An Arrow operation failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A batch given to `write` does not have the span schema.
    #[error("batch schema does not match the span schema: {0}")]
    SchemaMismatch(String),
    /// Too much data is waiting to be written; retry after the given delay.
    #[error("ingest is overloaded ({pending_bytes} bytes waiting), retry in {retry_after_ms} ms")]
    Overloaded {
        /// Bytes currently waiting.
        pending_bytes: usize,
        /// Suggested delay before retrying.
        retry_after_ms: u64,
    },
    /// The engine is closing or closed.
    #[error("engine is shutting down")]
    ShuttingDown,
    /// A session or tier is under legal hold, so it may not be erased or expired.
    #[error("{target} is under legal hold (since {})", crate::chain::format_utc(*.since_ns))]
    Held {
        /// What is held.
        target: crate::holds::HoldTarget,
        /// When the hold was placed, unix ns.
        since_ns: i64,
    },
    /// Engine options are inconsistent (e.g. a retention policy naming an unknown tier).
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// A row filter the caller passed into a read failed on the rows (its message).
    #[error("filter failed: {0}")]
    Filter(String),
    /// A read would hold more than the caller's bound of text in memory.
    #[error("{what} exceeds {limit} bytes; {advice}")]
    TooLarge {
        /// What was read.
        what: &'static str,
        /// The caller's bound.
        limit: usize,
        /// How to read less.
        advice: &'static str,
    },
}

impl Error {
    /// The family of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::SchemaMismatch(_)
            | Error::InvalidOptions(_)
            | Error::Filter(_)
            | Error::TooLarge { .. }
            | Error::Held { .. } => ErrorKind::Caller,
            Error::Locked { .. }
            | Error::Io { .. }
            | Error::Store { .. }
            | Error::Overloaded { .. }
            | Error::ShuttingDown => ErrorKind::Transient,
            Error::Segment { .. } | Error::Corrupt { .. } | Error::Arrow(_) => {
                ErrorKind::Corruption
            }
        }
    }

    pub(crate) fn store(operation: &'static str, source: impl Into<redb::Error>) -> Self {
        let source = source.into();
        Error::Store {
            operation,
            source: StoreError(source),
        }
    }

    pub(crate) fn io(operation: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            operation,
            path: path.into(),
            source,
        }
    }
}
