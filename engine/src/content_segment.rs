//! Content segment files: the distinct blobs of one seal (or rewrite) and one retention tier,
//! compressed together in blocks, with a footer that lists every blob and where it is.
//!
//! Layout of `<data>/content/<id:020>.blobs`:
//! - the magic `SLCSEG01`;
//! - blocks, each `[crc32 u32][raw length u32][payload length u32][zstd payload]`, the CRC over
//!   the raw length and the payload; a block holds whole blobs, back to back, about
//!   [`BLOCK_BYTES`] of text (a longer blob is a block of its own);
//! - the footer: a zstd frame of `[count u32]` then, per blob, `[hash 32][block offset u64]
//!   [block length u32][offset in block u32][length u32]`;
//! - the trailer: `[footer offset u64][footer length u32][footer crc32 u32]` and `SLCEND01`.
//!
//! Invariants: a file is written whole, fsync'd (and its directory) before a catalog entry
//! names it, and never changed after; a rewrite is a new file. Every read checks the block's
//! CRC and the footer's, so damage is an error naming the file, never wrong text.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::content::{ContentHash, Reader};
use crate::error::{Error, Result};

/// Directory of content segment files inside the data directory.
pub(crate) const CONTENT_DIR: &str = "content";
/// Text per block before it is compressed: large enough for zstd to find the repeats between
/// the messages of a few conversations (512 KiB made contentbench's content segments 6% smaller
/// than 128 KiB), small enough that reading one blob stays cheap (one block decompressed,
/// under a millisecond).
pub(crate) const BLOCK_BYTES: usize = 512 << 10;
const MAGIC: &[u8; 8] = b"SLCSEG01";
const END_MAGIC: &[u8; 8] = b"SLCEND01";
const TRAILER_BYTES: u64 = 8 + 4 + 4 + 8;
const BLOCK_HEADER_BYTES: usize = 12;
/// Bytes of one encoded [`BlobLocation`] (without the segment id) in the footer.
const FOOTER_ENTRY_BYTES: usize = 32 + 8 + 4 + 4 + 4;
/// Format version of catalog entries and index values.
const META_VERSION: u8 = 1;

/// Where a blob is: its segment, its block, and its bytes inside the decompressed block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct BlobLocation {
    pub(crate) segment: u64,
    pub(crate) block_offset: u64,
    pub(crate) block_len: u32,
    pub(crate) offset: u32,
    pub(crate) len: u32,
}

impl BlobLocation {
    /// The value of a `content_index` entry: `[segment u32][block offset u64][block length
    /// u32][offset in block u32][length u32]`. Content segment ids above `u32::MAX` are refused.
    pub(crate) fn encode(&self) -> Result<[u8; 24]> {
        let segment = u32::try_from(self.segment).map_err(|_| {
            crate::content::corrupt(
                "content_index",
                format!("content segment id {} beyond u32", self.segment),
            )
        })?;
        let mut out = [0u8; 24];
        out[0..4].copy_from_slice(&segment.to_le_bytes());
        out[4..12].copy_from_slice(&self.block_offset.to_le_bytes());
        out[12..16].copy_from_slice(&self.block_len.to_le_bytes());
        out[16..20].copy_from_slice(&self.offset.to_le_bytes());
        out[20..24].copy_from_slice(&self.len.to_le_bytes());
        Ok(out)
    }

    pub(crate) fn decode(bytes: &[u8; 24]) -> BlobLocation {
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&bytes[4..12]);
        BlobLocation {
            segment: u64::from(u32_at(0)),
            block_offset: u64::from_le_bytes(offset),
            block_len: u32_at(12),
            offset: u32_at(16),
            len: u32_at(20),
        }
    }
}

/// The `content_index` key of a blob: the first 16 bytes of its hash.
pub(crate) fn index_key(hash: &ContentHash) -> [u8; 16] {
    let mut key = [0u8; 16];
    key.copy_from_slice(&hash[..16]);
    key
}

/// A content segment's catalog entry (`content_segments`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContentSegmentMeta {
    pub(crate) id: u64,
    /// Retention tier whose content keep applies (`""`: the default content keep).
    pub(crate) tier: String,
    /// Earliest store time (ns) of a reference to one of its blobs.
    pub(crate) created: u64,
    /// Latest store time (ns) of a reference to one of its blobs: the segment expires when
    /// this is older than its tier's content keep.
    pub(crate) last_seen: u64,
    pub(crate) blobs: u64,
    pub(crate) text_bytes: u64,
    pub(crate) file_bytes: u64,
}

impl ContentSegmentMeta {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![META_VERSION];
        for value in [
            self.created,
            self.last_seen,
            self.blobs,
            self.text_bytes,
            self.file_bytes,
        ] {
            out.extend_from_slice(&value.to_le_bytes());
        }
        out.extend_from_slice(&(self.tier.len() as u16).to_le_bytes());
        out.extend_from_slice(self.tier.as_bytes());
        out
    }

    pub(crate) fn decode(id: u64, bytes: &[u8]) -> Result<ContentSegmentMeta> {
        let location = format!("content_segments {id}");
        let mut reader = Reader {
            bytes,
            location: &location,
        };
        let version = reader.u8()?;
        if version != META_VERSION {
            return Err(crate::content::corrupt(
                &location,
                format!("expected version {META_VERSION}, found {version}"),
            ));
        }
        let created = reader.u64()?;
        let last_seen = reader.u64()?;
        let blobs = reader.u64()?;
        let text_bytes = reader.u64()?;
        let file_bytes = reader.u64()?;
        let tier_len = usize::from(reader.u16()?);
        let tier = reader.text(tier_len)?;
        Ok(ContentSegmentMeta {
            id,
            tier,
            created,
            last_seen,
            blobs,
            text_bytes,
            file_bytes,
        })
    }
}

/// The file of content segment `id`.
pub(crate) fn path_of(dir: &Path, id: u64) -> PathBuf {
    dir.join(CONTENT_DIR).join(format!("{id:020}.blobs"))
}

fn damaged(path: &Path, detail: impl Into<String>) -> Error {
    Error::Corrupt {
        location: path.display().to_string(),
        detail: detail.into(),
    }
}

/// Writes content segment `id` from `blobs` (in the order given) and fsyncs it and its
/// directory. Returns the file's size and each blob's location.
pub(crate) fn write<'a>(
    dir: &Path,
    id: u64,
    blobs: impl IntoIterator<Item = (&'a ContentHash, &'a str)>,
    level: i32,
) -> Result<(u64, Vec<(ContentHash, BlobLocation)>)> {
    let content_dir = dir.join(CONTENT_DIR);
    fs::create_dir_all(&content_dir)
        .map_err(|source| Error::io("create directory", &content_dir, source))?;
    let path = path_of(dir, id);
    let io = |operation: &'static str| {
        let path = path.clone();
        move |source| Error::io(operation, path, source)
    };
    let mut file = std::io::BufWriter::with_capacity(
        1 << 20,
        File::create(&path).map_err(io("create content segment"))?,
    );
    file.write_all(MAGIC).map_err(io("write content segment"))?;
    let mut written = MAGIC.len() as u64;
    let mut compressor = zstd::bulk::Compressor::new(level).map_err(io("start zstd"))?;
    let mut locations: Vec<(ContentHash, BlobLocation)> = Vec::new();
    let mut block = Vec::with_capacity(BLOCK_BYTES + (BLOCK_BYTES >> 2));
    // Blobs of the block being filled: (hash, offset, length).
    let mut pending: Vec<(ContentHash, u32, u32)> = Vec::new();
    let mut flush = |block: &mut Vec<u8>,
                     pending: &mut Vec<(ContentHash, u32, u32)>,
                     file: &mut std::io::BufWriter<File>,
                     written: &mut u64|
     -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let payload = compressor
            .compress(block)
            .map_err(io("compress content block"))?;
        let raw_len =
            u32::try_from(block.len()).map_err(|_| damaged(&path, "a block longer than 4 GiB"))?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&raw_len.to_le_bytes());
        crc.update(&payload);
        let mut header = [0u8; BLOCK_HEADER_BYTES];
        header[..4].copy_from_slice(&crc.finalize().to_le_bytes());
        header[4..8].copy_from_slice(&raw_len.to_le_bytes());
        header[8..].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        file.write_all(&header)
            .and_then(|()| file.write_all(&payload))
            .map_err(io("write content segment"))?;
        let block_len = (BLOCK_HEADER_BYTES + payload.len()) as u32;
        for (hash, offset, len) in pending.drain(..) {
            locations.push((
                hash,
                BlobLocation {
                    segment: id,
                    block_offset: *written,
                    block_len,
                    offset,
                    len,
                },
            ));
        }
        *written += u64::from(block_len);
        block.clear();
        Ok(())
    };
    for (hash, text) in blobs {
        let len = u32::try_from(text.len())
            .map_err(|_| damaged(&path, "a content blob longer than 4 GiB"))?;
        if !block.is_empty() && block.len() + text.len() > BLOCK_BYTES {
            flush(&mut block, &mut pending, &mut file, &mut written)?;
        }
        pending.push((*hash, block.len() as u32, len));
        block.extend_from_slice(text.as_bytes());
    }
    flush(&mut block, &mut pending, &mut file, &mut written)?;
    let mut footer = Vec::with_capacity(4 + locations.len() * FOOTER_ENTRY_BYTES);
    footer.extend_from_slice(&(locations.len() as u32).to_le_bytes());
    for (hash, location) in &locations {
        footer.extend_from_slice(hash);
        footer.extend_from_slice(&location.block_offset.to_le_bytes());
        footer.extend_from_slice(&location.block_len.to_le_bytes());
        footer.extend_from_slice(&location.offset.to_le_bytes());
        footer.extend_from_slice(&location.len.to_le_bytes());
    }
    let footer = zstd::bulk::compress(&footer, level).map_err(io("compress content footer"))?;
    let footer_offset = written;
    file.write_all(&footer)
        .and_then(|()| file.write_all(&footer_offset.to_le_bytes()))
        .and_then(|()| file.write_all(&(footer.len() as u32).to_le_bytes()))
        .and_then(|()| file.write_all(&crc32fast::hash(&footer).to_le_bytes()))
        .and_then(|()| file.write_all(END_MAGIC))
        .map_err(io("write content segment"))?;
    let file = file
        .into_inner()
        .map_err(|error| Error::io("write content segment", &path, error.into_error()))?;
    file.sync_all().map_err(io("fsync content segment"))?;
    crate::segment::fsync_dir(&content_dir)?;
    Ok((
        footer_offset + footer.len() as u64 + TRAILER_BYTES,
        locations,
    ))
}

/// Every blob of the content segment file `path` and its location (the footer).
pub(crate) fn read_footer(path: &Path, id: u64) -> Result<Vec<(ContentHash, BlobLocation)>> {
    let io = |source| Error::io("read content segment", path, source);
    let file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size < MAGIC.len() as u64 + TRAILER_BYTES {
        return Err(damaged(path, format!("{size} bytes is too short")));
    }
    let mut trailer = [0u8; TRAILER_BYTES as usize];
    file.read_exact_at(&mut trailer, size - TRAILER_BYTES)
        .map_err(io)?;
    if &trailer[16..] != END_MAGIC {
        return Err(damaged(path, "no end marker (a truncated file?)"));
    }
    let footer_offset = u64::from_le_bytes(trailer[..8].try_into().unwrap_or_default());
    let footer_len = u32::from_le_bytes(trailer[8..12].try_into().unwrap_or_default());
    let footer_crc = u32::from_le_bytes(trailer[12..16].try_into().unwrap_or_default());
    if footer_offset.checked_add(u64::from(footer_len)) != Some(size - TRAILER_BYTES) {
        return Err(damaged(
            path,
            "footer position does not match the file size",
        ));
    }
    let mut footer = vec![0u8; footer_len as usize];
    file.read_exact_at(&mut footer, footer_offset).map_err(io)?;
    if crc32fast::hash(&footer) != footer_crc {
        return Err(damaged(path, "footer checksum mismatch"));
    }
    let raw = zstd::stream::decode_all(footer.as_slice())
        .map_err(|error| damaged(path, format!("footer: {error}")))?;
    let location = path.display().to_string();
    let mut reader = Reader {
        bytes: &raw,
        location: &location,
    };
    let count = reader.u32()? as usize;
    if reader.bytes.len() != count * FOOTER_ENTRY_BYTES {
        return Err(damaged(path, "footer length does not match its blob count"));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let hash = reader.hash()?;
        out.push((
            hash,
            BlobLocation {
                segment: id,
                block_offset: reader.u64()?,
                block_len: reader.u32()?,
                offset: reader.u32()?,
                len: reader.u32()?,
            },
        ));
    }
    Ok(out)
}

/// Reads blobs by location, keeping open files and recently decompressed blocks.
pub(crate) struct BlobReader {
    dir: PathBuf,
    files: HashMap<u64, Option<File>>,
    blocks: HashMap<(u64, u64), Arc<Vec<u8>>>,
    cached_bytes: usize,
}

/// Decompressed block bytes a [`BlobReader`] keeps before it starts over.
const READER_CACHE_BYTES: usize = 32 << 20;

impl BlobReader {
    pub(crate) fn new(dir: &Path) -> BlobReader {
        BlobReader {
            dir: dir.to_path_buf(),
            files: HashMap::new(),
            blocks: HashMap::new(),
            cached_bytes: 0,
        }
    }

    /// The blob at `location`; `None` when its segment file is gone (removed by expiry or a
    /// rewrite after the caller looked the location up).
    pub(crate) fn read(&mut self, location: &BlobLocation) -> Result<Option<String>> {
        let path = path_of(&self.dir, location.segment);
        let key = (location.segment, location.block_offset);
        let block = match self.blocks.get(&key) {
            Some(block) => Arc::clone(block),
            None => {
                let file = match self.files.entry(location.segment) {
                    std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(match File::open(&path) {
                            Ok(file) => Some(file),
                            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
                            Err(source) => {
                                return Err(Error::io("open content segment", &path, source));
                            }
                        })
                    }
                };
                let Some(file) = file.as_ref() else {
                    return Ok(None);
                };
                let block = Arc::new(read_block(file, &path, location)?);
                if self.cached_bytes + block.len() > READER_CACHE_BYTES {
                    self.blocks.clear();
                    self.cached_bytes = 0;
                }
                self.cached_bytes += block.len();
                self.blocks.insert(key, Arc::clone(&block));
                block
            }
        };
        let start = location.offset as usize;
        let bytes = block
            .get(start..start + location.len as usize)
            .ok_or_else(|| damaged(&path, "a blob reaches past the end of its block"))?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| damaged(&path, "a blob is not UTF-8"))
    }
}

fn read_block(file: &File, path: &Path, location: &BlobLocation) -> Result<Vec<u8>> {
    let len = location.block_len as usize;
    if len < BLOCK_HEADER_BYTES {
        return Err(damaged(path, "a block shorter than its header"));
    }
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, location.block_offset)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::UnexpectedEof => damaged(
                path,
                format!("block at {} reaches past the end", location.block_offset),
            ),
            _ => Error::io("read content segment", path, source),
        })?;
    let crc = u32::from_le_bytes(bytes[..4].try_into().unwrap_or_default());
    let raw_len = u32::from_le_bytes(bytes[4..8].try_into().unwrap_or_default());
    let payload_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default()) as usize;
    let payload = &bytes[BLOCK_HEADER_BYTES..];
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&raw_len.to_le_bytes());
    hasher.update(payload);
    if payload_len != payload.len() || hasher.finalize() != crc {
        return Err(damaged(
            path,
            format!("block at {} checksum mismatch", location.block_offset),
        ));
    }
    let raw = zstd::bulk::decompress(payload, raw_len as usize).map_err(|error| {
        damaged(
            path,
            format!("block at {}: zstd: {error}", location.block_offset),
        )
    })?;
    if raw.len() != raw_len as usize {
        return Err(damaged(
            path,
            format!("block at {} has the wrong length", location.block_offset),
        ));
    }
    Ok(raw)
}

/// Content segment files in `dir` that `keep` does not name (half-written files from a crash,
/// or files whose removal was interrupted) are deleted. Returns how many.
pub(crate) fn remove_orphans(dir: &Path, keep: &std::collections::HashSet<u64>) -> Result<usize> {
    let content_dir = dir.join(CONTENT_DIR);
    let entries = match fs::read_dir(&content_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(Error::io("list", &content_dir, source)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|source| Error::io("list", &content_dir, source))?;
        let path = entry.path();
        let id = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".blobs"))
            .and_then(|stem| stem.parse::<u64>().ok());
        if id.is_some_and(|id| keep.contains(&id)) {
            continue;
        }
        fs::remove_file(&path).map_err(|source| Error::io("remove orphan", &path, source))?;
        tracing::warn!(path = %path.display(), "removed orphan content segment file");
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_read_back_by_location_and_from_the_footer() {
        let dir = tempfile::tempdir().unwrap();
        let texts: Vec<(ContentHash, String)> = (0..8000u32)
            .map(|n| {
                let mut hash = [0u8; 32];
                hash[..4].copy_from_slice(&n.to_le_bytes());
                (
                    hash,
                    format!(
                        "{{\"role\":\"user\",\"content\":\"message {n} {}\"}}",
                        "x".repeat((n % 300) as usize)
                    ),
                )
            })
            .collect();
        let (bytes, locations) = write(
            dir.path(),
            7,
            texts.iter().map(|(hash, text)| (hash, text.as_str())),
            3,
        )
        .unwrap();
        assert_eq!(bytes, fs::metadata(path_of(dir.path(), 7)).unwrap().len());
        let raw: usize = texts.iter().map(|(_, text)| text.len()).sum();
        assert!(bytes < raw as u64 / 4, "{bytes} of {raw}");
        assert!(
            locations
                .iter()
                .map(|(_, l)| l.block_offset)
                .collect::<std::collections::HashSet<_>>()
                .len()
                > 1
        );
        let mut reader = BlobReader::new(dir.path());
        for ((hash, text), (located, location)) in texts.iter().zip(&locations) {
            assert_eq!(hash, located);
            assert_eq!(BlobLocation::decode(&location.encode().unwrap()), *location);
            assert_eq!(
                reader.read(location).unwrap().as_deref(),
                Some(text.as_str())
            );
        }
        assert_eq!(read_footer(&path_of(dir.path(), 7), 7).unwrap(), locations);
        let meta = ContentSegmentMeta {
            id: 7,
            tier: "decision".into(),
            created: 1,
            last_seen: 2,
            blobs: 3,
            text_bytes: 4,
            file_bytes: 5,
        };
        assert_eq!(ContentSegmentMeta::decode(7, &meta.encode()).unwrap(), meta);
        // A missing file reads as gone, not as an error.
        fs::remove_file(path_of(dir.path(), 7)).unwrap();
        let mut fresh = BlobReader::new(dir.path());
        assert_eq!(fresh.read(&locations[0].1).unwrap(), None);
    }

    #[test]
    fn a_flipped_bit_or_a_cut_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let hash = [9u8; 32];
        let text = "some message text that is long enough to compress ".repeat(20);
        let (_, locations) = write(dir.path(), 1, [(&hash, text.as_str())], 3).unwrap();
        let path = path_of(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        bytes[MAGIC.len() + BLOCK_HEADER_BYTES + 3] ^= 0x10;
        fs::write(&path, &bytes).unwrap();
        let error = BlobReader::new(dir.path())
            .read(&locations[0].1)
            .unwrap_err();
        assert!(error.to_string().contains("checksum mismatch"), "{error}");
        assert!(error.to_string().contains(".blobs"), "{error}");
        fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let error = read_footer(&path, 1).unwrap_err();
        assert!(error.to_string().contains("end marker"), "{error}");
    }
}
