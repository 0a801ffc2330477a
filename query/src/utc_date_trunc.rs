//! `date_trunc` of UTC timestamps by integer arithmetic.
//!
//! Every timestamp column here is `Timestamp(ns, "UTC")`. DataFusion 55's `date_trunc` takes
//! its arithmetic path only for timestamps without a time zone (or for granularities finer
//! than an hour); any zone, UTC included, goes value by value through chrono-tz, and builds
//! (formats) an error for every value on the way even when none is returned
//! (apache/datafusion#25325). `date_trunc('day', time)` over 11k decisions was about 15% of
//! docs query 2's CPU.
//!
//! In UTC a day is always 86,400 s and a week starts on a Monday every 7 days, so truncating
//! to `microsecond` .. `week` is `v - (v - origin) mod unit`. This function does that for
//! arrays and scalars of UTC timestamps with those granularities, and hands every other call
//! (other zones, no zone, `month`, `quarter`, `year`, times, a granularity per row) to the
//! built-in `date_trunc`, which it otherwise presents unchanged (name, signature, return
//! type, ordering, documentation).
//!
//! Invariant: for every array it handles, the result equals the built-in's, value for value
//! and in type (the unit tests compare them over random timestamps of both signs); a scalar
//! truncates as its value would in an array. (The built-in's scalar path rounds sub-second
//! truncations of times before 1970 toward zero, a later time than the one given, and fails on
//! second-unit timestamps past the nanosecond range; here both truncate down.)

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray};
use arrow::datatypes::{
    ArrowTimestampType, DataType, FieldRef, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::udf_eq::UdfEq;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};

/// `date_trunc` with the UTC fast path, wrapping `builtin` (DataFusion's `date_trunc`).
pub(crate) fn udf(builtin: &ScalarUDF) -> ScalarUDF {
    ScalarUDF::new_from_impl(UtcDateTrunc {
        inner: Arc::clone(builtin.inner()).into(),
    })
}

struct UtcDateTrunc {
    inner: UdfEq<Arc<dyn ScalarUDFImpl>>,
}

impl std::fmt::Debug for UtcDateTrunc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UtcDateTrunc").finish_non_exhaustive()
    }
}

impl PartialEq for UtcDateTrunc {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}

impl Eq for UtcDateTrunc {}

impl Hash for UtcDateTrunc {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
    }
}

/// Nanoseconds per day.
const DAY_NS: i64 = 86_400 * 1_000_000_000;
/// 1970-01-01 was a Thursday: the Monday before it is 3 days earlier.
const MONDAY_BEFORE_EPOCH_NS: i64 = -3 * DAY_NS;

/// The granularities truncated here: (nanoseconds per unit, origin in nanoseconds).
fn granularity_ns(name: &str) -> Option<(i64, i64)> {
    let unit = match name.to_ascii_lowercase().as_str() {
        "microsecond" => 1_000,
        "millisecond" => 1_000_000,
        "second" => 1_000_000_000,
        "minute" => 60 * 1_000_000_000,
        "hour" => 3_600 * 1_000_000_000,
        "day" => DAY_NS,
        "week" => return Some((7 * DAY_NS, MONDAY_BEFORE_EPOCH_NS)),
        _ => return None,
    };
    Some((unit, 0))
}

/// Whether values in zone `tz` truncate exactly as UTC.
fn is_utc(tz: &str) -> bool {
    matches!(tz, "UTC" | "Etc/UTC" | "+00:00" | "+00" | "+0000")
}

/// `unit_ns` and `origin_ns` in the units of `T`, when they are whole multiples of it (a
/// granularity finer than the column's unit is left to the built-in).
fn in_units<T: ArrowTimestampType>(unit_ns: i64, origin_ns: i64) -> Option<(i64, i64)> {
    let per = match T::UNIT {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    };
    (unit_ns % per == 0 && origin_ns % per == 0).then(|| (unit_ns / per, origin_ns / per))
}

fn truncate(value: i64, unit: i64, origin: i64) -> Option<i64> {
    let from_origin = value.checked_sub(origin)?;
    value.checked_sub(from_origin.rem_euclid(unit))
}

fn truncate_array<T: ArrowTimestampType>(
    array: &ArrayRef,
    unit_ns: i64,
    origin_ns: i64,
) -> Option<ArrayRef> {
    let (unit, origin) = in_units::<T>(unit_ns, origin_ns)?;
    let array = array.as_primitive::<T>();
    let mut values = Vec::with_capacity(array.len());
    for (row, value) in array.values().iter().enumerate() {
        match truncate(*value, unit, origin) {
            Some(truncated) => values.push(truncated),
            // Out of range (the built-in reports it), unless the row is null.
            None if array.is_null(row) => values.push(0),
            None => return None,
        }
    }
    let out = PrimitiveArray::<T>::new(values.into(), array.nulls().cloned())
        .with_timezone_opt(array.timezone());
    Some(Arc::new(out))
}

impl UtcDateTrunc {
    /// The truncation by arithmetic, or `None` to leave the call to the built-in.
    fn fast(&self, args: &ScalarFunctionArgs) -> Option<ColumnarValue> {
        let [granularity, value] = args.args.as_slice() else {
            return None;
        };
        let granularity = match granularity {
            ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(name))
                | ScalarValue::Utf8View(Some(name))
                | ScalarValue::LargeUtf8(Some(name)),
            ) => name,
            _ => return None,
        };
        let (unit_ns, origin_ns) = granularity_ns(granularity)?;
        match value {
            ColumnarValue::Array(array) => {
                let DataType::Timestamp(unit, Some(tz)) = array.data_type() else {
                    return None;
                };
                if !is_utc(tz) {
                    return None;
                }
                let out = match unit {
                    TimeUnit::Second => {
                        truncate_array::<TimestampSecondType>(array, unit_ns, origin_ns)
                    }
                    TimeUnit::Millisecond => {
                        truncate_array::<TimestampMillisecondType>(array, unit_ns, origin_ns)
                    }
                    TimeUnit::Microsecond => {
                        truncate_array::<TimestampMicrosecondType>(array, unit_ns, origin_ns)
                    }
                    TimeUnit::Nanosecond => {
                        truncate_array::<TimestampNanosecondType>(array, unit_ns, origin_ns)
                    }
                }?;
                Some(ColumnarValue::Array(out))
            }
            ColumnarValue::Scalar(scalar) => {
                let (value, tz, unit) = match scalar {
                    ScalarValue::TimestampSecond(v, Some(tz)) => (v, tz, 1_000_000_000),
                    ScalarValue::TimestampMillisecond(v, Some(tz)) => (v, tz, 1_000_000),
                    ScalarValue::TimestampMicrosecond(v, Some(tz)) => (v, tz, 1_000),
                    ScalarValue::TimestampNanosecond(v, Some(tz)) => (v, tz, 1),
                    _ => return None,
                };
                if !is_utc(tz) || unit_ns % unit != 0 || origin_ns % unit != 0 {
                    return None;
                }
                let truncated = match value {
                    Some(value) => Some(truncate(*value, unit_ns / unit, origin_ns / unit)?),
                    None => None,
                };
                let tz = Some(Arc::clone(tz));
                Some(ColumnarValue::Scalar(match scalar {
                    ScalarValue::TimestampSecond(..) => ScalarValue::TimestampSecond(truncated, tz),
                    ScalarValue::TimestampMillisecond(..) => {
                        ScalarValue::TimestampMillisecond(truncated, tz)
                    }
                    ScalarValue::TimestampMicrosecond(..) => {
                        ScalarValue::TimestampMicrosecond(truncated, tz)
                    }
                    _ => ScalarValue::TimestampNanosecond(truncated, tz),
                }))
            }
        }
    }
}

impl ScalarUDFImpl for UtcDateTrunc {
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

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        match self.fast(&args) {
            Some(result) => Ok(result),
            None => self.inner.invoke_with_args(args),
        }
    }

    fn output_ordering(&self, input: &[ExprProperties]) -> DfResult<SortProperties> {
        self.inner.output_ordering(input)
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
    use super::*;
    use arrow::array::TimestampNanosecondArray;
    use arrow::datatypes::Field;
    use datafusion::config::ConfigOptions;

    fn call(udf: &ScalarUDF, granularity: &str, value: ColumnarValue, rows: usize) -> ArrayRef {
        let value_type = value.data_type();
        let args = ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Scalar(ScalarValue::Utf8(Some(granularity.to_owned()))),
                value,
            ],
            arg_fields: vec![
                Arc::new(Field::new("g", DataType::Utf8, false)),
                Arc::new(Field::new("v", value_type.clone(), true)),
            ],
            number_rows: rows,
            return_field: Arc::new(Field::new("out", value_type, true)),
            config_options: Arc::new(ConfigOptions::default()),
        };
        udf.invoke_with_args(args)
            .unwrap()
            .into_array(rows)
            .unwrap()
    }

    /// Random timestamps of both signs, up to 250 years either side of 1970, with nulls.
    fn samples() -> Vec<Option<i64>> {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut out = vec![
            Some(0),
            Some(-1),
            Some(1),
            None,
            Some(-DAY_NS),
            Some(DAY_NS - 1),
        ];
        for _ in 0..4000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let span = 250 * 365 * DAY_NS;
            let value = i128::from(state % (2 * span.unsigned_abs())) - i128::from(span);
            let value = i64::try_from(value).unwrap();
            out.push(Some(value));
        }
        out
    }

    #[test]
    fn utc_truncation_equals_the_builtin_for_every_unit_and_granularity() {
        let builtin = datafusion::functions::datetime::date_trunc();
        let fast = udf(&builtin);
        let granularities = [
            "microsecond",
            "millisecond",
            "second",
            "minute",
            "hour",
            "day",
            "DAY",
            "week",
            "month",
            "year",
        ];
        for tz in ["UTC", "+00:00"] {
            let nanos = TimestampNanosecondArray::from(samples()).with_timezone(tz);
            let nanos: ArrayRef = Arc::new(nanos);
            for unit in [
                TimeUnit::Second,
                TimeUnit::Millisecond,
                TimeUnit::Microsecond,
                TimeUnit::Nanosecond,
            ] {
                let array =
                    arrow::compute::cast(&nanos, &DataType::Timestamp(unit, Some(tz.into())))
                        .unwrap();
                for granularity in granularities {
                    let want = call(
                        &builtin,
                        granularity,
                        ColumnarValue::Array(Arc::clone(&array)),
                        array.len(),
                    );
                    let got = call(
                        &fast,
                        granularity,
                        ColumnarValue::Array(Arc::clone(&array)),
                        array.len(),
                    );
                    assert_eq!(got.as_ref(), want.as_ref(), "{granularity} {unit:?} {tz}");
                    // A scalar truncates as its row of the array did. (The built-in's scalar
                    // path rounds sub-second granularities of times before 1970 toward zero,
                    // unlike its array path: a later time than the one given.)
                    for row in [0, 2, 3, 10, 200, 201, 202] {
                        let scalar = ScalarValue::try_from_array(&array, row).unwrap();
                        let got = call(&fast, granularity, ColumnarValue::Scalar(scalar), 1);
                        assert_eq!(
                            got.as_ref(),
                            want.slice(row, 1).as_ref(),
                            "{granularity} {unit:?} {tz} row {row}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_fast_path_takes_only_utc_and_fixed_length_granularities() {
        let builtin = datafusion::functions::datetime::date_trunc();
        let fast = UtcDateTrunc {
            inner: Arc::clone(builtin.inner()).into(),
        };
        let args = |granularity: &str, tz: Option<&str>| ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Scalar(ScalarValue::Utf8(Some(granularity.to_owned()))),
                ColumnarValue::Array(Arc::new(
                    TimestampNanosecondArray::from(vec![1_i64]).with_timezone_opt(tz),
                )),
            ],
            arg_fields: Vec::new(),
            number_rows: 1,
            return_field: Arc::new(Field::new("out", DataType::Null, true)),
            config_options: Arc::new(ConfigOptions::default()),
        };
        assert!(fast.fast(&args("day", Some("UTC"))).is_some());
        assert!(fast.fast(&args("week", Some("+00:00"))).is_some());
        assert!(fast.fast(&args("month", Some("UTC"))).is_none());
        assert!(fast.fast(&args("day", Some("Europe/Paris"))).is_none());
        assert!(fast.fast(&args("day", Some("+01:00"))).is_none());
        assert!(fast.fast(&args("day", None)).is_none());
    }
}
