//! The lake shipper (issue 15, `docs/design/lake.md`): makes a lake on object storage follow a
//! store's sealed segments, by tailing the store's segment chain.
//!
//! For each chain entry after the last one this node committed, in order: a segment added (by
//! a seal, an erasure's rewrite, a compaction) is exported
//! ([`crate::lake_files::segment_files`]); a segment removed (expiry, erasure, purge) loses its
//! files; and every other shipped segment
//! that shares a trace with either is exported again, because the home of those traces' agent
//! rows, or their spans' late keys, may have moved. The files are put, then one commit of the
//! lake's log records the entry ([`LakeLog::commit`]), then removed files are deleted. Legal
//! holds placed or released are committed as `hold` entries. The lake never decides to delete
//! anything; it mirrors what the store decided, and the store refuses to expire or erase held
//! data.
//!
//! Invariants:
//! - The node's whole shipping state (last chain entry committed, live files, which segments
//!   share traces, holds) is a replay of its own commits in the lake's log: there is no local
//!   ledger to disagree with the lake. A crash before a commit leaves at most files no commit
//!   names; they are overwritten by the retry (keys are deterministic), and any left over are
//!   deleted when the shipper opens. A crash after a commit is seen in the replay: nothing is
//!   committed twice.
//! - Entries are committed in chain order, each once ([`LakeCommit::identity`]).
//! - Only this node's files (`node=<node>` directories) are ever written or deleted.
//! - Segments exported again are named in the node's pending marker before their files are
//!   overwritten, until the commit; an interrupted pass's marker makes the next pass export
//!   them again.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use arrow::array::RecordBatch;
use bytes::Bytes;
use engine::{ChainChange, ChainChangeKind, Engine};
use futures::TryStreamExt as _;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use tracing::{info, warn};

use crate::lake_files::{
    CONTENT, SESSION_PARTS, TableFile, content_file, content_traces, is_node_file,
    read_session_parts, schema_files, schema_path, segment_files, segment_of, segment_path,
    sessions_file, sessions_path,
};
use crate::lake_log::{LakeCommit, LakeFile, LakeLog, LakeOp};

/// Chain entries read per engine call.
const CHAIN_BATCH: usize = 64;

/// A lake: an object store and the root of the lake in it.
#[derive(Debug, Clone)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    root: Path,
    /// Where it is, for messages.
    url: String,
    /// The directory, for a lake on the local file system.
    local_dir: Option<std::path::PathBuf>,
}

impl Lake {
    /// The lake at `url`: `s3://bucket/prefix`, `gs://…`, `az://…` (credentials and endpoints
    /// from the usual `AWS_*`, `GOOGLE_*`, `AZURE_*` environment variables), `file:///dir`, or a
    /// plain directory path (created when missing).
    pub fn open(url: &str) -> anyhow::Result<Lake> {
        Lake::open_with(url, &std::collections::BTreeMap::new())
    }

    /// [`Lake::open`] with object store settings (`aws_endpoint`, `aws_allow_http`, ... as
    /// object_store names them) over those of the environment.
    pub fn open_with(
        url: &str,
        settings: &std::collections::BTreeMap<String, String>,
    ) -> anyhow::Result<Lake> {
        check_lake_url(url, settings).map_err(|message| anyhow::anyhow!(message))?;
        let parsed = match url::Url::parse(url) {
            Ok(parsed) if parsed.scheme().len() > 1 => parsed,
            // No scheme (or a Windows drive letter): a local directory.
            _ => {
                let dir = std::path::Path::new(url);
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating the lake directory {url}"))?;
                let dir = dir
                    .canonicalize()
                    .with_context(|| format!("resolving the lake directory {url}"))?;
                url::Url::from_directory_path(&dir)
                    .map_err(|()| anyhow::anyhow!("the lake directory {url} is not a valid path"))?
            }
        };
        let mut local_dir = None;
        if parsed.scheme() == "file" {
            let dir = parsed
                .to_file_path()
                .map_err(|()| anyhow::anyhow!("the lake URL {url} is not a local path"))?;
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating the lake directory {}", dir.display()))?;
            local_dir = Some(dir);
        }
        let scheme = object_store::ObjectStoreScheme::parse(&parsed)
            .map(|(scheme, _)| scheme)
            .map_err(|_| {
                anyhow::anyhow!("lake url {url:?} is not one Sightline can use: give {LAKE_URLS}")
            })?;
        // The store's own settings from the environment, as its `from_env` builders take them.
        let mut options: std::collections::BTreeMap<String, String> = std::env::vars()
            .map(|(key, value)| (key.to_ascii_lowercase(), value))
            .filter(|(key, _)| known_option(&scheme, key))
            .collect();
        options.extend(settings.clone());
        let (store, root) = object_store::parse_url_opts(&parsed, options)
            .with_context(|| format!("opening the lake at {url}"))?;
        Ok(Lake {
            store: Arc::from(store),
            root,
            url: url.to_owned(),
            local_dir,
        })
    }

    /// The lake's commit log.
    pub fn log(&self) -> LakeLog {
        LakeLog::new(Arc::clone(&self.store), &self.root)
    }

    fn path(&self, key: &str) -> Path {
        let mut path = self.root.clone();
        for part in key.split('/') {
            path = path.join(part);
        }
        path
    }

    async fn put(&self, key: &str, bytes: Bytes) -> anyhow::Result<()> {
        self.store
            .put(&self.path(key), PutPayload::from(bytes))
            .await
            .with_context(|| format!("writing {key} to the lake at {}", self.url))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> anyhow::Result<Bytes> {
        let bytes = self
            .store
            .get(&self.path(key))
            .await
            .with_context(|| format!("reading {key} from the lake at {}", self.url))?
            .bytes()
            .await?;
        Ok(bytes)
    }

    /// `key`'s bytes, or `None` when there is no such object.
    async fn get_optional(&self, key: &str) -> anyhow::Result<Option<Bytes>> {
        match self.store.get(&self.path(key)).await {
            Ok(found) => Ok(Some(found.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => {
                Err(error).with_context(|| format!("reading {key} from the lake at {}", self.url))
            }
        }
    }

    /// Deletes `key`; one already gone is fine.
    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => {
                Err(error).with_context(|| format!("deleting {key} from the lake at {}", self.url))
            }
        }
    }

    /// Every data file key under the root (not the log).
    async fn data_keys(&self) -> anyhow::Result<Vec<String>> {
        let objects: Vec<_> = self.store.list(Some(&self.root)).try_collect().await?;
        let prefix = self.root.as_ref();
        Ok(objects
            .into_iter()
            .filter_map(|meta| {
                let full = meta.location.as_ref();
                let key = if prefix.is_empty() {
                    full
                } else {
                    full.strip_prefix(prefix)?.strip_prefix('/')?
                };
                (!key.starts_with("_sightline/")).then(|| key.to_owned())
            })
            .collect())
    }
}

/// Whether `key` is a setting of the object store for `scheme`.
fn known_option(scheme: &object_store::ObjectStoreScheme, key: &str) -> bool {
    use object_store::ObjectStoreScheme;
    match scheme {
        ObjectStoreScheme::AmazonS3 => key.parse::<object_store::aws::AmazonS3ConfigKey>().is_ok(),
        ObjectStoreScheme::GoogleCloudStorage => {
            key.parse::<object_store::gcp::GoogleConfigKey>().is_ok()
        }
        ObjectStoreScheme::MicrosoftAzure => {
            key.parse::<object_store::azure::AzureConfigKey>().is_ok()
        }
        _ => false,
    }
}

/// What a lake URL can be, for messages.
const LAKE_URLS: &str =
    "a directory, file:///dir, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix";

/// Checks a lake URL and its `[lake.options]` without touching the store: the scheme is one
/// object_store can open with conditional writes, and every option is a setting of that store
/// (object_store ignores unknown ones, so a misspelled key would silently do nothing).
pub fn check_lake_url(
    url: &str,
    options: &std::collections::BTreeMap<String, String>,
) -> Result<(), String> {
    use object_store::ObjectStoreScheme;
    let parsed = match url::Url::parse(url) {
        Ok(parsed) if parsed.scheme().len() > 1 => parsed,
        // A directory path.
        _ => {
            return match options.keys().next() {
                None => Ok(()),
                Some(key) => Err(format!(
                    "[lake.options] {key:?}: options are for object stores; the lake {url:?} is a local directory"
                )),
            };
        }
    };
    let scheme = match ObjectStoreScheme::parse(&parsed) {
        Ok((scheme, _)) => scheme,
        Err(_) => {
            return Err(format!(
                "lake url {url:?} is not one Sightline can use: give {LAKE_URLS}"
            ));
        }
    };
    let known = |key: &str| known_option(&scheme, key);
    match scheme {
        ObjectStoreScheme::Local => {
            if let Some(key) = options.keys().next() {
                return Err(format!(
                    "[lake.options] {key:?}: options are for object stores; the lake {url:?} is a local directory"
                ));
            }
        }
        ObjectStoreScheme::AmazonS3
        | ObjectStoreScheme::GoogleCloudStorage
        | ObjectStoreScheme::MicrosoftAzure => {
            if let Some(key) = options.keys().find(|key| !known(key)) {
                return Err(format!(
                    "[lake.options] {key:?} is not a setting of the object store for {url:?} (for S3: aws_endpoint, aws_region, aws_access_key_id, aws_secret_access_key, aws_allow_http, ...; see the object_store crate's AmazonS3ConfigKey, GoogleConfigKey and AzureConfigKey)"
                ));
            }
        }
        _ => {
            return Err(format!(
                "lake url {url:?} is not one Sightline can use: give {LAKE_URLS}"
            ));
        }
    }
    Ok(())
}

impl Lake {
    /// What to check when the store refuses: empty for a local directory.
    pub fn hint(&self) -> &'static str {
        if self.local_dir.is_some() {
            ""
        } else {
            " (check the lake's credentials and endpoint: the AWS_*, GOOGLE_* or AZURE_* \
             environment variables, or [lake.options])"
        }
    }
}

impl std::fmt::Display for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// What one [`Shipper::ship`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShipReport {
    /// Chain entries committed.
    pub entries: u64,
    /// Hold and release entries committed.
    pub holds: u64,
    /// Files put.
    pub files: u64,
    /// Bytes put.
    pub bytes: u64,
    /// Span rows put (a segment exported again counts again).
    pub span_rows: u64,
    /// Files deleted.
    pub deleted: u64,
    /// The store's chain entries now committed up to.
    pub chain_seq: u64,
    /// The lake's newest version seen.
    pub version: u64,
}

/// This node's shipping state: a replay of its commits.
#[derive(Debug, Default)]
struct NodeState {
    /// Newest lake version read.
    known: u64,
    /// Highest chain entry committed.
    applied: u64,
    /// Identities of this node's commits (each applies once).
    seen: HashSet<(String, u64, String)>,
    /// This node's live files, by key.
    files: BTreeMap<String, LakeFile>,
    /// Segments exported and still live, with the segments they share traces with (symmetric).
    sharing: BTreeMap<u64, BTreeSet<u64>>,
    /// Holds in force, as the log records them (`LegalHold` display).
    holds: BTreeSet<String>,
    /// Whether the node's last data commit wrote (or removed) its `sessions` file: if not, a
    /// pass may have stopped between a change of the session parts and the fold.
    sessions_committed: bool,
}

impl NodeState {
    fn apply(&mut self, node: &str, commit: &LakeCommit) {
        if commit.node != node {
            return;
        }
        if commit.op == LakeOp::Hold {
            // Set changes in log order: placing a hold released before is a new commit with
            // the same note, and must apply again.
            if let Some(hold) = commit.note.strip_prefix(HOLD_PLACED) {
                self.holds.insert(hold.to_owned());
            } else if let Some(hold) = commit.note.strip_prefix(HOLD_RELEASED) {
                self.holds.remove(hold);
            }
            return;
        }
        if !self.seen.insert(commit.identity()) {
            return;
        }
        self.applied = self.applied.max(commit.chain_seq);
        let mut touched = BTreeSet::new();
        for path in &commit.removes {
            self.files.remove(path);
            touched.extend(segment_of(node, path));
        }
        for file in &commit.adds {
            self.files.insert(file.path.clone(), file.clone());
        }
        // A segment leaves the sharing map only when none of its files is left (not when its
        // content expired, or a table of it became empty when exported again).
        for segment in touched {
            if !self
                .files
                .keys()
                .any(|path| segment_of(node, path) == Some(segment))
            {
                self.forget(segment);
            }
        }
        if commit.op != LakeOp::ContentExpired {
            let sessions = sessions_path(node);
            self.sessions_committed = commit.adds.iter().any(|file| file.path == sessions)
                || commit.removes.contains(&sessions);
        }
        for (segment, others) in &commit.sharing {
            self.sharing.entry(*segment).or_default();
            for other in others {
                self.sharing.entry(*segment).or_default().insert(*other);
                self.sharing.entry(*other).or_default().insert(*segment);
            }
        }
    }

    /// Drops `segment` from the sharing map (it left the lake); keeps what others shared.
    fn forget(&mut self, segment: u64) {
        if let Some(others) = self.sharing.remove(&segment) {
            for other in others {
                if let Some(set) = self.sharing.get_mut(&other) {
                    set.remove(&segment);
                }
            }
        }
    }

    fn paths_of(&self, node: &str, segment: u64) -> Vec<String> {
        self.files
            .keys()
            .filter(|path| segment_of(node, path) == Some(segment))
            .cloned()
            .collect()
    }
}

/// The key of `node`'s pending marker: the segments a pass is exporting again, written before
/// it overwrites their files and deleted after its commit.
fn pending_key(node: &str) -> String {
    format!("_sightline/pending/{node}.json")
}

/// The pending marker's content.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Pending {
    segments: Vec<u64>,
}

const HOLD_PLACED: &str = "hold placed: ";
const HOLD_RELEASED: &str = "hold released: ";

/// Ships one store to one lake as one node.
pub struct Shipper {
    engine: Arc<Engine>,
    lake: Lake,
    log: LakeLog,
    node: String,
    state: NodeState,
    /// Merged session parts per shipped segment (folded into the node's `sessions` file).
    parts: BTreeMap<u64, RecordBatch>,
    /// Whether `parts` changed since the `sessions` file was last committed.
    sessions_dirty: bool,
    /// Segments an interrupted pass was exporting again (overwriting their files before its
    /// commit): exported again with the next entry, whatever it is.
    redo: BTreeSet<u64>,
    /// Whether the lake holds this node's pending marker ([`pending_key`]).
    pending_in_lake: bool,
    /// Whether captured content goes to the lake (`[lake] content`).
    content: bool,
    /// [`Engine::content_expiries`] when the `content` files were last brought in line with
    /// the store's content (none: not yet since opening).
    content_seen: Option<u64>,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper")
            .field("lake", &self.lake.url)
            .field("node", &self.node)
            .field("applied", &self.state.applied)
            .finish()
    }
}

/// Whether `node` can name a node: a path segment of letters, digits, `-`, `_` and `.`.
pub fn valid_node(node: &str) -> bool {
    !node.is_empty()
        && node.len() <= 64
        && !node.starts_with('.')
        && node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Shipper {
    /// Opens shipping of `engine` to `lake` as `node`: replays the log, reads back the node's
    /// session parts, and deletes the node's files no commit names (left by a crash).
    /// `content`: whether content goes to the lake; `None` (not configured where this runs):
    /// as this node shipped it so far.
    pub async fn open(
        engine: Arc<Engine>,
        lake: Lake,
        node: &str,
        content: Option<bool>,
    ) -> anyhow::Result<Shipper> {
        if !valid_node(node) {
            bail!(
                "lake node name {node:?} is not valid: use 1 to 64 letters, digits, '-', '_' or '.'"
            );
        }
        let log = lake.log();
        let mut shipper = Shipper {
            engine,
            lake,
            log,
            node: node.to_owned(),
            state: NodeState::default(),
            parts: BTreeMap::new(),
            sessions_dirty: false,
            redo: BTreeSet::new(),
            pending_in_lake: false,
            content: content.unwrap_or(false),
            content_seen: None,
        };
        shipper.replay().await?;
        if let Some(bytes) = shipper.lake.get_optional(&pending_key(node)).await? {
            let pending: Pending = serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {} from the lake", pending_key(node)))?;
            shipper.redo = pending.segments.into_iter().collect();
            shipper.pending_in_lake = true;
        }
        // A pass may have stopped between a change of the parts and the commit folding them.
        shipper.sessions_dirty = !shipper.state.sessions_committed;
        if content.is_none() {
            // Not configured here (`sightline export` without a [lake] section): as shipped.
            shipper.content = shipper
                .state
                .files
                .values()
                .any(|file| file.table == CONTENT);
        }
        // The lake's record of this node must be this store's: a wiped store, or another store
        // given the same node name, has no chain entry where the lake's record ends.
        let applied = shipper.state.applied;
        if applied > 0 {
            let engine = Arc::clone(&shipper.engine);
            let found =
                tokio::task::spawn_blocking(move || engine.chain_changes(applied - 1, 1)).await??;
            if found.first().map(|change| change.sequence) != Some(applied) {
                bail!(
                    "the lake holds node {node:?}'s segment chain up to entry {applied}, but this \
                     store's chain has no entry {applied}: it is another store (or this one was \
                     wiped) under the same node name; give this store its own [lake] node name"
                );
            }
        }
        let parts: Vec<(u64, String)> = shipper
            .state
            .files
            .values()
            .filter(|file| file.table == SESSION_PARTS)
            .filter_map(|file| Some((segment_of(node, &file.path)?, file.path.clone())))
            .collect();
        for (segment, path) in parts {
            let bytes = shipper.lake.get(&path).await?;
            let batch = read_session_parts(bytes)
                .with_context(|| format!("reading {path} from the lake"))?;
            shipper.parts.insert(segment, batch);
        }
        let orphans: Vec<String> = shipper
            .lake
            .data_keys()
            .await?
            .into_iter()
            .filter(|key| is_node_file(node, key) && !shipper.state.files.contains_key(key))
            .collect();
        for key in &orphans {
            shipper.lake.delete(key).await?;
        }
        let staged = match &shipper.lake.local_dir {
            Some(dir) => remove_staging_files(dir, node)?,
            None => 0,
        };
        if !orphans.is_empty() || staged > 0 {
            info!(
                lake = %shipper.lake, node, files = orphans.len(), staging = staged,
                "deleted lake files no commit names"
            );
        }
        Ok(shipper)
    }

    /// The node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The store's chain entries committed so far.
    pub fn applied(&self) -> u64 {
        self.state.applied
    }

    async fn replay(&mut self) -> anyhow::Result<()> {
        for version in self.log.versions().await? {
            if version <= self.state.known {
                continue;
            }
            let commit = self.log.read(version).await?;
            self.state.apply(&self.node, &commit);
            self.state.known = version;
        }
        Ok(())
    }

    /// Ships every chain entry not yet in the lake, and the holds placed or released since.
    pub async fn ship(&mut self) -> anyhow::Result<ShipReport> {
        self.replay().await?;
        let mut report = ShipReport::default();
        loop {
            let engine = Arc::clone(&self.engine);
            let after = self.state.applied;
            // One more than a batch: whether the batch's end is the chain's end.
            let mut changes =
                tokio::task::spawn_blocking(move || engine.chain_changes(after, CHAIN_BATCH + 1))
                    .await??;
            if changes.is_empty() {
                break;
            }
            let more = changes.len() > CHAIN_BATCH;
            changes.truncate(CHAIN_BATCH);
            let count = changes.len();
            for (index, change) in changes.into_iter().enumerate() {
                let last = index + 1 == count && !more;
                self.ship_change(&change, last, &mut report).await?;
            }
        }
        if self.sessions_dirty {
            self.fold_sessions(&mut report).await?;
        }
        self.ship_holds(&mut report).await?;
        self.follow_content(&mut report).await?;
        report.chain_seq = self.state.applied;
        report.version = self.state.known;
        Ok(report)
    }

    async fn export(
        &self,
        segment: u64,
    ) -> anyhow::Result<Option<(Vec<TableFile>, Option<RecordBatch>, BTreeSet<u64>, u64)>> {
        let engine = Arc::clone(&self.engine);
        let node = self.node.clone();
        let content = self.content;
        tokio::task::spawn_blocking(move || {
            let Some(export) = engine.export_segment(segment)? else {
                return Ok(None);
            };
            let span_rows = export
                .spans
                .iter()
                .map(|batch| batch.num_rows() as u64)
                .sum();
            let (mut files, parts) = segment_files(&node, &export)?;
            if content && !export.homed.is_empty() {
                let rows = engine.scan_content(Some(&export.homed))?;
                let path = segment_path(&node, CONTENT, &export.segment);
                files.extend(content_file(path, &rows)?);
            }
            Ok(Some((files, parts, export.sharing, span_rows)))
        })
        .await?
    }

    async fn ship_change(
        &mut self,
        change: &ChainChange,
        last: bool,
        report: &mut ShipReport,
    ) -> anyhow::Result<()> {
        let node = self.node.clone();
        let mut adds: Vec<TableFile> = Vec::new();
        let mut removes: BTreeSet<String> = BTreeSet::new();
        let mut sharing: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        // With what an interrupted pass was exporting again.
        let mut again: BTreeSet<u64> = self.redo.clone();
        let mut reexported: Vec<u64> = Vec::new();
        let mut gone: Vec<u64> = Vec::new();

        if let Some(removed) = change.removed {
            removes.extend(self.state.paths_of(&node, removed));
            if let Some(others) = self.state.sharing.get(&removed) {
                again.extend(others.iter().copied());
            }
            gone.push(removed);
        }
        let mut new_parts: Vec<(u64, Option<RecordBatch>)> = Vec::new();
        let exported = match change.added {
            Some(added) => match self.export(added).await? {
                Some(export) => Some((added, export)),
                None => {
                    // Gone again: a later entry removes it, and this one adds nothing.
                    self.check_removed_later(change.sequence, added).await?;
                    None
                }
            },
            None => None,
        };
        if let Some((added, (files, parts, shares, rows))) = exported {
            report.span_rows += rows;
            again.extend(
                shares
                    .iter()
                    .copied()
                    .filter(|other| self.state.sharing.contains_key(other)),
            );
            sharing.insert(added, shares.into_iter().collect());
            adds.extend(files);
            new_parts.push((added, parts));
        }
        for segment in change.added.iter().chain(change.removed.iter()) {
            again.remove(segment);
        }
        for segment in again {
            if !self.state.sharing.contains_key(&segment) {
                continue;
            }
            let Some((files, parts, shares, rows)) = self.export(segment).await? else {
                // No longer live: a later chain entry removes it.
                continue;
            };
            report.span_rows += rows;
            reexported.push(segment);
            let old = self.state.paths_of(&node, segment);
            let new: BTreeSet<&str> = files.iter().map(|file| file.path.as_str()).collect();
            removes.extend(old.into_iter().filter(|path| !new.contains(path.as_str())));
            sharing.insert(segment, shares.into_iter().collect());
            adds.extend(files);
            new_parts.push((segment, parts));
        }
        for (segment, parts) in new_parts {
            self.sessions_dirty = true;
            match parts {
                Some(parts) => self.parts.insert(segment, parts),
                None => self.parts.remove(&segment),
            };
        }
        for segment in &gone {
            self.sessions_dirty |= self.parts.remove(segment).is_some();
        }
        let sessions_key = sessions_path(&node);
        // The node's sessions are folded again once per pass, with its last entry.
        let sessions_changed = self.sessions_dirty && last;
        if sessions_changed {
            let parts: Vec<RecordBatch> = self.parts.values().cloned().collect();
            let node_for_fold = node.clone();
            let file = tokio::task::spawn_blocking(move || sessions_file(&node_for_fold, &parts))
                .await??;
            match file {
                Some(file) => adds.push(file),
                None => {
                    if self.state.files.contains_key(&sessions_key) {
                        removes.insert(sessions_key.clone());
                    }
                }
            }
        }

        // Each table's empty file, with the node's first commit that has it (and content's
        // when content is turned on).
        let mut tables = vec![
            "spans",
            "llm_calls",
            "tool_calls",
            "decisions",
            "agent_runs",
            SESSION_PARTS,
            crate::lake_files::SESSIONS,
        ];
        if self.content {
            tables.push(CONTENT);
        }
        if tables
            .iter()
            .any(|table| !self.state.files.contains_key(&schema_path(&node, table)))
        {
            for file in schema_files(&node, self.content)? {
                if !self.state.files.contains_key(&file.path) {
                    adds.push(file);
                }
            }
        }
        // Files exported again are overwritten in place: say which before, so that a pass that
        // stops before its commit has them exported again by the next (even if this entry's
        // own segment is gone by then).
        if !reexported.is_empty() {
            let pending = serde_json::to_vec(&Pending {
                segments: reexported.clone(),
            })?;
            self.lake
                .put(&pending_key(&node), Bytes::from(pending))
                .await?;
            self.pending_in_lake = true;
        }
        let entries = self.put_files(&adds, report).await?;
        let added_paths: BTreeSet<String> = adds.iter().map(|file| file.path.clone()).collect();
        let commit = LakeCommit {
            node: node.clone(),
            chain_seq: change.sequence,
            op: match change.kind {
                ChainChangeKind::Sealed => LakeOp::Sealed,
                ChainChangeKind::Expired | ChainChangeKind::Purged => LakeOp::Expired,
                ChainChangeKind::Erased => LakeOp::Erased,
                _ => LakeOp::Rewritten,
            },
            adds: entries,
            removes: removes.iter().cloned().collect(),
            note: format!("{} {}", change.kind.name(), change.detail)
                .trim()
                .to_owned(),
            time_unix_nanos: change.time_ns,
            sharing,
        };
        let version = self.log.commit(&commit, self.state.known).await?;
        self.replay().await?;
        if !self.state.seen.contains(&commit.identity()) {
            bail!(
                "lake commit of chain entry {} went to version {version} but is not in the log",
                change.sequence
            );
        }
        if sessions_changed {
            self.sessions_dirty = false;
        }
        for path in removes.difference(&added_paths) {
            self.lake.delete(path).await?;
            report.deleted += 1;
        }
        if self.pending_in_lake {
            self.lake.delete(&pending_key(&node)).await?;
            self.pending_in_lake = false;
        }
        self.redo.clear();
        report.entries += 1;
        Ok(())
    }

    /// Puts `files` into the lake; their entries for the commit that names them.
    async fn put_files(
        &self,
        files: &[TableFile],
        report: &mut ShipReport,
    ) -> anyhow::Result<Vec<LakeFile>> {
        let mut entries = Vec::with_capacity(files.len());
        for file in files {
            self.lake.put(&file.path, file.bytes.clone()).await?;
            report.files += 1;
            report.bytes += file.bytes.len() as u64;
            entries.push(LakeFile {
                table: file.table.clone(),
                path: file.path.clone(),
                rows: file.rows,
                bytes: file.bytes.len() as u64,
            });
        }
        Ok(entries)
    }

    /// Puts `adds`, commits a change no chain entry records (`op` keyed by `note`, see
    /// [`LakeCommit::identity`]), then deletes `removes`.
    async fn commit_outside_chain(
        &mut self,
        op: LakeOp,
        adds: &[TableFile],
        removes: Vec<String>,
        note: String,
        report: &mut ShipReport,
    ) -> anyhow::Result<()> {
        let commit = LakeCommit {
            node: self.node.clone(),
            chain_seq: self.state.applied,
            op,
            adds: self.put_files(adds, report).await?,
            removes: removes.clone(),
            note,
            time_unix_nanos: now_unix_nanos(),
            sharing: BTreeMap::new(),
        };
        self.log.commit(&commit, self.state.known).await?;
        self.replay().await?;
        for path in &removes {
            self.lake.delete(path).await?;
            report.deleted += 1;
        }
        Ok(())
    }

    /// Commits the node's `sessions` folded from the parts as they are, outside a chain entry
    /// (after a pass stopped between a change of the parts and its last entry).
    async fn fold_sessions(&mut self, report: &mut ShipReport) -> anyhow::Result<()> {
        let node = self.node.clone();
        let parts: Vec<RecordBatch> = self.parts.values().cloned().collect();
        let folding = node.clone();
        let file = tokio::task::spawn_blocking(move || sessions_file(&folding, &parts)).await??;
        let key = sessions_path(&node);
        let (adds, removes) = match file {
            Some(file) => (vec![file], Vec::new()),
            None if self.state.files.contains_key(&key) => (Vec::new(), vec![key.clone()]),
            None => (Vec::new(), Vec::new()),
        };
        let note = format!("sessions folded again (pass at {})", now_unix_nanos());
        self.commit_outside_chain(LakeOp::Sessions, &adds, removes, note, report)
            .await?;
        self.sessions_dirty = false;
        Ok(())
    }

    /// Brings the node's `content` files in line with the store after content expired there
    /// (and once after opening: it may have expired while the shipper was down), or removes
    /// them all when content is not allowed in the lake (any more).
    async fn follow_content(&mut self, report: &mut ShipReport) -> anyhow::Result<()> {
        let expiries = self.engine.content_expiries();
        if self.content_seen == Some(expiries) {
            return Ok(());
        }
        let files: Vec<LakeFile> = self
            .state
            .files
            .values()
            .filter(|file| file.table == CONTENT)
            .cloned()
            .collect();
        let mut adds: Vec<TableFile> = Vec::new();
        let mut removes: Vec<String> = Vec::new();
        for file in files {
            if !self.content {
                removes.push(file.path);
                continue;
            }
            if segment_of(&self.node, &file.path).is_none() {
                // The table's empty file stays.
                continue;
            }
            let traces = content_traces(self.lake.get(&file.path).await?)
                .with_context(|| format!("reading {} from the lake", file.path))?;
            let engine = Arc::clone(&self.engine);
            let path = file.path.clone();
            let fresh = tokio::task::spawn_blocking(move || {
                let rows = engine.scan_content(Some(&traces))?;
                content_file(path, &rows)
            })
            .await??;
            match fresh {
                None => removes.push(file.path),
                Some(fresh) if fresh.rows != file.rows => adds.push(fresh),
                Some(_) => {}
            }
        }
        if !adds.is_empty() || !removes.is_empty() {
            let why = if self.content {
                "past its keep"
            } else {
                "not allowed in the lake ([lake] content = false)"
            };
            let note = format!(
                "content {why}: {} files changed, {} removed (pass at {})",
                adds.len(),
                removes.len(),
                now_unix_nanos()
            );
            self.commit_outside_chain(LakeOp::ContentExpired, &adds, removes, note, report)
                .await?;
        }
        self.content_seen = Some(expiries);
        Ok(())
    }

    /// A segment a chain entry added is not live: fine when a later entry removed it;
    /// otherwise the entry became visible before the segment did (the chain commits first), and
    /// this pass stops, to try again at the next.
    async fn check_removed_later(&self, sequence: u64, segment: u64) -> anyhow::Result<()> {
        let engine = Arc::clone(&self.engine);
        let later = tokio::task::spawn_blocking(move || engine.chain_changes(sequence, usize::MAX))
            .await??;
        if later.iter().any(|change| change.removed == Some(segment)) {
            Ok(())
        } else {
            bail!(
                "segment {segment} of chain entry {sequence} is not readable yet; shipping again at the next pass"
            )
        }
    }

    async fn ship_holds(&mut self, report: &mut ShipReport) -> anyhow::Result<()> {
        let engine = Arc::clone(&self.engine);
        let holds = tokio::task::spawn_blocking(move || engine.holds()).await??;
        let now: BTreeSet<String> = holds.iter().map(ToString::to_string).collect();
        let placed: Vec<String> = now.difference(&self.state.holds).cloned().collect();
        let released: Vec<String> = self.state.holds.difference(&now).cloned().collect();
        for (prefix, hold) in placed
            .iter()
            .map(|hold| (HOLD_PLACED, hold))
            .chain(released.iter().map(|hold| (HOLD_RELEASED, hold)))
        {
            let note = format!("{prefix}{hold}");
            self.commit_outside_chain(LakeOp::Hold, &[], Vec::new(), note, report)
                .await?;
            report.holds += 1;
        }
        Ok(())
    }
}

/// The node name this store ships under, kept in `<data_dir>/lake-node`: `configured` the first
/// time (else one made from the time and process id, so two stores never share one by
/// accident), and the same name ever after. A configured name that differs from the kept one is
/// refused: shipping under a second name would put the store's data in the lake twice.
pub fn node_name(data_dir: &std::path::Path, configured: Option<&str>) -> anyhow::Result<String> {
    let path = data_dir.join("lake-node");
    let kept = match std::fs::read_to_string(&path) {
        Ok(text) if valid_node(text.trim()) => Some(text.trim().to_owned()),
        Ok(text) => bail!(
            "{} holds {:?}, which is not a node name; fix it or set [lake] node",
            path.display(),
            text.trim()
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => {
            return Err(error).with_context(|| format!("reading {}", path.display()));
        }
    };
    match (kept, configured) {
        (Some(kept), None) => Ok(kept),
        (Some(kept), Some(configured)) if kept == configured => Ok(kept),
        (Some(kept), Some(configured)) => bail!(
            "this store ships to the lake as node {kept:?} (kept in {}), not {configured:?}: \
             use --node {kept} (or [lake] node = \"{kept}\"); to ship under a new name, delete \
             that file, knowing the data already shipped as {kept:?} stays in the lake and would \
             be there twice",
            path.display()
        ),
        (None, configured) => {
            let node = match configured {
                Some(node) => node.to_owned(),
                None => {
                    use sha2::Digest as _;
                    let seed = format!(
                        "{}-{}-{}",
                        now_unix_nanos(),
                        std::process::id(),
                        data_dir.display()
                    );
                    format!(
                        "node-{}",
                        &hex::encode(sha2::Sha256::digest(seed.as_bytes()))[..12]
                    )
                }
            };
            let temporary = data_dir.join("lake-node.tmp");
            std::fs::write(&temporary, format!("{node}\n"))
                .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
                .and_then(|()| std::fs::rename(&temporary, &path))
                .and_then(|()| std::fs::File::open(data_dir)?.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(node)
        }
    }
}

/// Deletes the staging files (`<name>#<n>`) a put into a local lake leaves when the process
/// dies in the middle of it (object_store's local store writes them, then renames; its listing
/// hides them), in `node`'s directories only. Returns how many.
fn remove_staging_files(dir: &std::path::Path, node: &str) -> anyhow::Result<usize> {
    let mine = format!("node={node}");
    let mut removed = 0;
    let mut stack = vec![(dir.to_path_buf(), false)];
    while let Some((dir, in_node)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error).with_context(|| format!("listing {}", dir.display())),
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_dir() {
                if name != "_sightline" {
                    stack.push((path, in_node || name == mine));
                }
            } else if in_node && name.contains(".parquet#") {
                std::fs::remove_file(&path)
                    .with_context(|| format!("deleting {}", path.display()))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

fn now_unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX)
        })
}

/// How long the last pass at shutdown may take; what it does not ship goes at the next start
/// (or with `sightline export`).
const LAST_PASS: std::time::Duration = std::time::Duration::from_secs(60);

/// Ships in the background every `interval` until `shutdown` fires, then makes one last pass
/// (the server seals before it fires); errors are logged and retried at the next tick (the
/// lake catches up from the log).
pub async fn run(
    engine: Arc<Engine>,
    lake: Lake,
    node: String,
    interval: std::time::Duration,
    content: bool,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    metrics.lake_pass(Ok((0, 0, 0)));
    let hint = lake.hint();
    let mut shipper: Option<Shipper> = None;
    loop {
        if shipper.is_none() {
            match Shipper::open(Arc::clone(&engine), lake.clone(), &node, Some(content)).await {
                Ok(opened) => shipper = Some(opened),
                Err(error) => {
                    metrics.lake_pass(Err(()));
                    warn!(lake = %lake, error = format!("{error:#}{hint}"), "lake shipping cannot start; retrying");
                }
            }
        }
        if let Some(open) = shipper.as_mut() {
            match open.ship().await {
                Ok(report) => {
                    metrics.lake_pass(Ok((report.chain_seq, report.entries, report.bytes)));
                    if report.entries + report.holds > 0 {
                        info!(
                            lake = %lake, node, entries = report.entries, files = report.files,
                            bytes = report.bytes, chain_seq = report.chain_seq, "shipped to the lake"
                        );
                    }
                }
                Err(error) => {
                    metrics.lake_pass(Err(()));
                    warn!(lake = %lake, error = format!("{error:#}{hint}"), "lake shipping failed; retrying");
                    // Start again from the log: the next open sees what landed.
                    shipper = None;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => break,
        }
    }
    let last = async {
        let mut shipper = match shipper {
            Some(shipper) => shipper,
            None => Shipper::open(Arc::clone(&engine), lake.clone(), &node, Some(content)).await?,
        };
        shipper.ship().await
    };
    match tokio::time::timeout(LAST_PASS, last).await {
        Ok(Ok(report)) => info!(
            lake = %lake, node, entries = report.entries, chain_seq = report.chain_seq,
            "last lake pass done"
        ),
        Ok(Err(error)) => warn!(
            lake = %lake, error = format!("{error:#}{hint}"),
            "the last lake pass failed; the rest ships at the next start"
        ),
        Err(_) => warn!(
            lake = %lake, "the last lake pass took over a minute; the rest ships at the next start"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_keeps_one_node_name() {
        let dir = tempfile::tempdir().unwrap();
        let made = node_name(dir.path(), None).unwrap();
        assert!(valid_node(&made), "{made}");
        assert_eq!(node_name(dir.path(), None).unwrap(), made);
        assert_eq!(node_name(dir.path(), Some(&made)).unwrap(), made);
        let refused = node_name(dir.path(), Some("eu-1")).unwrap_err().to_string();
        assert!(refused.contains(&format!("use --node {made}")), "{refused}");

        let configured = tempfile::tempdir().unwrap();
        assert_eq!(node_name(configured.path(), Some("eu-1")).unwrap(), "eu-1");
        assert_eq!(node_name(configured.path(), None).unwrap(), "eu-1");
    }

    #[test]
    fn lake_urls_and_options_are_checked_before_use() {
        let none = BTreeMap::new();
        assert!(check_lake_url("./lake", &none).is_ok());
        assert!(check_lake_url("file:///tmp/lake", &none).is_ok());
        assert!(check_lake_url("s3://bucket/prefix", &none).is_ok());
        assert!(check_lake_url("gs://bucket/prefix", &none).is_ok());
        assert!(check_lake_url("az://container/prefix", &none).is_ok());
        for bad in [
            "ftp://x/y",
            "s3://",
            "memory:///",
            "http://example.com/lake",
        ] {
            let message = check_lake_url(bad, &none).unwrap_err();
            assert!(message.contains("s3://bucket/prefix"), "{bad}: {message}");
        }
        let options = |key: &str| BTreeMap::from([(key.to_owned(), "x".to_owned())]);
        assert!(check_lake_url("s3://b/p", &options("aws_endpoint")).is_ok());
        let typo = check_lake_url("s3://b/p", &options("aws_endpointt")).unwrap_err();
        assert!(
            typo.contains("\"aws_endpointt\" is not a setting"),
            "{typo}"
        );
        assert!(check_lake_url("./lake", &options("aws_endpoint")).is_err());
    }
}
