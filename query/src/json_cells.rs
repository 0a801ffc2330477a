//! JSON text of Arrow cells, written straight into a byte buffer: the rules of `format.rs`
//! (and byte for byte the text of serializing its `serde_json::Value`s), without building a
//! `Value` per cell. A result's rows are most of a wide query's time otherwise: one session's
//! `SELECT *` at 10M spans spent a third of its server time allocating, sorting and dropping
//! `Value` maps.
//!
//! Invariants:
//! - [`CellWriter::write`] of row `r` writes exactly `serde_json::to_vec(&column_values(a)[r])`.
//! - Objects list their keys in byte order, a repeated key once with its last value (what a
//!   `serde_json::Map` holds), so the text does not depend on the writer.
//! - Everything a column needs beyond its arrays (casts of dictionaries, display text of the
//!   types rendered as text) is computed once per column, not per cell.

use std::borrow::Cow;
use std::io::Write as _;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::buffer::NullBuffer;
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::timestamp::format_timestamp;
use std::sync::Arc;

/// Writes the JSON of one column's cells.
pub(crate) struct CellWriter {
    /// The column.
    array: ArrayRef,
    /// Its null mask (`array.nulls()`), which decides `null`; kept to test rows without a
    /// dynamic call each.
    nulls: Option<NullBuffer>,
    kind: Kind,
}

enum Kind {
    Null,
    Bool,
    Int8,
    Int16,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Float16,
    Float32,
    Float64,
    Utf8,
    LargeUtf8,
    Utf8View,
    Binary,
    LargeBinary,
    BinaryView,
    FixedSizeBinary,
    Timestamp(TimeUnit),
    /// Child writer; offsets come from the array.
    List(Box<CellWriter>),
    LargeList(Box<CellWriter>),
    FixedSizeList(Box<CellWriter>, usize),
    /// Children in key order (a repeated name once, its last field), with their names.
    Struct(Vec<(String, CellWriter)>),
    /// Keys and values.
    Map(Box<CellWriter>, Box<CellWriter>),
    /// Precomputed cells (dictionaries cast to their values).
    Cast(Box<CellWriter>),
    /// Display text of each row (`None`: not displayable, `null`).
    Text(Vec<Option<String>>),
}

impl CellWriter {
    /// The writer of `array`'s cells.
    pub(crate) fn new(array: ArrayRef) -> CellWriter {
        let kind = match array.data_type() {
            DataType::Null => Kind::Null,
            DataType::Boolean => Kind::Bool,
            DataType::Int8 => Kind::Int8,
            DataType::Int16 => Kind::Int16,
            DataType::Int32 => Kind::Int32,
            DataType::Int64 => Kind::Int64,
            DataType::UInt8 => Kind::UInt8,
            DataType::UInt16 => Kind::UInt16,
            DataType::UInt32 => Kind::UInt32,
            DataType::UInt64 => Kind::UInt64,
            DataType::Float16 => Kind::Float16,
            DataType::Float32 => Kind::Float32,
            DataType::Float64 => Kind::Float64,
            DataType::Utf8 => Kind::Utf8,
            DataType::LargeUtf8 => Kind::LargeUtf8,
            DataType::Utf8View => Kind::Utf8View,
            DataType::Binary => Kind::Binary,
            DataType::LargeBinary => Kind::LargeBinary,
            DataType::BinaryView => Kind::BinaryView,
            DataType::FixedSizeBinary(_) => Kind::FixedSizeBinary,
            DataType::Timestamp(unit, _) => Kind::Timestamp(*unit),
            DataType::List(_) => Kind::List(Box::new(CellWriter::new(Arc::clone(
                array.as_list::<i32>().values(),
            )))),
            DataType::LargeList(_) => Kind::LargeList(Box::new(CellWriter::new(Arc::clone(
                array.as_list::<i64>().values(),
            )))),
            DataType::FixedSizeList(_, _) => {
                let list = array.as_fixed_size_list();
                Kind::FixedSizeList(
                    Box::new(CellWriter::new(Arc::clone(list.values()))),
                    to_index(list.value_length()),
                )
            }
            DataType::Struct(fields) => {
                let columns = array.as_struct().columns();
                // Last field of each name, in name order.
                let mut named: Vec<(usize, &str)> = fields
                    .iter()
                    .enumerate()
                    .map(|(index, field)| (index, field.name().as_str()))
                    .collect();
                named.sort_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)));
                named.dedup_by(|later, kept| later.1 == kept.1);
                Kind::Struct(
                    named
                        .into_iter()
                        .map(|(index, name)| {
                            (
                                name.to_owned(),
                                CellWriter::new(Arc::clone(&columns[index])),
                            )
                        })
                        .collect(),
                )
            }
            DataType::Map(_, _) => {
                let map = array.as_map();
                Kind::Map(
                    Box::new(CellWriter::new(Arc::clone(map.keys()))),
                    Box::new(CellWriter::new(Arc::clone(map.values()))),
                )
            }
            DataType::Dictionary(_, value_type) => match cast(&array, value_type) {
                Ok(plain) => Kind::Cast(Box::new(CellWriter::new(plain))),
                Err(_) => Kind::Text(display_text(&array)),
            },
            _ => Kind::Text(display_text(&array)),
        };
        let nulls = array.nulls().cloned();
        CellWriter { array, nulls, kind }
    }

    fn is_null(&self, row: usize) -> bool {
        self.nulls.as_ref().is_some_and(|nulls| nulls.is_null(row))
    }

    /// Writes row `row` as JSON.
    pub(crate) fn write(&self, row: usize, out: &mut Vec<u8>) {
        if self.is_null(row) {
            out.extend_from_slice(b"null");
            return;
        }
        let array = self.array.as_ref();
        macro_rules! integer {
            ($type:ty) => {{
                // serde_json writes integers through `itoa`; to a Vec it cannot fail.
                let _ = serde_json::to_writer(&mut *out, &array.as_primitive::<$type>().value(row));
            }};
        }
        match &self.kind {
            Kind::Null => out.extend_from_slice(b"null"),
            Kind::Bool => out.extend_from_slice(if array.as_boolean().value(row) {
                b"true"
            } else {
                b"false"
            }),
            Kind::Int8 => integer!(Int8Type),
            Kind::Int16 => integer!(Int16Type),
            Kind::Int32 => integer!(Int32Type),
            Kind::Int64 => integer!(Int64Type),
            Kind::UInt8 => integer!(UInt8Type),
            Kind::UInt16 => integer!(UInt16Type),
            Kind::UInt32 => integer!(UInt32Type),
            Kind::UInt64 => integer!(UInt64Type),
            Kind::Float16 => float(
                array
                    .as_primitive::<arrow::datatypes::Float16Type>()
                    .value(row)
                    .to_f64(),
                out,
            ),
            // Through the shortest decimal text, so 0.1f32 becomes 0.1 and not 0.10000000149.
            Kind::Float32 => float(
                array
                    .as_primitive::<Float32Type>()
                    .value(row)
                    .to_string()
                    .parse()
                    .unwrap_or(f64::NAN),
                out,
            ),
            Kind::Float64 => float(array.as_primitive::<Float64Type>().value(row), out),
            Kind::Utf8 => string(array.as_string::<i32>().value(row), out),
            Kind::LargeUtf8 => string(array.as_string::<i64>().value(row), out),
            Kind::Utf8View => string(array.as_string_view().value(row), out),
            Kind::Binary => base64(array.as_binary::<i32>().value(row), out),
            Kind::LargeBinary => base64(array.as_binary::<i64>().value(row), out),
            Kind::BinaryView => base64(array.as_binary_view().value(row), out),
            Kind::FixedSizeBinary => base64(array.as_fixed_size_binary().value(row), out),
            Kind::Timestamp(unit) => {
                let value = match unit {
                    TimeUnit::Second => array.as_primitive::<TimestampSecondType>().value(row),
                    TimeUnit::Millisecond => {
                        array.as_primitive::<TimestampMillisecondType>().value(row)
                    }
                    TimeUnit::Microsecond => {
                        array.as_primitive::<TimestampMicrosecondType>().value(row)
                    }
                    TimeUnit::Nanosecond => {
                        array.as_primitive::<TimestampNanosecondType>().value(row)
                    }
                };
                match format_timestamp(value, *unit) {
                    Some(text) => string(&text, out),
                    None => {
                        let _ = serde_json::to_writer(&mut *out, &value);
                    }
                }
            }
            Kind::List(child) => {
                let offsets = array.as_list::<i32>().value_offsets();
                let (start, end) = (to_index(offsets[row]), to_index(offsets[row + 1]));
                child.write_array(start, end, out);
            }
            Kind::LargeList(child) => {
                let offsets = array.as_list::<i64>().value_offsets();
                let (start, end) = (to_index(offsets[row]), to_index(offsets[row + 1]));
                child.write_array(start, end, out);
            }
            Kind::FixedSizeList(child, size) => {
                let start = (array.offset() + row) * size;
                child.write_array(start, start + size, out);
            }
            Kind::Struct(children) => {
                out.push(b'{');
                for (index, (name, child)) in children.iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    string(name, out);
                    out.push(b':');
                    child.write(row, out);
                }
                out.push(b'}');
            }
            Kind::Map(keys, values) => {
                let offsets = array.as_map().value_offsets();
                let (start, end) = (to_index(offsets[row]), to_index(offsets[row + 1]));
                let end = end.max(start);
                // Keys in byte order; a repeated key keeps its last entry. A map already in
                // strict key order is written as it goes (each key's text made once); at the
                // first key out of order, what it wrote is taken back and the entries sorted.
                let mark = out.len();
                out.push(b'{');
                let mut previous: Option<Cow<'_, str>> = None;
                let mut ordered = true;
                for entry in start..end {
                    let key = keys.key_text(entry);
                    if previous.as_ref().is_some_and(|previous| *previous >= key) {
                        ordered = false;
                        break;
                    }
                    if previous.is_some() {
                        out.push(b',');
                    }
                    string(&key, out);
                    out.push(b':');
                    values.write(entry, out);
                    previous = Some(key);
                }
                if ordered {
                    out.push(b'}');
                    return;
                }
                out.truncate(mark);
                let mut entries: Vec<(Cow<'_, str>, usize)> = (start..end)
                    .map(|entry| (keys.key_text(entry), entry))
                    .collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
                entries.dedup_by(|later, kept| later.0 == kept.0);
                out.push(b'{');
                for (index, (key, entry)) in entries.iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    string(key, out);
                    out.push(b':');
                    values.write(*entry, out);
                }
                out.push(b'}');
            }
            Kind::Cast(plain) => plain.write(row, out),
            Kind::Text(text) => match &text[row] {
                Some(text) => string(text, out),
                None => out.extend_from_slice(b"null"),
            },
        }
    }

    /// Writes rows `start..end` as a JSON array.
    fn write_array(&self, start: usize, end: usize, out: &mut Vec<u8>) {
        out.push(b'[');
        for row in start..end.min(self.array.len()) {
            if row > start {
                out.push(b',');
            }
            self.write(row, out);
        }
        out.push(b']');
    }

    /// The text a map key of row `row` is listed under: a string as itself, anything else
    /// as its JSON text.
    fn key_text(&self, row: usize) -> Cow<'_, str> {
        if !self.is_null(row) {
            match self.kind {
                Kind::Utf8 => return Cow::Borrowed(self.array.as_string::<i32>().value(row)),
                Kind::LargeUtf8 => return Cow::Borrowed(self.array.as_string::<i64>().value(row)),
                Kind::Utf8View => return Cow::Borrowed(self.array.as_string_view().value(row)),
                _ => {}
            }
        }
        let mut text = Vec::new();
        self.write(row, &mut text);
        match serde_json::from_slice::<serde_json::Value>(&text) {
            Ok(serde_json::Value::String(text)) => Cow::Owned(text),
            _ => Cow::Owned(String::from_utf8_lossy(&text).into_owned()),
        }
    }
}

fn to_index<T: TryInto<usize>>(offset: T) -> usize {
    // Offsets of a valid array are non-negative and within memory.
    offset.try_into().unwrap_or(0)
}

/// A JSON string, escaped as serde_json escapes it (most text needs no escape: copied as is).
fn string(text: &str, out: &mut Vec<u8>) {
    if !needs_escape(text.as_bytes()) {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        return;
    }
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// Whether `bytes` hold a control character, `"` or `\\`. Tested 16 bytes at a time without
/// an early exit inside a block, which the compiler turns into vector compares.
fn needs_escape(bytes: &[u8]) -> bool {
    let special = |byte: u8| (byte < 0x20) | (byte == b'"') | (byte == b'\\');
    let mut blocks = bytes.chunks_exact(16);
    for block in &mut blocks {
        if block.iter().fold(false, |any, byte| any | special(*byte)) {
            return true;
        }
    }
    blocks.remainder().iter().any(|byte| special(*byte))
}

fn base64(raw: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    let start = out.len();
    out.resize(start + raw.len().div_ceil(3) * 4, 0);
    let written = BASE64
        .encode_slice(raw, &mut out[start..])
        .unwrap_or_default();
    out.truncate(start + written);
    out.push(b'"');
}

/// A finite float as serde_json writes it; NaN and the infinities as `null`.
fn float(value: f64, out: &mut Vec<u8>) {
    if value.is_finite() {
        let _ = serde_json::to_writer(&mut *out, &value);
    } else {
        let _ = out.write_all(b"null");
    }
}

fn display_text(array: &ArrayRef) -> Vec<Option<String>> {
    match ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default()) {
        Ok(formatter) => (0..array.len())
            .map(|row| Some(formatter.value(row).to_string()))
            .collect(),
        Err(_) => vec![None; array.len()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length up to 100, with each kind of byte that needs an escape (and two that do
    /// not) at every position: the same text as serde_json's.
    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for length in 0..100 {
            let base = "a".repeat(length);
            let mut cases = vec![base.clone()];
            for at in 0..length {
                for special in ['"', '\\', '\n', '\u{1}', '\u{7f}', 'é'] {
                    let mut text: Vec<char> = base.chars().collect();
                    text[at] = special;
                    cases.push(text.into_iter().collect());
                }
            }
            for text in cases {
                let mut ours = Vec::new();
                string(&text, &mut ours);
                assert_eq!(ours, serde_json::to_vec(&text).unwrap(), "{text:?}");
            }
        }
    }
}
