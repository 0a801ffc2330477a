//! [`SpansScanExec`]: the DataFusion leaf that reads spans from the engine.
//!
//! The engine's scan is synchronous disk I/O, so every partition runs its [`ScanUnit`]s on a
//! blocking thread ([`crate::blocking`]).
//!
//! Planning happens when the first partition starts (not when DataFusion plans the query, so
//! `EXPLAIN` touches no data). The units of one engine plan are dealt round robin to the
//! partitions. A partition executed again (a recursive query re-runs its plan) finds its slot
//! empty and starts a new engine plan for every partition, so partitions of one run always
//! share one plan.

use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError};

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result as DfResult, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, SchedulingType};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, Metric, MetricBuilder, MetricType, MetricValue, MetricsSet,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use engine::{Engine, ScanMetrics, ScanMetricsSnapshot, ScanRequest, ScanUnit, span_schema};

use crate::blocking::{BatchSender, blocking_stream};
use crate::error::engine_error;
use crate::pushdown::{describe, matches_nothing};

/// Reads spans from the engine with pushed-down filters, projection and limit.
#[derive(Debug)]
pub(crate) struct SpansScanExec {
    source: Arc<ScanSource>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

/// What to read and the per-run state shared by the partitions.
#[derive(Debug)]
struct ScanSource {
    engine: Arc<Engine>,
    /// Output columns as indices into the engine span schema, in output order.
    columns: Vec<usize>,
    /// The request sent to the engine. Its projection is ascending and never empty, because
    /// segment reads return columns in schema order and a row count needs some column.
    request: ScanRequest,
    /// For each output column, its position in the engine's output.
    positions: Vec<usize>,
    schema: SchemaRef,
    limit: Option<usize>,
    partitions: usize,
    state: Mutex<RunState>,
}

#[derive(Debug, Default)]
struct RunState {
    /// Units waiting for their partition; `None` once taken (or before the first plan).
    pending: Vec<Option<Vec<ScanUnit>>>,
    /// Metrics of every engine plan made by this node.
    metrics: Vec<Arc<ScanMetrics>>,
}

impl SpansScanExec {
    /// `request` holds the pushed predicates (from [`crate::pushdown::scan_request`]); its
    /// projection and limit are replaced by `columns` (engine span schema indices in the order
    /// the output should have) and `limit`.
    pub(crate) fn new(
        engine: Arc<Engine>,
        mut request: ScanRequest,
        columns: Vec<usize>,
        limit: Option<usize>,
        partitions: usize,
    ) -> DfResult<Self> {
        let partitions = partitions.max(1);
        let schema = Arc::new(span_schema().project(&columns)?);
        let mut read: Vec<usize> = columns.clone();
        read.sort_unstable();
        read.dedup();
        if read.is_empty() {
            // Only the row count is needed: read the narrowest column.
            read.push(span_schema().index_of(engine::schema::columns::FLAGS)?);
        }
        let mut positions = Vec::with_capacity(columns.len());
        for column in &columns {
            match read.binary_search(column) {
                Ok(position) => positions.push(position),
                Err(_) => return internal_err!("scan column {column} missing from the read set"),
            }
        }
        request.projection = Some(read);
        request.limit = limit;
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        )
        // The consumer waits on a tokio channel, which takes part in tokio's task budget.
        .with_scheduling_type(SchedulingType::Cooperative);
        let source = ScanSource {
            engine,
            columns,
            request,
            positions,
            schema,
            limit,
            partitions,
            state: Mutex::new(RunState {
                pending: (0..partitions).map(|_| None).collect(),
                metrics: Vec::new(),
            }),
        };
        Ok(SpansScanExec {
            source: Arc::new(source),
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// Whether a pushed filter narrows this scan to part of the store (traces, sessions,
    /// conversations, services, a time range, a limit), so that it may read far fewer rows
    /// than the store holds.
    pub(crate) fn is_narrowed(&self) -> bool {
        let request = &self.source.request;
        request.trace_ids.is_some()
            || request.session_ids.is_some()
            || request.conversation_ids.is_some()
            || request.service_names.is_some()
            || !request.sessions_or_conversations.is_empty()
            || request.start_time != (Bound::Unbounded, Bound::Unbounded)
            || self.source.limit.is_some()
    }

    /// Rows the store holds now (sealed and in memory): what a scan this node runs reads at
    /// most, give or take what arrives before it runs.
    pub(crate) fn store_rows(&self) -> u64 {
        let stats = self.source.engine.stats();
        stats.segment_rows + stats.memtable_rows as u64
    }

    /// The engine counters of every scan this node ran so far, summed.
    pub(crate) fn engine_metrics(&self) -> ScanMetricsSnapshot {
        self.source.engine_metrics()
    }
}

impl ScanSource {
    fn engine_metrics(&self) -> ScanMetricsSnapshot {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut total = ScanMetricsSnapshot::default();
        for metrics in &state.metrics {
            add_metrics(&mut total, &metrics.snapshot());
        }
        total
    }

    /// The units of `partition`, planning a new engine scan when its slot is empty.
    /// Blocking: may read the engine's catalog.
    fn take_units(&self, partition: usize) -> DfResult<Vec<ScanUnit>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(units) = state.pending.get_mut(partition).and_then(Option::take) {
            return Ok(units);
        }
        if matches_nothing(&self.request) {
            return Ok(Vec::new());
        }
        let plan = self.engine.plan_scan(&self.request).map_err(engine_error)?;
        state.metrics.push(plan.metrics());
        let mut slots: Vec<Vec<ScanUnit>> = (0..self.partitions).map(|_| Vec::new()).collect();
        for (index, unit) in plan
            .into_parallel_units(self.partitions)
            .into_iter()
            .enumerate()
        {
            slots[index % self.partitions].push(unit);
        }
        let mine = std::mem::take(&mut slots[partition]);
        state.pending = slots.into_iter().map(Some).collect();
        if let Some(slot) = state.pending.get_mut(partition) {
            *slot = None;
        }
        Ok(mine)
    }

    /// Reorders an engine batch into the output schema.
    fn to_output(&self, batch: &RecordBatch) -> DfResult<RecordBatch> {
        let columns: Vec<ArrayRef> = self
            .positions
            .iter()
            .map(|position| Arc::clone(batch.column(*position)))
            .collect();
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &options,
        )?)
    }

    /// Runs one partition on the current (blocking) thread, sending batches of at most
    /// `batch_size` rows until done, failed, or the receiver is gone.
    fn run_partition(
        &self,
        partition: usize,
        batch_size: usize,
        sender: &BatchSender,
        output_rows: &Count,
    ) {
        if let Err(error) = self.send_partition(partition, batch_size, sender, output_rows) {
            // The receiver may be gone already; then nobody needs the error.
            let _ = sender.blocking_send(Err(error));
        }
    }

    fn send_partition(
        &self,
        partition: usize,
        batch_size: usize,
        sender: &BatchSender,
        output_rows: &Count,
    ) -> DfResult<()> {
        let mut remaining = self.limit.unwrap_or(usize::MAX);
        for unit in self.take_units(partition)? {
            if sender.is_closed() {
                // The query was cancelled or finished early (timeout, LIMIT): stop reading.
                return Ok(());
            }
            for batch in unit.execute().map_err(engine_error)? {
                if sender.is_closed() {
                    return Ok(());
                }
                let batch = self.to_output(&batch.map_err(engine_error)?)?;
                let mut offset = 0;
                while offset < batch.num_rows() && remaining > 0 {
                    let length = (batch.num_rows() - offset).min(batch_size).min(remaining);
                    let slice = batch.slice(offset, length);
                    offset += length;
                    remaining -= length;
                    output_rows.add(length);
                    if sender.blocking_send(Ok(slice)).is_err() {
                        return Ok(());
                    }
                }
                if remaining == 0 {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// Adds `one` to `total`, counter by counter.
pub(crate) fn add_metrics(total: &mut ScanMetricsSnapshot, one: &ScanMetricsSnapshot) {
    total.segments_total += one.segments_total;
    total.segments_selected += one.segments_selected;
    total.row_groups_read += one.row_groups_read;
    total.row_groups_pruned += one.row_groups_pruned;
    total.bytes_read += one.bytes_read;
    total.rows_scanned += one.rows_scanned;
    total.rows_returned += one.rows_returned;
    total.split_reads += one.split_reads;
}

/// The names of `schema`'s columns at `indices`, comma-separated (for `EXPLAIN` lines).
pub(crate) fn column_list(schema: &arrow::datatypes::Schema, indices: &[usize]) -> String {
    indices
        .iter()
        .map(|index| schema.field(*index).name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl DisplayAs for SpansScanExec {
    fn fmt_as(&self, format: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = &self.source;
        let mut parts = Vec::new();
        let pushed = describe(&source.request);
        if !pushed.is_empty() {
            parts.push(pushed);
        }
        let schema = span_schema();
        if let Some(filter) = &source.request.row_filter {
            parts.push(format!(
                "row_filter=[{}]",
                column_list(&schema, &filter.columns)
            ));
        }
        parts.push(format!(
            "projection=[{}]",
            column_list(&schema, &source.columns)
        ));
        if let Some(limit) = source.limit {
            parts.push(format!("limit={limit}"));
        }
        parts.push(format!("partitions={}", source.partitions));
        match format {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                write!(f, "SpansScanExec: {}", parts.join(", "))
            }
            DisplayFormatType::TreeRender => write!(f, "{}", parts.join("\n")),
        }
    }
}

impl ExecutionPlan for SpansScanExec {
    fn name(&self) -> &str {
        "SpansScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return internal_err!("SpansScanExec has no children");
        }
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition >= self.source.partitions {
            return internal_err!(
                "SpansScanExec has {} partitions, asked for {partition}",
                self.source.partitions
            );
        }
        let batch_size = context.session_config().batch_size().max(1);
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let source = Arc::clone(&self.source);
        blocking_stream(Arc::clone(&self.source.schema), move |sender| {
            source.run_partition(partition, batch_size, sender, &output_rows);
        })
    }

    fn metrics(&self) -> Option<MetricsSet> {
        let mut set = self.metrics.clone_inner();
        let engine = self.engine_metrics();
        for (name, value) in [
            ("segments_total", engine.segments_total),
            ("segments_selected", engine.segments_selected),
            ("row_groups_read", engine.row_groups_read),
            ("row_groups_pruned", engine.row_groups_pruned),
            ("bytes_read", engine.bytes_read),
            ("rows_scanned", engine.rows_scanned),
            ("rows_returned", engine.rows_returned),
            ("split_reads", engine.split_reads),
        ] {
            let count = Count::new();
            count.add(usize::try_from(value).unwrap_or(usize::MAX));
            let metric = Metric::new(
                MetricValue::Count {
                    name: name.into(),
                    count,
                },
                None,
            )
            .with_type(MetricType::Summary);
            set.push(Arc::new(metric));
        }
        Some(set)
    }
}
