//! WAL files: the write-ahead log as append-only files under `<data>/wal/`, so that its space
//! is given back when a seal makes it unnecessary (a redb table keeps its pages).
//!
//! Each file is named by the sequence number of its first record (`<first:020>.log`) and holds
//! frames `[payload length u32][crc32 of sequence and payload u32][sequence u64][payload]`,
//! little-endian, sequence numbers increasing by one. The payload is a WAL record (`wal.rs`).
//!
//! Invariants:
//! - A frame is acknowledged only after `fdatasync` of its file returned.
//! - A failed append is cut off again (the file is truncated to its length before it), so a
//!   file never holds a frame after a damaged one; a crash can leave a torn frame only at the
//!   end of the newest file, which recovery cuts off with a WARN. A bad frame anywhere else
//!   (in an older file, or with bytes after it) is damage, and recovery refuses to open the
//!   store rather than drop the records after it.
//! - If even the cut fails, the file refuses appends until [`WalLog::repair`] has cut it.
//! - A seal starts a new file at the first sequence it does not cover, then deletes the older
//!   files once its catalog transaction is durable.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::error::{Error, Result};

/// Directory of the WAL files, under the data directory.
pub(crate) const WAL_DIR: &str = "wal";
const SUFFIX: &str = ".log";
const HEADER: usize = 16;
/// Largest payload a frame may claim (a longer claim is damage, not an allocation).
const MAX_PAYLOAD: usize = 1 << 30;

/// The WAL file being appended to.
#[derive(Debug)]
pub(crate) struct WalLog {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    /// Sequence number of the file's first record.
    first: u64,
    /// Length of the file up to its last whole frame.
    len: u64,
    /// Set when a failed append could not be cut off: no frame may follow until
    /// [`WalLog::repair`] cuts it.
    damaged: Option<String>,
    /// Faults to inject (tests).
    faults: Option<std::sync::Arc<crate::FaultInjector>>,
}

/// What [`read_all`] found.
#[derive(Debug, Default)]
pub(crate) struct WalContents {
    /// Every whole frame, in sequence order: (sequence, payload).
    pub(crate) records: Vec<(u64, Vec<u8>)>,
    /// Bytes cut off the end of the newest file (a write torn by a crash).
    pub(crate) torn_bytes: u64,
}

fn file_name(first: u64) -> String {
    format!("{first:020}{SUFFIX}")
}

/// The WAL files in `dir`, by first sequence.
fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(source) => return Err(Error::io("list wal files", dir, source)),
    };
    for entry in entries {
        let entry = entry.map_err(|source| Error::io("list wal files", dir, source))?;
        let name = entry.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|name| name.strip_suffix(SUFFIX))
            .and_then(|stem| stem.parse::<u64>().ok())
        else {
            continue;
        };
        files.push((first, entry.path()));
    }
    files.sort();
    Ok(files)
}

fn corrupt(path: &Path, detail: String) -> Error {
    Error::Corrupt {
        location: path.display().to_string(),
        detail,
    }
}

/// Reads every record of the WAL files in `dir`. A torn frame at the end of the newest file is
/// cut off (the file is truncated); any other bad frame is an error.
pub(crate) fn read_all(dir: &Path) -> Result<WalContents> {
    let files = list(dir)?;
    let mut contents = WalContents::default();
    let mut expected: Option<u64> = None;
    for (index, (first, path)) in files.iter().enumerate() {
        let newest = index + 1 == files.len();
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut file| file.read_to_end(&mut bytes))
            .map_err(|source| Error::io("read wal file", path, source))?;
        if let Some(expected) = expected
            && *first != expected
        {
            return Err(corrupt(
                path,
                format!("starts at record {first}, expected {expected} after the previous file"),
            ));
        }
        let mut offset = 0usize;
        let mut sequence = *first;
        while offset < bytes.len() {
            match frame_at(&bytes[offset..], sequence) {
                Ok((payload, len)) => {
                    contents.records.push((sequence, payload.to_vec()));
                    offset += len;
                    sequence += 1;
                }
                Err(detail) if newest && reaches_end(&bytes[offset..]) => {
                    let torn = (bytes.len() - offset) as u64;
                    warn!(
                        file = %path.display(),
                        offset,
                        bytes = torn,
                        problem = %detail,
                        "cutting a torn record off the end of the wal (a write that was never acknowledged)"
                    );
                    OpenOptions::new()
                        .write(true)
                        .open(path)
                        .and_then(|file| {
                            file.set_len(offset as u64)?;
                            file.sync_all()
                        })
                        .map_err(|source| Error::io("truncate wal file", path, source))?;
                    contents.torn_bytes += torn;
                    break;
                }
                Err(detail) => {
                    return Err(corrupt(
                        path,
                        format!("record {sequence} at byte {offset}: {detail}"),
                    ));
                }
            }
        }
        expected = Some(sequence);
    }
    Ok(contents)
}

/// True when the frame at the start of `bytes` is the file's last (its header is cut short, or
/// the payload it claims reaches the end of the file): a write torn by a crash looks like this.
/// A bad frame with more bytes after it is damage.
fn reaches_end(bytes: &[u8]) -> bool {
    // A file extended but not yet written when the machine stopped reads as zeros.
    if bytes.iter().all(|byte| *byte == 0) {
        return true;
    }
    match bytes.get(..4) {
        Some(len) => {
            let len = u32::from_le_bytes(len.try_into().unwrap_or_default()) as usize;
            bytes.len() < HEADER || HEADER.saturating_add(len) >= bytes.len()
        }
        None => true,
    }
}

/// The payload of the frame at the start of `bytes` and the frame's length, or what is wrong
/// with it.
fn frame_at(bytes: &[u8], sequence: u64) -> std::result::Result<(&[u8], usize), String> {
    let Some(header) = bytes.get(..HEADER) else {
        return Err(format!(
            "{} bytes, shorter than a frame header",
            bytes.len()
        ));
    };
    let len = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default()) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().unwrap_or_default());
    let stored_sequence = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
    if len > MAX_PAYLOAD {
        return Err(format!("claims a {len}-byte payload"));
    }
    let Some(payload) = bytes.get(HEADER..HEADER + len) else {
        return Err(format!(
            "claims {len} payload bytes, {} left",
            bytes.len() - HEADER
        ));
    };
    if checksum(stored_sequence, payload) != crc {
        return Err("checksum mismatch".to_owned());
    }
    if stored_sequence != sequence {
        return Err(format!(
            "holds record {stored_sequence}, expected {sequence}"
        ));
    }
    Ok((payload, HEADER + len))
}

fn checksum(sequence: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&sequence.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

impl WalLog {
    /// Starts a new WAL file in `dir` whose first record will be `first`.
    pub(crate) fn create(dir: &Path, first: u64) -> Result<WalLog> {
        fs::create_dir_all(dir).map_err(|source| Error::io("create wal directory", dir, source))?;
        let path = dir.join(file_name(first));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|source| Error::io("create wal file", &path, source))?;
        crate::segment::fsync_dir(dir)?;
        Ok(WalLog {
            dir: dir.to_path_buf(),
            file,
            path,
            first,
            len: 0,
            damaged: None,
            faults: None,
        })
    }

    /// Injects storage faults from `faults` into this file and the files after it.
    pub(crate) fn with_faults(
        mut self,
        faults: Option<std::sync::Arc<crate::FaultInjector>>,
    ) -> Self {
        self.faults = faults;
        self
    }

    /// Whether a failed append is still on the end of the file (see [`WalLog::repair`]).
    pub(crate) fn is_damaged(&self) -> bool {
        self.damaged.is_some()
    }

    /// Cuts off what a failed append left behind when it could not do so itself.
    pub(crate) fn repair(&mut self) -> Result<()> {
        if self.damaged.is_some() {
            self.cut_to(self.len)?;
            self.damaged = None;
        }
        Ok(())
    }

    /// Appends `records` (sequence numbers following the file's last) and syncs the file.
    /// On failure the file is cut back to its length before the call.
    pub(crate) fn append<'a>(
        &mut self,
        records: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) -> Result<()> {
        let mut frames = Vec::new();
        for (sequence, payload) in records {
            let len = u32::try_from(payload.len())
                .ok()
                .filter(|len| (*len as usize) <= MAX_PAYLOAD)
                .ok_or_else(|| Error::Corrupt {
                    location: self.path.display().to_string(),
                    detail: format!("record {sequence} of {} bytes is too large", payload.len()),
                })?;
            frames.extend_from_slice(&len.to_le_bytes());
            frames.extend_from_slice(&checksum(sequence, payload).to_le_bytes());
            frames.extend_from_slice(&sequence.to_le_bytes());
            frames.extend_from_slice(payload);
        }
        if let Some(damage) = &self.damaged {
            return Err(Error::io(
                "append wal",
                &self.path,
                std::io::Error::other(format!(
                    "a failed append could not be cut off yet ({damage})"
                )),
            ));
        }
        use crate::faults::{StorageOp, check};
        let faults = self.faults.as_ref();
        let written = check(faults, StorageOp::Write)
            .and_then(|()| self.file.write_all(&frames))
            .and_then(|()| check(faults, StorageOp::Sync))
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += frames.len() as u64;
                Ok(())
            }
            Err(source) => {
                // Cut the partial frames off, so no frame ever follows a damaged one.
                let restored = self
                    .file
                    .set_len(self.len)
                    .and_then(|()| self.file.seek(SeekFrom::Start(self.len)).map(|_| ()));
                if let Err(cut) = restored {
                    warn!(file = %self.path.display(), error = %cut, "could not cut a failed wal append off");
                    self.damaged = Some(cut.to_string());
                }
                Err(Error::io("append wal", &self.path, source))
            }
        }
    }

    /// Length of the file up to its last whole frame (to [`WalLog::cut_to`] later).
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Cuts the file back to `len` (a length [`WalLog::len`] returned) and syncs it: the frames
    /// after it are gone, as if never appended.
    pub(crate) fn cut_to(&mut self, len: u64) -> Result<()> {
        crate::faults::check(self.faults.as_ref(), crate::faults::StorageOp::SetLen)
            .and_then(|()| self.file.set_len(len))
            .and_then(|()| self.file.seek(SeekFrom::Start(len)).map(|_| ()))
            .and_then(|()| self.file.sync_data())
            .map_err(|source| Error::io("cut wal file", &self.path, source))?;
        self.len = len;
        Ok(())
    }

    /// Starts a new file at `first` (the next record's sequence) and returns it; the old file
    /// stays until [`remove_before`] deletes it.
    pub(crate) fn rotate(&mut self, first: u64) -> Result<u64> {
        // An older file must never end in a damaged frame.
        self.repair()?;
        if first == self.first && self.len == 0 {
            return Ok(first);
        }
        let faults = self.faults.take();
        match WalLog::create(&self.dir, first) {
            Ok(log) => *self = log.with_faults(faults),
            Err(error) => {
                self.faults = faults;
                return Err(error);
            }
        }
        Ok(first)
    }
}

/// Whether a WAL append could succeed now: writes and fsyncs a 4 KiB probe file in `dir`
/// (removed again). Used to notice that a full disk has space again without a write.
pub(crate) fn probe(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(".probe");
    let result = (|| {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        file.write_all(&[0u8; 4096])?;
        file.sync_data()
    })();
    let _ = fs::remove_file(&path);
    result
}

/// Deletes the WAL files all of whose records come before `boundary` (a file is deleted when
/// the file after it starts at or before `boundary`). Returns the bytes freed.
pub(crate) fn remove_before(dir: &Path, boundary: u64) -> Result<u64> {
    let files = list(dir)?;
    let mut freed = 0;
    for pair in files.windows(2) {
        let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
        if *next_first > boundary {
            break;
        }
        let len = fs::metadata(path).map(|meta| meta.len()).unwrap_or(0);
        fs::remove_file(path).map_err(|source| Error::io("remove wal file", path, source))?;
        freed += len;
    }
    if freed > 0 {
        crate::segment::fsync_dir(dir)?;
    }
    Ok(freed)
}

/// Bytes of WAL files in `dir`.
pub(crate) fn bytes(dir: &Path) -> Result<u64> {
    Ok(list(dir)?
        .iter()
        .map(|(_, path)| fs::metadata(path).map(|meta| meta.len()).unwrap_or(0))
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, first: u64, payloads: &[&[u8]]) -> WalLog {
        let mut log = WalLog::create(dir, first).unwrap();
        log.append(
            payloads
                .iter()
                .enumerate()
                .map(|(offset, payload)| (first + offset as u64, *payload)),
        )
        .unwrap();
        log
    }

    #[test]
    fn records_read_back_in_order_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = write(dir.path(), 1, &[b"a", b"bb"]);
        log.rotate(3).unwrap();
        log.append([(3, b"ccc".as_slice())]).unwrap();
        let contents = read_all(dir.path()).unwrap();
        assert_eq!(
            contents.records,
            vec![
                (1, b"a".to_vec()),
                (2, b"bb".to_vec()),
                (3, b"ccc".to_vec())
            ]
        );
        assert_eq!(contents.torn_bytes, 0);

        // The first file holds only records before 3: a seal at 3 deletes it.
        let before = bytes(dir.path()).unwrap();
        let freed = remove_before(dir.path(), 3).unwrap();
        assert!(freed > 0);
        assert_eq!(bytes(dir.path()).unwrap(), before - freed);
        assert_eq!(
            read_all(dir.path()).unwrap().records,
            vec![(3, b"ccc".to_vec())]
        );
        // The newest file is never deleted.
        assert_eq!(remove_before(dir.path(), 100).unwrap(), 0);
    }

    #[test]
    fn frames_cut_off_after_an_append_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = write(dir.path(), 1, &[b"kept"]);
        let before = log.len();
        log.append([(2, b"withdrawn".as_slice())]).unwrap();
        assert!(log.len() > before);
        log.cut_to(before).unwrap();
        log.append([(2, b"again".as_slice())]).unwrap();
        assert_eq!(
            read_all(dir.path()).unwrap().records,
            vec![(1, b"kept".to_vec()), (2, b"again".to_vec())]
        );
    }

    #[test]
    fn a_torn_tail_of_the_newest_file_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let log = write(dir.path(), 5, &[b"kept", b"torn record"]);
        let len = fs::metadata(&log.path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&log.path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let contents = read_all(dir.path()).unwrap();
        assert_eq!(contents.records, vec![(5, b"kept".to_vec())]);
        assert_eq!(
            contents.torn_bytes,
            (HEADER + b"torn record".len() - 3) as u64
        );
        // Cut off for good: a second read finds nothing torn.
        assert_eq!(read_all(dir.path()).unwrap().torn_bytes, 0);
    }

    #[test]
    fn damage_before_the_newest_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = write(dir.path(), 1, &[b"first", b"second"]);
        let old = log.path.clone();
        log.rotate(3).unwrap();
        log.append([(3, b"third".as_slice())]).unwrap();
        let mut bytes = fs::read(&old).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&old, bytes).unwrap();
        let error = read_all(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("record 2") && error.contains("checksum"),
            "{error}"
        );

        // A gap between files is damage too.
        let dir = tempfile::tempdir().unwrap();
        let mut log = write(dir.path(), 1, &[b"first"]);
        log.rotate(4).unwrap();
        log.append([(4, b"fourth".as_slice())]).unwrap();
        let error = read_all(dir.path()).unwrap_err().to_string();
        assert!(error.contains("expected 2"), "{error}");
    }
}
