//! The engine's side of the stored agent tables (see `agent/stored.rs`): writing a segment
//! with its sidecars, completing split traces at seal, keeping the owner and split sets,
//! rebuilding sidecars at open, and planning a read that takes each trace from one place.
//!
//! A trace is *split* when its spans lie in more than one segment. Each split trace is, at
//! any time, either
//! - *owned*: `agent_owners` names the segment whose sidecars hold its rows derived from all
//!   its spans (the seal that found it split read its earlier spans and derived it whole); its
//!   rows in other sidecars are partial, listed per segment in `agent_partial`, and skipped; or
//! - *dirty*: listed in `split_traces`, read by deriving from its spans.
//!
//! Invariants:
//! - [`write_segment_with_sidecars`] is the only way a segment file is written: no segment
//!   exists without its sidecars.
//! - A trace neither owned nor dirty, and not in the memtable, has all its spans in one
//!   segment. The seal makes every trace it finds split owned (it holds the seal lock, so no
//!   expiry or erasure changes the spans it read); a rewrite or removal of a segment makes every
//!   trace of that segment with an owner dirty, and marks dirty every trace its new segments
//!   find elsewhere ([`mark_split_traces`]). Both sets lose a trace only when it has no span left, or by a purge.
//! - [`Engine::plan_agent_read`] takes both sets and the memtable's traces under the state
//!   lock, with the segment list of that moment: a trace is then read from exactly one
//!   sidecar, or derived from its spans, never both.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use redb::{ReadableMultimapTable, ReadableTable, WriteTransaction};
use tracing::{info, warn};

use super::{Engine, MAX_AGENT_LOOKUPS, Shared, store_error};
use crate::agent::{
    AgentTable, RowPredicate, SIDECAR_VERSION, SidecarFile, Strings, read_sidecar, sidecar_path,
    write_sidecars,
};
use crate::error::{Error, Result};
use crate::ids::TraceId;
use crate::scan::{ScanPlan, ScanRequest, SegmentRead};
use crate::segment::{SegmentMeta, SegmentWriteOptions, write_segment};
use crate::tables::{
    AGENT_OWNERS, AGENT_PARTIAL, LATE_KEYS, META, META_AGENT_TABLES_VERSION, SEGMENTS,
    SPLIT_TRACES, TRACE_SEGMENTS,
};
use crate::trace_keys::{RawTraceId, raw_trace_id, traces_in_batch};

/// Writes segment `id` and its sidecars; on error nothing is left behind (best effort).
/// `extra`: more spans of the traces this segment will own (their spans in other segments,
/// and in the other segments of the same seal), derived together with the segment's rows.
pub(super) fn write_segment_with_sidecars(
    shared: &Shared,
    id: u64,
    tier: &str,
    day: &str,
    sorted: &RecordBatch,
    extra: &[RecordBatch],
    options: SegmentWriteOptions,
) -> Result<SegmentMeta> {
    let mut meta = write_segment(&shared.dir, id, tier, day, sorted, options)?;
    let mut inputs = Vec::with_capacity(1 + extra.len());
    inputs.push(sorted.clone());
    inputs.extend(extra.iter().cloned());
    match write_sidecars(&shared.dir, id, &meta.path, &inputs, options.zstd_level)
        .and_then(|checks| fsync_parent(&shared.dir.join(&meta.path)).map(|()| checks))
    {
        Ok(checks) => meta.sidecar_integrity = Some(checks),
        Err(error) => {
            let _ = fs::remove_file(shared.dir.join(&meta.path));
            return Err(error);
        }
    }
    Ok(meta)
}

fn fsync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) => crate::segment::fsync_dir(dir),
        None => Ok(()),
    }
}

/// Deletes a segment's sidecars (best effort: leftovers are orphans removed at open).
pub(super) fn remove_sidecars(dir: &Path, meta: &SegmentMeta) {
    for table in AgentTable::ALL {
        let _ = fs::remove_file(dir.join(sidecar_path(&meta.path, table)));
    }
}

/// The files of a segment: its span file and its sidecars.
pub(super) fn segment_files(dir: &Path, meta: &SegmentMeta) -> Vec<PathBuf> {
    let mut files = vec![dir.join(&meta.path)];
    files.extend(crate::agent::sidecar_paths(&meta.path).map(|path| dir.join(path)));
    files
}

/// Records, in `txn`, every trace of `meta` (a rewrite's new segment, before its index entries
/// are added) that already has spans in another segment: dirty, since a rewrite derives only
/// its own rows.
pub(super) fn mark_split_traces(txn: &WriteTransaction, meta: &SegmentMeta) -> Result<()> {
    let trace_index = txn
        .open_multimap_table(TRACE_SEGMENTS)
        .map_err(store_error("open trace index"))?;
    let mut split = txn
        .open_table(SPLIT_TRACES)
        .map_err(store_error("open split traces"))?;
    let mut seen = HashSet::new();
    for (trace, _, _) in &meta.trace_runs {
        if !seen.insert(*trace) {
            continue;
        }
        let mut elsewhere = false;
        for run in trace_index
            .get(trace.as_slice())
            .map_err(store_error("read trace index"))?
        {
            let (segment, _, _) = run.map_err(store_error("read trace index"))?.value();
            if segment != meta.id {
                elsewhere = true;
                break;
            }
        }
        if elsewhere {
            split
                .insert(trace.as_slice(), ())
                .map_err(store_error("write split traces"))?;
        }
    }
    Ok(())
}

/// What [`complete_split_traces`] found.
pub(super) struct SplitTraces {
    /// Per new segment, the other spans of the split traces it owns.
    pub(super) extra: Vec<Vec<RecordBatch>>,
    /// (trace, owner segment id) of every split trace.
    pub(super) owners: Vec<(RawTraceId, u64)>,
    /// (segment id, trace): the segments whose rows of a split trace are now partial.
    pub(super) partial: Vec<(u64, RawTraceId)>,
}

/// The traces of a seal that are split (spans in existing segments, or in more than one of the
/// seal's new segments): for each new segment (`parts`, in id order), the extra spans it needs
/// to derive the split traces it will own, and the owners to record. Runs under the seal lock.
pub(super) fn complete_split_traces(
    shared: &Shared,
    parts: &[RecordBatch],
    first_id: u64,
) -> Result<SplitTraces> {
    let mut extra: Vec<Vec<RecordBatch>> = parts.iter().map(|_| Vec::new()).collect();
    let per_part: Vec<HashSet<RawTraceId>> = parts
        .iter()
        .map(|part| traces_in_batch(part).into_iter().collect())
        .collect();
    // Owner: the first new segment holding the trace.
    let mut owner_of: HashMap<RawTraceId, usize> = HashMap::new();
    let mut in_parts: HashMap<RawTraceId, usize> = HashMap::new();
    for (index, traces) in per_part.iter().enumerate() {
        for trace in traces {
            owner_of.entry(*trace).or_insert(index);
            *in_parts.entry(*trace).or_default() += 1;
        }
    }
    // Row runs of these traces in existing segments.
    let mut runs: BTreeMap<u64, Vec<Range<u64>>> = BTreeMap::new();
    let mut sealed_before: HashSet<RawTraceId> = HashSet::new();
    let mut holders: HashMap<RawTraceId, HashSet<u64>> = HashMap::new();
    {
        let txn = shared.db.begin_read().map_err(store_error("begin read"))?;
        let index = match txn.open_multimap_table(TRACE_SEGMENTS) {
            Ok(index) => Some(index),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(error) => return Err(Error::store("open trace index", error)),
        };
        if let Some(index) = index {
            for trace in owner_of.keys() {
                for run in index
                    .get(trace.as_slice())
                    .map_err(store_error("read trace index"))?
                {
                    let (segment, first, count) =
                        run.map_err(store_error("read trace index"))?.value();
                    runs.entry(segment).or_default().push(first..first + count);
                    sealed_before.insert(*trace);
                    holders.entry(*trace).or_default().insert(segment);
                }
            }
        }
    }
    let split: HashSet<RawTraceId> = owner_of
        .keys()
        .filter(|trace| sealed_before.contains(*trace) || in_parts[*trace] > 1)
        .copied()
        .collect();
    if split.is_empty() {
        return Ok(SplitTraces {
            extra,
            owners: Vec::new(),
            partial: Vec::new(),
        });
    }
    // Their spans sealed before, resolved (late keys applied), as a scan would return them.
    if !runs.is_empty() {
        let (segments, late) = {
            let state = shared.state.read();
            (state.segments.clone(), state.late.clone())
        };
        let request = ScanRequest {
            trace_ids: Some(sealed_before.iter().copied().map(TraceId).collect()),
            projection: Some(AgentTable::Decisions.input_columns()),
            family: crate::RowFamily::All,
            ..ScanRequest::default()
        };
        let total = segments.len();
        let reads = segments
            .into_iter()
            .filter_map(|meta| {
                let ranges = runs.get(&meta.id)?.clone();
                let path = shared.dir.join(&meta.path);
                let read = SegmentRead {
                    ranges: Some(super::merge_ranges(ranges)),
                    late: late.get(&meta.id).cloned(),
                };
                Some((meta, path, read))
            })
            .collect();
        let plan = ScanPlan::new(
            &request,
            Vec::new(),
            Arc::clone(&shared.memtable_keys),
            reads,
            total,
            Arc::new(shared.options.retention.clone()),
        )?;
        for batch in plan.collect()? {
            for (index, part) in extra.iter_mut().enumerate() {
                if let Some(rows) = rows_of(&batch, |trace| owner_of.get(trace) == Some(&index))? {
                    part.push(rows);
                }
            }
        }
    }
    // Their rows in the seal's other new segments.
    for (from, part) in parts.iter().enumerate() {
        for (index, target) in extra.iter_mut().enumerate() {
            if index == from {
                continue;
            }
            let owned_here =
                |trace: &RawTraceId| split.contains(trace) && owner_of.get(trace) == Some(&index);
            if let Some(rows) = rows_of(part, owned_here)? {
                target.push(rows);
            }
        }
    }
    let owners = split
        .iter()
        .map(|trace| (*trace, first_id + owner_of[trace] as u64))
        .collect();
    // Every other segment holding a split trace now holds partial rows of it.
    let mut partial = Vec::new();
    for trace in &split {
        let owner = owner_of[trace];
        for segment in holders.get(trace).into_iter().flatten() {
            partial.push((*segment, *trace));
        }
        for (index, traces) in per_part.iter().enumerate() {
            if index != owner && traces.contains(trace) {
                partial.push((first_id + index as u64, *trace));
            }
        }
    }
    Ok(SplitTraces {
        extra,
        owners,
        partial,
    })
}

/// The rows of `batch` whose trace `keep` accepts, or `None` when there are none.
pub(super) fn rows_of(
    batch: &RecordBatch,
    keep: impl Fn(&RawTraceId) -> bool,
) -> Result<Option<RecordBatch>> {
    use arrow::array::{Array, AsArray, BooleanArray};
    let Some(column) = batch.column_by_name(crate::schema::columns::TRACE_ID) else {
        return Ok(None);
    };
    let traces = column.as_string::<i32>();
    let mask: BooleanArray = (0..batch.num_rows())
        .map(|row| {
            Some(
                traces.is_valid(row)
                    && raw_trace_id(traces.value(row)).is_some_and(|trace| keep(&trace)),
            )
        })
        .collect();
    if mask.true_count() == 0 {
        return Ok(None);
    }
    Ok(Some(arrow::compute::filter_record_batch(batch, &mask)?))
}

/// Records, in the seal's transaction, the owners of the split traces it derived whole (they
/// are no longer dirty) and the segments holding partial rows of them.
pub(super) fn record_owners(txn: &WriteTransaction, split: &SplitTraces) -> Result<()> {
    let owners = &split.owners;
    if owners.is_empty() {
        return Ok(());
    }
    {
        let mut partial = txn
            .open_multimap_table(AGENT_PARTIAL)
            .map_err(store_error("open agent partial rows"))?;
        for (segment, trace) in &split.partial {
            partial
                .insert(*segment, trace.as_slice())
                .map_err(store_error("write agent partial rows"))?;
        }
    }
    let mut table = txn
        .open_table(AGENT_OWNERS)
        .map_err(store_error("open agent owners"))?;
    let mut split = txn
        .open_table(SPLIT_TRACES)
        .map_err(store_error("open split traces"))?;
    for (trace, segment) in owners {
        table
            .insert(trace.as_slice(), *segment)
            .map_err(store_error("write agent owners"))?;
        split
            .remove(trace.as_slice())
            .map_err(store_error("write split traces"))?;
    }
    Ok(())
}

/// A segment is removed or rewritten: every trace of it with an owner is dirty from now on
/// (its owner's rows may count spans that are gone, or the owner is this segment); traces with
/// no span left lose both entries.
pub(super) fn disown(
    txn: &WriteTransaction,
    segment: u64,
    traces: impl IntoIterator<Item = RawTraceId>,
    gone: &[RawTraceId],
) -> Result<()> {
    txn.open_multimap_table(AGENT_PARTIAL)
        .map_err(store_error("open agent partial rows"))?
        .remove_all(segment)
        .map_err(store_error("write agent partial rows"))?;
    let mut owners = txn
        .open_table(AGENT_OWNERS)
        .map_err(store_error("open agent owners"))?;
    let mut split = txn
        .open_table(SPLIT_TRACES)
        .map_err(store_error("open split traces"))?;
    for trace in traces {
        let owned = owners
            .get(trace.as_slice())
            .map_err(store_error("read agent owners"))?
            .is_some();
        if owned {
            split
                .insert(trace.as_slice(), ())
                .map_err(store_error("write split traces"))?;
        }
    }
    for trace in gone {
        owners
            .remove(trace.as_slice())
            .map_err(store_error("write agent owners"))?;
        split
            .remove(trace.as_slice())
            .map_err(store_error("write split traces"))?;
    }
    Ok(())
}

/// At open: fills `split_traces` for a store written before agent tables were stored, and
/// writes the sidecars that are missing or of another [`SIDECAR_VERSION`].
pub(super) fn prepare_sidecars(shared: &Shared, segments: &[Arc<SegmentMeta>]) -> Result<usize> {
    let txn = shared
        .db
        .begin_write()
        .map_err(store_error("begin agent tables"))?;
    let version = txn
        .open_table(META)
        .map_err(store_error("open meta"))?
        .get(META_AGENT_TABLES_VERSION)
        .map_err(store_error("read agent tables version"))?
        .map(|value| value.value());
    if version.is_none() {
        // Every trace the index finds in more than one segment, and every late-keyed trace.
        let index = txn
            .open_multimap_table(TRACE_SEGMENTS)
            .map_err(store_error("open trace index"))?;
        let mut split = txn
            .open_table(SPLIT_TRACES)
            .map_err(store_error("open split traces"))?;
        for entry in index.iter().map_err(store_error("read trace index"))? {
            let (trace, runs) = entry.map_err(store_error("read trace index"))?;
            let mut segments = HashSet::new();
            for run in runs {
                segments.insert(run.map_err(store_error("read trace index"))?.value().0);
            }
            if segments.len() > 1 {
                split
                    .insert(trace.value(), ())
                    .map_err(store_error("write split traces"))?;
            }
        }
        let late = txn
            .open_multimap_table(LATE_KEYS)
            .map_err(store_error("open late keys"))?;
        for entry in late.iter().map_err(store_error("read late keys"))? {
            let (_, traces) = entry.map_err(store_error("read late keys"))?;
            for trace in traces {
                let trace = trace.map_err(store_error("read late keys"))?;
                split
                    .insert(trace.value(), ())
                    .map_err(store_error("write split traces"))?;
            }
        }
    }
    let mut rebuilt = 0;
    let mut checked = Vec::new();
    for meta in segments {
        let complete =
            crate::agent::sidecar_paths(&meta.path).all(|path| shared.dir.join(path).is_file());
        if complete && version == Some(SIDECAR_VERSION) {
            if checks_hold(&shared.dir, meta) {
                continue;
            }
            // Files rewritten by a rebuild whose catalog entry never committed (a crash),
            // or damaged: derived data, so written again.
            warn!(
                segment = meta.id,
                "agent-table files do not match their catalog checks; rebuilding them"
            );
        }
        let path = shared.dir.join(&meta.path);
        let batch = crate::segment::read_whole(meta, &path)?;
        let checks = write_sidecars(
            &shared.dir,
            meta.id,
            &meta.path,
            std::slice::from_ref(&batch),
            shared.options.zstd_level,
        )?;
        fsync_parent(&path)?;
        let mut entry = SegmentMeta::clone(meta);
        entry.sidecar_integrity = Some(checks);
        txn.open_table(SEGMENTS)
            .map_err(store_error("open catalog"))?
            .insert(meta.id, entry.encode().as_slice())
            .map_err(store_error("write catalog"))?;
        checked.push(Arc::new(entry));
        rebuilt += 1;
        // Traces this segment owned were derived from all their spans; rebuilt from its own
        // rows they are partial: dirty from now on.
        let owners = txn
            .open_table(AGENT_OWNERS)
            .map_err(store_error("open agent owners"))?;
        let mut owned = Vec::new();
        for entry in owners.iter().map_err(store_error("read agent owners"))? {
            let (trace, segment) = entry.map_err(store_error("read agent owners"))?;
            if segment.value() == meta.id {
                owned.push(trace.value().to_vec());
            }
        }
        drop(owners);
        let mut split = txn
            .open_table(SPLIT_TRACES)
            .map_err(store_error("open split traces"))?;
        for trace in owned {
            split
                .insert(trace.as_slice(), ())
                .map_err(store_error("write split traces"))?;
        }
    }
    txn.open_table(META)
        .map_err(store_error("open meta"))?
        .insert(META_AGENT_TABLES_VERSION, SIDECAR_VERSION)
        .map_err(store_error("write agent tables version"))?;
    txn.commit().map_err(store_error("commit agent tables"))?;
    if !checked.is_empty() {
        // The catalog entries now keep the new files' checks; so does the segment list.
        let mut state = shared.state.write();
        for entry in checked {
            if let Some(slot) = state.segments.iter_mut().find(|meta| meta.id == entry.id) {
                *slot = entry;
            }
        }
    }
    if rebuilt > 0 {
        info!(segments = rebuilt, "built stored agent tables");
    }
    Ok(rebuilt)
}

/// Whether every agent-table file of `meta` passes the footer check its catalog entry keeps
/// (read from the file, never from the footer cache). Files written before checks were kept
/// have none to pass.
fn checks_hold(dir: &Path, meta: &SegmentMeta) -> bool {
    let Some(checks) = &meta.sidecar_integrity else {
        return true;
    };
    checks.len() == AgentTable::ALL.len()
        && AgentTable::ALL
            .into_iter()
            .zip(checks)
            .all(|(table, check)| {
                crate::checked_file::CheckedFile::open(
                    &dir.join(sidecar_path(&meta.path, table)),
                    Some(*check),
                )
                .is_ok()
            })
}

/// One sidecar to read.
#[derive(Debug, Clone)]
pub struct SidecarRead {
    /// The segment it belongs to.
    pub segment_id: u64,
    /// The file.
    pub path: PathBuf,
    /// Lowercase hex ids of the traces whose rows here are not used (derived from spans, or
    /// partial: owned by a later segment).
    pub skip: Arc<HashSet<String>>,
    /// The segment, held so that its files stay until this read is done (`reaper.rs`).
    pub segment: Arc<SegmentMeta>,
}

/// A read of one stored agent table: sidecar rows of the traces each sidecar answers for,
/// plus a span scan of every other trace, to be derived.
#[derive(Debug)]
pub struct AgentRead {
    /// The table.
    pub table: AgentTable,
    /// Sidecars to read, each with the traces it skips.
    pub sidecars: Vec<SidecarRead>,
    /// Lowercase hex ids of the traces derived from spans (dirty, or in the memtable).
    pub derived: Arc<HashSet<String>>,
    /// Every span of those traces (the derivation's input columns).
    pub derive: ScanPlan,
}

impl SidecarRead {
    /// Reads this sidecar of `table`: its rows of the traces it answers for, with the columns
    /// `projection` names (indices into the stored schema, ascending; `None` for every column),
    /// and only the rows `predicate` keeps when there is one; string columns as `strings`
    /// says (a predicate sees them so too).
    pub fn read(
        &self,
        table: AgentTable,
        projection: Option<&[usize]>,
        predicate: Option<&RowPredicate>,
        strings: Strings,
    ) -> Result<Vec<RecordBatch>> {
        let integrity = self
            .segment
            .sidecar_integrity
            .as_ref()
            .and_then(|checks| checks.get(table.position()).copied());
        let file = SidecarFile {
            path: &self.path,
            segment_id: self.segment_id,
            integrity,
            table,
        };
        read_sidecar(&file, projection, &self.skip, predicate, strings)
    }
}

impl Engine {
    /// Plans a whole-store read of `table` from the stored agent tables. `start_time` bounds
    /// (on `llm_calls`, `tool_calls` and `agent_runs`) skip segments whose spans all start
    /// outside them; the caller applies the bound to the rows.
    pub fn plan_agent_read(
        &self,
        table: AgentTable,
        start_time: (std::ops::Bound<i64>, std::ops::Bound<i64>),
    ) -> Result<AgentRead> {
        let shared = &self.shared;
        let (segments, derived, ids, skips) = {
            let state = shared.state.read();
            let txn = shared.db.begin_read().map_err(store_error("begin read"))?;
            let mut derived: HashSet<RawTraceId> = HashSet::new();
            match txn.open_table(SPLIT_TRACES) {
                Ok(split) => {
                    for entry in split.iter().map_err(store_error("read split traces"))? {
                        let (trace, _) = entry.map_err(store_error("read split traces"))?;
                        if let Ok(trace) = RawTraceId::try_from(trace.value()) {
                            derived.insert(trace);
                        }
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(error) => return Err(Error::store("open split traces", error)),
            }
            let frozen = state.frozen.iter().flat_map(|frozen| frozen.chunks.iter());
            for chunk in state.active.chunks.iter().chain(frozen) {
                derived.extend(traces_in_batch(chunk));
            }
            // Per segment: the derived traces it holds rows of, and its partial rows.
            let mut skips: HashMap<u64, HashSet<String>> = HashMap::new();
            if let Ok(index) = txn.open_multimap_table(TRACE_SEGMENTS) {
                for trace in &derived {
                    for run in index
                        .get(trace.as_slice())
                        .map_err(store_error("read trace index"))?
                    {
                        let (segment, _, _) = run.map_err(store_error("read trace index"))?.value();
                        skips.entry(segment).or_default().insert(hex::encode(trace));
                    }
                }
            }
            match txn.open_multimap_table(AGENT_PARTIAL) {
                Ok(partial) => {
                    for meta in &state.segments {
                        for trace in partial
                            .get(meta.id)
                            .map_err(store_error("read agent partial rows"))?
                        {
                            let trace = trace.map_err(store_error("read agent partial rows"))?;
                            skips
                                .entry(meta.id)
                                .or_default()
                                .insert(hex::encode(trace.value()));
                        }
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(error) => return Err(Error::store("open agent partial rows", error)),
            }
            let mut ids: Vec<TraceId> = derived.iter().copied().map(TraceId).collect();
            ids.sort_unstable();
            let derived: HashSet<String> = derived.iter().map(hex::encode).collect();
            (state.segments.clone(), derived, ids, skips)
        };
        let timed = matches!(
            table,
            AgentTable::LlmCalls | AgentTable::ToolCalls | AgentTable::AgentRuns
        );
        let probe = ScanRequest {
            start_time,
            family: crate::RowFamily::All,
            ..ScanRequest::default()
        };
        let nothing = Arc::new(HashSet::new());
        let mut skips: HashMap<u64, Arc<HashSet<String>>> = skips
            .into_iter()
            .map(|(segment, traces)| (segment, Arc::new(traces)))
            .collect();
        let sidecars = segments
            .iter()
            .filter(|meta| !timed || probe.time_overlaps(meta.min_start, meta.max_start))
            .map(|meta| SidecarRead {
                segment: Arc::clone(meta),
                segment_id: meta.id,
                path: shared.dir.join(sidecar_path(&meta.path, table)),
                skip: skips
                    .remove(&meta.id)
                    .unwrap_or_else(|| Arc::clone(&nothing)),
            })
            .collect();
        let request = ScanRequest {
            trace_ids: Some(ids),
            projection: Some(table.input_columns()),
            family: crate::RowFamily::All,
            ..ScanRequest::default()
        };
        let derive = self.plan_scan_with(&request, MAX_AGENT_LOOKUPS)?;
        Ok(AgentRead {
            table,
            sidecars,
            derived: Arc::new(derived),
            derive,
        })
    }
}
