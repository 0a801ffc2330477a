//! [`NarrowBuildSide`]: a hash semi- or anti-join of span scans with each other builds its
//! hash table on the input with fewer columns.
//!
//! `NOT EXISTS` / `EXISTS` become left anti / semi joins that build on the outer query, and
//! DataFusion swaps sides only by statistics, which span and agent-table scans do not report.
//! docs/monitoring.md query 7a joins every span's 5 columns to every span's 2: built on the 5 it
//! needed 161.6 MB at 1M spans and failed the 1 GiB budget at 10M; built on the 2, 105 MB and
//! 1.9 s at 10M. Without sizes, fewer columns is the better guess for the same table, unless a
//! pushed filter (one trace, one session, a time range) narrows the wider side: it may then
//! hold a few rows against the whole store, and stays the build side.
//!
//! The swapped join builds one hash table from all partitions of its build side
//! (`CollectLeft`) when the store holds at most [`COLLECT_LEFT_MAX_ROWS_TIMES_PARTITIONS`] /
//! partitions rows: neither side is then hash-repartitioned (query 7a at 1M spans, 2 cores:
//! 22% less CPU, 3-8% faster), but the table is built on one thread, which at 10M spans
//! costs more than the repartitioning saves (6% slower), so larger stores keep DataFusion's
//! partitioned join. The memory is the same either way: all build rows are held at once.
//!
//! Invariants:
//! - Runs right after DataFusion's `join_selection`, before distribution and sort
//!   requirements are enforced, so the swapped join gets the same treatment as any other.
//! - Touches only `LeftAnti` / `LeftSemi` hash joins, not null-aware (`NOT IN`), whose inputs
//!   read nothing but span scans, with neither input's size known and no scan of the wider
//!   input narrowed by a pushed filter; every other join keeps DataFusion's choice.
//! - The swapped join answers the same rows in the same column order
//!   (`HashJoinExec::swap_inputs`); a join that cannot be swapped keeps its sides, so the rule
//!   never fails a query.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{JoinType, Result as DfResult};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};

use crate::id_set_rule::IdSetJoins;
use crate::scan::SpansScanExec;

/// See the module doc.
#[derive(Debug, Default)]
pub(crate) struct NarrowBuildSide;

/// The name of DataFusion's rule this one runs after.
const AFTER: &str = "join_selection";

/// DataFusion's physical optimizer rules with [`NarrowBuildSide`] right after [`AFTER`], then
/// [`IdSetJoins`].
pub(crate) fn physical_rules() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let mut rules = PhysicalOptimizer::new().rules;
    let after = rules
        .iter()
        .position(|rule| rule.name() == AFTER)
        .map_or(0, |index| index + 1);
    rules.insert(after, Arc::new(NarrowBuildSide));
    rules.insert(after + 1, Arc::new(IdSetJoins));
    rules
}

impl PhysicalOptimizerRule for NarrowBuildSide {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            // A null-aware anti-join (`NOT IN`) must keep its sides: a NULL on the subquery's
            // side empties the answer, which only the left-built form knows.
            if !matches!(join.join_type(), JoinType::LeftAnti | JoinType::LeftSemi)
                || join.null_aware
                || !reads_whole_store(join.left())
                || span_scans(join.right()).is_none()
                || join.left().schema().fields().len() <= join.right().schema().fields().len()
                || size_known(join.left())
                || size_known(join.right())
            {
                return Ok(Transformed::no(node));
            }
            let mode = build_mode(
                join,
                span_scans(join.right()).unwrap_or_default(),
                config.execution.target_partitions,
            );
            Ok(match join.swap_inputs(mode) {
                Ok(swapped) => Transformed::yes(swapped),
                Err(_) => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "narrow_build_side"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Store rows times partitions up to which the swapped join builds one table (see the module
/// doc; measured on 2 cores, where the bound is 2M rows).
const COLLECT_LEFT_MAX_ROWS_TIMES_PARTITIONS: u64 = 4_000_000;

/// How the swapped `join` builds its table, `scans` being those of its new build side:
/// `CollectLeft` when they read a store of at most
/// [`COLLECT_LEFT_MAX_ROWS_TIMES_PARTITIONS`] / `partitions` rows, else as planned.
fn build_mode(join: &HashJoinExec, scans: Vec<&SpansScanExec>, partitions: usize) -> PartitionMode {
    let store_rows = scans.iter().map(|scan| scan.store_rows()).max();
    if store_rows.is_some_and(|rows| collect_left_fits(rows, partitions)) {
        PartitionMode::CollectLeft
    } else {
        *join.partition_mode()
    }
}

/// Whether a store of `rows` is small enough for one build table with `partitions`.
fn collect_left_fits(rows: u64, partitions: usize) -> bool {
    rows.saturating_mul(partitions.max(1) as u64) <= COLLECT_LEFT_MAX_ROWS_TIMES_PARTITIONS
}

/// The span scans `plan` reads, or `None` if it reads anything else.
pub(crate) fn span_scans(plan: &Arc<dyn ExecutionPlan>) -> Option<Vec<&SpansScanExec>> {
    if let Some(scan) = plan.downcast_ref::<SpansScanExec>() {
        return Some(vec![scan]);
    }
    let children = plan.children();
    if children.is_empty() {
        return None;
    }
    let mut scans = Vec::new();
    for child in children {
        scans.extend(span_scans(child)?);
    }
    Some(scans)
}

/// Whether `plan` reads only span scans, none narrowed by a pushed filter.
fn reads_whole_store(plan: &Arc<dyn ExecutionPlan>) -> bool {
    span_scans(plan).is_some_and(|scans| scans.iter().all(|scan| !scan.is_narrowed()))
}

/// Whether DataFusion knows `plan`'s size (an error counts as known: the join stays as planned).
fn size_known(plan: &Arc<dyn ExecutionPlan>) -> bool {
    StatisticsContext::new()
        .compute(plan.as_ref(), &StatisticsArgs::new())
        .map_or(true, |statistics| {
            statistics.total_byte_size.get_value().is_some()
                || statistics.num_rows.get_value().is_some()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_build_table_up_to_the_bound_over_the_partitions() {
        assert!(collect_left_fits(0, 2));
        assert!(collect_left_fits(2_000_000, 2));
        assert!(!collect_left_fits(2_000_001, 2));
        assert!(collect_left_fits(1_000_000, 4));
        assert!(!collect_left_fits(1_000_001, 4));
        assert!(collect_left_fits(4_000_000, 0));
        assert!(!collect_left_fits(u64::MAX, 2));
    }
}
