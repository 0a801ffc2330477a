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

/// The open database, and whether its file failed since it was opened.
#[derive(Debug)]
pub(crate) struct DbSlot {
    path: PathBuf,
    cache_bytes: usize,
    faults: Option<Arc<FaultInjector>>,
    current: RwLock<Option<(Arc<Database>, Arc<AtomicBool>)>>,
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
