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
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};

use crate::scan::SpansScanExec;

/// See the module doc.
#[derive(Debug, Default)]
pub(crate) struct NarrowBuildSide;

/// The name of DataFusion's rule this one runs after.
const AFTER: &str = "join_selection";

/// DataFusion's physical optimizer rules with [`NarrowBuildSide`] right after [`AFTER`].
pub(crate) fn physical_rules() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let mut rules = PhysicalOptimizer::new().rules;
    let after = rules
        .iter()
        .position(|rule| rule.name() == AFTER)
        .map_or(0, |index| index + 1);
    rules.insert(after, Arc::new(NarrowBuildSide));
    rules
}

impl PhysicalOptimizerRule for NarrowBuildSide {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
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
            Ok(match join.swap_inputs(*join.partition_mode()) {
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

/// The span scans `plan` reads, or `None` if it reads anything else.
fn span_scans(plan: &Arc<dyn ExecutionPlan>) -> Option<Vec<&SpansScanExec>> {
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
