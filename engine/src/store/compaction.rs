//! Compaction: the segments of one (tier, UTC day) are rewritten as one *run*, segments cut at
//! session boundaries that each hold a disjoint range of the day's sessions. A session's rows
//! then lie in one segment (two where a cut falls in it, more only for a session larger than a
//! segment) instead of one per seal that saw it.
//!
//! A (tier, day) is compacted when it is not one run yet, enough of it lies outside its
//! largest run ([`worth_compacting`]), and it is quiet: no row of it arrived for
//! [`Options::compaction_quiet`] (the background compactor), or at once when asked
//! ([`Engine::compact`]). One job:
//! 1. reads the trace and session runs of every input file and cuts the group's session order
//!    into outputs of about [`output_rows`] rows;
//! 2. reads each output's row ranges from every input (trace keys resolved, late keys too),
//!    sorts them and writes them as a segment with its agent-table files, with no lock held:
//!    ingest, seals and queries go on;
//! 3. swaps, under `seal_lock` and in one redb transaction: inputs out of the catalog and the
//!    indexes, outputs in, `rewritten` chain entries (each output added, then each input
//!    removed), split traces settled.
//!
//! Invariants:
//! - Every row of the inputs is in exactly one output (checked: the rows read are the rows
//!   planned), with the trace keys it had when the job started.
//! - The swap happens only if every input is still live and no input's late keys changed
//!   since the start. Writes that add late keys do so in a redb write transaction, which the
//!   swap's transaction is serialized with, and the check reads them there. Otherwise the
//!   outputs are deleted and nothing changed (the next pass tries again).
//! - Output ids are reserved under `seal_lock`, where seals and rewrites take theirs.
//! - A query sees the inputs or the outputs, never both: the commit and the change of the
//!   state's segment list happen under the state lock (readers take the list and begin their
//!   index reads under it), and input files go when their last reader is done.
//! - Segments whose rows arrived on different UTC days are not merged (an output's age counts
//!   from its newest arrival).
//! - After the swap, a trace whose spans lie in one segment and none in the memtable is
//!   neither split nor owned: that segment's agent-table files were derived from all of them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow::array::RecordBatch;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use redb::ReadableMultimapTable;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::scan::{LateKeys, ScanPlan, ScanRequest, SegmentRead};
use crate::segment::{SegmentMeta, SegmentWriteOptions, sorted_parts};
use crate::tables::{
    AGENT_OWNERS, LATE_KEYS, META, META_NEXT_SEGMENT_ID, SPLIT_TRACES, TRACE_KEYS, TRACE_SEGMENTS,
};
use crate::trace_keys::RawTraceId;

use super::removal::{read_runs, unindex_segments};
use super::writer::read_trace_keys;
use super::*;

/// The fewest rows an output is cut at.
const MIN_OUTPUT_ROWS: u64 = 4096;
/// A group is compacted again once this many segments lie outside its largest run...
const MAX_SEGMENTS_OUTSIDE_RUN: usize = 8;
/// ...or rows outside it reach this fraction (1/N) of the run's.
const RUN_FRACTION: u64 = 8;
/// How often the background compactor looks for quiet groups.
const COMPACTOR_TICK: Duration = Duration::from_secs(30);

/// What one compaction of a (tier, day) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactedGroup {
    /// Retention tier of the inputs.
    pub tier: String,
    /// UTC day of the inputs.
    pub day: String,
    /// Ids of the segments replaced.
    pub inputs: Vec<u64>,
    /// Ids of the segments written (one run).
    pub outputs: Vec<u64>,
    /// Rows moved (all of the inputs').
    pub rows: u64,
    /// File bytes of the inputs.
    pub bytes_before: u64,
    /// File bytes of the outputs.
    pub bytes_after: u64,
}

/// What a compaction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactionReport {
    /// The groups compacted.
    pub groups: Vec<CompactedGroup>,
    /// Groups whose inputs changed while they were compacted (a seal gave their traces keys,
    /// an expiry or erasure removed one): nothing of them changed, the next pass tries again.
    pub abandoned: usize,
    /// Groups that failed (an unreadable input, say), with the error: nothing of them
    /// changed.
    pub failed: Vec<String>,
}

impl Engine {
    /// Compacts every (tier, day) that is not one run yet and has enough outside its largest
    /// run, however recent its rows (the background compactor waits until a group is quiet).
    /// Passes repeat while one compacts something (rows of a promoted trace move to its
    /// tier's group), at most a few times. A group that fails is in the report's `failed`;
    /// the others are compacted all the same.
    pub fn compact(&self) -> Result<CompactionReport> {
        const MAX_PASSES: usize = 4;
        let mut report = CompactionReport::default();
        // A group that failed is not tried again by the next pass.
        let mut failed = HashSet::new();
        for _ in 0..MAX_PASSES {
            let pass = compact_groups(&self.shared, None, &mut failed);
            let done = pass.groups.is_empty();
            report.groups.extend(pass.groups);
            report.abandoned += pass.abandoned;
            report.failed.extend(pass.failed);
            if done {
                break;
            }
        }
        Ok(report)
    }
}

/// The background compactor: every [`COMPACTOR_TICK`], compacts the quiet groups. A group
/// that failed is not tried again with the same segments until the engine opens again.
pub(super) fn run_compactor(shared: &Shared, quiet: Duration, wake: &Receiver<()>) {
    let mut failed: HashSet<Vec<u64>> = HashSet::new();
    loop {
        match wake.recv_timeout(COMPACTOR_TICK) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if shared.closing.load(Ordering::Acquire) {
            return;
        }
        compact_groups(shared, Some(quiet), &mut failed);
    }
}

/// Compacts the groups [`groups_to_compact`] picks, one at a time, except those whose
/// segments are in `failed`; a group that fails is logged, added to `failed` and counted, and
/// the others go on.
fn compact_groups(
    shared: &Shared,
    quiet: Option<Duration>,
    failed: &mut HashSet<Vec<u64>>,
) -> CompactionReport {
    let segments = shared.state.read().segments.clone();
    let groups = groups_to_compact(&segments, crate::chain::now_ns(), quiet);
    drop(segments);
    let mut report = CompactionReport::default();
    for group in groups {
        if shared.closing.load(Ordering::Acquire) {
            break;
        }
        let key = ids(&group);
        if failed.contains(&key) {
            continue;
        }
        match compact_group(shared, group) {
            Ok(Some(done)) => report.groups.push(done),
            Ok(None) => report.abandoned += 1,
            Err(error) => {
                warn!(
                    error = %crate::activity::cause_chain(&error),
                    segments = ?key,
                    "compaction failed; its segments are unchanged, and it is not tried again \
                     with the same segments until the store opens again"
                );
                report.failed.push(format!("segments {key:?}: {error}"));
                failed.insert(key);
            }
        }
    }
    report
}

/// The (tier, day) groups worth compacting whose newest row arrived at least `quiet` before
/// `now_ns` (any, when `quiet` is `None`), each with its segments in id order.
pub(super) fn groups_to_compact(
    segments: &[Arc<SegmentMeta>],
    now_ns: i64,
    quiet: Option<Duration>,
) -> Vec<Vec<Arc<SegmentMeta>>> {
    // Segments whose rows arrived on different days are not merged: an output's age counts
    // from its newest arrival, so merging a late backfill with the day's first rows would
    // keep those rows longer than their tier's keep.
    let mut groups: BTreeMap<(&str, &str, i64), Vec<Arc<SegmentMeta>>> = BTreeMap::new();
    for meta in segments {
        let arrival_day = meta
            .age_basis(crate::retention::AgeFrom::Arrival)
            .div_euclid(86_400_000_000_000);
        groups
            .entry((meta.tier.as_str(), meta.day.as_str(), arrival_day))
            .or_default()
            .push(Arc::clone(meta));
    }
    groups
        .into_values()
        .filter(|group| worth_compacting(group))
        .filter(|group| {
            let Some(quiet) = quiet else {
                return true;
            };
            let newest = group
                .iter()
                .map(|meta| meta.age_basis(crate::retention::AgeFrom::Arrival))
                .max()
                .unwrap_or(i64::MAX);
            now_ns.saturating_sub(newest) >= quiet.as_nanos().min(i64::MAX as u128) as i64
        })
        .map(|mut group| {
            group.sort_by_key(|meta| meta.id);
            group
        })
        .collect()
}

/// True when a group is more than one run (a seal is a run of its own) and has, outside its
/// largest run, at least [`MAX_SEGMENTS_OUTSIDE_RUN`] segments or 1/[`RUN_FRACTION`] of the
/// run's rows: a few late rows of a compacted day do not rewrite the day.
pub(super) fn worth_compacting(group: &[Arc<SegmentMeta>]) -> bool {
    let mut runs: HashMap<u64, (u64, usize)> = HashMap::new();
    for meta in group {
        let run = runs
            .entry(meta.compaction_run.unwrap_or(meta.id))
            .or_default();
        run.0 += meta.rows;
        run.1 += 1;
    }
    if runs.len() < 2 {
        return false;
    }
    let total_rows: u64 = runs.values().map(|(rows, _)| rows).sum();
    let (largest_rows, largest_segments) = runs
        .values()
        .copied()
        .max_by_key(|(rows, _)| *rows)
        .unwrap_or_default();
    group.len() - largest_segments >= MAX_SEGMENTS_OUTSIDE_RUN
        || (total_rows - largest_rows) * RUN_FRACTION >= largest_rows
}

/// Rows read to measure how much memory a row takes once read.
const SAMPLE_ROWS: u64 = 8192;

/// Rows per output: as many as take a seal's memtable in memory once read (`arrow_per_row`,
/// measured on a sample), so that, held twice (read and sorted), an output takes what a seal
/// takes; at least [`MIN_OUTPUT_ROWS`] and at most the seal's row limit.
fn output_rows(options: &Options, arrow_per_row: u64) -> u64 {
    (options.seal_max_bytes as u64 / arrow_per_row.max(1))
        .max(MIN_OUTPUT_ROWS)
        .min(options.seal_max_rows as u64)
        .max(1)
}

/// Arrow bytes a row of the inputs takes once read: measured on the first rows of the largest
/// input. (A file's uncompressed size says little: dictionary-encoded keys, attribute maps and
/// offsets grow several times when decoded.)
fn arrow_bytes_per_row(
    shared: &Shared,
    inputs: &[Arc<SegmentMeta>],
    late: &[Option<Arc<LateKeys>>],
) -> Result<u64> {
    let Some((largest, meta)) = inputs.iter().enumerate().max_by_key(|(_, meta)| meta.rows) else {
        return Ok(1);
    };
    let first_rows = 0..meta.rows.min(SAMPLE_ROWS);
    let sample = vec![(largest, vec![first_rows])];
    let batches = read_output(shared, inputs, late, &sample)?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
    Ok((bytes / rows.max(1)).max(1) as u64)
}

/// The rows of one output: per input (index into the inputs), sorted disjoint row ranges.
type OutputPlan = Vec<(usize, Vec<Range<u64>>)>;

/// Row ranges of the inputs: (input index, rows).
type Pieces = Vec<(usize, Range<u64>)>;

/// Cuts the inputs (each with its file's runs) into outputs of about `target` rows (at most
/// 1.5 × `target`, unless one trace is larger): sessions
/// in order, rows without a session last; a session stays whole unless it alone is larger
/// than `target`, and then it is cut between traces. Every row of every input is in exactly
/// one output.
pub(super) fn plan_outputs(
    inputs: &[SegmentMeta],
    late: &[Option<Arc<LateKeys>>],
    target: u64,
) -> Vec<OutputPlan> {
    // Rows by session (`(true, "")`: rows without one), in session order. Rows of a trace
    // whose keys came late go by the session they read with.
    let mut by_session: BTreeMap<(bool, &str), Pieces> = BTreeMap::new();
    for (input, meta) in inputs.iter().enumerate() {
        let mut pieces: Vec<(Range<u64>, (bool, &str))> = Vec::new();
        let mut runs: Vec<(&str, u64, u64)> = meta
            .session_runs
            .iter()
            .map(|(session, first, count)| (session.as_str(), *first, *count))
            .collect();
        runs.sort_by_key(|(_, first, _)| *first);
        let mut next = 0;
        for (session, first, count) in runs {
            if first > next {
                pieces.push((next..first, (true, "")));
            }
            pieces.push((first..first + count, (false, session)));
            next = next.max(first + count);
        }
        if next < meta.rows {
            pieces.push((next..meta.rows, (true, "")));
        }
        let late_runs: Vec<(Range<u64>, (bool, &str))> = match late.get(input) {
            Some(Some(late)) => meta
                .trace_runs
                .iter()
                .filter_map(|(trace, first, count)| {
                    let keys = late.get(trace)?;
                    let session = keys
                        .session_id
                        .as_deref()
                        .or(keys.conversation_id.as_deref());
                    Some((
                        *first..first + count,
                        session.map_or((true, ""), |s| (false, s)),
                    ))
                })
                .collect(),
            _ => Vec::new(),
        };
        for (range, key) in carve(pieces, late_runs) {
            by_session.entry(key).or_default().push((input, range));
        }
    }
    let mut outputs: Vec<Vec<(usize, Range<u64>)>> = Vec::new();
    let mut current: Vec<(usize, Range<u64>)> = Vec::new();
    let mut current_rows = 0u64;
    let mut add = |pieces: Vec<(usize, Range<u64>)>,
                   rows: u64,
                   current: &mut Vec<(usize, Range<u64>)>,
                   current_rows: &mut u64| {
        // Cut before rows that would take it past `target`, unless it is under half of it
        // (an output holds at most 1.5 × `target`, for a piece of at most `target` rows).
        if *current_rows > 0 && *current_rows >= target / 2 && *current_rows + rows > target {
            outputs.push(std::mem::take(current));
            *current_rows = 0;
        }
        current.extend(pieces);
        *current_rows += rows;
    };
    for pieces in by_session.into_values() {
        let rows: u64 = pieces
            .iter()
            .map(|(_, range)| range.end - range.start)
            .sum();
        if rows <= target {
            add(pieces, rows, &mut current, &mut current_rows);
            continue;
        }
        // Too large for one output: its traces, in trace order, each whole.
        let mut by_trace: BTreeMap<([u8; 16], bool), Pieces> = BTreeMap::new();
        for (input, range) in pieces {
            let runs = &inputs[input].trace_runs;
            let start = runs.partition_point(|(_, first, count)| first + count <= range.start);
            let mut next = range.start;
            for (trace, first, count) in runs[start..]
                .iter()
                .take_while(|(_, first, _)| *first < range.end)
            {
                let run = (*first).max(range.start)..(first + count).min(range.end);
                if run.start > next {
                    by_trace
                        .entry(([0xff; 16], true))
                        .or_default()
                        .push((input, next..run.start));
                }
                next = run.end;
                by_trace
                    .entry((*trace, false))
                    .or_default()
                    .push((input, run));
            }
            if next < range.end {
                by_trace
                    .entry(([0xff; 16], true))
                    .or_default()
                    .push((input, next..range.end));
            }
        }
        for pieces in by_trace.into_values() {
            let rows = pieces
                .iter()
                .map(|(_, range)| range.end - range.start)
                .sum();
            add(pieces, rows, &mut current, &mut current_rows);
        }
    }
    if current_rows > 0 {
        outputs.push(current);
    }
    outputs
        .into_iter()
        .map(|pieces| {
            let mut per_input: BTreeMap<usize, Vec<Range<u64>>> = BTreeMap::new();
            for (input, range) in pieces {
                per_input.entry(input).or_default().push(range);
            }
            per_input
                .into_iter()
                .map(|(input, mut ranges)| {
                    ranges.sort_by_key(|range| range.start);
                    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
                    for range in ranges {
                        match merged.last_mut() {
                            Some(last) if last.end == range.start => last.end = range.end,
                            _ => merged.push(range),
                        }
                    }
                    (input, merged)
                })
                .collect()
        })
        .collect()
}

/// `pieces` (disjoint row ranges of one file, in order, with a key) with the rows of
/// `overrides` (disjoint, in order) taken out of them and keyed as the override says.
fn carve<K: Copy>(
    pieces: Vec<(Range<u64>, K)>,
    mut overrides: Vec<(Range<u64>, K)>,
) -> Vec<(Range<u64>, K)> {
    if overrides.is_empty() {
        return pieces;
    }
    overrides.sort_by_key(|(range, _)| range.start);
    let mut out = Vec::with_capacity(pieces.len() + 2 * overrides.len());
    let mut at = 0;
    for (range, key) in pieces {
        let mut next = range.start;
        while at < overrides.len() && overrides[at].0.end <= next {
            at += 1;
        }
        let mut scan = at;
        while scan < overrides.len() && overrides[scan].0.start < range.end {
            let (over, over_key) = &overrides[scan];
            let start = over.start.max(next);
            let end = over.end.min(range.end);
            if start > next {
                out.push((next..start, key));
            }
            if end > start {
                out.push((start..end, *over_key));
            }
            next = next.max(end);
            if over.end > range.end {
                break;
            }
            scan += 1;
        }
        at = scan;
        if next < range.end {
            out.push((next..range.end, key));
        }
    }
    out
}

/// Takes the next segment id, under `seal_lock` (where seals and rewrites take theirs).
fn reserve_segment_id(shared: &Shared) -> u64 {
    let _guard = shared.seal_lock.lock();
    let mut next = shared.next_segment_id.lock();
    let id = *next;
    *next += 1;
    id
}

/// Compacts one group (segments of one tier and day). `None` when its inputs changed
/// meanwhile and nothing was done.
fn compact_group(shared: &Shared, inputs: Vec<Arc<SegmentMeta>>) -> Result<Option<CompactedGroup>> {
    let started = std::time::Instant::now();
    let late: Vec<Option<Arc<LateKeys>>> = {
        let state = shared.state.read();
        inputs
            .iter()
            .map(|meta| state.late.get(&meta.id).cloned())
            .collect()
    };
    let runs: Vec<SegmentMeta> = inputs
        .iter()
        .map(|meta| read_runs(meta, &shared.dir.join(&meta.path)))
        .collect::<Result<_>>()?;
    let target = output_rows(
        &shared.options,
        arrow_bytes_per_row(shared, &inputs, &late)?,
    );
    let plans = plan_outputs(&runs, &late, target);
    let options = SegmentWriteOptions {
        row_group_rows: shared.options.row_group_rows,
        zstd_level: shared.options.zstd_level,
    };
    let mut outputs: Vec<SegmentMeta> = Vec::new();
    let written = (|| -> Result<bool> {
        let mut run = None;
        for plan in &plans {
            if shared.closing.load(Ordering::Acquire) {
                return Ok(false);
            }
            let planned: u64 = plan
                .iter()
                .flat_map(|(_, ranges)| ranges.iter().map(|range| range.end - range.start))
                .sum();
            let batches = read_output(shared, &inputs, &late, plan)?;
            let read: u64 = batches.iter().map(|batch| batch.num_rows() as u64).sum();
            if read != planned {
                return Err(Error::Corrupt {
                    location: format!("compaction of segments {:?}", ids(&inputs)),
                    detail: format!("read {read} rows where the runs say {planned}"),
                });
            }
            tracing::debug!(
                rows = read,
                arrow_bytes = batches
                    .iter()
                    .map(RecordBatch::get_array_memory_size)
                    .sum::<usize>(),
                "compaction output read"
            );
            let parts = sorted_parts(&batches)?;
            drop(batches);
            for ((tier, day), sorted) in parts {
                let id = reserve_segment_id(shared);
                let mut meta = agent_tables::write_segment_with_sidecars(
                    shared,
                    id,
                    &tier,
                    &day,
                    &sorted,
                    &[],
                    options,
                )?;
                meta.compaction_run = Some(*run.get_or_insert(id));
                outputs.push(meta);
            }
        }
        Ok(true)
    })();
    let discard = |outputs: &[SegmentMeta]| {
        for meta in outputs {
            for path in agent_tables::segment_files(&shared.dir, meta) {
                // Best effort: leftovers are orphans, removed at the next open.
                let _ = std::fs::remove_file(path);
            }
        }
    };
    match written {
        Ok(true) => {}
        Ok(false) => {
            discard(&outputs);
            return Ok(None);
        }
        Err(error) => {
            discard(&outputs);
            return Err(error);
        }
    }
    let mut digests = Vec::with_capacity(outputs.len());
    for meta in &outputs {
        match crate::chain::file_digest(&shared.dir.join(&meta.path)) {
            Ok(digest) => digests.push(digest),
            Err(error) => {
                discard(&outputs);
                return Err(error);
            }
        }
    }
    let mut done = CompactedGroup {
        tier: inputs[0].tier.clone(),
        day: inputs[0].day.clone(),
        inputs: ids(&inputs),
        outputs: outputs.iter().map(|meta| meta.id).collect(),
        rows: inputs.iter().map(|meta| meta.rows).sum(),
        bytes_before: inputs.iter().map(|meta| meta.bytes).sum(),
        bytes_after: outputs.iter().map(|meta| meta.bytes).sum(),
    };
    let swap_started = std::time::Instant::now();
    let swapped = swap(shared, &inputs, &late, &runs, outputs, digests);
    let swap_ms = swap_started.elapsed().as_millis() as u64;
    match swapped {
        Ok(Ok(())) => {}
        Ok(Err(outputs)) => {
            discard(&outputs);
            info!(
                tier = done.tier,
                day = done.day,
                "compaction abandoned: its segments changed meanwhile; the next pass tries again"
            );
            return Ok(None);
        }
        // The commit may have landed (a failed fsync): the files stay, and are orphans
        // removed at the next open if it did not.
        Err(error) => return Err(error),
    }
    for meta in &inputs {
        shared
            .reaper
            .retire(meta, agent_tables::segment_files(&shared.dir, meta));
    }
    drop(inputs);
    shared.reaper.sweep();
    done.outputs.sort_unstable();
    info!(
        tier = done.tier,
        day = done.day,
        inputs = done.inputs.len(),
        outputs = done.outputs.len(),
        rows = done.rows,
        bytes_before = done.bytes_before,
        bytes_after = done.bytes_after,
        elapsed_ms = started.elapsed().as_millis() as u64,
        swap_ms,
        "compacted segments"
    );
    Ok(Some(done))
}

fn ids(metas: &[Arc<SegmentMeta>]) -> Vec<u64> {
    metas.iter().map(|meta| meta.id).collect()
}

/// Every row of one output, keys resolved as of the job's start.
fn read_output(
    shared: &Shared,
    inputs: &[Arc<SegmentMeta>],
    late: &[Option<Arc<LateKeys>>],
    plan: &OutputPlan,
) -> Result<Vec<RecordBatch>> {
    let request = ScanRequest {
        family: crate::RowFamily::All,
        ..ScanRequest::default()
    };
    let segments = plan
        .iter()
        .map(|(input, ranges)| {
            let meta = &inputs[*input];
            (
                Arc::clone(meta),
                shared.dir.join(&meta.path),
                SegmentRead {
                    ranges: Some(ranges.clone()),
                    late: late[*input].clone(),
                },
            )
        })
        .collect();
    ScanPlan::new(
        &request,
        Vec::new(),
        Arc::clone(&shared.memtable_keys),
        segments,
        inputs.len(),
        Arc::new(shared.options.retention.clone()),
    )?
    .collect()
}

/// Replaces `inputs` (with `runs`, their files' runs) by `outputs` in one transaction and in
/// the state's segment list, if every input is still live with the late keys it had (`late`);
/// the outputs back when not. The commit and the list change happen under the state lock
/// (and `seal_lock`), so a reader that takes the list and then the indexes under the state
/// lock, and a seal, expiry or erasure, see both before or both after.
fn swap(
    shared: &Shared,
    inputs: &[Arc<SegmentMeta>],
    late: &[Option<Arc<LateKeys>>],
    runs: &[SegmentMeta],
    outputs: Vec<SegmentMeta>,
    digests: Vec<String>,
) -> Result<std::result::Result<(), Vec<SegmentMeta>>> {
    let _guard = shared.seal_lock.lock();
    let started = std::time::Instant::now();
    {
        let state = shared.state.read();
        let live = inputs
            .iter()
            .all(|input| state.segments.iter().any(|meta| Arc::ptr_eq(meta, input)));
        if !live {
            return Ok(Err(outputs));
        }
    }
    let txn = shared
        .db
        .begin_write()
        .map_err(store_error("begin compaction"))?;
    if !late_keys_unchanged(&txn, inputs, late)? {
        txn.abort().map_err(store_error("abort compaction"))?;
        return Ok(Err(outputs));
    }
    let detail = format!(
        "compaction of {} segments of {} {} into {}",
        inputs.len(),
        inputs[0].tier,
        inputs[0].day,
        outputs.len()
    );
    // Every output added before any input is removed: a follower that applies the entries
    // one at a time (the lake) sees rows twice meanwhile, never none.
    for (meta, digest) in outputs.iter().zip(digests) {
        crate::chain::append(
            &txn,
            crate::chain::EntryKind::Rewritten,
            Some(crate::chain::ChainSegment::of(meta, digest)),
            None,
            &detail,
        )?;
    }
    for meta in inputs {
        crate::chain::append(
            &txn,
            crate::chain::EntryKind::Rewritten,
            None,
            Some(meta.id),
            &detail,
        )?;
    }
    let chained = started.elapsed();
    let unindexed: Vec<(&SegmentMeta, Option<&crate::scan::LateKeys>)> = runs
        .iter()
        .zip(late)
        .map(|(old, late)| (old, late.as_deref()))
        .collect();
    unindex_segments(&txn, &unindexed)?;
    for old in runs {
        agent_tables::disown(
            &txn,
            old.id,
            old.trace_runs.iter().map(|(trace, _, _)| *trace),
            &[],
        )?;
    }
    let unindexed = started.elapsed();
    for meta in &outputs {
        add_to_catalog(&txn, meta)?;
    }
    let indexed = started.elapsed();
    settle_traces(shared, &txn, &outputs)?;
    let settled = started.elapsed();
    txn.open_table(META)
        .map_err(store_error("open meta"))?
        .insert(META_NEXT_SEGMENT_ID, *shared.next_segment_id.lock())
        .map_err(store_error("write next segment id"))?;
    let mut state = shared.state.write();
    // A failed commit may still have landed (a failed fsync); the files stay either way, and
    // are orphans removed at the next open if it did not.
    let locked = started.elapsed();
    txn.commit().map_err(store_error("commit compaction"))?;
    debug!(
        chain_ms = chained.as_millis(),
        unindex_ms = (unindexed - chained).as_millis(),
        index_ms = (indexed - unindexed).as_millis(),
        settle_ms = (settled - indexed).as_millis(),
        commit_ms = (started.elapsed() - locked).as_millis(),
        "compaction swap"
    );
    let gone: HashSet<u64> = inputs.iter().map(|meta| meta.id).collect();
    state.segments.retain(|meta| !gone.contains(&meta.id));
    for id in &gone {
        state.late.remove(id);
    }
    for mut meta in outputs {
        meta.trace_runs = Vec::new();
        meta.session_runs = Vec::new();
        meta.conversation_runs = Vec::new();
        state.segments.push(Arc::new(meta));
    }
    state.segments.sort_by_key(|meta| meta.id);
    Ok(Ok(()))
}

/// True when every input's late-keys entries name the traces they named at the start, with
/// the keys they had then. Traces without trace keys (an erasure removed them) are left out
/// on both sides, as recovery leaves them out of the state: only a write adds late keys, and
/// it always writes the trace's keys.
fn late_keys_unchanged(
    txn: &redb::WriteTransaction,
    inputs: &[Arc<SegmentMeta>],
    late: &[Option<Arc<LateKeys>>],
) -> Result<bool> {
    let late_table = txn
        .open_multimap_table(LATE_KEYS)
        .map_err(store_error("open late keys"))?;
    let keys_table = txn
        .open_table(TRACE_KEYS)
        .map_err(store_error("open trace keys"))?;
    for (meta, snapshot) in inputs.iter().zip(late) {
        let empty = LateKeys::new();
        let snapshot = snapshot.as_deref().unwrap_or(&empty);
        let mut now: HashSet<RawTraceId> = HashSet::new();
        for value in late_table
            .get(meta.id)
            .map_err(store_error("read late keys"))?
        {
            let value = value.map_err(store_error("read late keys"))?;
            let Ok(trace) = <RawTraceId>::try_from(value.value()) else {
                continue;
            };
            let Some(keys) = read_trace_keys(&keys_table, &trace)? else {
                continue;
            };
            if snapshot.get(&trace) != Some(&keys) {
                return Ok(false);
            }
            now.insert(trace);
        }
        for trace in snapshot.keys() {
            if !now.contains(trace) && read_trace_keys(&keys_table, trace)?.is_some() {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// For every trace of the outputs: split (dirty) when its spans now lie in more than one
/// segment; otherwise, unless the memtable holds spans of it, neither split nor owned (the
/// output's agent-table files were derived from all its spans).
fn settle_traces(
    shared: &Shared,
    txn: &redb::WriteTransaction,
    outputs: &[SegmentMeta],
) -> Result<()> {
    let trace_index = txn
        .open_multimap_table(TRACE_SEGMENTS)
        .map_err(store_error("open trace index"))?;
    let mut split = txn
        .open_table(SPLIT_TRACES)
        .map_err(store_error("open split traces"))?;
    let mut owners = txn
        .open_table(AGENT_OWNERS)
        .map_err(store_error("open agent owners"))?;
    let in_memtable = shared.memtable_keys.read();
    let mut seen: HashSet<RawTraceId> = HashSet::new();
    for meta in outputs {
        for (trace, _, _) in &meta.trace_runs {
            if !seen.insert(*trace) {
                continue;
            }
            let mut segments = HashSet::new();
            for run in trace_index
                .get(trace.as_slice())
                .map_err(store_error("read trace index"))?
            {
                segments.insert(run.map_err(store_error("read trace index"))?.value().0);
            }
            if segments.len() > 1 {
                split
                    .insert(trace.as_slice(), ())
                    .map_err(store_error("write split traces"))?;
            } else if !in_memtable.contains_key(trace) {
                split
                    .remove(trace.as_slice())
                    .map_err(store_error("write split traces"))?;
                owners
                    .remove(trace.as_slice())
                    .map_err(store_error("write agent owners"))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: u64, rows: u64, run: Option<u64>) -> Arc<SegmentMeta> {
        Arc::new(SegmentMeta {
            id,
            tier: "standard".into(),
            day: "2026-12-07".into(),
            path: String::new(),
            rows,
            bytes: rows * 100,
            min_start: 0,
            max_start: 0,
            max_end: None,
            max_arrival: None,
            services: None,
            has_null_service: false,
            integrity: None,
            log_rows: 0,
            compaction_run: run,
            sidecar_integrity: None,
            trace_runs: Vec::new(),
            session_runs: Vec::new(),
            conversation_runs: Vec::new(),
        })
    }

    /// An input of `rows` rows whose session runs are `sessions` (name, rows) from row 0, the
    /// rest without a session; each run is one trace, named after its session and input.
    fn input(index: u8, rows: u64, sessions: &[(&str, u64)]) -> SegmentMeta {
        let mut meta = (*meta(u64::from(index), rows, None)).clone();
        let mut next = 0;
        for (number, (session, count)) in sessions.iter().enumerate() {
            meta.session_runs
                .push(((*session).to_owned(), next, *count));
            let mut trace = [0u8; 16];
            trace[0] = session.as_bytes()[0];
            trace[1] = index;
            trace[2] = number as u8;
            meta.trace_runs.push((trace, next, *count));
            next += count;
        }
        meta
    }

    /// Every row of every input, once, over all outputs; and the rows of each output.
    fn check_partition(inputs: &[SegmentMeta], plans: &[OutputPlan]) -> Vec<u64> {
        let mut seen: Vec<Vec<bool>> = inputs
            .iter()
            .map(|meta| vec![false; meta.rows as usize])
            .collect();
        let mut sizes = Vec::new();
        for plan in plans {
            let mut rows = 0;
            for (input, ranges) in plan {
                for pair in ranges.windows(2) {
                    assert!(
                        pair[0].end < pair[1].start,
                        "sorted, disjoint, merged: {ranges:?}"
                    );
                }
                for range in ranges {
                    for row in range.clone() {
                        assert!(
                            !seen[*input][row as usize],
                            "row {row} of input {input} twice"
                        );
                        seen[*input][row as usize] = true;
                        rows += 1;
                    }
                }
            }
            sizes.push(rows);
        }
        assert!(seen.iter().flatten().all(|row| *row), "a row in no output");
        sizes
    }

    #[test]
    fn outputs_hold_every_row_once_and_cut_between_sessions() {
        let inputs = vec![
            input(0, 100, &[("a", 10), ("b", 30), ("d", 40)]),
            input(1, 90, &[("a", 5), ("c", 50), ("d", 20)]),
            input(2, 60, &[("b", 20), ("e", 10)]),
        ];
        let plans = plan_outputs(&inputs, &[], 60);
        let sizes = check_partition(&inputs, &plans);
        // a(15) b(50) | c(50) | d(60) | e(10) + the rows without a session (20 + 15 + 30).
        assert_eq!(sizes, vec![65, 50, 60, 75], "{plans:?}");
        // Each session lies in one output.
        let output_of = |input: usize, row: u64| {
            plans
                .iter()
                .position(|plan| {
                    plan.iter()
                        .any(|(i, ranges)| *i == input && ranges.iter().any(|r| r.contains(&row)))
                })
                .unwrap()
        };
        assert_eq!(output_of(0, 0), output_of(1, 0), "a");
        assert_eq!(output_of(0, 10), output_of(2, 0), "b");
        assert_eq!(output_of(0, 40), output_of(1, 55), "d");
    }

    #[test]
    fn a_session_larger_than_an_output_is_cut_between_its_traces() {
        let mut big = input(0, 300, &[("a", 5)]);
        // Session b: rows 5..300, ten traces of 29 or 30 rows.
        big.session_runs.push(("b".to_owned(), 5, 295));
        let mut first = 5;
        for trace in 0..10u8 {
            let count = if trace < 5 { 30 } else { 29 };
            let mut raw = [0u8; 16];
            raw[0] = b'b';
            raw[15] = trace;
            big.trace_runs.push((raw, first, count));
            first += count;
        }
        let inputs = vec![big, input(1, 40, &[("b", 40)])];
        let plans = plan_outputs(&inputs, &[], 100);
        let sizes = check_partition(&inputs, &plans);
        assert!(sizes.len() >= 4, "{sizes:?}");
        assert!(sizes.iter().all(|rows| *rows <= 100), "{sizes:?}");
        // No trace is cut.
        for (_, first, count) in &inputs[0].trace_runs {
            let holding = plans
                .iter()
                .filter(|plan| {
                    plan.iter().any(|(input, ranges)| {
                        *input == 0
                            && ranges
                                .iter()
                                .any(|r| r.start < first + count && *first < r.end)
                    })
                })
                .count();
            assert_eq!(holding, 1, "trace at row {first}");
        }
    }

    #[test]
    fn overrides_are_carved_out_of_the_pieces_they_cross() {
        let pieces = vec![(0..10, 'a'), (10..20, 'b'), (20..30, 'n')];
        let overrides = vec![(2..4, 'x'), (8..12, 'y'), (25..30, 'z')];
        assert_eq!(
            carve(pieces, overrides),
            vec![
                (0..2, 'a'),
                (2..4, 'x'),
                (4..8, 'a'),
                (8..10, 'y'),
                (10..12, 'y'),
                (12..20, 'b'),
                (20..25, 'n'),
                (25..30, 'z'),
            ]
        );
        assert_eq!(carve(vec![(0..5, 'a')], Vec::new()), vec![(0..5, 'a')]);
    }

    #[test]
    fn a_group_is_worth_compacting_until_it_is_one_run_with_little_beside_it() {
        let seals: Vec<Arc<SegmentMeta>> = (1..=3).map(|id| meta(id, 1000, None)).collect();
        assert!(worth_compacting(&seals));
        assert!(!worth_compacting(&seals[..1]));
        // One run of three segments: nothing to do.
        let run: Vec<Arc<SegmentMeta>> = (10..13).map(|id| meta(id, 1000, Some(10))).collect();
        assert!(!worth_compacting(&run));
        // A few late rows beside it: left alone; an eighth of the run's rows: compacted.
        let mut group = run.clone();
        group.push(meta(20, 100, None));
        assert!(!worth_compacting(&group));
        group.push(meta(21, 275, None));
        assert!(worth_compacting(&group));
        // Eight small segments beside it: compacted.
        let mut group = run.clone();
        group.extend((30..38).map(|id| meta(id, 1, None)));
        assert!(worth_compacting(&group));
    }

    #[test]
    fn only_quiet_groups_are_picked_unless_asked() {
        let now = 10_000_000_000_000;
        let mut old = (*meta(1, 10, None)).clone();
        old.max_arrival = Some(now - 600_000_000_000);
        let mut older = old.clone();
        older.id = 2;
        let mut recent = old.clone();
        recent.id = 3;
        recent.day = "2026-12-08".into();
        let mut recent_too = recent.clone();
        recent_too.id = 4;
        recent_too.max_arrival = Some(now - 1_000_000_000);
        let segments: Vec<Arc<SegmentMeta>> = [old, older, recent, recent_too]
            .into_iter()
            .map(Arc::new)
            .collect();
        let quiet = Some(Duration::from_secs(300));
        let picked = groups_to_compact(&segments, now, quiet);
        assert_eq!(picked.len(), 1);
        assert_eq!(ids(&picked[0]), vec![1, 2]);
        assert_eq!(groups_to_compact(&segments, now, None).len(), 2);
        // Rows of the same day that arrived a day apart are not merged.
        let mut backfill = (*segments[1]).clone();
        backfill.id = 5;
        backfill.max_arrival = Some(now + 86_400_000_000_000);
        let mut with_backfill = segments[..2].to_vec();
        with_backfill.push(Arc::new(backfill));
        let picked = groups_to_compact(&with_backfill, now + 100 * 86_400_000_000_000, quiet);
        assert_eq!(picked.len(), 1);
        assert_eq!(ids(&picked[0]), vec![1, 2]);
    }
}
