//! The `||` operator bounded by the query's memory budget, like the functions of
//! `bounded_functions.rs`: `s || s || s ...` over one generated value doubles what it holds at
//! every step, and the operator is not a function those wrappers could catch.
//!
//! An analyzer rule, run after type coercion, rewrites every string `a || b` into the
//! function `concat_op(a, b)`, which checks before concatenating that the result (at most both
//! inputs together) fits the query's pool, and then concatenates with the same arrow kernel
//! DataFusion's operator uses (NULL in, NULL out; same types out as in).
//!
//! Invariants: names of rewritten expressions are preserved (output schemas do not change);
//! the rule runs before the optimizer, so constant folding evaluates the bounded function, not
//! the operator.

use std::sync::Arc;

use arrow::array::Array;
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
        signature: Signature::any(2, Volatility::Immutable),
        pool: Arc::clone(pool),
    }));
    state.add_analyzer_rule(Arc::new(BoundConcat { udf }));
}

/// `a || b` on strings and binaries, checked against the query's pool first.
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

/// Bytes of `value` over `rows` rows (a scalar counts in every row when the other side is an
/// array).
fn size(value: &ColumnarValue, rows: usize, broadcast: bool) -> u64 {
    match value {
        ColumnarValue::Array(array) => array.get_array_memory_size() as u64,
        ColumnarValue::Scalar(scalar) if broadcast => {
            (scalar.size() as u64).saturating_mul(rows as u64)
        }
        ColumnarValue::Scalar(scalar) => scalar.size() as u64,
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
        Ok(arg_types.first().cloned().unwrap_or(DataType::Utf8))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let [left, right] = <[ColumnarValue; 2]>::try_from(args.args).map_err(|_| {
            datafusion::common::DataFusionError::Internal(format!("{NAME} takes two arguments"))
        })?;
        let broadcast =
            matches!(left, ColumnarValue::Array(_)) || matches!(right, ColumnarValue::Array(_));
        // The result is at most both inputs together, in every row.
        let estimate = size(&left, rows, broadcast).saturating_add(size(&right, rows, broadcast));
        let reservation = MemoryConsumer::new("|| results").register(&self.pool);
        reservation.try_grow(usize::try_from(estimate).unwrap_or(usize::MAX))?;
        let result = if broadcast {
            let (left, right) = (left.into_array(rows)?, right.into_array(rows)?);
            ColumnarValue::Array(concat_elements_dyn(&left, &right)?)
        } else {
            let (left, right) = (left.into_array(1)?, right.into_array(1)?);
            let joined = concat_elements_dyn(&left, &right)?;
            ColumnarValue::Scalar(ScalarValue::try_from_array(&joined, 0)?)
        };
        reservation.free();
        Ok(result)
    }
}

/// Rewrites `a || b` on strings and binaries into [`ConcatOp`].
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
    fn rewrite(&self, expr: Expr) -> DfResult<Transformed<Expr>> {
        match expr {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::StringConcat,
                right,
            }) => Ok(Transformed::yes(Expr::ScalarFunction(
                ScalarFunction::new_udf(Arc::clone(&self.udf), vec![*left, *right]),
            ))),
            other => Ok(Transformed::no(other)),
        }
    }
}
