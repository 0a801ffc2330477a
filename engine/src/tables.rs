//! Every redb table the engine persists, in one place: this file is the persisted schema.
//!
//! Values that are not plain integers start with a one-byte format version (see
//! `docs/design/storage-format.md`).

use redb::{MultimapTableDefinition, TableDefinition};

/// Store-wide settings and counters: `format_version`, `next_segment_id`.
pub(crate) const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// Write-ahead log: sequence number -> WAL record (see [`crate::wal`]).
pub(crate) const WAL: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("wal");

/// Catalog of sealed segments: segment id -> versioned JSON `SegmentMeta`.
pub(crate) const SEGMENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("segments");

/// Trace index: 16 raw trace-id bytes -> ids of the segments holding spans of that trace.
pub(crate) const TRACE_SEGMENTS: MultimapTableDefinition<'_, &[u8], u64> =
    MultimapTableDefinition::new("trace_segments");

/// Key of the store format version in [`META`].
pub(crate) const META_FORMAT_VERSION: &str = "format_version";
/// Key of the next segment id in [`META`].
pub(crate) const META_NEXT_SEGMENT_ID: &str = "next_segment_id";

/// The store format this code writes and reads.
pub(crate) const FORMAT_VERSION: u64 = 1;
