//! WAL records: one per acknowledged write, holding the span rows as a zstd-compressed Arrow IPC
//! stream.
//!
//! Layout: `b"SLW"` magic, format version byte (1), then zstd(Arrow IPC stream bytes).
//! A record is only ever read back by recovery, which rejects anything else with the entry's
//! sequence number in the error.

use std::io::Cursor;

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};
use crate::schema::span_schema;

const MAGIC: &[u8; 3] = b"SLW";
const VERSION: u8 = 1;
/// A negative (fast) level: the WAL is on the ingest hot path and is deleted at the next seal.
const ZSTD_LEVEL: i32 = -3;

/// Encodes a batch as a WAL record.
pub(crate) fn encode(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut ipc = Vec::with_capacity(batch.get_array_memory_size() / 2);
    {
        let mut writer = StreamWriter::try_new(&mut ipc, &batch.schema())?;
        writer.write(batch)?;
        writer.finish()?;
    }
    let mut out = Vec::with_capacity(ipc.len() / 3 + 8);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    zstd::stream::copy_encode(Cursor::new(ipc), &mut out, ZSTD_LEVEL)
        .map_err(|source| Error::io("compress wal record", "wal", source))?;
    Ok(out)
}

/// Decodes a WAL record written by [`encode`].
pub(crate) fn decode(sequence: u64, record: &[u8]) -> Result<Vec<RecordBatch>> {
    let corrupt = |detail: String| Error::Corrupt {
        location: format!("wal entry {sequence}"),
        detail,
    };
    if record.len() < 4 || &record[..3] != MAGIC {
        return Err(corrupt("expected magic SLW".to_owned()));
    }
    if record[3] != VERSION {
        return Err(corrupt(format!(
            "expected format version {VERSION}, found {}",
            record[3]
        )));
    }
    let ipc = zstd::stream::decode_all(&record[4..])
        .map_err(|error| corrupt(format!("zstd: {error}")))?;
    let reader = StreamReader::try_new(Cursor::new(ipc), None)
        .map_err(|error| corrupt(format!("arrow ipc: {error}")))?;
    let schema = reader.schema();
    if schema != span_schema() && !crate::schema::is_before_arrival_time(schema.fields()) {
        return Err(corrupt("schema is not the span schema".to_owned()));
    }
    let mut batches = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|error| corrupt(format!("arrow ipc: {error}")))?;
        batches.push(crate::schema::upgrade(batch)?);
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{SpanBatchBuilder, SpanRecord};
    use crate::ids::{SpanId, TraceId};

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
        let legacy = current
            .project(&(0..fields - 1).collect::<Vec<_>>())
            .unwrap();
        let decoded = decode(1, &encode(&legacy).unwrap()).unwrap();
        assert_eq!(decoded[0].schema(), span_schema());
        assert_eq!(decoded[0].column(fields - 1).null_count(), 1);
        // Anything else is still refused.
        let other = current.project(&[0, 1]).unwrap();
        assert!(decode(2, &encode(&other).unwrap()).is_err());
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
        let record = encode(&batch).unwrap();
        assert_eq!(decode(3, &record).unwrap(), vec![batch]);

        let mut damaged = record.clone();
        damaged[0] = b'X';
        let error = decode(3, &damaged).unwrap_err().to_string();
        assert!(error.contains("wal entry 3"), "{error}");
        let truncated = &record[..record.len() / 2];
        assert!(decode(4, truncated).is_err());
    }
}
