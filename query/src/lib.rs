//! Sightline's SQL layer: DataFusion tables over the storage engine.
//!
//! [`SqlEngine`] owns a DataFusion session with three tables:
//! - `spans`: one row per span, the engine's span schema without its hidden protobuf columns;
//! - `span_events`: one row per span event, with the owning span's `trace_id`, `span_id`,
//!   `span_name`, `service_name`, `span_start_time`, `session_id` and `conversation_id`;
//! - `span_links`: one row per span link, likewise (without the session columns);
//!
//! and five agent tables derived from them by [`engine::agent`]: `decisions`, `tool_calls`,
//! `llm_calls`, `agent_runs` and `sessions` (columns in `docs/sql.md`).
//!
//! Filters on `trace_id`, `service_name`, `session_id`, `conversation_id` and the span start
//! time push down into the engine's
//! [`engine::ScanRequest`] and are shown on the `SpansScanExec` line of `EXPLAIN`; the engine's
//! read counters (segments selected, row groups, bytes, rows) appear in `EXPLAIN ANALYZE` and
//! in [`QueryOutput::scan_metrics`]. Only read-only statements run, each within the memory,
//! time and row bounds of its [`Options`]. [`format`](mod@format) renders results as JSON, CSV, Arrow IPC
//! or a text table.
//!
//! [`trace_search`] answers Jaeger's remote-storage queries (find traces by service, operation,
//! attributes, time and duration; services; operations; trace summaries; dependencies) with
//! direct, synchronous engine scans, without DataFusion.
//!
//! [`monitoring`] holds the named questions of `docs/monitoring.md` (the catalog every surface
//! lists and runs) and the SQL of the run search.
//!
//! Layering: `api -> query -> engine`. DataFusion types stay inside this crate; Arrow types
//! are the currency of [`QueryOutput`].
//!
//! ```
//! use std::sync::Arc;
//! use engine::{Engine, SpanBatchBuilder, SpanId, SpanRecord, TraceId};
//! use query::{Options, SqlEngine};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let engine = Arc::new(Engine::open(
//!     dir.path(),
//!     engine::Options::default().with_background_sealing(false),
//! )?);
//! let mut rows = SpanBatchBuilder::new();
//! rows.append(&SpanRecord {
//!     trace_id: TraceId([1; 16]),
//!     span_id: SpanId([2; 8]),
//!     name: "invoke_agent",
//!     service_name: Some("planner"),
//!     ..SpanRecord::default()
//! });
//! engine.write(rows.finish())?;
//!
//! let sql = SqlEngine::new(Arc::clone(&engine), Options::default())?;
//! let runtime = tokio::runtime::Runtime::new()?;
//! let output = runtime.block_on(sql.execute(
//!     "SELECT service_name, count(*) AS spans FROM spans GROUP BY service_name",
//! ))?;
//! assert_eq!(
//!     query::format::to_json(&output)["rows"],
//!     serde_json::json!([["planner", 1]])
//! );
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod agent_tables;
mod blocking;
mod bounded_concat;
mod bounded_functions;
mod coalesce_views;
mod complexity;
mod content_table;
mod error;
mod explode;
pub mod format;
mod guard;
mod id_keys;
mod id_set_join;
mod id_set_rule;
mod join_sides;
mod json_cells;
mod logs_table;
pub mod monitoring;
mod options;
pub mod pg_catalog;
mod pool;
mod pushdown;
mod retention_table;
mod rules;
mod scan;
mod session;
mod spill;
mod stored_agent;
mod stored_filter;
mod tables;
mod timestamp;
pub mod trace_search;
mod utc_date_trunc;
mod view_sizes;

pub use complexity::{MAX_OPERATORS, MAX_SQL_BYTES};
pub use error::{Error, ErrorKind, Result};
pub use options::Options;
pub use rules::{RetentionRule, RuleSet};
pub use session::{Access, Prepared, QueryOutput, SqlEngine};
