//! The engine's side of the stored agent tables (see `agent/stored.rs`): writing a segment
//! with its sidecars, keeping the set of split traces, rebuilding sidecars at open, and
//! planning a read that takes each trace from exactly one place.
//!
//! Invariants:
//! - [`write_segment_with_sidecars`] is the only way a segment file is written: no segment
//!   exists without its sidecars.
//! - A trace not in `split_traces` and not in the memtable has all its spans in one segment
//!   (checked in [`mark_split_traces`], run for every segment added to the catalog, after the
//!   index entries of a segment it replaces are gone). Entries are never removed except by a
//!   purge: a stale entry only makes a read derive that trace from its spans.
//! - [`Engine::plan_agent_read`] takes the split set and the memtable's traces under the state
//!   lock, with the segment list of that moment: a trace is then read either from its one
//!   sidecar or derived from its spans, never both.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use redb::{ReadableDatabase, ReadableMultimapTable, ReadableTable, WriteTransaction};
use tracing::info;

use super::{Engine, MAX_AGENT_LOOKUPS, Shared, store_error};
use crate::agent::{AgentTable, SIDECAR_VERSION, read_sidecar, sidecar_path, write_sidecars};
use crate::error::{Error, Result};
use crate::scan::{ScanPlan, ScanRequest};
use crate::segment::{SegmentMeta, SegmentWriteOptions, write_segment};
use crate::tables::{LATE_KEYS, META, META_AGENT_TABLES_VERSION, SPLIT_TRACES, TRACE_SEGMENTS};
use crate::trace_keys::traces_in_batch;

/// Writes segment `id` and its sidecars; on error nothing is left behind (best effort).
pub(super) fn write_segment_with_sidecars(
    shared: &Shared,
    id: u64,
    tier: &str,
    day: &str,
    sorted: &RecordBatch,
    options: SegmentWriteOptions,
) -> Result<SegmentMeta> {
    let meta = write_segment(&shared.dir, id, tier, day, sorted, options)?;
    if let Err(error) = write_sidecars(&shared.dir, id, &meta.path, sorted, options.zstd_level)
        .and_then(|_| fsync_parent(&shared.dir.join(&meta.path)))
    {
        let _ = fs::remove_file(shared.dir.join(&meta.path));
        return Err(error);
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

/// Records, in `txn`, every trace of `meta` that already has spans in another segment.
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
    for meta in segments {
        let complete =
            crate::agent::sidecar_paths(&meta.path).all(|path| shared.dir.join(path).is_file());
        if complete && version == Some(SIDECAR_VERSION) {
            continue;
        }
        let path = shared.dir.join(&meta.path);
        let batch = crate::segment::read_whole(meta, &path)?;
        write_sidecars(
            &shared.dir,
            meta.id,
            &meta.path,
            &batch,
            shared.options.zstd_level,
        )?;
        fsync_parent(&path)?;
        rebuilt += 1;
    }
    txn.open_table(META)
        .map_err(store_error("open meta"))?
        .insert(META_AGENT_TABLES_VERSION, SIDECAR_VERSION)
        .map_err(store_error("write agent tables version"))?;
    txn.commit().map_err(store_error("commit agent tables"))?;
    if rebuilt > 0 {
        info!(segments = rebuilt, "built stored agent tables");
    }
    Ok(rebuilt)
}

/// One sidecar to read.
#[derive(Debug, Clone)]
pub struct SidecarRead {
    /// The segment it belongs to.
    pub segment_id: u64,
    /// The file.
    pub path: PathBuf,
}

/// A read of one stored agent table: sidecar rows of the traces wholly in one segment, plus
/// a span scan of every other trace, to be derived.
#[derive(Debug)]
pub struct AgentRead {
    /// The table.
    pub table: AgentTable,
    /// Sidecars to read, skipping the traces of [`AgentRead::skip`].
    pub sidecars: Vec<SidecarRead>,
    /// Lowercase hex ids of the traces to derive from spans instead.
    pub skip: Arc<HashSet<String>>,
    /// Every span of those traces (the derivation's input columns).
    pub derive: ScanPlan,
}

impl SidecarRead {
    /// Reads this sidecar of `table`: its rows whose trace is not in `skip` (lowercase hex
    /// ids), with the columns `projection` names (indices into the stored schema, ascending;
    /// `None` for every column).
    pub fn read(
        &self,
        table: AgentTable,
        projection: Option<&[usize]>,
        skip: &HashSet<String>,
    ) -> Result<Vec<RecordBatch>> {
        read_sidecar(&self.path, self.segment_id, table, projection, skip)
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
        let (segments, skip) = {
            let state = shared.state.read();
            let txn = shared.db.begin_read().map_err(store_error("begin read"))?;
            let mut skip: HashSet<String> = HashSet::new();
            match txn.open_table(SPLIT_TRACES) {
                Ok(split) => {
                    for entry in split.iter().map_err(store_error("read split traces"))? {
                        let (trace, _) = entry.map_err(store_error("read split traces"))?;
                        skip.insert(hex::encode(trace.value()));
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(error) => return Err(Error::store("open split traces", error)),
            }
            let frozen = state.frozen.iter().flat_map(|frozen| frozen.chunks.iter());
            for chunk in state.active.chunks.iter().chain(frozen) {
                skip.extend(traces_in_batch(chunk).into_iter().map(hex::encode));
            }
            (state.segments.clone(), skip)
        };
        let timed = matches!(
            table,
            AgentTable::LlmCalls | AgentTable::ToolCalls | AgentTable::AgentRuns
        );
        let probe = ScanRequest {
            start_time,
            ..ScanRequest::default()
        };
        let sidecars = segments
            .iter()
            .filter(|meta| !timed || probe.time_overlaps(meta.min_start, meta.max_start))
            .map(|meta| SidecarRead {
                segment_id: meta.id,
                path: shared.dir.join(sidecar_path(&meta.path, table)),
            })
            .collect();
        let mut ids: Vec<String> = skip.iter().cloned().collect();
        ids.sort_unstable();
        let request = ScanRequest {
            trace_ids: Some(ids),
            projection: Some(table.input_columns()),
            ..ScanRequest::default()
        };
        let derive = self.plan_scan_with(&request, MAX_AGENT_LOOKUPS)?;
        Ok(AgentRead {
            table,
            sidecars,
            skip: Arc::new(skip),
            derive,
        })
    }
}
