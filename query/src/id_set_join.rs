//! [`IdSetJoinExec`]: a semi- or anti-join on span and trace ids, answered from a set of
//! decoded id keys.
//!
//! A semi-join keeps the rows of one side (the *kept* side) that have a match on the other
//! (the *set* side); an anti-join keeps those that have none. Neither outputs a column of the
//! set side, so of it only the keys are needed: the set side's key columns are decoded to
//! [`IdKey`]s (24 bytes at most, against ~60 of hex strings) and gathered in a hash set. The set
//! is built on every core: each input partition of the set side sorts its keys into shards by
//! hash, then each shard becomes one hash table, on its own task. The kept side streams through
//! in its own partitions, each row looked up in the shard its hash names. DataFusion's hash join
//! builds its table on one thread (or hash-repartitions both sides to build several), keeps
//! every build row, and compares strings.
//!
//! Invariants:
//! - Rows come out as they came in on the kept side (same partitions, same order), minus
//!   those the join drops; the output schema is the kept side's.
//! - Join semantics are SQL's with `NULL` equal to nothing: a kept row with a NULL key has no
//!   match (an anti-join keeps it, a semi-join drops it); a set row with a NULL key adds
//!   nothing. Null-aware anti-joins (`NOT IN`) are not planned here.
//! - A key is inserted into and looked up in the table of the shard its hash names, with one
//!   hasher for the whole set, so a lookup finds every equal key.
//! - The set is built once per execution and shared by all kept partitions; its memory (the
//!   keys gathered per batch, then each shard's table before it is filled) counts against the
//!   query's pool as it grows, so a set over the query's budget fails the query with
//!   "resources exhausted" (with spilling on, it runs once more with sort-merge joins, as
//!   a query with a hash join does).

use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result as DfResult, internal_err};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties,
};
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::{StreamExt, TryStreamExt};
use hashbrown::hash_table::Entry;
use hashbrown::{DefaultHashBuilder, HashTable};
use parking_lot::Mutex;
use std::hash::BuildHasher;

use crate::id_keys::{IdKey, KeyLayout};

/// Which rows of the kept side come out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Those with a match (semi-join).
    Matched,
    /// Those without one (anti-join).
    Unmatched,
}

/// One side's key columns: their indices in the side's schema and their names.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyColumns {
    pub(crate) indices: Vec<usize>,
    pub(crate) names: Vec<String>,
}

impl KeyColumns {
    fn arrays(&self, batch: &RecordBatch) -> Vec<ArrayRef> {
        self.indices
            .iter()
            .map(|&index| Arc::clone(batch.column(index)))
            .collect()
    }
}

/// See the module doc.
#[derive(Debug)]
pub(crate) struct IdSetJoinExec {
    /// The join's left and right inputs, in the order the SQL join had them.
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
    join: IdSetJoin,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    /// The set, built by the first kept partition to run and shared with the others.
    set: Mutex<Option<SharedSet>>,
}

type SharedSet = Shared<BoxFuture<'static, Result<Arc<IdSet>, Arc<DataFusionError>>>>;

/// What an [`IdSetJoinExec`] joins.
#[derive(Debug, Clone)]
pub(crate) struct IdSetJoin {
    /// Whether the kept side is the left input.
    pub(crate) kept_is_left: bool,
    pub(crate) keep: Keep,
    pub(crate) kept_keys: KeyColumns,
    pub(crate) set_keys: KeyColumns,
    pub(crate) layout: KeyLayout,
    /// The name of the join type DataFusion planned (`LeftAnti`, `RightSemi`, ...).
    pub(crate) join_type: String,
    /// Whether kept rows with a NULL key are dropped even by an anti-join: the join took over
    /// a filter below it that kept only rows whose key columns are not NULL.
    pub(crate) drop_null_keys: bool,
}

impl IdSetJoinExec {
    pub(crate) fn new(
        left: Arc<dyn ExecutionPlan>,
        right: Arc<dyn ExecutionPlan>,
        join: IdSetJoin,
    ) -> Self {
        let kept = if join.kept_is_left { &left } else { &right };
        let properties = PlanProperties::new(
            kept.equivalence_properties().clone(),
            kept.output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            left,
            right,
            join,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
            set: Mutex::new(None),
        }
    }

    fn kept(&self) -> &Arc<dyn ExecutionPlan> {
        if self.join.kept_is_left {
            &self.left
        } else {
            &self.right
        }
    }

    fn set_side(&self) -> &Arc<dyn ExecutionPlan> {
        if self.join.kept_is_left {
            &self.right
        } else {
            &self.left
        }
    }

    /// The set, started by the first caller.
    fn shared_set(&self, context: &Arc<TaskContext>) -> SharedSet {
        let mut slot = self.set.lock();
        if let Some(set) = &*slot {
            return set.clone();
        }
        let build = BuildSet {
            input: Arc::clone(self.set_side()),
            keys: self.join.set_keys.clone(),
            layout: self.join.layout.clone(),
            context: Arc::clone(context),
            rows: MetricBuilder::new(&self.metrics).global_counter("set_rows"),
            keys_held: MetricBuilder::new(&self.metrics).global_counter("set_keys"),
            memory: MetricBuilder::new(&self.metrics).global_gauge("set_mem_used"),
            time: MetricBuilder::new(&self.metrics).subset_time("set_build_time", 0),
        };
        let set = build
            .run()
            .map(|result| result.map_err(Arc::new))
            .boxed()
            .shared();
        *slot = Some(set.clone());
        set
    }
}

impl DisplayAs for IdSetJoinExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (left, right) = if self.join.kept_is_left {
            (&self.join.kept_keys, &self.join.set_keys)
        } else {
            (&self.join.set_keys, &self.join.kept_keys)
        };
        let on: Vec<String> = left
            .names
            .iter()
            .zip(&left.indices)
            .zip(right.names.iter().zip(&right.indices))
            .map(|((ln, li), (rn, ri))| format!("({ln}@{li}, {rn}@{ri})"))
            .collect();
        write!(
            f,
            "IdSetJoinExec: join_type={}, on=[{}], set={}{}",
            self.join.join_type,
            on.join(", "),
            if self.join.kept_is_left {
                "right"
            } else {
                "left"
            },
            if self.join.drop_null_keys {
                ", null_keys=dropped"
            } else {
                ""
            }
        )
    }
}

impl ExecutionPlan for IdSetJoinExec {
    fn name(&self) -> &str {
        "IdSetJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::UnspecifiedDistribution; 2]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![self.join.kept_is_left, !self.join.kept_is_left]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        // Both sides run in their own partitions; a round-robin repartition adds a copy.
        vec![false, false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.left, &self.right]
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
        let [left, right]: [Arc<dyn ExecutionPlan>; 2] = match children.try_into() {
            Ok(children) => children,
            Err(_) => return internal_err!("IdSetJoinExec has two children"),
        };
        Ok(Arc::new(Self::new(left, right, self.join.clone())))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let set = self.shared_set(&context);
        let input = self.kept().execute(partition, Arc::clone(&context))?;
        let schema = input.schema();
        let keys = self.join.kept_keys.clone();
        let layout = self.join.layout.clone();
        let keep = self.join.keep;
        let drop_null_keys = self.join.drop_null_keys;
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let probe_rows = MetricBuilder::new(&self.metrics).counter("probe_rows", partition);
        let stream = futures::stream::once(async move {
            let set = set.await.map_err(DataFusionError::Shared)?;
            Ok::<_, DataFusionError>(input.try_filter_map(move |batch| {
                let _timer = baseline.elapsed_compute().timer();
                probe_rows.add(batch.num_rows());
                let kept = keep_rows(&set, &layout, &keys, (keep, drop_null_keys), &batch);
                if let Ok(Some(batch)) = &kept {
                    baseline.output_rows().add(batch.num_rows());
                }
                futures::future::ready(kept)
            }))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// The rows of `batch` that `keep` asks for (and without a NULL key if `drop_null_keys`);
/// `None` when there are none.
fn keep_rows(
    set: &IdSet,
    layout: &KeyLayout,
    keys: &KeyColumns,
    (keep, drop_null_keys): (Keep, bool),
    batch: &RecordBatch,
) -> DfResult<Option<RecordBatch>> {
    let keys = layout.keys(&keys.arrays(batch), &keys.names)?;
    // Hashes first, lookups after in a tight loop: the lookups' cache misses then overlap.
    let hashes: Vec<u64> = keys
        .iter()
        .map(|key| key.as_ref().map_or(0, |key| set.hasher.hash_one(key)))
        .collect();
    let mask: BooleanArray = keys
        .iter()
        .zip(hashes)
        .map(|(key, hash)| {
            Some(match key {
                Some(key) => set.contains(hash, key) == (keep == Keep::Matched),
                None => keep == Keep::Unmatched && !drop_null_keys,
            })
        })
        .collect();
    match mask.true_count() {
        0 => Ok(None),
        all if all == batch.num_rows() => Ok(Some(batch.clone())),
        _ => Ok(Some(filter_record_batch(batch, &mask)?)),
    }
}

/// The keys of the set side, in shards by hash.
#[derive(Debug)]
pub(crate) struct IdSet {
    hasher: DefaultHashBuilder,
    shards: Vec<HashTable<IdKey>>,
    /// Held for as long as the set is.
    _reservation: MemoryReservation,
}

impl IdSet {
    /// Whether the set holds `key`, whose hash is `hash`.
    fn contains(&self, hash: u64, key: &IdKey) -> bool {
        self.shards[shard_of(hash, self.shards.len())]
            .find(hash, |held| held == key)
            .is_some()
    }
}

/// The shard of a key with `hash`, of `shards`: bits 24..56 of the hash, scaled. The table
/// inside the shard indexes by the low bits and tags by the top 7, which this leaves alone.
fn shard_of(hash: u64, shards: usize) -> usize {
    let bits = (hash >> 24) & u64::from(u32::MAX);
    ((bits * shards as u64) >> 32) as usize
}

/// Builds the set of one execution.
struct BuildSet {
    input: Arc<dyn ExecutionPlan>,
    keys: KeyColumns,
    layout: KeyLayout,
    context: Arc<TaskContext>,
    rows: Count,
    keys_held: Count,
    memory: datafusion::physical_plan::metrics::Gauge,
    time: Time,
}

impl BuildSet {
    async fn run(self) -> DfResult<Arc<IdSet>> {
        let partitions = self.input.output_partitioning().partition_count();
        let shards = partitions.max(1);
        let hasher = DefaultHashBuilder::default();
        let reservation = Arc::new(Mutex::new(
            MemoryConsumer::new("IdSetJoinExec").register(self.context.memory_pool()),
        ));
        // Each input partition: its keys, sorted into shards by hash.
        let mut gathering = Vec::with_capacity(partitions);
        for partition in 0..partitions {
            let mut stream = self.input.execute(partition, Arc::clone(&self.context))?;
            let keys = self.keys.clone();
            let layout = self.layout.clone();
            let hasher = hasher.clone();
            let reservation = Arc::clone(&reservation);
            let rows = self.rows.clone();
            let time = self.time.clone();
            gathering.push(SpawnedTask::spawn(async move {
                let mut sharded: Vec<Vec<IdKey>> = vec![Vec::new(); shards];
                while let Some(batch) = stream.next().await {
                    let batch = batch?;
                    let _timer = time.timer();
                    rows.add(batch.num_rows());
                    let keys = layout.keys(&keys.arrays(&batch), &keys.names)?;
                    let mut held = 0;
                    for key in keys.into_iter().flatten() {
                        sharded[shard_of(hasher.hash_one(key), shards)].push(key);
                        held += 1;
                    }
                    reservation
                        .lock()
                        .try_grow(held * std::mem::size_of::<IdKey>())?;
                }
                Ok::<_, DataFusionError>(sharded)
            }));
        }
        let mut by_partition = Vec::with_capacity(partitions);
        for task in gathering {
            by_partition.push(task.join_unwind().await.map_err(|error| {
                DataFusionError::Execution(format!("building the id set: {error}"))
            })??);
        }
        // Each shard: one table of its keys from every partition.
        let mut building = Vec::with_capacity(shards);
        for shard in 0..shards {
            let parts: Vec<Vec<IdKey>> = by_partition
                .iter_mut()
                .map(|sharded| std::mem::take(&mut sharded[shard]))
                .collect();
            let hasher = hasher.clone();
            let reservation = Arc::clone(&reservation);
            let time = self.time.clone();
            building.push(SpawnedTask::spawn(async move {
                let _timer = time.timer();
                let count: usize = parts.iter().map(Vec::len).sum();
                let mut table = HashTable::with_capacity(count);
                reservation.lock().try_grow(table.allocation_size())?;
                for part in parts {
                    for key in &part {
                        let hash = hasher.hash_one(key);
                        if let Entry::Vacant(vacant) =
                            table.entry(hash, |held| held == key, |held| hasher.hash_one(held))
                        {
                            vacant.insert(*key);
                        }
                    }
                    reservation
                        .lock()
                        .shrink(part.len() * std::mem::size_of::<IdKey>());
                }
                Ok::<_, DataFusionError>(table)
            }));
        }
        let mut tables = Vec::with_capacity(shards);
        for task in building {
            tables.push(task.join_unwind().await.map_err(|error| {
                DataFusionError::Execution(format!("building the id set: {error}"))
            })??);
        }
        self.keys_held.add(tables.iter().map(HashTable::len).sum());
        let reservation = Arc::try_unwrap(reservation)
            .map(Mutex::into_inner)
            .map_err(|_| DataFusionError::Internal("id set reservation still shared".into()))?;
        self.memory.set(reservation.size());
        Ok(Arc::new(IdSet {
            hasher,
            shards: tables,
            _reservation: reservation,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_hash_evenly() {
        for shards in [1usize, 2, 3, 16] {
            let mut counts = vec![0usize; shards];
            let hasher = DefaultHashBuilder::default();
            for value in 0..30_000u64 {
                counts[shard_of(hasher.hash_one(value), shards)] += 1;
            }
            let even = 30_000 / shards;
            for count in counts {
                assert!(
                    count > even * 9 / 10 && count < even * 11 / 10,
                    "{shards}: {count}"
                );
            }
        }
        assert_eq!(shard_of(u64::MAX, 4), 3);
        assert_eq!(shard_of(0, 4), 0);
    }
}
