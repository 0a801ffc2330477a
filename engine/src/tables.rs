//! Every redb table the engine persists, in one place: this file is the persisted schema.
//!
//! Values that are not plain integers start with a one-byte format version (see
//! `docs/design/storage-format.md`).

use redb::{MultimapTableDefinition, TableDefinition};

/// Store-wide settings and counters: `format_version`, `next_segment_id`.
pub(crate) const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// The write-ahead log of stores written before WAL files (`wal_log.rs`): sequence number ->
/// version 1 WAL record (see [`crate::wal`]). Read at open and emptied by the next seal; nothing
/// new is written here.
pub(crate) const WAL: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("wal");

/// Catalog of sealed segments: segment id -> versioned JSON `SegmentMeta`.
pub(crate) const SEGMENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("segments");

/// A run of rows inside one segment: (segment id, first row, row count). Rows of a segment
/// are sorted by (session_id, conversation_id, trace_id, start_time), so a session, a
/// conversation or a trace occupies few runs.
pub(crate) type RowRun = (u64, u64, u64);

/// Trace index: 16 raw trace-id bytes -> the row runs holding spans of that trace.
pub(crate) const TRACE_SEGMENTS: MultimapTableDefinition<'_, &[u8], RowRun> =
    MultimapTableDefinition::new("trace_segments");

/// Session partition index: session_id -> the row runs holding that session's spans.
pub(crate) const SESSION_ROWS: MultimapTableDefinition<'_, &str, RowRun> =
    MultimapTableDefinition::new("session_rows");

/// Conversation partition index: conversation_id -> the row runs holding its spans.
pub(crate) const CONVERSATION_ROWS: MultimapTableDefinition<'_, &str, RowRun> =
    MultimapTableDefinition::new("conversation_rows");

/// Trace keys: 16 raw trace-id bytes -> versioned session/conversation/user of the trace (the
/// first value of each seen on any of its spans; see `trace_keys.rs`).
pub(crate) const TRACE_KEYS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("trace_keys");

/// Late keys: segment id -> raw ids of traces whose keys arrived after rows of theirs were
/// sealed into that segment. Scans of the segment resolve those rows from [`TRACE_KEYS`].
pub(crate) const LATE_KEYS: MultimapTableDefinition<'_, u64, &[u8]> =
    MultimapTableDefinition::new("late_keys");

/// Split traces whose stored agent rows are not right: 16 raw trace-id bytes -> (). Found in
/// more than one segment by a rewrite (expiry, erasure), or owned by a segment that was
/// rewritten or removed; read by deriving from their spans (see `agent/stored.rs`).
pub(crate) const SPLIT_TRACES: TableDefinition<'_, &[u8], ()> =
    TableDefinition::new("split_traces");

/// Owners of split traces: 16 raw trace-id bytes -> the segment whose agent-table files hold
/// the trace's rows derived from all its spans (written by the seal that found it split); the
/// trace's rows in other segments' files are partial and not used.
pub(crate) const AGENT_OWNERS: TableDefinition<'_, &[u8], u64> =
    TableDefinition::new("agent_owners");

/// Partial rows: segment id -> raw ids of the split traces whose rows in that segment's
/// agent-table files are partial (the trace is owned by a later segment); readers skip them.
pub(crate) const AGENT_PARTIAL: MultimapTableDefinition<'_, u64, &[u8]> =
    MultimapTableDefinition::new("agent_partial");

/// Segment chain: sequence (from 1) -> version byte 1 + JSON chain entry, each hash-linked to
/// the one before (see `chain.rs` and `docs/tamper-evidence.md`).
pub(crate) const CHAIN: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("chain");

/// Legal holds: `session:<id>` or `tier:<name>` -> unix ns when the hold was placed.
pub(crate) const HOLDS: TableDefinition<'_, &str, u64> = TableDefinition::new("holds");

/// Key of the store format version in [`META`].
pub(crate) const META_FORMAT_VERSION: &str = "format_version";
/// Key of the next segment id in [`META`].
pub(crate) const META_NEXT_SEGMENT_ID: &str = "next_segment_id";

/// Key, in [`META`], of the last WAL sequence number a seal (or purge) made unnecessary: WAL
/// records up to it are not replayed.
pub(crate) const META_WAL_SEALED_THROUGH: &str = "wal_sealed_through";
/// Key, in [`META`], of the last WAL sequence number whose content and trace keys the writer
/// applied. Written by non-durable commits: after a crash it is as of the last durable commit,
/// and recovery applies the records after it again.
pub(crate) const META_WAL_APPLIED: &str = "wal_applied";

/// Key of the version of the stored agent tables in [`META`] (see `agent/stored.rs`).
pub(crate) const META_AGENT_TABLES_VERSION: &str = "agent_tables_version";

/// The store format this code writes and reads. 3: segment files check 4 KiB blocks and
/// record the block size (`sightline.block_crc32.v2`), which a binary written for 2 would
/// report as damaged; a store of format 2 is upgraded at open (its files read as before).
pub(crate) const FORMAT_VERSION: u64 = 3;
/// The earlier format a store is upgraded from at open.
pub(crate) const UPGRADED_FORMAT_VERSION: u64 = 2;

/// Content blobs of stores written before content segments: 32-byte SHA-256 of the text ->
/// `[version][codec][bytes]`. Moved into content segments at open.
pub(crate) const CONTENT: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("content");

/// When each blob was last referenced, per retention tier: hash -> versioned list.
pub(crate) const CONTENT_SEEN: TableDefinition<'_, &[u8], &[u8]> =
    TableDefinition::new("content_seen");

/// Content expiry index: last-referenced time (ns) -> blob hashes.
pub(crate) const CONTENT_BY_TIME: MultimapTableDefinition<'_, u64, &[u8]> =
    MultimapTableDefinition::new("content_by_time");

/// Where each stored blob is: the first 16 bytes of the SHA-256 of its text -> the fixed-width
/// `BlobLocation` (content segment, block, offset, length; see `content_segment.rs`). Fixed
/// width on both sides keeps an entry at 40 bytes (128 bits of SHA-256 leave a collision to
/// 2^64 work). Blobs still in the memtable are not in it.
pub(crate) const CONTENT_INDEX: TableDefinition<'_, [u8; 16], [u8; 24]> =
    TableDefinition::new("content_index");

/// Content segment catalog: id -> encoded `ContentSegmentMeta` (tier, first and last reference
/// time, counts).
pub(crate) const CONTENT_SEGMENTS: TableDefinition<'_, u64, &[u8]> =
    TableDefinition::new("content_segments");

/// Blobs in a content segment of a tier kept shorter than a trace that names them was promoted
/// to: hash -> that tier. The next seal copies each into a segment of its tier; expiry spares
/// the segments holding one until then.
pub(crate) const CONTENT_PINS: TableDefinition<'_, &[u8], &str> =
    TableDefinition::new("content_pins");

/// Traces promoted to a tier kept longer than some content they name: raw trace id -> tier.
/// The next seal (or content expiry) pins those blobs (`content_pins`) and removes the entry.
pub(crate) const CONTENT_TRACE_PINS: TableDefinition<'_, &[u8], &str> =
    TableDefinition::new("content_trace_pins");

/// Content segments holding blobs an erasure removed from the index: id -> (). They are
/// rewritten without them (after the erasure, or at the next open after a crash).
pub(crate) const CONTENT_DIRTY: TableDefinition<'_, u64, ()> =
    TableDefinition::new("content_dirty");

/// Key of the next content segment id in [`META`].
pub(crate) const META_NEXT_CONTENT_SEGMENT_ID: &str = "next_content_segment_id";

/// Content references: trace id (16) + span id (8) + key (UTF-8) -> versioned reference (digest,
/// form, tier, pieces). Kept when the blobs expire.
pub(crate) const CONTENT_REFS: TableDefinition<'_, &[u8], &[u8]> =
    TableDefinition::new("content_refs");

/// Content settings: `digest_key` -> the store's 32-byte digest key.
pub(crate) const CONTENT_META: TableDefinition<'_, &str, &[u8]> =
    TableDefinition::new("content_meta");
