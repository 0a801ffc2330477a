//! [`Engine::purge`]: deletes all data while the engine keeps running (what the HTTP
//! `POST /purge` that Jaeger's end-to-end suite calls between tests needs).
//!
//! Crash safety comes from the order: under the seal lock (no seal, expiry, erasure or verify
//! runs) and the writer's lock (no write is between its WAL commit and its acknowledgement), one
//! redb transaction empties every data table, the WAL included, and chains the removal of each
//! segment; the in-memory memtable and catalog are emptied after it commits, and only then are
//! the segment files deleted. A crash before the commit leaves the store as it was; a crash after
//! it leaves unreferenced files, which open removes as orphans, and nothing in the WAL to replay.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use redb::{
    MultimapTableDefinition, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use tracing::{info, warn};

use super::{Engine, Memtable, store_error};
use crate::error::Result;
use crate::segment::SegmentMeta;
use crate::tables::{
    AGENT_OWNERS, AGENT_PARTIAL, CONTENT, CONTENT_BY_TIME, CONTENT_DIRTY, CONTENT_INDEX,
    CONTENT_PINS, CONTENT_REFS, CONTENT_SEEN, CONTENT_SEGMENTS, CONVERSATION_ROWS, HOLDS,
    LATE_KEYS, META, META_WAL_APPLIED, META_WAL_SEALED_THROUGH, SEGMENTS, SESSION_ROWS,
    SPLIT_TRACES, TRACE_KEYS, TRACE_SEGMENTS, WAL,
};

/// What [`Engine::purge`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PurgeReport {
    /// Spans removed: rows of the memtable (and so of the WAL) and of sealed segments.
    pub spans: u64,
    /// Sealed segments removed.
    pub segments: u64,
    /// Bytes of the removed segment files.
    pub segment_bytes: u64,
    /// Content blobs removed.
    pub content_blobs: u64,
    /// Content references removed.
    pub content_references: u64,
    /// Legal holds released.
    pub holds: u64,
}

impl Engine {
    /// Deletes every span and everything derived from spans, while the engine keeps running:
    /// the memtable and the WAL, every sealed segment (catalog entry and file), the trace,
    /// session and conversation indexes, trace keys and late keys, the content store's blobs,
    /// references and expiry bookkeeping, and the legal holds (purge overrides them: it is a
    /// reset for test and development stores, not a retention tool). Afterwards scans return
    /// nothing, [`Engine::stats`] is zero, and writes work as before.
    ///
    /// Kept, because they are the store's identity rather than data: the store format version,
    /// the next segment id (segment ids are never reused), the content digest key (digests of
    /// equal values stay equal), and the segment chain. The purge is **recorded** in the chain,
    /// one `purged` entry per deleted segment, rather than the chain being reset: a reset would
    /// be indistinguishable from someone rewriting the chain (see `docs/tamper-evidence.md`),
    /// and a head hash kept elsewhere must stay an entry of the chain. [`Engine::verify`] then
    /// reports no problem (unless there was one before: a purge does not launder evidence) and
    /// counts the purged segments. Rows that were never sealed were never chained.
    ///
    /// Crash-safe: one durable redb transaction empties the tables (WAL included) and appends
    /// the chain entries; segment files are deleted only after it commits, and a file left by a
    /// crash then is an orphan that [`Engine::open`] removes. Holds the writer's lock across
    /// that transaction and the memtable reset, so each concurrent [`Engine::write`] lands
    /// entirely before the purge (and is removed) or entirely after it (and is kept, also
    /// across restarts), with its content; a write acknowledged after `purge` returns is never
    /// lost. The same holds for each [`Engine::hold`] (one redb transaction). A scan planned
    /// before the purge may fail to read a segment file deleted under it, as with expiry.
    pub fn purge(&self) -> Result<PurgeReport> {
        let shared = &self.shared;
        let _seal = shared.seal_lock.lock();
        // References in span rows (counted before the locks: a concurrent write lands either
        // side of the purge, so the count is as of its start).
        let mut report = PurgeReport {
            content_references: super::content_seal::row_ref_counts(shared)?.0,
            ..PurgeReport::default()
        };
        let content_ids: Vec<u64>;
        let paths = {
            let mut wal = shared.wal.lock();
            let (memtable_rows, in_memory) = {
                let state = shared.state.read();
                let frozen_rows = state.frozen.as_ref().map_or(0, |frozen| frozen.rows);
                let in_memory: HashMap<u64, Arc<SegmentMeta>> = state
                    .segments
                    .iter()
                    .map(|meta| (meta.id, Arc::clone(meta)))
                    .collect();
                report.content_blobs += (state.active.content.len()
                    + state
                        .frozen
                        .as_ref()
                        .map_or(0, |frozen| frozen.content.len()))
                    as u64;
                ((state.active.rows + frozen_rows) as u64, in_memory)
            };
            let txn = shared
                .db
                .begin_write()
                .map_err(store_error("begin purge"))?;
            let mut catalog: Vec<(u64, Option<Arc<SegmentMeta>>)> = Vec::new();
            {
                let table = txn
                    .open_table(SEGMENTS)
                    .map_err(store_error("open catalog"))?;
                for entry in table.iter().map_err(store_error("read catalog"))? {
                    let (id, value) = entry.map_err(store_error("read catalog"))?;
                    let id = id.value();
                    // An entry that cannot be decoded (edited under a running engine) is still
                    // removed; the in-memory catalog, equal to the table under the seal lock,
                    // names its file.
                    let meta = match SegmentMeta::decode(id, value.value()) {
                        Ok(meta) => Some(Arc::new(meta)),
                        Err(_) => in_memory.get(&id).map(Arc::clone),
                    };
                    catalog.push((id, meta));
                }
            }
            for (id, meta) in &catalog {
                crate::chain::append_purged(&txn, *id, meta.as_deref())?;
            }
            report.holds = empty_table(&txn, HOLDS)?;
            report.content_blobs = empty_table(&txn, CONTENT)? + empty_table(&txn, CONTENT_INDEX)?;
            empty_table(&txn, CONTENT_SEGMENTS)?;
            empty_table(&txn, CONTENT_PINS)?;
            empty_table(&txn, crate::tables::CONTENT_TRACE_PINS)?;
            empty_table(&txn, CONTENT_DIRTY)?;
            report.content_references += empty_table(&txn, CONTENT_REFS)?;
            empty_table(&txn, WAL)?;
            empty_table(&txn, SEGMENTS)?;
            empty_table(&txn, TRACE_KEYS)?;
            empty_table(&txn, CONTENT_SEEN)?;
            empty_multimap_table(&txn, TRACE_SEGMENTS)?;
            empty_multimap_table(&txn, SESSION_ROWS)?;
            empty_multimap_table(&txn, CONVERSATION_ROWS)?;
            empty_multimap_table(&txn, LATE_KEYS)?;
            empty_table(&txn, SPLIT_TRACES)?;
            empty_table(&txn, AGENT_OWNERS)?;
            empty_multimap_table(&txn, AGENT_PARTIAL)?;
            empty_multimap_table(&txn, CONTENT_BY_TIME)?;
            // Nothing written before the purge is replayed, even if a WAL file outlives it.
            let purged_through = wal.next_sequence - 1;
            {
                let mut meta = txn.open_table(META).map_err(store_error("open meta"))?;
                for key in [META_WAL_SEALED_THROUGH, META_WAL_APPLIED] {
                    meta.insert(key, purged_through)
                        .map_err(store_error("write wal position"))?;
                }
            }
            txn.commit().map_err(store_error("commit purge"))?;
            let wal_dir = shared.dir.join(crate::wal_log::WAL_DIR);
            match wal.rotate() {
                Ok(boundary) => {
                    if let Err(error) = crate::wal_log::remove_before(&wal_dir, boundary) {
                        warn!(error = %error, "could not delete purged wal files; the next open does");
                    }
                }
                Err(error) => {
                    warn!(error = %error, "could not start a new wal file after the purge; its files stay until the next seal")
                }
            }

            report.segments = catalog.len() as u64;
            report.spans = memtable_rows;
            let mut paths = Vec::with_capacity(catalog.len());
            for meta in catalog.iter().filter_map(|(_, meta)| meta.as_ref()) {
                report.spans += meta.rows;
                report.segment_bytes += meta.bytes;
                paths.extend(super::agent_tables::segment_files(&shared.dir, meta));
            }
            {
                let mut state = shared.state.write();
                state.active = Memtable::default();
                state.frozen = None;
                state.segments.clear();
                state.late.clear();
                content_ids = state.content_catalog.drain().map(|(id, _)| id).collect();
                state.content_bumped.clear();
                shared.memtable_keys.write().clear();
            }
            paths
        };
        // After the commit, still under the seal lock (no seal creates files meanwhile).
        let segments_root = shared.dir.join("segments");
        for path in &paths {
            remove_segment_file(path, &segments_root);
        }
        for id in content_ids {
            let path = crate::content_segment::path_of(&shared.dir, id);
            if let Err(error) = fs::remove_file(&path)
                && error.kind() != std::io::ErrorKind::NotFound
            {
                warn!(path = %path.display(), error = %error, "could not delete a purged content segment");
            }
        }
        info!(
            spans = report.spans,
            segments = report.segments,
            bytes = report.segment_bytes,
            content_blobs = report.content_blobs,
            holds = report.holds,
            "purged the store"
        );
        Ok(report)
    }
}

/// Deletes every row of `table` in `txn` (by deleting and recreating it); returns how many.
fn empty_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &WriteTransaction,
    table: TableDefinition<'_, K, V>,
) -> Result<u64> {
    let rows = txn
        .open_table(table)
        .map_err(store_error("open table to purge"))?
        .len()
        .map_err(store_error("count table to purge"))?;
    txn.delete_table(table)
        .map_err(store_error("delete table to purge"))?;
    txn.open_table(table)
        .map_err(store_error("recreate purged table"))?;
    Ok(rows)
}

/// [`empty_table`] for a multimap table; returns how many values it held.
fn empty_multimap_table<K: redb::Key + 'static, V: redb::Key + 'static>(
    txn: &WriteTransaction,
    table: MultimapTableDefinition<'_, K, V>,
) -> Result<u64> {
    let values = txn
        .open_multimap_table(table)
        .map_err(store_error("open table to purge"))?
        .len()
        .map_err(store_error("count table to purge"))?;
    txn.delete_multimap_table(table)
        .map_err(store_error("delete table to purge"))?;
    txn.open_multimap_table(table)
        .map_err(store_error("recreate purged table"))?;
    Ok(values)
}

/// Deletes a purged segment's file and the tier and day directories it leaves empty. Best
/// effort: the catalog no longer names the file, so one left behind is an orphan that the next
/// open removes.
fn remove_segment_file(path: &Path, segments_root: &Path) {
    if let Err(error) = fs::remove_file(path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        warn!(path = %path.display(), error = %error, "could not delete a purged segment file");
        return;
    }
    let mut dir = path.parent();
    while let Some(current) = dir
        && current.starts_with(segments_root)
        && current != segments_root
    {
        // Fails (and stops) while the directory still holds files.
        if fs::remove_dir(current).is_err() {
            break;
        }
        dir = current.parent();
    }
}
