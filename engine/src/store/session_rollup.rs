//! The `sessions` rollup of the sealed store: the session parts of every sidecar a
//! whole-store read takes, merged into one part per session (`merge_session_parts`), kept in
//! memory so that a `sessions` read folds one part per session instead of one per trace.
//!
//! Invariants:
//! - A rollup is used only for exactly the read it was built from: its key is the list of
//!   sidecars (segment ids, which are never reused) with the traces each one skips. A seal,
//!   expiry, rewrite, erasure or late span changes that list, so a rollup can be stale only
//!   as an unused entry, never as rows.
//! - A sidecar's rows are fixed for its segment id while the engine is open (the files are
//!   written before the segment is published; a rebuild happens only at open).
//! - A rollup extends to a read that adds segments (a seal) and changes nothing else: the
//!   read merges it with the new segments' parts only.
//! - One rollup is kept, and none larger than [`MAX_ROLLUP_BYTES`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::RecordBatch;

use super::Engine;
use super::agent_tables::SidecarRead;

/// The largest rollup kept in memory (Arrow bytes).
const MAX_ROLLUP_BYTES: usize = 256 << 20;

/// What a rollup was built from: each sidecar's segment and skipped traces, in read order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRollupKey(Vec<(u64, Arc<HashSet<String>>)>);

impl SessionRollupKey {
    /// The key of a read of these `sessions` sidecars.
    pub fn of(sidecars: &[SidecarRead]) -> Self {
        let mut key: Vec<(u64, Arc<HashSet<String>>)> = sidecars
            .iter()
            .map(|sidecar| (sidecar.segment_id, Arc::clone(&sidecar.skip)))
            .collect();
        key.sort_unstable_by_key(|(segment, _)| *segment);
        SessionRollupKey(key)
    }
}

/// The kept rollup.
#[derive(Debug, Default)]
pub(super) struct SessionRollup {
    kept: Option<(SessionRollupKey, RecordBatch)>,
}

/// What the kept rollup offers a read.
#[derive(Debug)]
pub enum RollupLookup {
    /// The rollup of exactly the read's sidecars.
    Hit(RecordBatch),
    /// The rollup of some of the read's sidecars, each skipping the same traces as in the
    /// read: merged with the parts of the `missing` segments' sidecars, it is the read's.
    Extend {
        /// The kept rollup.
        base: RecordBatch,
        /// Segments of the read the rollup does not cover.
        missing: HashSet<u64>,
    },
    /// Nothing usable.
    Miss,
}

impl Engine {
    /// What the kept rollup offers a read of the sidecars `key` was made from.
    pub fn session_rollup(&self, key: &SessionRollupKey) -> RollupLookup {
        let rollup = self.shared.session_rollup.lock();
        let Some((kept, parts)) = &rollup.kept else {
            return RollupLookup::Miss;
        };
        if kept == key {
            return RollupLookup::Hit(parts.clone());
        }
        let wanted: HashMap<u64, &Arc<HashSet<String>>> = key
            .0
            .iter()
            .map(|(segment, skip)| (*segment, skip))
            .collect();
        let covered = kept.0.iter().all(|(segment, skip)| {
            wanted
                .get(segment)
                .is_some_and(|wanted| Arc::ptr_eq(wanted, skip) || *wanted == skip)
        });
        if !covered {
            return RollupLookup::Miss;
        }
        let had: HashSet<u64> = kept.0.iter().map(|(segment, _)| *segment).collect();
        RollupLookup::Extend {
            base: parts.clone(),
            missing: wanted
                .into_keys()
                .filter(|segment| !had.contains(segment))
                .collect(),
        }
    }

    /// Keeps `parts`, the merged session parts of exactly the sidecars of `key`, in place of
    /// any earlier rollup (unless larger than 256 MiB).
    pub fn keep_session_rollup(&self, key: SessionRollupKey, parts: RecordBatch) {
        if parts.get_array_memory_size() > MAX_ROLLUP_BYTES {
            return;
        }
        self.shared.session_rollup.lock().kept = Some((key, parts));
    }
}
