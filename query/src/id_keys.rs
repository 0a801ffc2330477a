//! Compact join keys from span and trace ids.
//!
//! `spans` shows its ids as lowercase hex: `trace_id` 32 characters, `span_id` and
//! `parent_span_id` 16. A join on them hashes and compares those strings; decoded, the same ids
//! are 16 and 8 bytes, and a key of a trace id and a span id fits in 24 bytes ([`IdKey`]).
//!
//! Invariants:
//! - A key is built only from valid ids: exactly the expected number of lowercase hex
//!   characters. Anything else is an error naming the column, never a key: damaged data must
//!   not match (or miss) a row it should not. NULL has no key.
//! - For one [`KeyLayout`], two rows get equal keys iff their ids are equal column by column:
//!   decoding valid ids is one-to-one and each column has a fixed place in the key.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result as DfResult, exec_err};

/// Which id a key column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdKind {
    /// A trace id: 32 hex characters, 16 bytes.
    Trace,
    /// A span id: 16 hex characters, 8 bytes.
    Span,
}

impl IdKind {
    /// The id's length in bytes.
    pub(crate) fn bytes(self) -> usize {
        match self {
            IdKind::Trace => 16,
            IdKind::Span => 8,
        }
    }
}

/// The bytes of an [`IdKey`].
pub(crate) const KEY_BYTES: usize = 24;

/// The ids of one row's key columns, decoded and packed in column order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct IdKey([u8; KEY_BYTES]);

/// The key columns of one side of a join: their kinds, in `on` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyLayout(Vec<IdKind>);

impl KeyLayout {
    /// A layout of `kinds`, or `None` when they do not fit in one [`IdKey`] (or are none).
    pub(crate) fn new(kinds: Vec<IdKind>) -> Option<Self> {
        let bytes: usize = kinds.iter().map(|kind| kind.bytes()).sum();
        (!kinds.is_empty() && bytes <= KEY_BYTES).then_some(Self(kinds))
    }

    /// The keys of `columns` (one per kind, in order), one per row; `None` for a row where any
    /// key column is NULL. An id that is not valid hex of its length is an error.
    pub(crate) fn keys(
        &self,
        columns: &[ArrayRef],
        names: &[String],
    ) -> DfResult<Vec<Option<IdKey>>> {
        let rows = columns.first().map_or(0, |column| column.len());
        let mut keys = vec![Some(IdKey::default()); rows];
        let mut offset = 0;
        for ((&kind, column), name) in self.0.iter().zip(columns).zip(names) {
            let place = Place {
                kind,
                range: offset..offset + kind.bytes(),
                name,
            };
            match column.data_type() {
                DataType::Utf8 => {
                    let ids = column.as_string::<i32>();
                    let (offsets, text) = (ids.value_offsets(), ids.value_data());
                    for (row, key) in keys.iter_mut().enumerate() {
                        let id = ids
                            .is_valid(row)
                            .then(|| &text[offsets[row] as usize..offsets[row + 1] as usize]);
                        place.put(key, id)?;
                    }
                }
                DataType::LargeUtf8 => {
                    let ids = column.as_string::<i64>();
                    for (row, key) in keys.iter_mut().enumerate() {
                        place.put(key, ids.is_valid(row).then(|| ids.value(row).as_bytes()))?;
                    }
                }
                DataType::Utf8View => {
                    let ids = column.as_string_view();
                    for (row, key) in keys.iter_mut().enumerate() {
                        place.put(key, ids.is_valid(row).then(|| ids.value(row).as_bytes()))?;
                    }
                }
                other => return exec_err!("id column {name} is {other}, not a string"),
            }
            offset += kind.bytes();
        }
        Ok(keys)
    }
}

/// Where one column's ids go in a key.
struct Place<'a> {
    kind: IdKind,
    range: std::ops::Range<usize>,
    name: &'a str,
}

impl Place<'_> {
    /// Decodes `id` into its place in `key`; a NULL `id` leaves the row without a key.
    #[inline]
    fn put(&self, key: &mut Option<IdKey>, id: Option<&[u8]>) -> DfResult<()> {
        match (key.as_mut(), id) {
            (None, _) => Ok(()),
            (Some(_), None) => {
                *key = None;
                Ok(())
            }
            (Some(bytes), Some(id)) => {
                if decode_hex(id, &mut bytes.0[self.range.clone()]) {
                    Ok(())
                } else {
                    Err(bad_id(self.name, self.kind, id))
                }
            }
        }
    }
}

#[cold]
fn bad_id(name: &str, kind: IdKind, id: &[u8]) -> DataFusionError {
    let shown: String = String::from_utf8_lossy(id).chars().take(40).collect();
    DataFusionError::Execution(format!(
        "{name} holds {shown:?}, not {} lowercase hex characters: the stored ids are damaged",
        kind.bytes() * 2
    ))
}

/// Decodes lowercase hex `text` into `out`; false (with `out` unspecified) unless `text` is
/// exactly `2 * out.len()` lowercase hex digits. `out.len()` is a multiple of 4 (ids are 8 or
/// 16 bytes).
fn decode_hex(text: &[u8], out: &mut [u8]) -> bool {
    if text.len() != out.len() * 2 || !out.len().is_multiple_of(4) {
        return false;
    }
    let mut valid = true;
    for (chunk, out) in text.chunks_exact(8).zip(out.chunks_exact_mut(4)) {
        let word = u64::from_le_bytes([
            chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
        ]);
        let (bytes, ok) = decode_word(word);
        out.copy_from_slice(&bytes);
        valid &= ok;
    }
    valid
}

const LOW: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` (all below 0x80) set iff that byte is at least `n`.
fn at_least(word: u64, n: u8) -> u64 {
    word.wrapping_add(u64::from(0x80 - n) * LOW) & HIGH
}

/// Eight hex characters (the first in the low byte) to the four bytes they spell, and whether
/// all eight are lowercase hex digits. Each byte's checks stay inside the byte: no carries.
fn decode_word(word: u64) -> ([u8; 4], bool) {
    let ascii = word & HIGH == 0;
    let word = word & !HIGH;
    let digit = at_least(word, b'0') & !at_least(word, b'9' + 1);
    let letter = at_least(word, b'a') & !at_least(word, b'f' + 1);
    let valid = ascii && (digit | letter) == HIGH;
    // '0'..'9' are 0x30..0x39, 'a'..'f' 0x61..0x66: the low nibble, plus 9 for a letter.
    let nibbles = (word & (LOW * 0x0f)) + (letter >> 7) * 9;
    // Byte 2k becomes nibble 2k (high) and nibble 2k + 1 (low); then the even bytes close up.
    let pairs = ((nibbles << 4) | (nibbles >> 8)) & 0x00ff_00ff_00ff_00ff;
    let pairs = (pairs | (pairs >> 8)) & 0x0000_ffff_0000_ffff;
    let packed = (pairs | (pairs >> 16)) as u32;
    (packed.to_le_bytes(), valid)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{StringArray, StringViewArray};

    use super::*;

    #[test]
    fn hex_decodes_only_lowercase_digits_of_the_right_length() {
        let mut out = [0u8; 4];
        assert!(decode_hex(b"00ff7a9c", &mut out));
        assert_eq!(out, [0x00, 0xff, 0x7a, 0x9c]);
        assert!(decode_hex(b"0123abcd", &mut out));
        assert_eq!(out, [0x01, 0x23, 0xab, 0xcd]);
        for bad in [
            &b"00FF7a9c"[..],
            b"00ff7a9",
            b"00ff7a9c0",
            b"00ff7a9g",
            b"0 ff7a9c",
            b"",
        ] {
            assert!(!decode_hex(bad, &mut out), "{bad:?}");
        }
        // Every byte value round-trips through its hex form, in every position.
        for value in 0..=255u8 {
            for position in 0..4 {
                let mut bytes = [0x5a; 4];
                bytes[position] = value;
                let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                assert!(decode_hex(text.as_bytes(), &mut out), "{text}");
                assert_eq!(out, bytes, "{text}");
            }
        }
        // Every character that is not a lowercase hex digit is refused, in every position.
        for c in (0..=255u8).filter(|c| !matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            for position in 0..8 {
                let mut text = *b"5a5a5a5a";
                text[position] = c;
                assert!(!decode_hex(&text, &mut out), "{text:?}");
            }
        }
    }

    #[test]
    fn keys_pack_columns_in_order_and_null_rows_have_none() {
        let layout = KeyLayout::new(vec![IdKind::Trace, IdKind::Span]).unwrap();
        let traces: ArrayRef = Arc::new(StringArray::from(vec![
            Some("000102030405060708090a0b0c0d0e0f"),
            Some("000102030405060708090a0b0c0d0e0f"),
            None,
        ]));
        let spans: ArrayRef = Arc::new(StringViewArray::from(vec![
            Some("1011121314151617"),
            None,
            Some("1011121314151617"),
        ]));
        let names = ["trace_id".to_string(), "span_id".to_string()];
        let keys = layout.keys(&[traces, spans], &names).unwrap();
        let expected: Vec<u8> = (0..24).collect();
        assert_eq!(keys[0].unwrap().0.as_slice(), expected.as_slice());
        assert_eq!(keys[1], None);
        assert_eq!(keys[2], None);
    }

    #[test]
    fn a_damaged_id_is_an_error_naming_its_column() {
        let layout = KeyLayout::new(vec![IdKind::Span]).unwrap();
        let spans: ArrayRef = Arc::new(StringArray::from(vec![
            "1011121314151617",
            "101112131415161",
        ]));
        let error = layout
            .keys(&[spans], &["parent_span_id".to_string()])
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("parent_span_id holds \"101112131415161\""),
            "{error}"
        );
    }

    #[test]
    fn layouts_fit_one_key() {
        assert!(KeyLayout::new(vec![IdKind::Trace, IdKind::Span]).is_some());
        assert!(KeyLayout::new(vec![IdKind::Span; 3]).is_some());
        assert!(KeyLayout::new(vec![IdKind::Trace, IdKind::Trace]).is_none());
        assert!(KeyLayout::new(vec![]).is_none());
    }
}
