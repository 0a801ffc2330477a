//! Reopening the store after a storage fault, without a restart.
//!
//! A failed write, fsync or read of the database file makes redb refuse everything after it,
//! and a WAL append that could not be withdrawn makes the writer refuse writes. Both used to
//! last until the process restarted. [`reopen_if_needed`] does what a restart would: closes
//! the database and opens it again (redb repairs it to its last durable commit), then runs the
//! same recovery as [`Engine::open`] (catalog, WAL replay, trace keys) and replaces the
//! engine's in-memory state with what it found.
//!
//! Invariants:
//! - runs with `seal_lock` and `wal` held (lock order), so no seal, expiry, erasure or write
//!   is between its steps; scans keep the snapshots they took;
//! - acknowledged writes are in the WAL and come back through the replay, exactly as after a
//!   crash; a write whose records could not be withdrawn comes back whole (its client was told
//!   it failed, as when a crash follows an fsync);
//! - a failed attempt changes nothing but leaves the need in place: the next write or sealer
//!   tick tries again (disk space may have been freed meanwhile), at most once a second;
//!   writes in between fail at once with the reason.

use super::*;

/// How long a reopen waits for transactions on the old database to let go of it.
const PATIENCE: Duration = Duration::from_secs(30);

/// After a failed reopen, writes meanwhile fail at once with its reason (no attempt per write).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Whether the store needs [`reopen_if_needed`] before it can write again.
pub(super) fn needed(shared: &Shared, wal: &writer::WalWriter) -> bool {
    shared.db.failed() || wal.needs_reopen()
}

/// Reopens the database and rebuilds the engine's state from it, if a storage fault requires
/// it. Takes `seal_lock` and `wal`: call with neither held.
pub(super) fn reopen_if_needed(shared: &Shared) -> Result<bool> {
    let _seal = shared.seal_lock.lock();
    let mut wal = shared.wal.lock();
    if !needed(shared, &wal) {
        return Ok(false);
    }
    if let Some(reason) = shared.activity.recent_reopen_failure(RETRY_AFTER) {
        return Err(Error::io(
            "reopen the store",
            shared.dir.join(DATABASE_FILE),
            std::io::Error::other(format!(
                "a storage fault needs the store reopened, which failed just now ({reason}); retrying within a second"
            )),
        ));
    }
    let started = Instant::now();
    let result = reopen_locked(shared, &mut wal);
    match &result {
        Ok(summary) => info!(
            wal_records = summary.wal_records,
            wal_rows = summary.wal_rows,
            wal_reapplied = summary.wal_reapplied,
            millis = started.elapsed().as_millis() as u64,
            "store reopened after a storage fault"
        ),
        Err(error) => warn!(
            error = %crate::activity::cause_chain(error),
            "reopening the store after a storage fault failed; trying again later"
        ),
    }
    shared.activity.reopen(
        result
            .as_ref()
            .err()
            .map(|error| crate::activity::cause_chain(error)),
    );
    result.map(|_| true)
}

fn reopen_locked(shared: &Shared, wal: &mut writer::WalWriter) -> Result<RecoverySummary> {
    // What a failed append left on the WAL file goes first: recovery must not read it.
    wal.log.repair()?;
    let db_path = shared.dir.join(DATABASE_FILE);
    let db = shared
        .db
        .reopen(PATIENCE)
        .map_err(|error| Error::store("reopen database", error))?;
    let mut summary = RecoverySummary::default();
    let recovered = recover(&db, &shared.dir, &db_path, &shared.options, &mut summary)?;
    drop(db);

    let log = recovery::fresh_wal(
        &shared.dir,
        &shared.options,
        recovered.next_sequence,
        recovered.sealed_through,
    )?;
    *wal = writer::WalWriter::new(recovered.next_sequence, log);

    let generation = shared.generation.fetch_add(1, Ordering::AcqRel) + 1;
    {
        let mut state = shared.state.write();
        state.active = recovered.memtable;
        state.frozen = None;
        state.segments = recovered.segments;
        state.late = recovered.late;
        state.content_catalog = recovered.content_catalog;
        state.content_bumped = recovered.content_bumped;
        let mut keys = shared.memtable_keys.write();
        *keys = recovered.memtable_keys;
        for entry in keys.values_mut() {
            entry.generation = generation;
        }
    }
    // Ids a failed seal took stay taken: its files may still be on disk.
    let mut next_id = shared.next_segment_id.lock();
    *next_id = (*next_id).max(recovered.next_segment_id);
    drop(next_id);
    let mut next_content = shared.next_content_id.lock();
    *next_content = (*next_content).max(recovered.next_content_id);
    drop(next_content);
    *shared.session_rollup.lock() = session_rollup::SessionRollup::default();
    Ok(summary)
}
