//! Rendering a [`QueryOutput`] as JSON, CSV, an Arrow IPC stream or a terminal table.
//!
//! Values in JSON (and in CSV cells that hold nested values):
//! - strings as strings, integers as numbers (64-bit values exactly, also beyond 2^53),
//!   floats as numbers with NaN and ±infinity as `null`, booleans as booleans, NULL as `null`;
//! - timestamps as RFC 3339 UTC text with nine fractional digits and `Z`
//!   (`2024-05-01T12:00:00.000000000Z`); a timestamp without a zone is rendered as if UTC;
//! - binary as standard base64;
//! - lists as arrays, structs and maps as objects (keys sorted; a non-string map key is
//!   rendered as its text; a repeated key keeps its last value);
//! - everything else (decimals, dates, times, durations, intervals) as its Arrow display text,
//!   so decimals keep every digit.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Field, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, Schema,
    TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};
use crate::json_cells::CellWriter;
use crate::session::QueryOutput;
use crate::timestamp::format_timestamp;

/// `{"columns": [{"name": ..., "type": ...}], "rows": [[value, ...], ...]}`, where `type` is
/// the Arrow data type's display text and values follow the module rules.
pub fn to_json(output: &QueryOutput) -> Value {
    let mut rows = Vec::with_capacity(output.num_rows());
    for batch in &output.batches {
        rows.extend(batch_rows(batch).map(Value::Array));
    }
    let mut out = Map::new();
    out.insert("columns".to_owned(), Value::Array(columns_json(output)));
    out.insert("rows".to_owned(), Value::Array(rows));
    Value::Object(out)
}

/// `{"name": ..., "type": ...}` of each result column.
fn columns_json(output: &QueryOutput) -> Vec<Value> {
    output
        .schema
        .fields()
        .iter()
        .map(|field| {
            serde_json::json!({"name": field.name(), "type": field.data_type().to_string()})
        })
        .collect()
}

/// The rows of `batch`, each as its values in column order.
fn batch_rows(batch: &RecordBatch) -> impl Iterator<Item = Vec<Value>> {
    let mut columns: Vec<std::vec::IntoIter<Value>> = batch
        .columns()
        .iter()
        .map(|column| column_values(column.as_ref()).into_iter())
        .collect();
    (0..batch.num_rows()).map(move |_| {
        columns
            .iter_mut()
            .map(|values| values.next().unwrap_or(Value::Null))
            .collect()
    })
}

/// [`to_json`] written straight to bytes (byte for byte the serialization of its value),
/// cell by cell without building `Value`s (`json_cells.rs`), failing with
/// [`Error::TooLarge`] once the text passes `max_bytes`.
pub fn to_json_bytes(output: &QueryOutput, max_bytes: usize) -> Result<Vec<u8>> {
    // Asked once: `available_parallelism` reads the cgroup files on every call.
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let threads = *THREADS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(JSON_MAX_THREADS)
    });
    json_bytes(output, max_bytes, threads)
}

/// [`to_json_bytes`] with at most `threads` writer threads.
fn json_bytes(output: &QueryOutput, max_bytes: usize, threads: usize) -> Result<Vec<u8>> {
    let too_large = || Error::TooLarge { limit: max_bytes };
    let json_error = |error: serde_json::Error| Error::Internal(format!("writing JSON: {error}"));
    let mut out = b"{\"columns\":".to_vec();
    serde_json::to_writer(&mut out, &columns_json(output)).map_err(json_error)?;
    out.extend_from_slice(b",\"rows\":[");
    let cells = output
        .num_rows()
        .saturating_mul(output.schema.fields().len());
    let parts = (cells / JSON_CELLS_PER_THREAD).clamp(1, threads.max(1));
    if parts == 1 {
        write_json_rows(&output.batches, &mut out, max_bytes)?;
    } else {
        // Big results: each thread writes a contiguous share of the rows; the shares are
        // joined in order, byte for byte what one thread writes.
        // The calling thread writes the first share itself, straight into `out`: one thread
        // fewer to start, one share fewer to copy. The others are appended once all are
        // written, into room reserved for all of them at once.
        let shares = row_shares(&output.batches, parts);
        let write = |share: &[RecordBatch]| {
            let mut part = Vec::new();
            write_json_rows(share, &mut part, max_bytes).map(|()| part)
        };
        let panicked = || Error::Internal("a JSON writer thread panicked".to_owned());
        let (first, rest): (Result<()>, Vec<Result<Vec<u8>>>) = std::thread::scope(|scope| {
            let handles: Vec<_> = shares
                .iter()
                .skip(1)
                .map(|share| scope.spawn(move || write(share)))
                .collect();
            // A panic there is an error like one on the other threads, not an unwind.
            let first = shares.first().map_or(Ok(()), |share| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    write_json_rows(share, &mut out, max_bytes)
                }))
                .unwrap_or_else(|_| Err(panicked()))
            });
            let rest = handles
                .into_iter()
                .map(|handle| handle.join().unwrap_or_else(|_| Err(panicked())))
                .collect();
            (first, rest)
        });
        first?;
        let rest = rest.into_iter().collect::<Result<Vec<Vec<u8>>>>()?;
        let mut wrote_rows = out.last() != Some(&b'[');
        out.reserve(rest.iter().map(|part| part.len() + 1).sum());
        for part in rest {
            if part.is_empty() {
                continue;
            }
            if wrote_rows {
                out.push(b',');
            }
            wrote_rows = true;
            out.extend_from_slice(&part);
            if out.len() > max_bytes {
                return Err(too_large());
            }
        }
    }
    out.extend_from_slice(b"]}");
    if out.len() > max_bytes {
        return Err(too_large());
    }
    Ok(out)
}

/// Result cells one JSON writer thread takes on (below twice this, one thread writes all).
const JSON_CELLS_PER_THREAD: usize = 16 * 1024;

/// At most this many threads write one result's JSON.
const JSON_MAX_THREADS: usize = 4;
/// Rows written before the rest of a JSON share's room is reserved.
const JSON_SAMPLE_ROWS: usize = 32;
/// Most room reserved at once from that sample (a few large first rows overestimate).
const JSON_MAX_RESERVE: usize = 64 << 20;

/// `batches` cut into `parts` runs of consecutive rows, about equal in rows (slices share the
/// batches' buffers).
fn row_shares(batches: &[RecordBatch], parts: usize) -> Vec<Vec<RecordBatch>> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let per_part = total.div_ceil(parts.max(1)).max(1);
    let mut shares: Vec<Vec<RecordBatch>> = vec![Vec::new()];
    let mut in_share = 0;
    for batch in batches {
        let mut offset = 0;
        while offset < batch.num_rows() {
            if in_share == per_part {
                shares.push(Vec::new());
                in_share = 0;
            }
            let take = (per_part - in_share).min(batch.num_rows() - offset);
            if let Some(share) = shares.last_mut() {
                share.push(batch.slice(offset, take));
            }
            offset += take;
            in_share += take;
        }
    }
    shares
}

/// The rows of `batches` as JSON arrays separated by commas, appended to `out`; fails with
/// [`Error::TooLarge`] once `out` passes `max_bytes`.
fn write_json_rows(batches: &[RecordBatch], out: &mut Vec<u8>, max_bytes: usize) -> Result<()> {
    let mut first = true;
    // After a sample of rows, room for the rest is reserved once, at the sample's bytes per
    // row (and a margin), instead of the buffer doubling and copying itself as it grows.
    let total_rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let start = out.len();
    let mut written = 0usize;
    for batch in batches {
        let cells: Vec<CellWriter> = batch
            .columns()
            .iter()
            .map(|column| CellWriter::new(Arc::clone(column)))
            .collect();
        for row in 0..batch.num_rows() {
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'[');
            for (index, cell) in cells.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                cell.write(row, out);
            }
            out.push(b']');
            if out.len() > max_bytes {
                return Err(Error::TooLarge { limit: max_bytes });
            }
            written += 1;
            if written == JSON_SAMPLE_ROWS && total_rows > written {
                let per_row = (out.len() - start) / written;
                let guess = (total_rows - written).saturating_mul(per_row);
                let rest = guess
                    .saturating_add(guess / 8)
                    .min(max_bytes.saturating_sub(out.len()).saturating_add(1))
                    .min(JSON_MAX_RESERVE);
                // A guess: when the room cannot be had, the buffer grows as it goes instead.
                let _ = out.try_reserve(rest);
            }
        }
    }
    Ok(())
}

/// CSV with a header row. Nested values (lists, maps, structs) are written as their JSON
/// text, timestamps as RFC 3339 and binary as base64 (the JSON rules), NULL as an empty cell.
///
/// Fails with [`Error::TooLarge`] once the text passes `max_bytes`.
pub fn to_csv(output: &QueryOutput, max_bytes: usize) -> Result<Vec<u8>> {
    let schema = Arc::new(Schema::new(
        output
            .schema
            .fields()
            .iter()
            .map(|field| {
                if csv_native(field.data_type()) {
                    Arc::clone(field)
                } else {
                    Arc::new(Field::new(field.name(), DataType::Utf8, true))
                }
            })
            .collect::<Vec<_>>(),
    ));
    let mut out = Vec::new();
    // An empty batch still writes the header; later writers continue the same text.
    arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(&mut out)
        .write(&RecordBatch::new_empty(Arc::clone(&schema)))
        .map_err(Error::Format)?;
    for batch in &output.batches {
        let columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|column| {
                if csv_native(column.data_type()) {
                    Arc::clone(column)
                } else {
                    let cells: StringArray = column_values(column.as_ref())
                        .into_iter()
                        .map(csv_text)
                        .collect();
                    Arc::new(cells) as ArrayRef
                }
            })
            .collect();
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns).map_err(Error::Format)?;
        arrow::csv::WriterBuilder::new()
            .with_header(false)
            .build(&mut out)
            .write(&batch)
            .map_err(Error::Format)?;
        if out.len() > max_bytes {
            return Err(Error::TooLarge { limit: max_bytes });
        }
    }
    Ok(out)
}

/// The result as an Arrow IPC *stream* (schema message, then one message per batch).
///
/// Fails with [`Error::TooLarge`] once the stream passes `max_bytes`.
pub fn to_arrow_ipc(output: &QueryOutput, max_bytes: usize) -> Result<Vec<u8>> {
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &output.schema)
        .map_err(Error::Format)?;
    for batch in &output.batches {
        writer.write(batch).map_err(Error::Format)?;
        if writer.get_ref().len() > max_bytes {
            return Err(Error::TooLarge { limit: max_bytes });
        }
    }
    writer.finish().map_err(Error::Format)?;
    writer.into_inner().map_err(Error::Format)
}

/// A boxed text table for a terminal.
pub fn to_table(output: &QueryOutput) -> Result<String> {
    arrow::util::pretty::pretty_format_batches_with_schema(
        Arc::clone(&output.schema),
        &output.batches,
    )
    .map(|table| table.to_string())
    .map_err(Error::Format)
}

/// Types the Arrow CSV writer renders the way we want.
fn csv_native(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Null
            | DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float16
            | DataType::Float32
            | DataType::Float64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Decimal128(..)
            | DataType::Decimal256(..)
            | DataType::Date32
            | DataType::Date64
    )
}

fn csv_text(value: Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text),
        other => Some(other.to_string()),
    }
}

/// JSON values of every row of `array`.
fn column_values(array: &dyn Array) -> Vec<Value> {
    let values = non_null_values(array);
    if array.null_count() == 0 {
        return values;
    }
    values
        .into_iter()
        .enumerate()
        .map(|(row, value)| {
            if array.is_null(row) {
                Value::Null
            } else {
                value
            }
        })
        .collect()
}

/// Values of every row, ignoring the array's own null mask (applied by the caller).
fn non_null_values(array: &dyn Array) -> Vec<Value> {
    macro_rules! numbers {
        ($type:ty) => {
            array
                .as_primitive::<$type>()
                .values()
                .iter()
                .map(|value| Value::from(*value))
                .collect()
        };
    }
    macro_rules! timestamps {
        ($type:ty, $unit:expr) => {
            array
                .as_primitive::<$type>()
                .values()
                .iter()
                .map(|value| match format_timestamp(*value, $unit) {
                    Some(text) => Value::String(text),
                    None => Value::from(*value),
                })
                .collect()
        };
    }
    match array.data_type() {
        DataType::Null => vec![Value::Null; array.len()],
        DataType::Boolean => array
            .as_boolean()
            .values()
            .iter()
            .map(Value::Bool)
            .collect(),
        DataType::Int8 => numbers!(Int8Type),
        DataType::Int16 => numbers!(Int16Type),
        DataType::Int32 => numbers!(Int32Type),
        DataType::Int64 => numbers!(Int64Type),
        DataType::UInt8 => numbers!(UInt8Type),
        DataType::UInt16 => numbers!(UInt16Type),
        DataType::UInt32 => numbers!(UInt32Type),
        DataType::UInt64 => numbers!(UInt64Type),
        DataType::Float16 => array
            .as_primitive::<arrow::datatypes::Float16Type>()
            .values()
            .iter()
            .map(|value| float(value.to_f64()))
            .collect(),
        // Through the shortest decimal text, so 0.1f32 becomes 0.1 and not 0.10000000149.
        DataType::Float32 => array
            .as_primitive::<Float32Type>()
            .values()
            .iter()
            .map(|value| float(value.to_string().parse().unwrap_or(f64::NAN)))
            .collect(),
        DataType::Float64 => array
            .as_primitive::<Float64Type>()
            .values()
            .iter()
            .map(|value| float(*value))
            .collect(),
        DataType::Utf8 => strings(array.as_string::<i32>().iter()),
        DataType::LargeUtf8 => strings(array.as_string::<i64>().iter()),
        DataType::Utf8View => strings(array.as_string_view().iter()),
        DataType::Binary => bytes(array.as_binary::<i32>().iter()),
        DataType::LargeBinary => bytes(array.as_binary::<i64>().iter()),
        DataType::BinaryView => bytes(array.as_binary_view().iter()),
        DataType::FixedSizeBinary(_) => bytes(array.as_fixed_size_binary().iter()),
        DataType::Timestamp(TimeUnit::Second, _) => {
            timestamps!(TimestampSecondType, TimeUnit::Second)
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            timestamps!(TimestampMillisecondType, TimeUnit::Millisecond)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            timestamps!(TimestampMicrosecondType, TimeUnit::Microsecond)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            timestamps!(TimestampNanosecondType, TimeUnit::Nanosecond)
        }
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            let bounds = list
                .value_offsets()
                .windows(2)
                .map(|pair| (to_index(pair[0]), to_index(pair[1])));
            split_values(column_values(list.values().as_ref()), bounds, array.len())
        }
        DataType::LargeList(_) => {
            let list = array.as_list::<i64>();
            let bounds = list
                .value_offsets()
                .windows(2)
                .map(|pair| (to_index(pair[0]), to_index(pair[1])));
            split_values(column_values(list.values().as_ref()), bounds, array.len())
        }
        DataType::FixedSizeList(_, _) => {
            let list = array.as_fixed_size_list();
            let size = to_index(list.value_length());
            let start = list.offset() * size;
            let bounds = (0..array.len()).map(|row| (start + row * size, start + (row + 1) * size));
            split_values(column_values(list.values().as_ref()), bounds, array.len())
        }
        DataType::Struct(fields) => {
            let structs = array.as_struct();
            let mut columns: Vec<std::vec::IntoIter<Value>> = structs
                .columns()
                .iter()
                .map(|column| column_values(column.as_ref()).into_iter())
                .collect();
            (0..array.len())
                .map(|_| {
                    let mut object = Map::new();
                    for (field, values) in fields.iter().zip(columns.iter_mut()) {
                        object.insert(field.name().clone(), values.next().unwrap_or(Value::Null));
                    }
                    Value::Object(object)
                })
                .collect()
        }
        DataType::Map(_, _) => {
            let map = array.as_map();
            let keys = column_values(map.keys().as_ref());
            let values = column_values(map.values().as_ref());
            let mut pairs = keys.into_iter().zip(values);
            let mut out = Vec::with_capacity(array.len());
            let mut consumed = 0;
            for pair in map.value_offsets().windows(2) {
                let (start, end) = (to_index(pair[0]), to_index(pair[1]));
                // Entries before this row's first (a sliced map) are skipped.
                for _ in consumed..start {
                    pairs.next();
                }
                let mut object = Map::new();
                for _ in start..end {
                    if let Some((key, value)) = pairs.next() {
                        let key = match key {
                            Value::String(text) => text,
                            other => other.to_string(),
                        };
                        object.insert(key, value);
                    }
                }
                consumed = end.max(start);
                out.push(Value::Object(object));
            }
            out
        }
        DataType::Dictionary(_, value_type) => match cast(array, value_type) {
            Ok(plain) => column_values(plain.as_ref()),
            Err(_) => display_values(array),
        },
        _ => display_values(array),
    }
}

/// Splits child values into one array per row; `bounds` are ascending, non-overlapping.
fn split_values(
    children: Vec<Value>,
    bounds: impl Iterator<Item = (usize, usize)>,
    rows: usize,
) -> Vec<Value> {
    let mut children = children;
    let mut out = Vec::with_capacity(rows);
    for (start, end) in bounds {
        let end = end.min(children.len());
        let start = start.min(end);
        out.push(Value::Array(
            children[start..end]
                .iter_mut()
                .map(std::mem::take)
                .collect(),
        ));
    }
    out
}

fn to_index<T: TryInto<usize>>(offset: T) -> usize {
    // Offsets of a valid array are non-negative and within memory.
    offset.try_into().unwrap_or(0)
}

fn float(value: f64) -> Value {
    Number::from_f64(value).map_or(Value::Null, Value::Number)
}

fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> Vec<Value> {
    values
        .map(|value| value.map_or(Value::Null, |text| Value::String(text.to_owned())))
        .collect()
}

fn bytes<'a>(values: impl Iterator<Item = Option<&'a [u8]>>) -> Vec<Value> {
    values
        .map(|value| value.map_or(Value::Null, |raw| Value::String(BASE64.encode(raw))))
        .collect()
}

fn display_values(array: &dyn Array) -> Vec<Value> {
    match ArrayFormatter::try_new(array, &FormatOptions::default()) {
        Ok(formatter) => (0..array.len())
            .map(|row| Value::String(formatter.value(row).to_string()))
            .collect(),
        Err(_) => vec![Value::Null; array.len()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BinaryArray, Float64Array, Int64Array, ListArray, MapBuilder, StringBuilder,
        TimestampNanosecondArray, UInt64Array,
    };
    use arrow::datatypes::Int32Type as I32;

    fn json_of(array: ArrayRef) -> Vec<Value> {
        column_values(array.as_ref())
    }

    #[test]
    fn scalars_follow_the_json_rules() {
        assert_eq!(
            json_of(Arc::new(UInt64Array::from(vec![u64::MAX]))),
            vec![Value::from(u64::MAX)]
        );
        assert_eq!(
            json_of(Arc::new(Int64Array::from(vec![Some(-1), None]))),
            vec![Value::from(-1), Value::Null]
        );
        assert_eq!(
            json_of(Arc::new(Float64Array::from(vec![
                1.5,
                f64::NAN,
                f64::INFINITY
            ]))),
            vec![Value::from(1.5), Value::Null, Value::Null]
        );
        assert_eq!(
            json_of(Arc::new(BinaryArray::from(vec![&b"hi"[..]]))),
            vec![Value::from("aGk=")]
        );
        assert_eq!(
            json_of(Arc::new(
                TimestampNanosecondArray::from(vec![1]).with_timezone("UTC")
            )),
            vec![Value::from("1970-01-01T00:00:00.000000001Z")]
        );
    }

    /// Every cell the writer writes is the serialized `Value` of `column_values`, byte for byte.
    fn assert_cells_match(array: ArrayRef) {
        let values = column_values(array.as_ref());
        let writer = CellWriter::new(Arc::clone(&array));
        for (row, value) in values.iter().enumerate() {
            let mut written = Vec::new();
            writer.write(row, &mut written);
            assert_eq!(
                String::from_utf8(written).unwrap(),
                serde_json::to_string(value).unwrap(),
                "row {row} of {:?}",
                array.data_type()
            );
        }
    }

    /// One map's entries: string keys, values (`None`: NULL).
    type Entries<'a> = &'a [(&'a str, Option<&'a str>)];

    /// A map array of string keys and values, a row per item (`None`: a NULL map).
    fn string_map(rows: &[Option<Entries<'_>>]) -> ArrayRef {
        let mut builder = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for row in rows {
            for (key, value) in row.unwrap_or_default() {
                builder.keys().append_value(key);
                builder.values().append_option(*value);
            }
            builder.append(row.is_some()).unwrap();
        }
        Arc::new(builder.finish())
    }

    /// A one-row map array of integer keys and values.
    fn int_map(entries: &[(i32, i32)]) -> ArrayRef {
        let mut builder = MapBuilder::new(
            None,
            arrow::array::Int32Builder::new(),
            arrow::array::Int32Builder::new(),
        );
        for (key, value) in entries {
            builder.keys().append_value(*key);
            builder.values().append_value(*value);
        }
        builder.append(true).unwrap();
        Arc::new(builder.finish())
    }

    #[test]
    fn written_cells_are_the_values_text() {
        use arrow::array::{
            BooleanArray, Decimal128Array, DictionaryArray, FixedSizeListArray, Float32Array,
            Int32Array, StringArray, StructArray, TimestampSecondArray,
        };
        use arrow::buffer::OffsetBuffer;
        use arrow::datatypes::Field;
        assert_cells_match(Arc::new(Int64Array::from(vec![
            Some(i64::MIN),
            None,
            Some(7),
        ])));
        assert_cells_match(Arc::new(UInt64Array::from(vec![u64::MAX, 0])));
        assert_cells_match(Arc::new(Float64Array::from(vec![
            Some(1.5),
            Some(f64::NAN),
            Some(f64::NEG_INFINITY),
            None,
            Some(1e300),
            Some(-0.0),
        ])));
        assert_cells_match(Arc::new(Float32Array::from(vec![0.1f32, 3.4e38, f32::NAN])));
        assert_cells_match(Arc::new(BooleanArray::from(vec![
            Some(true),
            None,
            Some(false),
        ])));
        assert_cells_match(Arc::new(StringArray::from(vec![
            Some("plain"),
            Some("quote \" back \\ nl \n tab \t ctl \u{1} é 😀"),
            None,
        ])));
        assert_cells_match(Arc::new(BinaryArray::from(vec![
            &b""[..],
            &b"a"[..],
            &b"ab"[..],
            &b"abc"[..],
            &[0xff, 0, 1, 2][..],
        ])));
        assert_cells_match(Arc::new(
            TimestampNanosecondArray::from(vec![Some(1), None, Some(-5)]).with_timezone("UTC"),
        ));
        // Seconds past chrono's range: the raw number.
        assert_cells_match(Arc::new(TimestampSecondArray::from(vec![i64::MAX, 0])));
        assert_cells_match(Arc::new(
            Decimal128Array::from(vec![Some(12345), None])
                .with_precision_and_scale(10, 2)
                .unwrap(),
        ));
        let dictionary: DictionaryArray<I32> = vec![Some("a"), None, Some("b"), Some("a")]
            .into_iter()
            .collect();
        assert_cells_match(Arc::new(dictionary));
        let list = ListArray::from_iter_primitive::<I32, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
            Some(vec![]),
            Some(vec![Some(4)]),
        ]);
        assert_cells_match(Arc::new(list.clone()));
        assert_cells_match(Arc::new(list.slice(1, 3)));
        let fixed = FixedSizeListArray::from_iter_primitive::<I32, _, _>(
            vec![
                Some(vec![Some(1), Some(2)]),
                None,
                Some(vec![None, Some(3)]),
            ],
            2,
        );
        assert_cells_match(Arc::new(fixed.clone()));
        assert_cells_match(Arc::new(fixed.slice(1, 2)));
        // A struct with a repeated field name (the last one counts), nested in a list.
        let structs = StructArray::from(vec![
            (
                Arc::new(Field::new("z", DataType::Int32, true)),
                Arc::new(Int32Array::from(vec![Some(1), None, Some(3)])) as ArrayRef,
            ),
            (
                Arc::new(Field::new("a", DataType::Utf8, true)),
                Arc::new(StringArray::from(vec![Some("x"), Some("y"), None])) as ArrayRef,
            ),
            (
                Arc::new(Field::new("z", DataType::Int32, true)),
                Arc::new(Int32Array::from(vec![Some(9), Some(8), None])) as ArrayRef,
            ),
        ]);
        assert_cells_match(Arc::new(structs.clone()));
        let listed = ListArray::new(
            Arc::new(Field::new("item", structs.data_type().clone(), true)),
            OffsetBuffer::new(vec![0, 2, 3].into()),
            Arc::new(structs),
            None,
        );
        assert_cells_match(Arc::new(listed));
        // Maps in strict key order (written as they go): several entries, one, none, NULL
        // values, sliced; integer keys ("10" sorts before "2": ordered as numbers, not as the
        // keys' text); a key out of order after ordered ones (what was written for them is
        // taken back).
        let ordered = string_map(&[
            Some(&[("a", Some("1")), ("b", None), ("c", Some("3"))]),
            Some(&[("only", Some("x"))]),
            Some(&[]),
            Some(&[("a", Some("1")), ("é", Some("2"))]),
        ]);
        assert_cells_match(Arc::clone(&ordered));
        assert_cells_match(ordered.slice(1, 3));
        assert_cells_match(int_map(&[(1, 1), (2, 2), (10, 10)]));
        assert_cells_match(string_map(&[Some(&[
            ("a", Some("a")),
            ("c", Some("c")),
            ("b", Some("b")),
            ("d", Some("d")),
        ])]));
        // Maps: repeated keys (the last entry counts), NULL values and maps, sliced, integer
        // keys.
        let map = string_map(&[
            Some(&[("b", Some("1")), ("a", None), ("b", Some("2"))]),
            None,
            Some(&[("é", Some("3")), ("e", Some("4"))]),
        ]);
        assert_cells_match(Arc::clone(&map));
        assert_cells_match(map.slice(1, 2));
        assert_cells_match(int_map(&[(10, 20), (2, 4), (10, 20)]));
    }

    #[test]
    fn lists_and_maps_nest() {
        let list = ListArray::from_iter_primitive::<I32, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
            Some(vec![]),
        ]);
        assert_eq!(
            json_of(Arc::new(list)),
            vec![
                serde_json::json!([1, null]),
                Value::Null,
                serde_json::json!([])
            ]
        );
        let mut builder = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        builder.keys().append_value("b");
        builder.values().append_value("2");
        builder.keys().append_value("a");
        builder.values().append_null();
        builder.append(true).unwrap();
        builder.append(false).unwrap();
        builder.append(true).unwrap();
        let map: ArrayRef = Arc::new(builder.finish());
        assert_eq!(
            json_of(Arc::clone(&map)),
            vec![
                serde_json::json!({"a": null, "b": "2"}),
                Value::Null,
                serde_json::json!({})
            ]
        );
        assert_eq!(
            json_of(map.slice(1, 2)),
            vec![Value::Null, serde_json::json!({})]
        );
    }

    #[test]
    fn json_written_by_several_threads_is_the_text_one_writes() {
        use arrow::datatypes::Field;
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8View, true),
        ]));
        // Uneven batches (one empty), so shares cut through batches.
        let batch = |from: i64, rows: i64| {
            let numbers: Int64Array = (from..from + rows)
                .map(|n| (n % 7 != 0).then_some(n))
                .collect();
            let strings: arrow::array::StringViewArray = (from..from + rows)
                .map(|n| (n % 5 != 0).then(|| format!("value \"{n}\" of a longer string")))
                .collect();
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(numbers), Arc::new(strings)],
            )
            .unwrap()
        };
        let output = QueryOutput::new(
            Arc::clone(&schema),
            vec![
                batch(0, 10_000),
                batch(10_000, 0),
                batch(10_000, 7_001),
                batch(17_001, 25_000),
            ],
        );
        let one = json_bytes(&output, usize::MAX, 1).unwrap();
        assert_eq!(
            String::from_utf8(one.clone()).unwrap(),
            serde_json::to_string(&to_json(&output)).unwrap()
        );
        for threads in [2, 3, 4] {
            assert_eq!(
                json_bytes(&output, usize::MAX, threads).unwrap(),
                one,
                "{threads}"
            );
            // The byte cap holds however the rows are shared out.
            assert!(matches!(
                json_bytes(&output, one.len() - 1, threads),
                Err(Error::TooLarge { .. })
            ));
            assert!(matches!(
                json_bytes(&output, one.len() / 3, threads),
                Err(Error::TooLarge { .. })
            ));
        }
        // A share boundary on a batch boundary, and more threads than the cells call for.
        let shares = row_shares(&output.batches, 2);
        assert_eq!(shares.len(), 2);
        let rows = |share: &[RecordBatch]| share.iter().map(RecordBatch::num_rows).sum::<usize>();
        assert_eq!((rows(&shares[0]), rows(&shares[1])), (21_001, 21_000));
        let small = QueryOutput::new(Arc::clone(&schema), vec![batch(0, 3)]);
        assert_eq!(
            json_bytes(&small, usize::MAX, 4).unwrap(),
            json_bytes(&small, usize::MAX, 1).unwrap()
        );
    }
}
