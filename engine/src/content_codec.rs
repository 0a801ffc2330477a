//! A [`ContentBatch`] as bytes, inside a WAL record (see `wal.rs`): what recovery needs to
//! apply a write's content again when the index transaction that applied it was not durable.
//!
//! Layout (little-endian): `[stored ns u64][blob count u32]` then per blob
//! `[sha-256 32][len u32][text]` (or `[sha-256 32][u32::MAX]` for a blob elided: it was in the
//! memtable when the record was written, so an earlier record or a content segment has its
//! text; a history re-sent every turn is not written to the WAL again), then `[reference count u32]` and per reference
//! `[trace 16][span 8][key len u16][key][digest 32][form u8][tier: 0 | 1 + len u16 + text]`
//! `[pieces: 0 | 1 + count u32 + (0 + len u32 + text | 1 + sha-256 32)*]`.
//! Records written since references moved into the span rows (`content_refs.rs`) carry none
//! here; an older record's references are attached to its rows at replay.
//! The record around it carries the format version and the checksum.

use std::collections::HashSet;

use crate::content::{ContentBatch, ContentHash, ContentRef, Reader};
use crate::error::Result;
use crate::ids::{SpanId, TraceId};

/// Length written for an elided blob.
const ELIDED: u32 = u32::MAX;

/// Appends `batch` to `out`, without the text of the blobs in `elided`.
pub(crate) fn encode(batch: &ContentBatch, elided: &HashSet<ContentHash>, out: &mut Vec<u8>) {
    out.extend_from_slice(&batch.stored_unix_nanos.to_le_bytes());
    out.extend_from_slice(&(batch.blobs.len() as u32).to_le_bytes());
    for (hash, text) in &batch.blobs {
        out.extend_from_slice(hash);
        if elided.contains(hash) {
            out.extend_from_slice(&ELIDED.to_le_bytes());
            continue;
        }
        out.extend_from_slice(&(text.len() as u32).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(&(batch.refs.len() as u32).to_le_bytes());
    for reference in &batch.refs {
        out.extend_from_slice(&reference.trace_id.0);
        out.extend_from_slice(&reference.span_id.0);
        out.extend_from_slice(&(reference.key.len() as u16).to_le_bytes());
        out.extend_from_slice(reference.key.as_bytes());
        out.extend_from_slice(&reference.digest);
        out.push(reference.form);
        match &reference.tier {
            None => out.push(0),
            Some(tier) => {
                out.push(1);
                out.extend_from_slice(&(tier.len() as u16).to_le_bytes());
                out.extend_from_slice(tier.as_bytes());
            }
        }
        crate::content::write_pieces(out, reference.pieces.as_deref());
    }
}

/// Decodes what [`encode`] wrote; `location` names the record in errors. The elided blobs are
/// returned apart, without text.
pub(crate) fn decode(bytes: &[u8], location: &str) -> Result<(ContentBatch, Vec<ContentHash>)> {
    let mut reader = Reader { bytes, location };
    let stored_unix_nanos = reader.u64()?;
    let blob_count = reader.u32()? as usize;
    let mut blobs = Vec::with_capacity(blob_count.min(4096));
    let mut elided = Vec::new();
    for _ in 0..blob_count {
        let hash = reader.hash()?;
        let len = reader.u32()?;
        if len == ELIDED {
            elided.push(hash);
            continue;
        }
        blobs.push((hash, reader.text(len as usize)?));
    }
    let ref_count = reader.u32()? as usize;
    let mut refs = Vec::with_capacity(ref_count.min(4096));
    for _ in 0..ref_count {
        let mut trace = [0; 16];
        trace.copy_from_slice(reader.take(16)?);
        let mut span = [0; 8];
        span.copy_from_slice(reader.take(8)?);
        let key_len = usize::from(reader.u16()?);
        let key = reader.text(key_len)?;
        let digest = reader.hash()?;
        let form = reader.u8()?;
        let tier = match reader.u8()? {
            0 => None,
            _ => {
                let len = usize::from(reader.u16()?);
                Some(reader.text(len)?)
            }
        };
        let pieces = crate::content::read_pieces(&mut reader)?;
        refs.push(ContentRef {
            trace_id: TraceId(trace),
            span_id: SpanId(span),
            key,
            digest,
            form,
            pieces,
            tier,
        });
    }
    if !reader.bytes.is_empty() {
        return Err(crate::content::corrupt(
            location,
            format!("{} bytes after the last reference", reader.bytes.len()),
        ));
    }
    Ok((
        ContentBatch {
            blobs,
            refs,
            stored_unix_nanos,
        },
        elided,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::ContentPiece;

    #[test]
    fn content_batches_round_trip_and_refuse_damage() {
        let batch = ContentBatch {
            blobs: vec![
                ([3; 32], "{\"role\":\"user\"}".into()),
                ([4; 32], String::new()),
            ],
            refs: vec![
                ContentRef {
                    trace_id: TraceId([1; 16]),
                    span_id: SpanId([2; 8]),
                    key: "gen_ai.input.messages".into(),
                    digest: [9; 32],
                    form: 1,
                    pieces: Some(vec![
                        ContentPiece::Literal("[".into()),
                        ContentPiece::Blob([3; 32]),
                        ContentPiece::Literal("]".into()),
                    ]),
                    tier: Some("decisions".into()),
                },
                ContentRef {
                    trace_id: TraceId([1; 16]),
                    span_id: SpanId([5; 8]),
                    key: "events[0].gen_ai.prompt".into(),
                    digest: [8; 32],
                    form: 0,
                    pieces: None,
                    tier: None,
                },
            ],
            stored_unix_nanos: 1_700_000_000_000_000_000,
        };
        let mut bytes = Vec::new();
        encode(&batch, &HashSet::new(), &mut bytes);
        let (back, elided) = decode(&bytes, "wal entry 7").unwrap();
        assert!(elided.is_empty());
        assert_eq!(back.blobs, batch.blobs);
        assert_eq!(back.refs, batch.refs);
        assert_eq!(back.stored_unix_nanos, batch.stored_unix_nanos);

        // A blob the memtable held is written without its text.
        let mut short = Vec::new();
        encode(&batch, &HashSet::from([[3; 32]]), &mut short);
        assert!(short.len() < bytes.len());
        let (back, elided) = decode(&short, "wal entry 7").unwrap();
        assert_eq!(elided, vec![[3; 32]]);
        assert_eq!(back.blobs, batch.blobs[1..]);
        assert_eq!(back.refs, batch.refs);

        let error = decode(&bytes[..bytes.len() - 3], "wal entry 7")
            .unwrap_err()
            .to_string();
        assert!(error.contains("wal entry 7"), "{error}");
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, "wal entry 7").is_err());
    }
}
