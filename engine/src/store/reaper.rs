//! Files of removed segments, deleted once no reader holds the segment.
//!
//! A query plans its read from the segment list of one moment and holds each planned
//! segment's `Arc<SegmentMeta>` until it has opened the file (scan units, sidecar reads). A
//! segment removed by expiry, erasure or a rewrite leaves the catalog at once, but its files
//! (span file and agent-table files) are deleted only when no such handle is left, so a running
//! query reads all of a segment or none of it, never a file that vanished under it.
//!
//! Invariants:
//! - A retired segment is out of the catalog and the state's list; only readers hold it.
//! - Its files are deleted at a sweep that finds no strong reference left (sweeps run when
//!   segments are retired, planned and when the engine closes). A crash before that leaves
//!   orphans, which the next open removes.

use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tracing::warn;

use crate::segment::SegmentMeta;

/// Retired segments whose files wait for their last reader.
#[derive(Debug, Default)]
pub(super) struct Reaper {
    pending: Mutex<Vec<(Weak<SegmentMeta>, Vec<PathBuf>)>>,
}

impl Reaper {
    /// Schedules the deletion of `files` of the removed segment `meta`, and sweeps.
    pub(super) fn retire(&self, meta: &Arc<SegmentMeta>, files: Vec<PathBuf>) {
        self.pending.lock().push((Arc::downgrade(meta), files));
        self.sweep();
    }

    /// Deletes the files of every retired segment no reader holds any more.
    pub(super) fn sweep(&self) {
        let done: Vec<Vec<PathBuf>> = {
            let mut pending = self.pending.lock();
            if pending.is_empty() {
                return;
            }
            let (free, held): (Vec<_>, Vec<_>) = std::mem::take(&mut *pending)
                .into_iter()
                .partition(|(meta, _)| meta.strong_count() == 0);
            *pending = held;
            free.into_iter().map(|(_, files)| files).collect()
        };
        for path in done.into_iter().flatten() {
            // Best effort: a file left behind is an orphan, removed at the next open.
            if let Err(error) = fs::remove_file(&path)
                && error.kind() != std::io::ErrorKind::NotFound
            {
                warn!(path = %path.display(), error = %error, "could not delete a removed segment file");
            }
        }
    }
}
