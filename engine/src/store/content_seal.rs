//! Content segments over their life: written at a seal (one per tier, pins resolved), expired
//! whole by their tier's content keep, rewritten without the blobs an erasure removed, loaded
//! at open; and the content of older stores (one redb value per blob) moved into segments.
//!
//! Invariants:
//! - A content segment file is fsync'd before the catalog transaction that names it; the
//!   index points a blob at it in the same transaction. Files the catalog does not name are
//!   removed at open.
//! - Expiry, rewrites and seals hold `seal_lock`, so they never race each other. Expiry takes
//!   doomed segments out of the in-memory catalog under the writer's lock first, so no write
//!   staged after that counts on them (it stores the blob again instead).
//! - A segment holding a pinned blob (see `content_memtable.rs`) is not expired before a seal
//!   has copied the blob into a segment of its new tier.
//! - A segment file is deleted only after the transaction that took it out of the catalog and
//!   the index; a reader that looked the index up before finds the file gone and looks again.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::sync::Arc;

use redb::{ReadableTable, WriteTransaction};
use tracing::{info, warn};

use crate::content::{ContentExpiry, ContentExpiryRequest, ContentHash, ContentStats, Seen};
use crate::content_memtable::{ContentMemtable, indexed};
use crate::content_segment::{self, BlobLocation, BlobReader, ContentSegmentMeta};
use crate::error::{Error, Result};
use crate::ids::TraceId;
use crate::tables::{
    CONTENT, CONTENT_BY_TIME, CONTENT_DIRTY, CONTENT_INDEX, CONTENT_PINS, CONTENT_REFS,
    CONTENT_SEEN, CONTENT_SEGMENTS, CONTENT_TRACE_PINS, META, META_NEXT_CONTENT_SEGMENT_ID,
};

use super::*;

/// zstd level of content segments: written once by the background seal and read rarely, so
/// a higher level than the span segments' pays (contentbench, 2,000 runs: level 3 -> 9 made
/// them 6% smaller for 10% more store time; 15 another 6% for twice the time).
const CONTENT_ZSTD_LEVEL: i32 = 9;

/// Blobs moved from the legacy `content` table per segment written at open.
const MIGRATE_BATCH_BLOBS: usize = 50_000;

/// The content segment catalog and the next content segment id, read in `txn` (which creates
/// the tables of a new store).
pub(super) fn load_catalog(
    txn: &WriteTransaction,
) -> Result<(HashMap<u64, ContentSegmentMeta>, u64)> {
    let mut catalog = HashMap::new();
    {
        let table = txn
            .open_table(CONTENT_SEGMENTS)
            .map_err(store_error("open content catalog"))?;
        for entry in table.iter().map_err(store_error("read content catalog"))? {
            let (id, value) = entry.map_err(store_error("read content catalog"))?;
            let meta = ContentSegmentMeta::decode(id.value(), value.value())?;
            catalog.insert(meta.id, meta);
        }
    }
    txn.open_table(CONTENT_INDEX)
        .map_err(store_error("open content index"))?;
    txn.open_table(CONTENT_PINS)
        .map_err(store_error("open content pins"))?;
    txn.open_table(CONTENT_TRACE_PINS)
        .map_err(store_error("open content trace pins"))?;
    txn.open_table(CONTENT_DIRTY)
        .map_err(store_error("open content dirty"))?;
    let stored_next = txn
        .open_table(META)
        .map_err(store_error("open meta"))?
        .get(META_NEXT_CONTENT_SEGMENT_ID)
        .map_err(store_error("read next content segment id"))?
        .map(|value| value.value())
        .unwrap_or(1);
    let next = catalog
        .keys()
        .map(|id| id + 1)
        .max()
        .unwrap_or(1)
        .max(stored_next);
    Ok((catalog, next))
}

/// What a seal writes of the content memtable.
#[derive(Debug, Default)]
pub(super) struct SealedContent {
    /// New segments and where each of their blobs is.
    pub(super) segments: Vec<(ContentSegmentMeta, Vec<(ContentHash, BlobLocation)>)>,
    /// Pins this seal satisfied: (hash, tier as read), removed if unchanged.
    pub(super) resolved_pins: Vec<(ContentHash, String)>,
    /// Catalog entries whose last-seen time rose since they were written.
    pub(super) bumped: Vec<ContentSegmentMeta>,
    /// The next content segment id after this seal.
    pub(super) next_id: u64,
}

impl SealedContent {
    /// Removes the files written (the seal failed).
    pub(super) fn discard(&self, dir: &Path) {
        for (meta, _) in &self.segments {
            let _ = fs::remove_file(content_segment::path_of(dir, meta.id));
        }
    }

    /// Keeps the files written (a catalog commit failed, but may have landed) and makes sure
    /// their ids are never used again.
    pub(super) fn keep_ids(&self, shared: &Shared) {
        let mut next = shared.next_content_id.lock();
        *next = (*next).max(self.next_id);
    }
}

/// A blob to write: (hash, text, tier, trace, order, first stored, last stored).
struct Outgoing<'a> {
    hash: ContentHash,
    text: Arc<str>,
    tier: &'a str,
    trace: [u8; 16],
    order: u64,
    first: u64,
    last: u64,
}

/// Writes the frozen memtable's blobs as one content segment per tier, grouped by trace, plus
/// copies of pinned blobs into segments of their new tier. Called by the seal (under
/// `seal_lock`) before its catalog transaction.
pub(super) fn write_sealed_content(
    shared: &Shared,
    frozen: &ContentMemtable,
) -> Result<SealedContent> {
    let policy = &shared.options.retention;
    let pins: Vec<(ContentHash, String)> = {
        let txn = shared
            .db
            .begin_read()
            .map_err(store_error("begin content seal"))?;
        let mut pins = Vec::new();
        if let Ok(table) = txn.open_table(CONTENT_PINS) {
            for entry in table.iter().map_err(store_error("read content pins"))? {
                let (hash, tier) = entry.map_err(store_error("read content pins"))?;
                if let Ok(hash) = ContentHash::try_from(hash.value()) {
                    pins.push((hash, tier.value().to_owned()));
                }
            }
        }
        pins
    };
    let mut sealed = SealedContent::default();
    let mut raised: HashMap<ContentHash, &str> = HashMap::new();
    let mut copies: Vec<Outgoing<'_>> = Vec::new();
    if !pins.is_empty() {
        let (catalog, active_has) = {
            let state = shared.state.read();
            let active: HashSet<ContentHash> = pins
                .iter()
                .filter(|(hash, _)| state.active.content.get(hash).is_some())
                .map(|(hash, _)| *hash)
                .collect();
            (state.content_catalog.clone(), active)
        };
        let txn = shared
            .db
            .begin_read()
            .map_err(store_error("begin content seal"))?;
        let index = txn
            .open_table(CONTENT_INDEX)
            .map_err(store_error("open content index"))?;
        let mut reader = BlobReader::new(&shared.dir);
        for (hash, tier) in &pins {
            if let Some(blob) = frozen.get(hash) {
                if policy.rank(tier) > policy.rank(&blob.tier) {
                    raised.insert(*hash, tier.as_str());
                }
            } else if let Some(location) = indexed(&index, hash)?
                && let Some(segment) = catalog.get(&location.segment)
            {
                if policy.rank(&segment.tier) < policy.rank(tier) {
                    let Some(text) = reader.read(&location)? else {
                        // Removed meanwhile: nothing left to keep.
                        sealed.resolved_pins.push((*hash, tier.clone()));
                        continue;
                    };
                    copies.push(Outgoing {
                        hash: *hash,
                        text: Arc::from(text),
                        tier: tier.as_str(),
                        trace: [0; 16],
                        order: u64::MAX,
                        first: segment.created,
                        last: segment.last_seen,
                    });
                }
            } else if active_has.contains(hash) {
                // Sealed with the memtable it is in, by the next seal.
                continue;
            }
            sealed.resolved_pins.push((*hash, tier.clone()));
        }
    }
    let mut by_tier: HashMap<&str, Vec<Outgoing<'_>>> = HashMap::new();
    for (hash, blob) in frozen.iter() {
        let tier = raised.get(hash).copied().unwrap_or(&blob.tier);
        by_tier.entry(tier).or_default().push(Outgoing {
            hash: *hash,
            text: Arc::clone(&blob.text),
            tier,
            trace: blob.trace,
            order: blob.order,
            first: blob.first_stored,
            last: blob.last_stored,
        });
    }
    for copy in copies {
        by_tier.entry(copy.tier).or_default().push(copy);
    }
    let mut next_id = *shared.next_content_id.lock();
    let mut tiers: Vec<&str> = by_tier.keys().copied().collect();
    tiers.sort_unstable();
    for tier in tiers {
        let mut blobs = by_tier.remove(tier).unwrap_or_default();
        // A conversation's messages together, in arrival order.
        blobs.sort_by_key(|blob| (blob.trace, blob.order));
        let id = next_id;
        next_id += 1;
        let written = content_segment::write(
            &shared.dir,
            id,
            blobs.iter().map(|blob| (&blob.hash, &*blob.text)),
            CONTENT_ZSTD_LEVEL,
        );
        let (file_bytes, locations) = match written {
            Ok(written) => written,
            Err(error) => {
                sealed.discard(&shared.dir);
                let _ = fs::remove_file(content_segment::path_of(&shared.dir, id));
                return Err(error);
            }
        };
        let meta = ContentSegmentMeta {
            id,
            tier: tier.to_owned(),
            created: blobs.iter().map(|blob| blob.first).min().unwrap_or(0),
            last_seen: blobs.iter().map(|blob| blob.last).max().unwrap_or(0),
            blobs: blobs.len() as u64,
            text_bytes: blobs.iter().map(|blob| blob.text.len() as u64).sum(),
            file_bytes,
        };
        sealed.segments.push((meta, locations));
    }
    sealed.next_id = next_id;
    let state = shared.state.read();
    sealed.bumped = state
        .content_bumped
        .iter()
        .filter_map(|id| state.content_catalog.get(id).cloned())
        .collect();
    Ok(sealed)
}

/// Records a seal's content in its catalog transaction.
pub(super) fn commit_sealed_content(txn: &WriteTransaction, sealed: &SealedContent) -> Result<()> {
    {
        let mut catalog = txn
            .open_table(CONTENT_SEGMENTS)
            .map_err(store_error("open content catalog"))?;
        for (meta, _) in &sealed.segments {
            catalog
                .insert(meta.id, meta.encode().as_slice())
                .map_err(store_error("write content catalog"))?;
        }
        for meta in &sealed.bumped {
            catalog
                .insert(meta.id, meta.encode().as_slice())
                .map_err(store_error("write content catalog"))?;
        }
        let mut index = txn
            .open_table(CONTENT_INDEX)
            .map_err(store_error("open content index"))?;
        for (_, locations) in &sealed.segments {
            for (hash, location) in locations {
                index
                    .insert(content_segment::index_key(hash), location.encode()?)
                    .map_err(store_error("write content index"))?;
            }
        }
        let mut pins = txn
            .open_table(CONTENT_PINS)
            .map_err(store_error("open content pins"))?;
        for (hash, tier) in &sealed.resolved_pins {
            let current = pins
                .get(hash.as_slice())
                .map_err(store_error("read content pins"))?
                .map(|value| value.value().to_owned());
            if current.as_deref() == Some(tier.as_str()) {
                pins.remove(hash.as_slice())
                    .map_err(store_error("remove content pin"))?;
            }
        }
    }
    if !sealed.segments.is_empty() {
        txn.open_table(META)
            .map_err(store_error("open meta"))?
            .insert(META_NEXT_CONTENT_SEGMENT_ID, sealed.next_id)
            .map_err(store_error("write next content segment id"))?;
    }
    Ok(())
}

/// Publishes a committed seal's content segments (under the state lock, with the rows).
pub(super) fn publish_sealed_content(shared: &Shared, state: &mut State, sealed: SealedContent) {
    *shared.next_content_id.lock() = sealed.next_id;
    for meta in sealed.bumped {
        if state
            .content_catalog
            .get(&meta.id)
            .is_some_and(|current| current.last_seen == meta.last_seen)
        {
            state.content_bumped.remove(&meta.id);
        }
    }
    for (meta, _) in sealed.segments {
        state.content_catalog.insert(meta.id, meta);
    }
}

/// Each segment's blobs from its footer; a damaged footer gives none (a WARN): its index
/// entries then stay, pointing nowhere, and reads treat them as expired.
fn footers(
    shared: &Shared,
    segments: &[ContentSegmentMeta],
) -> Vec<Vec<(ContentHash, BlobLocation)>> {
    segments
        .iter()
        .map(|meta| {
            let path = content_segment::path_of(&shared.dir, meta.id);
            content_segment::read_footer(&path, meta.id).unwrap_or_else(|error| {
                warn!(error = %error, "content segment footer unreadable; its index entries stay, pointing nowhere");
                Vec::new()
            })
        })
        .collect()
}

/// How many blobs of `segments` are readable only there (the index points at them): the
/// messages their removal takes away.
fn messages_only_in(shared: &Shared, segments: &[ContentSegmentMeta]) -> Result<u64> {
    let txn = shared
        .db
        .begin_read()
        .map_err(store_error("begin content expiry"))?;
    let index = txn
        .open_table(CONTENT_INDEX)
        .map_err(store_error("open content index"))?;
    let mut count = 0;
    for (meta, entries) in segments.iter().zip(footers(shared, segments)) {
        for (hash, _) in entries {
            if indexed(&index, &hash)?.is_some_and(|location| location.segment == meta.id) {
                count += 1;
            }
        }
    }
    Ok(count)
}

/// Removes content segments from the catalog and the index in one transaction, then their
/// files. Returns how many index entries went (the messages no longer readable).
fn remove_content_segments(shared: &Shared, doomed: &[ContentSegmentMeta]) -> Result<u64> {
    let footers = footers(shared, doomed);
    let mut removed = 0;
    let txn = shared
        .db
        .begin_write()
        .map_err(store_error("begin content expiry"))?;
    {
        let mut catalog = txn
            .open_table(CONTENT_SEGMENTS)
            .map_err(store_error("open content catalog"))?;
        let mut index = txn
            .open_table(CONTENT_INDEX)
            .map_err(store_error("open content index"))?;
        let mut dirty = txn
            .open_table(CONTENT_DIRTY)
            .map_err(store_error("open content dirty"))?;
        for (meta, entries) in doomed.iter().zip(&footers) {
            catalog
                .remove(meta.id)
                .map_err(store_error("remove content catalog entry"))?;
            dirty
                .remove(meta.id)
                .map_err(store_error("remove content dirty"))?;
            for (hash, _) in entries {
                if indexed(&index, hash)?.is_some_and(|location| location.segment == meta.id) {
                    index
                        .remove(content_segment::index_key(hash))
                        .map_err(store_error("remove content index"))?;
                    removed += 1;
                }
            }
        }
    }
    txn.commit().map_err(store_error("commit content expiry"))?;
    for meta in doomed {
        let path = content_segment::path_of(&shared.dir, meta.id);
        if let Err(error) = fs::remove_file(&path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            warn!(path = %path.display(), error = %error, "could not delete a removed content segment; the next open does");
        }
    }
    Ok(removed)
}

/// Rewrites the content segments an erasure marked (`content_dirty`) with only the blobs the
/// index still points at in them. Called with `seal_lock` held.
pub(super) fn rewrite_dirty_content(shared: &Shared) -> Result<usize> {
    let dirty: Vec<u64> = {
        let txn = shared
            .db
            .begin_read()
            .map_err(store_error("begin content rewrite"))?;
        match txn.open_table(CONTENT_DIRTY) {
            Ok(table) => table
                .iter()
                .map_err(store_error("read content dirty"))?
                .map(|entry| entry.map(|(id, _)| id.value()))
                .collect::<std::result::Result<_, _>>()
                .map_err(store_error("read content dirty"))?,
            Err(redb::TableError::TableDoesNotExist(_)) => Vec::new(),
            Err(error) => return Err(Error::store("open content dirty", error)),
        }
    };
    let mut rewritten = 0;
    for id in dirty {
        let meta = shared.state.read().content_catalog.get(&id).cloned();
        let Some(meta) = meta else {
            let txn = shared
                .db
                .begin_write()
                .map_err(store_error("begin content rewrite"))?;
            txn.open_table(CONTENT_DIRTY)
                .map_err(store_error("open content dirty"))?
                .remove(id)
                .map_err(store_error("remove content dirty"))?;
            txn.commit()
                .map_err(store_error("commit content rewrite"))?;
            continue;
        };
        let path = content_segment::path_of(&shared.dir, id);
        let entries = content_segment::read_footer(&path, id)?;
        let live: Vec<(ContentHash, BlobLocation)> = {
            let txn = shared
                .db
                .begin_read()
                .map_err(store_error("begin content rewrite"))?;
            let index = txn
                .open_table(CONTENT_INDEX)
                .map_err(store_error("open content index"))?;
            let mut live = Vec::new();
            for (hash, location) in entries {
                if indexed(&index, &hash)? == Some(location) {
                    live.push((hash, location));
                }
            }
            live
        };
        if live.is_empty() {
            shared.state.write().content_catalog.remove(&id);
            remove_content_segments(shared, std::slice::from_ref(&meta))?;
            rewritten += 1;
            continue;
        }
        let mut reader = BlobReader::new(&shared.dir);
        let mut texts = Vec::with_capacity(live.len());
        for (hash, location) in &live {
            let text = reader.read(location)?.ok_or_else(|| Error::Corrupt {
                location: path.display().to_string(),
                detail: "content segment vanished during its rewrite".into(),
            })?;
            texts.push((*hash, text));
        }
        let new_id = *shared.next_content_id.lock();
        let (file_bytes, locations) = content_segment::write(
            &shared.dir,
            new_id,
            texts.iter().map(|(hash, text)| (hash, text.as_str())),
            CONTENT_ZSTD_LEVEL,
        )?;
        let latest = shared
            .state
            .read()
            .content_catalog
            .get(&id)
            .map_or(meta.last_seen, |current| current.last_seen);
        let new_meta = ContentSegmentMeta {
            id: new_id,
            tier: meta.tier.clone(),
            created: meta.created,
            last_seen: latest,
            blobs: texts.len() as u64,
            text_bytes: texts.iter().map(|(_, text)| text.len() as u64).sum(),
            file_bytes,
        };
        let txn = shared
            .db
            .begin_write()
            .map_err(store_error("begin content rewrite"))?;
        {
            let mut catalog = txn
                .open_table(CONTENT_SEGMENTS)
                .map_err(store_error("open content catalog"))?;
            catalog
                .insert(new_id, new_meta.encode().as_slice())
                .map_err(store_error("write content catalog"))?;
            catalog
                .remove(id)
                .map_err(store_error("remove content catalog entry"))?;
            let mut index = txn
                .open_table(CONTENT_INDEX)
                .map_err(store_error("open content index"))?;
            for ((hash, old), (_, new)) in live.iter().zip(&locations) {
                // Only entries still pointing here (an erasure may have run meanwhile: it
                // holds `seal_lock` too, so it cannot, but stay exact).
                if indexed(&index, hash)? == Some(*old) {
                    index
                        .insert(content_segment::index_key(hash), new.encode()?)
                        .map_err(store_error("write content index"))?;
                }
            }
            txn.open_table(CONTENT_DIRTY)
                .map_err(store_error("open content dirty"))?
                .remove(id)
                .map_err(store_error("remove content dirty"))?;
            txn.open_table(META)
                .map_err(store_error("open meta"))?
                .insert(META_NEXT_CONTENT_SEGMENT_ID, new_id + 1)
                .map_err(store_error("write next content segment id"))?;
        }
        if let Err(error) = txn.commit() {
            // It may have landed (a failed fsync): keep the file, and its id taken.
            let mut next = shared.next_content_id.lock();
            *next = (*next).max(new_id + 1);
            return Err(Error::store("commit content rewrite", error));
        }
        *shared.next_content_id.lock() = new_id + 1;
        {
            let mut state = shared.state.write();
            state.content_catalog.remove(&id);
            state.content_bumped.remove(&id);
            state.content_catalog.insert(new_id, new_meta);
        }
        if let Err(error) = fs::remove_file(&path) {
            warn!(path = %path.display(), error = %error, "could not delete a rewritten content segment; the next open does");
        }
        rewritten += 1;
    }
    Ok(rewritten)
}

/// Moves the blobs of the legacy `content` table (one redb value per blob, before content
/// segments) into content segments, by tier, a batch at a time; each batch's segments, index
/// entries and removal from the old tables commit together. Called at open, before the
/// threads start.
pub(super) fn migrate_legacy_content(shared: &Shared) -> Result<u64> {
    let policy = &shared.options.retention;
    let mut moved = 0u64;
    loop {
        let batch: Vec<(ContentHash, String, String, u64)> = {
            let txn = shared
                .db
                .begin_read()
                .map_err(store_error("begin content migration"))?;
            let content = match txn.open_table(CONTENT) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(moved),
                Err(error) => return Err(Error::store("open content", error)),
            };
            let seen = match txn.open_table(CONTENT_SEEN) {
                Ok(table) => Some(table),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(error) => return Err(Error::store("open content seen", error)),
            };
            let mut batch = Vec::new();
            for entry in content.iter().map_err(store_error("read content"))? {
                let (hash, value) = entry.map_err(store_error("read content"))?;
                let location = hex::encode(hash.value());
                let Ok(raw) = ContentHash::try_from(hash.value()) else {
                    return Err(crate::content::corrupt(&location, "hash is not 32 bytes"));
                };
                let text = crate::content::decode_blob(value.value(), &location)?;
                let seen = match &seen {
                    Some(table) => table
                        .get(raw.as_slice())
                        .map_err(store_error("read content seen"))?
                        .map(|value| Seen::decode(value.value(), &location))
                        .transpose()?,
                    None => None,
                }
                .unwrap_or_default();
                let tier = seen.tiers.keys().fold(String::new(), |best, tier| {
                    if policy.rank(tier) > policy.rank(&best) {
                        tier.clone()
                    } else {
                        best
                    }
                });
                batch.push((raw, text, tier, seen.last()));
                if batch.len() >= MIGRATE_BATCH_BLOBS {
                    break;
                }
            }
            batch
        };
        if batch.is_empty() {
            if moved > 0 {
                info!(blobs = moved, "moved legacy content into content segments");
            }
            return Ok(moved);
        }
        let mut by_tier: HashMap<&str, Vec<&(ContentHash, String, String, u64)>> = HashMap::new();
        for entry in &batch {
            by_tier.entry(entry.2.as_str()).or_default().push(entry);
        }
        let mut sealed = SealedContent::default();
        let mut next_id = *shared.next_content_id.lock();
        for (tier, blobs) in by_tier {
            let id = next_id;
            next_id += 1;
            let (file_bytes, locations) = match content_segment::write(
                &shared.dir,
                id,
                blobs.iter().map(|(hash, text, _, _)| (hash, text.as_str())),
                CONTENT_ZSTD_LEVEL,
            ) {
                Ok(written) => written,
                Err(error) => {
                    sealed.discard(&shared.dir);
                    return Err(error);
                }
            };
            sealed.segments.push((
                ContentSegmentMeta {
                    id,
                    tier: tier.to_owned(),
                    created: blobs.iter().map(|blob| blob.3).min().unwrap_or(0),
                    last_seen: blobs.iter().map(|blob| blob.3).max().unwrap_or(0),
                    blobs: blobs.len() as u64,
                    text_bytes: blobs.iter().map(|blob| blob.1.len() as u64).sum(),
                    file_bytes,
                },
                locations,
            ));
        }
        sealed.next_id = next_id;
        let txn = shared
            .db
            .begin_write()
            .map_err(store_error("begin content migration"))?;
        let committed = (|| -> Result<()> {
            commit_sealed_content(&txn, &sealed)?;
            let mut content = txn
                .open_table(CONTENT)
                .map_err(store_error("open content"))?;
            let mut seen = txn
                .open_table(CONTENT_SEEN)
                .map_err(store_error("open content seen"))?;
            let mut by_time = txn
                .open_multimap_table(CONTENT_BY_TIME)
                .map_err(store_error("open content by time"))?;
            for (hash, _, _, last) in &batch {
                content
                    .remove(hash.as_slice())
                    .map_err(store_error("remove legacy content"))?;
                seen.remove(hash.as_slice())
                    .map_err(store_error("remove legacy content"))?;
                by_time
                    .remove(*last, hash.as_slice())
                    .map_err(store_error("remove legacy content"))?;
            }
            Ok(())
        })();
        if let Err(error) = committed {
            sealed.discard(&shared.dir);
            return Err(error);
        }
        if let Err(error) = txn.commit() {
            // It may have landed (a failed fsync): keep the files, and their ids taken.
            sealed.keep_ids(shared);
            return Err(Error::store("commit content migration", error));
        }
        moved += batch.len() as u64;
        publish_sealed_content(shared, &mut shared.state.write(), sealed);
    }
}

/// The references the span rows of `trace_ids` (every trace: `None`) hold, each with its
/// row's arrival time (ns; 0 when unknown).
pub(super) fn row_refs_in(
    shared: &Shared,
    trace_ids: Option<&[TraceId]>,
) -> Result<Vec<(i64, crate::ContentRef)>> {
    use crate::schema::{column_index, columns};
    use arrow::array::{Array, AsArray};
    let projection = vec![
        column_index(columns::TRACE_ID),
        column_index(columns::SPAN_ID),
        column_index(columns::ARRIVAL_TIME),
        column_index(columns::CONTENT_REFS),
    ];
    let request = crate::ScanRequest {
        trace_ids: trace_ids.map(<[TraceId]>::to_vec),
        projection: Some(projection),
        family: crate::RowFamily::All,
        ..crate::ScanRequest::default()
    };
    let mut out = Vec::new();
    let batches = plan_scan_in(shared, &request, MAX_INDEX_LOOKUPS)?
        .into_units()
        .into_iter()
        .map(|unit| unit.execute())
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten();
    for batch in batches {
        let batch = batch?;
        let arrivals = batch.column_by_name(columns::ARRIVAL_TIME).map(|column| {
            column
                .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
                .clone()
        });
        let Some(arrivals) = arrivals else {
            continue;
        };
        for (row, refs) in crate::content_refs::rows_with_refs(&batch)? {
            let arrival = if arrivals.is_null(row) {
                0
            } else {
                arrivals.value(row)
            };
            out.extend(refs.into_iter().map(|reference| (arrival, reference)));
        }
    }
    Ok(out)
}

/// How many references the span rows hold, and their encoded bytes (a scan of the
/// `content_refs` column alone).
pub(super) fn row_ref_counts(shared: &Shared) -> Result<(u64, u64)> {
    use crate::schema::{column_index, columns};
    use arrow::array::{Array, AsArray};
    let request = crate::ScanRequest {
        projection: Some(vec![column_index(columns::CONTENT_REFS)]),
        family: crate::RowFamily::All,
        ..crate::ScanRequest::default()
    };
    let (mut references, mut bytes) = (0u64, 0u64);
    for unit in plan_scan_in(shared, &request, MAX_INDEX_LOOKUPS)?.into_units() {
        for batch in unit.execute()? {
            let batch = batch?;
            let Some(column) = batch.column_by_name(columns::CONTENT_REFS) else {
                continue;
            };
            let values = column.as_binary::<i32>();
            for row in 0..values.len() {
                if values.is_null(row) {
                    continue;
                }
                let value = values.value(row);
                bytes += value.len() as u64;
                if let Some(count) = value.get(1..3) {
                    references += u64::from(u16::from_le_bytes([count[0], count[1]]));
                }
            }
        }
    }
    Ok((references, bytes))
}

/// Resolves the trace pins a promotion wrote (`content_trace_pins`): every blob the pinned
/// traces' rows name (memtable and segments) that is kept by a shorter-kept tier than the
/// trace's gets a blob pin, which the next seal copies into a segment of that tier. Called by
/// the seal and by content expiry, with `seal_lock` held.
pub(super) fn resolve_trace_pins(shared: &Shared) -> Result<usize> {
    let policy = &shared.options.retention;
    let pins: Vec<([u8; 16], String)> = {
        let txn = shared
            .db
            .begin_read()
            .map_err(store_error("begin content pins"))?;
        let table = match txn.open_table(CONTENT_TRACE_PINS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(error) => return Err(Error::store("open content trace pins", error)),
        };
        let mut pins = Vec::new();
        for entry in table
            .iter()
            .map_err(store_error("read content trace pins"))?
        {
            let (trace, tier) = entry.map_err(store_error("read content trace pins"))?;
            if let Ok(trace) = <[u8; 16]>::try_from(trace.value()) {
                pins.push((trace, tier.value().to_owned()));
            }
        }
        pins
    };
    if pins.is_empty() {
        return Ok(0);
    }
    let tiers: HashMap<[u8; 16], &str> = pins
        .iter()
        .map(|(trace, tier)| (*trace, tier.as_str()))
        .collect();
    let ids: Vec<TraceId> = pins.iter().map(|(trace, _)| TraceId(*trace)).collect();
    let mut wanted: HashMap<ContentHash, &str> = HashMap::new();
    for (_, reference) in row_refs_in(shared, Some(&ids))? {
        let Some(tier) = tiers.get(&reference.trace_id.0) else {
            continue;
        };
        for piece in reference.pieces.iter().flatten() {
            if let crate::content::ContentPiece::Blob(hash) = piece {
                #[allow(clippy::clone_on_copy)]
                let entry = wanted.entry(hash.clone()).or_insert(tier);
                if policy.rank(tier) > policy.rank(entry) {
                    *entry = tier;
                }
            }
        }
    }
    let (catalog, in_memory): (HashMap<u64, String>, HashMap<ContentHash, String>) = {
        let state = shared.state.read();
        let catalog = state
            .content_catalog
            .values()
            .map(|meta| (meta.id, meta.tier.clone()))
            .collect();
        let mut in_memory = HashMap::new();
        for hash in wanted.keys() {
            let blob = state.active.content.get(hash).or_else(|| {
                state
                    .frozen
                    .as_ref()
                    .and_then(|frozen| frozen.content.get(hash))
            });
            if let Some(blob) = blob {
                in_memory.insert(*hash, blob.tier.to_string());
            }
        }
        (catalog, in_memory)
    };
    let txn = shared
        .db
        .begin_write()
        .map_err(store_error("begin content pins"))?;
    {
        let index = txn
            .open_table(CONTENT_INDEX)
            .map_err(store_error("open content index"))?;
        let mut blob_pins = txn
            .open_table(CONTENT_PINS)
            .map_err(store_error("open content pins"))?;
        for (hash, tier) in &wanted {
            let kept_by = match indexed(&index, hash)? {
                Some(location) => catalog.get(&location.segment).cloned(),
                None => None,
            }
            .or_else(|| in_memory.get(hash).cloned());
            let Some(kept_by) = kept_by else {
                continue;
            };
            if policy.rank(&kept_by) >= policy.rank(tier) {
                continue;
            }
            let pinned = blob_pins
                .get(hash.as_slice())
                .map_err(store_error("read content pins"))?
                .map(|value| value.value().to_owned());
            if pinned.is_none_or(|pinned| policy.rank(&pinned) < policy.rank(tier)) {
                blob_pins
                    .insert(hash.as_slice(), *tier)
                    .map_err(store_error("write content pins"))?;
            }
        }
        let mut trace_pins = txn
            .open_table(CONTENT_TRACE_PINS)
            .map_err(store_error("open content trace pins"))?;
        for (trace, tier) in &pins {
            let current = trace_pins
                .get(trace.as_slice())
                .map_err(store_error("read content trace pins"))?
                .map(|value| value.value().to_owned());
            if current.as_deref() == Some(tier.as_str()) {
                trace_pins
                    .remove(trace.as_slice())
                    .map_err(store_error("remove content trace pin"))?;
            }
        }
    }
    txn.commit().map_err(store_error("commit content pins"))?;
    Ok(pins.len())
}

/// Entries of the content index (distinct blobs in content segments).
fn content_index_len(shared: &Shared) -> Result<u64> {
    use redb::ReadableTableMetadata;
    let txn = shared
        .db
        .begin_read()
        .map_err(store_error("begin content read"))?;
    match txn.open_table(CONTENT_INDEX) {
        Ok(table) => table.len().map_err(store_error("count content index")),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
        Err(error) => Err(Error::store("open content index", error)),
    }
}

impl Engine {
    /// See [`row_refs_in`].
    pub(crate) fn row_refs(
        &self,
        trace_ids: Option<&[TraceId]>,
    ) -> Result<Vec<(i64, crate::ContentRef)>> {
        row_refs_in(&self.shared, trace_ids)
    }

    /// Texts of the blobs in `hashes` that the memtable (active or frozen) holds.
    pub(crate) fn memtable_blobs(
        &self,
        hashes: &HashSet<ContentHash>,
    ) -> HashMap<ContentHash, Arc<str>> {
        let state = self.shared.state.read();
        let mut out = HashMap::new();
        for hash in hashes {
            let blob = state.active.content.get(hash).or_else(|| {
                state
                    .frozen
                    .as_ref()
                    .and_then(|frozen| frozen.content.get(hash))
            });
            if let Some(blob) = blob {
                out.insert(*hash, Arc::clone(&blob.text));
            }
        }
        out
    }

    /// Removes content no tier keeps any more, a whole content segment at a time: a segment
    /// goes when the latest reference to any of its blobs is older than its tier's cutoff
    /// (`request.cutoff_for`). Content still in the memtable is recent and is not expired.
    /// References keep their digests, so reads of them say "expired".
    pub fn expire_content_with(&self, request: &ContentExpiryRequest) -> Result<ContentExpiry> {
        let shared = &self.shared;
        // Memtable content past its keep (a backdated clock, or `--as-of` in the future) is
        // sealed first, then expired with its segment; a dry run counts the segments the seal
        // would write.
        let (due_messages, due_bytes) = self.memtable_content_due(request);
        if due_messages > 0 && !request.dry_run {
            self.seal()?;
        }
        let _seal = shared.seal_lock.lock();
        if !request.dry_run {
            resolve_trace_pins(shared)?;
        }
        let pinned: HashSet<u64> = {
            let txn = shared
                .db
                .begin_read()
                .map_err(store_error("begin content expiry"))?;
            let mut pinned = HashSet::new();
            if let (Ok(pins), Ok(index)) =
                (txn.open_table(CONTENT_PINS), txn.open_table(CONTENT_INDEX))
            {
                for entry in pins.iter().map_err(store_error("read content pins"))? {
                    let (hash, _) = entry.map_err(store_error("read content pins"))?;
                    if let Ok(hash) = ContentHash::try_from(hash.value())
                        && let Some(location) = indexed(&index, &hash)?
                    {
                        pinned.insert(location.segment);
                    }
                }
            }
            pinned
        };
        let doomed: Vec<ContentSegmentMeta> = {
            // The writer's lock: no write is between staging and publishing while the
            // doomed segments leave the in-memory catalog.
            let _wal = shared.wal.lock();
            let mut state = shared.state.write();
            let doomed: Vec<ContentSegmentMeta> = state
                .content_catalog
                .values()
                .filter(|meta| {
                    meta.last_seen < request.cutoff_for(&meta.tier) && !pinned.contains(&meta.id)
                })
                .cloned()
                .collect();
            if !request.dry_run {
                if !doomed.is_empty() {
                    shared
                        .content_expiries
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                for meta in &doomed {
                    state.content_catalog.remove(&meta.id);
                    state.content_bumped.remove(&meta.id);
                }
            }
            doomed
        };
        // Messages: blobs no longer readable (a copy kept in another segment, by a promotion
        // or a refresh, does not count).
        let mut expiry = ContentExpiry {
            messages: 0,
            bytes: doomed.iter().map(|meta| meta.file_bytes).sum(),
        };
        if request.dry_run {
            expiry.messages = messages_only_in(shared, &doomed)? + due_messages;
            expiry.bytes += due_bytes;
            return Ok(expiry);
        }
        if doomed.is_empty() {
            return Ok(expiry);
        }
        match remove_content_segments(shared, &doomed) {
            Ok(removed) => expiry.messages = removed,
            Err(error) => {
                let mut state = shared.state.write();
                for meta in doomed {
                    state.content_catalog.insert(meta.id, meta);
                }
                return Err(error);
            }
        }
        info!(
            segments = doomed.len(),
            messages = expiry.messages,
            bytes = expiry.bytes,
            "expired content segments"
        );
        Ok(expiry)
    }

    /// Blobs and text bytes of the memtable that would form content segments already past
    /// their keep: per memtable and tier, all blobs when the newest reference is before the
    /// tier's cutoff.
    fn memtable_content_due(&self, request: &ContentExpiryRequest) -> (u64, u64) {
        let state = self.shared.state.read();
        let mut due = (0, 0);
        for memtable in std::iter::once(&state.active).chain(state.frozen.as_ref()) {
            let mut tiers: HashMap<&str, (u64, u64, u64)> = HashMap::new();
            for (_, blob) in memtable.content.iter() {
                let entry = tiers.entry(&blob.tier).or_default();
                entry.0 = entry.0.max(blob.last_stored);
                entry.1 += 1;
                entry.2 += blob.text.len() as u64;
            }
            for (tier, (newest, blobs, bytes)) in tiers {
                if newest < request.cutoff_for(tier) {
                    due.0 += blobs;
                    due.1 += bytes;
                }
            }
        }
        due
    }

    /// How many content expiry passes removed something since the engine opened: content read
    /// before a change of this number may since have expired.
    pub fn content_expiries(&self) -> u64 {
        self.shared
            .content_expiries
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Counts of the content store: sealed content segments plus the memtable's blobs.
    pub fn content_stats(&self) -> Result<ContentStats> {
        let mut stats = ContentStats::default();
        {
            let state = self.shared.state.read();
            for meta in state.content_catalog.values() {
                stats.bytes += meta.file_bytes;
                stats.oldest_seen = Some(
                    stats
                        .oldest_seen
                        .map_or(meta.last_seen, |oldest| oldest.min(meta.last_seen)),
                );
            }
            let memtables = std::iter::once(&state.active).chain(state.frozen.as_ref());
            for memtable in memtables {
                stats.messages += memtable.content.len() as u64;
                stats.bytes += memtable.content.text_bytes() as u64;
                if let Some(seen) = memtable.content.oldest_seen() {
                    stats.oldest_seen =
                        Some(stats.oldest_seen.map_or(seen, |oldest| oldest.min(seen)));
                }
            }
        }
        // Distinct messages in segments: the index has one entry per blob (copies a promotion
        // or a refresh made are one message).
        stats.messages += content_index_len(&self.shared)?;
        let (references, reference_bytes) = row_ref_counts(&self.shared)?;
        stats.references += references;
        stats.reference_bytes += reference_bytes;
        let txn = self
            .shared
            .db
            .begin_read()
            .map_err(store_error("begin content read"))?;
        match txn.open_table(CONTENT_REFS) {
            Ok(table) => {
                for entry in table.iter().map_err(store_error("read content refs"))? {
                    let (key, value) = entry.map_err(store_error("read content refs"))?;
                    stats.references += 1;
                    stats.reference_bytes += (key.value().len() + value.value().len()) as u64;
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(error) => return Err(Error::store("open content refs", error)),
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use redb::ReadableTableMetadata;

    use super::*;
    use crate::content::{
        ContentPiece, ContentRef, ContentValue, encode_blob, encode_ref, ref_key,
    };
    use crate::ids::{SpanId, TraceId};

    #[test]
    fn content_of_a_store_from_before_content_segments_moves_into_them_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let options = || {
            Options::default()
                .with_background_sealing(false)
                .with_retention(
                    RetentionPolicy::new(
                        vec![
                            crate::Tier::new("standard", Duration::from_secs(86_400)),
                            crate::Tier::new("decision", Duration::from_secs(400 * 86_400)),
                        ],
                        "standard",
                    )
                    .unwrap(),
                )
        };
        drop(Engine::open(dir.path(), options()).unwrap());
        // Write the old layout by hand: one redb value per blob, with its seen times.
        let texts: Vec<(ContentHash, String)> = (0..300u32)
            .map(|n| {
                let mut hash = [0u8; 32];
                hash[..4].copy_from_slice(&n.to_le_bytes());
                (
                    hash,
                    format!("message {n} {}", "words ".repeat(n as usize % 40)),
                )
            })
            .collect();
        {
            let db = Database::create(dir.path().join(DATABASE_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut content = txn.open_table(CONTENT).unwrap();
                let mut seen = txn.open_table(CONTENT_SEEN).unwrap();
                let mut by_time = txn.open_multimap_table(CONTENT_BY_TIME).unwrap();
                let mut refs = txn.open_table(CONTENT_REFS).unwrap();
                for (n, (hash, text)) in texts.iter().enumerate() {
                    content
                        .insert(hash.as_slice(), encode_blob(text).as_slice())
                        .unwrap();
                    let tier = if n % 3 == 0 { "decision" } else { "" };
                    let mut tiers = std::collections::BTreeMap::new();
                    tiers.insert(tier.to_owned(), 100 + n as u64);
                    let record = Seen { tiers };
                    seen.insert(hash.as_slice(), record.encode().as_slice())
                        .unwrap();
                    by_time.insert(record.last(), hash.as_slice()).unwrap();
                    let reference = ContentRef {
                        trace_id: TraceId([1; 16]),
                        span_id: SpanId((n as u64).to_be_bytes()),
                        key: "k".into(),
                        digest: [0; 32],
                        form: 0,
                        pieces: Some(vec![ContentPiece::Blob(*hash)]),
                        tier: (!tier.is_empty()).then(|| tier.to_owned()),
                    };
                    let key = ref_key(&reference.trace_id, &reference.span_id, "k");
                    refs.insert(key.as_slice(), encode_ref(&reference, 100).as_slice())
                        .unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let engine = Engine::open(dir.path(), options()).unwrap();
        let rows = engine.content_for_trace(&TraceId([1; 16])).unwrap();
        assert_eq!(rows.len(), texts.len());
        for (row, (_, text)) in rows.iter().zip(&texts) {
            assert_eq!(row.value, ContentValue::Present(text.clone()));
        }
        assert_eq!(engine.content_stats().unwrap().messages, texts.len() as u64);
        {
            let txn = engine.shared.db.begin_read().unwrap();
            assert!(txn.open_table(CONTENT).unwrap().is_empty().unwrap());
            assert!(txn.open_table(CONTENT_SEEN).unwrap().is_empty().unwrap());
        }
        let tiers: Vec<(String, u64)> = {
            let state = engine.shared.state.read();
            let mut tiers: Vec<(String, u64)> = state
                .content_catalog
                .values()
                .map(|meta| (meta.tier.clone(), meta.blobs))
                .collect();
            tiers.sort();
            tiers
        };
        assert_eq!(tiers, vec![("".into(), 200), ("decision".into(), 100)]);
        // The default keep past the newest default-tier reference removes only those.
        let request = ContentExpiryRequest::new(1_000).with_tier("decision", 0);
        assert_eq!(engine.expire_content_with(&request).unwrap().messages, 200);
        drop(engine);
        let engine = Engine::open(dir.path(), options()).unwrap();
        let present = engine
            .content_for_trace(&TraceId([1; 16]))
            .unwrap()
            .iter()
            .filter(|row| matches!(row.value, ContentValue::Present(_)))
            .count();
        assert_eq!(present, 100);
    }
}
