//! Erasure of a session: its rows, in every tier, and the content of its traces; each
//! rewritten segment is recorded in the chain.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray};
use arrow::compute::filter_record_batch;
use tracing::info;

use crate::error::Result;
use crate::scan::{ScanPlan, ScanRequest, SegmentRead};
use crate::schema::{column_index, columns};
use crate::tables::{SESSION_ROWS, TRACE_KEYS};
use crate::trace_keys::RawTraceId;

use super::*;

/// What [`Engine::erase_session`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EraseReport {
    /// The erased session.
    pub session_id: String,
    /// Rows removed: spans and log records.
    pub rows: u64,
    /// Of [`EraseReport::rows`], the log records.
    pub log_rows: u64,
    /// Traces whose spans (and content) were removed, raw ids.
    pub traces: HashSet<[u8; 16]>,
    /// Segments rewritten: (old id, ids of the rewrites; empty when nothing else was in it).
    pub segments: Vec<(u64, Vec<u64>)>,
}

impl Engine {
    /// The content part of an erasure, with `seal_lock` held: the blobs only the session's
    /// traces name leave the content index (their segments are marked for a rewrite) and the
    /// memtable; references of older stores go too. Returns how many blobs.
    fn erase_session_content(&self, session_id: &str) -> Result<usize> {
        use arrow::array::AsArray;
        let projection = vec![
            column_index(columns::TRACE_ID),
            column_index(columns::SPAN_ID),
            column_index(columns::CONTENT_REFS),
        ];
        let request = ScanRequest {
            session_ids: Some(vec![session_id.to_owned()]),
            projection: Some(projection),
            family: crate::RowFamily::All,
            ..ScanRequest::default()
        };
        let mut traces: HashSet<[u8; 16]> = HashSet::new();
        for batch in self.scan(&request)? {
            let ids = batch
                .column_by_name(columns::TRACE_ID)
                .map(|column| column.as_string::<i32>().clone());
            for id in ids.iter().flat_map(|ids| ids.iter().flatten()) {
                if let Some(trace) = crate::trace_keys::raw_trace_id(id) {
                    traces.insert(trace);
                }
            }
        }
        if traces.is_empty() {
            return Ok(0);
        }
        let mut candidates: HashSet<crate::ContentHash> = HashSet::new();
        let mut still_named: HashSet<crate::ContentHash> = HashSet::new();
        for (_, reference) in self.row_refs(None)? {
            let named = if traces.contains(&reference.trace_id.0) {
                &mut candidates
            } else {
                &mut still_named
            };
            for piece in reference.pieces.iter().flatten() {
                if let crate::ContentPiece::Blob(hash) = piece {
                    named.insert(*hash);
                }
            }
        }
        let shared = &self.shared;
        let txn = shared
            .db
            .begin_write()
            .map_err(store_error("begin erase"))?;
        let (_, dropped) = crate::content::erase_traces(&txn, &traces, candidates, still_named)?;
        txn.commit().map_err(store_error("commit erase"))?;
        let mut state = shared.state.write();
        let content = Arc::make_mut(&mut state.active.content);
        for hash in &dropped {
            content.remove(hash);
        }
        Ok(dropped.len())
    }

    /// Erases a session: every span whose (resolved) session is `session_id`, in every tier,
    /// and the content of their traces. Only the segments holding the session are rewritten
    /// (without its rows); each rewrite is recorded in the chain as an erasure, so `verify`
    /// still passes and lists it. Refused while the session is under a legal hold.
    pub fn erase_session(&self, session_id: &str) -> Result<EraseReport> {
        // Everything the session has must be in segments.
        self.seal()?;
        let shared = &self.shared;
        let _guard = shared.seal_lock.lock();
        {
            let txn = shared
                .db
                .begin_write()
                .map_err(store_error("begin erase"))?;
            let held = crate::holds::refuse_if_held(
                &txn,
                &crate::holds::HoldTarget::Session(session_id.to_owned()),
            );
            txn.abort().map_err(store_error("abort erase check"))?;
            held?;
        }
        // The content first: if the erasure stops half way, the rows (and their references)
        // are still there to erase again, and no text outlives them.
        let content_blobs = self.erase_session_content(session_id)?;
        let holding = self.runs_of(&[session_id.to_owned()], |txn, key: &String| {
            index_runs(txn, SESSION_ROWS, key.as_str())
        })?;
        let (segments, late) = {
            let state = shared.state.read();
            (state.segments.clone(), state.late.clone())
        };
        let mut report = EraseReport {
            session_id: session_id.to_owned(),
            ..EraseReport::default()
        };
        for meta in segments
            .iter()
            .filter(|meta| holding.contains_key(&meta.id))
        {
            // Every row of the segment, resolved, split into the session's and the rest.
            let plan = ScanPlan::new(
                // Log records too: the session's go with it, and every other row stays.
                &ScanRequest {
                    family: crate::RowFamily::All,
                    ..ScanRequest::default()
                },
                Vec::new(),
                Arc::clone(&shared.memtable_keys),
                vec![(
                    Arc::clone(meta),
                    shared.dir.join(&meta.path),
                    SegmentRead {
                        ranges: None,
                        late: late.get(&meta.id).cloned(),
                    },
                )],
                1,
                Arc::new(shared.options.retention.clone()),
            )?;
            let mut keep = Vec::new();
            let mut traces: HashSet<RawTraceId> = HashSet::new();
            let mut removed = 0u64;
            let mut log_removed = 0u64;
            for batch in plan.collect()? {
                let sessions = batch
                    .column(column_index(columns::SESSION_ID))
                    .as_string::<i32>();
                let trace_ids = batch
                    .column(column_index(columns::TRACE_ID))
                    .as_string::<i32>();
                let log = batch.column(column_index(columns::LOG));
                let mut mask = Vec::with_capacity(batch.num_rows());
                for row in 0..batch.num_rows() {
                    let erased = sessions.is_valid(row) && sessions.value(row) == session_id;
                    if erased {
                        removed += 1;
                        if log.is_valid(row) {
                            log_removed += 1;
                        }
                        if let Some(trace) = crate::trace_keys::raw_trace_id(trace_ids.value(row)) {
                            traces.insert(trace);
                        }
                    }
                    mask.push(!erased);
                }
                let kept = filter_record_batch(&batch, &BooleanArray::from(mask))?;
                if kept.num_rows() > 0 {
                    keep.push(kept);
                }
            }
            if removed == 0 {
                continue;
            }
            let new_ids = self.delete_segment(
                meta,
                keep,
                Removal::Erase {
                    session: session_id,
                },
            )?;
            report.rows += removed;
            report.log_rows += log_removed;
            report.traces.extend(traces);
            report.segments.push((meta.id, new_ids));
        }
        // Keys of the session's traces go with them (they are no longer in any segment).
        let txn = shared
            .db
            .begin_write()
            .map_err(store_error("begin erase"))?;
        {
            let mut keys = txn
                .open_table(TRACE_KEYS)
                .map_err(store_error("open trace keys"))?;
            for trace in &report.traces {
                keys.remove(trace.as_slice())
                    .map_err(store_error("remove trace keys"))?;
            }
        }
        txn.commit().map_err(store_error("commit erase"))?;
        // The content segments that held the erased blobs are rewritten without them.
        let rewritten = content_seal::rewrite_dirty_content(shared)?;
        info!(
            content_blobs,
            content_segments_rewritten = rewritten,
            session = session_id,
            rows = report.rows,
            segments = report.segments.len(),
            "erased session"
        );
        // The rewritten segments' files go now, unless a running query still reads them.
        drop(segments);
        shared.reaper.sweep();
        Ok(report)
    }
}
