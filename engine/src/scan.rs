//! Scans: a [`ScanRequest`] (time range, trace ids, services, projection, limit) becomes a
//! [`ScanPlan`] of independent [`ScanUnit`]s (one per selected segment, plus the memtable), each
//! yielding Arrow batches that satisfy the request's predicates exactly.

use std::collections::{HashMap, HashSet};
use std::ops::{Bound, Range};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, AsArray, BooleanArray, BooleanBufferBuilder, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{SchemaRef, TimestampNanosecondType};

use parking_lot::RwLock;

use crate::error::Result;
use crate::ids::TraceId;
use crate::retention::RetentionPolicy;
use crate::schema::{column_index, columns, span_schema};
use crate::segment::{SegmentMeta, read_segment};
use crate::trace_keys::{RawTraceId, TraceKeys, resolve_keys};

/// Which rows a scan returns: spans, OTLP log records (rows with a non-NULL `log` column,
/// see [`columns::LOG`]), or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum RowFamily {
    /// Span rows only (every reader of spans: SQL `spans`, Jaeger, agent tables).
    #[default]
    Spans,
    /// Log record rows only (SQL `logs`).
    Logs,
    /// Every row (the engine's own passes over whole traces).
    All,
}

/// What to read. Every predicate given is applied exactly: returned rows satisfy all of them
/// (`row_filter` too, except on segments older than a column it names).
#[derive(Debug, Clone)]
pub struct ScanRequest {
    /// Bounds on `start_time` (ns since the epoch).
    pub start_time: (Bound<i64>, Bound<i64>),
    /// Only rows of these traces.
    pub trace_ids: Option<Vec<TraceId>>,
    /// Only rows whose `service_name` is one of these (NULL never matches).
    pub service_names: Option<Vec<String>>,
    /// Only rows whose (resolved) `session_id` is one of these (NULL never matches).
    pub session_ids: Option<Vec<String>>,
    /// Only rows whose (resolved) `conversation_id` is one of these (NULL never matches).
    pub conversation_ids: Option<Vec<String>>,
    /// Disjunctions over the two keys, `(session_ids, conversation_ids)`: each keeps only rows
    /// whose (resolved) `session_id` is one of its session ids **or** whose `conversation_id` is
    /// one of its conversation ids (SQL `session_id = 'a' OR conversation_id = 'b'`). Every
    /// entry must hold, like every other predicate; answered from both indexes (the union of
    /// the runs of every key named).
    pub sessions_or_conversations: Vec<(Vec<String>, Vec<String>)>,
    /// Columns to return, as indices into [`span_schema`], in the order given; `None` for all.
    pub projection: Option<Vec<usize>>,
    /// Stop after this many rows per unit (the caller still applies its own limit).
    pub limit: Option<usize>,
    /// Span rows, log rows or both (spans by default).
    pub family: RowFamily,
    /// Only rows this filter keeps, handed the columns it names (indices into
    /// [`span_schema`], ascending) as stored; NULL drops the row. It must not name a column
    /// resolved at read ([`KEY_COLUMNS`]). A segment written before one of its columns existed
    /// is read without it: callers that may meet such segments apply the filter again (SQL
    /// does, above the scan).
    pub row_filter: Option<crate::agent::RowPredicate>,
}

/// The columns a read resolves from the trace's keys rather than returning as stored.
pub const KEY_COLUMNS: [&str; 4] = [
    columns::SESSION_ID,
    columns::CONVERSATION_ID,
    columns::USER_ID,
    columns::RETENTION_TIER,
];

impl Default for ScanRequest {
    fn default() -> Self {
        ScanRequest {
            start_time: (Bound::Unbounded, Bound::Unbounded),
            trace_ids: None,
            service_names: None,
            session_ids: None,
            conversation_ids: None,
            sessions_or_conversations: Vec::new(),
            projection: None,
            limit: None,
            family: RowFamily::Spans,
            row_filter: None,
        }
    }
}

impl ScanRequest {
    /// A request for every span of one trace.
    pub fn for_trace(trace_id: TraceId) -> Self {
        ScanRequest {
            trace_ids: Some(vec![trace_id]),
            ..ScanRequest::default()
        }
    }

    /// The projected schema of the batches this request returns.
    pub fn output_schema(&self) -> Result<SchemaRef> {
        match &self.projection {
            Some(indices) => Ok(Arc::new(span_schema().project(indices)?)),
            None => Ok(span_schema()),
        }
    }

    /// True when the start-time bounds admit some value in `[min, max]`.
    pub(crate) fn time_overlaps(&self, min: i64, max: i64) -> bool {
        let lower_ok = match self.start_time.1 {
            Bound::Included(upper) => min <= upper,
            Bound::Excluded(upper) => min < upper,
            Bound::Unbounded => true,
        };
        let upper_ok = match self.start_time.0 {
            Bound::Included(lower) => max >= lower,
            Bound::Excluded(lower) => max > lower,
            Bound::Unbounded => true,
        };
        lower_ok && upper_ok
    }

    fn time_contains(&self, value: i64) -> bool {
        self.time_overlaps(value, value)
    }
}

/// Counters filled while a plan runs; shared by all its units.
#[derive(Debug, Default)]
pub struct ScanMetrics {
    /// Segments in the catalog when the plan was made.
    pub segments_total: AtomicU64,
    /// Segments the plan reads (after catalog and index pruning).
    pub segments_selected: AtomicU64,
    /// Row groups read from segment files.
    pub row_groups_read: AtomicU64,
    /// Row groups skipped by their statistics.
    pub row_groups_pruned: AtomicU64,
    /// Compressed bytes of the column chunks read from segment files.
    pub bytes_read: AtomicU64,
    /// Rows decoded (segments) or examined (memtable) before exact filtering.
    pub rows_scanned: AtomicU64,
    /// Rows returned.
    pub rows_returned: AtomicU64,
    /// Point reads whose columns were decoded in groups on parallel threads.
    pub split_reads: AtomicU64,
}

impl ScanMetrics {
    pub(crate) fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    /// A plain copy of the counters.
    pub fn snapshot(&self) -> ScanMetricsSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ScanMetricsSnapshot {
            segments_total: get(&self.segments_total),
            segments_selected: get(&self.segments_selected),
            row_groups_read: get(&self.row_groups_read),
            row_groups_pruned: get(&self.row_groups_pruned),
            bytes_read: get(&self.bytes_read),
            rows_scanned: get(&self.rows_scanned),
            rows_returned: get(&self.rows_returned),
            split_reads: get(&self.split_reads),
        }
    }
}

/// A copy of [`ScanMetrics`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ScanMetricsSnapshot {
    pub segments_total: u64,
    pub segments_selected: u64,
    pub row_groups_read: u64,
    pub row_groups_pruned: u64,
    pub bytes_read: u64,
    pub rows_scanned: u64,
    pub rows_returned: u64,
    pub split_reads: u64,
}

/// The predicates of a request in the form the row filter needs.
#[derive(Debug)]
pub(crate) struct RowPredicate {
    pub(crate) request: ScanRequest,
    /// Ranks tiers when trace keys are resolved.
    pub(crate) policy: Arc<RetentionPolicy>,
    /// The trace ids in their stored form (lowercase hex).
    trace_ids: Option<HashSet<String>>,
    service_names: Option<HashSet<String>>,
    session_ids: Option<HashSet<String>>,
    conversation_ids: Option<HashSet<String>>,
    /// `(sessions, conversations)` of each entry of [`ScanRequest::sessions_or_conversations`].
    either_keys: Vec<(HashSet<String>, HashSet<String>)>,
}

/// Which predicates an evaluation covers: key predicates (session, conversation) must wait
/// until late trace keys are resolved on segments that have some.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Predicates {
    /// Every predicate.
    All,
    /// All but the session and conversation predicates.
    WithoutKeys,
    /// Only the session and conversation predicates.
    OnlyKeys,
}

fn as_set(values: &Option<Vec<String>>) -> Option<HashSet<String>> {
    values
        .as_ref()
        .map(|values| values.iter().cloned().collect())
}

fn keep_matching(
    keep: &mut BooleanBufferBuilder,
    batch: &RecordBatch,
    name: &str,
    values: &HashSet<String>,
) {
    if let Some(column) = batch.column_by_name(name) {
        let column = column.as_string::<i32>();
        for row in 0..batch.num_rows() {
            if keep.get_bit(row) && (column.is_null(row) || !values.contains(column.value(row))) {
                keep.set_bit(row, false);
            }
        }
    }
}

/// Clears the rows whose session is not in `sessions` and whose conversation is not in
/// `conversations` (NULL is in neither).
fn keep_matching_either(
    keep: &mut BooleanBufferBuilder,
    batch: &RecordBatch,
    sessions: &HashSet<String>,
    conversations: &HashSet<String>,
) {
    let (Some(session), Some(conversation)) = (
        batch.column_by_name(columns::SESSION_ID),
        batch.column_by_name(columns::CONVERSATION_ID),
    ) else {
        return;
    };
    let (session, conversation) = (session.as_string::<i32>(), conversation.as_string::<i32>());
    for row in 0..batch.num_rows() {
        let matches = (session.is_valid(row) && sessions.contains(session.value(row)))
            || (conversation.is_valid(row) && conversations.contains(conversation.value(row)));
        if keep.get_bit(row) && !matches {
            keep.set_bit(row, false);
        }
    }
}

impl RowPredicate {
    pub(crate) fn new(request: &ScanRequest, policy: Arc<RetentionPolicy>) -> Self {
        RowPredicate {
            request: request.clone(),
            policy,
            trace_ids: request
                .trace_ids
                .as_ref()
                .map(|ids| ids.iter().map(TraceId::to_string).collect()),
            service_names: as_set(&request.service_names),
            session_ids: as_set(&request.session_ids),
            conversation_ids: as_set(&request.conversation_ids),
            either_keys: request
                .sessions_or_conversations
                .iter()
                .map(|(sessions, conversations)| {
                    (
                        sessions.iter().cloned().collect(),
                        conversations.iter().cloned().collect(),
                    )
                })
                .collect(),
        }
    }

    /// True when the request filters on session or conversation.
    pub(crate) fn has_key_predicates(&self) -> bool {
        self.session_ids.is_some()
            || self.conversation_ids.is_some()
            || !self.either_keys.is_empty()
    }

    /// Columns (span schema indices) the chosen predicates read.
    pub(crate) fn filter_columns(&self, which: Predicates) -> Vec<usize> {
        let mut out = Vec::new();
        if which != Predicates::OnlyKeys {
            if self.request.family != RowFamily::All {
                out.push(column_index(columns::LOG));
            }
            if self.trace_ids.is_some() {
                out.push(column_index(columns::TRACE_ID));
            }
            if self.request.start_time != (Bound::Unbounded, Bound::Unbounded) {
                out.push(column_index(columns::START_TIME));
            }
            if self.service_names.is_some() {
                out.push(column_index(columns::SERVICE_NAME));
            }
        }
        if which != Predicates::WithoutKeys {
            if self.session_ids.is_some() || !self.either_keys.is_empty() {
                out.push(column_index(columns::SESSION_ID));
            }
            if self.conversation_ids.is_some() || !self.either_keys.is_empty() {
                out.push(column_index(columns::CONVERSATION_ID));
            }
        }
        out
    }

    /// The selection mask of the chosen predicates for `batch`, whose columns are looked up by
    /// name; `None` when nothing is filtered.
    pub(crate) fn evaluate(&self, batch: &RecordBatch, which: Predicates) -> Option<BooleanArray> {
        if self.filter_columns(which).is_empty() {
            return None;
        }
        let rows = batch.num_rows();
        let mut keep = BooleanBufferBuilder::new(rows);
        keep.append_n(rows, true);
        if which != Predicates::OnlyKeys {
            if self.request.family != RowFamily::All {
                let want_logs = self.request.family == RowFamily::Logs;
                // Without the column (rows written before log rows existed) every row is a span.
                let nulls = match batch.column_by_name(columns::LOG) {
                    Some(log) => log.logical_nulls(),
                    None => Some(arrow::buffer::NullBuffer::new_null(rows)),
                };
                match nulls {
                    // No log row: all spans.
                    Some(nulls) if nulls.null_count() == rows => {
                        if want_logs {
                            keep = BooleanBufferBuilder::new(rows);
                            keep.append_n(rows, false);
                        }
                    }
                    Some(nulls) => {
                        for row in 0..rows {
                            if nulls.is_valid(row) != want_logs {
                                keep.set_bit(row, false);
                            }
                        }
                    }
                    // Every row is a log row.
                    None => {
                        if !want_logs {
                            keep = BooleanBufferBuilder::new(rows);
                            keep.append_n(rows, false);
                        }
                    }
                }
            }
            if let Some(ids) = &self.trace_ids
                && let Some(column) = batch.column_by_name(columns::TRACE_ID)
            {
                let column = column.as_string::<i32>();
                for row in 0..rows {
                    if keep.get_bit(row) && !ids.contains(column.value(row)) {
                        keep.set_bit(row, false);
                    }
                }
            }
            if self.request.start_time != (Bound::Unbounded, Bound::Unbounded)
                && let Some(column) = batch.column_by_name(columns::START_TIME)
            {
                let column = column.as_primitive::<TimestampNanosecondType>();
                for row in 0..rows {
                    if keep.get_bit(row) && !self.request.time_contains(column.value(row)) {
                        keep.set_bit(row, false);
                    }
                }
            }
            if let Some(names) = &self.service_names {
                keep_matching(&mut keep, batch, columns::SERVICE_NAME, names);
            }
        }
        if which != Predicates::WithoutKeys {
            if let Some(sessions) = &self.session_ids {
                keep_matching(&mut keep, batch, columns::SESSION_ID, sessions);
            }
            if let Some(conversations) = &self.conversation_ids {
                keep_matching(&mut keep, batch, columns::CONVERSATION_ID, conversations);
            }
            for (sessions, conversations) in &self.either_keys {
                keep_matching_either(&mut keep, batch, sessions, conversations);
            }
        }
        Some(BooleanArray::new(keep.finish(), None))
    }

    /// Resolves trace keys, filters and projects a full-schema memtable batch.
    pub(crate) fn apply_memtable(
        &self,
        batch: &RecordBatch,
        keys: &RwLock<MemtableKeys>,
    ) -> Result<RecordBatch> {
        let resolved = {
            let keys = keys.read();
            resolve_keys(
                batch,
                |trace| keys.get(trace).map(|entry| &entry.keys),
                &self.policy,
            )?
        };
        let filtered = match self.evaluate(&resolved, Predicates::All) {
            Some(mask) => filter_record_batch(&resolved, &mask)?,
            None => resolved,
        };
        let filtered = match &self.request.row_filter {
            Some(filter) => {
                let mask = (filter.keep)(&filtered.project(&filter.columns)?)
                    .map_err(crate::Error::Filter)?;
                // NULL (unknown) drops the row, as in `WHERE`.
                let mask = match mask.null_count() {
                    0 => mask,
                    _ => arrow::compute::prep_null_mask_filter(&mask),
                };
                filter_record_batch(&filtered, &mask)?
            }
            None => filtered,
        };
        match &self.request.projection {
            Some(indices) => Ok(filtered.project(indices)?),
            None => Ok(filtered),
        }
    }

    pub(crate) fn trace_ids(&self) -> Option<&HashSet<String>> {
        self.trace_ids.as_ref()
    }

    pub(crate) fn service_names(&self) -> Option<&HashSet<String>> {
        self.service_names.as_ref()
    }
}

/// Trace keys of the traces that have rows in the memtable, with the memtable generation that
/// last wrote each (entries of sealed generations are dropped after the seal).
pub(crate) type MemtableKeys = HashMap<RawTraceId, MemtableKeysEntry>;

/// One [`MemtableKeys`] entry.
#[derive(Debug, Clone)]
pub(crate) struct MemtableKeysEntry {
    pub(crate) keys: TraceKeys,
    pub(crate) generation: u64,
}

/// Late keys of one segment: traces whose keys arrived after their rows were sealed there.
pub(crate) type LateKeys = HashMap<RawTraceId, TraceKeys>;

/// Where one unit reads from.
#[derive(Debug)]
enum UnitSource {
    Memory {
        batches: Vec<RecordBatch>,
        keys: Arc<RwLock<MemtableKeys>>,
    },
    Segment {
        meta: Arc<SegmentMeta>,
        path: std::path::PathBuf,
        read: SegmentRead,
    },
}

/// How to read one segment beyond the request's predicates.
#[derive(Debug, Clone, Default)]
pub(crate) struct SegmentRead {
    /// Only these row ranges (sorted, disjoint, in the segment's row numbers); all rows when
    /// `None`.
    pub(crate) ranges: Option<Vec<Range<u64>>>,
    /// Keys to resolve rows of late-keyed traces with.
    pub(crate) late: Option<Arc<LateKeys>>,
}

/// One independently executable part of a scan.
#[derive(Debug)]
pub struct ScanUnit {
    source: UnitSource,
    predicate: Arc<RowPredicate>,
    metrics: Arc<ScanMetrics>,
}

/// The batches one unit yields.
pub type BatchIter = Box<dyn Iterator<Item = Result<RecordBatch>> + Send>;

impl ScanUnit {
    /// Rows this unit's row ranges select (0 for a whole segment or the memtable).
    fn selected_rows(&self) -> u64 {
        match &self.source {
            UnitSource::Segment {
                read:
                    SegmentRead {
                        ranges: Some(ranges),
                        ..
                    },
                ..
            } => ranges.iter().map(|range| range.end - range.start).sum(),
            _ => 0,
        }
    }

    /// The row-group boundary (a multiple of `row_group_rows`) strictly inside this unit's
    /// selected rows that leaves the most even halves; `None` when its rows lie in one row
    /// group, or it is not a segment read of row ranges.
    fn split_point(&self, row_group_rows: u64) -> Option<u64> {
        let UnitSource::Segment {
            read:
                SegmentRead {
                    ranges: Some(ranges),
                    ..
                },
            ..
        } = &self.source
        else {
            return None;
        };
        if row_group_rows == 0 {
            return None;
        }
        let first = ranges.first()?.start;
        let last = ranges.last()?.end;
        let total: u64 = ranges.iter().map(|range| range.end - range.start).sum();
        let below = |boundary: u64| -> u64 {
            ranges
                .iter()
                .map(|range| range.end.min(boundary).saturating_sub(range.start))
                .sum()
        };
        (first / row_group_rows + 1..)
            .map(|group| group * row_group_rows)
            .take_while(|boundary| *boundary < last)
            .filter(|boundary| *boundary > first)
            .map(|boundary| (boundary, below(boundary)))
            .filter(|(_, before)| *before > 0 && *before < total)
            .min_by_key(|(_, before)| before.abs_diff(total - before))
            .map(|(boundary, _)| boundary)
    }

    /// Splits off the selected rows at and after `boundary` into a unit of their own (`None`
    /// for a unit that is not a segment read of row ranges).
    fn split_off(&mut self, boundary: u64) -> Option<ScanUnit> {
        let UnitSource::Segment {
            meta,
            path,
            read:
                SegmentRead {
                    ranges: Some(ranges),
                    late,
                },
        } = &mut self.source
        else {
            return None;
        };
        let mut after = Vec::new();
        ranges.retain_mut(|range| {
            if range.start >= boundary {
                after.push(range.clone());
                false
            } else {
                if range.end > boundary {
                    after.push(boundary..range.end);
                    range.end = boundary;
                }
                true
            }
        });
        after.sort_by_key(|range| range.start);
        Some(ScanUnit {
            source: UnitSource::Segment {
                meta: Arc::clone(meta),
                path: path.clone(),
                read: SegmentRead {
                    ranges: Some(after),
                    late: late.clone(),
                },
            },
            predicate: Arc::clone(&self.predicate),
            metrics: Arc::clone(&self.metrics),
        })
    }

    /// Reads this unit. Batches come in storage order; each satisfies the request exactly.
    pub fn execute(self) -> Result<BatchIter> {
        let limit = self.predicate.request.limit.unwrap_or(usize::MAX);
        let metrics = Arc::clone(&self.metrics);
        let inner: BatchIter = match self.source {
            UnitSource::Memory { batches, keys } => {
                let predicate = Arc::clone(&self.predicate);
                let metrics = Arc::clone(&self.metrics);
                Box::new(batches.into_iter().map(move |batch| {
                    ScanMetrics::add(&metrics.rows_scanned, batch.num_rows() as u64);
                    predicate.apply_memtable(&batch, &keys)
                }))
            }
            UnitSource::Segment { meta, path, read } => read_segment(
                &meta,
                &path,
                Arc::clone(&self.predicate),
                Arc::clone(&self.metrics),
                read,
            )?,
        };
        Ok(Box::new(LimitedIter {
            inner,
            remaining: limit,
            metrics,
        }))
    }

    /// True when this unit reads the memtable.
    pub fn is_memtable(&self) -> bool {
        matches!(self.source, UnitSource::Memory { .. })
    }
}

struct LimitedIter {
    inner: BatchIter,
    remaining: usize,
    metrics: Arc<ScanMetrics>,
}

impl Iterator for LimitedIter {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.remaining == 0 {
                return None;
            }
            let batch = match self.inner.next()? {
                Ok(batch) => batch,
                Err(error) => return Some(Err(error)),
            };
            if batch.num_rows() == 0 {
                continue;
            }
            let batch = if batch.num_rows() > self.remaining {
                batch.slice(0, self.remaining)
            } else {
                batch
            };
            self.remaining -= batch.num_rows();
            ScanMetrics::add(&self.metrics.rows_returned, batch.num_rows() as u64);
            return Some(Ok(batch));
        }
    }
}

/// A planned scan: the units to run and the metrics they fill.
#[derive(Debug)]
pub struct ScanPlan {
    units: Vec<ScanUnit>,
    schema: SchemaRef,
    metrics: Arc<ScanMetrics>,
    /// Rows per row group the segments are written with (0: not known, units never split).
    row_group_rows: u64,
}

impl ScanPlan {
    pub(crate) fn new(
        request: &ScanRequest,
        memtable: Vec<RecordBatch>,
        memtable_keys: Arc<RwLock<MemtableKeys>>,
        segments: Vec<(Arc<SegmentMeta>, std::path::PathBuf, SegmentRead)>,
        segments_total: usize,
        policy: Arc<RetentionPolicy>,
    ) -> Result<Self> {
        let schema = request.output_schema()?;
        let predicate = Arc::new(RowPredicate::new(request, Arc::clone(&policy)));
        // Segments without log rows (all written before logs existed, whose files lack the
        // `log` column, among them) need no family filter, or no reading for logs.
        let spans_only = Arc::new(RowPredicate::new(
            &ScanRequest {
                family: RowFamily::All,
                ..request.clone()
            },
            policy,
        ));
        let segments: Vec<_> = segments
            .into_iter()
            .filter(|(meta, _, _)| request.family != RowFamily::Logs || meta.log_rows > 0)
            .collect();
        let metrics = Arc::new(ScanMetrics::default());
        ScanMetrics::add(&metrics.segments_total, segments_total as u64);
        ScanMetrics::add(&metrics.segments_selected, segments.len() as u64);
        let mut units = Vec::with_capacity(segments.len() + 1);
        for (meta, path, read) in segments {
            let predicate = if meta.log_rows == 0 {
                Arc::clone(&spans_only)
            } else {
                Arc::clone(&predicate)
            };
            units.push(ScanUnit {
                source: UnitSource::Segment { meta, path, read },
                predicate,
                metrics: Arc::clone(&metrics),
            });
        }
        if !memtable.is_empty() {
            units.push(ScanUnit {
                source: UnitSource::Memory {
                    batches: memtable,
                    keys: memtable_keys,
                },
                predicate: Arc::clone(&predicate),
                metrics: Arc::clone(&metrics),
            });
        }
        Ok(ScanPlan {
            units,
            schema,
            metrics,
            row_group_rows: 0,
        })
    }

    /// Tells the plan the row-group size its segments are written with, so that
    /// [`ScanPlan::into_parallel_units`] can split a segment's rows between row groups.
    pub(crate) fn with_row_group_rows(mut self, rows: usize) -> Self {
        self.row_group_rows = u64::try_from(rows).unwrap_or(0);
        self
    }

    /// The schema of every batch the units yield.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The metrics all units of this plan fill.
    pub fn metrics(&self) -> Arc<ScanMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Number of units.
    pub fn len(&self) -> usize {
        self.units.len()
    }

    /// True when there is nothing to read.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// Takes the units out of the plan.
    pub fn into_units(self) -> Vec<ScanUnit> {
        self.units
    }

    /// Takes the units out of the plan, at least `parts` of them where rows allow: while
    /// there are fewer units than `parts`, the segment unit with the most selected rows
    /// spanning more than one row group is split at the row-group boundary that halves its
    /// rows best (a point read of one session or trace in one segment is then decoded by
    /// `parts` threads, each reading its own row groups). Every selected row stays in exactly
    /// one unit; each unit still yields its rows in storage order.
    pub fn into_parallel_units(self, parts: usize) -> Vec<ScanUnit> {
        let mut units = self.units;
        while units.len() < parts {
            let widest = units
                .iter()
                .enumerate()
                .filter_map(|(index, unit)| {
                    let split = unit.split_point(self.row_group_rows)?;
                    Some((unit.selected_rows(), index, split))
                })
                .max_by_key(|(rows, _, _)| *rows);
            let Some((_, index, split)) = widest else {
                break;
            };
            let Some(second) = units[index].split_off(split) else {
                break;
            };
            units.insert(index + 1, second);
        }
        units
    }

    /// Runs every unit in order and collects the batches (for small results).
    pub fn collect(self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for unit in self.units {
            for batch in unit.execute()? {
                out.push(batch?);
            }
        }
        Ok(out)
    }
}
