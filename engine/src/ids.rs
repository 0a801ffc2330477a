//! Domain newtypes: trace and span ids, displayed as lowercase hex.

use std::fmt;

/// A 16-byte OTLP trace id. Displays as 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte OTLP span id. Displays as 16 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SpanId(pub [u8; 8]);

/// Why a hex id did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// Wrong number of hex characters.
    #[error("expected {expected} hex characters, found {found}")]
    Length {
        /// Expected number of characters.
        expected: usize,
        /// Number found.
        found: usize,
    },
    /// A character that is not a hex digit.
    #[error("not a hex string")]
    NotHex,
}

fn parse_hex<const N: usize>(text: &str) -> Result<[u8; N], IdError> {
    if text.len() != N * 2 {
        return Err(IdError::Length {
            expected: N * 2,
            found: text.len(),
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).map_err(|_| IdError::NotHex)?;
    Ok(out)
}

impl TraceId {
    /// Parses 32 hex characters (either case).
    pub fn from_hex(text: &str) -> Result<Self, IdError> {
        parse_hex(text).map(TraceId)
    }

    /// True for the all-zero id, which OTLP defines as invalid.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    /// Writes the lowercase hex form into `out` without allocating.
    pub fn encode_hex<'b>(&self, out: &'b mut [u8; 32]) -> &'b str {
        encode_hex_into(&self.0, out)
    }
}

impl SpanId {
    /// Parses 16 hex characters (either case).
    pub fn from_hex(text: &str) -> Result<Self, IdError> {
        parse_hex(text).map(SpanId)
    }

    /// True for the all-zero id, which OTLP defines as invalid.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 8]
    }

    /// Writes the lowercase hex form into `out` without allocating.
    pub fn encode_hex<'b>(&self, out: &'b mut [u8; 16]) -> &'b str {
        encode_hex_into(&self.0, out)
    }
}

fn encode_hex_into<'b>(bytes: &[u8], out: &'b mut [u8]) -> &'b str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    debug_assert_eq!(out.len(), bytes.len() * 2);
    for (index, byte) in bytes.iter().enumerate() {
        out[index * 2] = DIGITS[usize::from(byte >> 4)];
        out[index * 2 + 1] = DIGITS[usize::from(byte & 0x0f)];
    }
    // Only ASCII hex digits were written.
    std::str::from_utf8(out).unwrap_or_default()
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 32];
        f.write_str(self.encode_hex(&mut buf))
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 16];
        f.write_str(self.encode_hex(&mut buf))
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_display_lowercase_hex_and_parse_back() {
        let trace = TraceId([0xAB; 16]);
        assert_eq!(trace.to_string(), "ab".repeat(16));
        assert_eq!(TraceId::from_hex(&"AB".repeat(16)), Ok(trace));
        let span = SpanId([1, 2, 3, 4, 5, 6, 7, 0xff]);
        assert_eq!(span.to_string(), "01020304050607ff");
        assert_eq!(SpanId::from_hex("01020304050607ff"), Ok(span));
    }

    #[test]
    fn bad_hex_ids_are_rejected_with_the_reason() {
        assert_eq!(
            TraceId::from_hex("abc"),
            Err(IdError::Length {
                expected: 32,
                found: 3
            })
        );
        assert_eq!(SpanId::from_hex("zz02030405060708"), Err(IdError::NotHex));
    }
}
