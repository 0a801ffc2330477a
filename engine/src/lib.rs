//! Sightline's storage engine.
//!
//! Owns every byte on disk: a redb database holding the write-ahead log, the segment catalog and
//! the trace index, and immutable Parquet segment files beside it. Writes are durable (fsync'd
//! through a redb commit shared by concurrent writers) and visible to scans as soon as
//! [`Engine::write`] returns. The memtable is sealed into segments by size, by age and on close;
//! recovery replays the WAL and removes orphan files.
//!
//! The engine is synchronous and knows nothing of DataFusion, tokio or HTTP: it speaks Arrow.
//! `ingest` builds rows with [`SpanBatchBuilder`]; `query` reads them with [`ScanRequest`].
//!
//! ```
//! use engine::{Engine, Options, ScanRequest, SpanBatchBuilder, SpanRecord, TraceId, SpanId};
//! # fn main() -> engine::Result<()> {
//! let dir = std::env::temp_dir().join(format!("sightline-doc-{}", std::process::id()));
//! let engine = Engine::open(&dir, Options::default().with_background_sealing(false))?;
//! let mut rows = SpanBatchBuilder::new();
//! rows.append(&SpanRecord {
//!     trace_id: TraceId([1; 16]),
//!     span_id: SpanId([2; 8]),
//!     name: "invoke_agent",
//!     ..SpanRecord::default()
//! });
//! engine.write(rows.finish())?;
//! let found = engine.scan(&ScanRequest::for_trace(TraceId([1; 16])))?;
//! assert_eq!(found.iter().map(|batch| batch.num_rows()).sum::<usize>(), 1);
//! engine.close()?;
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod activity;
pub mod agent;
mod batch;
mod chain;
mod checked_file;
mod column_codecs;
mod column_split;
mod content;
mod content_codec;
mod content_memtable;
mod content_refs;
mod content_segment;
mod error;
mod faults;
mod footer_cache;
mod holds;
mod ids;
mod retention;
mod scan;
pub mod schema;
mod segment;
mod store;
mod tables;
mod trace_keys;
mod wal;
mod wal_log;

pub use activity::{ActivitySnapshot, cause_chain};
pub use batch::{
    AgentFields, AttributePair, EventRecord, LinkRecord, LogFields, SpanBatchBuilder, SpanRecord,
    with_retention_tiers,
};
pub use chain::{ChainErasure, ChainProblem, ProblemKind, VerifyReport};
pub use checked_file::Integrity;
pub use content::{
    ContentBatch, ContentExpiry, ContentExpiryRequest, ContentHash, ContentPiece, ContentRef,
    ContentRow, ContentScan, ContentStats, ContentValue,
};
pub use error::{Error, ErrorKind, Result, StoreError};
pub use faults::{FaultInjector, StorageOp};
pub use holds::{HoldTarget, LegalHold};
pub use ids::{IdError, SpanId, TraceId};
pub use retention::{AgeFrom, NoTierRules, RetentionPolicy, Tier, TierRules};
pub use scan::{
    BatchIter, KEY_COLUMNS, RowFamily, ScanMetrics, ScanMetricsSnapshot, ScanPlan, ScanRequest,
    ScanUnit,
};
pub use schema::span_schema;
pub use segment::{SegmentMeta, civil_date};
pub use store::verify_data_dir;
pub use store::{
    AgentRead, ChainChange, ChainChangeKind, CompactedGroup, CompactionReport, Engine, EngineStats,
    EraseReport, ExpiredSegment, ExpiryReport, Options, PurgeReport, RecoverySummary, RollupLookup,
    SealSummary, SegmentExport, SessionRollupKey, SidecarRead, TierStatus, WriteBatch,
};
