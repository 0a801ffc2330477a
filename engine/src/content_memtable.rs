//! Content not yet in a content segment: the distinct blobs of the memtable's writes, each with
//! the tier whose content keep it needs. It lives in the memtable beside the span rows, is
//! frozen with them and sealed into one content segment per tier
//! (`store/content_seal.rs`).
//!
//! [`ContentStage`] decides, for each blob a write names, where it will be kept:
//! - already in the active memtable: nothing is stored again (its last-seen time and tier
//!   may rise);
//! - in a content segment of a tier kept at least as long, sealed less than
//!   [`REFRESH_NANOS`] before: nothing is stored, the segment's last-seen time rises;
//! - otherwise (new, in an older segment, in a shorter-kept tier, or in the frozen memtable
//!   being sealed) the blob goes into the active memtable, so the next seal stores it again in
//!   a segment that expires late enough.
//!
//! Invariants: staging reads the index and the memtables but changes neither; the writer
//! applies the [`ContentDelta`] to the active memtable with the write's rows, and recovery
//! stages the WAL records after the last seal again, so the memtable is rebuilt the same way.
//! A segment is kept while any reference names one of its blobs within its tier's keep, and at
//! most [`REFRESH_NANOS`] plus the seal interval past it.

use std::collections::HashMap;
use std::sync::Arc;

use redb::ReadableTable;

use crate::content::ContentHash;
use crate::content_segment::{BlobLocation, ContentSegmentMeta};
use crate::error::{Error, Result};
use crate::retention::RetentionPolicy;
use crate::tables::CONTENT_PINS;

/// A blob referenced again this long after its segment's first reference is stored again
/// rather than keeping the old segment alive: one hot blob (a system prompt) never holds a
/// segment of otherwise expired content past its keep for longer than this.
pub(crate) const REFRESH_NANOS: u64 = 3_600 * 1_000_000_000;

/// One blob in the memtable.
#[derive(Debug, Clone)]
pub(crate) struct MemBlob {
    pub(crate) text: Arc<str>,
    /// Tier whose content keep it needs (`""`: the default content keep).
    pub(crate) tier: Arc<str>,
    /// Trace of its first reference: a segment groups blobs by it, so the messages of one
    /// conversation sit (and compress) together.
    pub(crate) trace: [u8; 16],
    /// Arrival order.
    pub(crate) order: u64,
    /// Store time (ns) of its first and latest reference.
    pub(crate) first_stored: u64,
    pub(crate) last_stored: u64,
}

/// Blobs of the memtable by hash.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContentMemtable {
    blobs: HashMap<ContentHash, MemBlob>,
    text_bytes: usize,
    next_order: u64,
}

/// Memory of one blob besides its text (map entry, `Arc` headers, tier).
const BLOB_OVERHEAD_BYTES: usize = 128;

impl ContentMemtable {
    pub(crate) fn get(&self, hash: &ContentHash) -> Option<&MemBlob> {
        self.blobs.get(hash)
    }

    pub(crate) fn len(&self) -> usize {
        self.blobs.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Memory the blobs hold (what counts against the memtable's size).
    pub(crate) fn bytes(&self) -> usize {
        self.text_bytes + self.blobs.len() * BLOB_OVERHEAD_BYTES
    }

    /// Bytes of text.
    pub(crate) fn text_bytes(&self) -> usize {
        self.text_bytes
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ContentHash, &MemBlob)> {
        self.blobs.iter()
    }

    /// The earliest last-reference time of a blob, if any.
    pub(crate) fn oldest_seen(&self) -> Option<u64> {
        self.blobs.values().map(|blob| blob.last_stored).min()
    }

    /// Applies what staging decided (see [`ContentStage`]).
    pub(crate) fn apply(&mut self, delta: ContentDelta, policy: &RetentionPolicy) {
        for (hash, mut blob) in delta.new {
            match self.blobs.get_mut(&hash) {
                Some(existing) => existing.absorb(&blob.tier, blob.last_stored, policy),
                None => {
                    blob.order = self.next_order;
                    self.next_order += 1;
                    self.text_bytes += blob.text.len();
                    self.blobs.insert(hash, blob);
                }
            }
        }
        for (hash, tier, stored) in delta.touched {
            if let Some(existing) = self.blobs.get_mut(&hash) {
                existing.absorb(&tier, stored, policy);
            }
        }
    }

    /// Removes blobs (an erasure).
    pub(crate) fn remove(&mut self, hash: &ContentHash) {
        if let Some(blob) = self.blobs.remove(hash) {
            self.text_bytes -= blob.text.len();
        }
    }
}

impl MemBlob {
    fn absorb(&mut self, tier: &Arc<str>, stored: u64, policy: &RetentionPolicy) {
        if policy.rank(tier) > policy.rank(&self.tier) {
            self.tier = Arc::clone(tier);
        }
        self.last_stored = self.last_stored.max(stored);
        self.first_stored = self.first_stored.min(stored);
    }
}

/// What staging one group of writes decided, applied with their rows.
#[derive(Debug, Default)]
pub(crate) struct ContentDelta {
    /// Blobs to add to the active memtable.
    pub(crate) new: Vec<(ContentHash, MemBlob)>,
    /// Blobs already in the active memtable referenced again: (hash, tier, store time).
    pub(crate) touched: Vec<(ContentHash, Arc<str>, u64)>,
    /// Content segments referenced again: (segment id, store time).
    pub(crate) bumps: Vec<(u64, u64)>,
}

/// Decides where the blobs of a group of writes are kept (see the module doc).
pub(crate) struct ContentStage<'a> {
    pub(crate) active: &'a ContentMemtable,
    pub(crate) frozen: Option<&'a ContentMemtable>,
    pub(crate) catalog: &'a HashMap<u64, ContentSegmentMeta>,
    pub(crate) policy: &'a RetentionPolicy,
    pub(crate) delta: ContentDelta,
    /// Index into `delta.new` by hash.
    staged: HashMap<ContentHash, usize>,
    /// Interned tier names.
    tiers: HashMap<String, Arc<str>>,
    /// Traces of the memtables' rows (active, frozen) before this group, when the caller
    /// knows them: a trace in neither (and in no segment) has no rows but the group's.
    earlier_rows: Option<EarlierRows<'a>>,
    /// Per trace of the group's references: the lowest rank a reference of it was staged
    /// at, or `None` when one names a blob the group did not stage (kept elsewhere, at a tier
    /// this group did not decide).
    content_floor: HashMap<[u8; 16], Option<usize>>,
}

/// The trace sets of the active and frozen memtables' rows.
pub(crate) type EarlierRows<'a> = (
    &'a std::collections::HashSet<[u8; 16]>,
    Option<&'a std::collections::HashSet<[u8; 16]>>,
);

fn store_error<E: Into<redb::Error>>(operation: &'static str) -> impl FnOnce(E) -> Error {
    move |source| Error::store(operation, source)
}

/// The location the index holds for `hash`, if any.
pub(crate) fn indexed(
    index: &impl ReadableTable<[u8; 16], [u8; 24]>,
    hash: &ContentHash,
) -> Result<Option<BlobLocation>> {
    Ok(index
        .get(crate::content_segment::index_key(hash))
        .map_err(store_error("read content index"))?
        .map(|value| BlobLocation::decode(&value.value())))
}

impl<'a> ContentStage<'a> {
    pub(crate) fn new(
        active: &'a ContentMemtable,
        frozen: Option<&'a ContentMemtable>,
        catalog: &'a HashMap<u64, ContentSegmentMeta>,
        policy: &'a RetentionPolicy,
    ) -> ContentStage<'a> {
        ContentStage {
            active,
            frozen,
            catalog,
            policy,
            delta: ContentDelta::default(),
            staged: HashMap::new(),
            tiers: HashMap::new(),
            earlier_rows: None,
            content_floor: HashMap::new(),
        }
    }

    /// Lets [`ContentStage::needs_trace_pin`] skip traces whose rows are all in this group.
    pub(crate) fn with_earlier_rows(mut self, earlier: EarlierRows<'a>) -> ContentStage<'a> {
        self.earlier_rows = Some(earlier);
        self
    }

    /// Notes that a reference of `trace` was staged at `rank`, or (`None`) names a blob this
    /// group did not stage.
    pub(crate) fn note_reference(&mut self, trace: [u8; 16], rank: Option<usize>) {
        let floor = self.content_floor.entry(trace).or_insert(rank);
        *floor = match (*floor, rank) {
            (Some(a), Some(b)) => Some(a.min(b)),
            _ => None,
        };
    }

    /// Whether a trace raised to `tier` by this group needs a trace pin (the seal's scan of its
    /// rows for the blobs they name, see `store/content_seal.rs`). Not when every row of it is
    /// in this group (no keys stored before, in neither memtable, and `in_segments` false:
    /// asked last, it reads the trace index) and every blob its references name was staged
    /// here at `tier` or above: staging kept them that long already. Always when the caller
    /// did not say which traces the memtables hold.
    pub(crate) fn needs_trace_pin(
        &self,
        trace: &[u8; 16],
        tier: &str,
        had_keys: bool,
        in_segments: impl FnOnce() -> Result<bool>,
    ) -> Result<bool> {
        let Some((active, frozen)) = self.earlier_rows else {
            return Ok(true);
        };
        if had_keys || active.contains(trace) || frozen.is_some_and(|set| set.contains(trace)) {
            return Ok(true);
        }
        let staged_high_enough = match self.content_floor.get(trace) {
            None => true,
            Some(None) => false,
            Some(Some(floor)) => *floor >= self.policy.rank(tier),
        };
        if !staged_high_enough {
            return Ok(true);
        }
        in_segments()
    }

    fn tier(&mut self, name: &str) -> Arc<str> {
        if let Some(tier) = self.tiers.get(name) {
            return Arc::clone(tier);
        }
        let tier: Arc<str> = Arc::from(name);
        self.tiers.insert(name.to_owned(), Arc::clone(&tier));
        tier
    }

    /// A write names blob `hash` (whose text is `text`) from a reference of `trace` kept by
    /// `tier`, stored at `stored`.
    pub(crate) fn stage_blob(
        &mut self,
        index: &impl ReadableTable<[u8; 16], [u8; 24]>,
        hash: &ContentHash,
        text: &str,
        tier: &str,
        trace: [u8; 16],
        stored: u64,
    ) -> Result<()> {
        let tier = self.tier(tier);
        if let Some(&position) = self.staged.get(hash) {
            self.delta.new[position]
                .1
                .absorb(&tier, stored, self.policy);
            return Ok(());
        }
        if self.active.get(hash).is_some() {
            self.delta.touched.push((*hash, tier, stored));
            return Ok(());
        }
        let mut tier = tier;
        // A blob the running seal is writing is stored again for the new reference: its
        // segment's times are fixed already.
        if self.frozen.and_then(|frozen| frozen.get(hash)).is_none()
            && let Some(location) = indexed(index, hash)?
            && let Some(segment) = self.catalog.get(&location.segment)
        {
            if self.policy.rank(&segment.tier) >= self.policy.rank(&tier)
                && stored.saturating_sub(segment.created) < REFRESH_NANOS
            {
                self.delta.bumps.push((segment.id, stored));
                return Ok(());
            }
            if self.policy.rank(&segment.tier) > self.policy.rank(&tier) {
                tier = self.tier(&segment.tier.clone());
            }
        }
        self.staged.insert(*hash, self.delta.new.len());
        self.delta.new.push((
            *hash,
            MemBlob {
                text: Arc::from(text),
                tier,
                trace,
                order: 0,
                first_stored: stored,
                last_stored: stored,
            },
        ));
        Ok(())
    }

    /// A trace naming blob `hash` reached `tier`: the blob must be kept by that tier's keep.
    /// In the memtable its tier rises; in a segment of a shorter-kept tier (or in the frozen
    /// memtable) it is pinned, and the next seal copies it into a segment of `tier`.
    pub(crate) fn promote_blob(
        &mut self,
        index: &impl ReadableTable<[u8; 16], [u8; 24]>,
        pins: &mut redb::Table<'_, &'static [u8], &'static str>,
        hash: &ContentHash,
        tier: &str,
    ) -> Result<()> {
        let tier = self.tier(tier);
        if let Some(&position) = self.staged.get(hash) {
            let blob = &mut self.delta.new[position].1;
            let stored = blob.last_stored;
            blob.absorb(&tier, stored, self.policy);
            return Ok(());
        }
        if let Some(blob) = self.active.get(hash) {
            self.delta.touched.push((*hash, tier, blob.last_stored));
            return Ok(());
        }
        let kept_by = match indexed(index, hash)? {
            Some(location) => self
                .catalog
                .get(&location.segment)
                .map(|segment| segment.tier.clone()),
            None => None,
        }
        .or_else(|| {
            self.frozen
                .and_then(|frozen| frozen.get(hash))
                .map(|blob| blob.tier.to_string())
        });
        let Some(kept_by) = kept_by else {
            // Not stored (expired, or never captured): nothing to keep.
            return Ok(());
        };
        if self.policy.rank(&kept_by) >= self.policy.rank(&tier) {
            return Ok(());
        }
        let pinned = pins
            .get(hash.as_slice())
            .map_err(store_error("read content pins"))?
            .map(|value| value.value().to_owned());
        if pinned.is_none_or(|pinned| self.policy.rank(&pinned) < self.policy.rank(&tier)) {
            pins.insert(hash.as_slice(), &*tier)
                .map_err(store_error("write content pins"))?;
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> ContentDelta {
        self.delta
    }
}

/// Opens the pins table of `txn`.
pub(crate) fn open_pins(
    txn: &redb::WriteTransaction,
) -> Result<redb::Table<'_, &'static [u8], &'static str>> {
    txn.open_table(CONTENT_PINS)
        .map_err(store_error("open content pins"))
}
