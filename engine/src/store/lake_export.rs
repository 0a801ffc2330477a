//! What the lake shipper (in `api`) reads from a store: the chain of changes to the sealed
//! segments after a point ([`Engine::chain_changes`]), and one sealed segment ready to export
//! ([`Engine::export_segment`]): its span rows with late keys resolved, and the input of the
//! agent tables for the traces this segment is the *home* of.
//!
//! Home. Every agent row (`llm_calls`, `tool_calls`, `decisions`, `agent_runs`) depends only on
//! its own trace (see `agent`), so the lake keeps each trace's rows in one place: the live
//! segment with the highest id that holds a row of it. A trace with rows still in the memtable
//! has no home yet; the seal of its last rows gives it one. A segment added by a seal or a
//! rewrite can take the home of traces that other segments held (or give those traces' spans a
//! late key): those segments are listed in [`SegmentExport::sharing`], for the shipper to export
//! again.
//!
//! Invariants:
//! - Over the live segments, each sealed trace without memtable rows is homed in exactly one
//!   segment (the highest id of its segment set), so exporting every live segment gives every
//!   such trace's agent rows once.
//! - [`SegmentExport::agent_input`] holds every sealed row (spans and log records) of each trace
//!   homed in the segment, and no other row.
//! - The export holds the segment's [`SegmentMeta`], so its file is not reaped while it is read.
//! - [`Engine::chain_changes`] returns only published entries, so exporting the segments they
//!   name sees them (and the late keys their seal gave other segments).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch};

use super::agent_tables::rows_of;
use super::{Engine, store_error};
use crate::chain::{self, EntryKind};
use crate::error::{Error, Result};
use crate::ids::TraceId;
use crate::scan::{RowFamily, ScanPlan, ScanRequest, SegmentRead};
use crate::schema::columns;
use crate::segment::SegmentMeta;
use crate::tables::TRACE_SEGMENTS;
use crate::trace_keys::{RawTraceId, traces_in_batch};

/// What a chain entry recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainChangeKind {
    /// A segment was sealed from the memtable.
    Sealed,
    /// A session was erased: segments holding it replaced by copies without it.
    Erased,
    /// Retention deleted a segment.
    Expired,
    /// A segment was rewritten with the same rows.
    Rewritten,
    /// `sightline purge` deleted a segment.
    Purged,
}

impl ChainChangeKind {
    /// The name the chain uses.
    pub fn name(self) -> &'static str {
        match self {
            ChainChangeKind::Sealed => "sealed",
            ChainChangeKind::Erased => "erased",
            ChainChangeKind::Expired => "expired",
            ChainChangeKind::Rewritten => "rewritten",
            ChainChangeKind::Purged => "purged",
        }
    }
}

/// One entry of the store's segment chain, as readers outside the engine see it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChainChange {
    /// Position in the chain, from 1.
    pub sequence: u64,
    /// What happened.
    pub kind: ChainChangeKind,
    /// When, unix ns.
    pub time_ns: i64,
    /// The segment that joined the live set.
    pub added: Option<u64>,
    /// The segment that left it.
    pub removed: Option<u64>,
    /// The chain's detail: the erased session for `erased`, tier and day for removals.
    pub detail: String,
}

/// One live segment, read for the lake.
#[derive(Debug)]
#[non_exhaustive]
pub struct SegmentExport {
    /// The segment (id, tier, day, path).
    pub segment: Arc<SegmentMeta>,
    /// Its span rows (log records left out), every column of the span schema, keys resolved.
    pub spans: Vec<RecordBatch>,
    /// Every sealed row, from any segment, of the traces homed in this segment.
    pub agent_input: Vec<RecordBatch>,
    /// The other live segments holding rows of this segment's traces.
    pub sharing: BTreeSet<u64>,
    /// The traces homed in this segment (whose rows `agent_input` holds).
    pub homed: Vec<TraceId>,
}

impl Engine {
    /// The chain entries after `after` (0 for all), at most `limit`, in order. Every entry
    /// returned is published: its segments are in the live set and the late keys its seal
    /// gave older segments are in place (the chain commits before the state changes, both
    /// under `seal_lock`, which this takes for the read).
    pub fn chain_changes(&self, after: u64, limit: usize) -> Result<Vec<ChainChange>> {
        let _published = self.shared.seal_lock.lock();
        let txn = self
            .shared
            .db
            .begin_read()
            .map_err(store_error("begin read"))?;
        Ok(chain::entries_after(&txn, after, limit)?
            .into_iter()
            .map(|entry| ChainChange {
                sequence: entry.sequence,
                kind: match entry.kind {
                    EntryKind::Sealed => ChainChangeKind::Sealed,
                    EntryKind::Erased => ChainChangeKind::Erased,
                    EntryKind::Expired => ChainChangeKind::Expired,
                    EntryKind::Rewritten => ChainChangeKind::Rewritten,
                    EntryKind::Purged => ChainChangeKind::Purged,
                },
                time_ns: entry.time_ns,
                added: entry.added.map(|segment| segment.id),
                removed: entry.removed,
                detail: entry.detail,
            })
            .collect())
    }

    /// Reads live segment `id` for the lake; `None` when it is no longer live (a later chain
    /// entry removed it).
    pub fn export_segment(&self, id: u64) -> Result<Option<SegmentExport>> {
        let shared = &self.shared;
        let (segment, late, live, in_memtable) = {
            let state = shared.state.read();
            let Some(segment) = state.segments.iter().find(|meta| meta.id == id).cloned() else {
                return Ok(None);
            };
            let live: HashSet<u64> = state.segments.iter().map(|meta| meta.id).collect();
            let mut in_memtable: HashSet<RawTraceId> = HashSet::new();
            let frozen = state.frozen.iter().flat_map(|frozen| frozen.chunks.iter());
            for chunk in state.active.chunks.iter().chain(frozen) {
                in_memtable.extend(traces_in_batch(chunk));
            }
            (segment, state.late.get(&id).cloned(), live, in_memtable)
        };
        let request = ScanRequest {
            family: RowFamily::All,
            ..ScanRequest::default()
        };
        let rows = ScanPlan::new(
            &request,
            Vec::new(),
            Arc::clone(&shared.memtable_keys),
            vec![(
                Arc::clone(&segment),
                shared.dir.join(&segment.path),
                SegmentRead { ranges: None, late },
            )],
            1,
            Arc::new(shared.options.retention.clone()),
        )?
        .collect()?;

        let traces: HashSet<RawTraceId> = rows.iter().flat_map(traces_in_batch).collect();
        let mut whole: HashSet<RawTraceId> = HashSet::new();
        let mut split_homed: Vec<TraceId> = Vec::new();
        let mut sharing = BTreeSet::new();
        {
            let txn = shared.db.begin_read().map_err(store_error("begin read"))?;
            let index = match txn.open_multimap_table(TRACE_SEGMENTS) {
                Ok(index) => Some(index),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(error) => return Err(Error::store("open trace index", error)),
            };
            for trace in traces {
                let mut segments = BTreeSet::from([id]);
                if let Some(index) = &index {
                    for run in index
                        .get(trace.as_slice())
                        .map_err(store_error("read trace index"))?
                    {
                        let (other, _, _) = run.map_err(store_error("read trace index"))?.value();
                        if live.contains(&other) {
                            segments.insert(other);
                        }
                    }
                }
                sharing.extend(segments.iter().copied().filter(|other| *other != id));
                if in_memtable.contains(&trace) || segments.last() != Some(&id) {
                    continue;
                }
                if segments.len() == 1 {
                    whole.insert(trace);
                } else {
                    split_homed.push(TraceId(trace));
                }
            }
        }

        let mut homed: Vec<TraceId> = whole.iter().copied().map(TraceId).collect();
        homed.extend(split_homed.iter().copied());
        homed.sort_unstable_by_key(|trace| trace.0);
        let mut agent_input = Vec::new();
        for batch in &rows {
            agent_input.extend(rows_of(batch, |trace| whole.contains(trace))?);
        }
        if !split_homed.is_empty() {
            let request = ScanRequest {
                trace_ids: Some(split_homed),
                family: RowFamily::All,
                ..ScanRequest::default()
            };
            agent_input.extend(self.plan_scan(&request)?.collect()?);
        }
        let mut spans = Vec::with_capacity(rows.len());
        for batch in rows {
            spans.extend(span_rows(batch)?);
        }
        Ok(Some(SegmentExport {
            segment,
            spans,
            agent_input,
            sharing,
            homed,
        }))
    }
}

/// The span rows of `batch` (those whose `log` column is NULL); `None` when it has none.
fn span_rows(batch: RecordBatch) -> Result<Option<RecordBatch>> {
    let Some(log) = batch.column_by_name(columns::LOG) else {
        return Ok(Some(batch));
    };
    if log.null_count() == batch.num_rows() {
        return Ok(Some(batch));
    }
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|row| Some(log.is_null(row)))
        .collect();
    if keep.true_count() == 0 {
        return Ok(None);
    }
    Ok(Some(arrow::compute::filter_record_batch(&batch, &keep)?))
}
