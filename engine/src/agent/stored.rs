//! Stored agent tables: beside each sealed segment's span file, one Parquet file per agent
//! table (a *sidecar*) holding the agent rows of the segment's traces, derived once at seal.
//! `sessions` is stored as *session parts* (one row per trace and session, see
//! [`session_parts_schema`]) and folded at read time, since a session's traces are sealed
//! apart.
//!
//! Invariants:
//! - A segment's sidecars are derived from exactly the rows written to its span file, are
//!   fsync'd before the catalog names the segment, and are deleted with it. Every rewrite of
//!   a segment (expiry with promotion, erasure) writes a new segment with new sidecars.
//! - A trace's sidecar rows are right only while all of its spans lie in that one segment,
//!   or when that segment *owns* the trace: the seal that found it split across segments
//!   derived it from all its spans. Readers skip the rows of split traces in every other
//!   sidecar, and derive from spans the traces no sidecar answers for (the memtable's, and
//!   *dirty* ones, whose owner was rewritten or whose older spans were removed); see
//!   `store/agent_tables.rs` and [`crate::Engine::plan_agent_read`]. Late keys and tier
//!   promotion only ever come from a later span of the trace, so the seal of that span
//!   derives the trace again.
//! - Each sidecar is a checked file (`checked_file`): the segment's catalog entry keeps its
//!   [`Integrity`] (`SegmentMeta::sidecar_integrity`), so damage reads as an error, never as
//!   different agent rows. Sidecars written before that was kept read unchecked.
//! - Sidecars are derived data: a store opened without them, or with sidecars of another
//!   [`SIDECAR_VERSION`], rebuilds them at open.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, BooleanArray, RecordBatch, RecordBatchOptions, StringArrayType,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
    RowFilter,
};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use super::AgentTable;
use super::output::{build, build_all, build_session_parts, session_parts_schema};
use super::spans::SpanRows;
use crate::checked_file::{Integrity, open_for_arrow};
use crate::column_codecs::{
    DELTA_SIDECAR_LEAVES, UNCOMPRESSED_SIDECAR_LEAVES, delta_encoded, without_needless_zstd,
};
use crate::error::{Error, Result};

/// Version of the sidecar contents: raise it when the derivation changes, and every store
/// rebuilds its sidecars at the next open.
pub(crate) const SIDECAR_VERSION: u64 = 3;

/// Rows per sidecar row group.
const SIDECAR_ROW_GROUP_ROWS: usize = 64 * 1024;

/// How a sidecar read returns the top-level string columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strings {
    /// `Utf8`, as derived and stored: each value copied into one offsets buffer.
    Utf8,
    /// `Utf8View`: each value a 16-byte view (short ones inline) into the decoded pages, so
    /// dictionary-encoded columns are not copied value by value, and grouping and comparing
    /// short strings compares views.
    Views,
}

/// `schema` with its top-level `Utf8` columns as `Utf8View` (nested strings unchanged).
pub fn with_string_views(schema: &Schema) -> SchemaRef {
    let fields: Vec<arrow::datatypes::FieldRef> = schema
        .fields()
        .iter()
        .map(|field| match field.data_type() {
            arrow::datatypes::DataType::Utf8 => Arc::new(
                field
                    .as_ref()
                    .clone()
                    .with_data_type(arrow::datatypes::DataType::Utf8View),
            ),
            _ => Arc::clone(field),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The schema a table is stored with: its own, or session parts for `sessions`.
pub fn stored_schema(table: AgentTable) -> SchemaRef {
    match table {
        AgentTable::Sessions => session_parts_schema(),
        _ => table.schema(),
    }
}

/// Derives `table` in its stored form ([`stored_schema`]) from `spans`, which must hold every
/// span of each trace they hold.
pub fn derive_stored(table: AgentTable, spans: &[RecordBatch]) -> Result<RecordBatch> {
    let rows = SpanRows::new(spans, table.reads_events())?;
    stored_form(table, &rows)
}

fn stored_form(table: AgentTable, rows: &SpanRows) -> Result<RecordBatch> {
    match table {
        AgentTable::Sessions => build_session_parts(rows),
        _ => build(table, rows),
    }
}

/// The data-directory-relative path of a segment's sidecar for `table`.
pub(crate) fn sidecar_path(segment_path: &str, table: AgentTable) -> String {
    let stem = segment_path
        .strip_suffix(".parquet")
        .unwrap_or(segment_path);
    format!("{stem}.{}.parquet", table.name())
}

/// Every sidecar path of a segment.
pub(crate) fn sidecar_paths(segment_path: &str) -> impl Iterator<Item = String> + '_ {
    AgentTable::ALL
        .into_iter()
        .map(move |table| sidecar_path(segment_path, table))
}

/// Derives every agent table from `inputs` (all the rows of segment `segment_id`, plus the
/// other spans of the split traces it owns; any projection holding the input columns) and
/// writes the sidecars next to `segment_path`, each fsync'd. Returns how to check each
/// written file, in [`AgentTable::ALL`] order (the caller keeps it in the segment's catalog
/// entry, and fsyncs the directory, which the segment file shares).
pub(crate) fn write_sidecars(
    data_dir: &Path,
    segment_id: u64,
    segment_path: &str,
    inputs: &[RecordBatch],
    zstd_level: i32,
) -> Result<Vec<Integrity>> {
    let rows = SpanRows::new(inputs, true)?;
    let tables = build_all(&rows)?;
    let mut written: Vec<PathBuf> = Vec::with_capacity(AgentTable::ALL.len());
    let mut checks = Vec::with_capacity(AgentTable::ALL.len());
    for (table, derived) in AgentTable::ALL.into_iter().zip(&tables) {
        let path = data_dir.join(sidecar_path(segment_path, table));
        match write_file(&path, segment_id, derived, zstd_level) {
            Ok(integrity) => checks.push(integrity),
            Err(error) => {
                for done in written {
                    let _ = std::fs::remove_file(done);
                }
                return Err(error);
            }
        }
        written.push(path);
    }
    Ok(checks)
}

fn write_file(
    path: &Path,
    segment_id: u64,
    batch: &RecordBatch,
    zstd_level: i32,
) -> Result<Integrity> {
    // Derived data, small next to the span file, written on the seal's path: the fastest
    // zstd level (never more than the store's).
    let level = zstd_level.min(1);
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(level).unwrap_or_default(),
        ))
        .set_max_row_group_row_count(Some(SIDECAR_ROW_GROUP_ROWS))
        // Whole files are read; only row-group statistics are ever looked at.
        .set_statistics_enabled(EnabledStatistics::Chunk);
    // Bounded and empty leaves plain, as in span segments (`column_codecs`).
    let properties = without_needless_zstd(properties, batch, UNCOMPRESSED_SIDECAR_LEAVES);
    let properties = delta_encoded(properties, DELTA_SIDECAR_LEAVES).build();
    let (_, integrity) =
        crate::segment::write_parquet_file(path, batch, properties, |source| Error::Segment {
            segment_id,
            path: path.to_path_buf(),
            source,
        })?;
    Ok(integrity)
}

/// A row predicate's function: the rows of a batch to keep, or why it could not say.
pub type KeepRows = dyn Fn(&RecordBatch) -> std::result::Result<BooleanArray, String> + Send + Sync;

/// A filter on a sidecar's rows, evaluated while reading (a Parquet row filter): the columns
/// it needs are decoded first, the others only for the rows it keeps.
#[derive(Clone)]
pub struct RowPredicate {
    /// The columns the predicate reads (indices into [`stored_schema`], ascending); it is
    /// handed a batch of exactly these, in this order.
    pub columns: Vec<usize>,
    /// Which rows to keep (a null keeps nothing). An error fails the read with
    /// [`Error::Filter`], a caller's error (never taken for damage in the file).
    pub keep: Arc<KeepRows>,
}

impl std::fmt::Debug for RowPredicate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowPredicate")
            .field("columns", &self.columns)
            .finish_non_exhaustive()
    }
}

/// One stored file: segment `segment_id`'s sidecar of `table` at `path`.
#[derive(Debug, Clone, Copy)]
pub struct SidecarFile<'a> {
    /// The file.
    pub path: &'a Path,
    /// Its segment.
    pub segment_id: u64,
    /// What the segment's catalog entry keeps for this file (`None`: written before checks
    /// were kept).
    pub integrity: Option<Integrity>,
    /// The table it holds.
    pub table: AgentTable,
}

/// Reads one sidecar: its stored rows whose trace is not in `skip` (lowercase hex ids), with
/// the columns `projection` names (indices into [`stored_schema`], ascending; `None` for
/// all), only the rows `predicate` keeps when there is one, and string columns as `strings`
/// says (the predicate sees them so too). The trace column is read only when `skip` is not
/// empty.
///
/// With an integrity every byte read is checked, and the decoded footer is kept between reads
/// (`footer_cache`); sidecars written before their checks were kept read unchecked.
pub fn read_sidecar(
    file: &SidecarFile<'_>,
    projection: Option<&[usize]>,
    skip: &HashSet<String>,
    predicate: Option<&RowPredicate>,
    strings: Strings,
) -> Result<Vec<RecordBatch>> {
    let SidecarFile {
        path,
        segment_id,
        integrity,
        table,
    } = *file;
    let skips_nothing = skip.is_empty();
    let sidecar_error = |source| Error::Segment {
        segment_id,
        path: path.to_path_buf(),
        source,
    };
    let schema = stored_schema(table);
    let (file, metadata) = open_for_arrow(
        path,
        integrity,
        ArrowReaderOptions::new(),
        PageIndexPolicy::Skip,
    )?;
    if metadata.schema().fields() != schema.fields() {
        return Err(Error::Corrupt {
            location: path.display().to_string(),
            detail: format!("the {} file does not have the table's schema", table.name()),
        });
    }
    let metadata = match strings {
        Strings::Utf8 => metadata,
        Strings::Views => ArrowReaderMetadata::try_new(
            Arc::clone(metadata.metadata()),
            ArrowReaderOptions::new().with_schema(with_string_views(&schema)),
        )
        .map_err(sidecar_error)?,
    };
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata);
    let trace_column = schema.index_of("trace_id")?;
    let wanted: Vec<usize> = projection
        .map(<[usize]>::to_vec)
        .unwrap_or_else(|| (0..schema.fields().len()).collect());
    if wanted.is_empty() && skips_nothing && predicate.is_none() {
        // Only the row count (`count(*)`): the footer, checked, has it per row group.
        let empty = Arc::new(Schema::empty());
        return builder
            .metadata()
            .row_groups()
            .iter()
            .filter(|group| group.num_rows() > 0)
            .map(|group| {
                let rows = usize::try_from(group.num_rows()).unwrap_or(usize::MAX);
                Ok(RecordBatch::try_new_with_options(
                    Arc::clone(&empty),
                    Vec::new(),
                    &RecordBatchOptions::new().with_row_count(Some(rows)),
                )?)
            })
            .collect();
    }
    let mut read: Vec<usize> = wanted.clone();
    if (!skips_nothing || read.is_empty()) && !read.contains(&trace_column) {
        read.push(trace_column);
        read.sort_unstable();
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), read.iter().copied());
    // A predicate's own error, told apart from damage in the file.
    let failed: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let builder = match predicate {
        Some(predicate) => {
            let columns =
                ProjectionMask::roots(builder.parquet_schema(), predicate.columns.iter().copied());
            let keep = Arc::clone(&predicate.keep);
            let failed = Arc::clone(&failed);
            let filter = ArrowPredicateFn::new(columns, move |batch| match keep(&batch) {
                Ok(mask) if mask.null_count() == 0 => Ok(mask),
                Ok(mask) => Ok(arrow::compute::prep_null_mask_filter(&mask)),
                Err(message) => {
                    let error = ArrowError::ComputeError(message.clone());
                    *failed
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(message);
                    Err(error)
                }
            });
            builder.with_row_filter(RowFilter::new(vec![Box::new(filter)]))
        }
        None => builder,
    };
    // The predicate's own failure (a caller's error), or damage in the file.
    let filter_failure = || {
        failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .map(Error::Filter)
    };
    let read_error = |error| filter_failure().unwrap_or_else(|| sidecar_error(error));
    // (Parquet evaluates a row filter over every row group as the reader is built.)
    let reader = builder
        .with_projection(mask)
        .with_batch_size(8192)
        .build()
        .map_err(read_error)?;
    // Positions of the wanted columns among the read ones.
    let keep: Vec<usize> = wanted
        .iter()
        .filter_map(|column| read.iter().position(|candidate| candidate == column))
        .collect();
    let trace_position = read.iter().position(|column| *column == trace_column);
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|error| {
            filter_failure().unwrap_or_else(|| Error::Corrupt {
                location: path.display().to_string(),
                detail: error.to_string(),
            })
        })?;
        let batch = match (skips_nothing, trace_position) {
            (false, Some(position)) => {
                let traces = batch.column(position);
                let mask = match strings {
                    Strings::Utf8 => unskipped(traces.as_string::<i32>(), skip),
                    Strings::Views => unskipped(traces.as_string_view(), skip),
                };
                filter_record_batch(&batch, &mask)?
            }
            _ => batch,
        };
        if batch.num_rows() > 0 {
            out.push(batch.project(&keep)?);
        }
    }
    Ok(out)
}

/// The rows whose trace `skip` does not name.
fn unskipped<'a>(traces: impl StringArrayType<'a>, skip: &HashSet<String>) -> BooleanArray {
    // Rows come trace by trace: look each trace up once.
    let mut last: Option<(&str, bool)> = None;
    (0..traces.len())
        .map(|row| {
            if traces.is_null(row) {
                return Some(true);
            }
            let trace = traces.value(row);
            let keep = match last {
                Some((previous, keep)) if previous == trace => keep,
                _ => !skip.contains(trace),
            };
            last = Some((trace, keep));
            Some(keep)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use arrow::array::StringArray;

    use super::*;
    use crate::batch::{AgentFields, SpanBatchBuilder, SpanRecord};
    use crate::ids::{SpanId, TraceId};

    /// One trace: an agent span and two tool calls, one denied, one allowed.
    fn sidecars(dir: &Path) -> (String, Vec<Integrity>) {
        let verdicts = ["deny", "allow"];
        let decisions: Vec<Vec<crate::batch::AttributePair<'_>>> = verdicts
            .iter()
            .map(|verdict| {
                vec![
                    ("agent.decision.verdict", Cow::Borrowed(*verdict)),
                    ("agent.decision.policy_id", Cow::Borrowed("p")),
                ]
            })
            .collect();
        let agent = |operation: &'static str| AgentFields {
            session_id: Some("s".into()),
            operation: Some(operation.into()),
            agent_name: Some("planner".into()),
            ..AgentFields::default()
        };
        let mut builder = SpanBatchBuilder::new();
        builder.append(&SpanRecord {
            trace_id: TraceId([7; 16]),
            span_id: SpanId([1; 8]),
            agent: agent("invoke_agent"),
            ..SpanRecord::default()
        });
        for (index, attributes) in decisions.iter().enumerate() {
            builder.append(&SpanRecord {
                trace_id: TraceId([7; 16]),
                span_id: SpanId([2 + u8::try_from(index).unwrap(); 8]),
                parent_span_id: Some(SpanId([1; 8])),
                agent: AgentFields {
                    tool_name: Some("rm".into()),
                    ..agent("execute_tool")
                },
                attributes,
                ..SpanRecord::default()
            });
        }
        let path = "segments/standard/2026-12-07/0000000000000001.parquet".to_owned();
        std::fs::create_dir_all(dir.join("segments/standard/2026-12-07")).unwrap();
        let checks = write_sidecars(dir, 1, &path, &[builder.finish()], 3).unwrap();
        (path, checks)
    }

    fn verdicts(batches: &[RecordBatch]) -> Vec<String> {
        let mut out = Vec::new();
        for batch in batches {
            let column = batch.column(0).as_string::<i32>();
            out.extend(
                column
                    .iter()
                    .map(|value| value.unwrap_or("NULL").to_owned()),
            );
        }
        out.sort();
        out
    }

    #[test]
    fn strings_read_as_views_are_the_stored_strings() {
        let dir = tempfile::tempdir().unwrap();
        let (segment, checks) = sidecars(dir.path());
        for table in [AgentTable::Decisions, AgentTable::ToolCalls] {
            let path = dir.path().join(sidecar_path(&segment, table));
            let file = SidecarFile {
                path: &path,
                segment_id: 1,
                integrity: Some(checks[table.position()]),
                table,
            };
            let none = HashSet::new();
            let plain = read_sidecar(&file, None, &none, None, Strings::Utf8).unwrap();
            let views = read_sidecar(&file, None, &none, None, Strings::Views).unwrap();
            let plain = arrow::compute::concat_batches(&stored_schema(table), &plain).unwrap();
            let views_schema = with_string_views(&stored_schema(table));
            let views = arrow::compute::concat_batches(&views_schema, &views).unwrap();
            assert!(plain.num_rows() > 0);
            assert!(
                views
                    .schema()
                    .fields()
                    .iter()
                    .any(|field| *field.data_type() == arrow::datatypes::DataType::Utf8View)
            );
            for (index, field) in plain.schema().fields().iter().enumerate() {
                let back = arrow::compute::cast(views.column(index), field.data_type()).unwrap();
                assert_eq!(
                    &back,
                    plain.column(index),
                    "{}.{}",
                    table.name(),
                    field.name()
                );
            }
            // The trace column is read as views too when traces are skipped.
            let skip: HashSet<String> = [TraceId([7; 16]).to_string()].into();
            let skipped = read_sidecar(&file, None, &skip, None, Strings::Views).unwrap();
            assert_eq!(skipped.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
            let other: HashSet<String> = [TraceId([8; 16]).to_string()].into();
            let kept = read_sidecar(&file, None, &other, None, Strings::Views).unwrap();
            assert_eq!(
                kept.iter().map(RecordBatch::num_rows).sum::<usize>(),
                plain.num_rows()
            );
        }
    }

    #[test]
    fn a_row_predicate_keeps_its_rows_and_its_failure_is_the_callers() {
        let dir = tempfile::tempdir().unwrap();
        let (segment, checks) = sidecars(dir.path());
        let table = AgentTable::Decisions;
        let path = dir.path().join(sidecar_path(&segment, table));
        let integrity = Some(checks[table.position()]);
        let verdict = stored_schema(table).index_of("verdict").unwrap();
        let none = HashSet::new();
        let file = SidecarFile {
            path: &path,
            segment_id: 1,
            integrity,
            table,
        };
        let all = read_sidecar(&file, Some(&[verdict]), &none, None, Strings::Utf8).unwrap();
        assert_eq!(verdicts(&all), ["allow", "deny"]);

        let denials = RowPredicate {
            columns: vec![verdict],
            keep: Arc::new(|batch: &RecordBatch| {
                let column = batch.column(0).as_string::<i32>();
                arrow::compute::kernels::cmp::eq(column, &StringArray::new_scalar("deny"))
                    .map_err(|error| error.to_string())
            }),
        };
        let kept = read_sidecar(
            &file,
            Some(&[verdict]),
            &none,
            Some(&denials),
            Strings::Utf8,
        )
        .unwrap();
        assert_eq!(verdicts(&kept), ["deny"]);
        // Only the count, with the filter: the filter's column is read, nothing else kept.
        let counted = read_sidecar(&file, Some(&[]), &none, Some(&denials), Strings::Utf8).unwrap();
        assert_eq!(counted.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);

        let failing = RowPredicate {
            columns: vec![verdict],
            keep: Arc::new(|_: &RecordBatch| Err("cannot compare".to_owned())),
        };
        let error = read_sidecar(
            &file,
            Some(&[verdict]),
            &none,
            Some(&failing),
            Strings::Utf8,
        )
        .unwrap_err();
        assert!(
            matches!(&error, Error::Filter(message) if message == "cannot compare"),
            "{error}"
        );
        assert_eq!(error.kind(), crate::ErrorKind::Caller);
    }
}
