//! [`IdSetJoins`]: plans a hash semi- or anti-join on span and trace ids as an
//! [`IdSetJoinExec`].
//!
//! docs/monitoring.md query 7a (`NOT EXISTS` a parent with the same `trace_id` and
//! `span_id = parent_span_id`) is such a join of every span against every span. DataFusion's hash
//! join hashed and compared the hex strings and built its table on one thread: at 1M spans on 2
//! cores the build alone took 83 ms of 180.
//!
//! Invariants:
//! - Runs after [`NarrowBuildSide`](crate::join_sides) and before distribution and sort
//!   requirements are enforced, so the new join's inputs get what it asks for (nothing).
//! - Touches only `LeftSemi`, `LeftAnti`, `RightSemi`, `RightAnti` hash joins with no join
//!   filter, no fetch, `NULL` equal to nothing and not null-aware, whose every key is a column
//!   that comes unchanged from a span scan's `trace_id`, `span_id` or `parent_span_id`, paired
//!   with a key of the same kind, all fitting one [`IdKey`](crate::id_keys::IdKey). Any other
//!   join keeps its plan, so the rule never fails a query.
//! - A kept side narrowed by a pushed filter (one trace, one session, a time range) against a
//!   set side that reads the whole store keeps DataFusion's join, which builds on the few rows.
//! - The new plan outputs the same columns in the same order (the hash join's projection
//!   becomes a `ProjectionExec` above it).
//! - A filter right below the kept side that only keeps rows whose key columns are not NULL
//!   (query 7a's `parent_span_id IS NOT NULL`) is taken into the join, which then drops rows
//!   with a NULL key itself instead of copying every other row through the filter.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{JoinType, NullEquality, Result as DfResult};
use datafusion::physical_expr::expressions::{Column, IsNotNullExpr};
use datafusion::physical_expr::split_conjunction;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::repartition::RepartitionExec;
use engine::schema::columns;

use crate::id_keys::{IdKind, KeyLayout};
use crate::id_set_join::{IdSetJoin, IdSetJoinExec, Keep, KeyColumns};
use crate::join_sides::span_scans;
use crate::scan::SpansScanExec;

/// See the module doc.
#[derive(Debug, Default)]
pub(crate) struct IdSetJoins;

impl PhysicalOptimizerRule for IdSetJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            Ok(match id_set_join(join)? {
                Some(planned) => Transformed::yes(planned),
                None => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "id_set_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `join` as an [`IdSetJoinExec`], or `None` when the module doc's conditions do not hold.
fn id_set_join(join: &HashJoinExec) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let (keep, kept_is_left) = match join.join_type() {
        JoinType::LeftSemi => (Keep::Matched, true),
        JoinType::LeftAnti => (Keep::Unmatched, true),
        JoinType::RightSemi => (Keep::Matched, false),
        JoinType::RightAnti => (Keep::Unmatched, false),
        _ => return Ok(None),
    };
    if join.null_aware
        || join.filter().is_some()
        || join.null_equality() != NullEquality::NullEqualsNothing
        || join.fetch().is_some()
    {
        return Ok(None);
    }
    let mut left_keys = KeyColumns::default();
    let mut right_keys = KeyColumns::default();
    let mut kinds = Vec::new();
    for (left, right) in join.on() {
        let (Some(left), Some(right)) = (
            left.downcast_ref::<Column>(),
            right.downcast_ref::<Column>(),
        ) else {
            return Ok(None);
        };
        let kind = id_kind(join.left(), left.index());
        if kind.is_none() || kind != id_kind(join.right(), right.index()) {
            return Ok(None);
        }
        kinds.extend(kind);
        left_keys.push(left);
        right_keys.push(right);
    }
    let Some(layout) = KeyLayout::new(kinds) else {
        return Ok(None);
    };
    let (kept, set) = if kept_is_left {
        (join.left(), join.right())
    } else {
        (join.right(), join.left())
    };
    if narrowed(kept) && !narrowed(set) {
        return Ok(None);
    }
    let (kept_keys, set_keys) = if kept_is_left {
        (left_keys, right_keys)
    } else {
        (right_keys, left_keys)
    };
    let unfiltered = without_key_null_filter(kept, &kept_keys);
    let drop_null_keys = unfiltered.is_some();
    let kept = unfiltered.unwrap_or_else(|| Arc::clone(kept));
    let (left, right) = if kept_is_left {
        (kept, Arc::clone(join.right()))
    } else {
        (Arc::clone(join.left()), kept)
    };
    let exec: Arc<dyn ExecutionPlan> = Arc::new(IdSetJoinExec::new(
        left,
        right,
        IdSetJoin {
            kept_is_left,
            keep,
            kept_keys,
            set_keys,
            layout,
            join_type: format!("{}", join.join_type()),
            drop_null_keys,
        },
    ));
    let Some(projection) = &join.projection else {
        return Ok(Some(exec));
    };
    let schema = exec.schema();
    let exprs: Vec<ProjectionExpr> = projection
        .iter()
        .map(|&index| {
            let name = schema.field(index).name();
            ProjectionExpr {
                expr: Arc::new(Column::new(name, index)),
                alias: name.clone(),
            }
        })
        .collect();
    Ok(Some(Arc::new(ProjectionExec::try_new(exprs, exec)?)))
}

impl KeyColumns {
    fn push(&mut self, column: &Column) {
        self.indices.push(column.index());
        self.names.push(column.name().to_string());
    }
}

/// The id kind of column `index` of `plan`, when it comes unchanged from a span scan's id column.
fn id_kind(plan: &Arc<dyn ExecutionPlan>, index: usize) -> Option<IdKind> {
    if let Some(scan) = plan.downcast_ref::<SpansScanExec>() {
        let schema = scan.schema();
        return match schema.fields().get(index)?.name().as_str() {
            columns::TRACE_ID => Some(IdKind::Trace),
            columns::SPAN_ID | columns::PARENT_SPAN_ID => Some(IdKind::Span),
            _ => None,
        };
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let column = projection
            .expr()
            .get(index)?
            .expr
            .downcast_ref::<Column>()?;
        return id_kind(projection.input(), column.index());
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let index = match filter.projection() {
            Some(projection) => *projection.get(index)?,
            None => index,
        };
        return id_kind(filter.input(), index);
    }
    if plan.is::<CoalescePartitionsExec>() || plan.is::<RepartitionExec>() {
        return id_kind(plan.children().first()?, index);
    }
    None
}

/// The input of `kept` when `kept` is a filter that only keeps rows whose key columns (all
/// nullable ones) are not NULL, which the join can do itself; else `None`.
fn without_key_null_filter(
    kept: &Arc<dyn ExecutionPlan>,
    keys: &KeyColumns,
) -> Option<Arc<dyn ExecutionPlan>> {
    let filter = kept.downcast_ref::<FilterExec>()?;
    if filter.projection().is_some() {
        return None;
    }
    let mut not_null = Vec::new();
    for conjunct in split_conjunction(filter.predicate()) {
        let column = conjunct
            .downcast_ref::<IsNotNullExpr>()?
            .arg()
            .downcast_ref::<Column>()?;
        if !keys.indices.contains(&column.index()) {
            return None;
        }
        not_null.push(column.index());
    }
    let schema = filter.input().schema();
    keys.indices
        .iter()
        .all(|index| !schema.field(*index).is_nullable() || not_null.contains(index))
        .then(|| Arc::clone(filter.input()))
}

/// Whether any span scan `plan` reads is narrowed by a pushed filter.
fn narrowed(plan: &Arc<dyn ExecutionPlan>) -> bool {
    span_scans(plan).is_some_and(|scans| scans.iter().any(|scan| scan.is_narrowed()))
}
