//! [`StoredAgentExec`]: a whole-store read of an agent table from the stored agent tables
//! (the sidecars written at seal, see `engine::agent`); for `sessions`, the session parts,
//! which `AgentDeriveExec` folds into rows.
//!
//! One engine plan ([`Engine::plan_agent_read`]) per run: its sidecars are dealt round robin
//! to the partitions, each read on a blocking thread; partition 0 also derives the traces the
//! sidecars cannot answer (split across segments, or in the memtable) from their spans, with
//! that input counted against the query's memory pool. Every trace comes from exactly one of
//! the two, so every row is counted once.
//!
//! A full `sessions` read merges each partition's sidecar parts; the last partition to finish
//! merges those into the engine's rollup ([`Engine::keep_session_rollup`]), and the next read
//! of the same sidecars (same segments, same skipped traces) takes the rollup in their place.

use std::collections::HashSet;
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result as DfResult, internal_err};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, SchedulingType};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use engine::agent::{
    AgentTable, RowPredicate, Strings, derive_stored, merge_session_parts, stored_schema,
    with_string_views,
};
use engine::{AgentRead, Engine, RollupLookup, ScanPlan, SessionRollupKey, SidecarRead};

use crate::agent_tables::with_types_of;
use crate::blocking::{BatchSender, blocking_stream};
use crate::error::engine_error;
use crate::scan::column_list;

/// How a table's stored files are read: string columns as views (`Utf8View`, the type the
/// agent tables have in SQL), except the session parts, which the engine folds as stored.
fn strings_of(table: AgentTable) -> Strings {
    match table {
        AgentTable::Sessions => Strings::Utf8,
        _ => Strings::Views,
    }
}

/// The stored form of `table` ([`stored_schema`]) as [`StoredAgentExec`] reads it.
pub(crate) fn read_schema(table: AgentTable) -> SchemaRef {
    match strings_of(table) {
        Strings::Utf8 => stored_schema(table),
        Strings::Views => with_string_views(&stored_schema(table)),
    }
}

/// Reads one agent table in its stored form ([`read_schema`]).
#[derive(Debug)]
pub(crate) struct StoredAgentExec {
    source: Arc<Source>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

#[derive(Debug)]
struct Source {
    engine: Arc<Engine>,
    table: AgentTable,
    start_time: (Bound<i64>, Bound<i64>),
    /// Output columns (indices into the stored schema), in output order.
    columns: Vec<usize>,
    /// The same, ascending and deduplicated: what is read.
    read: Vec<usize>,
    /// Rows the query keeps, evaluated while the files are read (`stored_filter`).
    predicate: Option<RowPredicate>,
    schema: SchemaRef,
    partitions: usize,
    state: Mutex<Vec<Option<Work>>>,
    /// A full `sessions` read building the rollup of its sidecars.
    rollup: Mutex<Option<RollupBuild>>,
}

/// What one partition does in one run.
#[derive(Debug)]
struct Work {
    derived: Arc<HashSet<String>>,
    sidecars: Vec<SidecarRead>,
    derive: Option<ScanPlan>,
    /// The kept rollup, standing for every sidecar not read (partition 0 only).
    rollup: Option<RecordBatch>,
    /// Whether this partition's merged sidecar parts go into a new rollup.
    builds_rollup: bool,
}

/// The partitions' merged sidecar parts, gathered into the rollup by the last one.
#[derive(Debug)]
struct RollupBuild {
    key: SessionRollupKey,
    pieces: Vec<RecordBatch>,
    remaining: usize,
}

impl StoredAgentExec {
    /// `projection`: indices into the table's stored schema; `start_time` skips segments
    /// whose spans all start outside it; `predicate` drops rows as the files are read (the
    /// caller filters the rows either way).
    pub(crate) fn new(
        engine: Arc<Engine>,
        table: AgentTable,
        projection: Option<Vec<usize>>,
        start_time: (Bound<i64>, Bound<i64>),
        predicate: Option<RowPredicate>,
        partitions: usize,
    ) -> DfResult<Self> {
        let stored = read_schema(table);
        let columns = projection.unwrap_or_else(|| (0..stored.fields().len()).collect());
        let schema = Arc::new(stored.project(&columns)?);
        let mut read = columns.clone();
        read.sort_unstable();
        read.dedup();
        let partitions = partitions.max(1);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        )
        .with_scheduling_type(SchedulingType::Cooperative);
        Ok(StoredAgentExec {
            source: Arc::new(Source {
                engine,
                table,
                start_time,
                columns,
                read,
                predicate,
                schema,
                partitions,
                state: Mutex::new(Vec::new()),
                rollup: Mutex::new(None),
            }),
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

/// Per-partition counters shown by EXPLAIN ANALYZE.
struct Counters {
    output_rows: Count,
    sidecars_read: Count,
    stored_rows: Count,
    derived_traces: Count,
    derived_rows: Count,
    rollup_rows: Count,
}

impl Source {
    /// Whether this read is a full `sessions` read, whose parts are merged.
    fn merges_sessions(&self) -> bool {
        self.table == AgentTable::Sessions && self.read.len() == self.schema.fields().len()
    }

    /// This partition's work, planning a new engine read when its slot is empty.
    fn take_work(&self, partition: usize) -> DfResult<Work> {
        let mut slots = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(work) = slots.get_mut(partition).and_then(Option::take) {
            return Ok(work);
        }
        let AgentRead {
            sidecars,
            derived,
            derive,
            ..
        } = self
            .engine
            .plan_agent_read(self.table, self.start_time)
            .map_err(engine_error)?;
        let mut work: Vec<Work> = (0..self.partitions)
            .map(|_| Work {
                derived: Arc::clone(&derived),
                sidecars: Vec::new(),
                derive: None,
                rollup: None,
                builds_rollup: false,
            })
            .collect();
        let mut sidecars = sidecars;
        let mut kept = None;
        if self.merges_sessions() {
            let key = SessionRollupKey::of(&sidecars);
            let build = match self.engine.session_rollup(&key) {
                RollupLookup::Hit(rollup) => {
                    sidecars.clear();
                    kept = Some(rollup);
                    None
                }
                RollupLookup::Extend { base, missing } => {
                    sidecars.retain(|sidecar| missing.contains(&sidecar.segment_id));
                    kept = Some(base.clone());
                    Some(RollupBuild {
                        key,
                        pieces: vec![base],
                        remaining: self.partitions,
                    })
                }
                RollupLookup::Miss => Some(RollupBuild {
                    key,
                    pieces: Vec::new(),
                    remaining: self.partitions,
                }),
            };
            for slot in &mut work {
                slot.builds_rollup = build.is_some();
            }
            *self.rollup.lock().unwrap_or_else(PoisonError::into_inner) = build;
        }
        for (index, sidecar) in sidecars.into_iter().enumerate() {
            work[index % self.partitions].sidecars.push(sidecar);
        }
        work[0].rollup = kept;
        work[0].derive = Some(derive);
        let mine = std::mem::replace(
            &mut work[partition],
            Work {
                derived,
                sidecars: Vec::new(),
                derive: None,
                rollup: None,
                builds_rollup: false,
            },
        );
        *slots = work.into_iter().map(Some).collect();
        slots[partition] = None;
        Ok(mine)
    }

    /// The output columns of a batch of the read columns (derived ones, whose strings are
    /// `Utf8`, cast to the read types).
    fn to_output(&self, batch: &RecordBatch) -> DfResult<RecordBatch> {
        let positions: Vec<usize> = self
            .columns
            .iter()
            .map(|column| self.read.binary_search(column).unwrap_or_default())
            .collect();
        with_types_of(&self.schema, &batch.project(&positions)?)
    }

    fn run_partition(
        &self,
        partition: usize,
        reservation: MemoryReservation,
        sender: &BatchSender,
        counters: &Counters,
    ) {
        if let Err(error) = self.send_partition(partition, reservation, sender, counters) {
            let _ = sender.blocking_send(Err(error));
        }
    }

    fn send_partition(
        &self,
        partition: usize,
        reservation: MemoryReservation,
        sender: &BatchSender,
        counters: &Counters,
    ) -> DfResult<()> {
        let work = self.take_work(partition)?;
        // Session parts are merged per partition (in parallel) before the final fold.
        let merge = self.merges_sessions();
        let mut held: Vec<RecordBatch> = Vec::new();
        let emit = |held: &mut Vec<RecordBatch>, batch: RecordBatch| -> DfResult<bool> {
            if merge {
                reservation.try_grow(batch.get_array_memory_size())?;
                held.push(batch);
                Ok(true)
            } else {
                counters.output_rows.add(batch.num_rows());
                Ok(sender.blocking_send(Ok(batch)).is_ok())
            }
        };
        for sidecar in &work.sidecars {
            if sender.is_closed() {
                return Ok(());
            }
            counters.sidecars_read.add(1);
            for batch in sidecar
                .read(
                    self.table,
                    Some(&self.read),
                    self.predicate.as_ref(),
                    strings_of(self.table),
                )
                .map_err(engine_error)?
            {
                let batch = self.to_output(&batch)?;
                counters.stored_rows.add(batch.num_rows());
                if !emit(&mut held, batch)? {
                    return Ok(());
                }
            }
        }
        if work.builds_rollup {
            // This partition's sidecar parts, merged: its piece of the new rollup.
            let piece = merge_session_parts(&held).map_err(engine_error)?;
            self.add_rollup_piece(piece.clone())?;
            held = vec![piece];
        }
        if let Some(rollup) = work.rollup {
            counters.rollup_rows.add(rollup.num_rows());
            if !emit(&mut held, rollup)? {
                return Ok(());
            }
        }
        if let Some(derive) = work.derive {
            counters.derived_traces.add(work.derived.len());
            let mut spans = Vec::new();
            let mut bytes = 0;
            for unit in derive.into_units() {
                for batch in unit.execute().map_err(engine_error)? {
                    let batch = batch.map_err(engine_error)?;
                    // The derivation holds every input row: count it against the budget.
                    bytes += batch.get_array_memory_size();
                    reservation.try_grow(batch.get_array_memory_size())?;
                    spans.push(batch);
                }
            }
            if !spans.is_empty() {
                let derived = derive_stored(self.table, &spans).map_err(engine_error)?;
                drop(spans);
                reservation.shrink(bytes);
                let derived = self.to_output(&derived.project(&self.read)?)?;
                counters.derived_rows.add(derived.num_rows());
                if !emit(&mut held, derived)? {
                    return Ok(());
                }
            }
        }
        if merge && !held.is_empty() {
            // One batch here is already merged (the rollup, or this partition's piece).
            // (Unmerged sidecar parts are never alone: a full read merges them above.)
            let merged = match held.as_slice() {
                [merged] => merged.clone(),
                _ => merge_session_parts(&held).map_err(engine_error)?,
            };
            drop(held);
            counters.output_rows.add(merged.num_rows());
            let _ = sender.blocking_send(Ok(merged));
        }
        drop(reservation);
        Ok(())
    }

    /// Adds one partition's merged sidecar parts to the rollup being built; the last
    /// partition merges the pieces and hands the rollup to the engine.
    fn add_rollup_piece(&self, piece: RecordBatch) -> DfResult<()> {
        let mut build = self.rollup.lock().unwrap_or_else(PoisonError::into_inner);
        let last = match build.as_mut() {
            Some(state) => {
                state.pieces.push(piece);
                state.remaining -= 1;
                state.remaining == 0
            }
            None => false,
        };
        let Some(RollupBuild { key, pieces, .. }) = build.take_if(|_| last) else {
            return Ok(());
        };
        drop(build);
        let rollup = merge_session_parts(&pieces).map_err(engine_error)?;
        self.engine.keep_session_rollup(key, rollup);
        Ok(())
    }
}

impl DisplayAs for StoredAgentExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stored = stored_schema(self.source.table);
        write!(
            f,
            "StoredAgentExec: table={}, projection=[{}], partitions={}",
            self.source.table.name(),
            column_list(&stored, &self.source.columns),
            self.source.partitions
        )?;
        if let Some(predicate) = &self.source.predicate {
            write!(
                f,
                ", row_filter=[{}]",
                column_list(&stored, &predicate.columns)
            )?;
        }
        Ok(())
    }
}

impl ExecutionPlan for StoredAgentExec {
    fn name(&self) -> &str {
        "StoredAgentExec"
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
            return internal_err!("StoredAgentExec has no children");
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
                "StoredAgentExec has {} partitions, asked for {partition}",
                self.source.partitions
            );
        }
        let metrics = &self.metrics;
        let counters = Counters {
            output_rows: MetricBuilder::new(metrics).output_rows(partition),
            sidecars_read: MetricBuilder::new(metrics).counter("sidecars_read", partition),
            stored_rows: MetricBuilder::new(metrics).counter("stored_rows", partition),
            derived_traces: MetricBuilder::new(metrics).counter("derived_traces", partition),
            derived_rows: MetricBuilder::new(metrics).counter("derived_rows", partition),
            rollup_rows: MetricBuilder::new(metrics).counter("rollup_rows", partition),
        };
        let reservation =
            MemoryConsumer::new(format!("StoredAgentExec[{}]", self.source.table.name()))
                .register(context.memory_pool());
        let source = Arc::clone(&self.source);
        blocking_stream(Arc::clone(&self.source.schema), move |sender| {
            source.run_partition(partition, reservation, sender, &counters);
        })
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}
