//! Checksummed Parquet files: every byte a read returns was verified against a CRC-32C
//! written with the file, so damage is an error, never different rows.
//!
//! Parquet's own page checksums are optional and the writer we use does not write them, and a
//! flipped bit in a page, a statistic or an offset can decode into plausible wrong values. So
//! a segment file carries two checks:
//! - the **data region** `[0, tail_start)` (the magic and every row group's pages) is cut into
//!   blocks of [`BLOCK_BYTES`], whose size and CRC-32 list are stored in the footer's key-value
//!   metadata under [`BLOCK_CRC_KEY`] (files written before it: [`LEGACY_BLOCK_CRC_KEY`],
//!   [`LEGACY_BLOCK_BYTES`] blocks);
//! - the **page indexes** `[index_start, footer_start)` and the **footer** `[footer_start,
//!   len)` (which holds that list) have one CRC-32 each, kept outside the file in the segment's
//!   catalog entry ([`Integrity`]).
//!
//! [`CheckedFile`] is the `ChunkReader` scans read through: it checks the footer when opened,
//! the page indexes when a read first needs them, and reads whole blocks of the data region,
//! checking each before handing out any byte of it.
//!
//! Invariants: a file written by [`CrcSink`] + [`finish_checked`] reads back through
//! [`CheckedFile`] with no error; changing any byte of it makes every read that covers the
//! byte fail with an error naming the file and offset. Files without an [`Integrity`] (written
//! before checksums existed) are read unchecked.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::errors::ParquetError;
use parquet::file::metadata::{KeyValue, PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::reader::{ChunkReader, Length};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Bytes per checked block of the data region in the files written now. A read checks whole
/// blocks, so a point read of a few small pages reads at most a block more than each page;
/// with 32 KiB blocks a one-session read at 10M spans read and checked ~20x the bytes of its
/// pages.
pub(crate) const BLOCK_BYTES: u64 = 4 << 10;
/// Footer key-value entry holding the block size and the data region's block CRCs:
/// `<bytes>:` then 8 hex digits per block.
pub(crate) const BLOCK_CRC_KEY: &str = "sightline.block_crc32.v2";
/// The entry of files written before [`BLOCK_CRC_KEY`]: hex CRCs of [`LEGACY_BLOCK_BYTES`]
/// blocks.
pub(crate) const LEGACY_BLOCK_CRC_KEY: &str = "sightline.block_crc32.v1";
/// Block size of files with [`LEGACY_BLOCK_CRC_KEY`].
pub(crate) const LEGACY_BLOCK_BYTES: u64 = 32 << 10;
/// Block sizes a footer may declare (a power of two in this range).
const BLOCK_BYTES_RANGE: std::ops::RangeInclusive<u64> = 512..=(1 << 20);

/// What the catalog keeps to check a file's page indexes and footer (and through the footer,
/// the block list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Integrity {
    /// Where the page indexes start: the end of the data region.
    pub index_start: u64,
    /// Where the footer (its metadata, length and magic) starts.
    pub footer_start: u64,
    /// CRC-32 of `[index_start, footer_start)`.
    pub index_crc32: u32,
    /// CRC-32 of `[footer_start, file length)`.
    pub footer_crc32: u32,
}

/// A writer that checksums what passes through it: blocks of `block_bytes` until
/// [`CrcSink::mark_tail`], then one checksum for the rest.
#[derive(Debug)]
pub(crate) struct CrcSink<W: Write> {
    inner: W,
    written: u64,
    block_bytes: u64,
    blocks: Vec<u32>,
    block: crc32fast::Hasher,
    in_block: u64,
    /// Bytes after the data region (page indexes and footer, a few MB at most).
    tail: Option<(u64, Vec<u8>)>,
}

impl<W: Write> CrcSink<W> {
    pub(crate) fn new(inner: W) -> Self {
        CrcSink {
            inner,
            written: 0,
            block_bytes: BLOCK_BYTES,
            blocks: Vec::new(),
            block: crc32fast::Hasher::new(),
            in_block: 0,
            tail: None,
        }
    }

    /// Ends the data region here and returns its block list as the footer entry; every later
    /// byte belongs to the tail.
    pub(crate) fn mark_tail(&mut self) -> KeyValue {
        let mut blocks = std::mem::take(&mut self.blocks);
        if self.in_block > 0 {
            blocks.push(std::mem::take(&mut self.block).finalize());
            self.in_block = 0;
        }
        self.tail = Some((self.written, Vec::new()));
        let mut text = String::with_capacity(blocks.len() * 8 + 8);
        let key = if self.block_bytes == LEGACY_BLOCK_BYTES {
            LEGACY_BLOCK_CRC_KEY
        } else {
            text.push_str(&format!("{}:", self.block_bytes));
            BLOCK_CRC_KEY
        };
        for crc in blocks {
            text.push_str(&format!("{crc:08x}"));
        }
        KeyValue::new(key.to_owned(), text)
    }

    /// The integrity record and the inner writer, once the whole file (footer included) is
    /// written.
    pub(crate) fn finish(self) -> (Integrity, W) {
        let (index_start, tail) = self.tail.unwrap_or_else(|| (self.written, Vec::new()));
        // The last 8 bytes: the footer metadata's length (LE u32) and the magic.
        let footer_len = tail
            .len()
            .checked_sub(8)
            .and_then(|at| tail.get(at..at + 4))
            .map_or(0, |bytes| {
                u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize
            });
        let split = tail.len().saturating_sub(8 + footer_len);
        (
            Integrity {
                index_start,
                footer_start: index_start + split as u64,
                index_crc32: crc32fast::hash(&tail[..split]),
                footer_crc32: crc32fast::hash(&tail[split..]),
            },
            self.inner,
        )
    }
}

impl<W: Write> Write for CrcSink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        let mut rest = &buf[..written];
        self.written += written as u64;
        if let Some((_, tail)) = &mut self.tail {
            tail.extend_from_slice(rest);
            return Ok(written);
        }
        while !rest.is_empty() {
            let room = usize::try_from(self.block_bytes - self.in_block).unwrap_or(usize::MAX);
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.block.update(now);
            self.in_block += now.len() as u64;
            if self.in_block == self.block_bytes {
                self.blocks.push(std::mem::take(&mut self.block).finalize());
                self.in_block = 0;
            }
            rest = later;
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A segment file opened for checked reads.
#[derive(Debug, Clone)]
pub(crate) struct CheckedFile {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    file: File,
    path: PathBuf,
    len: u64,
    /// `None`: a file written before checksums, read unchecked.
    check: Option<Check>,
}

#[derive(Debug)]
struct Check {
    integrity: Integrity,
    /// The footer, checked at open.
    footer: Bytes,
    /// The page indexes, read and checked by the first read that needs them.
    index: std::sync::OnceLock<Result<Bytes, String>>,
    /// Bytes per block of the data region.
    block_bytes: u64,
    blocks: Arc<[u32]>,
}

impl CheckedFile {
    /// Opens `path`; with `integrity`, checks its tail now and its blocks as they are read,
    /// and returns the footer's metadata (without page indexes) it decoded doing so.
    pub(crate) fn open(
        path: &Path,
        integrity: Option<Integrity>,
    ) -> crate::Result<(Self, Option<ParquetMetaData>)> {
        let file = File::open(path).map_err(|source| Error::io("open segment", path, source))?;
        let len = file
            .metadata()
            .map_err(|source| Error::io("stat segment", path, source))?
            .len();
        let damaged = |detail: String| Error::Corrupt {
            location: path.display().to_string(),
            detail: format!("damaged file: {detail}"),
        };
        let Some(integrity) = integrity else {
            let inner = Inner {
                file,
                path: path.to_path_buf(),
                len,
                check: None,
            };
            return Ok((
                CheckedFile {
                    inner: Arc::new(inner),
                },
                None,
            ));
        };
        if integrity.index_start > integrity.footer_start
            || integrity.footer_start.saturating_add(8) > len
        {
            return Err(damaged(format!(
                "{len} bytes, shorter than its recorded footer at {}",
                integrity.footer_start
            )));
        }
        let footer_len = usize::try_from(len - integrity.footer_start)
            .map_err(|_| damaged("footer too large".to_owned()))?;
        let mut footer = vec![0; footer_len];
        file.read_exact_at(&mut footer, integrity.footer_start)
            .map_err(|source| Error::io("read segment footer", path, source))?;
        let crc = crc32fast::hash(&footer);
        if crc != integrity.footer_crc32 {
            return Err(damaged(format!(
                "footer checksum {crc:08x} at offset {}, expected {:08x}",
                integrity.footer_start, integrity.footer_crc32
            )));
        }
        let metadata = ParquetMetaDataReader::decode_metadata(&footer[..footer_len - 8])
            .map_err(|error| damaged(error.to_string()))?;
        let (block_bytes, blocks) = block_list(&metadata)
            .ok_or_else(|| damaged(format!("no valid {BLOCK_CRC_KEY} entry")))?;
        let expected_blocks = integrity.index_start.div_ceil(block_bytes);
        if blocks.len() as u64 != expected_blocks {
            return Err(damaged(format!(
                "{} block checksums for {expected_blocks} blocks",
                blocks.len()
            )));
        }
        let inner = Inner {
            file,
            path: path.to_path_buf(),
            len,
            check: Some(Check {
                integrity,
                footer: Bytes::from(footer),
                index: std::sync::OnceLock::new(),
                block_bytes,
                blocks: Arc::from(blocks),
            }),
        };
        Ok((
            CheckedFile {
                inner: Arc::new(inner),
            },
            Some(metadata),
        ))
    }

    /// Opens `path` again with a tail checked before (`footer_cache`): `None` when the file's
    /// length is no longer the one checked (the caller then opens and checks it anew).
    fn reopen(
        path: &Path,
        integrity: Integrity,
        tail: &crate::footer_cache::Tail,
    ) -> crate::Result<Option<Self>> {
        let file = File::open(path).map_err(|source| Error::io("open segment", path, source))?;
        let len = file
            .metadata()
            .map_err(|source| Error::io("stat segment", path, source))?
            .len();
        if len != tail.len {
            return Ok(None);
        }
        let index = std::sync::OnceLock::new();
        if let Some(bytes) = &tail.index {
            let _ = index.set(Ok(bytes.clone()));
        }
        Ok(Some(CheckedFile {
            inner: Arc::new(Inner {
                file,
                path: path.to_path_buf(),
                len,
                check: Some(Check {
                    integrity,
                    footer: tail.footer.clone(),
                    index,
                    block_bytes: tail.block_bytes,
                    blocks: Arc::clone(&tail.blocks),
                }),
            }),
        }))
    }

    fn read_checked(&self, start: u64, length: usize) -> Result<Bytes, ParquetError> {
        let inner = &self.inner;
        let end = start.saturating_add(length as u64);
        if end > inner.len {
            return Err(ParquetError::EOF(format!(
                "{}: read of {length} bytes at {start} past the end ({})",
                inner.path.display(),
                inner.len
            )));
        }
        let Some(check) = &inner.check else {
            let mut buffer = vec![0; length];
            inner
                .file
                .read_exact_at(&mut buffer, start)
                .map_err(|error| io_error(&inner.path, error))?;
            return Ok(Bytes::from(buffer));
        };
        let data_end = check.integrity.index_start;
        let footer_start = check.integrity.footer_start;
        // Most reads fall in one region: answer those without copying.
        if end <= data_end {
            return self.read_blocks(check, start, end);
        }
        if start >= footer_start {
            return Ok(slice(
                &check.footer,
                start - footer_start,
                end - footer_start,
            ));
        }
        if start >= data_end && end <= footer_start {
            return Ok(slice(self.index(check)?, start - data_end, end - data_end));
        }
        let mut out = BytesMut::with_capacity(length);
        if start < data_end {
            out.extend_from_slice(&self.read_blocks(check, start, data_end)?);
        }
        if end > data_end && start < footer_start {
            let index = self.index(check)?;
            out.extend_from_slice(&slice(
                index,
                start.max(data_end) - data_end,
                end.min(footer_start) - data_end,
            ));
        }
        if end > footer_start {
            out.extend_from_slice(&slice(
                &check.footer,
                start.max(footer_start) - footer_start,
                end - footer_start,
            ));
        }
        Ok(out.freeze())
    }

    /// `[start, end)` of the data region, from whole blocks each checked.
    fn read_blocks(&self, check: &Check, start: u64, end: u64) -> Result<Bytes, ParquetError> {
        let inner = &self.inner;
        if end <= start {
            return Ok(Bytes::new());
        }
        let data_end = check.integrity.index_start;
        let block_bytes = check.block_bytes;
        let first = start / block_bytes;
        let last = (end - 1) / block_bytes;
        let from = first * block_bytes;
        let to = ((last + 1) * block_bytes).min(data_end);
        let mut buffer = vec![0; usize::try_from(to - from).unwrap_or(usize::MAX)];
        inner
            .file
            .read_exact_at(&mut buffer, from)
            .map_err(|error| io_error(&inner.path, error))?;
        for (index, chunk) in buffer
            .chunks(usize::try_from(block_bytes).unwrap_or(usize::MAX))
            .enumerate()
        {
            let block = first + index as u64;
            let expected = usize::try_from(block)
                .ok()
                .and_then(|block| check.blocks.get(block).copied());
            let found = crc32fast::hash(chunk);
            if expected != Some(found) {
                return Err(ParquetError::General(format!(
                    "damaged file {}: checksum of bytes {}..{} is {found:08x}, expected {}",
                    inner.path.display(),
                    block * block_bytes,
                    block * block_bytes + chunk.len() as u64,
                    expected.map_or("none".to_owned(), |crc| format!("{crc:08x}")),
                )));
            }
        }
        Ok(slice(&Bytes::from(buffer), start - from, end - from))
    }

    /// The page index region, read and checked once.
    fn index<'a>(&self, check: &'a Check) -> Result<&'a Bytes, ParquetError> {
        let loaded = check.index.get_or_init(|| {
            let inner = &self.inner;
            let integrity = check.integrity;
            let len = usize::try_from(integrity.footer_start - integrity.index_start)
                .map_err(|error| error.to_string())?;
            let mut index = vec![0; len];
            inner
                .file
                .read_exact_at(&mut index, integrity.index_start)
                .map_err(|error| format!("reading {}: {error}", inner.path.display()))?;
            let crc = crc32fast::hash(&index);
            if crc != integrity.index_crc32 {
                return Err(format!(
                    "damaged file {}: page index checksum {crc:08x} at offset {}, expected {:08x}",
                    inner.path.display(),
                    integrity.index_start,
                    integrity.index_crc32
                ));
            }
            Ok(Bytes::from(index))
        });
        loaded
            .as_ref()
            .map_err(|message| ParquetError::General(message.clone()))
    }
}

/// `bytes[from..to]` without copying.
fn slice(bytes: &Bytes, from: u64, to: u64) -> Bytes {
    let from = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
    let to = usize::try_from(to)
        .unwrap_or(usize::MAX)
        .clamp(from, bytes.len());
    bytes.slice(from..to)
}

/// Opens `path` for checked reads (unchecked without `integrity`) with the reader metadata
/// `options` ask for (page indexes included, read through the check).
///
/// Fails with `Error::Io` when the file cannot be opened or read, `Error::Corrupt` (naming
/// the file) when a check fails or the metadata does not decode.
pub(crate) fn open_for_arrow(
    path: &Path,
    integrity: Option<Integrity>,
    options: ArrowReaderOptions,
    page_index: PageIndexPolicy,
) -> crate::Result<(CheckedFile, ArrowReaderMetadata)> {
    let offset_index = page_index != PageIndexPolicy::Skip;
    if let Some(integrity) = integrity
        && let Some(tail) = crate::footer_cache::get(path, integrity, offset_index)
        && let Some(file) = CheckedFile::reopen(path, integrity, &tail)?
    {
        return Ok((file, tail.metadata.clone()));
    }
    let (file, metadata) = CheckedFile::open(path, integrity)?;
    // Only the offset index: it locates pages for a row selection. The column index (page
    // min/max) is never used, and decoding it was most of the cost of the page indexes.
    let metadata = (|| -> Result<ArrowReaderMetadata, ParquetError> {
        Ok(match metadata {
            Some(metadata) => {
                let mut reader = ParquetMetaDataReader::new_with_metadata(metadata)
                    .with_offset_index_policy(page_index)
                    .with_column_index_policy(PageIndexPolicy::Skip);
                if offset_index {
                    reader.read_page_indexes(&file)?;
                }
                ArrowReaderMetadata::try_new(Arc::new(reader.finish()?), options)?
            }
            None => ArrowReaderMetadata::load(
                &file,
                options
                    .with_offset_index_policy(page_index)
                    .with_column_index_policy(PageIndexPolicy::Skip),
            )?,
        })
    })()
    .map_err(|error| Error::Corrupt {
        location: path.display().to_string(),
        detail: error.to_string(),
    })?;
    if let Some(integrity) = integrity
        && let Some(check) = &file.inner.check
    {
        crate::footer_cache::put(
            path,
            integrity,
            offset_index,
            crate::footer_cache::Tail {
                len: file.inner.len,
                footer: check.footer.clone(),
                index: check
                    .index
                    .get()
                    .and_then(|index| index.as_ref().ok())
                    .cloned(),
                block_bytes: check.block_bytes,
                blocks: Arc::clone(&check.blocks),
                metadata: metadata.clone(),
            },
        );
    }
    Ok((file, metadata))
}

fn io_error(path: &Path, error: io::Error) -> ParquetError {
    ParquetError::General(format!("reading {}: {error}", path.display()))
}

/// The block list of a checked file's footer.
/// The block size and block CRCs of a checked file's footer.
fn block_list(metadata: &ParquetMetaData) -> Option<(u64, Vec<u32>)> {
    let entries = metadata.file_metadata().key_value_metadata()?;
    let value = |key: &str| {
        entries
            .iter()
            .find(|entry| entry.key == key)
            .and_then(|entry| entry.value.as_deref())
    };
    let (block_bytes, text) = match value(BLOCK_CRC_KEY) {
        Some(text) => {
            let (size, crcs) = text.split_once(':')?;
            let size: u64 = size.parse().ok()?;
            if !size.is_power_of_two() || !BLOCK_BYTES_RANGE.contains(&size) {
                return None;
            }
            (size, crcs)
        }
        None => (LEGACY_BLOCK_BYTES, value(LEGACY_BLOCK_CRC_KEY)?),
    };
    Some((block_bytes, crcs(text)?))
}

/// CRCs written as 8 hex digits each.
fn crcs(text: &str) -> Option<Vec<u32>> {
    if !text.len().is_multiple_of(8) {
        return None;
    }
    (0..text.len())
        .step_by(8)
        .map(|at| u32::from_str_radix(text.get(at..at + 8)?, 16).ok())
        .collect()
}

impl Length for CheckedFile {
    fn len(&self) -> u64 {
        self.inner.len
    }
}

impl ChunkReader for CheckedFile {
    type T = CheckedRead;

    fn get_read(&self, start: u64) -> Result<Self::T, ParquetError> {
        Ok(CheckedRead {
            file: self.clone(),
            position: start,
            buffered: Bytes::new(),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes, ParquetError> {
        self.read_checked(start, length)
    }
}

/// A sequential reader over a [`CheckedFile`], checking block by block. Parquet reads page
/// headers through it a few bytes at a time, so it keeps the rest of the current block.
#[derive(Debug)]
pub(crate) struct CheckedRead {
    file: CheckedFile,
    position: u64,
    /// Checked bytes from `position` to the end of its block.
    buffered: Bytes,
}

impl Read for CheckedRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.buffered.is_empty() {
            let left = self.file.inner.len.saturating_sub(self.position);
            let block_bytes = self
                .file
                .inner
                .check
                .as_ref()
                .map_or(LEGACY_BLOCK_BYTES, |check| check.block_bytes);
            let in_block = block_bytes - self.position % block_bytes;
            let take = usize::try_from(left.min(in_block)).unwrap_or(usize::MAX);
            if take == 0 {
                return Ok(0);
            }
            self.buffered = self
                .file
                .read_checked(self.position, take)
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error.to_string()))?;
        }
        let take = buf.len().min(self.buffered.len());
        buf[..take].copy_from_slice(&self.buffered.split_to(take));
        self.position += take as u64;
        Ok(take)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::properties::WriterProperties;

    use super::*;

    fn sample(rows: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows)),
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|n| format!("row-{n}-{}", n * 7919 % 1013)),
                )),
            ],
        )
        .unwrap()
    }

    fn write(path: &Path, batch: &RecordBatch) -> Integrity {
        write_with_blocks(path, batch, BLOCK_BYTES)
    }

    /// A file as written with blocks of `block_bytes` ([`LEGACY_BLOCK_BYTES`]: as written
    /// before the block size was recorded).
    fn write_with_blocks(path: &Path, batch: &RecordBatch, block_bytes: u64) -> Integrity {
        let properties = WriterProperties::builder()
            .set_data_page_row_count_limit(512)
            .set_write_batch_size(512)
            .build();
        let mut sink = CrcSink::new(File::create(path).unwrap());
        sink.block_bytes = block_bytes;
        let mut writer = ArrowWriter::try_new(sink, batch.schema(), Some(properties)).unwrap();
        writer.write(batch).unwrap();
        writer.flush().unwrap();
        writer.sync().unwrap();
        let entry = writer.inner_mut().mark_tail();
        writer.append_key_value_metadata(entry);
        let sink = writer.into_inner().unwrap();
        sink.finish().0
    }

    fn read(path: &Path, integrity: Option<Integrity>) -> Result<Vec<RecordBatch>, String> {
        let (file, metadata) = open_for_arrow(
            path,
            integrity,
            ArrowReaderOptions::new(),
            PageIndexPolicy::Optional,
        )
        .map_err(|e| e.to_string())?;
        ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata)
            .build()
            .map_err(|e| e.to_string())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_checked_file_reads_back_and_any_flipped_bit_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.parquet");
        let batch = sample(50_000);
        let integrity = write(&path, &batch);
        let clean = std::fs::read(&path).unwrap();
        assert!(clean.len() as u64 > 4 * BLOCK_BYTES, "{}", clean.len());
        let rows = read(&path, Some(integrity)).unwrap();
        assert_eq!(
            arrow::compute::concat_batches(&batch.schema(), &rows).unwrap(),
            batch
        );
        // Flip one bit at spread positions over the whole file: each read fails, naming it.
        // (Each damaged copy is a file never opened before, so its tail is checked anew.)
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for copy in 0..100 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = (state % clean.len() as u64) as usize;
            let mut damaged = clean.clone();
            damaged[at] ^= 1 << (state >> 61);
            let name = format!("f{copy}.parquet");
            std::fs::write(dir.path().join(&name), &damaged).unwrap();
            match read(&dir.path().join(&name), Some(integrity)) {
                Err(error) => assert!(error.contains(&name), "{error}"),
                Ok(_) => panic!("bit flip at {at} of {} read as data", clean.len()),
            }
        }
        // Truncated: an error too.
        std::fs::write(
            dir.path().join("short.parquet"),
            &clean[..clean.len() - 100],
        )
        .unwrap();
        assert!(read(&dir.path().join("short.parquet"), Some(integrity)).is_err());
        // Without an integrity record (an old file), it reads unchecked.
        std::fs::write(&path, &clean).unwrap();
        assert_eq!(
            read(&path, None)
                .unwrap()
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>(),
            50_000
        );
    }

    #[test]
    fn files_with_the_earlier_32_kib_blocks_read_back_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let batch = sample(50_000);
        let path = dir.path().join("v1.parquet");
        let integrity = write_with_blocks(&path, &batch, LEGACY_BLOCK_BYTES);
        let (_, metadata) = CheckedFile::open(&path, Some(integrity)).unwrap();
        let entries = metadata
            .unwrap()
            .file_metadata()
            .key_value_metadata()
            .cloned();
        let keys: Vec<String> = entries.iter().flatten().map(|e| e.key.clone()).collect();
        assert!(keys.contains(&LEGACY_BLOCK_CRC_KEY.to_owned()), "{keys:?}");
        let rows = read(&path, Some(integrity)).unwrap();
        assert_eq!(
            arrow::compute::concat_batches(&batch.schema(), &rows).unwrap(),
            batch
        );
        // A flipped bit in its second 32 KiB block (in no 4 KiB block the first read
        // covered) is an error.
        let mut damaged = std::fs::read(&path).unwrap();
        damaged[LEGACY_BLOCK_BYTES as usize + 5000] ^= 8;
        let copy = dir.path().join("v1-damaged.parquet");
        std::fs::write(&copy, &damaged).unwrap();
        let error = read(&copy, Some(integrity)).unwrap_err();
        assert!(error.contains("v1-damaged.parquet"), "{error}");
        // Files written now record their 4 KiB blocks.
        let now = dir.path().join("v2.parquet");
        let integrity = write(&now, &batch);
        let (file, metadata) = CheckedFile::open(&now, Some(integrity)).unwrap();
        let entries = metadata
            .unwrap()
            .file_metadata()
            .key_value_metadata()
            .cloned();
        let value = entries
            .iter()
            .flatten()
            .find(|e| e.key == BLOCK_CRC_KEY)
            .and_then(|e| e.value.clone())
            .unwrap();
        assert!(value.starts_with("4096:"), "{}", &value[..20]);
        assert_eq!(file.inner.check.as_ref().unwrap().block_bytes, 4096);
    }

    #[test]
    fn a_tail_kept_from_an_earlier_open_still_checks_every_data_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kept.parquet");
        let batch = sample(50_000);
        let integrity = write(&path, &batch);
        let clean = std::fs::read(&path).unwrap();
        let all = |rows: Vec<RecordBatch>| {
            arrow::compute::concat_batches(&batch.schema(), &rows).unwrap()
        };
        // The first open checks and keeps the tail.
        assert_eq!(all(read(&path, Some(integrity)).unwrap()), batch);
        // Damage in the data region is still an error through the kept tail.
        let mut damaged = clean.clone();
        damaged[BLOCK_BYTES as usize + 7] ^= 2;
        std::fs::write(&path, &damaged).unwrap();
        let error = read(&path, Some(integrity)).unwrap_err();
        assert!(error.contains("kept.parquet"), "{error}");
        // Damage in the tail after it was kept: the kept, checked copy is read, so the rows
        // are exactly the written ones (never different rows).
        let mut damaged = clean.clone();
        let last = damaged.len() - 20;
        damaged[last] ^= 2;
        damaged[integrity.index_start as usize + 3] ^= 2;
        std::fs::write(&path, &damaged).unwrap();
        assert_eq!(all(read(&path, Some(integrity)).unwrap()), batch);
        // A file of another length at the path is opened and checked anew.
        std::fs::write(&path, &clean[..clean.len() - 100]).unwrap();
        assert!(read(&path, Some(integrity)).is_err());
    }

    #[test]
    fn sequential_reads_check_each_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.parquet");
        let integrity = write(&path, &sample(20_000));
        let (file, _) = CheckedFile::open(&path, Some(integrity)).unwrap();
        let mut all = Vec::new();
        file.get_read(0).unwrap().read_to_end(&mut all).unwrap();
        assert_eq!(all, std::fs::read(&path).unwrap());
        let mut damaged = all.clone();
        damaged[100] ^= 4;
        std::fs::write(&path, &damaged).unwrap();
        let (file, _) = CheckedFile::open(&path, Some(integrity)).unwrap();
        let mut out = Vec::new();
        assert!(file.get_read(0).unwrap().read_to_end(&mut out).is_err());
    }
}
