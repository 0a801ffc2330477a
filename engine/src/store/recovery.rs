//! Recovery at open, in one transaction: check the store format version, load the catalog,
//! replay the WAL into the memtable (version 1 records of the legacy `wal` table, then the WAL
//! files after `wal_sealed_through`), apply again the content and trace keys of the records after
//! `wal_applied` (their non-durable commit was lost), and rebuild the in-memory trace keys of
//! the memtable's traces and the late keys of sealed segments.
//!
//! Invariants: records are applied in sequence order, each at most once per open; nothing is
//! written unless the transaction commits (a failed recovery leaves the store as it was).

use super::*;
use crate::content_memtable::ContentStage;

/// What recovery read back, for [`Engine::open`] to start the engine from.
pub(super) struct Recovered {
    pub(super) segments: Vec<Arc<SegmentMeta>>,
    pub(super) next_segment_id: u64,
    /// The sequence number of the next WAL record.
    pub(super) next_sequence: u64,
    /// WAL records up to this one are covered by segments (or purged).
    pub(super) sealed_through: u64,
    pub(super) memtable: Memtable,
    pub(super) memtable_keys: MemtableKeys,
    pub(super) late: HashMap<u64, Arc<LateKeys>>,
    /// Content segment catalog, last-seen times raised by the replayed records.
    pub(super) content_catalog: HashMap<u64, ContentSegmentMeta>,
    /// Content segments whose last-seen time the replay raised.
    pub(super) content_bumped: HashSet<u64>,
    pub(super) next_content_id: u64,
}

/// The WAL file new writes go to after recovery (a new one, starting at `next_sequence`);
/// files a seal covered but did not get to delete go now.
pub(super) fn fresh_wal(
    dir: &Path,
    options: &Options,
    next_sequence: u64,
    sealed_through: u64,
) -> Result<crate::wal_log::WalLog> {
    let wal_dir = dir.join(crate::wal_log::WAL_DIR);
    let log = crate::wal_log::WalLog::create(&wal_dir, next_sequence)?
        .with_faults(options.faults.clone());
    crate::wal_log::remove_before(&wal_dir, next_sequence.min(sealed_through + 1))?;
    Ok(log)
}

/// Recovers the store of `db` (in `dir`, whose database file is `db_path`), counting what it
/// replayed in `recovery`.
pub(super) fn recover(
    db: &Database,
    dir: &Path,
    db_path: &Path,
    options: &Options,
    recovery: &mut RecoverySummary,
) -> Result<Recovered> {
    let txn = db.begin_write().map_err(store_error("begin recovery"))?;
    let next_segment_id;
    {
        let mut meta = txn.open_table(META).map_err(store_error("open meta"))?;
        let version = meta
            .get(META_FORMAT_VERSION)
            .map_err(store_error("read format version"))?
            .map(|value| value.value());
        match version {
            None => {
                meta.insert(META_FORMAT_VERSION, FORMAT_VERSION)
                    .map_err(store_error("write format version"))?;
            }
            Some(FORMAT_VERSION) => {}
            Some(crate::tables::UPGRADED_FORMAT_VERSION) => {
                // Nothing to rewrite: only files written from now on differ.
                meta.insert(META_FORMAT_VERSION, FORMAT_VERSION)
                    .map_err(store_error("write format version"))?;
                tracing::info!(
                    from = crate::tables::UPGRADED_FORMAT_VERSION,
                    to = FORMAT_VERSION,
                    "upgraded the store format; new segment files check 4 KiB blocks"
                );
            }
            Some(other) => {
                return Err(Error::Corrupt {
                    location: db_path.display().to_string(),
                    detail: format!(
                        "expected store format version {FORMAT_VERSION}, found {other}"
                    ),
                });
            }
        }
        next_segment_id = meta
            .get(META_NEXT_SEGMENT_ID)
            .map_err(store_error("read next segment id"))?
            .map(|value| value.value())
            .unwrap_or(1);
    }
    txn.open_multimap_table(TRACE_SEGMENTS)
        .map_err(store_error("open trace index"))?;
    txn.open_multimap_table(SESSION_ROWS)
        .map_err(store_error("open session index"))?;
    txn.open_multimap_table(CONVERSATION_ROWS)
        .map_err(store_error("open conversation index"))?;
    let mut segments = Vec::new();
    {
        let table = txn
            .open_table(SEGMENTS)
            .map_err(store_error("open catalog"))?;
        for entry in table.iter().map_err(store_error("read catalog"))? {
            let (id, value) = entry.map_err(store_error("read catalog"))?;
            segments.push(Arc::new(SegmentMeta::decode(id.value(), value.value())?));
        }
    }
    let mut memtable = Memtable::default();
    let (sealed_through, applied) = {
        let meta = txn.open_table(META).map_err(store_error("open meta"))?;
        let read = |key: &str| -> Result<u64> {
            Ok(meta
                .get(key)
                .map_err(store_error("read wal position"))?
                .map(|value| value.value())
                .unwrap_or(0))
        };
        (read(META_WAL_SEALED_THROUGH)?, read(META_WAL_APPLIED)?)
    };
    let mut next_sequence = sealed_through + 1;
    {
        // Stores written before WAL files: version 1 records, applied durably.
        let table = txn.open_table(WAL).map_err(store_error("open wal"))?;
        for entry in table.iter().map_err(store_error("read wal"))? {
            let (sequence, record) = entry.map_err(store_error("read wal"))?;
            let sequence = sequence.value();
            for batch in wal::decode(sequence, record.value())?.batches {
                recovery.wal_rows += batch.num_rows();
                memtable.push(batch, sequence);
            }
            recovery.wal_records += 1;
            next_sequence = next_sequence.max(sequence + 1);
        }
    }
    let (mut content_catalog, next_content_id) = content_seal::load_catalog(&txn)?;
    let mut content_bumped = HashSet::new();
    let files = crate::wal_log::read_all(&dir.join(crate::wal_log::WAL_DIR))?;
    recovery.wal_torn_bytes = files.torn_bytes;
    let mut last_applied = applied;
    for (sequence, record) in files.records {
        next_sequence = next_sequence.max(sequence + 1);
        if sequence <= sealed_through {
            continue;
        }
        let mut record = wal::decode(sequence, &record)?;
        if !record.elided.is_empty() {
            restore_elided(&txn, dir, &memtable, &mut record)?;
        }
        if record.content.refs.is_empty() {
            // The references are in the rows.
            for batch in &record.batches {
                record
                    .content
                    .refs
                    .extend(crate::content_refs::refs_in_batch(batch)?);
            }
        } else {
            // A record written before references moved into the rows: they go there now.
            record.batches = record
                .batches
                .into_iter()
                .map(|batch| crate::content_refs::attach(batch, &record.content.refs))
                .collect::<Result<_>>()?;
        }
        // The memtable's content is staged again, as the writer did; a record whose index
        // commit was not durable also gets its trace keys again (idempotent), in order.
        let mut stage = ContentStage::new(
            &memtable.content,
            None,
            &content_catalog,
            &options.retention,
        );
        crate::content::stage_content(
            &txn,
            &record.content,
            &record.batches,
            &options.retention,
            &mut stage,
        )?;
        if sequence > applied {
            writer::merge_trace_keys(&txn, record.batches.iter(), &options.retention, &mut stage)?;
            recovery.wal_reapplied += 1;
            last_applied = sequence;
        }
        let delta = stage.finish();
        for (segment, stored) in &delta.bumps {
            if let Some(meta) = content_catalog.get_mut(segment)
                && meta.last_seen < *stored
            {
                meta.last_seen = *stored;
                content_bumped.insert(*segment);
            }
        }
        memtable.push_content(delta, &options.retention);
        for batch in record.batches {
            recovery.wal_rows += batch.num_rows();
            if batch.num_rows() > 0 {
                memtable.push(batch, sequence);
            }
        }
        recovery.wal_records += 1;
    }
    if last_applied != applied {
        txn.open_table(META)
            .map_err(store_error("open meta"))?
            .insert(META_WAL_APPLIED, last_applied)
            .map_err(store_error("write wal position"))?;
    }
    let mut memtable_keys = MemtableKeys::new();
    let mut late: HashMap<u64, Arc<LateKeys>> = HashMap::new();
    {
        let keys_table = txn
            .open_table(TRACE_KEYS)
            .map_err(store_error("open trace keys"))?;
        for chunk in &memtable.chunks {
            for trace in traces_in_batch(chunk) {
                if let Some(keys) = read_trace_keys(&keys_table, &trace)? {
                    memtable_keys.insert(
                        trace,
                        MemtableKeysEntry {
                            keys,
                            generation: 0,
                        },
                    );
                }
            }
        }
        let late_table = txn
            .open_multimap_table(LATE_KEYS)
            .map_err(store_error("open late keys"))?;
        let mut by_segment: HashMap<u64, LateKeys> = HashMap::new();
        for entry in late_table.iter().map_err(store_error("read late keys"))? {
            let (segment, traces) = entry.map_err(store_error("read late keys"))?;
            for trace in traces {
                let trace = trace.map_err(store_error("read late keys"))?;
                let Ok(raw) = RawTraceId::try_from(trace.value()) else {
                    continue;
                };
                if let Some(keys) = read_trace_keys(&keys_table, &raw)? {
                    by_segment
                        .entry(segment.value())
                        .or_default()
                        .insert(raw, keys);
                }
            }
        }
        late.extend(
            by_segment
                .into_iter()
                .map(|(segment, keys)| (segment, Arc::new(keys))),
        );
    }
    txn.commit().map_err(store_error("commit recovery"))?;
    Ok(Recovered {
        segments,
        next_segment_id,
        next_sequence,
        sealed_through,
        memtable,
        memtable_keys,
        late,
        content_catalog,
        content_bumped,
        next_content_id,
    })
}

/// Gives the blobs a record names without text (see `content_codec.rs`) their text again:
/// from the memtable being rebuilt (an earlier record), or from the content segment that
/// holds it (sealed since). A blob found in neither (removed by a purge or an erasure that
/// ran between the write's encoding and its commit) is left out with a WARN.
fn restore_elided(
    txn: &redb::WriteTransaction,
    dir: &Path,
    memtable: &Memtable,
    record: &mut wal::WalRecord,
) -> Result<()> {
    let index = txn
        .open_table(crate::tables::CONTENT_INDEX)
        .map_err(store_error("open content index"))?;
    let mut reader = crate::content_segment::BlobReader::new(dir);
    for hash in std::mem::take(&mut record.elided) {
        if let Some(blob) = memtable.content.get(&hash) {
            record.content.blobs.push((hash, blob.text.to_string()));
            continue;
        }
        let text = match crate::content_memtable::indexed(&index, &hash)? {
            Some(location) => reader.read(&location)?,
            None => None,
        };
        match text {
            Some(text) => record.content.blobs.push((hash, text)),
            None => warn!(
                blob = %hex::encode(hash),
                "a replayed write names a blob no longer stored; its content reads as expired"
            ),
        }
    }
    Ok(())
}
