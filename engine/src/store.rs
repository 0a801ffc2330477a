//! [`Engine`]: opening (orphan removal, starting the threads), the memtable, scan planning and
//! the engine's shared state. The jobs live in their own modules: `recovery` (WAL replay at
//! open), `writer` (group commit of spans and content), `seal` (memtable to segments),
//! `expiry` (retention status and expiry), `removal` (taking a segment out of the catalog),
//! `compaction` (a day's segments rewritten in session order),
//! `erase` (erasure of a session), `reaper` (deleting removed files after their last reader),
//! `agent_tables`, `session_rollup`, `purge`, `compliance`, `db_slot` and `reopen` (opening
//! the database again after a storage fault, without a restart).
//!
//! Invariants:
//! - A write is acknowledged only after its WAL record is in a WAL file and fsync'd
//!   (`wal_log.rs`), its content and trace keys committed to redb (a non-durable commit: a
//!   crash loses it, and recovery applies the WAL records after `wal_applied` again), and its
//!   rows are in the memtable (read-your-writes).
//! - Every row is in exactly one of: the active memtable, the frozen memtable (being sealed), a
//!   sealed segment. The switch from frozen to segment happens under the state lock, after the
//!   catalog transaction (segment entries + trace index + `wal_sealed_through`) committed
//!   durably; the WAL files it covers are deleted after that.
//! - Segment files are fsync'd before the catalog references them; files the catalog does not
//!   reference are removed at open.
//! - Lock order: `seal_lock`, `wal` (the writer's lock), a redb write transaction,
//!   `state`, `memtable_keys`: none is waited for while holding one later in the list.

mod agent_tables;
mod compaction;
mod compliance;
mod content_seal;
mod db_slot;
mod erase;
mod expiry;
mod lake_export;
mod purge;
mod reaper;
mod recovery;
mod removal;
mod reopen;
mod seal;
mod session_rollup;
mod writer;

pub use agent_tables::{AgentRead, SidecarRead};
pub use compaction::{CompactedGroup, CompactionReport};
pub use compliance::verify_data_dir;
pub use erase::EraseReport;
pub use expiry::{ExpiredSegment, ExpiryReport, TierStatus};
pub use lake_export::{ChainChange, ChainChangeKind, SegmentExport};
pub use purge::PurgeReport;
use recovery::{Recovered, recover};
pub use session_rollup::{RollupLookup, SessionRollupKey};
pub use writer::WriteBatch;

use removal::*;
use seal::*;
use writer::*;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::array::Array;
use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use crossbeam_channel::{Sender, bounded, unbounded};
use parking_lot::{Mutex, RwLock};
use redb::{Database, ReadableMultimapTable, ReadableTable};
use tracing::{info, warn};

use crate::content_memtable::{ContentDelta, ContentMemtable};
use crate::content_segment::ContentSegmentMeta;
use crate::error::{Error, Result};
use crate::retention::RetentionPolicy;
use crate::scan::{LateKeys, MemtableKeys, MemtableKeysEntry, ScanPlan, ScanRequest, SegmentRead};
use crate::schema::span_schema;
use crate::segment::SegmentMeta;
use crate::tables::{
    CONVERSATION_ROWS, FORMAT_VERSION, LATE_KEYS, META, META_FORMAT_VERSION, META_NEXT_SEGMENT_ID,
    META_WAL_APPLIED, META_WAL_SEALED_THROUGH, RowRun, SEGMENTS, SESSION_ROWS, TRACE_KEYS,
    TRACE_SEGMENTS, WAL,
};
use crate::trace_keys::{RawTraceId, traces_in_batch};
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
    /// Refuse writes (overloaded) when the memtable (active + frozen, and the sorted copy of
    /// the frozen rows a seal makes) exceeds this many bytes, i.e. when sealing cannot keep up.
    pub max_memtable_bytes: usize,
    /// Run the background sealer thread (tests turn it off and call `seal`); also the
    /// compactor's, when [`Options::compaction_quiet`] is set.
    pub background_sealing: bool,
    /// Compact a (tier, day) in the background once none of its rows arrived for this long
    /// (see `store/compaction.rs`); `None` compacts only when asked ([`Engine::compact`]).
    pub compaction_quiet: Option<Duration>,
    /// Retention tiers: which tier rows without one go to, and how long each is kept.
    pub retention: RetentionPolicy,
    /// Memory redb may use to cache pages of the database file (indexes, trace keys, content).
    /// redb's own default is 1 GiB, which a store with content fills: the server's resident
    /// memory grew with the database file.
    pub index_cache_bytes: usize,
    /// Storage faults to inject (tests of failure handling only).
    pub faults: Option<Arc<crate::FaultInjector>>,
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
            compaction_quiet: Some(Duration::from_secs(300)),
            retention: RetentionPolicy::default(),
            index_cache_bytes: 64 << 20,
            faults: None,
        }
    }
}

impl Options {
    /// Injects storage faults from `injector` (tests of failure handling).
    pub fn with_faults(mut self, injector: Arc<crate::FaultInjector>) -> Self {
        self.faults = Some(injector);
        self
    }

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

    /// Sets the memory redb may use to cache database pages.
    pub fn with_index_cache_bytes(mut self, bytes: usize) -> Self {
        self.index_cache_bytes = bytes;
        self
    }

    /// Sets the retention tiers.
    pub fn with_retention(mut self, policy: RetentionPolicy) -> Self {
        self.retention = policy;
        self
    }

    /// Sets how long a (tier, day) must be quiet before the background compactor rewrites it
    /// (`None`: only [`Engine::compact`] does).
    pub fn with_compaction_quiet(mut self, quiet: Option<Duration>) -> Self {
        self.compaction_quiet = quiet;
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
    /// Set when frozen: the first WAL sequence number not in this memtable (the first record
    /// of the WAL file started at the freeze).
    wal_boundary: u64,
    oldest: Option<Instant>,
    /// Blobs the memtable's writes stored (sealed into content segments with the rows).
    content: Arc<ContentMemtable>,
    /// Every trace with a row in `chunks` (kept when rows are erased: a superset).
    traces: HashSet<RawTraceId>,
}

impl Memtable {
    fn push(&mut self, batch: RecordBatch, sequence: u64) {
        self.rows += batch.num_rows();
        self.bytes += batch_bytes(&batch);
        self.max_sequence = self.max_sequence.max(sequence);
        self.oldest.get_or_insert_with(Instant::now);
        crate::trace_keys::extend_traces(&mut self.traces, &batch);
        self.chunks.push(batch);
        self.merge_small_tail();
    }

    /// Adds what staging a write's content decided (see `content_memtable.rs`).
    fn push_content(&mut self, delta: ContentDelta, policy: &RetentionPolicy) {
        if delta.new.is_empty() && delta.touched.is_empty() {
            return;
        }
        self.oldest.get_or_insert_with(Instant::now);
        Arc::make_mut(&mut self.content).apply(delta, policy);
    }

    /// True when it holds neither rows nor content.
    fn is_empty(&self) -> bool {
        self.rows == 0 && self.content.is_empty()
    }

    /// Memory of its rows and content.
    fn total_bytes(&self) -> usize {
        self.bytes + self.content.bytes()
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
    /// Content segment catalog, with last-seen times raised by writes since the last seal.
    content_catalog: HashMap<u64, ContentSegmentMeta>,
    /// Content segments whose last-seen time rose since their catalog entry was written.
    content_bumped: HashSet<u64>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    db: db_slot::DbSlot,
    options: Options,
    state: RwLock<State>,
    seal_lock: Mutex<()>,
    /// The next WAL sequence number, and the writer's lock: the writer thread holds it from the
    /// start of a group's WAL commit until the group is in the memtable and acknowledged, so
    /// whoever else holds it ([`Engine::purge`]) sees every write entirely before or after.
    wal: Mutex<writer::WalWriter>,
    next_segment_id: Mutex<u64>,
    /// Next content segment id (only taken under `seal_lock`).
    next_content_id: Mutex<u64>,
    pending_bytes: AtomicUsize,
    /// Content expiry passes that removed something since the engine opened (readers that
    /// copy content elsewhere, such as the lake, look again when it changes).
    content_expiries: AtomicU64,
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
    /// Counters of seals and expiry passes.
    activity: crate::activity::Activity,
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
    /// WAL records whose content and trace keys were applied to the index again (their
    /// non-durable commit was lost in a crash).
    pub wal_reapplied: usize,
    /// Bytes of a torn WAL record (a write never acknowledged) cut off the newest WAL file.
    pub wal_torn_bytes: u64,
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
    compactor_tx: Mutex<Option<Sender<()>>>,
    compactor: Mutex<Option<JoinHandle<()>>>,
    recovery: RecoverySummary,
}

fn store_error<E: Into<redb::Error>>(operation: &'static str) -> impl FnOnce(E) -> Error {
    move |source| Error::store(operation, source)
}

impl Engine {
    /// The redb database (for the content store in `content.rs`).
    pub(crate) fn database(&self) -> &db_slot::DbSlot {
        &self.shared.db
    }

    /// Opens (or creates) the store in `dir`: replays the WAL, removes orphan segment files and
    /// starts the writer (and, unless turned off, the sealer) thread.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Engine> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|source| Error::io("create directory", &dir, source))?;
        let db_path = dir.join(DATABASE_FILE);
        let created = !db_path.exists();
        let db = match db_slot::DbSlot::open(
            &db_path,
            options.index_cache_bytes,
            options.faults.clone(),
        ) {
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
        let Recovered {
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
        } = recover(
            &*db.database().map_err(store_error("open database"))?,
            &dir,
            &db_path,
            &options,
            &mut recovery,
        )?;

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
        recovery.orphans_removed = remove_orphans(&dir.join("segments"), &referenced)?
            + crate::content_segment::remove_orphans(
                &dir,
                &content_catalog.keys().copied().collect(),
            )?;
        for id in content_catalog.keys() {
            let path = crate::content_segment::path_of(&dir, *id);
            if !path.is_file() {
                return Err(Error::Corrupt {
                    location: path.display().to_string(),
                    detail: format!(
                        "content segment {id} is in the catalog but its file is missing"
                    ),
                });
            }
        }
        recovery.segments = segments.len();
        info!(
            segments = recovery.segments,
            wal_records = recovery.wal_records,
            wal_rows = recovery.wal_rows,
            wal_reapplied = recovery.wal_reapplied,
            orphans_removed = recovery.orphans_removed,
            "store recovered"
        );

        let log = recovery::fresh_wal(&dir, &options, next_sequence, sealed_through)?;
        let shared = Arc::new(Shared {
            dir,
            db,
            options: options.clone(),
            state: RwLock::new(State {
                active: memtable,
                frozen: None,
                segments,
                late,
                content_catalog,
                content_bumped,
            }),
            seal_lock: Mutex::new(()),
            wal: Mutex::new(writer::WalWriter::new(next_sequence, log)),
            next_segment_id: Mutex::new(next_segment_id),
            next_content_id: Mutex::new(next_content_id),
            pending_bytes: AtomicUsize::new(0),
            content_expiries: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            memtable_keys: Arc::new(RwLock::new(memtable_keys)),
            generation: AtomicU64::new(0),
            last_arrival: std::sync::atomic::AtomicI64::new(0),
            session_rollup: Mutex::new(session_rollup::SessionRollup::default()),
            reaper: reaper::Reaper::default(),
            activity: crate::activity::Activity::default(),
        });

        let segments_now = shared.state.read().segments.clone();
        agent_tables::prepare_sidecars(&shared, &segments_now)?;
        // Content of stores from before content segments, and rewrites an erasure left
        // unfinished.
        content_seal::migrate_legacy_content(&shared)?;
        content_seal::rewrite_dirty_content(&shared)?;

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

        let (compactor_tx, compactor) = match options.compaction_quiet {
            Some(quiet) if options.background_sealing => {
                let (tx, rx) = bounded::<()>(1);
                let compactor_shared = Arc::clone(&shared);
                let handle = std::thread::Builder::new()
                    .name("sightline-compactor".into())
                    .spawn(move || compaction::run_compactor(&compactor_shared, quiet, &rx))
                    .map_err(|source| Error::io("spawn compactor thread", &shared.dir, source))?;
                (Some(tx), Some(handle))
            }
            _ => (None, None),
        };

        Ok(Engine {
            shared,
            writer_tx: Mutex::new(Some(writer_tx)),
            writer: Mutex::new(Some(writer)),
            sealer_tx: Mutex::new(sealer_tx),
            sealer: Mutex::new(sealer),
            compactor_tx: Mutex::new(compactor_tx),
            compactor: Mutex::new(compactor),
            recovery,
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Bytes of WAL files on disk: about what the memtable holds once a seal has deleted the
    /// files it covered.
    pub fn wal_bytes(&self) -> Result<u64> {
        crate::wal_log::bytes(&self.shared.dir.join(crate::wal_log::WAL_DIR))
    }

    /// What recovery found when this engine opened.
    pub fn recovery(&self) -> &RecoverySummary {
        &self.recovery
    }

    /// Bytes of content segment files.
    pub fn content_segment_bytes(&self) -> u64 {
        self.shared
            .state
            .read()
            .content_catalog
            .values()
            .map(|meta| meta.file_bytes)
            .sum()
    }

    fn needs_seal(&self) -> bool {
        needs_seal(&self.shared)
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
        plan_scan_in(&self.shared, request, max_lookups)
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
        runs_in(&self.shared, keys, lookup)
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

    /// Why writes or seals are failing now (the latest failure's cause chain, e.g. "No space
    /// left on device"), or `None` when the last write and the last seal succeeded.
    pub fn trouble(&self) -> Option<String> {
        self.shared.activity.trouble()
    }

    /// Counters of seals and expiry passes since open.
    pub fn activity(&self) -> crate::ActivitySnapshot {
        self.shared.activity.snapshot()
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
        reopen::reopen_if_needed(&self.shared)?;
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
        drop(self.compactor_tx.lock().take());
        if let Some(handle) = self.compactor.lock().take()
            && handle.join().is_err()
        {
            warn!("compactor thread panicked");
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_threads();
        self.shared.reaper.sweep();
    }
}

/// Plans a scan over the memtable and the segments of `shared` (see [`Engine::plan_scan`]),
/// looking up at most `max_lookups` keys per index.
fn plan_scan_in(shared: &Shared, request: &ScanRequest, max_lookups: usize) -> Result<ScanPlan> {
    shared.reaper.sweep();
    let (memtable, segments, late, txn) = {
        let state = shared.state.read();
        let mut memtable = state.active.chunks.clone();
        if let Some(frozen) = &state.frozen {
            memtable.extend(frozen.chunks.iter().cloned());
        }
        // The indexes as of this segment list: a rewrite (compaction, expiry, erasure)
        // commits and changes the list under the state lock, so the two always agree. Only
        // a scan that consults an index reads the database.
        let consults_index = request.trace_ids.is_some()
            || request.session_ids.is_some()
            || request.conversation_ids.is_some()
            || !request.sessions_or_conversations.is_empty();
        let txn = if consults_index {
            Some(shared.db.begin_read().map_err(store_error("begin read"))?)
        } else {
            None
        };
        (memtable, state.segments.clone(), state.late.clone(), txn)
    };
    let index = || -> Result<&redb::ReadTransaction> {
        txn.as_ref().ok_or_else(|| Error::Corrupt {
            location: "scan planning".to_owned(),
            detail: "an index was consulted without a read transaction".to_owned(),
        })
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
        let raw: Vec<RawTraceId> = trace_ids.iter().map(|id| id.0).collect();
        narrow(runs_in_txn(index()?, &raw, |txn, key: &RawTraceId| {
            index_runs(txn, TRACE_SEGMENTS, key.as_slice())
        })?);
    }
    if let Some(sessions) = &request.session_ids
        && sessions.len() <= max_lookups
    {
        narrow(runs_in_txn(index()?, sessions, |txn, key: &String| {
            index_runs(txn, SESSION_ROWS, key.as_str())
        })?);
    }
    if let Some(conversations) = &request.conversation_ids
        && conversations.len() <= max_lookups
    {
        narrow(runs_in_txn(
            index()?,
            conversations,
            |txn, key: &String| index_runs(txn, CONVERSATION_ROWS, key.as_str()),
        )?);
    }
    for (sessions, conversations) in &request.sessions_or_conversations {
        if sessions.len() + conversations.len() > max_lookups {
            continue;
        }
        // A row matches either key: the union of both indexes' runs.
        let mut either = runs_in_txn(index()?, sessions, |txn, key: &String| {
            index_runs(txn, SESSION_ROWS, key.as_str())
        })?;
        for (segment, found) in runs_in_txn(index()?, conversations, |txn, key: &String| {
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
            let path = shared.dir.join(&meta.path);
            let read = SegmentRead {
                ranges: ranges
                    .as_ref()
                    .and_then(|ranges| ranges.get(&meta.id).cloned()),
                late: late.get(&meta.id).cloned(),
            };
            (meta, path, read)
        })
        .collect();
    Ok(ScanPlan::new(
        request,
        memtable,
        Arc::clone(&shared.memtable_keys),
        segments,
        total,
        Arc::new(shared.options.retention.clone()),
    )?
    .with_row_group_rows(shared.options.row_group_rows))
}

/// The merged row ranges, per segment, that an index of `shared` holds for `keys`.
fn runs_in<K>(
    shared: &Shared,
    keys: &[K],
    lookup: impl Fn(&redb::ReadTransaction, &K) -> Result<Vec<RowRun>>,
) -> Result<BTreeMap<u64, Vec<Range<u64>>>> {
    let txn = shared.db.begin_read().map_err(store_error("begin read"))?;
    runs_in_txn(&txn, keys, lookup)
}

/// [`runs_in`] in a read transaction the caller began.
fn runs_in_txn<K>(
    txn: &redb::ReadTransaction,
    keys: &[K],
    lookup: impl Fn(&redb::ReadTransaction, &K) -> Result<Vec<RowRun>>,
) -> Result<BTreeMap<u64, Vec<Range<u64>>>> {
    let mut out: BTreeMap<u64, Vec<Range<u64>>> = BTreeMap::new();
    for key in keys {
        for (segment, first, count) in lookup(txn, key)? {
            out.entry(segment).or_default().push(first..first + count);
        }
    }
    for ranges in out.values_mut() {
        *ranges = merge_ranges(std::mem::take(ranges));
    }
    Ok(out)
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
