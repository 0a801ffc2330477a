//! A span's content references as one value of the hidden `content_refs` column: for each
//! content attribute the ingest moved to the content store, its key, keyed digest, form and the
//! pieces (literal text and blob hashes) whose concatenation is the value. Kept in the span row,
//! references are sealed, expired, moved to a promoted tier and erased with it; redb holds none.
//!
//! Layout: `[version 1][count u16]`, then per reference `[key len u16][key][digest 32][form u8]`
//! `[captured u8]`, and when captured `[piece count u32]` and pieces `0 [len u32][text]` or
//! `1 [sha-256 32]`. A history re-sent every turn repeats the previous turn's hashes; the
//! segment's zstd finds those repeats in the neighbouring rows of the same trace.
//!
//! Invariants: every row of a write gets exactly the references the write names for its
//! (trace, span); a row without any holds NULL.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BinaryBuilder, RecordBatch};

use crate::content::{ContentRef, Reader, corrupt};
use crate::error::Result;
use crate::ids::{SpanId, TraceId};
use crate::schema::{column_index, columns};

const VERSION: u8 = 1;

/// Encodes the references of one span.
pub(crate) fn encode(refs: &[&ContentRef]) -> Vec<u8> {
    let mut out = vec![VERSION];
    out.extend_from_slice(&(refs.len() as u16).to_le_bytes());
    for reference in refs {
        out.extend_from_slice(&(reference.key.len() as u16).to_le_bytes());
        out.extend_from_slice(reference.key.as_bytes());
        out.extend_from_slice(&reference.digest);
        out.push(reference.form);
        crate::content::write_pieces(&mut out, reference.pieces.as_deref());
    }
    out
}

/// Decodes the references of the span (`trace`, `span`) from `bytes`.
pub(crate) fn decode(trace: TraceId, span: SpanId, bytes: &[u8]) -> Result<Vec<ContentRef>> {
    let location = format!("content_refs of span {span} of trace {trace}");
    let mut reader = Reader {
        bytes,
        location: &location,
    };
    let version = reader.u8()?;
    if version != VERSION {
        return Err(corrupt(
            &location,
            format!("expected version {VERSION}, found {version}"),
        ));
    }
    let count = usize::from(reader.u16()?);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let key_len = usize::from(reader.u16()?);
        let key = reader.text(key_len)?;
        let digest = reader.hash()?;
        let form = reader.u8()?;
        let pieces = crate::content::read_pieces(&mut reader)?;
        out.push(ContentRef {
            trace_id: trace,
            span_id: span,
            key,
            digest,
            form,
            pieces,
            tier: None,
        });
    }
    if !reader.bytes.is_empty() {
        return Err(corrupt(&location, "bytes after the last reference"));
    }
    Ok(out)
}

/// `batch` with its `content_refs` column set from `refs` (matched to rows by trace and span
/// id). References naming no row of the batch are dropped: a reference lives in its span's row.
pub(crate) fn attach(batch: RecordBatch, refs: &[ContentRef]) -> Result<RecordBatch> {
    if refs.is_empty() {
        return Ok(batch);
    }
    let mut by_span: HashMap<(String, String), Vec<&ContentRef>> = HashMap::new();
    for reference in refs {
        by_span
            .entry((
                reference.trace_id.to_string(),
                reference.span_id.to_string(),
            ))
            .or_default()
            .push(reference);
    }
    let encoded: HashMap<(String, String), Vec<u8>> = by_span
        .into_iter()
        .map(|(key, refs)| (key, encode(&refs)))
        .collect();
    let traces = batch
        .column(column_index(columns::TRACE_ID))
        .as_string::<i32>();
    let spans = batch
        .column(column_index(columns::SPAN_ID))
        .as_string::<i32>();
    let mut builder =
        BinaryBuilder::with_capacity(batch.num_rows(), encoded.values().map(Vec::len).sum());
    let mut key = (String::new(), String::new());
    for row in 0..batch.num_rows() {
        key.0.clear();
        key.0.push_str(traces.value(row));
        key.1.clear();
        key.1.push_str(spans.value(row));
        match encoded.get(&key) {
            Some(bytes) => builder.append_value(bytes),
            None => builder.append_null(),
        }
    }
    let mut columns = batch.columns().to_vec();
    columns[column_index(columns::CONTENT_REFS)] = Arc::new(builder.finish());
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// The references the rows of `batch` hold (`batch` has the span schema, or at least its
/// trace id, span id and content references columns under their names).
pub(crate) fn refs_in_batch(batch: &RecordBatch) -> Result<Vec<ContentRef>> {
    Ok(rows_with_refs(batch)?
        .into_iter()
        .flat_map(|(_, refs)| refs)
        .collect())
}

/// Each row of `batch` that holds references, by row number, with them.
pub(crate) fn rows_with_refs(batch: &RecordBatch) -> Result<Vec<(usize, Vec<ContentRef>)>> {
    let (Some(traces), Some(spans), Some(refs)) = (
        batch.column_by_name(columns::TRACE_ID),
        batch.column_by_name(columns::SPAN_ID),
        batch.column_by_name(columns::CONTENT_REFS),
    ) else {
        return Ok(Vec::new());
    };
    if refs.null_count() == refs.len() {
        return Ok(Vec::new());
    }
    let traces = traces.as_string::<i32>();
    let spans = spans.as_string::<i32>();
    let refs = refs.as_binary::<i32>();
    let mut out = Vec::new();
    for row in 0..batch.num_rows() {
        if refs.is_null(row) {
            continue;
        }
        let (Ok(trace), Ok(span)) = (
            TraceId::from_hex(traces.value(row)),
            SpanId::from_hex(spans.value(row)),
        ) else {
            return Err(corrupt(
                "content_refs",
                format!("row {row} has references but no valid trace and span id"),
            ));
        };
        out.push((row, decode(trace, span, refs.value(row))?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{SpanBatchBuilder, SpanRecord};
    use crate::content::ContentPiece;

    #[test]
    fn references_ride_in_their_spans_rows_and_read_back() {
        let mut builder = SpanBatchBuilder::new();
        for span in 1..=3u8 {
            builder.append(&SpanRecord {
                trace_id: TraceId([7; 16]),
                span_id: SpanId([span; 8]),
                ..SpanRecord::default()
            });
        }
        let reference = |span: u8, key: &str, pieces: Option<Vec<ContentPiece>>| ContentRef {
            trace_id: TraceId([7; 16]),
            span_id: SpanId([span; 8]),
            key: key.into(),
            digest: [span; 32],
            form: span % 2,
            pieces,
            tier: None,
        };
        let refs = vec![
            reference(
                1,
                "gen_ai.input.messages",
                Some(vec![
                    ContentPiece::Literal("[".into()),
                    ContentPiece::Blob([4; 32]),
                    ContentPiece::Literal("]".into()),
                ]),
            ),
            reference(1, "events[0].gen_ai.prompt", None),
            reference(3, "input.value", Some(vec![ContentPiece::Blob([5; 32])])),
            // No row of this span: dropped.
            reference(9, "output.value", None),
        ];
        let batch = attach(builder.finish(), &refs).unwrap();
        let column = batch.column(column_index(columns::CONTENT_REFS));
        assert_eq!(column.null_count(), 1);
        assert_eq!(refs_in_batch(&batch).unwrap(), refs[..3]);
        let mut damaged = encode(&[&refs[0]]);
        damaged.truncate(damaged.len() - 1);
        assert!(decode(TraceId([7; 16]), SpanId([1; 8]), &damaged).is_err());
    }
}
