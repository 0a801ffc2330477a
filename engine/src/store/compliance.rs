//! Tamper evidence and legal holds on an open engine: [`Engine::verify`], [`Engine::hold`],
//! [`Engine::release`], [`Engine::holds`]; and [`verify_data_dir`] for a directory no engine
//! has open (it needs neither recovery nor every catalog file to be present).

use std::path::Path;

use redb::{Database, ReadableDatabase};

use super::{DATABASE_FILE, Engine, store_error};
use crate::chain::{self, VerifyReport, now_ns};
use crate::error::{Error, Result};
use crate::holds::{self, HoldTarget, LegalHold};

impl Engine {
    /// Recomputes the segment chain and checks it against the catalog and every live segment
    /// file (see `docs/tamper-evidence.md`). Problems are in the report, not errors; errors
    /// mean the check could not run. Holds the seal lock, so no seal, erase or expiry changes
    /// the segments while their files are hashed (writes go on into the memtable).
    pub fn verify(&self) -> Result<VerifyReport> {
        let _guard = self.shared.seal_lock.lock();
        let txn = self
            .shared
            .db
            .begin_read()
            .map_err(store_error("begin verify"))?;
        chain::verify(&txn, &self.shared.dir)
    }

    /// Places a legal hold; returns false when it was already in force (its time is kept).
    pub fn hold(&self, target: &HoldTarget) -> Result<bool> {
        let txn = self
            .shared
            .db
            .begin_write()
            .map_err(store_error("begin hold"))?;
        let placed = holds::place(&txn, target, now_ns())?;
        txn.commit().map_err(store_error("commit hold"))?;
        Ok(placed)
    }

    /// Releases a legal hold; returns false when there was none.
    pub fn release(&self, target: &HoldTarget) -> Result<bool> {
        let txn = self
            .shared
            .db
            .begin_write()
            .map_err(store_error("begin release"))?;
        let released = holds::release(&txn, target)?;
        txn.commit().map_err(store_error("commit release"))?;
        Ok(released)
    }

    /// The legal holds in force.
    pub fn holds(&self) -> Result<Vec<LegalHold>> {
        let txn = self
            .shared
            .db
            .begin_read()
            .map_err(store_error("begin read holds"))?;
        holds::list(&txn)
    }

    /// When `target` was put under legal hold, if it is.
    pub fn held_since(&self, target: &HoldTarget) -> Result<Option<i64>> {
        Ok(self
            .holds()?
            .into_iter()
            .find(|hold| &hold.target == target)
            .map(|hold| hold.since_ns))
    }
}

/// Verifies the store in `dir` without opening an engine on it: no WAL replay, no orphan
/// removal, nothing written. Fails with [`Error::Locked`] while a server holds the directory
/// (use [`Engine::verify`] in that process instead).
pub fn verify_data_dir(dir: impl AsRef<Path>) -> Result<VerifyReport> {
    let dir = dir.as_ref();
    let path = dir.join(DATABASE_FILE);
    if !path.is_file() {
        return Err(Error::io(
            "open database",
            &path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no sightline.redb here"),
        ));
    }
    let db = match Database::open(&path) {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            return Err(Error::Locked {
                path: dir.to_path_buf(),
            });
        }
        Err(error) => return Err(Error::store("open database", error)),
    };
    let txn = db.begin_read().map_err(store_error("begin verify"))?;
    chain::verify(&txn, dir)
}
