//! The lake's commit log (issue 15, `docs/design/lake.md`): the manifest and history of a lake on
//! object storage that one or more Sightline nodes ship sealed data to. Not wired to a shipper
//! yet; this is the part every node's shipping must agree on. It lives in `api` beside the
//! other operations on a store because object storage clients are async (tokio) and `engine`
//! stays synchronous (`.ci/layering`).
//!
//! Layout: `<root>/_sightline/log/<version:020>.json`, one immutable object per commit, versions
//! 1, 2, 3, ... with no gaps. A commit lists the data files it adds and the paths it removes;
//! replaying the log from version 1 gives the live files of every table.
//!
//! Invariants:
//! - A version is written only with create-if-absent (`PutMode::Create`), never overwritten: two
//!   committers racing for one version cannot both win, so no commit is lost or reordered.
//! - One `(node, chain_seq)` is committed at most once: a committer that lost the race, or that
//!   cannot tell whether its own earlier attempt landed (a lost response, a crash between the lake
//!   commit and its ledger update), finds its commit in the log instead of committing it again.
//!   The check also covers a store whose create-if-absent is not atomic under a true race (the
//!   moto test server checks and then puts without a lock): a duplicate is then found by the next
//!   scan and ignored by [`LakeLog::live_files`], which applies each `(node, chain_seq)` once.
//! - The log never holds data: only paths, counts and the operation, so what it records of an
//!   erasure is what the store's own chain records.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

/// What went wrong reading or writing the log.
#[derive(Debug, thiserror::Error)]
pub enum LakeLogError {
    /// The object store failed.
    #[error("lake object store: {0}")]
    Store(#[from] object_store::Error),
    /// A log object is not a commit (damaged, or written by something else).
    #[error("lake log {path}: {message}")]
    Damaged {
        /// The object.
        path: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The operation a commit records (it mirrors one entry of the store's chain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LakeOp {
    /// A segment sealed: its files added.
    Sealed,
    /// A segment past its keep: its files removed.
    Expired,
    /// A session erased: files replaced by copies without it.
    Erased,
    /// A segment rewritten (promotion, compaction, a late key): files replaced.
    Rewritten,
    /// A legal hold placed or released (no files change).
    Hold,
    /// Content past its keep (or no longer allowed in the lake) removed from `content` files.
    ContentExpired,
    /// A node's `sessions` folded again outside a chain entry (after an interrupted pass).
    Sessions,
}

/// One data file in the lake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LakeFile {
    /// Table (`spans`, `decisions`, ...).
    pub table: String,
    /// Path under the lake root (`spans/tier=standard/day=2026-11-01/node=a/a-42.parquet`).
    pub path: String,
    /// Rows in the file.
    pub rows: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

/// One commit of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LakeCommit {
    /// The node that committed it.
    pub node: String,
    /// The sequence number of the store's chain entry it mirrors (unique per node).
    pub chain_seq: u64,
    /// What happened.
    pub op: LakeOp,
    /// Files added.
    #[serde(default)]
    pub adds: Vec<LakeFile>,
    /// Paths removed.
    #[serde(default)]
    pub removes: Vec<String>,
    /// Free text for the history (a session erased, a hold's subject), as the chain records it.
    #[serde(default)]
    pub note: String,
    /// When it was committed, ns since the epoch.
    pub time_unix_nanos: i64,
    /// Per segment exported by this commit, the other segments of the node holding rows of its
    /// traces (a later change to one of them exports the others again).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sharing: BTreeMap<u64, Vec<u64>>,
}

impl LakeCommit {
    /// What makes a commit the same commit when it is tried again: the node and chain entry,
    /// and for a hold, a content expiry or a sessions fold (which no chain entry records) its
    /// note.
    pub fn identity(&self) -> (String, u64, String) {
        let hold = match self.op {
            LakeOp::Hold | LakeOp::ContentExpired | LakeOp::Sessions => self.note.clone(),
            _ => String::new(),
        };
        (self.node.clone(), self.chain_seq, hold)
    }
}

/// The commit log of one lake.
#[derive(Debug, Clone)]
pub struct LakeLog {
    store: Arc<dyn ObjectStore>,
    dir: Path,
}

/// Digits of a version in its object name (sorts as text).
const VERSION_DIGITS: usize = 20;

impl LakeLog {
    /// The log of the lake whose root is `root` in `store`.
    pub fn new(store: Arc<dyn ObjectStore>, root: &Path) -> Self {
        LakeLog {
            store,
            dir: root.clone().join("_sightline").join("log"),
        }
    }

    fn version_path(&self, version: u64) -> Path {
        self.dir
            .clone()
            .join(format!("{version:0width$}.json", width = VERSION_DIGITS).as_str())
    }

    /// Every committed version, ascending.
    pub async fn versions(&self) -> Result<Vec<u64>, LakeLogError> {
        let objects: Vec<_> = self.store.list(Some(&self.dir)).try_collect().await?;
        let mut versions: Vec<u64> = objects
            .iter()
            .filter_map(|meta| {
                let name = meta.location.filename()?;
                let digits = name.strip_suffix(".json")?;
                (digits.len() == VERSION_DIGITS)
                    .then(|| digits.parse().ok())
                    .flatten()
            })
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// The commit at `version`.
    pub async fn read(&self, version: u64) -> Result<LakeCommit, LakeLogError> {
        let path = self.version_path(version);
        let bytes = self.store.get(&path).await?.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|error| LakeLogError::Damaged {
            path: path.to_string(),
            message: error.to_string(),
        })
    }

    /// The version holding a commit with `identity` ([`LakeCommit::identity`]), looking at
    /// versions after `after`.
    pub async fn find(
        &self,
        identity: &(String, u64, String),
        after: u64,
    ) -> Result<Option<u64>, LakeLogError> {
        for version in self.versions().await? {
            if version <= after {
                continue;
            }
            if &self.read(version).await?.identity() == identity {
                return Ok(Some(version));
            }
        }
        Ok(None)
    }

    /// Commits `commit` once: returns the version that holds it, which is an earlier one when
    /// this `(node, chain_seq)` was already committed after `known` (the last version the
    /// caller had seen, 0 for none).
    pub async fn commit(&self, commit: &LakeCommit, known: u64) -> Result<u64, LakeLogError> {
        let body = serde_json::to_vec(commit).map_err(|error| LakeLogError::Damaged {
            path: self.dir.to_string(),
            message: error.to_string(),
        })?;
        loop {
            if let Some(version) = self.find(&commit.identity(), known).await? {
                return Ok(version);
            }
            let versions = self.versions().await?;
            let next = versions.last().copied().unwrap_or(0) + 1;
            let options = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            match self
                .store
                .put_opts(
                    &self.version_path(next),
                    PutPayload::from(body.clone()),
                    options,
                )
                .await
            {
                Ok(_) => return Ok(next),
                // Another committer took this version: look again (it may even be ours).
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The live files of every table after replaying the whole log, by path; each
    /// `(node, chain_seq)` applies once, at its first version.
    pub async fn live_files(&self) -> Result<BTreeMap<String, LakeFile>, LakeLogError> {
        let mut live = BTreeMap::new();
        let mut applied = BTreeSet::new();
        for version in self.versions().await? {
            let commit = self.read(version).await?;
            if !applied.insert(commit.identity()) {
                continue;
            }
            for path in &commit.removes {
                live.remove(path);
            }
            for file in commit.adds {
                live.insert(file.path.clone(), file);
            }
        }
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn commit(
        node: &str,
        chain_seq: u64,
        op: LakeOp,
        adds: &[&str],
        removes: &[&str],
    ) -> LakeCommit {
        LakeCommit {
            node: node.to_owned(),
            chain_seq,
            op,
            adds: adds
                .iter()
                .map(|path| LakeFile {
                    table: "spans".to_owned(),
                    path: (*path).to_owned(),
                    rows: 10,
                    bytes: 100,
                })
                .collect(),
            removes: removes.iter().map(|path| (*path).to_owned()).collect(),
            note: String::new(),
            time_unix_nanos: 1,
            sharing: BTreeMap::new(),
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn commits_get_consecutive_versions_and_replay_to_the_live_files() {
        runtime().block_on(async {
            let log = LakeLog::new(Arc::new(InMemory::new()), &Path::from("lake"));
            assert_eq!(log.versions().await.unwrap(), Vec::<u64>::new());
            let first = commit("a", 1, LakeOp::Sealed, &["s/1.parquet", "s/2.parquet"], &[]);
            assert_eq!(log.commit(&first, 0).await.unwrap(), 1);
            let erase = commit("a", 2, LakeOp::Erased, &["s/1b.parquet"], &["s/1.parquet"]);
            assert_eq!(log.commit(&erase, 1).await.unwrap(), 2);
            let expire = commit("a", 3, LakeOp::Expired, &[], &["s/2.parquet"]);
            assert_eq!(log.commit(&expire, 2).await.unwrap(), 3);
            assert_eq!(log.read(2).await.unwrap(), erase);
            let live: Vec<String> = log.live_files().await.unwrap().into_keys().collect();
            assert_eq!(live, vec!["s/1b.parquet".to_owned()]);
        });
    }

    #[test]
    fn a_commit_already_in_the_log_is_not_committed_again() {
        runtime().block_on(async {
            let log = LakeLog::new(Arc::new(InMemory::new()), &Path::from("lake"));
            let sealed = commit("a", 7, LakeOp::Sealed, &["s/7.parquet"], &[]);
            assert_eq!(log.commit(&sealed, 0).await.unwrap(), 1);
            // The node crashed before recording version 1 and commits chain entry 7 again.
            assert_eq!(log.commit(&sealed, 0).await.unwrap(), 1);
            assert_eq!(log.versions().await.unwrap(), vec![1]);
            // Another node's entry 7 is a different commit.
            let other = commit("b", 7, LakeOp::Sealed, &["s/b7.parquet"], &[]);
            assert_eq!(log.commit(&other, 1).await.unwrap(), 2);
        });
    }

    #[test]
    fn racing_nodes_lose_nothing_and_commit_nothing_twice() {
        runtime().block_on(async {
            let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            let root = Path::from("lake");
            let mut tasks = Vec::new();
            for node in ["a", "b", "c"] {
                let log = LakeLog::new(Arc::clone(&store), &root);
                tasks.push(tokio::spawn(async move {
                    let mut known = 0;
                    for seq in 1..=20 {
                        let path = format!("spans/node={node}/{node}-{seq}.parquet");
                        let entry = commit(node, seq, LakeOp::Sealed, &[path.as_str()], &[]);
                        known = log.commit(&entry, known).await.unwrap();
                        // A retry after a lost answer finds the same version.
                        assert_eq!(log.commit(&entry, 0).await.unwrap(), known);
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            let log = LakeLog::new(store, &root);
            let versions = log.versions().await.unwrap();
            assert_eq!(versions, (1..=60).collect::<Vec<u64>>());
            let mut seen = BTreeSet::new();
            for version in versions {
                let entry = log.read(version).await.unwrap();
                assert!(
                    seen.insert((entry.node, entry.chain_seq)),
                    "twice: {version}"
                );
            }
            assert_eq!(log.live_files().await.unwrap().len(), 60);
        });
    }

    #[test]
    fn a_local_directory_lake_refuses_a_second_writer_of_a_version() {
        let dir = tempfile::tempdir().unwrap();
        runtime().block_on(async {
            let store: Arc<dyn ObjectStore> = Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap(),
            );
            let log = LakeLog::new(Arc::clone(&store), &Path::from("lake"));
            let first = commit("a", 1, LakeOp::Sealed, &["s/1.parquet"], &[]);
            assert_eq!(log.commit(&first, 0).await.unwrap(), 1);
            let taken = store
                .put_opts(
                    &Path::from("lake/_sightline/log/00000000000000000001.json"),
                    PutPayload::from(b"{}".to_vec()),
                    PutOptions {
                        mode: PutMode::Create,
                        ..PutOptions::default()
                    },
                )
                .await;
            assert!(
                matches!(taken, Err(object_store::Error::AlreadyExists { .. })),
                "{taken:?}"
            );
            let second = commit("b", 1, LakeOp::Sealed, &["s/b1.parquet"], &[]);
            assert_eq!(log.commit(&second, 0).await.unwrap(), 2);
            assert!(
                dir.path()
                    .join("lake/_sightline/log/00000000000000000002.json")
                    .is_file()
            );
        });
    }
}
