//! The write path: [`Engine::write_batch`] stamps a write's arrival, encodes its WAL record
//! (span rows and content together) and queues it; the writer thread appends a group of
//! records to the WAL file with one fsync, applies their content and trace keys to redb in one
//! non-durable transaction, and publishes the rows to the memtable.
//!
//! Invariants:
//! - A write is acknowledged only after its WAL record is fsync'd, its content and keys are
//!   committed (non-durably: the WAL record is what makes them durable, and recovery applies
//!   records after `wal_applied` again), and its rows are in the memtable (read-your-writes).
//! - A write's spans and content are one WAL record: stored together or not at all. When the
//!   index commit fails after the append, the group's records are cut off the WAL file again
//!   and the writes reported failed; if even that fails, the writer refuses every later write
//!   (a record left behind that `wal_applied` then passed would be replayed without its
//!   content and keys) until the engine is opened again, whose recovery applies it.
//! - The writer holds `wal` from the start of a group's append until the group is published
//!   and acknowledged, so whoever else holds it (a seal freezing the memtable, a purge) sees
//!   every write entirely before or after.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::RecordBatch;
use crossbeam_channel::{Receiver, Sender, bounded};
use redb::{ReadableMultimapTable, ReadableTable, WriteTransaction};
use tracing::{debug, warn};

use crate::content_memtable::ContentStage;
use crate::error::{Error, Result};
use crate::retention::RetentionPolicy;
use crate::scan::MemtableKeysEntry;
use crate::schema::{column_index, columns, span_schema};
use crate::tables::{
    CONVERSATION_ROWS, LATE_KEYS, META, META_WAL_APPLIED, RowRun, SESSION_ROWS, TRACE_KEYS,
    TRACE_SEGMENTS,
};
use crate::trace_keys::{RawTraceId, TraceKeys, keys_in_batch, traces_in_batch};

use super::*;

/// The WAL file being appended to and the next record's sequence number: the writer's lock.
#[derive(Debug)]
pub(super) struct WalWriter {
    pub(super) next_sequence: u64,
    pub(super) log: crate::wal_log::WalLog,
    /// Set when a group's records could be neither indexed nor cut off the WAL: no later write
    /// may be acknowledged before recovery has applied them.
    broken: Option<String>,
}

impl WalWriter {
    pub(super) fn new(next_sequence: u64, log: crate::wal_log::WalLog) -> WalWriter {
        WalWriter {
            next_sequence,
            log,
            broken: None,
        }
    }

    /// Whether writes must wait for the store to be reopened: a group could be neither indexed
    /// nor cut off the WAL, or a failed append is still on the end of the file.
    pub(super) fn needs_reopen(&self) -> bool {
        self.broken.is_some() || self.log.is_damaged()
    }

    /// Starts a new WAL file at the next sequence number and returns that number: every
    /// record before it is in older files.
    pub(super) fn rotate(&mut self) -> Result<u64> {
        self.log.rotate(self.next_sequence)
    }
}

/// A write waiting for the group commit.
pub(super) struct PendingWrite {
    batch: RecordBatch,
    record: Vec<u8>,
    /// The content its spans reference, committed in the same transaction.
    content: crate::ContentBatch,
    reply: Sender<Result<u64>>,
}

impl PendingWrite {
    /// Bytes it adds to the pending total (WAL record and content text).
    fn size(&self) -> usize {
        self.record.len() + self.content.text_bytes()
    }
}

/// What one export request stores: its span rows and the content they reference, committed
/// together (one group-commit transaction, all or nothing) by [`Engine::write_batch`].
#[derive(Debug, Clone)]
pub struct WriteBatch {
    /// Span rows in [`span_schema`].
    pub spans: RecordBatch,
    /// The content the rows reference (`stored_unix_nanos` is set by the engine to the
    /// write's arrival time).
    pub content: crate::ContentBatch,
}

impl WriteBatch {
    /// Span rows without content.
    pub fn spans(spans: RecordBatch) -> Self {
        WriteBatch {
            spans,
            content: crate::ContentBatch::default(),
        }
    }
}

impl Engine {
    /// Writes span rows durably. Returns the WAL sequence number once the rows are fsync'd and
    /// visible to scans. Concurrent calls share one commit.
    pub fn write(&self, batch: RecordBatch) -> Result<u64> {
        self.write_batch(WriteBatch::spans(batch))
    }

    /// Writes span rows and the content they reference in one durable group-commit
    /// transaction: both are stored, or neither (see [`Engine::write`]). Each reference is
    /// stored in the row of its span (a reference naming no row of the batch is dropped). The
    /// content's retention clock is the write's arrival time, unless
    /// `content.stored_unix_nanos` is set (tools that import old content, tests).
    pub fn write_batch(&self, write: WriteBatch) -> Result<u64> {
        let WriteBatch {
            spans: batch,
            mut content,
        } = write;
        if batch.schema().fields() != span_schema().fields() {
            return Err(Error::SchemaMismatch(format!("{:?}", batch.schema())));
        }
        if batch.num_rows() == 0 {
            return Ok(0);
        }
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let memtable_bytes = {
            let state = self.shared.state.read();
            // A frozen memtable is being sealed: its rows are sorted into a copy as large as
            // they are, which the cap covers too.
            state.active.total_bytes()
                + state
                    .frozen
                    .as_ref()
                    .map_or(0, |frozen| frozen.total_bytes() + frozen.bytes)
        };
        let pending = self.shared.pending_bytes.load(Ordering::Relaxed);
        if memtable_bytes + pending > self.shared.options.max_memtable_bytes {
            return Err(Error::Overloaded {
                pending_bytes: memtable_bytes + pending,
                retry_after_ms: 1000,
            });
        }
        let (batch, arrival) = self.stamp_arrival(batch)?;
        if content.stored_unix_nanos == 0 {
            content.stored_unix_nanos = u64::try_from(arrival).unwrap_or(0);
        }
        // The references ride in their spans' rows (`content_refs.rs`).
        let batch = crate::content_refs::attach(batch, &content.refs)?;
        self.submit(batch, content)
    }

    /// Queues one write for the group commit and waits for it. Blobs the active memtable
    /// holds are written to the WAL without their text (an earlier record of the same WAL
    /// generation, or the segment a seal wrote, has it).
    fn submit(&self, batch: RecordBatch, mut content: crate::ContentBatch) -> Result<u64> {
        let elided: HashSet<crate::ContentHash> = if content.blobs.is_empty() {
            HashSet::new()
        } else {
            let state = self.shared.state.read();
            content
                .blobs
                .iter()
                .filter(|(hash, _)| state.active.content.get(hash).is_some())
                .map(|(hash, _)| *hash)
                .collect()
        };
        // The references are in the rows already: the record holds them once.
        let refs = std::mem::take(&mut content.refs);
        let record = wal::encode(&batch, &content, &elided);
        content.refs = refs;
        let record = record?;
        let size = record.len() + content.text_bytes();
        let (reply, response) = bounded(1);
        {
            let sender = self.writer_tx.lock();
            let Some(sender) = sender.as_ref() else {
                return Err(Error::ShuttingDown);
            };
            self.shared.pending_bytes.fetch_add(size, Ordering::Relaxed);
            if sender
                .send(PendingWrite {
                    batch,
                    record,
                    content,
                    reply,
                })
                .is_err()
            {
                self.shared.pending_bytes.fetch_sub(size, Ordering::Relaxed);
                return Err(Error::ShuttingDown);
            }
        }
        let result = response.recv().unwrap_or(Err(Error::ShuttingDown));
        if let Some(sealer) = self.sealer_tx.lock().as_ref()
            && self.needs_seal()
        {
            // A full channel means a wake-up is already queued.
            let _ = sealer.try_send(());
        }
        result
    }

    /// Sets every row's `arrival_time` to this write's: the wall clock, or one nanosecond after
    /// the previous write's when the clock has not moved past it, so no two writes share one.
    pub(super) fn stamp_arrival(&self, batch: RecordBatch) -> Result<(RecordBatch, i64)> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX)
            });
        let previous = self
            .shared
            .last_arrival
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(now.max(last.saturating_add(1)))
            })
            .unwrap_or(now);
        let arrival = now.max(previous.saturating_add(1));
        let index = column_index(columns::ARRIVAL_TIME);
        let mut columns = batch.columns().to_vec();
        columns[index] = Arc::new(
            arrow::array::TimestampNanosecondArray::from_value(arrival, batch.num_rows())
                .with_timezone("UTC"),
        );
        Ok((RecordBatch::try_new(batch.schema(), columns)?, arrival))
    }
}

/// Group commit: take everything queued, write it in one durable transaction, then publish.
pub(super) fn run_writer(shared: &Shared, receiver: &Receiver<PendingWrite>) {
    const MAX_GROUP_BYTES: usize = 64 << 20;
    while let Ok(first) = receiver.recv() {
        let mut group = vec![first];
        let mut bytes = group[0].size();
        while bytes < MAX_GROUP_BYTES {
            match receiver.try_recv() {
                Ok(next) => {
                    bytes += next.size();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        // Held until the group is published and acknowledged (see `Shared::next_sequence`).
        let mut wal = shared.wal.lock();
        // After a storage fault, the store is reopened before anything is written again (the
        // reopen takes `seal_lock` first, so `wal` is let go meanwhile).
        let reopened = if reopen::needed(shared, &wal) {
            drop(wal);
            let reopened = reopen::reopen_if_needed(shared).map(|_| ());
            wal = shared.wal.lock();
            reopened
        } else {
            Ok(())
        };
        let result = reopened.and_then(|()| commit_group(shared, &mut wal, &group));
        shared.pending_bytes.fetch_sub(bytes, Ordering::Relaxed);
        shared.activity.write(
            result
                .as_ref()
                .err()
                .map(|error| crate::activity::cause_chain(error)),
        );
        match result {
            Ok((first_sequence, keys, content)) => {
                {
                    let mut state = shared.state.write();
                    publish_keys(shared, &mut state, keys);
                    publish_content(shared, &mut state, content);
                    for (offset, write) in group.iter().enumerate() {
                        if write.batch.num_rows() > 0 {
                            state
                                .active
                                .push(write.batch.clone(), first_sequence + offset as u64);
                        }
                    }
                }
                for (offset, write) in group.into_iter().enumerate() {
                    let _ = write.reply.send(Ok(first_sequence + offset as u64));
                }
            }
            Err(error) => {
                let detail = crate::activity::cause_chain(&error);
                warn!(error = %detail, writes = group.len(), "wal commit failed");
                for write in group {
                    let _ = write.reply.send(Err(Error::Io {
                        operation: "store the write in",
                        path: shared.dir.clone(),
                        source: std::io::Error::other(detail.clone()),
                    }));
                }
            }
        }
        drop(wal);
    }
}

/// Trace keys a commit learned, to publish once it is durable.
#[derive(Debug, Default)]
pub(super) struct KeyUpdates {
    /// Keys of traces with rows in the memtable now.
    pub(super) memtable: Vec<(RawTraceId, TraceKeys)>,
    /// Late keys: (segment id, trace, keys).
    pub(super) late: Vec<(u64, RawTraceId, TraceKeys)>,
}

/// Publishes what a commit learned about trace keys (under the state write lock, together with
/// the rows, so scans never see rows without their keys).
pub(super) fn publish_keys(shared: &Shared, state: &mut State, updates: KeyUpdates) {
    if !updates.memtable.is_empty() {
        let generation = shared.generation.load(Ordering::Acquire);
        let mut keys = shared.memtable_keys.write();
        for (trace, trace_keys) in updates.memtable {
            keys.insert(
                trace,
                MemtableKeysEntry {
                    keys: trace_keys,
                    generation,
                },
            );
        }
    }
    for (segment, trace, keys) in updates.late {
        let entry = state.late.entry(segment).or_default();
        Arc::make_mut(entry).insert(trace, keys);
    }
}

/// Publishes what staging a group's content decided: new blobs into the active memtable, and
/// the raised last-seen times of content segments named again.
pub(super) fn publish_content(shared: &Shared, state: &mut State, delta: ContentDelta) {
    for (segment, stored) in &delta.bumps {
        if let Some(meta) = state.content_catalog.get_mut(segment)
            && meta.last_seen < *stored
        {
            meta.last_seen = *stored;
            state.content_bumped.insert(*segment);
        }
    }
    state.active.push_content(delta, &shared.options.retention);
}

/// Appends the group's WAL records (one fsync), then applies their content and trace keys in
/// one non-durable transaction. `wal` is the writer's lock, held by the caller.
pub(super) fn commit_group(
    shared: &Shared,
    wal: &mut WalWriter,
    group: &[PendingWrite],
) -> Result<(u64, KeyUpdates, ContentDelta)> {
    if let Some(cause) = &wal.broken {
        return Err(Error::io(
            "write wal",
            shared.dir.join(crate::wal_log::WAL_DIR),
            std::io::Error::other(format!(
                "an earlier write failed and could not be withdrawn ({cause}); restart to recover"
            )),
        ));
    }
    let first = wal.next_sequence;
    let last = first + group.len() as u64 - 1;
    let len_before = wal.log.len();
    wal.log.append(
        group
            .iter()
            .enumerate()
            .map(|(offset, write)| (first + offset as u64, write.record.as_slice())),
    )?;
    match apply_group(shared, group, last) {
        Ok((updates, content)) => {
            wal.next_sequence = last + 1;
            debug!(writes = group.len(), "wal group committed");
            Ok((first, updates, content))
        }
        Err(error) => {
            if let Err(cut) = wal.log.cut_to(len_before) {
                wal.broken = Some(format!("{error}; {cut}"));
            }
            Err(error)
        }
    }
}

/// Applies a group's content references and trace keys in one non-durable transaction that
/// records `last` as applied, and stages its blobs (published with the rows).
fn apply_group(
    shared: &Shared,
    group: &[PendingWrite],
    last: u64,
) -> Result<(KeyUpdates, ContentDelta)> {
    let mut txn = shared
        .db
        .begin_write()
        .map_err(store_error("begin wal write"))?;
    txn.set_durability(redb::Durability::None)
        .map_err(|error| Error::store("set wal commit durability", redb::Error::from(error)))?;
    // Read-locked once for the whole group: the memtable does not change while the writer
    // holds `wal`, and nothing here takes the lock again.
    let state = shared.state.read();
    let mut stage = ContentStage::new(
        &state.active.content,
        state.frozen.as_ref().map(|frozen| &*frozen.content),
        &state.content_catalog,
        &shared.options.retention,
    )
    .with_earlier_rows((
        &state.active.traces,
        state.frozen.as_ref().map(|frozen| &frozen.traces),
    ));
    // Content before the keys: a write that promotes a trace also promotes the content this
    // group stored for it.
    for write in group {
        crate::content::stage_content(
            &txn,
            &write.content,
            std::slice::from_ref(&write.batch),
            &shared.options.retention,
            &mut stage,
        )?;
    }
    let updates = merge_trace_keys(
        &txn,
        group.iter().map(|write| &write.batch),
        &shared.options.retention,
        &mut stage,
    )?;
    let delta = stage.finish();
    drop(state);
    txn.open_table(META)
        .map_err(store_error("open meta"))?
        .insert(META_WAL_APPLIED, last)
        .map_err(store_error("write wal position"))?;
    txn.commit().map_err(store_error("commit wal"))?;
    Ok((updates, delta))
}

/// Merges the keys the batches' rows carry into `trace_keys`, and returns the keys of every
/// trace of the batches that has some. When a trace gains a key while rows of it are already
/// sealed, those segments get a late-keys entry and their runs are added to the session and
/// conversation indexes.
pub(super) fn merge_trace_keys<'a>(
    txn: &WriteTransaction,
    batches: impl Iterator<Item = &'a RecordBatch>,
    policy: &RetentionPolicy,
    stage: &mut ContentStage<'_>,
) -> Result<KeyUpdates> {
    let mut carried: HashMap<RawTraceId, TraceKeys> = HashMap::new();
    let mut traces: Vec<RawTraceId> = Vec::new();
    let mut seen: HashSet<RawTraceId> = HashSet::new();
    for batch in batches {
        for (trace, keys) in keys_in_batch(batch, policy) {
            carried.entry(trace).or_default().merge(&keys, policy);
        }
        for trace in traces_in_batch(batch) {
            if seen.insert(trace) {
                traces.push(trace);
            }
        }
    }
    let mut updates = KeyUpdates::default();
    let mut keys_table = txn
        .open_table(TRACE_KEYS)
        .map_err(store_error("open trace keys"))?;
    for trace in traces {
        let stored = read_trace_keys(&keys_table, &trace)?;
        let Some(own) = carried.get(&trace) else {
            if let Some(stored) = stored {
                updates.memtable.push((trace, stored));
            }
            continue;
        };
        let mut merged = stored.clone().unwrap_or_default();
        merged.merge(own, policy);
        let stored_tier = stored.as_ref().and_then(|keys| keys.tier.as_deref());
        if let Some(tier) = merged.tier.as_deref()
            && Some(tier) != stored_tier
        {
            // Content written before this write (earlier requests, or this request's own,
            // stored first) follows the trace's new tier.
            let pin = stage.needs_trace_pin(&trace, tier, stored.is_some(), || {
                let index = txn
                    .open_multimap_table(TRACE_SEGMENTS)
                    .map_err(store_error("open trace index"))?;
                let mut runs = index
                    .get(trace.as_slice())
                    .map_err(store_error("read trace index"))?;
                Ok(runs.next().is_some())
            })?;
            crate::content::promote_trace_content(txn, &trace, tier, pin, stage)?;
        }
        if merged.adds_to(stored.as_ref(), policy) {
            keys_table
                .insert(trace.as_slice(), merged.encode().as_slice())
                .map_err(store_error("write trace keys"))?;
            let runs = {
                let index = txn
                    .open_multimap_table(TRACE_SEGMENTS)
                    .map_err(store_error("open trace index"))?;
                let mut runs = Vec::new();
                for run in index
                    .get(trace.as_slice())
                    .map_err(store_error("read trace index"))?
                {
                    runs.push(run.map_err(store_error("read trace index"))?.value());
                }
                runs
            };
            if !runs.is_empty() {
                record_late_keys(txn, &trace, stored.as_ref(), &merged, &runs)?;
                for segment in runs.iter().map(|run| run.0).collect::<BTreeSet<_>>() {
                    updates.late.push((segment, trace, merged.clone()));
                }
            }
        }
        updates.memtable.push((trace, merged));
    }
    Ok(updates)
}

/// Records that sealed runs of `trace` gained keys: late-keys entries for their segments, and
/// index entries for the new session and conversation.
pub(super) fn record_late_keys(
    txn: &WriteTransaction,
    trace: &RawTraceId,
    before: Option<&TraceKeys>,
    after: &TraceKeys,
    runs: &[RowRun],
) -> Result<()> {
    let before = before.cloned().unwrap_or_default();
    let mut late = txn
        .open_multimap_table(LATE_KEYS)
        .map_err(store_error("open late keys"))?;
    for segment in runs.iter().map(|run| run.0).collect::<BTreeSet<_>>() {
        late.insert(segment, trace.as_slice())
            .map_err(store_error("write late keys"))?;
    }
    // Rows without a session of their own fall back to the conversation, so a new
    // conversation can also give the runs a session.
    let mut sessions: Vec<&str> = Vec::new();
    if before.session_id.is_none() {
        sessions.extend(after.session_id.as_deref());
        sessions.extend(after.conversation_id.as_deref());
    }
    if before.conversation_id.is_none() {
        sessions.extend(after.conversation_id.as_deref());
    }
    sessions.sort_unstable();
    sessions.dedup();
    let mut session_index = txn
        .open_multimap_table(SESSION_ROWS)
        .map_err(store_error("open session index"))?;
    for session in sessions {
        for run in runs {
            session_index
                .insert(session, *run)
                .map_err(store_error("write session index"))?;
        }
    }
    if before.conversation_id.is_none()
        && let Some(conversation) = after.conversation_id.as_deref()
    {
        let mut conversation_index = txn
            .open_multimap_table(CONVERSATION_ROWS)
            .map_err(store_error("open conversation index"))?;
        for run in runs {
            conversation_index
                .insert(conversation, *run)
                .map_err(store_error("write conversation index"))?;
        }
    }
    Ok(())
}

/// The keys stored for one trace.
pub(super) fn read_trace_keys(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    trace: &RawTraceId,
) -> Result<Option<TraceKeys>> {
    match table
        .get(trace.as_slice())
        .map_err(store_error("read trace keys"))?
    {
        Some(value) => Ok(Some(TraceKeys::decode(value.value())?)),
        None => Ok(None),
    }
}
