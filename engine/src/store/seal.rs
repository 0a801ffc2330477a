//! Sealing: the memtable is frozen (and a new WAL file started), split by (tier, UTC day),
//! written as segments with their agent-table files, and published in one durable catalog
//! transaction that also records the WAL position it covers; the WAL files before it are then
//! deleted.
//!
//! Invariants:
//! - Segment files are fsync'd before the catalog references them.
//! - The switch from the frozen memtable to the new segments happens under the state lock,
//!   after the catalog transaction (entries, indexes, `wal_sealed_through`) committed.

use std::collections::HashMap;
use std::fs;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use redb::WriteTransaction;
use tracing::{debug, info, warn};

use crate::error::Result;
use crate::segment::{SegmentMeta, SegmentWriteOptions, sorted_parts};
use crate::tables::{
    CONVERSATION_ROWS, META, META_NEXT_SEGMENT_ID, META_WAL_SEALED_THROUGH, SEGMENTS, SESSION_ROWS,
    TRACE_KEYS, TRACE_SEGMENTS, WAL,
};
use crate::trace_keys::{RawTraceId, TraceKeys, resolve_keys, traces_in_batch};

use super::*;

pub(super) fn needs_seal(shared: &Shared) -> bool {
    let state = shared.state.read();
    let active = &state.active;
    active.total_bytes() >= shared.options.seal_max_bytes
        || active.rows >= shared.options.seal_max_rows
        || active
            .oldest
            .is_some_and(|oldest| oldest.elapsed() >= shared.options.seal_max_age)
        || state.frozen.is_some()
}

pub(super) fn run_sealer(shared: &Shared, wake: &Receiver<()>) {
    const MAX_BACKOFF: Duration = Duration::from_secs(60);
    let mut backoff = Duration::ZERO;
    loop {
        match wake.recv_timeout(Duration::from_secs(1)) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if shared.closing.load(Ordering::Acquire) {
            return;
        }
        // Writes failed (a full disk, say) and none came since: once the WAL directory takes
        // a write again, health need not wait for the next export to say so.
        if shared.activity.writes_failing()
            && !reopen::needed(shared, &shared.wal.lock())
            && crate::wal_log::probe(&shared.dir.join(crate::wal_log::WAL_DIR)).is_ok()
        {
            shared.activity.write(None);
        }
        // A storage fault is repaired first (reopening the store), then sealing goes on.
        let attempt = if reopen::needed(shared, &shared.wal.lock()) {
            reopen::reopen_if_needed(shared).map(|_| ())
        } else if needs_seal(shared) {
            seal(shared).map(|_| ()).inspect_err(|error| {
                warn!(
                    error = %error,
                    "sealing failed; rows stay in the wal and memtable"
                );
            })
        } else {
            continue;
        };
        match attempt {
            Ok(()) => backoff = Duration::ZERO,
            Err(_) => {
                backoff = (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                debug!(
                    retry_in_secs = backoff.as_secs(),
                    "background work backs off"
                );
                // Wait out the whole backoff, whatever wakes arrive meanwhile (every write
                // sends one), unless the engine closes.
                let until = std::time::Instant::now() + backoff;
                loop {
                    let left = until.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    if let Err(RecvTimeoutError::Disconnected) = wake.recv_timeout(left) {
                        return;
                    }
                    if shared.closing.load(Ordering::Acquire) {
                        return;
                    }
                }
            }
        }
    }
}

pub(super) fn seal(shared: &Shared) -> Result<SealSummary> {
    let started = std::time::Instant::now();
    let result = seal_locked(shared);
    let failure = result
        .as_ref()
        .err()
        .map(|error| crate::activity::cause_chain(error));
    shared.activity.seal(started.elapsed(), failure);
    if result.is_ok() {
        compact_index_file(shared);
    }
    result
}

/// Gives the index database's freed pages back to the file system once the file has doubled
/// (`DbSlot::compact_if_grown`). A failure is logged and left for the next seal: the data is
/// whole either way (redb compacts through ordinary durable commits).
fn compact_index_file(shared: &Shared) {
    let started = std::time::Instant::now();
    match shared.db.compact_if_grown() {
        Ok(Some((before, after))) => info!(
            before_bytes = before,
            after_bytes = after,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compacted the index database file"
        ),
        Ok(None) => {}
        Err(error) => warn!(error = %error, "compacting the index database file failed"),
    }
}

fn seal_locked(shared: &Shared) -> Result<SealSummary> {
    let _guard = shared.seal_lock.lock();
    let (frozen, generation) = {
        // The writer's lock first (lock order), so no group is between its WAL append and the
        // memtable while the WAL file is switched and the memtable frozen.
        let mut wal = shared.wal.lock();
        let mut state = shared.state.write();
        if state.frozen.is_none() {
            if state.active.is_empty() {
                return Ok(SealSummary::default());
            }
            let boundary = wal.rotate()?;
            let mut frozen = std::mem::take(&mut state.active);
            frozen.wal_boundary = boundary;
            state.frozen = Some(frozen);
            shared.generation.fetch_add(1, Ordering::AcqRel);
        }
        drop(wal);
        // Everything written up to the switch belongs to generations <= this one.
        let generation = shared.generation.load(Ordering::Acquire).saturating_sub(1);
        (state.frozen.clone().unwrap_or_default(), generation)
    };
    let started = Instant::now();
    // Resolve the trace keys known now, and remember them per trace, so the commit can catch
    // keys (or a higher tier) that arrive while the files are written. Chunk by chunk:
    // resolving replaces only the key columns.
    let (resolved, unresolved) = {
        let keys = shared.memtable_keys.read();
        let resolved = frozen
            .chunks
            .iter()
            .map(|chunk| {
                resolve_keys(
                    chunk,
                    |trace| keys.get(trace).map(|entry| &entry.keys),
                    &shared.options.retention,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let snapshot = resolved
            .iter()
            .flat_map(traces_in_batch)
            .map(|trace| {
                let known = keys.get(&trace).map(|entry| entry.keys.clone());
                (trace, known.unwrap_or_default())
            })
            .collect::<HashMap<_, _>>();
        (resolved, snapshot)
    };
    let options = SegmentWriteOptions {
        row_group_rows: shared.options.row_group_rows,
        zstd_level: shared.options.zstd_level,
    };
    let mut metas = Vec::new();
    let mut written_paths = Vec::new();
    let first_id = *shared.next_segment_id.lock();
    let parts: Vec<(String, String, RecordBatch)> = sorted_parts(&resolved)?
        .into_iter()
        .map(|((tier, day), batch)| (tier, day, batch))
        .collect();
    // From here only the sorted parts (and the frozen memtable, readable until the switch) are
    // needed.
    drop(resolved);
    // Blobs of traces promoted since the last seal get pins, so this seal copies them. A
    // failure (an unreadable segment of such a trace) must not stop sealing: the trace pins
    // stay for the next seal, and content expiry, which resolves them first, refuses to run
    // until they resolve.
    if let Err(error) = content_seal::resolve_trace_pins(shared) {
        warn!(error = %error, "could not pin the content of promoted traces; retried at the next seal");
    }
    let content = content_seal::write_sealed_content(shared, &frozen.content)?;
    // Set once the catalog transaction is attempted: a failure after that may still have
    // committed (an fsync that failed after the data reached the file), so the files stay.
    let mut committing = false;
    let result = (|| -> Result<Vec<(u64, RawTraceId, TraceKeys)>> {
        let batches: Vec<RecordBatch> = parts.iter().map(|(_, _, batch)| batch.clone()).collect();
        let mut split = agent_tables::complete_split_traces(shared, &batches, first_id)?;
        let extra = std::mem::take(&mut split.extra);
        for (offset, ((tier, day, sorted), extra)) in parts.into_iter().zip(extra).enumerate() {
            let id = first_id + offset as u64;
            let meta = agent_tables::write_segment_with_sidecars(
                shared, id, &tier, &day, &sorted, &extra, options,
            )?;
            written_paths.extend(agent_tables::segment_files(&shared.dir, &meta));
            metas.push(meta);
        }
        committing = true;
        commit_segments(
            shared,
            &metas,
            &split,
            &unresolved,
            &frozen,
            first_id + metas.len() as u64,
            &content,
        )
    })();
    let late = match result {
        Ok(late) => late,
        Err(error) if committing => {
            // The catalog may name these files now: keep them, and never reuse their ids. If
            // it does not, they are orphans, removed at the next open.
            *shared.next_segment_id.lock() = first_id + metas.len() as u64;
            content.keep_ids(shared);
            return Err(error);
        }
        Err(error) => {
            content.discard(&shared.dir);
            for path in written_paths {
                // Best effort: leftovers are orphans and are removed at the next open.
                let _ = fs::remove_file(path);
            }
            return Err(error);
        }
    };
    *shared.next_segment_id.lock() = first_id + metas.len() as u64;
    // Durable now: the WAL files before the boundary hold nothing the store still needs.
    let wal_freed = crate::wal_log::remove_before(
        &shared.dir.join(crate::wal_log::WAL_DIR),
        frozen.wal_boundary,
    )
    .unwrap_or_else(|error| {
        warn!(error = %error, "could not delete sealed wal files; the next seal or open retries");
        0
    });
    let content_segments = content.segments.len();
    let summary = SealSummary {
        segments: metas.len(),
        rows: metas.iter().map(|meta| meta.rows).sum(),
        bytes: metas.iter().map(|meta| meta.bytes).sum(),
    };
    {
        let mut state = shared.state.write();
        state.frozen = None;
        content_seal::publish_sealed_content(shared, &mut state, content);
        for mut meta in metas {
            meta.trace_runs = Vec::new();
            meta.session_runs = Vec::new();
            meta.conversation_runs = Vec::new();
            state.segments.push(Arc::new(meta));
        }
        publish_keys(
            shared,
            &mut state,
            KeyUpdates {
                memtable: Vec::new(),
                late,
            },
        );
        // Keys of traces last written before the switch are no longer needed in memory.
        shared
            .memtable_keys
            .write()
            .retain(|_, entry| entry.generation > generation);
    }
    info!(
        segments = summary.segments,
        rows = summary.rows,
        bytes = summary.bytes,
        content_segments,
        wal_freed,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "sealed memtable"
    );
    Ok(summary)
}

/// One durable transaction: catalog entries, trace/session/conversation indexes, the WAL
/// position sealed through (the frozen memtable's `wal_boundary - 1`; older stores' `wal` table is truncated to
/// `max_sequence`), next segment id, and late keys for traces whose keys arrived while the
/// segments were written. Being durable, it also makes every earlier non-durable commit of
/// the writer durable.
pub(super) fn commit_segments(
    shared: &Shared,
    metas: &[SegmentMeta],
    split: &agent_tables::SplitTraces,
    unresolved: &HashMap<RawTraceId, TraceKeys>,
    frozen: &Memtable,
    next_segment_id: u64,
    content: &content_seal::SealedContent,
) -> Result<Vec<(u64, RawTraceId, TraceKeys)>> {
    // Digests for the chain before the transaction: hashing must not hold the write lock (the
    // files are fsync'd already).
    let mut digests = Vec::with_capacity(metas.len());
    for meta in metas {
        digests.push(crate::chain::file_digest(&shared.dir.join(&meta.path))?);
    }
    let txn = shared.db.begin_write().map_err(store_error("begin seal"))?;
    let mut late = Vec::new();
    {
        for meta in metas {
            add_to_catalog(&txn, meta)?;
        }
        agent_tables::record_owners(&txn, split)?;
        for (meta, digest) in metas.iter().zip(digests) {
            let segment = crate::chain::ChainSegment::of(meta, digest);
            crate::chain::append(
                &txn,
                crate::chain::EntryKind::Sealed,
                Some(segment),
                None,
                "",
            )?;
        }
        if !unresolved.is_empty() {
            let keys_table = txn
                .open_table(TRACE_KEYS)
                .map_err(store_error("open trace keys"))?;
            for meta in metas {
                for (trace, first, count) in &meta.trace_runs {
                    let Some(snapshot) = unresolved.get(trace) else {
                        continue;
                    };
                    let Some(current) = read_trace_keys(&keys_table, trace)? else {
                        continue;
                    };
                    if current.adds_to(Some(snapshot), &shared.options.retention) {
                        record_late_keys(
                            &txn,
                            trace,
                            Some(snapshot),
                            &current,
                            &[(meta.id, *first, *count)],
                        )?;
                        late.push((meta.id, *trace, current));
                    }
                }
            }
        }
        content_seal::commit_sealed_content(&txn, content)?;
        let mut wal = txn.open_table(WAL).map_err(store_error("open wal"))?;
        wal.retain_in(..=frozen.max_sequence, |_, _| false)
            .map_err(store_error("truncate wal"))?;
        let mut meta = txn.open_table(META).map_err(store_error("open meta"))?;
        meta.insert(META_NEXT_SEGMENT_ID, next_segment_id)
            .map_err(store_error("write next segment id"))?;
        if frozen.wal_boundary > 0 {
            meta.insert(META_WAL_SEALED_THROUGH, frozen.wal_boundary - 1)
                .map_err(store_error("write wal position"))?;
        }
    }
    txn.commit().map_err(store_error("commit seal"))?;
    Ok(late)
}

/// A new segment's catalog entry and its trace, session and conversation runs, written in
/// `txn` (the seal's or a rewrite's transaction).
pub(super) fn add_to_catalog(txn: &WriteTransaction, meta: &SegmentMeta) -> Result<()> {
    txn.open_table(SEGMENTS)
        .map_err(store_error("open catalog"))?
        .insert(meta.id, meta.encode().as_slice())
        .map_err(store_error("write catalog"))?;
    let mut trace_index = txn
        .open_multimap_table(TRACE_SEGMENTS)
        .map_err(store_error("open trace index"))?;
    for (trace, first, count) in &meta.trace_runs {
        trace_index
            .insert(trace.as_slice(), (meta.id, *first, *count))
            .map_err(store_error("write trace index"))?;
    }
    let mut session_index = txn
        .open_multimap_table(SESSION_ROWS)
        .map_err(store_error("open session index"))?;
    for (session, first, count) in &meta.session_runs {
        session_index
            .insert(session.as_str(), (meta.id, *first, *count))
            .map_err(store_error("write session index"))?;
    }
    let mut conversation_index = txn
        .open_multimap_table(CONVERSATION_ROWS)
        .map_err(store_error("open conversation index"))?;
    for (conversation, first, count) in &meta.conversation_runs {
        conversation_index
            .insert(conversation.as_str(), (meta.id, *first, *count))
            .map_err(store_error("write conversation index"))?;
    }
    Ok(())
}
