//! The ingest error type. Decode and validation failures are caller errors (4xx); stored rows
//! that cannot be turned back into OTLP are corruption (500).

use std::fmt;

use engine::ErrorKind;

/// `Result` with the ingest [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in ingest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The body is not a valid OTLP export request protobuf message.
    #[error("invalid otlp protobuf body")]
    Protobuf(#[source] prost::DecodeError),
    /// The body is not valid JSON at all.
    #[error("invalid json body")]
    JsonSyntax(#[source] serde_json::Error),
    /// The body is JSON but does not follow the OTLP/JSON mapping at `path`.
    #[error("{path}: {problem}")]
    Json {
        /// Where in the document, e.g. `resourceSpans[0].scopeSpans[1].spans[3].traceId`.
        path: String,
        /// What was wrong there, e.g. `expected 32 hex characters, found 31`.
        problem: String,
    },
    /// The gzip body is corrupt or truncated.
    #[error("invalid gzip body")]
    Gzip(#[source] std::io::Error),
    /// The body would be larger than `limit` bytes once decompressed.
    #[error("decompressed body is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A span or log record of an export request breaks an OTLP rule; the whole request is
    /// rejected.
    #[error("{path}: {problem}")]
    InvalidSpan {
        /// Which field, e.g. `resourceSpans[0].scopeSpans[0].spans[2].spanId` or
        /// `resourceLogs[0].scopeLogs[0].logRecords[1].traceId`.
        path: String,
        /// What is wrong with it.
        problem: SpanProblem,
    },
    /// Stored span rows cannot be turned back into OTLP.
    #[error("stored span rows are invalid: column {column}, row {row}: {detail}")]
    CorruptRows {
        /// The column (or nested field) that is wrong.
        column: &'static str,
        /// Row index within its batch.
        row: usize,
        /// Expected vs found.
        detail: String,
    },
    /// A batch given to [`crate::batches_to_otlp`] lacks a span-schema column or has it with the
    /// wrong type.
    #[error("batch column {column}: {detail}")]
    ColumnMismatch {
        /// The column.
        column: &'static str,
        /// Expected vs found.
        detail: String,
    },
    /// A redaction rule of the content policy is invalid.
    #[error("redaction rule {rule:?}: {problem}")]
    Redaction {
        /// The rule's name.
        rule: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Stored content cannot be put back into a trace.
    #[error("stored content of key {key:?} is invalid: {detail}")]
    CorruptContent {
        /// The content key.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// The retention rules could not place the spans (a rule that compiled failed to run).
    #[error("retention rules failed: {detail}")]
    Placement {
        /// What failed.
        detail: String,
    },
    /// Protobuf encoding into memory failed (a broken invariant: buffers grow on demand).
    #[error("protobuf encoding failed")]
    Encode(#[from] prost::EncodeError),
}

/// What is wrong with a span field (see [`Error::InvalidSpan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpanProblem {
    /// An id has the wrong number of bytes.
    IdLength {
        /// Required number of bytes.
        expected: usize,
        /// Bytes found.
        found: usize,
        /// True when the field may also be empty (parent span ids).
        optional: bool,
    },
    /// A trace or span id is all zero bytes, which OTLP defines as invalid.
    ZeroId,
    /// A timestamp does not fit in a signed 64-bit nanosecond count.
    TimeOutOfRange {
        /// The value sent.
        value: u64,
    },
}

impl fmt::Display for SpanProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpanProblem::IdLength {
                expected,
                found,
                optional: false,
            } => write!(f, "expected {expected} bytes, found {found}"),
            SpanProblem::IdLength {
                expected,
                found,
                optional: true,
            } => write!(f, "expected 0 or {expected} bytes, found {found}"),
            SpanProblem::ZeroId => f.write_str("id is all zero bytes"),
            SpanProblem::TimeOutOfRange { value } => write!(
                f,
                "{value} ns is past the largest supported time ({} ns)",
                i64::MAX
            ),
        }
    }
}

impl Error {
    /// The family of this error: [`ErrorKind::Caller`] for anything wrong with a request
    /// (including [`Error::TooLarge`]), [`ErrorKind::Corruption`] for stored rows that do not
    /// convert back and for broken invariants.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Protobuf(_)
            | Error::JsonSyntax(_)
            | Error::Json { .. }
            | Error::Gzip(_)
            | Error::TooLarge { .. }
            | Error::InvalidSpan { .. }
            | Error::Redaction { .. } => ErrorKind::Caller,
            Error::CorruptRows { .. }
            | Error::ColumnMismatch { .. }
            | Error::CorruptContent { .. }
            | Error::Placement { .. }
            | Error::Encode(_) => ErrorKind::Corruption,
        }
    }

    /// True for [`Error::TooLarge`] (the HTTP edge answers 413).
    pub fn is_too_large(&self) -> bool {
        matches!(self, Error::TooLarge { .. })
    }

    /// True when the request was at fault (4xx).
    pub fn is_caller_error(&self) -> bool {
        self.kind() == ErrorKind::Caller
    }
}
