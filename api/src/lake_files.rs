//! The data files of the lake (issue 15, `docs/design/lake.md`): which tables a sealed segment
//! becomes, where each file goes, and how its rows are written.
//!
//! Per live segment and table one Parquet file (zstd) at a key that depends only on the node,
//! the table and the segment, so exporting a segment again overwrites its files instead of
//! adding copies:
//!
//! ```text
//! <table>/tier=<tier>/day=<YYYY-MM-DD>/node=<node>/<node>-<segment:020>.parquet
//! sessions/node=<node>/<node>-sessions.parquet       one per node, rewritten as it changes
//! ```
//!
//! Tables: `spans` (the columns of SQL `spans`: events and links as stored, no protobuf
//! columns), `llm_calls`, `tool_calls`, `decisions`, `agent_runs` (the rows of the traces the
//! segment is the home of, see `engine::SegmentExport`), `session_parts` (those traces' parts
//! of `sessions`, merged per session) and `sessions` (every part of the node folded).
//!
//! Invariants:
//! - `tier`, `day` and `node` are in the path only, never in the file (Spark refuses a column
//!   that is both), and every reader derives them from the path.
//! - Times are microseconds in the lake (`TIMESTAMP(MICROS)`, UTC): Spark 3 cannot read
//!   nanosecond Parquet timestamps. `spans` keeps the exact times as `start_time_unix_nano` and
//!   `end_time_unix_nano`, so nothing is lost.
//! - A file with no rows is not written; a table a segment has no rows for has no file.

use std::sync::Arc;

use anyhow::Context as _;
use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use engine::SegmentExport;
use engine::agent::{
    AgentTable, derive_agent_table, derive_stored, fold_session_parts, merge_session_parts,
    session_parts_schema,
};
use engine::schema::{HIDDEN_COLUMNS, columns};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

/// The table of captured content (only with `[lake] content = true`).
pub const CONTENT: &str = "content";
/// The table of per-segment session parts.
pub const SESSION_PARTS: &str = "session_parts";
/// The table of folded sessions, one file per node.
pub const SESSIONS: &str = "sessions";
/// The agent tables shipped per segment.
pub const SEGMENT_AGENT_TABLES: [AgentTable; 4] = [
    AgentTable::LlmCalls,
    AgentTable::ToolCalls,
    AgentTable::Decisions,
    AgentTable::AgentRuns,
];

/// One file to put in the lake.
#[derive(Debug, Clone)]
pub struct TableFile {
    /// The table.
    pub table: String,
    /// Key under the lake root.
    pub path: String,
    /// Rows in it.
    pub rows: u64,
    /// The Parquet bytes.
    pub bytes: Bytes,
}

/// The files of segment `export` for `node`, and its merged session parts (kept by the shipper
/// to fold `sessions`; `None` when it homes no session's traces).
pub fn segment_files(
    node: &str,
    export: &SegmentExport,
) -> anyhow::Result<(Vec<TableFile>, Option<RecordBatch>)> {
    let segment = &export.segment;
    let path_of = |table: &str| segment_path(node, table, segment);
    let mut files = Vec::new();
    if let Some(spans) = spans_rows(&export.spans)? {
        files.push(table_file("spans", path_of("spans"), &spans)?);
    }
    for table in SEGMENT_AGENT_TABLES {
        let rows = derive_agent_table(table, &export.agent_input)
            .with_context(|| format!("deriving {} of segment {}", table.name(), segment.id))?;
        if rows.num_rows() > 0 {
            files.push(table_file(table.name(), path_of(table.name()), &rows)?);
        }
    }
    let parts = derive_stored(AgentTable::Sessions, &export.agent_input)
        .and_then(|parts| merge_session_parts(&[parts]))
        .with_context(|| format!("deriving the sessions of segment {}", segment.id))?;
    let parts = if parts.num_rows() > 0 {
        files.push(table_file(SESSION_PARTS, path_of(SESSION_PARTS), &parts)?);
        Some(parts)
    } else {
        None
    };
    Ok((files, parts))
}

/// The key of `segment`'s file of `table` for `node`.
pub fn segment_path(node: &str, table: &str, segment: &engine::SegmentMeta) -> String {
    format!(
        "{table}/tier={}/day={}/node={node}/{node}-{:020}.parquet",
        segment.tier, segment.day, segment.id
    )
}

/// The `content` file at `path` from `rows`: the values still kept (expired and never captured
/// ones are left out); `None` when no value is left.
pub fn content_file(
    path: String,
    rows: &[engine::ContentRow],
) -> anyhow::Result<Option<TableFile>> {
    let mut traces = Vec::new();
    let mut spans = Vec::new();
    let mut keys = Vec::new();
    let mut values = Vec::new();
    let mut digests = Vec::new();
    for row in rows {
        if let engine::ContentValue::Present(value) = &row.value {
            traces.push(hex::encode(row.trace_id.0));
            spans.push(hex::encode(row.span_id.0));
            keys.push(row.key.clone());
            values.push(value.clone());
            digests.push(hex::encode(row.digest));
        }
    }
    if traces.is_empty() {
        return Ok(None);
    }
    let schema = content_schema();
    let columns: Vec<ArrayRef> = [traces, spans, keys, values, digests]
        .into_iter()
        .map(|column| Arc::new(StringArray::from(column)) as ArrayRef)
        .collect();
    let batch = RecordBatch::try_new(schema, columns)?;
    Ok(Some(table_file(CONTENT, path, &batch)?))
}

/// The traces a `content` file holds values of.
pub fn content_traces(bytes: Bytes) -> anyhow::Result<Vec<engine::TraceId>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    let mut out = std::collections::BTreeSet::new();
    for batch in reader {
        let batch = batch?;
        let column = batch
            .column_by_name("trace_id")
            .context("content file without trace_id")?;
        let column = column
            .as_any()
            .downcast_ref::<StringArray>()
            .context("content trace_id is not text")?;
        for value in column.iter().flatten() {
            out.insert(engine::TraceId::from_hex(value).context("content trace_id")?);
        }
    }
    Ok(out.into_iter().collect())
}

/// The key of `node`'s `sessions` file.
pub fn sessions_path(node: &str) -> String {
    format!("{SESSIONS}/node={node}/{node}-sessions.parquet")
}

/// `node`'s `sessions` file: every session part of its live segments folded; `None` when there
/// are none.
pub fn sessions_file(node: &str, parts: &[RecordBatch]) -> anyhow::Result<Option<TableFile>> {
    let rows = fold_session_parts(parts).context("folding the sessions")?;
    if rows.num_rows() == 0 {
        return Ok(None);
    }
    Ok(Some(table_file(SESSIONS, sessions_path(node), &rows)?))
}

/// Reads a `session_parts` file back into [`session_parts_schema`] (times in ns again).
pub fn read_session_parts(bytes: Bytes) -> anyhow::Result<RecordBatch> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    let schema = session_parts_schema();
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        let columns = schema
            .fields()
            .iter()
            .map(|field| {
                let column = batch
                    .column_by_name(field.name())
                    .with_context(|| format!("session parts without column {}", field.name()))?;
                Ok(cast(column, field.data_type())?)
            })
            .collect::<anyhow::Result<Vec<ArrayRef>>>()?;
        out.push(RecordBatch::try_new(Arc::clone(&schema), columns)?);
    }
    Ok(concat_batches(&schema, &out)?)
}

/// The segment id in the name of a per-segment file of `node` (`<node>-<id:020>.parquet`).
pub fn segment_of(node: &str, path: &str) -> Option<u64> {
    let name = path.rsplit('/').next()?;
    let digits = name.strip_prefix(node)?.strip_prefix('-')?;
    let digits = digits.strip_suffix(".parquet")?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

/// Whether `path` is a data file of `node` (in a `node=<node>` directory).
pub fn is_node_file(node: &str, path: &str) -> bool {
    path.split('/').any(|part| part == format!("node={node}")) && path.ends_with(".parquet")
}

/// The SQL `spans` columns of `batches` (protobuf columns left out) with exact times added;
/// `None` for no rows.
fn spans_rows(batches: &[RecordBatch]) -> anyhow::Result<Option<RecordBatch>> {
    let rows = spans_table(batches)?;
    Ok((rows.num_rows() > 0).then_some(rows))
}

/// The SQL `spans` columns of `batches` (of the span schema), exact times added.
fn spans_table(batches: &[RecordBatch]) -> anyhow::Result<RecordBatch> {
    let schema = engine::span_schema();
    let rows = concat_batches(&schema, batches)?;
    let mut fields: Vec<FieldRef> = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (field, column) in schema.fields().iter().zip(rows.columns()) {
        if HIDDEN_COLUMNS.contains(&field.name().as_str()) {
            continue;
        }
        fields.push(Arc::clone(field));
        arrays.push(Arc::clone(column));
    }
    for (name, source) in [
        ("start_time_unix_nano", columns::START_TIME),
        ("end_time_unix_nano", columns::END_TIME),
    ] {
        let column = rows
            .column_by_name(source)
            .with_context(|| format!("spans without {source}"))?;
        fields.push(Arc::new(Field::new(name, DataType::Int64, false)));
        arrays.push(cast(column, &DataType::Int64)?);
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

/// The key of `node`'s empty file of `table`, which gives readers the table's columns before
/// the node has rows for it (a glob with no file is an error in DuckDB and Spark).
pub fn schema_path(node: &str, table: &str) -> String {
    if table == SESSIONS {
        format!("{SESSIONS}/node={node}/{node}-schema.parquet")
    } else {
        format!("{table}/tier=none/day=none/node={node}/{node}-schema.parquet")
    }
}

/// `node`'s empty files of every table (`content` with `content`).
pub fn schema_files(node: &str, content: bool) -> anyhow::Result<Vec<TableFile>> {
    let mut tables: Vec<(&str, RecordBatch)> = vec![("spans", spans_table(&[])?)];
    for table in SEGMENT_AGENT_TABLES {
        tables.push((table.name(), RecordBatch::new_empty(table.schema())));
    }
    tables.push((
        SESSION_PARTS,
        RecordBatch::new_empty(session_parts_schema()),
    ));
    tables.push((
        SESSIONS,
        RecordBatch::new_empty(AgentTable::Sessions.schema()),
    ));
    if content {
        tables.push((CONTENT, RecordBatch::new_empty(content_schema())));
    }
    tables
        .into_iter()
        .map(|(table, batch)| table_file(table, schema_path(node, table), &batch))
        .collect()
}

fn content_schema() -> SchemaRef {
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        text("trace_id"),
        text("span_id"),
        text("key"),
        text("value"),
        text("digest"),
    ]))
}

/// `batch` written as one Parquet file with lake types.
fn table_file(table: &str, path: String, batch: &RecordBatch) -> anyhow::Result<TableFile> {
    let batch = with_lake_types(batch)?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_row_count(Some(128 * 1024))
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(properties))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(TableFile {
        table: table.to_owned(),
        path,
        rows: batch.num_rows() as u64,
        bytes: Bytes::from(out),
    })
}

/// `batch` with every nanosecond timestamp (at any depth) as microseconds.
fn with_lake_types(batch: &RecordBatch) -> anyhow::Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut arrays = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let target = lake_type(field.data_type());
        if &target == field.data_type() {
            fields.push(Arc::clone(field));
            arrays.push(Arc::clone(column));
        } else {
            arrays.push(cast(column, &target)?);
            fields.push(Arc::new(field.as_ref().clone().with_data_type(target)));
        }
    }
    let schema: SchemaRef = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    Ok(RecordBatch::try_new(schema, arrays)?)
}

fn lake_type(data_type: &DataType) -> DataType {
    let field = |field: &FieldRef| -> FieldRef {
        Arc::new(
            field
                .as_ref()
                .clone()
                .with_data_type(lake_type(field.data_type())),
        )
    };
    match data_type {
        DataType::Timestamp(TimeUnit::Nanosecond, zone) => {
            DataType::Timestamp(TimeUnit::Microsecond, zone.clone())
        }
        DataType::List(item) => DataType::List(field(item)),
        DataType::LargeList(item) => DataType::LargeList(field(item)),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(field).collect::<Fields>()),
        DataType::Map(entries, sorted) => DataType::Map(field(entries), *sorted),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_ids_come_back_from_paths_of_their_node_only() {
        let path = "spans/tier=standard/day=2026-11-01/node=a/a-00000000000000000042.parquet";
        assert_eq!(segment_of("a", path), Some(42));
        assert_eq!(segment_of("b", path), None);
        assert!(is_node_file("a", path));
        assert!(!is_node_file("b", path));
        assert_eq!(segment_of("a", &sessions_path("a")), None);
    }

    #[test]
    fn nested_nanosecond_times_become_microseconds() {
        let events = engine::span_schema();
        let events = events.field_with_name(columns::EVENTS).unwrap();
        let lake = lake_type(events.data_type());
        assert!(!format!("{lake:?}").contains("Nanosecond"));
        assert!(format!("{lake:?}").contains("Microsecond"));
    }
}
