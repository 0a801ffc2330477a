//! WAL records: one per acknowledged write, holding its span rows (an Arrow IPC stream) and
//! the content they reference (see `content_codec.rs`), zstd-compressed together.
//!
//! Layout: `b"SLW"` magic, format version byte, then zstd of
//! - version 2 (written now): `[IPC length u32][Arrow IPC stream][content batch]`;
//! - version 1 (read only, stores written before content moved into the record): the Arrow IPC
//!   stream alone.
//!
//! A record is only ever read back by recovery, which rejects anything else with the entry's
//! sequence number in the error. Records live in WAL files (`wal_log.rs`); version 1 records
//! in the `wal` redb table of older stores.

use std::io::Cursor;

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::content::ContentBatch;
use crate::error::{Error, Result};

const MAGIC: &[u8; 3] = b"SLW";
const VERSION: u8 = 2;
const VERSION_SPANS_ONLY: u8 = 1;
/// A negative (fast) level: the WAL is on the ingest hot path and is deleted at the next seal.
const ZSTD_LEVEL: i32 = -3;

/// A decoded WAL record.
#[derive(Debug)]
pub(crate) struct WalRecord {
    /// The span rows.
    pub(crate) batches: Vec<RecordBatch>,
    /// The content they reference (empty for version 1 records).
    pub(crate) content: ContentBatch,
    /// Blobs the record names without their text (see `content_codec.rs`).
    pub(crate) elided: Vec<crate::content::ContentHash>,
}

/// Encodes a write (span rows and their content, without the text of the blobs in `elided`)
/// as a WAL record.
pub(crate) fn encode(
    batch: &RecordBatch,
    content: &ContentBatch,
    elided: &std::collections::HashSet<crate::content::ContentHash>,
) -> Result<Vec<u8>> {
    let mut raw = Vec::with_capacity(batch.get_array_memory_size() / 2 + content.text_bytes());
    raw.extend_from_slice(&[0; 4]);
    {
        let mut writer = StreamWriter::try_new(&mut raw, &batch.schema())?;
        writer.write(batch)?;
        writer.finish()?;
    }
    let ipc_len = u32::try_from(raw.len() - 4).map_err(|_| Error::Corrupt {
        location: "wal record".to_owned(),
        detail: "span rows over 4 GiB in one write".to_owned(),
    })?;
    raw[..4].copy_from_slice(&ipc_len.to_le_bytes());
    crate::content_codec::encode(content, elided, &mut raw);
    let mut out = Vec::with_capacity(4 + zstd::zstd_safe::compress_bound(raw.len()));
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    let mut cursor = Cursor::new(out);
    cursor.set_position(4);
    COMPRESSOR
        .with(|slot| -> std::io::Result<usize> {
            let mut slot = slot.borrow_mut();
            let compressor = match &mut *slot {
                Some(compressor) => compressor,
                None => slot.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL)?),
            };
            compressor.compress_to_buffer(&raw, &mut cursor)
        })
        .map_err(|source| Error::io("compress wal record", "wal", source))?;
    Ok(cursor.into_inner())
}

thread_local! {
    /// One compression context per writing thread: making one per record (and its tables'
    /// fresh pages) was a measurable part of ingest.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decodes a WAL record written by [`encode`] (or a version 1 record).
pub(crate) fn decode(sequence: u64, record: &[u8]) -> Result<WalRecord> {
    let location = format!("wal entry {sequence}");
    let corrupt = |detail: String| Error::Corrupt {
        location: location.clone(),
        detail,
    };
    if record.len() < 4 || &record[..3] != MAGIC {
        return Err(corrupt("expected magic SLW".to_owned()));
    }
    let raw = zstd::stream::decode_all(&record[4..])
        .map_err(|error| corrupt(format!("zstd: {error}")))?;
    let (ipc, (content, elided)) = match record[3] {
        VERSION => {
            let Some((len, rest)) = raw.split_first_chunk::<4>() else {
                return Err(corrupt("record shorter than its header".to_owned()));
            };
            let len = u32::from_le_bytes(*len) as usize;
            if rest.len() < len {
                return Err(corrupt(format!(
                    "span rows of {len} bytes, {} in the record",
                    rest.len()
                )));
            }
            let (ipc, content) = rest.split_at(len);
            (ipc, crate::content_codec::decode(content, &location)?)
        }
        VERSION_SPANS_ONLY => (raw.as_slice(), (ContentBatch::default(), Vec::new())),
        other => {
            return Err(corrupt(format!(
                "expected format version {VERSION} or {VERSION_SPANS_ONLY}, found {other}"
            )));
        }
    };
    let reader = StreamReader::try_new(Cursor::new(ipc), None)
        .map_err(|error| corrupt(format!("arrow ipc: {error}")))?;
    let schema = reader.schema();
    if crate::schema::missing_columns(schema.fields()).is_none() {
        return Err(corrupt("schema is not the span schema".to_owned()));
    }
    let mut batches = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|error| corrupt(format!("arrow ipc: {error}")))?;
        batches.push(crate::schema::upgrade(batch)?);
    }
    Ok(WalRecord {
        batches,
        content,
        elided,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{SpanBatchBuilder, SpanRecord};
    use crate::ids::{SpanId, TraceId};
    use crate::schema::span_schema;

    #[test]
    fn records_written_before_arrival_time_decode_with_it_null() {
        let mut builder = SpanBatchBuilder::new();
        builder.append(&SpanRecord {
            trace_id: TraceId([7; 16]),
            span_id: SpanId([1; 8]),
            ..SpanRecord::default()
        });
        let current = builder.finish();
        let fields = current.schema().fields().len();
        // Before `arrival_time` and `content_refs`, and before `content_refs` only.
        for missing in [2, 1] {
            let legacy = current
                .project(&(0..fields - missing).collect::<Vec<_>>())
                .unwrap();
            let decoded = decode(
                1,
                &encode(&legacy, &ContentBatch::default(), &Default::default()).unwrap(),
            )
            .unwrap()
            .batches;
            assert_eq!(decoded[0].schema(), span_schema());
            for column in fields - missing..fields {
                assert_eq!(decoded[0].column(column).null_count(), 1);
            }
        }
        // Anything else is still refused.
        let other = current.project(&[0, 1]).unwrap();
        assert!(
            decode(
                2,
                &encode(&other, &ContentBatch::default(), &Default::default()).unwrap()
            )
            .is_err()
        );
    }

    #[test]
    fn wal_records_round_trip_and_reject_damage() {
        let mut builder = SpanBatchBuilder::new();
        builder.append(&SpanRecord {
            trace_id: TraceId([7; 16]),
            span_id: SpanId([1; 8]),
            name: "x",
            ..SpanRecord::default()
        });
        let batch = builder.finish();
        let content = ContentBatch {
            blobs: vec![([1; 32], "hello".into())],
            refs: Vec::new(),
            stored_unix_nanos: 42,
        };
        let record = encode(&batch, &content, &Default::default()).unwrap();
        let decoded = decode(3, &record).unwrap();
        assert_eq!(decoded.batches, vec![batch.clone()]);
        assert_eq!(decoded.content.blobs, content.blobs);
        assert_eq!(decoded.content.stored_unix_nanos, 42);

        // Version 1 (spans only, the redb `wal` table of older stores) still decodes.
        let mut ipc = Vec::new();
        {
            let mut writer = StreamWriter::try_new(&mut ipc, &batch.schema()).unwrap();
            writer.write(&batch).unwrap();
            writer.finish().unwrap();
        }
        let mut v1 = b"SLW\x01".to_vec();
        v1.extend(zstd::stream::encode_all(ipc.as_slice(), 1).unwrap());
        let decoded = decode(5, &v1).unwrap();
        assert_eq!(decoded.batches, vec![batch]);
        assert!(decoded.content.is_empty());

        let mut damaged = record.clone();
        damaged[0] = b'X';
        let error = decode(3, &damaged).unwrap_err().to_string();
        assert!(error.contains("wal entry 3"), "{error}");
        let truncated = &record[..record.len() / 2];
        assert!(decode(4, truncated).is_err());
    }
}
