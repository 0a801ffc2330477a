//! `coalesce(x, 'text')` over string views without the `CASE` it is otherwise rewritten into.
//!
//! DataFusion 55 simplifies every `coalesce` into `CASE WHEN x IS NOT NULL THEN x ELSE ... END`,
//! which builds its result slice by slice (`MutableArrayData`). Over the agent tables' string
//! views (`Utf8View`) that was ~40% of docs query 1b's CPU (`coalesce(retry_source, 'none')`
//! over 4M mostly NULL rows). A NULL filled with one literal is one view: this function keeps
//! `coalesce(x, literal)` whole when `x` is a string view column or expression and the literal
//! not NULL, and evaluates it by copying `x`'s views and putting the literal's view in the NULL
//! rows. Every other call is simplified by the built-in, which it otherwise presents unchanged.
//!
//! Invariant: the result equals the built-in's (`CASE`) value for value, type and nullability
//! (tested against it).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringViewArray};
use arrow::buffer::{Buffer, ScalarBuffer};
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{Result as DfResult, ScalarValue, internal_err};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::udf_eq::UdfEq;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};

/// `coalesce` with the string-view path, wrapping `builtin` (DataFusion's `coalesce`).
pub(crate) fn udf(builtin: &ScalarUDF) -> ScalarUDF {
    ScalarUDF::new_from_impl(CoalesceViews {
        inner: Arc::clone(builtin.inner()).into(),
    })
}

struct CoalesceViews {
    inner: UdfEq<Arc<dyn ScalarUDFImpl>>,
}

impl std::fmt::Debug for CoalesceViews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoalesceViews").finish_non_exhaustive()
    }
}

impl PartialEq for CoalesceViews {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}

impl Eq for CoalesceViews {}

impl Hash for CoalesceViews {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
    }
}

/// The text of `expr` when it is a non-NULL string view literal.
fn view_literal(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Literal(ScalarValue::Utf8View(Some(text)), _) => Some(text),
        _ => None,
    }
}

/// `array` (string views) with every NULL row holding `fill`.
fn fill_nulls(array: &StringViewArray, fill: &str) -> DfResult<ArrayRef> {
    let Some(nulls) = array.nulls().filter(|nulls| nulls.null_count() > 0) else {
        return Ok(Arc::new(array.clone()));
    };
    let mut buffers: Vec<Buffer> = array.data_buffers().to_vec();
    // A value of at most 12 bytes lives in its view; a longer one in a buffer of its own.
    let fill_view = if fill.len() <= 12 {
        arrow::array::builder::make_view(fill.as_bytes(), 0, 0)
    } else {
        buffers.push(Buffer::from(fill.as_bytes()));
        let index = u32::try_from(buffers.len() - 1).map_err(|_| {
            datafusion::common::DataFusionError::Internal("too many buffers".into())
        })?;
        arrow::array::builder::make_view(fill.as_bytes(), index, 0)
    };
    let views: ScalarBuffer<u128> = array
        .views()
        .iter()
        .enumerate()
        .map(|(row, view)| {
            if nulls.is_valid(row) {
                *view
            } else {
                fill_view
            }
        })
        .collect();
    Ok(Arc::new(StringViewArray::try_new(views, buffers, None)?))
}

impl ScalarUDFImpl for CoalesceViews {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs<'_>) -> DfResult<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> DfResult<ExprSimplifyResult> {
        if let [value, fill] = args.as_slice()
            && view_literal(value).is_none()
            && view_literal(fill).is_some()
            && info.get_data_type(value)? == DataType::Utf8View
        {
            return Ok(ExprSimplifyResult::Original(args));
        }
        self.inner.simplify(args, info)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        match args.args.as_slice() {
            [ColumnarValue::Array(array), ColumnarValue::Scalar(fill)] => {
                match (array.as_string_view_opt(), fill) {
                    (Some(array), ScalarValue::Utf8View(Some(fill))) => {
                        Ok(ColumnarValue::Array(fill_nulls(array, fill)?))
                    }
                    _ => internal_err!("coalesce kept whole only for string views and a literal"),
                }
            }
            [ColumnarValue::Scalar(value), ColumnarValue::Scalar(fill)] => {
                Ok(ColumnarValue::Scalar(if value.is_null() {
                    fill.clone()
                } else {
                    value.clone()
                }))
            }
            _ => internal_err!("coalesce kept whole only for a value and a literal"),
        }
    }

    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.inner.conditional_arguments(args)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::RecordBatch;
    use arrow::datatypes::{Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::FunctionRegistry as _;
    use datafusion::prelude::SessionContext;

    use super::*;

    async fn run(context: &SessionContext, sql: &str) -> Vec<RecordBatch> {
        context.sql(sql).await.unwrap().collect().await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn kept_whole_it_answers_as_the_builtin_case() {
        let long = "a value longer than twelve bytes";
        let values: Vec<Option<&str>> = (0..5000)
            .map(|row| match row % 4 {
                0 => None,
                1 => Some("short"),
                2 => Some(long),
                _ => Some(""),
            })
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8View, true),
            Field::new("t", DataType::Utf8View, true),
        ]));
        let column: ArrayRef = Arc::new(StringViewArray::from(values));
        // The second column is the first shifted by one row.
        let shifted: ArrayRef =
            arrow::compute::concat(&[column.slice(1, 4999).as_ref(), column.slice(0, 1).as_ref()])
                .unwrap();
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![column, shifted]).unwrap();
        let table = || {
            Arc::new(
                MemTable::try_new(
                    Arc::clone(&schema),
                    vec![vec![batch.slice(0, 2500), batch.slice(2500, 2500)]],
                )
                .unwrap(),
            )
        };
        let builtin = SessionContext::new();
        builtin.register_table("v", table()).unwrap();
        let ours = SessionContext::new();
        ours.register_table("v", table()).unwrap();
        let coalesce = ours.state().udf("coalesce").unwrap();
        ours.register_udf(udf(&coalesce));
        for sql in [
            "SELECT coalesce(s, 'none') AS a FROM v",
            "SELECT coalesce(s, 'a fallback longer than twelve bytes') AS a FROM v",
            "SELECT coalesce(s, '') AS a FROM v",
            "SELECT coalesce(s, t) AS a FROM v",
            "SELECT coalesce(s, t, 'none') AS a FROM v",
            "SELECT coalesce(upper(s), 'none') AS a FROM v",
            "SELECT coalesce(NULL, 'none') AS a FROM v",
            "SELECT coalesce(s, 'none') AS a, count(*) AS n FROM v GROUP BY 1 ORDER BY 1",
        ] {
            let expected = run(&builtin, sql).await;
            let got = run(&ours, sql).await;
            assert_eq!(
                arrow::compute::concat_batches(&expected[0].schema(), &expected).unwrap(),
                arrow::compute::concat_batches(&got[0].schema(), &got).unwrap(),
                "{sql}"
            );
        }
        // Kept whole (no CASE) only where it applies.
        let plan = |sql: &'static str| {
            let ours = ours.clone();
            async move {
                let text = arrow::util::pretty::pretty_format_batches(
                    &run(&ours, &format!("EXPLAIN {sql}")).await,
                )
                .unwrap()
                .to_string();
                text.contains("CASE")
            }
        };
        assert!(!plan("SELECT coalesce(s, 'none') FROM v").await);
        assert!(plan("SELECT coalesce(s, t) FROM v").await);
    }
}
