//! Row filters for whole-store reads of the stored agent tables: the comparisons of a column
//! with literals among a query's filters, evaluated by the engine while it reads each stored
//! file (a Parquet row filter), so the other columns are decoded only for the rows kept.
//!
//! Pushed filters are answered `Inexact`: DataFusion evaluates them again above the scan, so a
//! row filter only ever removes rows the query removes anyway, and the rows derived from spans
//! (split traces) need none.
//!
//! Invariant: only filters that cannot fail at run time are pushed ([`pushable`]): `=`, `<>`,
//! `<`, `<=`, `>`, `>=` between a column and a literal of exactly the column's type, `IN` of
//! such literals, `IS [NOT] NULL`, and `AND`, `OR`, `NOT` of these, over non-nested columns.
//! A filter error would otherwise surface as an error reading the file.

use std::sync::Arc;

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::Schema;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, Result as DfResult};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use engine::agent::RowPredicate;

/// Whether `filter` can be evaluated while reading a stored file of `schema`.
pub(crate) fn pushable(filter: &Expr, schema: &Schema) -> bool {
    let column_type = |expr: &Expr| match expr {
        Expr::Column(column) => schema
            .field_with_name(&column.name)
            .ok()
            .filter(|field| !field.data_type().is_nested())
            .map(|field| field.data_type().clone()),
        _ => None,
    };
    let literal_of = |expr: &Expr, data_type: &arrow::datatypes::DataType| matches!(expr, Expr::Literal(value, _) if value.data_type() == *data_type);
    match filter {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And | Operator::Or => pushable(left, schema) && pushable(right, schema),
            Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq => {
                column_type(left).is_some_and(|data_type| literal_of(right, &data_type))
                    || column_type(right).is_some_and(|data_type| literal_of(left, &data_type))
            }
            _ => false,
        },
        Expr::Not(inner) => pushable(inner, schema),
        Expr::IsNull(inner) | Expr::IsNotNull(inner) => column_type(inner).is_some(),
        Expr::InList(list) => column_type(&list.expr)
            .is_some_and(|data_type| list.list.iter().all(|item| literal_of(item, &data_type))),
        _ => false,
    }
}

/// Whether `filter` likely keeps few rows: an equality, `IN` a list, `IS NULL`, an `AND` with
/// such a part, or an `OR` of such parts. A row filter pays a pass over its columns and then
/// decodes the others through a row selection; for a filter that keeps most rows (`<>`,
/// `IS NOT NULL`, `NOT ...`) that costs more than it saves (docs query 7a's `parent_span_id IS
/// NOT NULL` over `spans`: 139–154 → 174 ms at 1M).
pub(crate) fn likely_selective(filter: &Expr) -> bool {
    match filter {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And => likely_selective(left) || likely_selective(right),
            Operator::Or => likely_selective(left) && likely_selective(right),
            Operator::Eq => true,
            _ => false,
        },
        Expr::InList(list) => !list.negated,
        Expr::IsNull(_) => true,
        _ => false,
    }
}

/// The row filter for the [`pushable`] ones among `filters`, over files of `schema`; `None`
/// when there are none.
pub(crate) fn row_predicate(
    state: &dyn Session,
    schema: &Schema,
    filters: &[Expr],
) -> DfResult<Option<RowPredicate>> {
    let pushed = filters
        .iter()
        .filter(|filter| pushable(filter, schema))
        .map(|filter| unqualified(filter.clone()))
        .collect::<DfResult<Vec<Expr>>>()?;
    let Some(predicate) = conjunction(pushed) else {
        return Ok(None);
    };
    let mut columns = predicate
        .column_refs()
        .iter()
        .map(|column| schema.index_of(&column.name))
        .collect::<Result<Vec<usize>, _>>()?;
    columns.sort_unstable();
    columns.dedup();
    // The predicate is handed a batch of exactly these columns, in this order.
    let read = DFSchema::try_from(schema.project(&columns)?)?;
    let physical = state.create_physical_expr(predicate, &read)?;
    let keep = move |batch: &RecordBatch| -> Result<BooleanArray, String> {
        let value = physical
            .evaluate(batch)
            .and_then(|value| value.into_array(batch.num_rows()))
            .map_err(|error| error.to_string())?;
        value
            .as_boolean_opt()
            .cloned()
            .ok_or_else(|| format!("a row filter gave {}, not booleans", value.data_type()))
    };
    Ok(Some(RowPredicate {
        columns,
        keep: Arc::new(keep),
    }))
}

/// `expr` with its columns named without their table (the files' schema has none).
fn unqualified(expr: Expr) -> DfResult<Expr> {
    expr.transform(|expr| {
        Ok(match expr {
            Expr::Column(column) if column.relation.is_some() => {
                Transformed::yes(Expr::Column(Column::new_unqualified(column.name)))
            }
            other => Transformed::no(other),
        })
    })
    .map(|transformed| transformed.data)
}
