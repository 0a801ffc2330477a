//! The query crate's error type and its three families.

use std::sync::Arc;
use std::time::Duration;

use datafusion::error::DataFusionError;

/// `Result` with the query crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which family an error belongs to; decides how the edge reports it.
///
/// A query that needs more than its budget (memory, time, result rows) is the caller's to
/// narrow: retrying it unchanged gives the same answer, so those are [`ErrorKind::Caller`],
/// except running out of time, [`ErrorKind::Timeout`], which gateways and clients know as 504.
/// Storage trouble (I/O, overload, shutdown) is [`ErrorKind::Transient`]; damaged data and
/// broken invariants are [`ErrorKind::Internal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller sent something wrong or too expensive (4xx).
    Caller,
    /// Retry later (503).
    Transient,
    /// A bug or damaged data (500).
    Internal,
    /// The query ran out of time (504, gRPC `DEADLINE_EXCEEDED`): narrow it or raise the
    /// timeout.
    Timeout,
}

/// Everything that can go wrong running SQL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The SQL does not parse or plan: syntax, unknown table, column or function, types.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// The statement is valid SQL but not allowed: everything except read-only queries.
    #[error("{statement_kind} not allowed: {reason}")]
    Rejected {
        /// What kind of statement it was, e.g. `CREATE VIEW`, `INSERT`, `COPY`.
        statement_kind: String,
        /// Why, and what is allowed instead.
        reason: String,
    },
    /// The query failed while running on the data (a failed cast, division by zero, ...).
    #[error("query failed: {0}")]
    Execution(String),
    /// The query needed more memory than its budget (`Options::memory_limit`).
    #[error("query exceeded its memory budget: {0}")]
    ResourcesExhausted(String),
    /// Every query slot stayed busy for the whole timeout: the query never started.
    #[error("all {slots} query slots stayed busy for {waited:?}; retry later")]
    Busy {
        /// `Options::max_concurrent`.
        slots: usize,
        /// How long the query waited.
        waited: Duration,
    },
    /// The query did not finish within `Options::timeout`.
    #[error("query did not finish within {0:?}")]
    Timeout(Duration),
    /// The query reads something the caller may not (the `content` table without the
    /// content permission).
    #[error("not allowed: {0}")]
    Forbidden(String),
    /// The SQL text is too large or has too many operators to plan safely.
    #[error("query too complex: {0}")]
    TooComplex(String),
    /// The query panicked (a bug); the message says where.
    #[error("query panicked: {0}")]
    Panicked(String),
    /// The result would take more than `Options::max_result_bytes` to send.
    #[error("query result exceeds {limit} bytes; select fewer columns or rows")]
    TooLarge {
        /// The configured maximum.
        limit: usize,
    },
    /// The result has more rows than `Options::max_result_rows`.
    #[error("query returned more than {limit} rows; add a LIMIT or narrow the filters")]
    TooManyRows {
        /// The configured maximum.
        limit: usize,
    },
    /// The storage engine failed while reading. Shared because DataFusion may hand the same
    /// failure to several consumers.
    #[error("storage engine failed")]
    Engine(#[source] Arc<engine::Error>),
    /// Rendering the result failed.
    #[error("formatting the result failed")]
    Format(#[source] arrow::error::ArrowError),
    /// A retention rule does not compile or failed on a batch (names the rule).
    #[error("{0}")]
    InvalidRule(String),
    /// A bug: an invariant of this crate or of DataFusion broke.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What DataFusion's disk manager says when spill files reach `Options::spill_limit`.
const SPILL_LIMIT_MESSAGE: &str = "used disk space during the spilling process has exceeded";

impl Error {
    /// The family of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidQuery(_)
            | Error::Rejected { .. }
            | Error::Execution(_)
            | Error::ResourcesExhausted(_)
            | Error::TooComplex(_)
            | Error::Forbidden(_)
            | Error::TooLarge { .. }
            | Error::TooManyRows { .. }
            | Error::InvalidRule(_) => ErrorKind::Caller,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Busy { .. } => ErrorKind::Transient,
            Error::Engine(error) => match error.kind() {
                engine::ErrorKind::Caller => ErrorKind::Caller,
                engine::ErrorKind::Transient => ErrorKind::Transient,
                _ => ErrorKind::Internal,
            },
            Error::Format(_) | Error::Internal(_) | Error::Panicked(_) => ErrorKind::Internal,
        }
    }

    /// Classifies a DataFusion error, recovering engine errors wrapped as
    /// `DataFusionError::External` (see [`engine_error`]).
    pub(crate) fn from_datafusion(error: DataFusionError) -> Self {
        let mut level: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(current) = level {
            if let Some(engine) = current.downcast_ref::<Arc<engine::Error>>() {
                return Error::Engine(Arc::clone(engine));
            }
            // A panic in a task DataFusion spawned (repartitioning) comes back as its join
            // error: a bug, reported with its message.
            let join = current
                .downcast_ref::<Arc<tokio::task::JoinError>>()
                .map(AsRef::as_ref)
                .or_else(|| current.downcast_ref::<tokio::task::JoinError>());
            if let Some(join) = join
                && join.is_panic()
            {
                return Error::Panicked(join.to_string());
            }
            level = current.source();
        }
        let message = error.strip_backtrace();
        // DataFusion reports a full spill directory as an I/O error in a string.
        if message.contains(SPILL_LIMIT_MESSAGE) {
            return Error::ResourcesExhausted(format!(
                "the query's spill files reached the spill limit (--query-spill-limit): {message}"
            ));
        }
        match error.find_root() {
            DataFusionError::ExecutionJoin(join) if join.is_panic() => {
                Error::Panicked(join.to_string())
            }
            DataFusionError::ResourcesExhausted(detail) => {
                Error::ResourcesExhausted(detail.clone())
            }
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Configuration(_) => Error::InvalidQuery(message),
            DataFusionError::Execution(_) | DataFusionError::ArrowError(..) => {
                Error::Execution(message)
            }
            // A pattern the regex crate cannot parse is the query's mistake, wherever
            // DataFusion met it (planning, simplification, execution).
            DataFusionError::External(inner)
                if inner.to_string().starts_with("regex parse error") =>
            {
                Error::InvalidQuery(message)
            }
            _ => Error::Internal(message),
        }
    }
}

/// Wraps an engine error for DataFusion so [`Error::from_datafusion`] can find it again.
pub(crate) fn engine_error(error: engine::Error) -> DataFusionError {
    DataFusionError::External(Box::new(Arc::new(error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_are_recovered_through_wrappers() {
        let wrapped = DataFusionError::Shared(Arc::new(
            engine_error(engine::Error::ShuttingDown).context("reading spans"),
        ));
        let error = Error::from_datafusion(wrapped);
        assert!(
            matches!(&error, Error::Engine(inner) if matches!(**inner, engine::Error::ShuttingDown))
        );
        assert_eq!(error.kind(), ErrorKind::Transient);
    }

    #[test]
    fn datafusion_errors_map_to_families() {
        let exhausted = DataFusionError::ResourcesExhausted("sort".into()).context("x");
        assert!(matches!(
            Error::from_datafusion(exhausted),
            Error::ResourcesExhausted(detail) if detail == "sort"
        ));
        assert!(matches!(
            Error::from_datafusion(DataFusionError::Plan("no table".into())),
            Error::InvalidQuery(_)
        ));
        let internal = Error::from_datafusion(DataFusionError::Internal("bug".into()));
        assert_eq!(internal.kind(), ErrorKind::Internal);
    }

    #[test]
    fn a_panic_in_a_task_datafusion_spawned_keeps_its_message() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let join = runtime
            .block_on(async { tokio::spawn(async { panic!("offset overflow") }).await })
            .unwrap_err();
        // As RepartitionExec reports it.
        let wrapped = DataFusionError::Context(
            "Join Error".into(),
            Box::new(DataFusionError::External(Box::new(Arc::new(join)))),
        );
        match Error::from_datafusion(wrapped) {
            Error::Panicked(message) => assert!(message.contains("offset overflow"), "{message}"),
            other => panic!("expected a panic, got {other:?}"),
        }
    }
}
