//! The content store: message and payload text split from span rows at ingest, stored once per
//! distinct blob (content-addressed by SHA-256), with its own retention.
//!
//! A span's references (per content attribute: key, keyed digest, form, and the pieces, literal
//! text and blob hashes, whose concatenation is the value) ride in its row, in the hidden
//! `content_refs` column (`content_refs.rs`): sealed, expired, moved to a promoted tier and
//! erased with it. Blob text lives in the content memtable until a seal writes it into content
//! segments (`content_memtable.rs`, `content_segment.rs`, `store/content_seal.rs`); redb keeps
//! only indexes (see `tables.rs` and `docs/content.md`):
//! - `content_index`: blob hash -> where it is in a content segment;
//! - `content_segments`, `content_pins`, `content_trace_pins`, `content_dirty`: the content
//!   segment catalog, blobs and traces a promotion needs copied into a longer-kept tier,
//!   segments an erasure needs rewritten;
//! - `content_refs`: references of stores written before they moved into the rows (read,
//!   expired and erased, never written).
//!
//! Invariants: a request's content is in the same WAL record as its span rows (the references
//! in the rows); its blobs are staged into the memtable with the rows ([`Engine::write_batch`];
//! redone from the WAL after a crash), so a span never points at content that was not stored
//! and no content outlives a refused write. Legacy base pointers never form a cycle (reads
//! refuse one). Expiry deletes whole content segments only; references stay with their rows, so
//! a read after expiry answers [`ContentValue::Expired`] with the digest.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read;

use redb::ReadableTable;

use crate::content_memtable::{ContentStage, open_pins};
use crate::error::{Error, Result};
use crate::ids::{SpanId, TraceId};
use crate::store::Engine;
use crate::tables::{CONTENT_DIRTY, CONTENT_INDEX, CONTENT_META, CONTENT_REFS, TRACE_KEYS};
use crate::trace_keys::TraceKeys;

/// SHA-256 of a content blob (its address).
pub type ContentHash = [u8; 32];

/// Format version of every content value.
const CONTENT_VERSION: u8 = 1;
#[cfg_attr(not(test), allow(dead_code))]
const CODEC_RAW: u8 = 0;
#[cfg_attr(not(test), allow(dead_code))]
const CODEC_ZSTD: u8 = 1;
pub(crate) const PIECE_LITERAL: u8 = 0;
pub(crate) const PIECE_BLOB: u8 = 1;
/// A stored reference may start with the first `count` pieces of another reference of the same
/// trace (the previous turn's history), so a history resent every turn is not listed again.
const PIECE_BASE: u8 = 2;
/// Longest chain of base references a read follows (a run of this many turns).
const MAX_BASE_DEPTH: usize = 100_000;
/// Key of the content digest key in `content_meta`.
const DIGEST_KEY: &str = "digest_key";
/// Blobs shorter than this are stored raw: a zstd frame would not pay for itself.
#[cfg(test)]
const COMPRESS_MIN_BYTES: usize = 64;
/// zstd level of a stored blob.
#[cfg(test)]
const BLOB_ZSTD_LEVEL: i32 = 3;

/// One piece of a referenced value: the value is the concatenation of its pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentPiece {
    /// Text kept in the reference itself (e.g. the `[`, `, ` and `]` around messages).
    Literal(String),
    /// A stored blob.
    Blob(ContentHash),
}

/// Where a content value was and how to find it again: one per (span, key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentRef {
    /// The span's trace.
    pub trace_id: TraceId,
    /// The span.
    pub span_id: SpanId,
    /// Where on the span the value was (an attribute key, or `events[i].<key>`).
    pub key: String,
    /// Keyed digest of the value (kept after the content expires).
    pub digest: ContentHash,
    /// How the caller encoded the value (opaque to the engine, returned as is).
    pub form: u8,
    /// The pieces of the value, or `None` when capture was off (digest only).
    pub pieces: Option<Vec<ContentPiece>>,
    /// Retention tier of the span, when known (`None` = default content keep).
    pub tier: Option<String>,
}

/// Content of one export request, written with its spans by [`Engine::write_batch`].
#[derive(Debug, Clone, Default)]
pub struct ContentBatch {
    /// Blobs by hash. The engine trusts the caller that the hash is SHA-256 of the text.
    pub blobs: Vec<(ContentHash, String)>,
    /// References.
    pub refs: Vec<ContentRef>,
    /// When the content is stored (ns since the Unix epoch): the clock of its retention.
    pub stored_unix_nanos: u64,
}

impl ContentBatch {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty() && self.refs.is_empty()
    }

    /// Bytes of blob text (what a pending write counts against the memory bound).
    pub fn text_bytes(&self) -> usize {
        self.blobs.iter().map(|(_, text)| text.len()).sum()
    }
}

/// A referenced value as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentValue {
    /// The value, exactly as stored.
    Present(String),
    /// Some of its blobs were removed by content retention; the digest remains.
    Expired {
        /// Keyed digest of the value.
        digest: ContentHash,
    },
    /// Capture was off when it arrived: only the digest was kept.
    NotCaptured {
        /// Keyed digest of the value.
        digest: ContentHash,
    },
}

/// One row of the content table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentRow {
    /// The span's trace.
    pub trace_id: TraceId,
    /// The span.
    pub span_id: SpanId,
    /// See [`ContentRef::key`].
    pub key: String,
    /// See [`ContentRef::form`].
    pub form: u8,
    /// Keyed digest of the value (as in the span's reference), whatever its status.
    pub digest: ContentHash,
    /// The value or why it is gone.
    pub value: ContentValue,
}

/// Which content [`Engine::expire_content_with`] removes.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ContentExpiryRequest {
    /// Blobs last referenced before this time (ns) by default-tier spans are removed.
    pub cutoff_unix_nanos: u64,
    /// Per-tier cutoffs (tier name -> ns), overriding `cutoff_unix_nanos` for references
    /// written with that tier.
    pub tier_cutoffs: BTreeMap<String, u64>,
    /// Count what would be removed without removing it.
    pub dry_run: bool,
}

impl ContentExpiryRequest {
    /// Removes blobs last referenced before `cutoff_unix_nanos`.
    pub fn new(cutoff_unix_nanos: u64) -> Self {
        ContentExpiryRequest {
            cutoff_unix_nanos,
            ..ContentExpiryRequest::default()
        }
    }

    /// Uses `cutoff_unix_nanos` for references of `tier`.
    pub fn with_tier(mut self, tier: impl Into<String>, cutoff_unix_nanos: u64) -> Self {
        self.tier_cutoffs.insert(tier.into(), cutoff_unix_nanos);
        self
    }

    /// Only counts.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    pub(crate) fn cutoff_for(&self, tier: &str) -> u64 {
        if tier.is_empty() {
            self.cutoff_unix_nanos
        } else {
            self.tier_cutoffs
                .get(tier)
                .copied()
                .unwrap_or(self.cutoff_unix_nanos)
        }
    }
}

/// What a content expiry run removed (or would remove, when dry).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContentExpiry {
    /// Blobs removed.
    pub messages: u64,
    /// Stored bytes removed.
    pub bytes: u64,
}

/// Size of the content store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContentStats {
    /// Distinct stored blobs.
    pub messages: u64,
    /// References (span, key).
    pub references: u64,
    /// Stored bytes of blobs (compressed, with their headers).
    pub bytes: u64,
    /// Stored bytes of references (keys and values).
    pub reference_bytes: u64,
    /// When the least recently referenced blob was last referenced (ns), if any.
    pub oldest_seen: Option<u64>,
}

fn store_error<E: Into<redb::Error>>(operation: &'static str) -> impl FnOnce(E) -> Error {
    move |source| Error::store(operation, source)
}

pub(crate) fn corrupt(location: &str, detail: impl Into<String>) -> Error {
    Error::Corrupt {
        location: format!("content table {location}"),
        detail: detail.into(),
    }
}

#[cfg(test)]
pub(crate) fn ref_key(trace_id: &TraceId, span_id: &SpanId, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + key.len());
    out.extend_from_slice(&trace_id.0);
    out.extend_from_slice(&span_id.0);
    out.extend_from_slice(key.as_bytes());
    out
}

/// Encodes a reference as the legacy `content_refs` table held it (tests of older stores).
#[cfg(test)]
pub(crate) fn encode_ref(reference: &ContentRef, stored: u64) -> Vec<u8> {
    let mut out = encode_header(reference, stored);
    write_pieces(&mut out, reference.pieces.as_deref());
    out
}

/// The part of an encoded reference before its pieces.
#[cfg(test)]
fn encode_header(reference: &ContentRef, stored: u64) -> Vec<u8> {
    let mut out = vec![CONTENT_VERSION];
    out.extend_from_slice(&stored.to_le_bytes());
    out.extend_from_slice(&reference.digest);
    out.push(reference.form);
    let tier = reference.tier.as_deref().unwrap_or("");
    out.extend_from_slice(&(tier.len() as u16).to_le_bytes());
    out.extend_from_slice(tier.as_bytes());
    out
}

/// Appends a value's pieces: `[0]` when capture was off, else `[1][count u32]` and each piece,
/// `0 [len u32][literal text]` or `1 [sha-256 32]` (WAL records, span rows, legacy references).
pub(crate) fn write_pieces(out: &mut Vec<u8>, pieces: Option<&[ContentPiece]>) {
    match pieces {
        None => out.push(0),
        Some(pieces) => {
            out.push(1);
            out.extend_from_slice(&(pieces.len() as u32).to_le_bytes());
            for piece in pieces {
                match piece {
                    ContentPiece::Literal(text) => {
                        out.push(PIECE_LITERAL);
                        out.extend_from_slice(&(text.len() as u32).to_le_bytes());
                        out.extend_from_slice(text.as_bytes());
                    }
                    ContentPiece::Blob(hash) => {
                        out.push(PIECE_BLOB);
                        out.extend_from_slice(hash);
                    }
                }
            }
        }
    }
}

/// Reads what [`write_pieces`] wrote.
pub(crate) fn read_pieces(reader: &mut Reader<'_>) -> Result<Option<Vec<ContentPiece>>> {
    if reader.u8()? == 0 {
        return Ok(None);
    }
    let count = reader.u32()? as usize;
    let mut pieces = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        match reader.u8()? {
            PIECE_LITERAL => {
                let len = reader.u32()? as usize;
                pieces.push(ContentPiece::Literal(reader.text(len)?));
            }
            PIECE_BLOB => pieces.push(ContentPiece::Blob(reader.hash()?)),
            other => {
                return Err(corrupt(
                    reader.location,
                    format!("unknown piece tag {other}"),
                ));
            }
        }
    }
    Ok(Some(pieces))
}

/// A cursor over stored bytes that names the entry in its errors.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) location: &'a str,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, count: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < count {
            return Err(corrupt(
                self.location,
                format!("expected {count} more bytes, found {}", self.bytes.len()),
            ));
        }
        let (head, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        let mut raw = [0; 2];
        raw.copy_from_slice(self.take(2)?);
        Ok(u16::from_le_bytes(raw))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        let mut raw = [0; 4];
        raw.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(raw))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        let mut raw = [0; 8];
        raw.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(raw))
    }

    pub(crate) fn hash(&mut self) -> Result<ContentHash> {
        let mut raw = [0; 32];
        raw.copy_from_slice(self.take(32)?);
        Ok(raw)
    }

    pub(crate) fn text(&mut self, count: usize) -> Result<String> {
        let location = self.location;
        String::from_utf8(self.take(count)?.to_vec())
            .map_err(|_| corrupt(location, "text is not UTF-8"))
    }

    fn version(&mut self) -> Result<()> {
        match self.u8()? {
            CONTENT_VERSION => Ok(()),
            other => Err(corrupt(
                self.location,
                format!("expected format version {CONTENT_VERSION}, found {other}"),
            )),
        }
    }
}

/// A piece as stored: a value piece, or a pointer to the first pieces of another reference.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StoredPiece {
    Piece(ContentPiece),
    Base { key: Vec<u8>, count: usize },
}

struct DecodedRef {
    digest: ContentHash,
    form: u8,
    pieces: Option<Vec<StoredPiece>>,
}

fn decode_ref(bytes: &[u8], location: &str) -> Result<DecodedRef> {
    let mut reader = Reader { bytes, location };
    reader.version()?;
    // When the reference was (last) stored, ns: kept for older readers, not used.
    reader.u64()?;
    let digest = reader.hash()?;
    let form = reader.u8()?;
    let tier_len = usize::from(reader.u16()?);
    reader.take(tier_len)?;
    let pieces = match reader.u8()? {
        0 => None,
        _ => {
            let count = reader.u32()? as usize;
            let mut pieces = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                match reader.u8()? {
                    PIECE_LITERAL => {
                        let len = reader.u32()? as usize;
                        pieces.push(StoredPiece::Piece(ContentPiece::Literal(reader.text(len)?)));
                    }
                    PIECE_BLOB => {
                        pieces.push(StoredPiece::Piece(ContentPiece::Blob(reader.hash()?)))
                    }
                    PIECE_BASE => {
                        let len = reader.u32()? as usize;
                        let key = reader.take(len)?.to_vec();
                        let count = reader.u32()? as usize;
                        pieces.push(StoredPiece::Base { key, count });
                    }
                    other => return Err(corrupt(location, format!("unknown piece tag {other}"))),
                }
            }
            Some(pieces)
        }
    };
    Ok(DecodedRef {
        digest,
        form,
        pieces,
    })
}

/// The full pieces of the reference stored under `key`, following base pointers (memoized).
/// `None` when capture was off for it.
fn resolve_pieces(
    refs: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
    memo: &mut std::collections::HashMap<Vec<u8>, Option<Vec<ContentPiece>>>,
) -> Result<Option<Vec<ContentPiece>>> {
    if let Some(known) = memo.get(key) {
        return Ok(known.clone());
    }
    // Walk down the base chain, then build the values back up.
    let mut chain: Vec<(Vec<u8>, Option<Vec<StoredPiece>>)> = Vec::new();
    let mut next = Some(key.to_vec());
    let mut resolved_below: Option<Option<Vec<ContentPiece>>> = None;
    while let Some(current) = next.take() {
        if let Some(known) = memo.get(&current) {
            resolved_below = Some(known.clone());
            break;
        }
        if chain.len() >= MAX_BASE_DEPTH {
            return Err(corrupt("content_refs", "base reference chain too long"));
        }
        let location = format!("content_refs {}", hex::encode(&current));
        let value = refs
            .get(current.as_slice())
            .map_err(store_error("read content ref"))?
            .ok_or_else(|| corrupt("content_refs", format!("missing base reference {location}")))?;
        let decoded = decode_ref(value.value(), &location)?;
        if let Some(StoredPiece::Base { key, .. }) = decoded.pieces.as_ref().and_then(|p| p.first())
        {
            if chain.iter().any(|(seen, _)| seen == key) || key == &current {
                return Err(corrupt("content_refs", "base reference cycle"));
            }
            next = Some(key.clone());
        }
        chain.push((current, decoded.pieces));
    }
    let mut below = resolved_below.unwrap_or(None);
    let mut result = None;
    while let Some((current, stored)) = chain.pop() {
        let pieces = match stored {
            None => None,
            Some(stored) => {
                let mut out = Vec::with_capacity(stored.len());
                for piece in stored {
                    match piece {
                        StoredPiece::Piece(piece) => out.push(piece),
                        StoredPiece::Base { count, .. } => {
                            let base = below.as_ref().ok_or_else(|| {
                                corrupt("content_refs", "base reference without pieces")
                            })?;
                            let prefix = base.get(..count).ok_or_else(|| {
                                corrupt("content_refs", "base reference shorter than its use")
                            })?;
                            out.extend(prefix.iter().cloned());
                        }
                    }
                }
                Some(out)
            }
        };
        memo.insert(current, pieces.clone());
        below = pieces.clone();
        result = pieces;
    }
    Ok(result)
}

/// Encodes a blob as stores before content segments kept it (tests of the migration).
#[cfg(test)]
pub(crate) fn encode_blob(text: &str) -> Vec<u8> {
    thread_local! {
        // One compression context per thread, reused: creating one per blob cost the writer
        // thread more than compressing (a 7% share of an ingest profile with content).
        static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let compress = |text: &str| {
        COMPRESSOR.with_borrow_mut(|slot| {
            if slot.is_none() {
                *slot = zstd::bulk::Compressor::new(BLOB_ZSTD_LEVEL).ok();
            }
            slot.as_mut()
                .and_then(|compressor| compressor.compress(text.as_bytes()).ok())
        })
    };
    if text.len() >= COMPRESS_MIN_BYTES
        && let Some(compressed) = compress(text)
        && compressed.len() < text.len()
    {
        let mut out = Vec::with_capacity(compressed.len() + 2);
        out.push(CONTENT_VERSION);
        out.push(CODEC_ZSTD);
        out.extend_from_slice(&compressed);
        return out;
    }
    let mut out = Vec::with_capacity(text.len() + 2);
    out.push(CONTENT_VERSION);
    out.push(CODEC_RAW);
    out.extend_from_slice(text.as_bytes());
    out
}

/// Decodes a blob of the legacy `content` table.
pub(crate) fn decode_blob(bytes: &[u8], location: &str) -> Result<String> {
    let mut reader = Reader { bytes, location };
    reader.version()?;
    let codec = reader.u8()?;
    let raw = match codec {
        CODEC_RAW => reader.bytes.to_vec(),
        CODEC_ZSTD => {
            let mut out = Vec::new();
            zstd::stream::read::Decoder::new(reader.bytes)
                .and_then(|mut decoder| decoder.read_to_end(&mut out))
                .map_err(|error| corrupt(location, format!("zstd: {error}")))?;
            out
        }
        other => return Err(corrupt(location, format!("unknown codec {other}"))),
    };
    String::from_utf8(raw).map_err(|_| corrupt(location, "text is not UTF-8"))
}

/// When each tier last referenced a blob (the legacy `content_seen` table).
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub(crate) tiers: BTreeMap<String, u64>,
}

impl Seen {
    pub(crate) fn last(&self) -> u64 {
        self.tiers.values().copied().max().unwrap_or(0)
    }

    #[cfg(test)]
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![CONTENT_VERSION];
        out.extend_from_slice(&self.last().to_le_bytes());
        out.extend_from_slice(&(self.tiers.len() as u16).to_le_bytes());
        for (tier, seen) in &self.tiers {
            out.extend_from_slice(&(tier.len() as u16).to_le_bytes());
            out.extend_from_slice(tier.as_bytes());
            out.extend_from_slice(&seen.to_le_bytes());
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8], location: &str) -> Result<Seen> {
        let mut reader = Reader { bytes, location };
        reader.version()?;
        let _last = reader.u64()?;
        let count = reader.u16()?;
        let mut tiers = BTreeMap::new();
        for _ in 0..count {
            let len = usize::from(reader.u16()?);
            let tier = reader.text(len)?;
            tiers.insert(tier, reader.u64()?);
        }
        Ok(Seen { tiers })
    }
}

/// Content follows its trace's tier: when `trace` reaches `tier` (a rule placed a span of it
/// there), every blob its references name must be kept by that tier's content keep, including
/// content that arrived before the promotion. Runs in the caller's transaction (the write that
/// promoted the trace): the references of older stores (redb) are promoted at once
/// ([`ContentStage::promote_blob`]); those in the trace's rows get a trace pin
/// (`content_trace_pins`), which the next seal or content expiry resolves, unless `pin` is
/// false: the caller knows every row of the trace is in this write and staging kept their
/// blobs at `tier` ([`ContentStage::needs_trace_pin`]).
pub(crate) fn promote_trace_content(
    txn: &redb::WriteTransaction,
    trace: &[u8; 16],
    tier: &str,
    pin: bool,
    stage: &mut ContentStage<'_>,
) -> Result<()> {
    let refs = txn
        .open_table(CONTENT_REFS)
        .map_err(store_error("open content refs"))?;
    let mut blobs: BTreeSet<ContentHash> = BTreeSet::new();
    for entry in refs
        .range::<&[u8]>(trace.as_slice()..)
        .map_err(store_error("read content refs"))?
    {
        let (key, value) = entry.map_err(store_error("read content refs"))?;
        if !key.value().starts_with(trace) {
            break;
        }
        let location = format!("content_refs {}", hex::encode(key.value()));
        let decoded = decode_ref(value.value(), &location)?;
        for piece in decoded.pieces.iter().flatten() {
            if let StoredPiece::Piece(ContentPiece::Blob(hash)) = piece {
                blobs.insert(*hash);
            }
        }
    }
    drop(refs);
    // The blobs its span rows name are found by a scan: the next seal or expiry does it
    // (unless the caller knows staging kept them at `tier` already).
    if pin {
        let mut trace_pins = txn
            .open_table(crate::tables::CONTENT_TRACE_PINS)
            .map_err(store_error("open content trace pins"))?;
        let pinned = trace_pins
            .get(trace.as_slice())
            .map_err(store_error("read content trace pins"))?
            .map(|value| value.value().to_owned());
        if pinned.is_none_or(|pinned| stage.policy.rank(&pinned) < stage.policy.rank(tier)) {
            trace_pins
                .insert(trace.as_slice(), tier)
                .map_err(store_error("write content trace pin"))?;
        }
    }
    if blobs.is_empty() {
        return Ok(());
    }
    let index = txn
        .open_table(CONTENT_INDEX)
        .map_err(store_error("open content index"))?;
    let mut pins = open_pins(txn)?;
    for hash in blobs {
        stage.promote_blob(&index, &mut pins, &hash, tier)?;
    }
    Ok(())
}

/// Erasure of `traces`' content, inside the caller's transaction: removes their references
/// of older stores (the `content_refs` table; those in span rows go with the rows), and takes
/// the blobs no remaining reference names out of the content index; the segments that held them
/// are marked for a rewrite without them (`content_dirty`, see `store/content_seal.rs`).
/// `candidates` are the blobs the erased rows name, `still_named` those the other rows name.
/// Returns the legacy references removed and the blobs no longer named (the caller removes them
/// from the memtable too).
pub(crate) fn erase_traces(
    txn: &redb::WriteTransaction,
    traces: &HashSet<[u8; 16]>,
    mut candidates: HashSet<ContentHash>,
    mut still_named: HashSet<ContentHash>,
) -> Result<(u64, Vec<ContentHash>)> {
    if traces.is_empty() {
        return Ok((0, Vec::new()));
    }
    let mut refs = txn
        .open_table(CONTENT_REFS)
        .map_err(store_error("open content refs"))?;
    let mut removed_refs: Vec<Vec<u8>> = Vec::new();
    for entry in refs.iter().map_err(store_error("read content refs"))? {
        let (key, value) = entry.map_err(store_error("read content refs"))?;
        let key = key.value();
        let erased = key
            .get(..16)
            .and_then(|prefix| <[u8; 16]>::try_from(prefix).ok())
            .is_some_and(|trace| traces.contains(&trace));
        let decoded = decode_ref(value.value(), "content_refs")?;
        let hashes = decoded
            .pieces
            .iter()
            .flatten()
            // Base pointers stay inside a trace: each reference's own blobs cover them all.
            .filter_map(|piece| match piece {
                StoredPiece::Piece(ContentPiece::Blob(hash)) => Some(*hash),
                StoredPiece::Piece(ContentPiece::Literal(_)) | StoredPiece::Base { .. } => None,
            });
        if erased {
            removed_refs.push(key.to_vec());
            candidates.extend(hashes);
        } else {
            still_named.extend(hashes);
        }
    }
    for key in &removed_refs {
        refs.remove(key.as_slice())
            .map_err(store_error("remove content ref"))?;
    }
    let mut index = txn
        .open_table(CONTENT_INDEX)
        .map_err(store_error("open content index"))?;
    let mut dirty = txn
        .open_table(CONTENT_DIRTY)
        .map_err(store_error("open content dirty"))?;
    let mut pins = open_pins(txn)?;
    let dropped: Vec<ContentHash> = candidates.difference(&still_named).copied().collect();
    for hash in &dropped {
        let removed = index
            .remove(crate::content_segment::index_key(hash))
            .map_err(store_error("remove content index"))?
            .map(|value| crate::content_segment::BlobLocation::decode(&value.value()));
        if let Some(location) = removed {
            dirty
                .insert(location.segment, ())
                .map_err(store_error("write content dirty"))?;
        }
        pins.remove(hash.as_slice())
            .map_err(store_error("remove content pin"))?;
    }
    Ok((removed_refs.len() as u64, dropped))
}

/// Removes the content references of `traces` (their spans expired), by key prefix, inside the
/// caller's transaction. Blobs are left to content expiry, which runs on its own clock and
/// removes them once no reference is recent. Returns the references removed.
pub(crate) fn remove_refs_of_traces(
    txn: &redb::WriteTransaction,
    traces: &[[u8; 16]],
) -> Result<u64> {
    let mut refs = txn
        .open_table(CONTENT_REFS)
        .map_err(store_error("open content refs"))?;
    let mut removed = 0;
    for trace in traces {
        let mut end = trace.to_vec();
        // Keys are trace id (16) + span id (8) + key: every key of the trace sorts below the
        // trace id followed by 0xff bytes of the span id length.
        end.extend_from_slice(&[0xff; 9]);
        let keys: Vec<Vec<u8>> = refs
            .range(trace.as_slice()..end.as_slice())
            .map_err(store_error("read content refs"))?
            .map(|entry| entry.map(|(key, _)| key.value().to_vec()))
            .collect::<std::result::Result<_, _>>()
            .map_err(store_error("read content refs"))?;
        for key in keys {
            refs.remove(key.as_slice())
                .map_err(store_error("remove content ref"))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// `refs`, each with the tier of its trace when that ranks above its own: content of a
/// trace already promoted (a decision seen earlier) is kept as that tier's content.
fn with_trace_tiers(
    txn: &redb::WriteTransaction,
    refs: &[ContentRef],
    rows: &[arrow::array::RecordBatch],
    policy: &crate::RetentionPolicy,
) -> Result<Vec<ContentRef>> {
    let keys = txn
        .open_table(TRACE_KEYS)
        .map_err(store_error("open trace keys"))?;
    let in_rows = highest_tiers(rows, policy);
    let mut tiers: std::collections::HashMap<[u8; 16], Option<String>> =
        std::collections::HashMap::new();
    let mut out = Vec::with_capacity(refs.len());
    for reference in refs {
        let trace = reference.trace_id.0;
        if let std::collections::hash_map::Entry::Vacant(slot) = tiers.entry(trace) {
            let stored = keys
                .get(trace.as_slice())
                .map_err(store_error("read trace keys"))?
                .map(|value| TraceKeys::decode(value.value()))
                .transpose()?
                .and_then(|keys| keys.tier.map(|tier| tier.to_string()));
            let tier = match (stored, in_rows.get(&trace)) {
                (Some(stored), Some(own)) if policy.rank(own) > policy.rank(&stored) => {
                    Some((*own).to_owned())
                }
                (None, Some(own)) => Some((*own).to_owned()),
                (stored, _) => stored,
            };
            slot.insert(tier);
        }
        let mut reference = reference.clone();
        if let Some(Some(trace_tier)) = tiers.get(&trace) {
            let own = reference.tier.as_deref().unwrap_or(policy.default_tier());
            if policy.rank(trace_tier) > policy.rank(own) {
                reference.tier = Some(trace_tier.clone());
            }
        }
        out.push(reference);
    }
    Ok(out)
}

/// The highest retention tier of each trace's rows in `batches` (NULL: the default tier).
fn highest_tiers<'b>(
    batches: &'b [arrow::array::RecordBatch],
    policy: &crate::RetentionPolicy,
) -> std::collections::HashMap<[u8; 16], &'b str> {
    use arrow::array::{Array, AsArray};
    let mut out: std::collections::HashMap<[u8; 16], &str> = std::collections::HashMap::new();
    for rows in batches {
        let column = |name| {
            rows.column_by_name(name)
                .and_then(|c| c.as_string_opt::<i32>())
        };
        let (Some(traces), Some(tiers)) = (
            column(crate::schema::columns::TRACE_ID),
            column(crate::schema::columns::RETENTION_TIER),
        ) else {
            continue;
        };
        for row in 0..rows.num_rows() {
            if !tiers.is_valid(row) || traces.is_null(row) {
                continue;
            }
            let Some(trace) = crate::trace_keys::raw_trace_id(traces.value(row)) else {
                continue;
            };
            let tier = tiers.value(row);
            out.entry(trace)
                .and_modify(|kept| {
                    if policy.rank(tier) > policy.rank(kept) {
                        *kept = tier;
                    }
                })
                .or_insert(tier);
        }
    }
    out
}

/// Tells `stage` the tier each reference naming a blob was staged at, or that one names a
/// blob not in `staged` (see [`ContentStage::needs_trace_pin`]).
fn note_references(
    stage: &mut ContentStage<'_>,
    refs: &[ContentRef],
    staged: &HashSet<&ContentHash>,
) {
    for reference in refs {
        let mut blobs = reference
            .pieces
            .iter()
            .flatten()
            .filter_map(|piece| match piece {
                ContentPiece::Blob(hash) => Some(hash),
                ContentPiece::Literal(_) => None,
            })
            .peekable();
        if blobs.peek().is_none() {
            continue;
        }
        let rank = blobs
            .all(|hash| staged.contains(hash))
            .then(|| stage.policy.rank(reference.tier.as_deref().unwrap_or("")));
        stage.note_reference(reference.trace_id.0, rank);
    }
}

/// Stages the blobs of one write (see [`ContentStage`]: new ones go to the memtable with the
/// write's rows), each with the highest tier of a reference naming it, raised to its trace's
/// tier: the one stored, or the highest of the trace's rows in `rows` (the write's span rows),
/// whichever ranks higher. The references themselves are in the write's span rows
/// (`content_refs.rs`).
pub(crate) fn stage_content(
    txn: &redb::WriteTransaction,
    batch: &ContentBatch,
    rows: &[arrow::array::RecordBatch],
    policy: &crate::RetentionPolicy,
    stage: &mut ContentStage<'_>,
) -> Result<()> {
    if batch.blobs.is_empty() {
        note_references(stage, &batch.refs, &HashSet::new());
        return Ok(());
    }
    let refs_in = with_trace_tiers(txn, &batch.refs, rows, policy)?;
    stage_blobs(txn, batch, &refs_in, stage)
}

/// Stages each blob of `batch` with the highest tier of a reference in `refs_in` naming it.
fn stage_blobs(
    txn: &redb::WriteTransaction,
    batch: &ContentBatch,
    refs_in: &[ContentRef],
    stage: &mut ContentStage<'_>,
) -> Result<()> {
    let policy = stage.policy;
    let mut named: std::collections::HashMap<ContentHash, (&str, [u8; 16])> =
        std::collections::HashMap::new();
    for reference in refs_in {
        let tier = reference.tier.as_deref().unwrap_or("");
        for piece in reference.pieces.iter().flatten() {
            if let ContentPiece::Blob(hash) = piece {
                named
                    .entry(*hash)
                    .and_modify(|(kept, _)| {
                        if policy.rank(tier) > policy.rank(kept) {
                            *kept = tier;
                        }
                    })
                    .or_insert((tier, reference.trace_id.0));
            }
        }
    }
    let in_batch: HashSet<&ContentHash> = batch.blobs.iter().map(|(hash, _)| hash).collect();
    note_references(stage, refs_in, &in_batch);
    let index = txn
        .open_table(CONTENT_INDEX)
        .map_err(store_error("open content index"))?;
    for (hash, text) in &batch.blobs {
        let (tier, trace) = named.get(hash).copied().unwrap_or(("", [0; 16]));
        stage.stage_blob(&index, hash, text, tier, trace, batch.stored_unix_nanos)?;
    }
    Ok(())
}

/// References resolved per read step: their blobs are then looked up together.
const READ_CHUNK_ROWS: usize = 4096;

/// Order and identity of a content row: trace, span, key, digest.
type RowKey = ([u8; 16], [u8; 8], String, ContentHash);

/// A content row whose value waits for its blobs.
struct PendingRow {
    row: ContentRow,
    pieces: Option<Vec<ContentPiece>>,
}

/// Finds blob texts for a read: the memtable first, then the content index (read after the
/// memtable, so a blob a seal moved meanwhile is found in its segment).
struct BlobSource<'a> {
    engine: &'a Engine,
    reader: crate::content_segment::BlobReader,
    /// False: only whether each blob is kept (the index), not its text.
    texts: bool,
    /// Text of the rows filled so far, and its bound.
    text_bytes: usize,
    max_text_bytes: usize,
}

/// What [`Engine::scan_content_with`] reads.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ContentScan {
    /// Only these traces' rows (all when `None`).
    pub trace_ids: Option<Vec<TraceId>>,
    /// Only the first rows, in the scan's order.
    pub limit: Option<usize>,
    /// Only each value's status: a kept value reads as `Present("")` and no content segment
    /// is read (what a count or a `GROUP BY status` needs).
    pub status_only: bool,
    /// Fail with [`Error::TooLarge`] once the values read hold more text than this.
    pub max_text_bytes: Option<usize>,
}

impl ContentScan {
    /// Every row of every trace, with its text.
    pub fn new() -> ContentScan {
        ContentScan::default()
    }

    /// Only `traces`' rows.
    pub fn traces(mut self, traces: Vec<TraceId>) -> ContentScan {
        self.trace_ids = Some(traces);
        self
    }

    /// Only the first `limit` rows.
    pub fn limit(mut self, limit: usize) -> ContentScan {
        self.limit = Some(limit);
        self
    }

    /// Statuses only (see [`ContentScan::status_only`]).
    pub fn status_only(mut self) -> ContentScan {
        self.status_only = true;
        self
    }

    /// The bound on text read.
    pub fn max_text_bytes(mut self, bytes: usize) -> ContentScan {
        self.max_text_bytes = Some(bytes);
        self
    }
}

impl<'a> BlobSource<'a> {
    fn new(engine: &'a Engine) -> BlobSource<'a> {
        BlobSource {
            engine,
            reader: crate::content_segment::BlobReader::new(engine.data_dir()),
            texts: true,
            text_bytes: 0,
            max_text_bytes: usize::MAX,
        }
    }

    /// Gives each pending row its value and moves it to `rows`.
    fn fill(&mut self, pending: &mut Vec<PendingRow>, rows: &mut Vec<ContentRow>) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let wanted: HashSet<ContentHash> = pending
            .iter()
            .flat_map(|row| row.pieces.iter().flatten())
            .filter_map(|piece| match piece {
                ContentPiece::Blob(hash) => Some(*hash),
                ContentPiece::Literal(_) => None,
            })
            .collect();
        let mut texts = self.engine.memtable_blobs(&wanted);
        let missing: Vec<ContentHash> = wanted
            .into_iter()
            .filter(|hash| !texts.contains_key(hash))
            .collect();
        if !missing.is_empty() {
            self.read_stored(&missing, &mut texts)?;
        }
        for PendingRow { mut row, pieces } in pending.drain(..) {
            if let Some(pieces) = pieces {
                let mut text = String::new();
                let mut expired = false;
                for piece in pieces {
                    match piece {
                        ContentPiece::Literal(literal) if self.texts => text.push_str(&literal),
                        ContentPiece::Literal(_) => {}
                        ContentPiece::Blob(hash) => match texts.get(&hash) {
                            Some(blob) if self.texts => text.push_str(blob),
                            Some(_) => {}
                            None => {
                                expired = true;
                                break;
                            }
                        },
                    }
                }
                self.text_bytes = self.text_bytes.saturating_add(text.len());
                if self.text_bytes > self.max_text_bytes {
                    return Err(Error::TooLarge {
                        what: "content read",
                        limit: self.max_text_bytes,
                        advice: "filter by trace_id, add a LIMIT, or leave out the value column",
                    });
                }
                row.value = if expired {
                    ContentValue::Expired { digest: row.digest }
                } else {
                    ContentValue::Present(text)
                };
            }
            rows.push(row);
        }
        Ok(())
    }

    /// Reads `hashes` from their content segments into `texts`; a blob the index does not
    /// hold (expired, erased) is left out. A segment file removed after the index was read
    /// (expiry, or a rewrite that moved the blob) is looked up once more.
    fn read_stored(
        &mut self,
        hashes: &[ContentHash],
        texts: &mut std::collections::HashMap<ContentHash, std::sync::Arc<str>>,
    ) -> Result<()> {
        let mut todo: Vec<ContentHash> = hashes.to_vec();
        for _attempt in 0..2 {
            let txn = self
                .engine
                .database()
                .begin_read()
                .map_err(store_error("begin content read"))?;
            let index = match txn.open_table(CONTENT_INDEX) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
                Err(error) => return Err(Error::store("open content index", error)),
            };
            let mut located = Vec::with_capacity(todo.len());
            for hash in &todo {
                if let Some(location) = crate::content_memtable::indexed(&index, hash)? {
                    located.push((*hash, location));
                }
            }
            drop(index);
            drop(txn);
            if !self.texts {
                for (hash, _) in located {
                    texts.insert(hash, std::sync::Arc::from(""));
                }
                break;
            }
            // In file order: blocks are read (and decompressed) once.
            located.sort_by_key(|(_, location)| (location.segment, location.block_offset));
            let mut gone = Vec::new();
            for (hash, location) in located {
                match self.reader.read(&location)? {
                    Some(text) => {
                        texts.insert(hash, std::sync::Arc::from(text));
                    }
                    None => gone.push(hash),
                }
            }
            if gone.is_empty() {
                break;
            }
            self.reader = crate::content_segment::BlobReader::new(self.engine.data_dir());
            todo = gone;
        }
        Ok(())
    }
}

impl Engine {
    /// The content references of one trace with their values (or why they are gone), ordered by
    /// span id and key.
    pub fn content_for_trace(&self, trace_id: &TraceId) -> Result<Vec<ContentRow>> {
        self.scan_content(Some(std::slice::from_ref(trace_id)))
    }

    /// Content rows of the given traces, or of every trace when `trace_ids` is `None`, ordered
    /// by trace, span, key and digest. A span sent more than once (an exporter's re-send) gives
    /// one row per key and value: the same value re-sent is one row, a changed value another
    /// (each copy of the span names its own by digest).
    pub fn scan_content(&self, trace_ids: Option<&[TraceId]>) -> Result<Vec<ContentRow>> {
        self.scan_content_with(&ContentScan {
            trace_ids: trace_ids.map(<[TraceId]>::to_vec),
            ..ContentScan::default()
        })
    }

    /// The rows of [`Engine::scan_content`] that `scan` asks for, in the same order: the first
    /// `limit`, with or without their text, failing with [`Error::TooLarge`] once the text
    /// read passes `max_text_bytes`.
    pub fn scan_content_with(&self, scan: &ContentScan) -> Result<Vec<ContentRow>> {
        let trace_ids = scan.trace_ids.as_deref();
        let limit = scan.limit;
        let mut found: BTreeMap<RowKey, PendingRow> = BTreeMap::new();
        self.legacy_refs(trace_ids, &mut found)?;
        for (_, reference) in self.row_refs(trace_ids)? {
            let key = (
                reference.trace_id.0,
                reference.span_id.0,
                reference.key.clone(),
                reference.digest,
            );
            found.insert(
                key,
                PendingRow {
                    row: ContentRow {
                        trace_id: reference.trace_id,
                        span_id: reference.span_id,
                        key: reference.key,
                        form: reference.form,
                        digest: reference.digest,
                        value: ContentValue::NotCaptured {
                            digest: reference.digest,
                        },
                    },
                    pieces: reference.pieces,
                },
            );
        }
        let wanted = limit.unwrap_or(usize::MAX).min(found.len());
        let mut rows = Vec::with_capacity(wanted);
        let mut blobs = BlobSource::new(self);
        blobs.texts = !scan.status_only;
        blobs.max_text_bytes = scan.max_text_bytes.unwrap_or(usize::MAX);
        let mut pending = Vec::with_capacity(READ_CHUNK_ROWS);
        for (_, row) in found.into_iter().take(wanted) {
            pending.push(row);
            if pending.len() >= READ_CHUNK_ROWS {
                blobs.fill(&mut pending, &mut rows)?;
            }
        }
        blobs.fill(&mut pending, &mut rows)?;
        Ok(rows)
    }

    /// References of stores written before they moved into the span rows.
    fn legacy_refs(
        &self,
        trace_ids: Option<&[TraceId]>,
        found: &mut BTreeMap<RowKey, PendingRow>,
    ) -> Result<()> {
        let txn = self
            .database()
            .begin_read()
            .map_err(store_error("begin content read"))?;
        let refs = match txn.open_table(CONTENT_REFS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(error) => return Err(Error::store("open content refs", error)),
        };
        let mut memo = std::collections::HashMap::new();
        let mut visit = |key: &[u8], value: &[u8]| -> Result<()> {
            if key.len() < 24 {
                return Err(corrupt("content_refs", "key shorter than 24 bytes"));
            }
            let mut trace = [0u8; 16];
            trace.copy_from_slice(&key[..16]);
            let mut span = [0u8; 8];
            span.copy_from_slice(&key[16..24]);
            let name = String::from_utf8(key[24..].to_vec())
                .map_err(|_| corrupt("content_refs", "key is not UTF-8"))?;
            let location = format!("content_refs {}", hex::encode(&key[..24]));
            let decoded = decode_ref(value, &location)?;
            let pieces = match decoded.pieces {
                None => None,
                Some(_) => resolve_pieces(&refs, key, &mut memo)?,
            };
            found.insert(
                (trace, span, name.clone(), decoded.digest),
                PendingRow {
                    row: ContentRow {
                        trace_id: TraceId(trace),
                        span_id: SpanId(span),
                        key: name,
                        form: decoded.form,
                        digest: decoded.digest,
                        value: ContentValue::NotCaptured {
                            digest: decoded.digest,
                        },
                    },
                    pieces,
                },
            );
            Ok(())
        };
        match trace_ids {
            None => {
                for entry in refs.iter().map_err(store_error("read content refs"))? {
                    let (key, value) = entry.map_err(store_error("read content refs"))?;
                    visit(key.value(), value.value())?;
                }
            }
            Some(trace_ids) => {
                let mut sorted = trace_ids.to_vec();
                sorted.sort();
                sorted.dedup();
                for trace_id in sorted {
                    let start = trace_id.0.as_slice();
                    for entry in refs
                        .range::<&[u8]>(start..)
                        .map_err(store_error("read content refs"))?
                    {
                        let (key, value) = entry.map_err(store_error("read content refs"))?;
                        if !key.value().starts_with(start) {
                            break;
                        }
                        visit(key.value(), value.value())?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes content whose newest reference is older than `cutoff_unix_nanos` (the default
    /// tier's cutoff). References keep their digests, so reads of them say "expired".
    pub fn expire_content(&self, cutoff_unix_nanos: u64, dry_run: bool) -> Result<ContentExpiry> {
        self.expire_content_with(
            &ContentExpiryRequest::new(cutoff_unix_nanos).with_dry_run(dry_run),
        )
    }

    /// The store's secret key for content digests: 32 random bytes made on first use and kept
    /// in the database, so digests of equal values stay equal across restarts (and differ
    /// between stores, so a digest does not reveal a guessable value).
    pub fn content_digest_key(&self) -> Result<[u8; 32]> {
        let txn = self
            .database()
            .begin_write()
            .map_err(store_error("begin content key"))?;
        let key = {
            let mut meta = txn
                .open_table(CONTENT_META)
                .map_err(store_error("open content meta"))?;
            let existing = meta
                .get(DIGEST_KEY)
                .map_err(store_error("read content key"))?
                .map(|value| value.value().to_vec());
            match existing {
                Some(bytes) => bytes
                    .try_into()
                    .map_err(|_| corrupt("content_meta", "digest key is not 32 bytes"))?,
                None => {
                    let mut key = [0u8; 32];
                    let path = std::path::Path::new("/dev/urandom");
                    std::fs::File::open(path)
                        .and_then(|mut file| file.read_exact(&mut key))
                        .map_err(|source| Error::io("read random bytes", path, source))?;
                    meta.insert(DIGEST_KEY, key.as_slice())
                        .map_err(store_error("write content key"))?;
                    key
                }
            }
        };
        txn.commit().map_err(store_error("commit content key"))?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_round_trip_through_their_encoding() {
        let reference = ContentRef {
            trace_id: TraceId([1; 16]),
            span_id: SpanId([2; 8]),
            key: "gen_ai.input.messages".into(),
            digest: [7; 32],
            form: 1,
            pieces: Some(vec![
                ContentPiece::Literal("[".into()),
                ContentPiece::Blob([9; 32]),
                ContentPiece::Literal("]".into()),
            ]),
            tier: Some("decision".into()),
        };
        let decoded = decode_ref(&encode_ref(&reference, 5), "test").unwrap();
        assert_eq!(decoded.digest, [7; 32]);
        assert_eq!(decoded.form, 1);
        assert_eq!(
            decoded.pieces,
            reference
                .pieces
                .clone()
                .map(|pieces| pieces.into_iter().map(StoredPiece::Piece).collect())
        );
        assert!(decode_ref(&encode_ref(&reference, 5)[..40], "test").is_err());
    }

    #[test]
    fn blobs_round_trip_raw_and_compressed() {
        for text in ["short", &"long text that repeats ".repeat(20)] {
            let encoded = encode_blob(text);
            assert_eq!(decode_blob(&encoded, "test").unwrap(), text);
        }
        assert_eq!(encode_blob(&"x".repeat(1000))[1], CODEC_ZSTD);
    }
}
