//! Queries whose hash join outgrows the memory budget: they run a second time with sort-merge
//! joins, spilling to the one directory all queries share.
//!
//! DataFusion's hash joins cannot spill; its sorts can, if the runtime has a disk manager. So a
//! query that fails for memory with a hash join in its plan is planned again with sort-merge
//! joins (which sort both sides) and runs once more, within the same timeout. Only that second
//! run may spill. Every other query runs as before: in memory, failing with
//! `ResourcesExhausted` past the budget.
//!
//! DataFusion 55's `RepartitionExec` spills too when a reservation fails, and its spill pool can
//! deadlock (apache/datafusion#24883, fixed after 55). So in the second run its reservations
//! never fail ([`RepartitionNeverSpills`]): they count against the budget, and the sorts that
//! read from it (which take their whole input before they emit) spill sooner instead.
//!
//! Invariants:
//! - Spill files live only in [`Options::spill_dir`], in DataFusion's `datafusion-*`
//!   directories; stale ones (a crash leaves them) are removed when the engine starts.
//! - All second runs share one disk manager, so [`Options::spill_limit`] bounds their files
//!   together.
//! - A query runs at most twice, and the second time only if spilling is on, the first failed
//!   for memory, and its plan held a hash join; nothing of the first run reaches the caller.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionState;
use datafusion::execution::disk_manager::{DiskManager, DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::HashJoinExec;
use tracing::warn;

use crate::error::{Error, Result};
use crate::id_set_join::IdSetJoinExec;
use crate::options::Options;

/// Spilled runs one merge pass reads at once.
const MERGE_FAN_IN: usize = 4;

/// Prefix of the directories DataFusion's disk manager makes for its files.
const DATAFUSION_PREFIX: &str = "datafusion-";

/// A disk manager that writes nothing: a query that needs more memory fails.
pub(crate) fn no_disk() -> Result<Arc<DiskManager>> {
    DiskManagerBuilder::default()
        .with_mode(DiskManagerMode::Disabled)
        .build()
        .map(Arc::new)
        .map_err(Error::from_datafusion)
}

/// The disk manager the second runs of an engine share: spilling into `options.spill_dir` up
/// to `options.spill_limit` bytes; `None` when spilling is off.
pub(crate) fn disk_manager(options: &Options) -> Result<Option<Arc<DiskManager>>> {
    let Some(dir) = options
        .spill_dir
        .as_ref()
        .filter(|_| options.spill_limit > 0)
    else {
        return Ok(None);
    };
    fs::create_dir_all(dir).map_err(|error| {
        Error::Internal(format!(
            "cannot create the query spill directory {}: {error}",
            dir.display()
        ))
    })?;
    remove_stale(dir);
    DiskManagerBuilder::default()
        .with_mode(DiskManagerMode::Directories(vec![dir.clone()]))
        .with_max_temp_directory_size(options.spill_limit)
        // A merge of spilled runs holds a batch of each run it reads: merging at most a few at
        // a time keeps that within a small budget (and within the blocking threads that read
        // them).
        .with_max_spill_merge_fan_in(MERGE_FAN_IN)
        .build()
        .map(|disk| Some(Arc::new(disk)))
        .map_err(Error::from_datafusion)
}

/// Removes what earlier runs left in `dir` (DataFusion's directories only; anything else a
/// user put there stays).
fn remove_stale(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(DATAFUSION_PREFIX)
        {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        if let Err(error) = removed {
            warn!(path = %path.display(), error = %error, "cannot remove a stale query spill file");
        }
    }
}

/// Whether a query that failed with `error` under `plan` runs again with sort-merge joins.
pub(crate) fn replan_with_merge_joins(plan: &Arc<dyn ExecutionPlan>, error: &Error) -> bool {
    matches!(error, Error::ResourcesExhausted(_)) && holds_hash_join(plan)
}

/// Whether `plan` holds a join that keeps a hash table in memory: DataFusion's, or an
/// [`IdSetJoinExec`] (planned from one); planned again with sort-merge joins, it has neither.
fn holds_hash_join(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<HashJoinExec>().is_some()
        || plan.downcast_ref::<IdSetJoinExec>().is_some()
        || plan.children().into_iter().any(holds_hash_join)
}

/// `state` planning joins as sort-merge joins; the caller gives it a fresh runtime.
pub(crate) fn merge_join_state(state: SessionState) -> SessionState {
    let mut config = state.config().clone();
    config.options_mut().optimizer.prefer_hash_join = false;
    SessionStateBuilder::new_from_existing(state)
        .with_config(config)
        .build()
}

/// DataFusion's `FairSpillPool`, except that `RepartitionExec`'s reservations are never refused
/// (see the module doc): they count like those of operators that cannot spill, so the operators
/// that can share what the others leave, each up to an equal part, and spill past it.
#[derive(Debug)]
pub(crate) struct RepartitionNeverSpills {
    limit: usize,
    state: parking_lot::Mutex<FairState>,
}

#[derive(Debug, Default)]
struct FairState {
    /// Registered consumers that spill (`RepartitionExec` not among them).
    spilling: usize,
    /// Bytes they hold.
    spillable: usize,
    /// Bytes everything else holds.
    unspillable: usize,
}

impl RepartitionNeverSpills {
    pub(crate) fn new(limit: usize) -> Self {
        RepartitionNeverSpills {
            limit,
            state: parking_lot::Mutex::new(FairState::default()),
        }
    }
}

/// Whether `consumer`'s bytes are shared fairly and it spills past its part.
fn spills(consumer: &MemoryConsumer) -> bool {
    consumer.can_spill() && !consumer.name().starts_with("RepartitionExec")
}

impl MemoryPool for RepartitionNeverSpills {
    fn name(&self) -> &str {
        "fair_spill_without_repartition_spills"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        if spills(consumer) {
            self.state.lock().spilling += 1;
        }
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        if spills(consumer) {
            let mut state = self.state.lock();
            state.spilling = state.spilling.saturating_sub(1);
        }
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        let mut state = self.state.lock();
        if spills(reservation.consumer()) {
            state.spillable += additional;
        } else {
            state.unspillable += additional;
        }
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        let mut state = self.state.lock();
        if spills(reservation.consumer()) {
            state.spillable = state.spillable.saturating_sub(shrink);
        } else {
            state.unspillable = state.unspillable.saturating_sub(shrink);
        }
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> DfResult<()> {
        let consumer = reservation.consumer();
        let mut state = self.state.lock();
        if spills(consumer) {
            let part = self.limit.saturating_sub(state.unspillable) / state.spilling.max(1);
            if reservation.size() + additional > part {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "{} may hold {part} bytes of the query's memory and needs {} more",
                    consumer.name(),
                    reservation.size() + additional - part
                )));
            }
            state.spillable += additional;
        } else if consumer.name().starts_with("RepartitionExec") {
            state.unspillable += additional;
        } else {
            let free = self
                .limit
                .saturating_sub(state.unspillable + state.spillable);
            if additional > free {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "{} needs {additional} bytes and {free} are free",
                    consumer.name()
                )));
            }
            state.unspillable += additional;
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        let state = self.state.lock();
        state.spillable + state.unspillable
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

impl std::fmt::Display for RepartitionNeverSpills {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        write!(
            f,
            "fair without repartition spills(used: {} of {} bytes)",
            state.spillable + state.unspillable,
            self.limit
        )
    }
}
