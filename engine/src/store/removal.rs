//! Removing a segment (expiry, erasure): catalog entry, index runs, late keys and keys of
//! traces with no row left go in one transaction that first writes the rows to keep as new
//! segments; the files go when no reader holds them (`reaper.rs`).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;

use redb::ReadableMultimapTable;

use crate::error::Result;
use crate::segment::{SegmentMeta, SegmentWriteOptions, sorted_parts};
use crate::tables::{
    CONVERSATION_ROWS, LATE_KEYS, META, META_NEXT_SEGMENT_ID, RowRun, SEGMENTS, SESSION_ROWS,
    TRACE_KEYS, TRACE_SEGMENTS,
};

use super::*;

/// Why a segment leaves the catalog.
pub(super) enum Removal<'a> {
    /// Past its tier's age.
    Expire,
    /// Rewritten without an erased session's rows (its content went before, in
    /// `Engine::erase_session`).
    Erase { session: &'a str },
}

/// The trace, session and conversation runs of a sealed segment, read from its key columns.
pub(super) fn read_runs(meta: &Arc<SegmentMeta>, path: &Path) -> Result<SegmentMeta> {
    crate::segment::read_runs(meta, path)
}

impl Engine {
    /// Removes a segment from the catalog and its index entries in one transaction (writing
    /// `keep` as new segments first), records why in the chain, then deletes its file.
    pub(super) fn delete_segment(
        &self,
        meta: &Arc<SegmentMeta>,
        keep: Vec<RecordBatch>,
        removal: Removal<'_>,
    ) -> Result<Vec<u64>> {
        let shared = &self.shared;
        let path = shared.dir.join(&meta.path);
        let old = read_runs(meta, &path)?;
        let mut new_metas = Vec::new();
        let first_id = *shared.next_segment_id.lock();
        if !keep.is_empty() {
            let options = SegmentWriteOptions {
                row_group_rows: shared.options.row_group_rows,
                zstd_level: shared.options.zstd_level,
            };
            for (offset, ((tier, day), sorted)) in sorted_parts(&keep)?.into_iter().enumerate() {
                new_metas.push(agent_tables::write_segment_with_sidecars(
                    shared,
                    first_id + offset as u64,
                    &tier,
                    &day,
                    &sorted,
                    &[],
                    options,
                )?);
            }
        }
        let mut digests = Vec::with_capacity(new_metas.len());
        for new in &new_metas {
            digests.push(crate::chain::file_digest(&shared.dir.join(&new.path))?);
        }
        let txn = shared
            .db
            .begin_write()
            .map_err(store_error("begin expiry"))?;
        let cleanup = |new_metas: &[SegmentMeta]| {
            for new in new_metas {
                let _ = fs::remove_file(shared.dir.join(&new.path));
                agent_tables::remove_sidecars(&shared.dir, new);
            }
        };
        let held = match &removal {
            Removal::Expire => crate::holds::refuse_expiry_if_held(&txn, meta),
            Removal::Erase { session, .. } => crate::holds::refuse_if_held(
                &txn,
                &crate::holds::HoldTarget::Session((*session).to_owned()),
            ),
        };
        if let Err(error) = held {
            cleanup(&new_metas);
            return Err(error);
        }
        let mut new_segments = new_metas.iter().zip(digests);
        match &removal {
            Removal::Expire => {
                crate::chain::append_expired(&txn, meta)?;
            }
            Removal::Erase { session } => {
                // One entry: the old segment replaced by its rewrite without the session.
                let first = new_segments
                    .next()
                    .map(|(new, digest)| crate::chain::ChainSegment::of(new, digest));
                crate::chain::append(
                    &txn,
                    crate::chain::EntryKind::Erased,
                    first,
                    Some(meta.id),
                    session,
                )?;
            }
        }
        for (new, digest) in new_segments {
            let segment = crate::chain::ChainSegment::of(new, digest);
            let why = match &removal {
                Removal::Expire => {
                    "moved from an expired segment: its trace was promoted to this tier"
                }
                Removal::Erase { .. } => "rows of a rewritten segment, after an erasure",
            };
            crate::chain::append(
                &txn,
                crate::chain::EntryKind::Sealed,
                Some(segment),
                None,
                why,
            )?;
        }
        {
            let late = shared.state.read().late.get(&meta.id).cloned();
            unindex_segment(&txn, &old, late.as_deref())?;
            for new in &new_metas {
                // A rewrite does not complete split traces (a seal does): they are dirty.
                agent_tables::mark_split_traces(&txn, new)?;
                add_to_catalog(&txn, new)?;
            }
            let trace_index = txn
                .open_multimap_table(TRACE_SEGMENTS)
                .map_err(store_error("open trace index"))?;
            // Keys of traces with no rows left anywhere are dropped (unless in the memtable).
            let in_memtable = shared.memtable_keys.read();
            let mut keys_table = txn
                .open_table(TRACE_KEYS)
                .map_err(store_error("open trace keys"))?;
            let mut gone = Vec::new();
            for (trace, _, _) in &old.trace_runs {
                let left = trace_index
                    .get(trace.as_slice())
                    .map_err(store_error("read trace index"))?
                    .next()
                    .is_some();
                if !left && !in_memtable.contains_key(trace) {
                    keys_table
                        .remove(trace.as_slice())
                        .map_err(store_error("remove trace keys"))?;
                    gone.push(*trace);
                }
            }
            agent_tables::disown(
                &txn,
                meta.id,
                old.trace_runs.iter().map(|(trace, _, _)| *trace),
                &gone,
            )?;
            // Content references of traces with no span left go with them.
            if matches!(removal, Removal::Expire) {
                crate::content::remove_refs_of_traces(&txn, &gone)?;
            }
            let mut meta_table = txn.open_table(META).map_err(store_error("open meta"))?;
            meta_table
                .insert(META_NEXT_SEGMENT_ID, first_id + new_metas.len() as u64)
                .map_err(store_error("write next segment id"))?;
        }
        // The commit and the change of the segment list under the state lock: a scan takes
        // the list and begins its index reads under it, and sees both before or both after.
        let mut state = shared.state.write();
        let committed = txn.commit();
        // Taken either way: a failed commit may still have landed (a failed fsync), and its
        // files then belong to the catalog.
        *shared.next_segment_id.lock() = first_id + new_metas.len() as u64;
        committed.map_err(store_error("commit expiry"))?;
        let new_ids: Vec<u64> = new_metas.iter().map(|new| new.id).collect();
        {
            state.segments.retain(|segment| segment.id != meta.id);
            state.late.remove(&meta.id);
            for mut new in new_metas {
                new.trace_runs = Vec::new();
                new.session_runs = Vec::new();
                new.conversation_runs = Vec::new();
                state.segments.push(Arc::new(new));
            }
        }
        drop(state);
        // Deleted once no running query holds the segment (`reaper.rs`).
        shared
            .reaper
            .retire(meta, agent_tables::segment_files(&shared.dir, meta));
        Ok(new_ids)
    }
}

/// Removes, in `txn`, a segment's catalog entry, its trace, session and conversation runs
/// (`old`: the segment with the runs of its file, from [`read_runs`]), the runs filed under
/// the keys of its late-keyed traces (`late`), and its late-keys entries
/// ([`unindex_segments`] of one).
pub(super) fn unindex_segment(
    txn: &redb::WriteTransaction,
    old: &SegmentMeta,
    late: Option<&crate::scan::LateKeys>,
) -> Result<()> {
    unindex_segments(txn, &[(old, late)])
}

/// Removes `segments` (each with the late keys its runs were filed under) from the catalog,
/// the trace, session and conversation indexes and the late keys.
///
/// The runs to remove are gathered per key first: a key all of whose runs go (a session
/// whose every run lies in the segments a compaction replaces) is removed whole, in one
/// operation instead of one per run; a key that keeps other runs loses exactly these.
pub(super) fn unindex_segments(
    txn: &redb::WriteTransaction,
    segments: &[(&SegmentMeta, Option<&crate::scan::LateKeys>)],
) -> Result<()> {
    let mut catalog = txn
        .open_table(SEGMENTS)
        .map_err(store_error("open catalog"))?;
    let mut late_keys = txn
        .open_multimap_table(LATE_KEYS)
        .map_err(store_error("open late keys"))?;
    let mut traces: HashMap<&[u8], HashSet<RowRun>> = HashMap::new();
    let mut sessions: HashMap<&str, HashSet<RowRun>> = HashMap::new();
    let mut conversations: HashMap<&str, HashSet<RowRun>> = HashMap::new();
    for (old, late) in segments {
        let id = old.id;
        catalog
            .remove(id)
            .map_err(store_error("remove catalog entry"))?;
        late_keys
            .remove_all(id)
            .map_err(store_error("remove late keys"))?;
        for (trace, first, count) in &old.trace_runs {
            let run = (id, *first, *count);
            traces.entry(trace.as_slice()).or_default().insert(run);
            // Late-keyed runs were added to the session and conversation indexes under the
            // trace's keys; remove those too.
            if let Some(keys) = late.and_then(|late| late.get(trace)) {
                for session in [&keys.session_id, &keys.conversation_id]
                    .into_iter()
                    .flatten()
                {
                    sessions.entry(&**session).or_default().insert(run);
                }
                if let Some(conversation) = &keys.conversation_id {
                    conversations
                        .entry(&**conversation)
                        .or_default()
                        .insert(run);
                }
            }
        }
        for (session, first, count) in &old.session_runs {
            sessions
                .entry(session.as_str())
                .or_default()
                .insert((id, *first, *count));
        }
        for (conversation, first, count) in &old.conversation_runs {
            conversations
                .entry(conversation.as_str())
                .or_default()
                .insert((id, *first, *count));
        }
    }
    remove_runs(
        &mut txn
            .open_multimap_table(TRACE_SEGMENTS)
            .map_err(store_error("open trace index"))?,
        traces,
        "trace index",
    )?;
    remove_runs(
        &mut txn
            .open_multimap_table(SESSION_ROWS)
            .map_err(store_error("open session index"))?,
        sessions,
        "session index",
    )?;
    remove_runs(
        &mut txn
            .open_multimap_table(CONVERSATION_ROWS)
            .map_err(store_error("open conversation index"))?,
        conversations,
        "conversation index",
    )
}

/// Removes `runs` (per key) from `index`: the whole key when those are all its runs.
fn remove_runs<'k, K>(
    index: &mut redb::MultimapTable<'_, K, RowRun>,
    runs: HashMap<K::SelfType<'k>, HashSet<RowRun>>,
    what: &'static str,
) -> Result<()>
where
    K: redb::Key + 'static,
    K::SelfType<'k>: std::borrow::Borrow<K::SelfType<'k>> + Copy,
{
    for (key, runs) in runs {
        let mut all_go = true;
        for present in index.get(key).map_err(store_error(what))? {
            if !runs.contains(&present.map_err(store_error(what))?.value()) {
                all_go = false;
                break;
            }
        }
        if all_go {
            index.remove_all(key).map_err(store_error(what))?;
        } else {
            for run in runs {
                index.remove(key, run).map_err(store_error(what))?;
            }
        }
    }
    Ok(())
}
