//! [`DbSlot`]: the redb database, reopenable in place after a storage fault.
//!
//! redb latches any I/O error of its file: every later operation answers "previous I/O error"
//! until the database is opened again. The slot watches the file through [`WatchedBackend`]
//! (redb's own file backend underneath), so it knows when that happened, and
//! [`DbSlot::reopen`] closes the database and opens the file again, which makes redb repair it
//! back to its last durable commit. `reopen.rs` then rebuilds the engine's state from it, as
//! recovery at open does.
//!
//! Invariants:
//! - the slot holds at most one open database; a reopen closes the old one before opening
//!   the file again (redb locks its file), and transactions begun meanwhile get an error;
//! - the failure flag is raised by the backend itself, on the first failed operation, before
//!   redb sees the error: nothing can use the poisoned database without the slot knowing.

use std::fmt;
use std::fs::OpenOptions;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use redb::{
    BackendError, Database, DatabaseError, ReadTransaction, ReadableDatabase, StorageBackend,
    TransactionError, WriteTransaction,
};

use crate::faults::{FaultInjector, StorageOp, check};

/// redb's file backend, with its first failure recorded and faults injected when a test asks.
struct WatchedBackend {
    inner: redb::backends::FileBackend,
    failed: Arc<AtomicBool>,
    faults: Option<Arc<FaultInjector>>,
}

impl fmt::Debug for WatchedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchedBackend")
            .field("failed", &self.failed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl WatchedBackend {
    fn watch<T>(
        &self,
        op: StorageOp,
        run: impl FnOnce() -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        let result = check(self.faults.as_ref(), op).and_then(|()| run());
        if result.is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
        result
    }
}

impl StorageBackend for WatchedBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.watch(StorageOp::Read, || self.inner.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.watch(StorageOp::Read, || self.inner.read(offset, out))
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.watch(StorageOp::SetLen, || self.inner.set_len(len))
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.watch(StorageOp::Sync, || self.inner.sync_data())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.watch(StorageOp::Write, || self.inner.write(offset, data))
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// Growth of the database file since its last compaction below which it is not compacted.
const COMPACT_MIN_GROWTH: u64 = 4 << 20;

/// The open database, and whether its file failed since it was opened.
#[derive(Debug)]
pub(crate) struct DbSlot {
    path: PathBuf,
    cache_bytes: usize,
    faults: Option<Arc<FaultInjector>>,
    current: RwLock<Option<(Arc<Database>, Arc<AtomicBool>)>>,
    /// The file's length after it was last compacted; 0 until then, so the first seal of a
    /// process compacts a file that grew before it (by [`COMPACT_MIN_GROWTH`] at least).
    compacted_len: std::sync::atomic::AtomicU64,
}

impl DbSlot {
    /// Opens (or creates) the database file at `path`.
    pub(crate) fn open(
        path: &Path,
        cache_bytes: usize,
        faults: Option<Arc<FaultInjector>>,
    ) -> Result<DbSlot, DatabaseError> {
        let slot = DbSlot {
            path: path.to_path_buf(),
            cache_bytes,
            faults,
            current: RwLock::new(None),
            compacted_len: std::sync::atomic::AtomicU64::new(0),
        };
        let opened = slot.open_file()?;
        *slot.current.write() = Some(opened);
        Ok(slot)
    }

    fn open_file(&self) -> Result<(Arc<Database>, Arc<AtomicBool>), DatabaseError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)?;
        let failed = Arc::new(AtomicBool::new(false));
        let backend = WatchedBackend {
            inner: redb::backends::FileBackend::new(file)?,
            failed: Arc::clone(&failed),
            faults: self.faults.clone(),
        };
        let db = Database::builder()
            .set_cache_size(self.cache_bytes)
            .create_with_backend(backend)?;
        Ok((Arc::new(db), failed))
    }

    /// The open database (an error while a reopen is under way or after one failed).
    pub(crate) fn database(&self) -> Result<Arc<Database>, TransactionError> {
        self.current
            .read()
            .as_ref()
            .map(|(db, _)| Arc::clone(db))
            .ok_or_else(|| {
                TransactionError::Storage(redb::StorageError::Io(std::io::Error::other(
                    "the database is being reopened after a storage fault",
                )))
            })
    }

    /// Begins a read transaction on the open database.
    pub(crate) fn begin_read(&self) -> Result<ReadTransaction, TransactionError> {
        self.database()?.begin_read()
    }

    /// Begins a write transaction on the open database.
    pub(crate) fn begin_write(&self) -> Result<WriteTransaction, TransactionError> {
        self.database()?.begin_write()
    }

    /// Whether the database file failed an operation since it was opened (redb then fails
    /// everything until [`DbSlot::reopen`]), or no database is open.
    pub(crate) fn failed(&self) -> bool {
        self.current
            .read()
            .as_ref()
            .is_none_or(|(_, failed)| failed.load(Ordering::SeqCst))
    }

    fn file_len(&self) -> std::io::Result<u64> {
        Ok(std::fs::metadata(&self.path)?.len())
    }

    /// Compacts the database file when it has grown to twice its length after the last
    /// compaction (and by at least [`COMPACT_MIN_GROWTH`]): redb reuses freed pages but never
    /// gives them back, and the pages the indexes freed as seals rewrote them were most of the
    /// file (270 MB, 116 MB live, on the 10M bench store). Compaction moves the live pages to
    /// the front and truncates the file; new transactions wait while it runs (0.55 s for that
    /// file). Skipped, for the next call to try again, while any transaction is open or a
    /// caller is beginning one. Returns the file's length before and after when it ran.
    pub(crate) fn compact_if_grown(&self) -> Result<Option<(u64, u64)>, redb::CompactionError> {
        let grown = || -> Result<Option<u64>, redb::CompactionError> {
            let len = self.file_len().map_err(redb::StorageError::from)?;
            let base = self.compacted_len.load(Ordering::Relaxed);
            Ok(
                (len >= base.saturating_mul(2) && len >= base.saturating_add(COMPACT_MIN_GROWTH))
                    .then_some(len),
            )
        };
        if grown()?.is_none() {
            return Ok(None);
        }
        let mut current = self.current.write();
        // Again under the lock: another seal may have compacted it meanwhile.
        let Some(before) = grown()? else {
            return Ok(None);
        };
        let Some((db, failed)) = current.as_mut() else {
            return Ok(None);
        };
        if failed.load(Ordering::SeqCst) {
            return Ok(None);
        }
        // Callers hold the Arc only while beginning a transaction.
        let Some(db) = Arc::get_mut(db) else {
            return Ok(None);
        };
        match db.compact() {
            Ok(_) => {}
            Err(
                redb::CompactionError::TransactionInProgress
                | redb::CompactionError::EphemeralSavepointExists,
            ) => return Ok(None),
            Err(error) => return Err(error),
        }
        drop(current);
        let after = self.file_len().map_err(redb::StorageError::from)?;
        self.compacted_len.store(after, Ordering::Relaxed);
        Ok(Some((before, after)))
    }

    /// Closes the database and opens its file again. Waits up to `patience` for the
    /// transactions begun on the old one to let go of it.
    pub(crate) fn reopen(&self, patience: Duration) -> Result<Arc<Database>, DatabaseError> {
        let old = self.current.write().take();
        if let Some((db, _)) = old {
            // Callers hold the Arc only while beginning a transaction: wait them out.
            let deadline = Instant::now() + patience;
            let mut db = db;
            loop {
                match Arc::try_unwrap(db) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(shared) if Instant::now() < deadline => {
                        db = shared;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(shared) => {
                        // Leave it be; the next attempt waits again.
                        let failed = Arc::new(AtomicBool::new(true));
                        *self.current.write() = Some((shared, failed));
                        return Err(DatabaseError::Storage(redb::StorageError::Io(
                            std::io::Error::other(
                                "the database is still in use; reopening it later",
                            ),
                        )));
                    }
                }
            }
        }
        // A write transaction still running on the old database keeps its file locked until
        // it ends (redb closes the file then): try again for a while.
        let deadline = Instant::now() + patience;
        loop {
            match self.open_file() {
                Ok((db, failed)) => {
                    *self.current.write() = Some((Arc::clone(&db), failed));
                    return Ok(db);
                }
                Err(DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(error) => return Err(error),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableTableMetadata, TableDefinition};

    const T: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("t");

    #[test]
    fn a_grown_file_is_compacted_when_no_transaction_is_open_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let slot = DbSlot::open(&path, 1 << 20, None).unwrap();
        let len = || std::fs::metadata(&path).unwrap().len();
        let opened = len();
        // Not grown yet: nothing to do.
        assert_eq!(slot.compact_if_grown().unwrap(), None);
        // 24 MB written in many commits, then most of it deleted: the file keeps the pages.
        let value = vec![7u8; 4096];
        for chunk in 0..60u64 {
            let txn = slot.begin_write().unwrap();
            {
                let mut table = txn.open_table(T).unwrap();
                for key in chunk * 100..chunk * 100 + 100 {
                    table.insert(key, value.as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let txn = slot.begin_write().unwrap();
        {
            let mut table = txn.open_table(T).unwrap();
            for key in 100..6000u64 {
                table.remove(key).unwrap();
            }
        }
        txn.commit().unwrap();
        let grown = len();
        assert!(
            grown > opened * 2 + COMPACT_MIN_GROWTH,
            "{opened} -> {grown}"
        );
        // A file that grew before this process opened it is compacted by its first call.
        drop(slot);
        let slot = DbSlot::open(&path, 1 << 20, None).unwrap();
        // (redb gives back a free tail when it closes, not the free pages among live ones.)
        let grown = len();
        assert!(
            grown > opened * 2 + COMPACT_MIN_GROWTH,
            "{opened} -> {grown}"
        );
        // A read transaction open: skipped, the file untouched.
        let reading = slot.begin_read().unwrap();
        assert_eq!(slot.compact_if_grown().unwrap(), None);
        assert_eq!(len(), grown);
        drop(reading);
        // Now it runs, and the file is much smaller.
        let (before, after) = slot.compact_if_grown().unwrap().unwrap();
        assert_eq!(before, grown);
        assert_eq!(after, len());
        assert!(after * 4 < before, "{before} -> {after}");
        // Every row left reads back, and the database takes writes again.
        let read = slot.begin_read().unwrap();
        let table = read.open_table(T).unwrap();
        assert_eq!(table.len().unwrap(), 100);
        for key in 0..100u64 {
            assert_eq!(table.get(key).unwrap().unwrap().value(), value.as_slice());
        }
        drop((table, read));
        let txn = slot.begin_write().unwrap();
        txn.open_table(T)
            .unwrap()
            .insert(9_999, [1u8].as_slice())
            .unwrap();
        txn.commit().unwrap();
        // Not grown since: nothing to do.
        assert_eq!(slot.compact_if_grown().unwrap(), None);
        // Reopened from its file: the same rows.
        drop(slot);
        let slot = DbSlot::open(&path, 1 << 20, None).unwrap();
        let read = slot.begin_read().unwrap();
        assert_eq!(read.open_table(T).unwrap().len().unwrap(), 101);
    }
}
