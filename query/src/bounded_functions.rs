//! Functions that can make a value far larger than their arguments, bounded by the query's
//! memory budget.
//!
//! DataFusion's memory pool counts what operators hold (sorts, joins, aggregations), not the
//! arrays that expressions produce. `repeat('x', 1e10)`, `lpad('', 1e10)`, `range(1e12)` or a
//! global `regexp_replace` with a long replacement would allocate gigabytes in one call. Each
//! such function (and `concat`, which joins what they made) is registered wrapped in
//! [`Bounded`]: before calling the real function, it works out from the arguments an upper
//! bound of what the call produces for the whole batch and checks that it fits what is left
//! of the query's pool (reserved for the call, released after it: the result then belongs to
//! whatever holds it, which operators and the result buffer count). A call that does not fit
//! fails with `ResourcesExhausted`, before anything is allocated; `concat` counts its inputs,
//! so joining what the others made (`concat(repeat(..), repeat(..), ...)`) is bounded too, and
//! the `||` operator is rewritten into a bounded function (`bounded_concat.rs`).
//!
//! Invariant: every function here produces at most the bytes [`Bounded::estimate`] says (the
//! estimates are upper bounds, never guesses that could be too low).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::kernels::length::length;
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, FieldRef, Int64Type, IntervalMonthDayNanoType, TimeUnit};
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::execution::context::SessionState;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::logical_expr::udf_eq::UdfEq;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};

/// The functions wrapped, by name.
const BOUNDED: [&str; 10] = [
    "concat",
    "concat_ws",
    "repeat",
    "lpad",
    "rpad",
    "replace",
    "regexp_replace",
    "array_repeat",
    "range",
    "generate_series",
];

/// Replaces each function of [`BOUNDED`] in `state` with its bounded form over `pool`.
pub(crate) fn install(state: &mut SessionState, pool: &Arc<dyn MemoryPool>) -> DfResult<()> {
    for name in BOUNDED {
        let Ok(inner) = state.udf(name) else {
            continue;
        };
        // Volatile, so the planner never folds a call into a literal: a folded value is
        // broadcast to every row of a batch unchecked (`repeat('ab', 1e6)` over 2,000 rows
        // is 4 GB, and past 2 GiB arrow panics). At run time the estimate counts every row.
        let signature = Signature {
            volatility: Volatility::Volatile,
            ..inner.signature().clone()
        };
        let bounded = Bounded {
            inner: Arc::clone(inner.inner()).into(),
            pool: Arc::clone(pool),
            signature,
        };
        state.register_udf(Arc::new(ScalarUDF::new_from_impl(bounded)))?;
    }
    Ok(())
}

/// A function whose output is reserved from `pool` before it is computed.
struct Bounded {
    inner: UdfEq<Arc<dyn ScalarUDFImpl>>,
    pool: Arc<dyn MemoryPool>,
    /// The inner function's signature, volatile.
    signature: Signature,
}

impl std::fmt::Debug for Bounded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bounded")
            .field("inner", &self.inner.name())
            .finish_non_exhaustive()
    }
}

impl PartialEq for Bounded {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner && Arc::ptr_eq(&self.pool, &other.pool)
    }
}

impl Eq for Bounded {}

impl Hash for Bounded {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
    }
}

impl Bounded {
    /// An upper bound of the bytes this call produces, over all its rows.
    fn estimate(&self, args: &ScalarFunctionArgs) -> DfResult<u64> {
        let rows = args.number_rows;
        let arg = |index: usize| args.args.get(index).map(Values::new);
        let mut total = 0u64;
        match self.inner.name() {
            "concat" | "concat_ws" => {
                // The joined text is at most all the arguments together, in every row.
                let any_array = args
                    .args
                    .iter()
                    .any(|value| matches!(value, ColumnarValue::Array(_)));
                for value in &args.args {
                    let size = match value {
                        ColumnarValue::Array(array) => {
                            crate::view_sizes::array_size(array.as_ref()) as u64
                        }
                        ColumnarValue::Scalar(scalar) if any_array => {
                            (scalar.size() as u64).saturating_mul(rows as u64)
                        }
                        ColumnarValue::Scalar(scalar) => scalar.size() as u64,
                    };
                    total = total.saturating_add(size);
                }
            }
            "repeat" => {
                let (Some(text), Some(count)) = (arg(0), arg(1)) else {
                    return Ok(0);
                };
                let (text, count) = (text.byte_lengths()?, count.ints()?);
                for row in 0..rows {
                    total = total.saturating_add(text(row).saturating_mul(positive(count(row))));
                }
            }
            "lpad" | "rpad" => {
                let Some(count) = arg(1) else { return Ok(0) };
                let count = count.ints()?;
                for row in 0..rows {
                    // Four bytes for each character of UTF-8 at most.
                    total = total.saturating_add(positive(count(row)).saturating_mul(4));
                }
            }
            "replace" => {
                let (Some(text), Some(from), Some(to)) = (arg(0), arg(1), arg(2)) else {
                    return Ok(0);
                };
                let (text, from, to) = (
                    text.byte_lengths()?,
                    from.byte_lengths()?,
                    to.byte_lengths()?,
                );
                for row in 0..rows {
                    let (text, from, to) = (text(row), from(row), to(row));
                    // An empty pattern matches between every two bytes, at most.
                    let matches = text.checked_div(from).unwrap_or(text + 1);
                    total = total.saturating_add(text.saturating_add(matches.saturating_mul(to)));
                }
            }
            "regexp_replace" => {
                let (Some(text), Some(replacement)) = (arg(0), arg(2)) else {
                    return Ok(0);
                };
                let global = match args.args.get(3) {
                    Some(ColumnarValue::Scalar(flags)) => flags.to_string().contains('g'),
                    // Per-row flags: assume the worst.
                    Some(ColumnarValue::Array(_)) => true,
                    None => false,
                };
                let text = text.byte_lengths()?;
                let (lengths, references) = replacement.lengths_and_references()?;
                for row in 0..rows {
                    let text = text(row);
                    // Matches may be empty, so a global replace matches at most len + 1 times;
                    // each `$n` in the replacement copies at most the whole text.
                    let matches = if global { text + 1 } else { 1 };
                    let copies = references(row).saturating_mul(text.saturating_mul(matches));
                    total = total.saturating_add(
                        text.saturating_add(matches.saturating_mul(lengths(row)))
                            .saturating_add(copies),
                    );
                }
            }
            "array_repeat" => {
                let (Some(element), Some(count)) = (arg(0), arg(1)) else {
                    return Ok(0);
                };
                let (element, count) = (element.value_sizes(), count.ints()?);
                for row in 0..rows {
                    total = total.saturating_add(
                        positive(count(row)).saturating_mul(element(row).saturating_add(8)),
                    );
                }
            }
            "range" | "generate_series" => {
                let elements = range_lengths(&args.args)?;
                for row in 0..rows {
                    total = total.saturating_add(elements(row).saturating_mul(16));
                }
            }
            _ => {}
        }
        Ok(total)
    }
}

fn positive(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// An argument's values: one scalar for every row, or one value per row.
enum Values<'a> {
    Scalar(&'a ScalarValue),
    Array(&'a ArrayRef),
}

type PerRow = Box<dyn Fn(usize) -> u64>;
type PerRowInt = Box<dyn Fn(usize) -> i64>;

impl<'a> Values<'a> {
    fn new(value: &'a ColumnarValue) -> Self {
        match value {
            ColumnarValue::Scalar(scalar) => Values::Scalar(scalar),
            ColumnarValue::Array(array) => Values::Array(array),
        }
    }

    fn one_row(&self) -> DfResult<ArrayRef> {
        match self {
            Values::Scalar(scalar) => scalar.to_array_of_size(1),
            Values::Array(array) => Ok(Arc::clone(array)),
        }
    }

    /// Byte length of each row's string (0 for null and non-strings).
    fn byte_lengths(&self) -> DfResult<PerRow> {
        let array = self.one_row()?;
        let lengths: Vec<u64> = match array.data_type() {
            DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView => {
                let lengths =
                    cast_with_options(&length(&array)?, &DataType::Int64, &CastOptions::default())?;
                lengths
                    .as_primitive::<Int64Type>()
                    .iter()
                    .map(|length| positive(length.unwrap_or(0)))
                    .collect()
            }
            _ => vec![0; array.len()],
        };
        Ok(self.per_row(lengths))
    }

    /// Each row's string length and how many `$` (capture references) it holds.
    fn lengths_and_references(&self) -> DfResult<(PerRow, PerRow)> {
        let array = self.one_row()?;
        let text = cast_with_options(&array, &DataType::Utf8, &CastOptions::default())?;
        let text = text.as_string::<i32>();
        let lengths = text
            .iter()
            .map(|value| value.map_or(0, |v| v.len() as u64))
            .collect();
        let references = text
            .iter()
            .map(|value| value.map_or(0, |v| v.matches(['$', '\\']).count() as u64))
            .collect();
        Ok((self.per_row(lengths), self.per_row(references)))
    }

    /// Each row's value as an integer (0 for null).
    fn ints(&self) -> DfResult<PerRowInt> {
        let array = cast_with_options(&self.one_row()?, &DataType::Int64, &CastOptions::default())?;
        let values: Vec<i64> = array
            .as_primitive::<Int64Type>()
            .iter()
            .map(|value| value.unwrap_or(0))
            .collect();
        Ok(match self {
            Values::Scalar(_) => {
                let value = values.first().copied().unwrap_or(0);
                Box::new(move |_| value)
            }
            Values::Array(_) => Box::new(move |row| values.get(row).copied().unwrap_or(0)),
        })
    }

    /// Memory of each row's value, whatever its type (an average over an array's rows).
    fn value_sizes(&self) -> PerRow {
        match self {
            Values::Scalar(scalar) => {
                let size = scalar.size() as u64;
                Box::new(move |_| size)
            }
            Values::Array(array) => {
                let size =
                    (crate::view_sizes::array_size(array.as_ref()) / array.len().max(1)) as u64 + 1;
                Box::new(move |_| size)
            }
        }
    }

    fn per_row(&self, values: Vec<u64>) -> PerRow {
        match self {
            Values::Scalar(_) => {
                let value = values.first().copied().unwrap_or(0);
                Box::new(move |_| value)
            }
            Values::Array(_) => Box::new(move |row| values.get(row).copied().unwrap_or(0)),
        }
    }
}

/// Elements of each row's `range(...)`/`generate_series(...)`, over integers, dates or
/// timestamps (the step's interval counted at its shortest: a month as 28 days, less than a
/// microsecond as one).
fn range_lengths(args: &[ColumnarValue]) -> DfResult<PerRow> {
    let values: Vec<Values<'_>> = args.iter().map(Values::new).collect();
    let as_int = |value: &Values<'_>| -> DfResult<PerRowInt> {
        let array = value.one_row()?;
        let array: ArrayRef = match array.data_type() {
            DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) => cast_with_options(
                &array,
                &DataType::Timestamp(TimeUnit::Microsecond, None),
                &CastOptions::default(),
            )?,
            _ => array,
        };
        Values::Array(&array).ints().map(|ints| match value {
            Values::Scalar(_) => {
                let first = ints(0);
                Box::new(move |_| first) as PerRowInt
            }
            Values::Array(_) => ints,
        })
    };
    let (start, stop): (PerRowInt, PerRowInt) = match values.as_slice() {
        [stop] => (Box::new(|_| 0), as_int(stop)?),
        [start, stop, ..] => (as_int(start)?, as_int(stop)?),
        [] => return Ok(Box::new(|_| 0)),
    };
    let step: PerRowInt = match values.get(2) {
        None => Box::new(|_| 1),
        Some(step) => {
            let array = step.one_row()?;
            let steps: Vec<i64> = match array.data_type() {
                DataType::Interval(_) => {
                    let mdn = cast_with_options(
                        &array,
                        &DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano),
                        &CastOptions::default(),
                    )?;
                    mdn.as_primitive::<IntervalMonthDayNanoType>()
                        .iter()
                        .map(|value| {
                            value.map_or(0, |v| {
                                // Microseconds, like the bounds (nanoseconds overflow i64
                                // past the year 2262).
                                const DAY: i128 = 86_400_000_000;
                                let micros = i128::from(v.months) * 28 * DAY
                                    + i128::from(v.days) * DAY
                                    + i128::from(v.nanoseconds) / 1_000;
                                i64::try_from(micros.unsigned_abs()).unwrap_or(i64::MAX)
                            })
                        })
                        .collect()
                }
                _ => {
                    let ints = Values::Array(&array).ints()?;
                    (0..array.len())
                        .map(|row| ints(row).saturating_abs())
                        .collect()
                }
            };
            match step {
                Values::Scalar(_) => {
                    let first = steps.first().copied().unwrap_or(1);
                    Box::new(move |_| first)
                }
                Values::Array(_) => Box::new(move |row| steps.get(row).copied().unwrap_or(1)),
            }
        }
    };
    Ok(Box::new(move |row| {
        let span = i128::from(stop(row)) - i128::from(start(row));
        // A zero step is an error in DataFusion; count it as one element.
        let step = i128::from(step(row).max(1));
        u64::try_from(span.unsigned_abs() / step.unsigned_abs() + 1).unwrap_or(u64::MAX)
    }))
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs<'_>) -> DfResult<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn is_strict(&self) -> bool {
        self.inner.is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let estimate = usize::try_from(self.estimate(&args)?).unwrap_or(usize::MAX);
        let reservation =
            MemoryConsumer::new(format!("{}()", self.inner.name())).register(&self.pool);
        reservation.try_grow(estimate)?;
        let result = self.inner.invoke_with_args(args);
        reservation.free();
        result
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}
