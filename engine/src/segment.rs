//! Immutable columnar segments: one Parquet file (zstd) per sealed (tier, day) group of rows,
//! sorted by (trace_id, start_time), with page statistics and a bloom filter on trace_id. Our
//! reader prunes row groups by statistics (the sort makes trace_id ranges tight); the bloom
//! filter is for external engines (DataFusion's Parquet reader, DuckDB) reading the files.
//!
//! A segment file is written under a temporary name, fsync'd, renamed into place and its
//! directory fsync'd before the catalog transaction that references it commits.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::BufWriter;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{SortColumn, SortOptions, filter_record_batch};
use arrow::datatypes::TimestampNanosecondType;
use arrow::error::ArrowError;
use parquet::arrow::ArrowWriter;

use crate::checked_file::Integrity;
use crate::checked_file::{CheckedFile, CrcSink, open_for_arrow};
use crate::column_split;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowPredicate, ArrowPredicateFn, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
    RowFilter, RowSelection, RowSelector,
};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{PageIndexPolicy, RowGroupMetaData};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::Statistics;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::retention::AgeFrom;
use crate::scan::{BatchIter, Predicates, RowPredicate, ScanMetrics, SegmentRead};
use crate::schema::{column_index, columns, span_schema};
use crate::trace_keys::resolve_keys;

/// Version byte in front of every catalog entry.
const META_VERSION: u8 = 1;
/// Rows per data page (at most).
const DATA_PAGE_ROWS: usize = 1024;
/// Rows per batch a segment read yields (at most).
pub(crate) const READ_BATCH_ROWS: usize = 8192;

/// The leaf of the `log` struct a row-family filter reads: present on every log row, small.
const LOG_FILTER_LEAF: &str = "log.severity_number";
/// Above this many distinct services a segment records none (the filter then reads it).
const MAX_SERVICES_PER_SEGMENT: usize = 256;

/// Catalog entry of one sealed segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    /// Segment id (unique, increasing).
    pub id: u64,
    /// Retention tier name.
    pub tier: String,
    /// UTC day of the rows' start times, `YYYY-MM-DD`.
    pub day: String,
    /// Path relative to the data directory.
    pub path: String,
    /// Number of rows.
    pub rows: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// Smallest start_time (ns).
    pub min_start: i64,
    /// Largest start_time (ns).
    pub max_start: i64,
    /// Largest end_time (ns); `None` in catalog entries written before it was kept.
    #[serde(default)]
    pub max_end: Option<i64>,
    /// Largest arrival_time (ns); `None` when no row has one (written before it existed).
    #[serde(default)]
    pub max_arrival: Option<i64>,
    /// Distinct service names, unless there were more than a few hundred.
    pub services: Option<BTreeSet<String>>,
    /// True when some row has a NULL service_name.
    pub has_null_service: bool,
    /// How to check the file's bytes (`checked_file`); `None` for files written before
    /// checksums, which read unchecked.
    #[serde(default)]
    pub integrity: Option<Integrity>,
    /// Rows that are OTLP log records (the rest are spans); 0 in entries written before logs
    /// were stored, whose files have none. Scans of one row family skip or do not filter a
    /// segment by it.
    #[serde(default)]
    pub log_rows: u64,
    /// The compaction that wrote this segment (the id of its first output), `None` for a seal
    /// or a rewrite. The segments of one compaction hold disjoint session ranges of their
    /// (tier, day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction_run: Option<u64>,
    /// How to check each of the segment's agent-table files (`agent::stored`), in
    /// `AgentTable::ALL` order; `None` in entries written before it was kept (those files read
    /// unchecked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar_integrity: Option<Vec<Integrity>>,
    /// Row runs of each trace (raw id, first row, row count), for the trace index. Not stored
    /// in the catalog entry.
    #[serde(skip)]
    pub trace_runs: Vec<([u8; 16], u64, u64)>,
    /// Row runs of each session_id, for the session index. Not stored in the catalog entry.
    #[serde(skip)]
    pub session_runs: Vec<(String, u64, u64)>,
    /// Row runs of each conversation_id, for the conversation index. Not stored in the
    /// catalog entry.
    #[serde(skip)]
    pub conversation_runs: Vec<(String, u64, u64)>,
}

impl SegmentMeta {
    /// The time this segment's age counts from under `age_from`: the latest, over its rows,
    /// of the end time, and with [`AgeFrom::Arrival`] also of the arrival time. Entries
    /// written before the end time was kept use the latest start time.
    pub fn age_basis(&self, age_from: AgeFrom) -> i64 {
        let span_time = self.max_end.unwrap_or(self.max_start).max(self.max_start);
        match age_from {
            AgeFrom::SpanTime => span_time,
            AgeFrom::Arrival => span_time.max(self.max_arrival.unwrap_or(i64::MIN)),
        }
    }

    /// Encodes the catalog entry: version byte + JSON.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![META_VERSION];
        // Serializing plain strings and integers to a Vec cannot fail.
        out.extend(serde_json::to_vec(self).unwrap_or_default());
        out
    }

    /// Decodes a catalog entry written by [`SegmentMeta::encode`].
    pub(crate) fn decode(id: u64, bytes: &[u8]) -> Result<Self> {
        let corrupt = |detail: String| Error::Corrupt {
            location: format!("catalog entry for segment {id}"),
            detail,
        };
        match bytes.first() {
            Some(&META_VERSION) => {}
            Some(other) => {
                return Err(corrupt(format!(
                    "expected version {META_VERSION}, found {other}"
                )));
            }
            None => return Err(corrupt("empty entry".to_owned())),
        }
        let meta: SegmentMeta =
            serde_json::from_slice(&bytes[1..]).map_err(|error| corrupt(error.to_string()))?;
        if meta.id != id {
            return Err(corrupt(format!("entry names segment {}", meta.id)));
        }
        Ok(meta)
    }
}

/// Days since 1970-01-01 to a civil `YYYY-MM-DD` (proleptic Gregorian, UTC).
pub(crate) fn day_of(nanos: i64) -> String {
    let (year, month, day) = civil_date(nanos.div_euclid(86_400_000_000_000));
    format!("{year:04}-{month:02}-{day:02}")
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`); exact for every day an `i64` of nanoseconds reaches, and far
/// beyond.
pub fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// The rows of `chunks` (each in the span schema, keys resolved) as segment parts: one batch per
/// (retention tier, UTC day of `start_time`), in (tier, day) order, each sorted by
/// (session_id, conversation_id, trace_id, start_time), nulls last, so a session, a
/// conversation or a trace occupies few row runs. Only the sort keys are concatenated; the rows are gathered from
/// the chunks straight into their sorted order, so the whole memtable is copied once (a seal
/// used to concatenate it, split it and sort each part: three copies alive at its peak).
pub(crate) fn sorted_parts(chunks: &[RecordBatch]) -> Result<Vec<((String, String), RecordBatch)>> {
    let chunks: Vec<&RecordBatch> = chunks.iter().filter(|chunk| chunk.num_rows() > 0).collect();
    if chunks.is_empty() {
        return Ok(Vec::new());
    }
    let key = |name: &str| -> Result<Arc<dyn Array>> {
        let arrays: Vec<&dyn Array> = chunks
            .iter()
            .map(|chunk| chunk.column(column_index(name)).as_ref())
            .collect();
        Ok(arrow::compute::concat(&arrays)?)
    };
    let starts = key(columns::START_TIME)?;
    let days: Arc<dyn Array> = Arc::new(arrow::array::Int64Array::from_iter_values(
        starts
            .as_primitive::<TimestampNanosecondType>()
            .values()
            .iter()
            .map(|nanos| nanos.div_euclid(86_400_000_000_000)),
    ));
    let tiers = key(columns::RETENTION_TIER)?;
    let nulls_last = Some(SortOptions {
        descending: false,
        nulls_first: false,
    });
    let sort_columns = [
        Arc::clone(&tiers),
        Arc::clone(&days),
        key(columns::SESSION_ID)?,
        key(columns::CONVERSATION_ID)?,
        key(columns::TRACE_ID)?,
        Arc::clone(&starts),
    ]
    .map(|values| SortColumn {
        values,
        options: nulls_last,
    });
    let order = sort_indices_by_rows(&sort_columns)?;
    // Global row -> (chunk, row in chunk).
    let mut location = Vec::with_capacity(order.len());
    let mut offsets = Vec::with_capacity(chunks.len());
    let mut total = 0;
    for chunk in &chunks {
        offsets.push(total);
        total += chunk.num_rows();
    }
    for &row in order.values() {
        let row = row as usize;
        let chunk = offsets.partition_point(|&offset| offset <= row) - 1;
        location.push((chunk, row - offsets[chunk]));
    }
    let sorted = arrow::compute::interleave_record_batch(&chunks, &location)?;
    drop(location);
    let tiers = tiers.as_string::<i32>();
    let days = days.as_primitive::<arrow::datatypes::Int64Type>();
    let starts = starts.as_primitive::<TimestampNanosecondType>();
    let mut parts: Vec<((String, String), RecordBatch)> = Vec::new();
    let mut first = 0;
    let part_of = |position: usize| {
        let row = order.value(position) as usize;
        (tiers.value(row), days.value(row))
    };
    for position in 1..=order.len() {
        if position == order.len() || part_of(position) != part_of(first) {
            let row = order.value(first) as usize;
            let name = (tiers.value(row).to_owned(), day_of(starts.value(row)));
            parts.push((name, sorted.slice(first, position - first)));
            first = position;
        }
    }
    Ok(parts)
}

/// The stable sort order of rows by `columns` (lexicographic), through Arrow's row format:
/// each row's keys become one byte string compared with `memcmp`, which is several times
/// faster than comparing column by column (`lexsort_to_indices`) for string keys. Rows with
/// equal keys keep their order (arrival order in a memtable).
fn sort_indices_by_rows(columns: &[SortColumn]) -> Result<arrow::array::UInt32Array> {
    use arrow::row::{RowConverter, SortField};
    let fields = columns
        .iter()
        .map(|column| {
            SortField::new_with_options(
                column.values.data_type().clone(),
                column.options.unwrap_or_default(),
            )
        })
        .collect();
    let converter = RowConverter::new(fields)?;
    let values: Vec<Arc<dyn Array>> = columns
        .iter()
        .map(|column| Arc::clone(&column.values))
        .collect();
    let rows = converter.convert_columns(&values)?;
    let count = u32::try_from(rows.num_rows()).map_err(|_| Error::Corrupt {
        location: "seal".to_owned(),
        detail: "more than 2^32 rows in one memtable".to_owned(),
    })?;
    let mut order: Vec<u32> = (0..count).collect();
    order.sort_by(|&a, &b| rows.row(a as usize).cmp(&rows.row(b as usize)));
    Ok(arrow::array::UInt32Array::from(order))
}

/// Runs of equal non-null values in a sorted string column: (value, first row, row count).
fn string_runs(batch: &RecordBatch, name: &str) -> Vec<(String, u64, u64)> {
    let Some(column) = batch.column_by_name(name) else {
        return Vec::new();
    };
    let column = column.as_string::<i32>();
    let mut runs: Vec<(String, u64, u64)> = Vec::new();
    for row in 0..column.len() {
        if column.is_null(row) {
            continue;
        }
        let value = column.value(row);
        match runs.last_mut() {
            Some((last, first, count)) if last == value && *first + *count == row as u64 => {
                *count += 1;
            }
            _ => runs.push((value.to_owned(), row as u64, 1)),
        }
    }
    runs
}

fn trace_runs(batch: &RecordBatch) -> Vec<([u8; 16], u64, u64)> {
    string_runs(batch, columns::TRACE_ID)
        .into_iter()
        .filter_map(|(text, first, count)| {
            let mut raw = [0u8; 16];
            hex::decode_to_slice(&text, &mut raw).ok()?;
            Some((raw, first, count))
        })
        .collect()
}

/// `meta` with the trace, session and conversation runs of its file, read from the key columns
/// (for removing a segment's index entries).
pub(crate) fn read_runs(meta: &SegmentMeta, path: &Path) -> Result<SegmentMeta> {
    let keys = [
        columns::TRACE_ID,
        columns::SESSION_ID,
        columns::CONVERSATION_ID,
    ]
    .map(column_index);
    let batch = read_all(meta, path, Some(&keys))?;
    let mut out = meta.clone();
    out.trace_runs = trace_runs(&batch);
    out.session_runs = string_runs(&batch, columns::SESSION_ID);
    out.conversation_runs = string_runs(&batch, columns::CONVERSATION_ID);
    Ok(out)
}

/// Every row and column of a segment file, as stored (late keys not applied).
pub(crate) fn read_whole(meta: &SegmentMeta, path: &Path) -> Result<RecordBatch> {
    read_all(meta, path, None)
}

/// Every row of a segment file, with the span-schema columns `columns` (`None`: all), as one
/// batch.
fn read_all(meta: &SegmentMeta, path: &Path, columns: Option<&[usize]>) -> Result<RecordBatch> {
    let segment_error = |source| Error::Segment {
        segment_id: meta.id,
        path: path.to_path_buf(),
        source,
    };
    let (file, metadata) = open_for_arrow(
        path,
        meta.integrity,
        ArrowReaderOptions::new(),
        PageIndexPolicy::Skip,
    )?;
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata);
    let Some(missing) = crate::schema::missing_columns(builder.schema().fields()) else {
        return Err(Error::Corrupt {
            location: path.display().to_string(),
            detail: "segment schema is not the span schema".to_owned(),
        });
    };
    let file_schema = Arc::clone(builder.schema());
    let file_columns = file_schema.fields().len();
    let (mask, schema) = match columns {
        Some(columns) => {
            // Columns the file predates are added as NULL below.
            let present: Vec<usize> = columns
                .iter()
                .copied()
                .filter(|column| *column < file_columns)
                .collect();
            (
                ProjectionMask::roots(builder.parquet_schema(), present.iter().copied()),
                Arc::new(span_schema().project(&present)?),
            )
        }
        None if missing > 0 => (ProjectionMask::all(), file_schema),
        None => (ProjectionMask::all(), span_schema()),
    };
    let batches = builder
        .with_projection(mask)
        .with_batch_size(8192)
        .build()
        .map_err(segment_error)?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|error| Error::Corrupt {
            location: path.display().to_string(),
            detail: error.to_string(),
        })?;
    let batch = arrow::compute::concat_batches(&schema, &batches)?;
    match columns {
        None => crate::schema::upgrade(batch),
        Some(columns) if columns.iter().all(|column| *column < file_columns) => Ok(batch),
        Some(columns) => {
            let mut out = Vec::with_capacity(columns.len());
            let mut read = batch.columns().iter();
            for column in columns {
                if *column < file_columns {
                    out.push(Arc::clone(read.next().ok_or_else(|| Error::Corrupt {
                        location: path.display().to_string(),
                        detail: "projection read fewer columns than asked".to_owned(),
                    })?));
                } else {
                    out.push(arrow::array::new_null_array(
                        span_schema().field(*column).data_type(),
                        batch.num_rows(),
                    ));
                }
            }
            Ok(RecordBatch::try_new(
                Arc::new(span_schema().project(columns)?),
                out,
            )?)
        }
    }
}

/// Writer settings for segment files.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentWriteOptions {
    pub(crate) row_group_rows: usize,
    pub(crate) zstd_level: i32,
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| Error::io("fsync directory", dir, source))
}

/// Writes `batch` as the Parquet file `path`: under a temporary name, fsync'd, then renamed
/// into place (the caller fsyncs the directory), with block checksums in its footer
/// (`checked_file`). Returns the file's size and what checks its tail.
pub(crate) fn write_parquet_file(
    path: &Path,
    batch: &RecordBatch,
    properties: WriterProperties,
    parquet_error: impl Fn(parquet::errors::ParquetError) -> Error,
) -> Result<(u64, Integrity)> {
    let temporary = path.with_extension("parquet.tmp");
    let file =
        File::create(&temporary).map_err(|source| Error::io("create", &temporary, source))?;
    let mut writer = ArrowWriter::try_new(
        CrcSink::new(BufWriter::new(file)),
        batch.schema(),
        Some(properties),
    )
    .map_err(&parquet_error)?;
    writer.write(batch).map_err(&parquet_error)?;
    writer.flush().map_err(&parquet_error)?;
    // Everything of the row groups has reached the sink: the data region ends here.
    writer
        .sync()
        .map_err(|source| Error::io("write", &temporary, source))?;
    let blocks = writer.inner_mut().mark_tail();
    writer.append_key_value_metadata(blocks);
    let (integrity, buffered) = writer.into_inner().map_err(&parquet_error)?.finish();
    let file = buffered
        .into_inner()
        .map_err(|error| Error::io("flush", &temporary, error.into_error()))?;
    file.sync_all()
        .map_err(|source| Error::io("fsync", &temporary, source))?;
    let bytes = file
        .metadata()
        .map_err(|source| Error::io("stat", &temporary, source))?
        .len();
    drop(file);
    fs::rename(&temporary, path).map_err(|source| Error::io("rename", &temporary, source))?;
    Ok((bytes, integrity))
}

/// Writes one sorted batch as segment `id` and returns its catalog entry.
pub(crate) fn write_segment(
    data_dir: &Path,
    id: u64,
    tier: &str,
    day: &str,
    batch: &RecordBatch,
    options: SegmentWriteOptions,
) -> Result<SegmentMeta> {
    let relative = format!("segments/{tier}/{day}/{id:016x}.parquet");
    let path = data_dir.join(&relative);
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| data_dir.to_path_buf());
    fs::create_dir_all(&dir).map_err(|source| Error::io("create directory", &dir, source))?;
    let segment_error = |source| Error::Segment {
        segment_id: id,
        path: path.clone(),
        source,
    };

    let level = ZstdLevel::try_new(options.zstd_level).unwrap_or_default();
    let mut properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(options.row_group_rows.max(1)))
        .set_statistics_enabled(EnabledStatistics::Page)
        // Small pages: a session's or trace's row run is read through the page index without
        // decoding its neighbours.
        .set_data_page_row_count_limit(DATA_PAGE_ROWS)
        .set_write_batch_size(DATA_PAGE_ROWS)
        .set_column_bloom_filter_enabled(ColumnPath::from(columns::TRACE_ID), true);
    // The typed-attribute blobs are nearly unique per row and never filtered on: dictionary
    // attempts and min/max statistics on them are wasted work at seal time.
    for blob in [
        ColumnPath::from(columns::SPAN_OTLP),
        ColumnPath::from(vec![columns::LOG.to_owned(), columns::log::OTLP.to_owned()]),
    ] {
        properties = properties
            .set_column_dictionary_enabled(blob.clone(), false)
            .set_column_statistics_enabled(blob, EnabledStatistics::None);
    }
    // Nearly unique per row: a dictionary does not compress them, and it is one more page that
    // a read of a few rows (one session, one trace) must fetch and decode whole.
    for name in [
        columns::TRACE_ID,
        columns::SPAN_ID,
        columns::PARENT_SPAN_ID,
        columns::START_TIME,
        columns::END_TIME,
        columns::DURATION_NS,
        columns::TOOL_CALL_ID,
    ] {
        properties = properties.set_column_dictionary_enabled(ColumnPath::from(name), false);
    }
    for leaf in crate::column_codecs::NO_DICTIONARY_SPAN_LEAVES {
        properties =
            properties.set_column_dictionary_enabled(crate::column_codecs::leaf_path(leaf), false);
    }
    let properties =
        crate::column_codecs::delta_encoded(properties, crate::column_codecs::DELTA_SPAN_LEAVES);
    let properties = crate::column_codecs::without_needless_zstd(
        properties,
        batch,
        crate::column_codecs::UNCOMPRESSED_SPAN_LEAVES,
    );
    let (bytes, integrity) = write_parquet_file(&path, batch, properties.build(), segment_error)?;
    // The file's entry, and the entries of directories create_dir_all may have just made
    // (day, tier, segments), must be durable before the catalog references the file.
    let mut ancestor = Some(dir.as_path());
    while let Some(current) = ancestor {
        fsync_dir(current)?;
        if current == data_dir {
            break;
        }
        ancestor = current.parent();
    }

    let mut meta = describe(id, tier, day, relative, bytes, batch);
    meta.integrity = Some(integrity);
    Ok(meta)
}

fn describe(
    id: u64,
    tier: &str,
    day: &str,
    path: String,
    bytes: u64,
    batch: &RecordBatch,
) -> SegmentMeta {
    let starts = batch
        .column(column_index(columns::START_TIME))
        .as_primitive::<TimestampNanosecondType>();
    let min_start = arrow::compute::min(starts).unwrap_or(0);
    let max_start = arrow::compute::max(starts).unwrap_or(0);
    let max_end = arrow::compute::max(
        batch
            .column(column_index(columns::END_TIME))
            .as_primitive::<TimestampNanosecondType>(),
    );
    let max_arrival = arrow::compute::max(
        batch
            .column(column_index(columns::ARRIVAL_TIME))
            .as_primitive::<TimestampNanosecondType>(),
    );
    let services_column = batch
        .column(column_index(columns::SERVICE_NAME))
        .as_string::<i32>();
    let mut services = Some(BTreeSet::new());
    let mut has_null_service = false;
    for row in 0..services_column.len() {
        if services_column.is_null(row) {
            has_null_service = true;
            continue;
        }
        if let Some(set) = services.as_mut() {
            set.insert(services_column.value(row).to_owned());
            if set.len() > MAX_SERVICES_PER_SEGMENT {
                services = None;
            }
        }
    }
    let trace_runs = trace_runs(batch);
    let log_rows = batch
        .column_by_name(columns::LOG)
        .map_or(0, |log| (log.len() - log.null_count()) as u64);
    SegmentMeta {
        id,
        tier: tier.to_owned(),
        day: day.to_owned(),
        path,
        rows: batch.num_rows() as u64,
        bytes,
        min_start,
        max_start,
        max_end,
        max_arrival,
        services,
        has_null_service,
        integrity: None,
        log_rows,
        compaction_run: None,
        sidecar_integrity: None,
        trace_runs,
        session_runs: string_runs(batch, columns::SESSION_ID),
        conversation_runs: string_runs(batch, columns::CONVERSATION_ID),
    }
}

/// Leaf column index of a top-level primitive column in a Parquet schema.
fn leaf_index(metadata: &RowGroupMetaData, name: &str) -> Option<usize> {
    metadata
        .columns()
        .iter()
        .position(|column| column.column_path().string() == name)
}

fn byte_stats(metadata: &RowGroupMetaData, name: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let column = metadata.column(leaf_index(metadata, name)?);
    match column.statistics()? {
        Statistics::ByteArray(stats) => Some((
            stats.min_opt()?.data().to_vec(),
            stats.max_opt()?.data().to_vec(),
        )),
        _ => None,
    }
}

fn int64_stats(metadata: &RowGroupMetaData, name: &str) -> Option<(i64, i64)> {
    let column = metadata.column(leaf_index(metadata, name)?);
    match column.statistics()? {
        Statistics::Int64(stats) => Some((*stats.min_opt()?, *stats.max_opt()?)),
        _ => None,
    }
}

/// True when the row group may hold rows matching the predicate (by min/max statistics).
fn row_group_may_match(metadata: &RowGroupMetaData, predicate: &RowPredicate) -> bool {
    if let Some((min, max)) = int64_stats(metadata, columns::START_TIME)
        && !predicate.request.time_overlaps(min, max)
    {
        return false;
    }
    if let Some(ids) = predicate.trace_ids()
        && let Some((min, max)) = byte_stats(metadata, columns::TRACE_ID)
        && !ids
            .iter()
            .any(|id| id.as_bytes() >= min.as_slice() && id.as_bytes() <= max.as_slice())
    {
        return false;
    }
    if let Some(names) = predicate.service_names()
        && let Some((min, max)) = byte_stats(metadata, columns::SERVICE_NAME)
        && !names
            .iter()
            .any(|name| name.as_bytes() >= min.as_slice() && name.as_bytes() <= max.as_slice())
    {
        return false;
    }
    true
}

/// Opens a segment for a scan: prunes row groups by statistics and by the requested row
/// ranges, selects the ranges' rows through the page index, pushes the exact predicate into the
/// Parquet reader as a row filter, resolves late trace keys, and projects. A point read (row
/// ranges of at most one batch, many columns) decodes its columns in groups on parallel
/// threads (`column_split`).
pub(crate) fn read_segment(
    meta: &SegmentMeta,
    path: &Path,
    predicate: Arc<RowPredicate>,
    metrics: Arc<ScanMetrics>,
    read: SegmentRead,
) -> Result<BatchIter> {
    let segment_error = |source| Error::Segment {
        segment_id: meta.id,
        path: path.to_path_buf(),
        source,
    };
    // The page index lets a row selection skip pages instead of decoding them.
    let (file, metadata) = open_for_arrow(
        path,
        meta.integrity,
        ArrowReaderOptions::new(),
        PageIndexPolicy::from(read.ranges.is_some()),
    )?;
    let builder =
        ParquetRecordBatchReaderBuilder::new_with_metadata(file.clone(), metadata.clone());
    // A file written before `arrival_time` or `content_refs` existed reads them as NULL.
    if crate::schema::missing_columns(builder.schema().fields()).is_none() {
        return Err(Error::Corrupt {
            location: path.display().to_string(),
            detail: "segment schema is not the span schema".to_owned(),
        });
    }
    let file_columns = builder.schema().fields().len();
    let parquet_metadata = Arc::clone(builder.metadata());
    let schema_descriptor = builder.parquet_schema().clone();

    let projection: Vec<usize> = match &predicate.request.projection {
        Some(indices) => indices.clone(),
        None => (0..span_schema().fields().len()).collect(),
    };
    // With late keys, session/conversation predicates run after resolution, on the key columns.
    let late = read.late.filter(|late| !late.is_empty());
    let (mut row_filter_columns, post_filter) = if late.is_some() {
        (
            predicate.filter_columns(Predicates::WithoutKeys),
            predicate.has_key_predicates(),
        )
    } else {
        (predicate.filter_columns(Predicates::All), false)
    };
    // A file written before log rows existed has no `log` column and only span rows.
    if column_index(columns::LOG) >= file_columns {
        if predicate.request.family == crate::RowFamily::Logs {
            return Ok(Box::new(std::iter::empty()));
        }
        row_filter_columns.retain(|column| *column < file_columns);
    }
    let mut read_columns: BTreeSet<usize> = projection.iter().copied().collect();
    if late.is_some() {
        for name in [
            columns::TRACE_ID,
            columns::SESSION_ID,
            columns::CONVERSATION_ID,
            columns::USER_ID,
            columns::RETENTION_TIER,
        ] {
            read_columns.insert(column_index(name));
        }
    }
    read_columns.retain(|column| *column < file_columns);
    // The leaves read: every leaf of a read column; of a filter column every leaf too, except
    // `log`, whose one small `severity_number` leaf tells log rows from spans (its definition
    // levels carry the struct's validity) without reading the records themselves.
    let log_root = column_index(columns::LOG);
    let filter_leaves: Vec<usize> = (0..schema_descriptor.num_columns())
        .filter(|leaf| {
            let root = schema_descriptor.get_column_root_idx(*leaf);
            row_filter_columns.contains(&root)
                && (root != log_root
                    || schema_descriptor.column(*leaf).path().string() == LOG_FILTER_LEAF)
        })
        .collect();
    let wanted_leaf = |leaf: usize| {
        read_columns.contains(&schema_descriptor.get_column_root_idx(leaf))
            || filter_leaves.contains(&leaf)
    };

    let mut selected = Vec::new();
    let mut selectors: Vec<RowSelector> = Vec::new();
    // Per root column: what reading its selected pages costs (for a split point read).
    let mut root_cost = vec![0u64; file_columns];
    let mut selected_rows = 0u64;
    let mut group_start = 0u64;
    let offset_index = parquet_metadata.offset_index();
    for (index, row_group) in parquet_metadata.row_groups().iter().enumerate() {
        let group_rows = row_group.num_rows().max(0) as u64;
        let group = group_start..group_start + group_rows;
        group_start += group_rows;
        let in_group: Option<Vec<Range<u64>>> = read.ranges.as_ref().map(|ranges| {
            ranges
                .iter()
                .filter_map(|range| {
                    let start = range.start.max(group.start);
                    let end = range.end.min(group.end);
                    (start < end).then(|| start - group.start..end - group.start)
                })
                .collect()
        });
        let chosen = row_group_may_match(row_group, &predicate)
            && in_group.as_ref().is_none_or(|ranges| !ranges.is_empty());
        if !chosen {
            ScanMetrics::add(&metrics.row_groups_pruned, 1);
            continue;
        }
        selected.push(index);
        let leaves = schema_descriptor.columns();
        let mut rows_in_selection = group_rows;
        if let Some(ranges) = &in_group {
            let mut at = 0u64;
            rows_in_selection = 0;
            for range in ranges {
                if range.start > at {
                    selectors.push(RowSelector::skip((range.start - at) as usize));
                }
                selectors.push(RowSelector::select((range.end - range.start) as usize));
                rows_in_selection += range.end - range.start;
                at = range.end;
            }
            if group_rows > at {
                selectors.push(RowSelector::skip((group_rows - at) as usize));
            }
        }
        for (leaf, column) in row_group.columns().iter().enumerate() {
            if !wanted_leaf(leaf) || leaf >= leaves.len() {
                continue;
            }
            // Bytes read: whole column chunks, or with a row selection only the dictionary and
            // the data pages that overlap it.
            let pages = offset_index
                .and_then(|groups| groups.get(index))
                .and_then(|columns| columns.get(leaf))
                .map(|offsets| offsets.page_locations());
            let bytes = match (&in_group, pages) {
                (Some(ranges), Some(pages)) if !pages.is_empty() => {
                    let dictionary = column.dictionary_page_offset().map_or(0, |offset| {
                        (column.data_page_offset() - offset).max(0) as u64
                    });
                    let mut bytes = dictionary;
                    for (page_index, page) in pages.iter().enumerate() {
                        let first = page.first_row_index.max(0) as u64;
                        let end = pages
                            .get(page_index + 1)
                            .map_or(group_rows, |next| next.first_row_index.max(0) as u64);
                        if ranges
                            .iter()
                            .any(|range| range.start < end && first < range.end)
                        {
                            bytes += page.compressed_page_size.max(0) as u64;
                        }
                    }
                    bytes
                }
                _ => column.compressed_size().max(0) as u64,
            };
            ScanMetrics::add(&metrics.bytes_read, bytes);
            if let Some(cost) = root_cost.get_mut(schema_descriptor.get_column_root_idx(leaf)) {
                *cost = cost.saturating_add(bytes + column_split::LEAF_COST);
            }
        }
        ScanMetrics::add(&metrics.rows_scanned, rows_in_selection);
        selected_rows += rows_in_selection;
    }
    ScanMetrics::add(&metrics.row_groups_read, selected.len() as u64);

    let selection = read.ranges.is_some().then(|| RowSelection::from(selectors));
    // The caller's filter runs after the engine's (its columns are decoded only for the rows
    // those keep), unless the file predates one of its columns. A failure it reports is kept
    // here and returned as the scan's error.
    let failed: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let filter_failure = {
        let failed = Arc::clone(&failed);
        move || {
            failed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .map(Error::Filter)
        }
    };
    let filters = || -> Vec<Box<dyn ArrowPredicate>> {
        let mut filters: Vec<Box<dyn ArrowPredicate>> = Vec::new();
        if !row_filter_columns.is_empty() {
            let mask = ProjectionMask::leaves(&schema_descriptor, filter_leaves.iter().copied());
            let filter_predicate = Arc::clone(&predicate);
            let which = if late.is_some() {
                Predicates::WithoutKeys
            } else {
                Predicates::All
            };
            filters.push(Box::new(ArrowPredicateFn::new(
                mask,
                move |batch: RecordBatch| {
                    Ok(filter_predicate.evaluate(&batch, which).unwrap_or_else(|| {
                        arrow::array::BooleanArray::from(vec![true; batch.num_rows()])
                    }))
                },
            )));
        }
        if let Some(filter) = predicate
            .request
            .row_filter
            .as_ref()
            .filter(|filter| filter.columns.iter().all(|column| *column < file_columns))
        {
            let mask = ProjectionMask::roots(&schema_descriptor, filter.columns.iter().copied());
            let keep = Arc::clone(&filter.keep);
            let failed = Arc::clone(&failed);
            filters.push(Box::new(ArrowPredicateFn::new(
                mask,
                move |batch| match keep(&batch) {
                    Ok(mask) if mask.null_count() == 0 => Ok(mask),
                    Ok(mask) => Ok(arrow::compute::prep_null_mask_filter(&mask)),
                    Err(message) => {
                        *failed
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some(message.clone());
                        Err(arrow::error::ArrowError::ComputeError(message))
                    }
                },
            )));
        }
        filters
    };
    // One reader of `projection` over the chosen row groups and `rows`, with `filters`.
    let reader_of = |builder: ParquetRecordBatchReaderBuilder<CheckedFile>,
                     projection: ProjectionMask,
                     rows: Option<&RowSelection>,
                     filters: Vec<Box<dyn ArrowPredicate>>| {
        let mut builder = builder
            .with_row_groups(selected.clone())
            .with_projection(projection)
            .with_batch_size(READ_BATCH_ROWS);
        if let Some(rows) = rows {
            builder = builder.with_row_selection(rows.clone());
        }
        if !filters.is_empty() {
            builder = builder.with_row_filter(RowFilter::new(filters));
        }
        builder
            .build()
            .map_err(|error| filter_failure().unwrap_or_else(|| segment_error(error)))
    };
    let fresh_builder =
        || ParquetRecordBatchReaderBuilder::new_with_metadata(file.clone(), metadata.clone());
    let read_roots: Vec<usize> = read_columns.iter().copied().collect();
    let groups = column_split::groups();
    let point_read = selection.as_ref().filter(|_| {
        selected_rows <= column_split::MAX_ROWS
            && read_roots.len() >= column_split::MIN_ROOTS
            && groups > 1
    });
    let reader: Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send> =
        if let Some(ranges) = point_read {
            // A point read: the filters run once, then the columns are decoded in groups on
            // parallel threads, each group over exactly the rows the filters kept.
            let rows = column_split::filtered_selection(
                ranges.clone(),
                filters(),
                |projection, rows| {
                    reader_of(fresh_builder(), projection.clone(), Some(rows), Vec::new())
                },
                |error| {
                    filter_failure().unwrap_or_else(|| Error::Corrupt {
                        location: format!("segment {} ({})", meta.id, path.display()),
                        detail: error.to_string(),
                    })
                },
            )?;
            let split = column_split::split(&read_roots, |root| root_cost[root], groups);
            let mut readers = Vec::with_capacity(split.len());
            for roots in &split {
                let projection = ProjectionMask::roots(&schema_descriptor, roots.iter().copied());
                readers.push(reader_of(
                    fresh_builder(),
                    projection,
                    Some(&rows),
                    Vec::new(),
                )?);
            }
            ScanMetrics::add(&metrics.split_reads, 1);
            match column_split::read_joined(readers, &split) {
                Ok(batches) => Box::new(batches.into_iter().map(Ok)),
                Err(error) => Box::new(std::iter::once(Err(error))),
            }
        } else {
            let projection = ProjectionMask::roots(&schema_descriptor, read_roots.iter().copied());
            Box::new(reader_of(
                builder,
                projection,
                selection.as_ref(),
                filters(),
            )?)
        };
    let segment_id = meta.id;
    let path: PathBuf = path.to_path_buf();
    // The Parquet reader yields the read columns in schema order; put the projection in request
    // order (dropping columns read only for key resolution).
    let read_order: Vec<usize> = read_columns.iter().copied().collect();
    let identity = read_order == projection;
    // Per output column: its position among the read ones, or `None` for a column the file
    // predates (NULL).
    let reorder: Vec<Option<usize>> = projection
        .iter()
        .filter(|index| read_order.binary_search(index).is_ok() || **index >= file_columns)
        .map(|index| read_order.binary_search(index).ok())
        .collect();
    let null_types: Vec<arrow::datatypes::DataType> = projection
        .iter()
        .filter(|index| read_order.binary_search(index).is_ok() || **index >= file_columns)
        .map(|index| span_schema().field(*index).data_type().clone())
        .collect();
    let output_schema = Arc::new(span_schema().project(&projection)?);
    Ok(Box::new(reader.map(move |batch| {
        let batch = batch.map_err(|error| {
            filter_failure().unwrap_or_else(|| Error::Corrupt {
                location: format!("segment {segment_id} ({})", path.display()),
                detail: error.to_string(),
            })
        })?;
        let batch = match &late {
            Some(late) => {
                let resolved = resolve_keys(&batch, |trace| late.get(trace), &predicate.policy)?;
                match post_filter
                    .then(|| predicate.evaluate(&resolved, Predicates::OnlyKeys))
                    .flatten()
                {
                    Some(mask) => filter_record_batch(&resolved, &mask)?,
                    None => resolved,
                }
            }
            None => batch,
        };
        if identity {
            Ok(batch)
        } else if reorder.iter().all(Option::is_some) {
            Ok(batch.project(&reorder.iter().flatten().copied().collect::<Vec<_>>())?)
        } else {
            let columns = reorder
                .iter()
                .zip(&null_types)
                .map(|(position, data_type)| match position {
                    Some(position) => Arc::clone(batch.column(*position)),
                    None => arrow::array::new_null_array(data_type, batch.num_rows()),
                })
                .collect();
            let options =
                arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
            Ok(RecordBatch::try_new_with_options(
                Arc::clone(&output_schema),
                columns,
                &options,
            )?)
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_parts_group_by_tier_and_day_and_sort_each_part_across_chunks() {
        use crate::batch::{AgentFields, SpanBatchBuilder, SpanRecord, with_retention_tiers};
        use crate::ids::{SpanId, TraceId};
        const DAY: i64 = 86_400_000_000_000;
        let base = 1_795_323_600_000_000_000;
        /// (tier, day offset, session, trace byte, start offset, span byte).
        type Row = (&'static str, i64, &'static str, u8, i64, u8);
        // Two chunks of four rows.
        let rows: [[Row; 4]; 2] = [
            [
                ("standard", 1, "b", 2, 5, 1),
                ("decision", 0, "a", 1, 3, 2),
                ("standard", 0, "b", 3, 1, 3),
                ("standard", 1, "a", 4, 9, 4),
            ],
            [
                ("standard", 1, "a", 4, 2, 5),
                ("decision", 0, "a", 1, 1, 6),
                ("standard", 0, "a", 5, 7, 7),
                ("standard", 1, "b", 2, 4, 8),
            ],
        ];
        let chunks: Vec<RecordBatch> = rows
            .iter()
            .map(|chunk| {
                let mut builder = SpanBatchBuilder::new();
                for (_, day, session, trace, start, span) in chunk {
                    builder.append(&SpanRecord {
                        trace_id: TraceId([*trace; 16]),
                        span_id: SpanId([*span; 8]),
                        start_time_unix_nano: base + day * DAY + start,
                        agent: AgentFields {
                            session_id: Some((*session).into()),
                            ..AgentFields::default()
                        },
                        ..SpanRecord::default()
                    });
                }
                let tiers: Vec<Option<&str>> = chunk.iter().map(|row| Some(row.0)).collect();
                with_retention_tiers(&builder.finish(), &tiers).unwrap()
            })
            .collect();
        // The expected order, computed from the tuples: (tier, day), then session, trace, start.
        let mut expected: Vec<_> = rows.iter().flatten().copied().collect();
        expected.sort_by_key(|(tier, day, session, trace, start, _)| {
            (*tier, *day, *session, *trace, *start)
        });
        let parts = sorted_parts(&chunks).unwrap();
        let names: Vec<(String, String)> = parts.iter().map(|(name, _)| name.clone()).collect();
        assert_eq!(
            names,
            [
                ("decision", "2026-11-22"),
                ("standard", "2026-11-22"),
                ("standard", "2026-11-23"),
            ]
            .map(|(tier, day)| (tier.to_owned(), day.to_owned()))
        );
        let spans: Vec<u8> = parts
            .iter()
            .flat_map(|(_, batch)| {
                let ids = batch
                    .column(column_index(columns::SPAN_ID))
                    .as_string::<i32>();
                (0..batch.num_rows())
                    .map(|row| u8::from_str_radix(&ids.value(row)[..2], 16).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        let want: Vec<u8> = expected.iter().map(|row| row.5).collect();
        assert_eq!(spans, want);
        assert!(sorted_parts(&[]).unwrap().is_empty());
    }

    #[test]
    fn civil_days_are_right_around_known_dates() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(-1), "1969-12-31");
        // 2026-11-22T05:00:00Z
        assert_eq!(day_of(1_795_323_600_000_000_000), "2026-11-22");
        // 2024-02-29T12:00:00Z
        assert_eq!(day_of(1_709_208_000_000_000_000), "2024-02-29");
    }

    #[test]
    fn a_file_written_before_arrival_time_and_content_refs_reads_them_as_null() {
        use crate::batch::{SpanBatchBuilder, SpanRecord};
        use crate::ids::{SpanId, TraceId};
        let mut builder = SpanBatchBuilder::new();
        for span in 1..=3u8 {
            builder.append(&SpanRecord {
                trace_id: TraceId([7; 16]),
                span_id: SpanId([span; 8]),
                start_time_unix_nano: i64::from(span),
                end_time_unix_nano: 10,
                ..SpanRecord::default()
            });
        }
        let current = builder.finish();
        // The same rows as a store of format 2 wrote them: without the last two columns.
        let fields = current.schema().fields().len();
        let legacy = current
            .project(&(0..fields - 2).collect::<Vec<_>>())
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0000000000000001.parquet");
        let mut writer =
            ArrowWriter::try_new(File::create(&path).unwrap(), legacy.schema(), None).unwrap();
        writer.write(&legacy).unwrap();
        writer.close().unwrap();
        let meta = SegmentMeta {
            id: 1,
            tier: "standard".into(),
            day: "1970-01-01".into(),
            path: "0000000000000001.parquet".into(),
            rows: 3,
            bytes: 0,
            min_start: 1,
            max_start: 3,
            max_end: None,
            max_arrival: None,
            services: None,
            has_null_service: true,
            integrity: None,
            log_rows: 0,
            compaction_run: None,
            sidecar_integrity: None,
            trace_runs: Vec::new(),
            session_runs: Vec::new(),
            conversation_runs: Vec::new(),
        };
        // Whole (the sidecar rebuild's read): the span schema, arrival_time NULL.
        let whole = read_whole(&meta, &path).unwrap();
        assert_eq!(whole.schema(), span_schema());
        let arrival = column_index(columns::ARRIVAL_TIME);
        assert_eq!(whole.column(arrival).null_count(), 3);
        let refs = column_index(columns::CONTENT_REFS);
        assert_eq!(whole.column(refs).null_count(), 3);
        // A scan asking for both among other columns, out of schema order.
        let request = crate::scan::ScanRequest {
            projection: Some(vec![arrival, refs, column_index(columns::SPAN_ID)]),
            ..crate::scan::ScanRequest::default()
        };
        let predicate = Arc::new(RowPredicate::new(
            &request,
            Arc::new(crate::retention::RetentionPolicy::default()),
        ));
        let batches: Vec<RecordBatch> = read_segment(
            &meta,
            &path,
            predicate,
            Arc::new(ScanMetrics::default()),
            SegmentRead::default(),
        )
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
        let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(batch.schema().field(0).name(), columns::ARRIVAL_TIME);
        assert_eq!(batch.column(0).null_count(), 3);
        assert_eq!(batch.schema().field(1).name(), columns::CONTENT_REFS);
        assert_eq!(batch.column(1).null_count(), 3);
        assert_eq!(
            batch.column(2).as_string::<i32>().value(2),
            hex::encode([3u8; 8])
        );
    }

    #[test]
    fn catalog_entries_round_trip_and_reject_other_versions() {
        let meta = SegmentMeta {
            id: 9,
            tier: "standard".into(),
            day: "2026-11-22".into(),
            path: "segments/standard/2026-11-22/0000000000000009.parquet".into(),
            rows: 3,
            bytes: 100,
            min_start: 1,
            max_start: 2,
            max_end: None,
            max_arrival: None,
            services: Some(["a".to_owned()].into()),
            has_null_service: false,
            integrity: None,
            log_rows: 0,
            compaction_run: None,
            sidecar_integrity: None,
            trace_runs: Vec::new(),
            session_runs: Vec::new(),
            conversation_runs: Vec::new(),
        };
        assert_eq!(SegmentMeta::decode(9, &meta.encode()).unwrap(), meta);
        let mut bad = meta.encode();
        bad[0] = 7;
        assert!(SegmentMeta::decode(9, &bad).is_err());
        assert!(SegmentMeta::decode(8, &meta.encode()).is_err());
    }
}
