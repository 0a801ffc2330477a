//! Arrow results as PostgreSQL rows (text or binary format, per column as the client asks),
//! and PostgreSQL parameters as Arrow values of the types the planner inferred.
//!
//! Types: booleans `bool`; integers `int2`/`int4`/`int8` (unsigned ones widened, `UInt64`
//! as `int8`, an error past its range); floats `float4`/`float8`; strings `text`; binaries
//! `bytea`; timestamps with a time zone `timestamptz`, without `timestamp` (microseconds, as
//! PostgreSQL keeps them); dates `date`; lists, maps and structs `json`; anything else `text`
//! as Arrow displays it.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Float32Array, Float64Array,
    Int16Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray, new_null_array,
};
use arrow::datatypes::{
    DataType, Date32Type, Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, Schema, TimeUnit, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime};
use futures::stream;
use pgwire::api::Type;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::results::{DataRowEncoder, FieldInfo, QueryResponse};
use pgwire::error::{PgWireError, PgWireResult};

use super::{Statement, pg_error};

/// The PostgreSQL type a column of `data_type` is sent as.
pub(crate) fn pg_type(data_type: &DataType) -> Type {
    match data_type {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => Type::INT8,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => Type::BYTEA,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Date32 => Type::DATE,
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::ListView(_)
        | DataType::FixedSizeList(..)
        | DataType::Map(..)
        | DataType::Struct(_) => Type::JSON,
        _ => Type::TEXT,
    }
}

/// The row description of `schema`, each column in the format `format` gives it.
pub(crate) fn fields(schema: &Schema, format: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(index, field)| {
            FieldInfo::new(
                field.name().clone(),
                None,
                None,
                pg_type(field.data_type()),
                format.format_for(index),
            )
        })
        .collect()
}

fn is_nested(data_type: &DataType) -> bool {
    pg_type(data_type) == Type::JSON
}

/// `output` as a query response, all rows encoded now (the engine bounded the result's rows
/// and Arrow bytes); SQLSTATE 54000 when the encoded rows exceed `max_bytes`, as the HTTP API
/// bounds its formatted body.
pub(crate) fn encode(
    output: &query::QueryOutput,
    format: &Format,
    max_bytes: usize,
) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(fields(&output.schema, format));
    // Nested values go out as the HTTP API's JSON.
    let json = output
        .schema
        .fields()
        .iter()
        .any(|field| is_nested(field.data_type()))
        .then(|| query::format::to_json(output));
    let json_rows = json
        .as_ref()
        .and_then(|json| json.get("rows"))
        .and_then(|rows| rows.as_array());
    let mut rows = Vec::with_capacity(output.num_rows());
    let mut encoder = DataRowEncoder::new(Arc::clone(&fields));
    let mut row_number = 0usize;
    let mut encoded_bytes = 0usize;
    let options = FormatOptions::default();
    for batch in &output.batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|column| ArrayFormatter::try_new(column.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| PgWireError::ApiError(Box::new(error)))?;
        for row in 0..batch.num_rows() {
            for (index, column) in batch.columns().iter().enumerate() {
                let json_cell = json_rows
                    .and_then(|rows| rows.get(row_number))
                    .and_then(|cells| cells.get(index));
                encode_cell(&mut encoder, column, row, json_cell, &formatters[index])?;
            }
            let data_row = encoder.take_row();
            encoded_bytes = encoded_bytes.saturating_add(data_row.data.len());
            if encoded_bytes > max_bytes {
                return Err(pg_error(
                    "ERROR",
                    "54000",
                    format!(
                        "query result exceeds {max_bytes} bytes once encoded; select fewer columns or rows"
                    ),
                ));
            }
            rows.push(Ok(data_row));
            row_number += 1;
        }
    }
    Ok(QueryResponse::new(fields, stream::iter(rows)))
}

fn encode_cell(
    encoder: &mut DataRowEncoder,
    column: &ArrayRef,
    row: usize,
    json: Option<&serde_json::Value>,
    formatter: &ArrayFormatter<'_>,
) -> PgWireResult<()> {
    if column.is_null(row) {
        return encoder.encode_field(&None::<&str>);
    }
    match column.data_type() {
        DataType::Boolean => encoder.encode_field(&column.as_boolean().value(row)),
        DataType::Int8 => {
            encoder.encode_field(&i16::from(column.as_primitive::<Int8Type>().value(row)))
        }
        DataType::Int16 => encoder.encode_field(&column.as_primitive::<Int16Type>().value(row)),
        DataType::UInt8 => {
            encoder.encode_field(&i16::from(column.as_primitive::<UInt8Type>().value(row)))
        }
        DataType::Int32 => encoder.encode_field(&column.as_primitive::<Int32Type>().value(row)),
        DataType::UInt16 => {
            encoder.encode_field(&i32::from(column.as_primitive::<UInt16Type>().value(row)))
        }
        DataType::Int64 => encoder.encode_field(&column.as_primitive::<Int64Type>().value(row)),
        DataType::UInt32 => {
            encoder.encode_field(&i64::from(column.as_primitive::<UInt32Type>().value(row)))
        }
        DataType::UInt64 => {
            let value = column.as_primitive::<UInt64Type>().value(row);
            let value = i64::try_from(value).map_err(|_| {
                pg_error(
                    "ERROR",
                    "22003",
                    format!("value {value} is out of range for int8"),
                )
            })?;
            encoder.encode_field(&value)
        }
        DataType::Float16 => {
            encoder.encode_field(&f32::from(column.as_primitive::<Float16Type>().value(row)))
        }
        DataType::Float32 => encoder.encode_field(&column.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => encoder.encode_field(&column.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => encoder.encode_field(&column.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => encoder.encode_field(&column.as_string::<i64>().value(row)),
        DataType::Utf8View => encoder.encode_field(&column.as_string_view().value(row)),
        DataType::Binary => encoder.encode_field(&column.as_binary::<i32>().value(row)),
        DataType::LargeBinary => encoder.encode_field(&column.as_binary::<i64>().value(row)),
        DataType::BinaryView => encoder.encode_field(&column.as_binary_view().value(row)),
        DataType::FixedSizeBinary(_) => {
            encoder.encode_field(&column.as_fixed_size_binary().value(row))
        }
        DataType::Timestamp(unit, zone) => {
            let nanos = timestamp_nanos(column, *unit, row);
            let utc = DateTime::from_timestamp_nanos(nanos);
            if zone.is_some() {
                encoder.encode_field(&utc.fixed_offset())
            } else {
                encoder.encode_field(&utc.naive_utc())
            }
        }
        DataType::Date32 => {
            let days = column.as_primitive::<Date32Type>().value(row);
            match Date32Type::to_naive_date_opt(days) {
                Some(date) => encoder.encode_field(&date),
                None => encoder.encode_field(&formatter.value(row).to_string()),
            }
        }
        data_type if is_nested(data_type) => {
            let text = json.map(serde_json::Value::to_string).unwrap_or_default();
            encoder.encode_field(&text)
        }
        _ => encoder.encode_field(&formatter.value(row).to_string()),
    }
}

/// Nanoseconds since the epoch of a timestamp cell (saturating: beyond ±292 years).
fn timestamp_nanos(column: &ArrayRef, unit: TimeUnit, row: usize) -> i64 {
    use arrow::datatypes::{
        TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
        TimestampSecondType,
    };
    match unit {
        TimeUnit::Second => column
            .as_primitive::<TimestampSecondType>()
            .value(row)
            .saturating_mul(1_000_000_000),
        TimeUnit::Millisecond => column
            .as_primitive::<TimestampMillisecondType>()
            .value(row)
            .saturating_mul(1_000_000),
        TimeUnit::Microsecond => column
            .as_primitive::<TimestampMicrosecondType>()
            .value(row)
            .saturating_mul(1_000),
        TimeUnit::Nanosecond => column.as_primitive::<TimestampNanosecondType>().value(row),
    }
}

/// The portal's parameters as one-row arrays of the types `prepared` inferred (text where it
/// inferred none). Each value is read as the type the client declared (or the inferred one),
/// in the client's format, then cast.
pub(crate) fn decode_parameters(
    portal: &Portal<Statement>,
    prepared: &query::Prepared,
) -> PgWireResult<Vec<ArrayRef>> {
    let expected = prepared.parameters.len();
    if portal.parameter_len() != expected {
        return Err(pg_error(
            "ERROR",
            "08P01",
            format!(
                "bind message supplies {} parameters, but the statement has {expected}",
                portal.parameter_len()
            ),
        ));
    }
    let mut arrays = Vec::with_capacity(expected);
    for index in 0..expected {
        let declared = portal
            .statement
            .parameter_types
            .get(index)
            .cloned()
            .flatten()
            .filter(|declared| *declared != Type::UNKNOWN);
        // Where the statement fixes no type (`LIMIT $1`), the client's declared type decides
        // (its value read in its natural Arrow type), else text.
        let inferred = prepared.parameters[index].clone();
        let target = inferred.clone().unwrap_or(DataType::Utf8);
        let declared = declared.unwrap_or_else(|| pg_type(&target));
        let value = read_parameter(portal, index, &declared)?;
        let array = match value {
            None => new_null_array(&target, 1),
            Some(array) if inferred.is_none() || array.data_type() == &target => array,
            Some(array) => arrow::compute::cast(&array, &target).map_err(|error| {
                pg_error(
                    "ERROR",
                    "22P02",
                    format!(
                        "parameter ${}: cannot read it as {target}: {error}",
                        index + 1
                    ),
                )
            })?,
        };
        arrays.push(array);
    }
    Ok(arrays)
}

/// Parameter `index` as a one-row array of the natural Arrow type of `declared`; `None` for
/// NULL.
fn read_parameter(
    portal: &Portal<Statement>,
    index: usize,
    declared: &Type,
) -> PgWireResult<Option<ArrayRef>> {
    let unsupported = || {
        pg_error(
            "ERROR",
            "0A000",
            format!(
                "parameter ${}: type {} is not supported; send it as text",
                index + 1,
                declared.name()
            ),
        )
    };
    let array: Option<ArrayRef> = match *declared {
        Type::BOOL => portal
            .parameter::<bool>(index, declared)?
            .map(|value| Arc::new(BooleanArray::from(vec![value])) as ArrayRef),
        Type::INT2 => portal
            .parameter::<i16>(index, declared)?
            .map(|value| Arc::new(Int16Array::from(vec![value])) as ArrayRef),
        Type::INT4 => portal
            .parameter::<i32>(index, declared)?
            .map(|value| Arc::new(Int32Array::from(vec![value])) as ArrayRef),
        Type::INT8 => portal
            .parameter::<i64>(index, declared)?
            .map(|value| Arc::new(Int64Array::from(vec![value])) as ArrayRef),
        Type::FLOAT4 => portal
            .parameter::<f32>(index, declared)?
            .map(|value| Arc::new(Float32Array::from(vec![value])) as ArrayRef),
        Type::FLOAT8 => portal
            .parameter::<f64>(index, declared)?
            .map(|value| Arc::new(Float64Array::from(vec![value])) as ArrayRef),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::JSON => portal
            .parameter::<String>(index, &Type::TEXT)?
            .map(|value| Arc::new(StringArray::from(vec![value])) as ArrayRef),
        Type::BYTEA => portal
            .parameter::<Vec<u8>>(index, declared)?
            .map(|value| Arc::new(BinaryArray::from_vec(vec![value.as_slice()])) as ArrayRef),
        Type::TIMESTAMPTZ => portal
            .parameter::<DateTime<FixedOffset>>(index, declared)?
            .map(|value| {
                Arc::new(
                    TimestampMicrosecondArray::from(vec![value.timestamp_micros()])
                        .with_timezone("UTC"),
                ) as ArrayRef
            }),
        Type::TIMESTAMP => portal
            .parameter::<NaiveDateTime>(index, declared)?
            .map(|value| {
                Arc::new(TimestampMicrosecondArray::from(vec![
                    value.and_utc().timestamp_micros(),
                ])) as ArrayRef
            }),
        Type::DATE => match portal.parameter::<NaiveDate>(index, declared)? {
            None => None,
            Some(date) => Some(
                Arc::new(Date32Array::from(vec![Date32Type::from_naive_date(date)])) as ArrayRef,
            ),
        },
        _ => return Err(unsupported()),
    };
    Ok(array)
}
