//! Decoded tails (footer, offset index) of checked segment files, kept between opens.
//!
//! A point read (one trace, one session) opens each segment it touches for a few rows, and
//! reading, checking and decoding the segment's footer and offset index cost more than those
//! rows. A segment file never changes once written (a rewrite is a new file with a new id), so
//! the checked, decoded tail of a file is kept here and the next open of the same file reuses it.
//!
//! Invariants:
//! - only tails that passed their checksums are kept, and only of files with an
//!   [`Integrity`]: an entry is exactly what a fresh open would check and decode;
//! - an entry is used only for the same path, the same [`Integrity`] (the CRCs of that tail),
//!   the same length and the same page-index choice, so a different file at a reused path
//!   misses;
//! - the data region is still read through block checks: damage there is an error as before;
//! - the cache holds at most [`BUDGET`] bytes; the least recently used entries leave first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use parquet::arrow::arrow_reader::ArrowReaderMetadata;

use crate::checked_file::Integrity;

/// Bytes of decoded tails kept at most (a 116k-row segment's is a few hundred KB).
pub(crate) const BUDGET: usize = 64 << 20;

/// One file's checked tail, decoded.
#[derive(Debug, Clone)]
pub(crate) struct Tail {
    /// File length when checked.
    pub(crate) len: u64,
    /// The footer bytes, checked.
    pub(crate) footer: Bytes,
    /// The page index region, checked, when it was read.
    pub(crate) index: Option<Bytes>,
    /// Bytes per block of the data region.
    pub(crate) block_bytes: u64,
    /// CRC-32 of each block of the data region (from the footer).
    pub(crate) blocks: Arc<[u32]>,
    /// The decoded metadata (with the offset index when it was asked for).
    pub(crate) metadata: ArrowReaderMetadata,
}

impl Tail {
    fn bytes(&self) -> usize {
        self.footer.len()
            + self.index.as_ref().map_or(0, Bytes::len)
            + self.blocks.len() * 4
            + self.metadata.metadata().memory_size()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    path: PathBuf,
    integrity: Integrity,
    offset_index: bool,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<Key, (Arc<Tail>, u64)>,
    bytes: usize,
    clock: u64,
}

impl Key {
    fn new(path: &Path, integrity: Integrity, offset_index: bool) -> Key {
        Key {
            path: path.to_path_buf(),
            integrity,
            offset_index,
        }
    }
}

impl Entries {
    /// The next use's time.
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

/// The process's entries, locked (a poisoned lock is taken over: they are only a cache).
fn entries() -> std::sync::MutexGuard<'static, Entries> {
    static ENTRIES: OnceLock<Mutex<Entries>> = OnceLock::new();
    ENTRIES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
}

/// The kept tail of `path` checked against `integrity`, if any.
pub(crate) fn get(path: &Path, integrity: Integrity, offset_index: bool) -> Option<Arc<Tail>> {
    let key = Key::new(path, integrity, offset_index);
    let mut entries = entries();
    let now = entries.tick();
    let (tail, used) = entries.map.get_mut(&key)?;
    *used = now;
    Some(Arc::clone(tail))
}

/// Keeps `tail` for later opens of `path`, evicting the least recently used entries past
/// [`BUDGET`]. A tail larger than the budget is not kept.
pub(crate) fn put(path: &Path, integrity: Integrity, offset_index: bool, tail: Tail) {
    let size = tail.bytes();
    if size > BUDGET {
        return;
    }
    let key = Key::new(path, integrity, offset_index);
    let mut entries = entries();
    let now = entries.tick();
    if let Some((old, _)) = entries.map.insert(key, (Arc::new(tail), now)) {
        entries.bytes -= old.bytes();
    }
    entries.bytes += size;
    while entries.bytes > BUDGET {
        let Some(oldest) = entries
            .map
            .iter()
            .min_by_key(|(_, (_, used))| *used)
            .map(|(key, _)| key.clone())
        else {
            break;
        };
        if let Some((gone, _)) = entries.map.remove(&oldest) {
            entries.bytes -= gone.bytes();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_the_budget_and_evicts_the_least_recently_used() {
        // Real decoded metadata: a small Parquet file written in memory.
        let batch = arrow::array::RecordBatch::try_from_iter([(
            "x",
            Arc::new(arrow::array::Int64Array::from(vec![1, 2, 3])) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let mut buffer = Vec::new();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(&mut buffer, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let metadata = ArrowReaderMetadata::load(
            &Bytes::from(buffer),
            parquet::arrow::arrow_reader::ArrowReaderOptions::new(),
        )
        .unwrap();
        let tail = |footer: usize| Tail {
            len: 10,
            footer: Bytes::from(vec![0u8; footer]),
            index: None,
            block_bytes: 4096,
            blocks: Arc::from(vec![0u32; 1]),
            metadata: metadata.clone(),
        };
        let integrity = |crc: u32| Integrity {
            index_start: 1,
            footer_start: 2,
            index_crc32: crc,
            footer_crc32: crc,
        };
        let dir = Path::new("/footer-cache-test");
        // Other tests' entries are small: two of these fit, a third does not.
        let big = BUDGET / 100 * 45;
        put(&dir.join("a"), integrity(1), true, tail(big));
        put(&dir.join("b"), integrity(2), true, tail(big));
        // `a` is used, so `b` is the least recently used when `c` needs room.
        assert!(get(&dir.join("a"), integrity(1), true).is_some());
        put(&dir.join("c"), integrity(3), true, tail(big));
        assert!(get(&dir.join("a"), integrity(1), true).is_some());
        assert!(get(&dir.join("b"), integrity(2), true).is_none());
        assert!(get(&dir.join("c"), integrity(3), true).is_some());
        // Another integrity, or another page-index choice, at the same path is another file.
        assert!(get(&dir.join("a"), integrity(9), true).is_none());
        assert!(get(&dir.join("a"), integrity(1), false).is_none());
        // Larger than the budget: not kept.
        put(&dir.join("d"), integrity(4), true, tail(BUDGET + 1));
        assert!(get(&dir.join("d"), integrity(4), true).is_none());
        assert!(entries().bytes <= BUDGET);
    }
}
