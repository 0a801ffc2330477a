//! [`Engine`]: the write path (WAL with group commit, memtable), sealing into segments, scans
//! and recovery.
//!
//! Invariants:
//! - A write is acknowledged only after its WAL record committed with immediate durability
//!   (fsync), and after its rows are in the memtable (read-your-writes).
//! - Every row is in exactly one of: the active memtable, the frozen memtable (being sealed), a
//!   sealed segment. The switch from frozen to segment happens under the state lock, after the
//!   catalog transaction (segment entries + trace index + WAL truncation) committed.
//! - Segment files are fsync'd before the catalog references them; files the catalog does not
//!   reference are removed at open.
//! - Lock order: `seal_lock`, `next_sequence` (the writer's lock), a redb write transaction,
//!   `state`, `memtable_keys`: none is waited for while holding one later in the list.

mod agent_tables;
mod compliance;
mod purge;
mod reaper;
mod session_rollup;

pub use agent_tables::{AgentRead, SidecarRead};
pub use compliance::verify_data_dir;
pub use purge::PurgeReport;
pub use session_rollup::{RollupLookup, SessionRollupKey};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::array::{Array, AsArray, BooleanArray};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::TimestampNanosecondType;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};
use parking_lot::{Mutex, RwLock};
use redb::{
    Database, ReadableDatabase, ReadableMultimapTable, ReadableTable, ReadableTableMetadata,
    WriteTransaction,
};
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::retention::RetentionPolicy;
use crate::scan::{LateKeys, MemtableKeys, MemtableKeysEntry, ScanPlan, ScanRequest, SegmentRead};
use crate::schema::{column_index, columns, span_schema};
use crate::segment::{SegmentMeta, SegmentWriteOptions, day_of, sort_for_segment};
use crate::tables::{
    CONVERSATION_ROWS, FORMAT_VERSION, LATE_KEYS, META, META_FORMAT_VERSION, META_NEXT_SEGMENT_ID,
    RowRun, SEGMENTS, SESSION_ROWS, TRACE_KEYS, TRACE_SEGMENTS, WAL,
};
use crate::trace_keys::{RawTraceId, TraceKeys, keys_in_batch, resolve_keys, traces_in_batch};
use crate::wal;

/// File name of the redb database inside the data directory.
const DATABASE_FILE: &str = "sightline.redb";
/// Above this many trace ids a scan uses zone maps instead of the trace index.
const MAX_INDEX_LOOKUPS: usize = 4096;
/// The same for the traces an agent-table read derives from spans (split traces and the
/// memtable's): the index is always the cheaper way to find them.
const MAX_AGENT_LOOKUPS: usize = 1 << 20;

/// Engine settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Seal the memtable when its Arrow memory reaches this many bytes.
    pub seal_max_bytes: usize,
    /// Seal the memtable when it holds this many rows.
    pub seal_max_rows: usize,
    /// Seal the memtable when its oldest row is this old.
    pub seal_max_age: Duration,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// zstd level of segment files.
    pub zstd_level: i32,
    /// Refuse writes (overloaded) when the memtable (active + frozen) exceeds this many bytes,
    /// i.e. when sealing cannot keep up.
    pub max_memtable_bytes: usize,
    /// Run the background sealer thread (tests turn it off and call `seal`).
    pub background_sealing: bool,
    /// Retention tiers: which tier rows without one go to, and how long each is kept.
    pub retention: RetentionPolicy,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seal_max_bytes: 256 << 20,
            seal_max_rows: 1_000_000,
            seal_max_age: Duration::from_secs(300),
            row_group_rows: 32 * 1024,
            zstd_level: 3,
            max_memtable_bytes: 1 << 30,
            background_sealing: true,
            retention: RetentionPolicy::default(),
        }
    }
}

impl Options {
    /// Sets the memtable size at which it is sealed.
    pub fn with_seal_max_bytes(mut self, bytes: usize) -> Self {
        self.seal_max_bytes = bytes;
        self
    }

    /// Sets the memtable row count at which it is sealed.
    pub fn with_seal_max_rows(mut self, rows: usize) -> Self {
        self.seal_max_rows = rows;
        self
    }

    /// Sets the memtable age at which it is sealed.
    pub fn with_seal_max_age(mut self, age: Duration) -> Self {
        self.seal_max_age = age;
        self
    }

    /// Sets the Parquet row group size.
    pub fn with_row_group_rows(mut self, rows: usize) -> Self {
        self.row_group_rows = rows;
        self
    }

    /// Sets the memtable size past which writes are refused as overloaded.
    pub fn with_max_memtable_bytes(mut self, bytes: usize) -> Self {
        self.max_memtable_bytes = bytes;
        self
    }

    /// Sets the retention tiers.
    pub fn with_retention(mut self, policy: RetentionPolicy) -> Self {
        self.retention = policy;
        self
    }

    /// Turns the background sealer on or off.
    pub fn with_background_sealing(mut self, enabled: bool) -> Self {
        self.background_sealing = enabled;
        self
    }
}

/// Bytes a batch's rows occupy. Batches decoded from one IPC message share one buffer, whose
/// whole capacity `get_array_memory_size` would count once per column; count the slices.
fn batch_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|column| {
            column
                .to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| column.get_array_memory_size())
        })
        .sum()
}

/// Rows not yet in a segment.
#[derive(Debug, Default, Clone)]
struct Memtable {
    chunks: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
    max_sequence: u64,
    oldest: Option<Instant>,
}

impl Memtable {
    fn push(&mut self, batch: RecordBatch, sequence: u64) {
        self.rows += batch.num_rows();
        self.bytes += batch_bytes(&batch);
        self.max_sequence = self.max_sequence.max(sequence);
        self.oldest.get_or_insert_with(Instant::now);
        self.chunks.push(batch);
        self.merge_small_tail();
    }

    /// Keeps the chunk count low: many tiny request batches are merged into one.
    fn merge_small_tail(&mut self) {
        const SMALL: usize = 4096;
        const MAX_SMALL_CHUNKS: usize = 64;
        let small = self
            .chunks
            .iter()
            .rev()
            .take_while(|chunk| chunk.num_rows() < SMALL)
            .count();
        if small < MAX_SMALL_CHUNKS {
            return;
        }
        let start = self.chunks.len() - small;
        if let Ok(merged) = concat_batches(&span_schema(), &self.chunks[start..]) {
            self.chunks.truncate(start);
            self.chunks.push(merged);
            self.bytes = self
                .chunks
                .iter()
                .map(RecordBatch::get_array_memory_size)
                .sum();
        }
    }
}

#[derive(Debug, Default)]
struct State {
    active: Memtable,
    frozen: Option<Memtable>,
    segments: Vec<Arc<SegmentMeta>>,
    /// Late trace keys per segment id (see `trace_keys.rs`).
    late: HashMap<u64, Arc<LateKeys>>,
}

/// A write waiting for the group commit.
struct PendingWrite {
    batch: RecordBatch,
    record: Vec<u8>,
    /// The content its spans reference, committed in the same transaction.
    content: crate::ContentBatch,
    reply: Sender<Result<u64>>,
}

impl PendingWrite {
    /// Bytes it adds to the pending total (WAL record and content text).
    fn size(&self) -> usize {
        self.record.len()
            + self
                .content
                .blobs
                .iter()
                .map(|(_, text)| text.len())
                .sum::<usize>()
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

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    db: Database,
    options: Options,
    state: RwLock<State>,
    seal_lock: Mutex<()>,
    /// The next WAL sequence number, and the writer's lock: the writer thread holds it from the
    /// start of a group's WAL commit until the group is in the memtable and acknowledged, so
    /// whoever else holds it ([`Engine::purge`]) sees every write entirely before or after.
    next_sequence: Mutex<u64>,
    next_segment_id: Mutex<u64>,
    pending_bytes: AtomicUsize,
    closing: AtomicBool,
    /// Trace keys of the traces with rows in the memtable.
    memtable_keys: Arc<RwLock<MemtableKeys>>,
    /// Generation of the active memtable; incremented when it is frozen.
    generation: AtomicU64,
    /// The `arrival_time` given to the last write (ns).
    last_arrival: std::sync::atomic::AtomicI64,
    /// The `sessions` rollup of the last whole-store read.
    session_rollup: Mutex<session_rollup::SessionRollup>,
    /// Files of removed segments, deleted when their last reader is done.
    reaper: reaper::Reaper,
}

/// Counts describing the store now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStats {
    /// Rows in the memtable (active + frozen).
    pub memtable_rows: usize,
    /// Arrow bytes in the memtable.
    pub memtable_bytes: usize,
    /// Number of sealed segments.
    pub segments: usize,
    /// Rows in sealed segments.
    pub segment_rows: u64,
    /// Bytes of sealed segment files.
    pub segment_bytes: u64,
}

/// What one seal did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SealSummary {
    /// Segments written.
    pub segments: usize,
    /// Rows moved from the memtable to segments.
    pub rows: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// What recovery found at open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoverySummary {
    /// Segments in the catalog.
    pub segments: usize,
    /// WAL records replayed into the memtable.
    pub wal_records: usize,
    /// Rows replayed.
    pub wal_rows: usize,
    /// Files removed because the catalog does not reference them.
    pub orphans_removed: usize,
}

/// The storage engine. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    writer_tx: Mutex<Option<Sender<PendingWrite>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    sealer_tx: Mutex<Option<Sender<()>>>,
    sealer: Mutex<Option<JoinHandle<()>>>,
    recovery: RecoverySummary,
}

fn store_error<E: Into<redb::Error>>(operation: &'static str) -> impl FnOnce(E) -> Error {
    move |source| Error::store(operation, source)
}

impl Engine {
    /// The redb database (for the content store in `content.rs`).
    pub(crate) fn database(&self) -> &Database {
        &self.shared.db
    }

    /// Opens (or creates) the store in `dir`: replays the WAL, removes orphan segment files and
    /// starts the writer (and, unless turned off, the sealer) thread.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Engine> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|source| Error::io("create directory", &dir, source))?;
        let db_path = dir.join(DATABASE_FILE);
        let created = !db_path.exists();
        let db = match Database::create(&db_path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(Error::Locked { path: dir });
            }
            Err(error) => return Err(Error::store("open database", error)),
        };

        if created {
            // Make the new database file's directory entry durable too.
            crate::segment::fsync_dir(&dir)?;
        }
        let mut recovery = RecoverySummary::default();
        let (segments, next_segment_id, next_sequence, memtable, memtable_keys, late) = {
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
            let mut next_sequence = 1;
            {
                let table = txn.open_table(WAL).map_err(store_error("open wal"))?;
                for entry in table.iter().map_err(store_error("read wal"))? {
                    let (sequence, record) = entry.map_err(store_error("read wal"))?;
                    let sequence = sequence.value();
                    for batch in wal::decode(sequence, record.value())? {
                        recovery.wal_rows += batch.num_rows();
                        memtable.push(batch, sequence);
                    }
                    recovery.wal_records += 1;
                    next_sequence = sequence + 1;
                }
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
            (
                segments,
                next_segment_id,
                next_sequence,
                memtable,
                memtable_keys,
                late,
            )
        };

        for meta in &segments {
            let path = dir.join(&meta.path);
            if !path.is_file() {
                return Err(Error::Corrupt {
                    location: path.display().to_string(),
                    detail: format!(
                        "segment {} is in the catalog but its file is missing",
                        meta.id
                    ),
                });
            }
        }
        let referenced: HashSet<PathBuf> = segments
            .iter()
            .flat_map(|meta| agent_tables::segment_files(&dir, meta))
            .collect();
        recovery.orphans_removed = remove_orphans(&dir.join("segments"), &referenced)?;
        recovery.segments = segments.len();
        info!(
            segments = recovery.segments,
            wal_records = recovery.wal_records,
            wal_rows = recovery.wal_rows,
            orphans_removed = recovery.orphans_removed,
            "store recovered"
        );

        let shared = Arc::new(Shared {
            dir,
            db,
            options: options.clone(),
            state: RwLock::new(State {
                active: memtable,
                frozen: None,
                segments,
                late,
            }),
            seal_lock: Mutex::new(()),
            next_sequence: Mutex::new(next_sequence),
            next_segment_id: Mutex::new(next_segment_id),
            pending_bytes: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            memtable_keys: Arc::new(RwLock::new(memtable_keys)),
            generation: AtomicU64::new(0),
            last_arrival: std::sync::atomic::AtomicI64::new(0),
            session_rollup: Mutex::new(session_rollup::SessionRollup::default()),
            reaper: reaper::Reaper::default(),
        });

        let segments_now = shared.state.read().segments.clone();
        agent_tables::prepare_sidecars(&shared, &segments_now)?;

        let (writer_tx, writer_rx) = unbounded::<PendingWrite>();
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("sightline-wal".into())
            .spawn(move || run_writer(&writer_shared, &writer_rx))
            .map_err(|source| Error::io("spawn writer thread", &shared.dir, source))?;

        let (sealer_tx, sealer) = if options.background_sealing {
            let (tx, rx) = bounded::<()>(1);
            let sealer_shared = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name("sightline-sealer".into())
                .spawn(move || run_sealer(&sealer_shared, &rx))
                .map_err(|source| Error::io("spawn sealer thread", &shared.dir, source))?;
            (Some(tx), Some(handle))
        } else {
            (None, None)
        };

        Ok(Engine {
            shared,
            writer_tx: Mutex::new(Some(writer_tx)),
            writer: Mutex::new(Some(writer)),
            sealer_tx: Mutex::new(sealer_tx),
            sealer: Mutex::new(sealer),
            recovery,
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.shared.dir
    }

    /// What recovery found when this engine opened.
    pub fn recovery(&self) -> &RecoverySummary {
        &self.recovery
    }

    /// Writes span rows durably. Returns the WAL sequence number once the rows are fsync'd and
    /// visible to scans. Concurrent calls share one commit.
    pub fn write(&self, batch: RecordBatch) -> Result<u64> {
        self.write_batch(WriteBatch::spans(batch))
    }

    /// Writes span rows and the content they reference in one durable group-commit
    /// transaction: both are stored, or neither (see [`Engine::write`]). The content's
    /// retention clock is the write's arrival time.
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
            state.active.bytes + state.frozen.as_ref().map_or(0, |frozen| frozen.bytes)
        };
        let pending = self.shared.pending_bytes.load(Ordering::Relaxed);
        if memtable_bytes + pending > self.shared.options.max_memtable_bytes {
            return Err(Error::Overloaded {
                pending_bytes: memtable_bytes + pending,
                retry_after_ms: 1000,
            });
        }
        let (batch, arrival) = self.stamp_arrival(batch)?;
        content.stored_unix_nanos = u64::try_from(arrival).unwrap_or(0);
        let record = wal::encode(&batch)?;
        let content_bytes: usize = content.blobs.iter().map(|(_, text)| text.len()).sum();
        let size = record.len() + content_bytes;
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

    fn needs_seal(&self) -> bool {
        needs_seal(&self.shared)
    }

    /// Sets every row's `arrival_time` to this write's: the wall clock, or one nanosecond after
    /// the previous write's when the clock has not moved past it, so no two writes share one.
    fn stamp_arrival(&self, batch: RecordBatch) -> Result<(RecordBatch, i64)> {
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

    /// Plans a scan over the memtable and the segments that may hold matching rows.
    ///
    /// Trace, session and conversation filters (also a session-or-conversation disjunction) go
    /// through their indexes: only segments with a row run of a requested key are read, and
    /// inside them only those runs.
    pub fn plan_scan(&self, request: &ScanRequest) -> Result<ScanPlan> {
        self.plan_scan_with(request, MAX_INDEX_LOOKUPS)
    }

    /// [`Engine::plan_scan`], looking up at most `max_lookups` keys per index.
    fn plan_scan_with(&self, request: &ScanRequest, max_lookups: usize) -> Result<ScanPlan> {
        self.shared.reaper.sweep();
        let (memtable, segments, late) = {
            let state = self.shared.state.read();
            let mut memtable = state.active.chunks.clone();
            if let Some(frozen) = &state.frozen {
                memtable.extend(frozen.chunks.iter().cloned());
            }
            (memtable, state.segments.clone(), state.late.clone())
        };
        let total = segments.len();
        let mut candidates: Vec<Arc<SegmentMeta>> = segments
            .into_iter()
            .filter(|meta| request.time_overlaps(meta.min_start, meta.max_start))
            .filter(|meta| match (&request.service_names, &meta.services) {
                (Some(names), Some(services)) => names.iter().any(|name| services.contains(name)),
                _ => true,
            })
            .collect();
        // Row ranges per segment: the intersection over every index consulted.
        let mut ranges: Option<BTreeMap<u64, Vec<Range<u64>>>> = None;
        let mut narrow = |found: BTreeMap<u64, Vec<Range<u64>>>| {
            ranges = Some(match ranges.take() {
                None => found,
                Some(previous) => previous
                    .into_iter()
                    .filter_map(|(segment, mine)| {
                        let theirs = found.get(&segment)?;
                        let both = intersect_ranges(&mine, theirs);
                        (!both.is_empty()).then_some((segment, both))
                    })
                    .collect(),
            });
        };
        if let Some(trace_ids) = &request.trace_ids
            && trace_ids.len() <= max_lookups
        {
            let raw: Vec<RawTraceId> = trace_ids
                .iter()
                .filter_map(|id| crate::trace_keys::raw_trace_id(id))
                .collect();
            narrow(self.runs_of(&raw, |txn, key: &RawTraceId| {
                index_runs(txn, TRACE_SEGMENTS, key.as_slice())
            })?);
        }
        if let Some(sessions) = &request.session_ids
            && sessions.len() <= max_lookups
        {
            narrow(self.runs_of(sessions, |txn, key: &String| {
                index_runs(txn, SESSION_ROWS, key.as_str())
            })?);
        }
        if let Some(conversations) = &request.conversation_ids
            && conversations.len() <= max_lookups
        {
            narrow(self.runs_of(conversations, |txn, key: &String| {
                index_runs(txn, CONVERSATION_ROWS, key.as_str())
            })?);
        }
        for (sessions, conversations) in &request.sessions_or_conversations {
            if sessions.len() + conversations.len() > max_lookups {
                continue;
            }
            // A row matches either key: the union of both indexes' runs.
            let mut either = self.runs_of(sessions, |txn, key: &String| {
                index_runs(txn, SESSION_ROWS, key.as_str())
            })?;
            for (segment, found) in self.runs_of(conversations, |txn, key: &String| {
                index_runs(txn, CONVERSATION_ROWS, key.as_str())
            })? {
                let runs = either.entry(segment).or_default();
                runs.extend(found);
                *runs = merge_ranges(std::mem::take(runs));
            }
            narrow(either);
        }
        if let Some(ranges) = &ranges {
            candidates.retain(|meta| ranges.contains_key(&meta.id));
        }
        let segments = candidates
            .into_iter()
            .map(|meta| {
                let path = self.shared.dir.join(&meta.path);
                let read = SegmentRead {
                    ranges: ranges
                        .as_ref()
                        .and_then(|ranges| ranges.get(&meta.id).cloned()),
                    late: late.get(&meta.id).cloned(),
                };
                (meta, path, read)
            })
            .collect();
        ScanPlan::new(
            request,
            memtable,
            Arc::clone(&self.shared.memtable_keys),
            segments,
            total,
            Arc::new(self.shared.options.retention.clone()),
        )
    }

    /// Plans and runs a scan, collecting every batch (for small results such as one trace).
    pub fn scan(&self, request: &ScanRequest) -> Result<Vec<RecordBatch>> {
        self.plan_scan(request)?.collect()
    }

    /// The merged row ranges, per segment, that an index holds for `keys`.
    fn runs_of<K>(
        &self,
        keys: &[K],
        lookup: impl Fn(&redb::ReadTransaction, &K) -> Result<Vec<RowRun>>,
    ) -> Result<BTreeMap<u64, Vec<Range<u64>>>> {
        let txn = self
            .shared
            .db
            .begin_read()
            .map_err(store_error("begin read"))?;
        let mut out: BTreeMap<u64, Vec<Range<u64>>> = BTreeMap::new();
        for key in keys {
            for (segment, first, count) in lookup(&txn, key)? {
                out.entry(segment).or_default().push(first..first + count);
            }
        }
        for ranges in out.values_mut() {
            *ranges = merge_ranges(std::mem::take(ranges));
        }
        Ok(out)
    }

    /// Seals the memtable into segments now (also done by size and age in the background, and
    /// on close).
    pub fn seal(&self) -> Result<SealSummary> {
        seal(&self.shared)
    }

    /// Catalog entries of every sealed segment.
    pub fn segments(&self) -> Vec<Arc<SegmentMeta>> {
        self.shared.state.read().segments.clone()
    }

    /// Counts describing the store now.
    pub fn stats(&self) -> EngineStats {
        let state = self.shared.state.read();
        let frozen_rows = state.frozen.as_ref().map_or(0, |frozen| frozen.rows);
        let frozen_bytes = state.frozen.as_ref().map_or(0, |frozen| frozen.bytes);
        EngineStats {
            memtable_rows: state.active.rows + frozen_rows,
            memtable_bytes: state.active.bytes + frozen_bytes,
            segments: state.segments.len(),
            segment_rows: state.segments.iter().map(|meta| meta.rows).sum(),
            segment_bytes: state.segments.iter().map(|meta| meta.bytes).sum(),
        }
    }

    /// Stops accepting writes, finishes the queued ones, seals the memtable and stops the
    /// background threads.
    pub fn close(&self) -> Result<()> {
        self.stop_threads();
        seal(&self.shared).map(|_| ())
    }

    /// Like [`Engine::close`] but leaves the memtable in the WAL instead of sealing it (for
    /// read-only use of a data directory).
    pub fn close_without_sealing(&self) {
        self.stop_threads();
    }

    fn stop_threads(&self) {
        self.shared.closing.store(true, Ordering::Release);
        drop(self.writer_tx.lock().take());
        if let Some(handle) = self.writer.lock().take()
            && handle.join().is_err()
        {
            warn!("wal writer thread panicked");
        }
        drop(self.sealer_tx.lock().take());
        if let Some(handle) = self.sealer.lock().take()
            && handle.join().is_err()
        {
            warn!("sealer thread panicked");
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_threads();
        self.shared.reaper.sweep();
    }
}

/// Removes files under `segments/` that the catalog does not reference (half-written segments
/// from a crash, temporary files). Returns how many were removed.
fn remove_orphans(root: &Path, referenced: &HashSet<PathBuf>) -> Result<usize> {
    let mut removed = 0;
    if !root.exists() {
        return Ok(0);
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = fs::read_dir(&dir).map_err(|source| Error::io("list", &dir, source))?;
        for entry in entries {
            let entry = entry.map_err(|source| Error::io("list", &dir, source))?;
            let path = entry.path();
            let file_type = entry
                .file_type()
                .map_err(|source| Error::io("stat", &path, source))?;
            if file_type.is_dir() {
                stack.push(path);
            } else if !referenced.contains(&path) {
                fs::remove_file(&path)
                    .map_err(|source| Error::io("remove orphan", &path, source))?;
                warn!(path = %path.display(), "removed orphan segment file");
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Group commit: take everything queued, write it in one durable transaction, then publish.
fn run_writer(shared: &Shared, receiver: &Receiver<PendingWrite>) {
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
        let mut next_sequence = shared.next_sequence.lock();
        let result = commit_group(shared, &mut next_sequence, &group);
        shared.pending_bytes.fetch_sub(bytes, Ordering::Relaxed);
        match result {
            Ok((first_sequence, keys)) => {
                {
                    let mut state = shared.state.write();
                    publish_keys(shared, &mut state, keys);
                    for (offset, write) in group.iter().enumerate() {
                        state
                            .active
                            .push(write.batch.clone(), first_sequence + offset as u64);
                    }
                }
                for (offset, write) in group.into_iter().enumerate() {
                    let _ = write.reply.send(Ok(first_sequence + offset as u64));
                }
            }
            Err(error) => {
                warn!(error = %error, writes = group.len(), "wal commit failed");
                let detail = error.to_string();
                for write in group {
                    let _ = write.reply.send(Err(Error::Io {
                        operation: "commit wal",
                        path: shared.dir.join(DATABASE_FILE),
                        source: std::io::Error::other(detail.clone()),
                    }));
                }
            }
        }
        drop(next_sequence);
    }
}

/// One segment an expiry run deletes (or would delete, on a dry run).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExpiredSegment {
    /// Segment id.
    pub id: u64,
    /// Its tier.
    pub tier: String,
    /// UTC day of its rows.
    pub day: String,
    /// Rows deleted.
    pub rows: u64,
    /// File bytes freed.
    pub bytes: u64,
    /// Rows of traces promoted to a longer-kept tier after the segment was sealed, moved to a
    /// new segment of that tier instead of being deleted.
    pub rows_kept: u64,
}

/// What an expiry run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExpiryReport {
    /// The time the run measured ages against (ns since the epoch).
    pub as_of: i64,
    /// True when nothing was deleted (dry run).
    pub dry_run: bool,
    /// Segments deleted (or that would be).
    pub segments: Vec<ExpiredSegment>,
    /// Segments past their age that a legal hold kept, with the hold named.
    pub refused: Vec<String>,
}

impl ExpiryReport {
    /// Rows deleted (or that would be).
    pub fn rows(&self) -> u64 {
        self.segments.iter().map(|segment| segment.rows).sum()
    }

    /// File bytes freed (or that would be).
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|segment| segment.bytes).sum()
    }
}

/// Per-tier state of the store at one time.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TierStatus {
    /// Tier name.
    pub tier: String,
    /// How long it keeps rows.
    pub keep: Duration,
    /// Sealed segments.
    pub segments: u64,
    /// Spans whose resolved tier this is (the higher of their own and their trace's), sealed
    /// or not.
    pub spans: u64,
    /// Of `spans`, those still in memory (not yet sealed).
    pub unsealed: u64,
    /// Bytes of sealed segment files.
    pub bytes: u64,
    /// Start time of the oldest row (ns), if any (for promoted sealed rows, of the oldest
    /// segment holding some).
    pub oldest: Option<i64>,
    /// When the next segment of this tier expires (ns), if any.
    pub next_expiry: Option<i64>,
}

impl Engine {
    /// The retention tiers this engine was opened with.
    pub fn retention(&self) -> &RetentionPolicy {
        &self.shared.options.retention
    }

    /// Per-tier counts of every span by its resolved tier (the higher of its own and its
    /// trace's): sealed rows of traces promoted after their seal count in the promoted tier,
    /// and rows still in memory count too (also shown apart as `unsealed`). Segments, bytes
    /// and the next expiry are those of the tier's segment files.
    pub fn retention_status(&self) -> Result<Vec<TierStatus>> {
        let shared = &self.shared;
        let policy = &shared.options.retention;
        let (segments, late, chunks) = {
            let state = shared.state.read();
            let frozen = state.frozen.iter().flat_map(|frozen| frozen.chunks.iter());
            let chunks: Vec<RecordBatch> =
                state.active.chunks.iter().chain(frozen).cloned().collect();
            (state.segments.clone(), state.late.clone(), chunks)
        };
        // Resolved rows per tier name: sealed, and in memory.
        let mut sealed: HashMap<String, u64> = HashMap::new();
        let mut unsealed: HashMap<String, u64> = HashMap::new();
        let mut oldest: HashMap<String, i64> = HashMap::new();
        let txn = shared.db.begin_read().map_err(store_error("begin read"))?;
        let index = match txn.open_multimap_table(TRACE_SEGMENTS) {
            Ok(index) => Some(index),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(error) => return Err(Error::store("open trace index", error)),
        };
        for meta in &segments {
            let mut own = meta.rows;
            for (trace, keys) in late.get(&meta.id).into_iter().flat_map(|late| late.iter()) {
                let Some(tier) = keys.tier.as_deref() else {
                    continue;
                };
                if policy.rank(tier) <= policy.rank(&meta.tier) {
                    continue;
                }
                let mut rows = 0;
                if let Some(index) = &index {
                    for run in index
                        .get(trace.as_slice())
                        .map_err(store_error("read trace index"))?
                    {
                        let (segment, _, count) =
                            run.map_err(store_error("read trace index"))?.value();
                        if segment == meta.id {
                            rows += count;
                        }
                    }
                }
                let rows = rows.min(own);
                own -= rows;
                *sealed.entry(tier.to_owned()).or_default() += rows;
                let entry = oldest.entry(tier.to_owned()).or_insert(meta.min_start);
                *entry = (*entry).min(meta.min_start);
            }
            *sealed.entry(meta.tier.clone()).or_default() += own;
            if own > 0 {
                let entry = oldest.entry(meta.tier.clone()).or_insert(meta.min_start);
                *entry = (*entry).min(meta.min_start);
            }
        }
        {
            let keys = shared.memtable_keys.read();
            for chunk in &chunks {
                let traces = chunk
                    .column(column_index(columns::TRACE_ID))
                    .as_string::<i32>();
                let tiers = chunk
                    .column(column_index(columns::RETENTION_TIER))
                    .as_string::<i32>();
                let starts = chunk
                    .column(column_index(columns::START_TIME))
                    .as_primitive::<TimestampNanosecondType>();
                for row in 0..chunk.num_rows() {
                    let own = if tiers.is_null(row) {
                        policy.default_tier()
                    } else {
                        tiers.value(row)
                    };
                    let trace_tier = crate::trace_keys::raw_trace_id(traces.value(row))
                        .and_then(|trace| keys.get(&trace))
                        .and_then(|entry| entry.keys.tier.as_deref());
                    let tier = trace_tier.map_or(own, |trace_tier| policy.higher(own, trace_tier));
                    *unsealed.entry(tier.to_owned()).or_default() += 1;
                    let entry = oldest.entry(tier.to_owned()).or_insert(starts.value(row));
                    *entry = (*entry).min(starts.value(row));
                }
            }
        }
        Ok(policy
            .tiers()
            .iter()
            .rev()
            .map(|tier| {
                let keep = i64::try_from(tier.keep.as_nanos()).unwrap_or(i64::MAX);
                let mine: Vec<&Arc<SegmentMeta>> = segments
                    .iter()
                    .filter(|meta| meta.tier == tier.name)
                    .collect();
                let in_memory = unsealed.get(&tier.name).copied().unwrap_or(0);
                TierStatus {
                    tier: tier.name.clone(),
                    keep: tier.keep,
                    segments: mine.len() as u64,
                    spans: sealed.get(&tier.name).copied().unwrap_or(0) + in_memory,
                    unsealed: in_memory,
                    bytes: mine.iter().map(|meta| meta.bytes).sum(),
                    oldest: oldest.get(&tier.name).copied(),
                    next_expiry: mine
                        .iter()
                        .map(|meta| meta.age_basis(tier.age_from).saturating_add(keep))
                        .min(),
                }
            })
            .collect())
    }

    /// Deletes every sealed segment whose rows are all older than their tier keeps at `as_of`
    /// (ns since the epoch), whole segments at a time. A row's age counts from its tier's
    /// [`crate::AgeFrom`]: by default the later of its end time and its arrival. Rows of traces promoted to a
    /// longer-kept tier after the segment was sealed are first moved to a segment of that tier.
    /// With `dry_run`, reports what would be deleted and changes nothing.
    pub fn expire(&self, as_of: i64, dry_run: bool) -> Result<ExpiryReport> {
        let shared = &self.shared;
        let _guard = shared.seal_lock.lock();
        let policy = &shared.options.retention;
        let (segments, late) = {
            let state = shared.state.read();
            (state.segments.clone(), state.late.clone())
        };
        let mut report = ExpiryReport {
            as_of,
            dry_run,
            segments: Vec::new(),
            refused: Vec::new(),
        };
        let keep_ns = |tier: &str| i64::try_from(policy.keep(tier).as_nanos()).unwrap_or(i64::MAX);
        // Deleted segments holding rows that arrived within the hour before `as_of`: rows,
        // segments, and the tiers with why (a WARN says so).
        let mut recent: (u64, usize, BTreeSet<String>) = (0, 0, BTreeSet::new());
        for meta in segments {
            let cutoff = as_of.saturating_sub(keep_ns(&meta.tier));
            if meta.age_basis(policy.age_from(&meta.tier)) >= cutoff {
                continue;
            }
            // Rows of traces promoted above this segment's tier stay if their tier still keeps
            // them.
            let promoted: Vec<(RawTraceId, TraceKeys)> = late
                .get(&meta.id)
                .map(|keys| {
                    keys.iter()
                        .filter(|(_, keys)| {
                            keys.tier
                                .as_deref()
                                .is_some_and(|tier| policy.rank(tier) > policy.rank(&meta.tier))
                        })
                        .map(|(trace, keys)| (*trace, keys.clone()))
                        .collect()
                })
                .unwrap_or_default();
            let kept = if promoted.is_empty() {
                None
            } else {
                Some(self.promoted_rows(&meta, &promoted, as_of)?)
            };
            let rows_kept = kept.as_ref().map_or(0, |batches| {
                batches.iter().map(|b| b.num_rows() as u64).sum()
            });
            let expired = ExpiredSegment {
                id: meta.id,
                tier: meta.tier.clone(),
                day: meta.day.clone(),
                rows: meta.rows - rows_kept,
                bytes: meta.bytes,
                rows_kept,
            };
            let outcome = if dry_run {
                // The same hold check as a real run, in a transaction that is not committed.
                let txn = shared
                    .db
                    .begin_write()
                    .map_err(store_error("begin expiry"))?;
                let held = crate::holds::refuse_expiry_if_held(&txn, &meta);
                txn.abort().map_err(store_error("abort dry run"))?;
                held
            } else {
                self.delete_segment(&meta, kept.unwrap_or_default(), Removal::Expire)
                    .map(|_| ())
            };
            let hour_ago = as_of.saturating_sub(3_600_000_000_000);
            if outcome.is_ok() && meta.max_arrival.is_some_and(|arrival| arrival > hour_ago) {
                recent.0 += expired.rows;
                recent.1 += 1;
                let keep = policy.keep(&meta.tier);
                recent.2.insert(format!(
                    "{} (keep {}s, age from {})",
                    meta.tier,
                    keep.as_secs(),
                    policy.age_from(&meta.tier).name()
                ));
            }
            match outcome {
                Ok(()) => report.segments.push(expired),
                Err(error @ Error::Held { .. }) => {
                    warn!(segment = meta.id, error = %error, "retention refused to expire a held segment");
                    report
                        .refused
                        .push(format!("segment {} ({}): {error}", meta.id, meta.path));
                }
                Err(error) => return Err(error),
            }
        }
        if !dry_run && recent.1 > 0 {
            warn!(
                rows = recent.0,
                segments = recent.1,
                tiers = %recent.2.into_iter().collect::<Vec<_>>().join(", "),
                as_of,
                "retention deleted data that arrived less than an hour ago: these segments \
                 held rows sent within the hour, and their tier's age (counted from the span's \
                 end time, or from arrival when later) is past its keep"
            );
        }
        // The expired segments' files go now, unless a running query still reads them.
        shared.reaper.sweep();
        if !dry_run && !report.segments.is_empty() {
            info!(
                segments = report.segments.len(),
                rows = report.rows(),
                bytes = report.bytes(),
                as_of,
                "retention expired segments"
            );
        }
        Ok(report)
    }

    /// Rows of `traces` in segment `meta`, resolved (so promoted to their trace's tier), that
    /// their tier still keeps at `as_of`.
    fn promoted_rows(
        &self,
        meta: &Arc<SegmentMeta>,
        traces: &[(RawTraceId, TraceKeys)],
        as_of: i64,
    ) -> Result<Vec<RecordBatch>> {
        let policy = &self.shared.options.retention;
        let request = ScanRequest {
            trace_ids: Some(traces.iter().map(|(trace, _)| hex::encode(trace)).collect()),
            ..ScanRequest::default()
        };
        let late: HashMap<RawTraceId, TraceKeys> = traces.iter().cloned().collect();
        let plan = ScanPlan::new(
            &request,
            Vec::new(),
            Arc::clone(&self.shared.memtable_keys),
            vec![(
                Arc::clone(meta),
                self.shared.dir.join(&meta.path),
                SegmentRead {
                    ranges: None,
                    late: Some(Arc::new(late)),
                },
            )],
            1,
            Arc::new(policy.clone()),
        )?;
        let mut out = Vec::new();
        for batch in plan.collect()? {
            let tiers = batch
                .column(column_index(columns::RETENTION_TIER))
                .as_string::<i32>();
            let ends = batch
                .column(column_index(columns::END_TIME))
                .as_primitive::<TimestampNanosecondType>();
            let arrivals = batch
                .column(column_index(columns::ARRIVAL_TIME))
                .as_primitive::<TimestampNanosecondType>();
            let keep: BooleanArray = (0..batch.num_rows())
                .map(|row| {
                    let tier = tiers.value(row);
                    let keep = i64::try_from(policy.keep(tier).as_nanos()).unwrap_or(i64::MAX);
                    let arrival = arrivals.is_valid(row).then(|| arrivals.value(row));
                    let basis = policy.age_from(tier).basis(ends.value(row), arrival);
                    Some(basis >= as_of.saturating_sub(keep))
                })
                .collect();
            let kept = filter_record_batch(&batch, &keep)?;
            if kept.num_rows() > 0 {
                out.push(kept);
            }
        }
        Ok(out)
    }

    /// Removes a segment from the catalog and its index entries in one transaction (writing
    /// `keep` as new segments first), records why in the chain, then deletes its file.
    fn delete_segment(
        &self,
        meta: &Arc<SegmentMeta>,
        keep: Vec<RecordBatch>,
        removal: Removal<'_>,
    ) -> Result<Vec<u64>> {
        let shared = &self.shared;
        let path = shared.dir.join(&meta.path);
        let old = read_runs(meta, &path)?;
        let mut new_metas = Vec::new();
        let first_id = *shared.next_segment_id.lock();
        if !keep.is_empty() {
            let batch = concat_batches(&span_schema(), &keep)?;
            let options = SegmentWriteOptions {
                row_group_rows: shared.options.row_group_rows,
                zstd_level: shared.options.zstd_level,
            };
            for (offset, ((tier, day), part)) in
                split_by_tier_and_day(&batch)?.into_iter().enumerate()
            {
                let sorted = sort_for_segment(&part)?;
                new_metas.push(agent_tables::write_segment_with_sidecars(
                    shared,
                    first_id + offset as u64,
                    &tier,
                    &day,
                    &sorted,
                    &[],
                    options,
                )?);
            }
        }
        let mut digests = Vec::with_capacity(new_metas.len());
        for new in &new_metas {
            digests.push(crate::chain::file_digest(&shared.dir.join(&new.path))?);
        }
        let txn = shared
            .db
            .begin_write()
            .map_err(store_error("begin expiry"))?;
        let cleanup = |new_metas: &[SegmentMeta]| {
            for new in new_metas {
                let _ = fs::remove_file(shared.dir.join(&new.path));
                agent_tables::remove_sidecars(&shared.dir, new);
            }
        };
        let held = match &removal {
            Removal::Expire => crate::holds::refuse_expiry_if_held(&txn, meta),
            Removal::Erase { session, .. } => crate::holds::refuse_if_held(
                &txn,
                &crate::holds::HoldTarget::Session((*session).to_owned()),
            ),
        };
        if let Err(error) = held {
            cleanup(&new_metas);
            return Err(error);
        }
        let mut new_segments = new_metas.iter().zip(digests);
        match &removal {
            Removal::Expire => {
                crate::chain::append_expired(&txn, meta)?;
            }
            Removal::Erase { session, traces } => {
                // One entry: the old segment replaced by its rewrite without the session.
                let first = new_segments
                    .next()
                    .map(|(new, digest)| crate::chain::ChainSegment::of(new, digest));
                crate::chain::append(
                    &txn,
                    crate::chain::EntryKind::Erased,
                    first,
                    Some(meta.id),
                    session,
                )?;
                crate::content::erase_traces(&txn, traces)?;
            }
        }
        for (new, digest) in new_segments {
            let segment = crate::chain::ChainSegment::of(new, digest);
            let why = match &removal {
                Removal::Expire => {
                    "moved from an expired segment: its trace was promoted to this tier"
                }
                Removal::Erase { .. } => "rows of a rewritten segment, after an erasure",
            };
            crate::chain::append(
                &txn,
                crate::chain::EntryKind::Sealed,
                Some(segment),
                None,
                why,
            )?;
        }
        {
            let mut catalog = txn
                .open_table(SEGMENTS)
                .map_err(store_error("open catalog"))?;
            catalog
                .remove(meta.id)
                .map_err(store_error("remove catalog entry"))?;
            let mut trace_index = txn
                .open_multimap_table(TRACE_SEGMENTS)
                .map_err(store_error("open trace index"))?;
            let mut session_index = txn
                .open_multimap_table(SESSION_ROWS)
                .map_err(store_error("open session index"))?;
            let mut conversation_index = txn
                .open_multimap_table(CONVERSATION_ROWS)
                .map_err(store_error("open conversation index"))?;
            for (trace, first, count) in &old.trace_runs {
                trace_index
                    .remove(trace.as_slice(), (meta.id, *first, *count))
                    .map_err(store_error("remove trace index entry"))?;
            }
            for (session, first, count) in &old.session_runs {
                session_index
                    .remove(session.as_str(), (meta.id, *first, *count))
                    .map_err(store_error("remove session index entry"))?;
            }
            for (conversation, first, count) in &old.conversation_runs {
                conversation_index
                    .remove(conversation.as_str(), (meta.id, *first, *count))
                    .map_err(store_error("remove conversation index entry"))?;
            }
            // Late-keyed runs were added to the session and conversation indexes under the
            // trace's keys; remove those too.
            if let Some(late) = shared.state.read().late.get(&meta.id) {
                for (trace, keys) in late.iter() {
                    for (run_trace, first, count) in &old.trace_runs {
                        if run_trace != trace {
                            continue;
                        }
                        let run = (meta.id, *first, *count);
                        for session in [&keys.session_id, &keys.conversation_id]
                            .into_iter()
                            .flatten()
                        {
                            session_index
                                .remove(&**session, run)
                                .map_err(store_error("remove session index entry"))?;
                        }
                        if let Some(conversation) = &keys.conversation_id {
                            conversation_index
                                .remove(&**conversation, run)
                                .map_err(store_error("remove conversation index entry"))?;
                        }
                    }
                }
            }
            txn.open_multimap_table(LATE_KEYS)
                .map_err(store_error("open late keys"))?
                .remove_all(meta.id)
                .map_err(store_error("remove late keys"))?;
            drop((catalog, trace_index, session_index, conversation_index));
            for new in &new_metas {
                // A rewrite does not complete split traces (a seal does): they are dirty.
                agent_tables::mark_split_traces(&txn, new)?;
                add_to_catalog(&txn, new)?;
            }
            let trace_index = txn
                .open_multimap_table(TRACE_SEGMENTS)
                .map_err(store_error("open trace index"))?;
            // Keys of traces with no rows left anywhere are dropped (unless in the memtable).
            let in_memtable = shared.memtable_keys.read();
            let mut keys_table = txn
                .open_table(TRACE_KEYS)
                .map_err(store_error("open trace keys"))?;
            let mut gone = Vec::new();
            for (trace, _, _) in &old.trace_runs {
                let left = trace_index
                    .get(trace.as_slice())
                    .map_err(store_error("read trace index"))?
                    .next()
                    .is_some();
                if !left && !in_memtable.contains_key(trace) {
                    keys_table
                        .remove(trace.as_slice())
                        .map_err(store_error("remove trace keys"))?;
                    gone.push(*trace);
                }
            }
            agent_tables::disown(
                &txn,
                meta.id,
                old.trace_runs.iter().map(|(trace, _, _)| *trace),
                &gone,
            )?;
            // Content references of traces with no span left go with them.
            if matches!(removal, Removal::Expire) {
                crate::content::remove_refs_of_traces(&txn, &gone)?;
            }
            let mut meta_table = txn.open_table(META).map_err(store_error("open meta"))?;
            meta_table
                .insert(META_NEXT_SEGMENT_ID, first_id + new_metas.len() as u64)
                .map_err(store_error("write next segment id"))?;
        }
        txn.commit().map_err(store_error("commit expiry"))?;
        *shared.next_segment_id.lock() = first_id + new_metas.len() as u64;
        let new_ids: Vec<u64> = new_metas.iter().map(|new| new.id).collect();
        {
            let mut state = shared.state.write();
            state.segments.retain(|segment| segment.id != meta.id);
            state.late.remove(&meta.id);
            for mut new in new_metas {
                new.trace_runs = Vec::new();
                new.session_runs = Vec::new();
                new.conversation_runs = Vec::new();
                state.segments.push(Arc::new(new));
            }
        }
        // Deleted once no running query holds the segment (`reaper.rs`).
        shared
            .reaper
            .retire(meta, agent_tables::segment_files(&shared.dir, meta));
        Ok(new_ids)
    }

    /// Erases a session: every span whose (resolved) session is `session_id`, in every tier,
    /// and the content of their traces. Only the segments holding the session are rewritten
    /// (without its rows); each rewrite is recorded in the chain as an erasure, so `verify`
    /// still passes and lists it. Refused while the session is under a legal hold.
    pub fn erase_session(&self, session_id: &str) -> Result<EraseReport> {
        // Everything the session has must be in segments.
        self.seal()?;
        let shared = &self.shared;
        let _guard = shared.seal_lock.lock();
        {
            let txn = shared
                .db
                .begin_write()
                .map_err(store_error("begin erase"))?;
            let held = crate::holds::refuse_if_held(
                &txn,
                &crate::holds::HoldTarget::Session(session_id.to_owned()),
            );
            txn.abort().map_err(store_error("abort erase check"))?;
            held?;
        }
        let holding = self.runs_of(&[session_id.to_owned()], |txn, key: &String| {
            index_runs(txn, SESSION_ROWS, key.as_str())
        })?;
        let (segments, late) = {
            let state = shared.state.read();
            (state.segments.clone(), state.late.clone())
        };
        let mut report = EraseReport {
            session_id: session_id.to_owned(),
            ..EraseReport::default()
        };
        for meta in segments
            .iter()
            .filter(|meta| holding.contains_key(&meta.id))
        {
            // Every row of the segment, resolved, split into the session's and the rest.
            let plan = ScanPlan::new(
                &ScanRequest::default(),
                Vec::new(),
                Arc::clone(&shared.memtable_keys),
                vec![(
                    Arc::clone(meta),
                    shared.dir.join(&meta.path),
                    SegmentRead {
                        ranges: None,
                        late: late.get(&meta.id).cloned(),
                    },
                )],
                1,
                Arc::new(shared.options.retention.clone()),
            )?;
            let mut keep = Vec::new();
            let mut traces: HashSet<RawTraceId> = HashSet::new();
            let mut removed = 0u64;
            for batch in plan.collect()? {
                let sessions = batch
                    .column(column_index(columns::SESSION_ID))
                    .as_string::<i32>();
                let trace_ids = batch
                    .column(column_index(columns::TRACE_ID))
                    .as_string::<i32>();
                let mut mask = Vec::with_capacity(batch.num_rows());
                for row in 0..batch.num_rows() {
                    let erased = sessions.is_valid(row) && sessions.value(row) == session_id;
                    if erased {
                        removed += 1;
                        if let Some(trace) = crate::trace_keys::raw_trace_id(trace_ids.value(row)) {
                            traces.insert(trace);
                        }
                    }
                    mask.push(!erased);
                }
                let kept = filter_record_batch(&batch, &BooleanArray::from(mask))?;
                if kept.num_rows() > 0 {
                    keep.push(kept);
                }
            }
            if removed == 0 {
                continue;
            }
            let new_ids = self.delete_segment(
                meta,
                keep,
                Removal::Erase {
                    session: session_id,
                    traces: &traces,
                },
            )?;
            report.rows += removed;
            report.traces.extend(traces);
            report.segments.push((meta.id, new_ids));
        }
        // Keys of the session's traces go with them (they are no longer in any segment).
        let txn = shared
            .db
            .begin_write()
            .map_err(store_error("begin erase"))?;
        {
            let mut keys = txn
                .open_table(TRACE_KEYS)
                .map_err(store_error("open trace keys"))?;
            for trace in &report.traces {
                keys.remove(trace.as_slice())
                    .map_err(store_error("remove trace keys"))?;
            }
        }
        txn.commit().map_err(store_error("commit erase"))?;
        info!(
            session = session_id,
            rows = report.rows,
            segments = report.segments.len(),
            "erased session"
        );
        // The rewritten segments' files go now, unless a running query still reads them.
        drop(segments);
        shared.reaper.sweep();
        Ok(report)
    }
}

/// Why a segment leaves the catalog.
enum Removal<'a> {
    /// Past its tier's age.
    Expire,
    /// Rewritten without an erased session's rows.
    Erase {
        session: &'a str,
        traces: &'a HashSet<RawTraceId>,
    },
}

/// What [`Engine::erase_session`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EraseReport {
    /// The erased session.
    pub session_id: String,
    /// Spans removed.
    pub rows: u64,
    /// Traces whose spans (and content) were removed, raw ids.
    pub traces: HashSet<[u8; 16]>,
    /// Segments rewritten: (old id, ids of the rewrites; empty when nothing else was in it).
    pub segments: Vec<(u64, Vec<u64>)>,
}

/// The trace, session and conversation runs of a sealed segment, read from its key columns.
fn read_runs(meta: &Arc<SegmentMeta>, path: &Path) -> Result<SegmentMeta> {
    crate::segment::read_runs(meta, path)
}

/// Trace keys a commit learned, to publish once it is durable.
#[derive(Debug, Default)]
struct KeyUpdates {
    /// Keys of traces with rows in the memtable now.
    memtable: Vec<(RawTraceId, TraceKeys)>,
    /// Late keys: (segment id, trace, keys).
    late: Vec<(u64, RawTraceId, TraceKeys)>,
}

/// Publishes what a commit learned about trace keys (under the state write lock, together with
/// the rows, so scans never see rows without their keys).
fn publish_keys(shared: &Shared, state: &mut State, updates: KeyUpdates) {
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

/// Appends the group's WAL records and merges its trace keys, in one durable transaction.
/// `next_sequence` is the writer's lock, held by the caller.
fn commit_group(
    shared: &Shared,
    next_sequence: &mut u64,
    group: &[PendingWrite],
) -> Result<(u64, KeyUpdates)> {
    let first = *next_sequence;
    let txn = shared
        .db
        .begin_write()
        .map_err(store_error("begin wal write"))?;
    {
        let mut table = txn.open_table(WAL).map_err(store_error("open wal"))?;
        for (offset, write) in group.iter().enumerate() {
            table
                .insert(first + offset as u64, write.record.as_slice())
                .map_err(store_error("append wal"))?;
        }
    }
    // Content before the keys: a write that promotes a trace also promotes the content this
    // group stored for it.
    for write in group {
        crate::content::put_content_in(&txn, &write.content, &shared.options.retention)?;
    }
    let updates = merge_trace_keys(
        &txn,
        group.iter().map(|write| &write.batch),
        &shared.options.retention,
    )?;
    txn.commit().map_err(store_error("commit wal"))?;
    *next_sequence = first + group.len() as u64;
    debug!(writes = group.len(), "wal group committed");
    Ok((first, updates))
}

/// Merges the keys the batches' rows carry into `trace_keys`, and returns the keys of every
/// trace of the batches that has some. When a trace gains a key while rows of it are already
/// sealed, those segments get a late-keys entry and their runs are added to the session and
/// conversation indexes.
fn merge_trace_keys<'a>(
    txn: &WriteTransaction,
    batches: impl Iterator<Item = &'a RecordBatch>,
    policy: &RetentionPolicy,
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
            crate::content::promote_trace_content(txn, &trace, tier)?;
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
fn record_late_keys(
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

fn needs_seal(shared: &Shared) -> bool {
    let state = shared.state.read();
    let active = &state.active;
    active.bytes >= shared.options.seal_max_bytes
        || active.rows >= shared.options.seal_max_rows
        || active
            .oldest
            .is_some_and(|oldest| oldest.elapsed() >= shared.options.seal_max_age)
        || state.frozen.is_some()
}

fn run_sealer(shared: &Shared, wake: &Receiver<()>) {
    const MAX_BACKOFF: Duration = Duration::from_secs(60);
    let mut backoff = Duration::ZERO;
    loop {
        match wake.recv_timeout(Duration::from_secs(1)) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if shared.closing.load(Ordering::Acquire) {
            return;
        }
        if !needs_seal(shared) {
            continue;
        }
        match seal(shared) {
            Ok(_) => backoff = Duration::ZERO,
            Err(error) => {
                backoff = (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                warn!(
                    error = %error,
                    retry_in_secs = backoff.as_secs(),
                    "sealing failed; rows stay in the wal and memtable"
                );
                // Wait out the backoff unless the engine closes meanwhile.
                if let Err(RecvTimeoutError::Disconnected) = wake.recv_timeout(backoff) {
                    return;
                }
            }
        }
    }
}

/// Splits a resolved batch into one batch per (retention tier, UTC day of `start_time`).
fn split_by_tier_and_day(batch: &RecordBatch) -> Result<Vec<((String, String), RecordBatch)>> {
    let starts = batch
        .column(column_index(columns::START_TIME))
        .as_primitive::<TimestampNanosecondType>();
    let tiers = batch
        .column(column_index(columns::RETENTION_TIER))
        .as_string::<i32>();
    let keys: Vec<(String, String)> = (0..batch.num_rows())
        .map(|row| (tiers.value(row).to_owned(), day_of(starts.value(row))))
        .collect();
    let distinct: BTreeSet<&(String, String)> = keys.iter().collect();
    if distinct.len() == 1 {
        let key = keys.first().cloned().unwrap_or_default();
        return Ok(vec![(key, batch.clone())]);
    }
    let mut out = Vec::new();
    for key in distinct {
        let mask = BooleanArray::from(
            keys.iter()
                .map(|candidate| candidate == key)
                .collect::<Vec<_>>(),
        );
        out.push((key.clone(), filter_record_batch(batch, &mask)?));
    }
    Ok(out)
}

fn seal(shared: &Shared) -> Result<SealSummary> {
    let _guard = shared.seal_lock.lock();
    let (frozen, generation) = {
        let mut state = shared.state.write();
        if state.frozen.is_none() {
            if state.active.rows == 0 {
                return Ok(SealSummary::default());
            }
            state.frozen = Some(std::mem::take(&mut state.active));
            shared.generation.fetch_add(1, Ordering::AcqRel);
        }
        // Everything written up to the switch belongs to generations <= this one.
        let generation = shared.generation.load(Ordering::Acquire).saturating_sub(1);
        (state.frozen.clone().unwrap_or_default(), generation)
    };
    let started = Instant::now();
    let all = concat_batches(&span_schema(), &frozen.chunks)?;
    // Resolve the trace keys known now, and remember them per trace, so the commit can catch
    // keys (or a higher tier) that arrive while the files are written.
    let (all, unresolved) = {
        let keys = shared.memtable_keys.read();
        let resolved = resolve_keys(
            &all,
            |trace| keys.get(trace).map(|entry| &entry.keys),
            &shared.options.retention,
        )?;
        let snapshot = traces_in_batch(&resolved)
            .into_iter()
            .map(|trace| {
                let known = keys.get(&trace).map(|entry| entry.keys.clone());
                (trace, known.unwrap_or_default())
            })
            .collect::<HashMap<_, _>>();
        (resolved, snapshot)
    };
    let options = SegmentWriteOptions {
        row_group_rows: shared.options.row_group_rows,
        zstd_level: shared.options.zstd_level,
    };
    let mut metas = Vec::new();
    let mut written_paths = Vec::new();
    let first_id = *shared.next_segment_id.lock();
    let result = (|| -> Result<Vec<(u64, RawTraceId, TraceKeys)>> {
        let mut parts = Vec::new();
        for ((tier, day), batch) in split_by_tier_and_day(&all)? {
            parts.push((tier, day, sort_for_segment(&batch)?));
        }
        let batches: Vec<RecordBatch> = parts.iter().map(|(_, _, batch)| batch.clone()).collect();
        let mut split = agent_tables::complete_split_traces(shared, &batches, first_id)?;
        let extra = std::mem::take(&mut split.extra);
        for (offset, ((tier, day, sorted), extra)) in parts.into_iter().zip(extra).enumerate() {
            let id = first_id + offset as u64;
            let meta = agent_tables::write_segment_with_sidecars(
                shared, id, &tier, &day, &sorted, &extra, options,
            )?;
            written_paths.extend(agent_tables::segment_files(&shared.dir, &meta));
            metas.push(meta);
        }
        commit_segments(
            shared,
            &metas,
            &split,
            &unresolved,
            frozen.max_sequence,
            first_id + metas.len() as u64,
        )
    })();
    let late = match result {
        Ok(late) => late,
        Err(error) => {
            for path in written_paths {
                // Best effort: leftovers are orphans and are removed at the next open.
                let _ = fs::remove_file(path);
            }
            return Err(error);
        }
    };
    *shared.next_segment_id.lock() = first_id + metas.len() as u64;
    let summary = SealSummary {
        segments: metas.len(),
        rows: metas.iter().map(|meta| meta.rows).sum(),
        bytes: metas.iter().map(|meta| meta.bytes).sum(),
    };
    {
        let mut state = shared.state.write();
        state.frozen = None;
        for mut meta in metas {
            meta.trace_runs = Vec::new();
            meta.session_runs = Vec::new();
            meta.conversation_runs = Vec::new();
            state.segments.push(Arc::new(meta));
        }
        publish_keys(
            shared,
            &mut state,
            KeyUpdates {
                memtable: Vec::new(),
                late,
            },
        );
        // Keys of traces last written before the switch are no longer needed in memory.
        shared
            .memtable_keys
            .write()
            .retain(|_, entry| entry.generation > generation);
    }
    info!(
        segments = summary.segments,
        rows = summary.rows,
        bytes = summary.bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "sealed memtable"
    );
    Ok(summary)
}

/// One transaction: catalog entries, trace/session/conversation indexes, WAL truncation, next
/// segment id, and late keys for traces whose keys arrived while the segments were written.
fn commit_segments(
    shared: &Shared,
    metas: &[SegmentMeta],
    split: &agent_tables::SplitTraces,
    unresolved: &HashMap<RawTraceId, TraceKeys>,
    max_sequence: u64,
    next_segment_id: u64,
) -> Result<Vec<(u64, RawTraceId, TraceKeys)>> {
    // Digests for the chain before the transaction: hashing must not hold the write lock (the
    // files are fsync'd already).
    let mut digests = Vec::with_capacity(metas.len());
    for meta in metas {
        digests.push(crate::chain::file_digest(&shared.dir.join(&meta.path))?);
    }
    let txn = shared.db.begin_write().map_err(store_error("begin seal"))?;
    let mut late = Vec::new();
    {
        for meta in metas {
            add_to_catalog(&txn, meta)?;
        }
        agent_tables::record_owners(&txn, split)?;
        for (meta, digest) in metas.iter().zip(digests) {
            let segment = crate::chain::ChainSegment::of(meta, digest);
            crate::chain::append(
                &txn,
                crate::chain::EntryKind::Sealed,
                Some(segment),
                None,
                "",
            )?;
        }
        if !unresolved.is_empty() {
            let keys_table = txn
                .open_table(TRACE_KEYS)
                .map_err(store_error("open trace keys"))?;
            for meta in metas {
                for (trace, first, count) in &meta.trace_runs {
                    let Some(snapshot) = unresolved.get(trace) else {
                        continue;
                    };
                    let Some(current) = read_trace_keys(&keys_table, trace)? else {
                        continue;
                    };
                    if current.adds_to(Some(snapshot), &shared.options.retention) {
                        record_late_keys(
                            &txn,
                            trace,
                            Some(snapshot),
                            &current,
                            &[(meta.id, *first, *count)],
                        )?;
                        late.push((meta.id, *trace, current));
                    }
                }
            }
        }
        let mut wal = txn.open_table(WAL).map_err(store_error("open wal"))?;
        wal.retain_in(..=max_sequence, |_, _| false)
            .map_err(store_error("truncate wal"))?;
        let mut meta = txn.open_table(META).map_err(store_error("open meta"))?;
        meta.insert(META_NEXT_SEGMENT_ID, next_segment_id)
            .map_err(store_error("write next segment id"))?;
    }
    txn.commit().map_err(store_error("commit seal"))?;
    Ok(late)
}

/// A new segment's catalog entry and its trace, session and conversation runs, written in
/// `txn` (the seal's or a rewrite's transaction).
fn add_to_catalog(txn: &WriteTransaction, meta: &SegmentMeta) -> Result<()> {
    txn.open_table(SEGMENTS)
        .map_err(store_error("open catalog"))?
        .insert(meta.id, meta.encode().as_slice())
        .map_err(store_error("write catalog"))?;
    let mut trace_index = txn
        .open_multimap_table(TRACE_SEGMENTS)
        .map_err(store_error("open trace index"))?;
    for (trace, first, count) in &meta.trace_runs {
        trace_index
            .insert(trace.as_slice(), (meta.id, *first, *count))
            .map_err(store_error("write trace index"))?;
    }
    let mut session_index = txn
        .open_multimap_table(SESSION_ROWS)
        .map_err(store_error("open session index"))?;
    for (session, first, count) in &meta.session_runs {
        session_index
            .insert(session.as_str(), (meta.id, *first, *count))
            .map_err(store_error("write session index"))?;
    }
    let mut conversation_index = txn
        .open_multimap_table(CONVERSATION_ROWS)
        .map_err(store_error("open conversation index"))?;
    for (conversation, first, count) in &meta.conversation_runs {
        conversation_index
            .insert(conversation.as_str(), (meta.id, *first, *count))
            .map_err(store_error("write conversation index"))?;
    }
    Ok(())
}

/// The row runs an index multimap holds for one key.
fn index_runs<'k, K: redb::Key + 'static>(
    txn: &redb::ReadTransaction,
    table: redb::MultimapTableDefinition<'_, K, RowRun>,
    key: impl std::borrow::Borrow<K::SelfType<'k>>,
) -> Result<Vec<RowRun>> {
    let table = match txn.open_multimap_table(table) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(error) => return Err(Error::store("open index", error)),
    };
    let mut out = Vec::new();
    for run in table.get(key).map_err(store_error("read index"))? {
        out.push(run.map_err(store_error("read index"))?.value());
    }
    Ok(out)
}

/// Sorts and merges overlapping or touching ranges.
fn merge_ranges(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.sort_by_key(|range| range.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match out.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => out.push(range),
        }
    }
    out
}

/// The intersection of two sorted, merged range lists.
fn intersect_ranges(left: &[Range<u64>], right: &[Range<u64>]) -> Vec<Range<u64>> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < left.len() && j < right.len() {
        let start = left[i].start.max(right[j].start);
        let end = left[i].end.min(right[j].end);
        if start < end {
            out.push(start..end);
        }
        if left[i].end < right[j].end {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The keys stored for one trace.
fn read_trace_keys(
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

#[allow(dead_code)]
fn wal_len(shared: &Shared) -> Result<u64> {
    let txn = shared.db.begin_read().map_err(store_error("begin read"))?;
    let table = txn.open_table(WAL).map_err(store_error("open wal"))?;
    table.len().map_err(store_error("count wal"))
}
