//! The `||` operator bounded by the query's memory budget, like the functions of
//! `bounded_functions.rs`: `s || s || s ...` over one generated value doubles what it holds at
//! every step, and the operator is not a function those wrappers could catch.
//!
//! An analyzer rule, run after type coercion, rewrites every chain `a || b || c ...` into one
//! call `concat_op(a, b, c, ...)` (`||` is associative, NULLs included), which checks before
//! concatenating that the result (at most all inputs together) fits what is left of the query's
//! pool, and then builds it in one pass: no intermediate results, NULL if any input is NULL,
//! the widest input type out (as the operator's coercion gives).
//!
//! Invariants: names of rewritten expressions are preserved (output schemas do not change);
//! the function is volatile, so the optimizer never folds a chain into a literal (which would
//! then be broadcast to every row unchecked).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, LargeStringBuilder, StringBuilder, StringViewBuilder,
};
use arrow::compute::cast;
use arrow::compute::kernels::concat_elements::concat_elements_dyn;
use arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, LogicalPlan, Operator, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// The function `a || b` becomes.
pub(crate) const NAME: &str = "concat_op";

/// Installs the rewrite of `||` into [`ConcatOp`] over `pool`.
pub(crate) fn install(
    state: &mut datafusion::execution::context::SessionState,
    pool: &Arc<dyn MemoryPool>,
) {
    let udf = Arc::new(ScalarUDF::new_from_impl(ConcatOp {
        // Volatile: never folded into a literal at planning, which would then be broadcast to
        // every row unchecked; at run time the estimate counts every row.
        signature: Signature::variadic_any(Volatility::Volatile),
        pool: Arc::clone(pool),
    }));
    state.add_analyzer_rule(Arc::new(BoundConcat { udf }));
}

/// `a || b || ...` on strings and binaries, checked against the query's pool first.
#[derive(Debug)]
struct ConcatOp {
    signature: Signature,
    pool: Arc<dyn MemoryPool>,
}

impl PartialEq for ConcatOp {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.pool, &other.pool)
    }
}

impl Eq for ConcatOp {}

impl std::hash::Hash for ConcatOp {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        NAME.hash(state);
    }
}

/// Bytes of `value` over `rows` rows (a scalar counts in every row: it is broadcast to them).
fn size(value: &ColumnarValue, rows: usize) -> u64 {
    match value {
        ColumnarValue::Array(array) => crate::view_sizes::array_size(array.as_ref()) as u64,
        ColumnarValue::Scalar(scalar) => (scalar.size() as u64).saturating_mul(rows as u64),
    }
}

impl ScalarUDFImpl for ConcatOp {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(widest(arg_types))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let out_type = args.return_field.data_type().clone();
        let broadcast = args
            .args
            .iter()
            .any(|value| matches!(value, ColumnarValue::Array(_)));
        // The result is at most all inputs together, in every row.
        let estimate = args
            .args
            .iter()
            .fold(0u64, |total, value| total.saturating_add(size(value, rows)));
        let reservation = MemoryConsumer::new("|| results").register(&self.pool);
        reservation.try_grow(usize::try_from(estimate).unwrap_or(usize::MAX))?;
        let len = if broadcast { rows } else { 1 };
        let inputs = args
            .args
            .into_iter()
            .map(|value| {
                let array = value.into_array(len)?;
                Ok(cast(&array, &out_type)?)
            })
            .collect::<DfResult<Vec<ArrayRef>>>()?;
        let joined = join(&inputs, len, &out_type, estimate)?;
        reservation.free();
        Ok(if broadcast {
            ColumnarValue::Array(joined)
        } else {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&joined, 0)?)
        })
    }
}

/// The type `a || b || ...` has: the widest of its inputs (a view over a large string over a
/// string; binaries likewise).
fn widest(types: &[DataType]) -> DataType {
    let has = |wanted: &DataType| types.iter().any(|t| t == wanted);
    for wanted in [
        DataType::Utf8View,
        DataType::LargeUtf8,
        DataType::Utf8,
        DataType::BinaryView,
        DataType::LargeBinary,
        DataType::Binary,
    ] {
        if has(&wanted) {
            return wanted;
        }
    }
    types.first().cloned().unwrap_or(DataType::Utf8)
}

/// Row by row, every input's value joined (NULL when any is NULL); `bytes` is an upper bound
/// of the text, for the builder's capacity.
fn join(inputs: &[ArrayRef], rows: usize, out_type: &DataType, bytes: u64) -> DfResult<ArrayRef> {
    let capacity = usize::try_from(bytes).unwrap_or(usize::MAX).min(1 << 30);
    let mut text = String::new();
    let mut each_row = |append: &mut dyn FnMut(Option<&str>)| -> DfResult<()> {
        for row in 0..rows {
            if inputs.iter().any(|input| input.is_null(row)) {
                append(None);
                continue;
            }
            text.clear();
            for input in inputs {
                text.push_str(string_at(input, row)?);
            }
            append(Some(&text));
        }
        Ok(())
    };
    Ok(match out_type {
        DataType::Utf8 => {
            let mut builder = StringBuilder::with_capacity(rows, capacity);
            each_row(&mut |value| builder.append_option(value))?;
            std::sync::Arc::new(builder.finish())
        }
        DataType::LargeUtf8 => {
            let mut builder = LargeStringBuilder::with_capacity(rows, capacity);
            each_row(&mut |value| builder.append_option(value))?;
            std::sync::Arc::new(builder.finish())
        }
        DataType::Utf8View => {
            let mut builder = StringViewBuilder::with_capacity(rows);
            each_row(&mut |value| builder.append_option(value))?;
            std::sync::Arc::new(builder.finish())
        }
        // Binaries (rare): pairwise, with the operator's own kernel.
        _ => {
            let mut joined = Arc::clone(&inputs[0]);
            for input in &inputs[1..] {
                joined = concat_elements_dyn(&joined, input)?;
            }
            joined
        }
    })
}

fn string_at(array: &ArrayRef, row: usize) -> DfResult<&str> {
    Ok(match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row),
        DataType::LargeUtf8 => array.as_string::<i64>().value(row),
        DataType::Utf8View => array.as_string_view().value(row),
        other => {
            return Err(datafusion::common::DataFusionError::Internal(format!(
                "{NAME} cannot join {other} values as text"
            )));
        }
    })
}

/// Rewrites `||` chains on strings and binaries into one [`ConcatOp`] call each.
#[derive(Debug)]
struct BoundConcat {
    udf: Arc<ScalarUDF>,
}

impl AnalyzerRule for BoundConcat {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| {
            let names = NamePreserver::new(&plan);
            plan.map_expressions(|expr| {
                let name = names.save(&expr);
                expr.transform_up(|expr| self.rewrite(expr))
                    .map(|rewritten| rewritten.update_data(|expr| name.restore(expr)))
            })
        })
        .map(|rewritten| rewritten.data)
    }

    fn name(&self) -> &str {
        "bound_string_concat"
    }
}

impl BoundConcat {
    /// `a || b` into `concat_op(a, b)`; chains (already rewritten below) into one call.
    fn rewrite(&self, expr: Expr) -> DfResult<Transformed<Expr>> {
        match expr {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::StringConcat,
                right,
            }) => {
                let mut args = operands(*left);
                args.extend(operands(*right));
                Ok(Transformed::yes(Expr::ScalarFunction(
                    ScalarFunction::new_udf(Arc::clone(&self.udf), args),
                )))
            }
            other => Ok(Transformed::no(other)),
        }
    }
}

/// The operands `expr` contributes to a chain: its own if it is a chain already.
fn operands(expr: Expr) -> Vec<Expr> {
    match expr {
        Expr::ScalarFunction(call) if call.func.name() == NAME => call.args,
        other => vec![other],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn chains_become_one_call() {
        let pool: Arc<dyn MemoryPool> =
            Arc::new(datafusion::execution::memory_pool::UnboundedMemoryPool::default());
        let udf = Arc::new(ScalarUDF::new_from_impl(ConcatOp {
            signature: Signature::variadic_any(Volatility::Volatile),
            pool,
        }));
        let rule = BoundConcat { udf };
        let concat = |left: Expr, right: Expr| {
            Expr::BinaryExpr(BinaryExpr::new(
                Box::new(left),
                Operator::StringConcat,
                Box::new(right),
            ))
        };
        let chain = concat(concat(col("a"), col("b")), lit("c"));
        let rewritten = chain.transform_up(|expr| rule.rewrite(expr)).unwrap().data;
        assert_eq!(rewritten.to_string(), "concat_op(a, b, Utf8(\"c\"))");
    }
}
