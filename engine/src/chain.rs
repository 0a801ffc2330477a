//! The segment chain: a hash-linked, append-only log (table `chain`) of every change to the set
//! of sealed segments, and [`verify`], which recomputes it against the catalog and the files.
//!
//! Each entry records one change (a segment sealed, a segment replaced by a rewrite that erased
//! a session, a segment expired, a segment removed by a purge) with the SHA-256 of the segment file it adds, the time, and the
//! hash of the entry before it; its own hash covers all of that (see [`ChainEntry::compute_hash`]
//! for the canonical encoding). Replaying the entries gives the set of live segments and their
//! digests, which must match the catalog and the files exactly.
//!
//! Invariants:
//! - An entry is appended in the same redb transaction as the catalog change it records, so the
//!   chain and the catalog agree at every commit.
//! - The digest of a file is computed before that transaction (the file is already fsync'd);
//!   hashing never happens while the redb write lock is held by chain code.
//!
//! What this cannot detect (someone rewriting the whole chain, catalog and files consistently)
//! is written down in `docs/tamper-evidence.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::segment::{SegmentMeta, day_of};
use crate::tables::{CHAIN, SEGMENTS};

/// Version byte in front of every chain entry value.
const ENTRY_VERSION: u8 = 1;
/// Domain separation for the entry hash, naming the canonical encoding's version.
const HASH_DOMAIN: &[u8] = b"sightline-chain-v1";
/// The `previous_hash` of the first entry.
const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a chain entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EntryKind {
    /// A segment was sealed from the memtable (adds a segment).
    Sealed,
    /// A session was erased: the segment holding it was replaced by one without it (removes
    /// one, adds one unless no rows were left), or, with neither, nothing sealed held it.
    Erased,
    /// A segment was deleted by retention (removes a segment).
    Expired,
    /// A segment was rewritten with the same rows, e.g. by compaction (removes one, adds one).
    Rewritten,
    /// A segment was deleted by [`crate::Engine::purge`], with everything else in the store
    /// (removes a segment; one entry per segment, all in the purge's transaction).
    Purged,
}

impl EntryKind {
    fn name(self) -> &'static str {
        match self {
            EntryKind::Sealed => "sealed",
            EntryKind::Erased => "erased",
            EntryKind::Expired => "expired",
            EntryKind::Rewritten => "rewritten",
            EntryKind::Purged => "purged",
        }
    }
}

/// A segment as the chain knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChainSegment {
    /// Segment id.
    pub(crate) id: u64,
    /// Retention tier.
    pub(crate) tier: String,
    /// Path relative to the data directory.
    pub(crate) path: String,
    /// SHA-256 of the whole file, lowercase hex.
    pub(crate) digest: String,
    /// Rows in the file.
    pub(crate) rows: u64,
}

impl ChainSegment {
    /// The chain's view of a segment whose file has `digest`.
    pub(crate) fn of(meta: &SegmentMeta, digest: String) -> Self {
        ChainSegment {
            id: meta.id,
            tier: meta.tier.clone(),
            path: meta.path.clone(),
            digest,
            rows: meta.rows,
        }
    }
}

/// One entry of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChainEntry {
    /// Position in the chain, from 1; also the table key.
    pub(crate) sequence: u64,
    /// What happened.
    pub(crate) kind: EntryKind,
    /// When it was committed, unix ns.
    pub(crate) time_ns: i64,
    /// The segment that joins the live set.
    pub(crate) added: Option<ChainSegment>,
    /// The segment id that leaves the live set.
    pub(crate) removed: Option<u64>,
    /// Free text for the kind: the erased session id for `erased`.
    pub(crate) detail: String,
    /// `hash` of the entry before (zeros for the first).
    pub(crate) previous_hash: String,
    /// SHA-256 of the canonical encoding of every field above, lowercase hex.
    pub(crate) hash: String,
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend((bytes.len() as u64).to_le_bytes());
    out.extend(bytes);
}

impl ChainEntry {
    /// SHA-256 over the canonical encoding: the domain tag, then sequence (u64 LE), kind
    /// (length-prefixed name), time (i64 LE), `added` (byte 0, or byte 1 and id u64 LE, tier,
    /// path, digest length-prefixed, rows u64 LE), `removed` (byte 0, or byte 1 and id u64 LE),
    /// detail and previous hash (length-prefixed). Lengths are u64 LE.
    pub(crate) fn compute_hash(&self) -> String {
        let mut out = Vec::with_capacity(256);
        put_bytes(&mut out, HASH_DOMAIN);
        out.extend(self.sequence.to_le_bytes());
        put_bytes(&mut out, self.kind.name().as_bytes());
        out.extend(self.time_ns.to_le_bytes());
        match &self.added {
            None => out.push(0),
            Some(segment) => {
                out.push(1);
                out.extend(segment.id.to_le_bytes());
                put_bytes(&mut out, segment.tier.as_bytes());
                put_bytes(&mut out, segment.path.as_bytes());
                put_bytes(&mut out, segment.digest.as_bytes());
                out.extend(segment.rows.to_le_bytes());
            }
        }
        match self.removed {
            None => out.push(0),
            Some(id) => {
                out.push(1);
                out.extend(id.to_le_bytes());
            }
        }
        put_bytes(&mut out, self.detail.as_bytes());
        put_bytes(&mut out, self.previous_hash.as_bytes());
        hex::encode(Sha256::digest(&out))
    }

    /// Version byte + JSON.
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![ENTRY_VERSION];
        // Serializing plain strings and integers to a Vec cannot fail.
        out.extend(serde_json::to_vec(self).unwrap_or_default());
        out
    }

    fn decode(sequence: u64, bytes: &[u8]) -> std::result::Result<Self, String> {
        match bytes.first() {
            Some(&ENTRY_VERSION) => {}
            Some(other) => return Err(format!("expected version {ENTRY_VERSION}, found {other}")),
            None => return Err("empty entry".to_owned()),
        }
        let entry: ChainEntry =
            serde_json::from_slice(&bytes[1..]).map_err(|error| error.to_string())?;
        if entry.sequence != sequence {
            return Err(format!(
                "entry stored at {sequence} says it is entry {}",
                entry.sequence
            ));
        }
        Ok(entry)
    }
}

/// Unix ns now (the time of chain entries and holds).
pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX)
        })
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a unix-ns time (UTC).
pub(crate) fn format_utc(nanos: i64) -> String {
    let seconds = nanos.div_euclid(1_000_000_000).rem_euclid(86_400);
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        day_of(nanos),
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SHA-256 of a file's bytes, lowercase hex.
pub(crate) fn file_digest(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|source| Error::io("open for digest", path, source))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(Error::io("read for digest", path, source)),
        };
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn store_error<E: Into<redb::Error>>(operation: &'static str) -> impl FnOnce(E) -> Error {
    move |source| Error::store(operation, source)
}

/// Appends one entry in `txn` (the transaction making the change it records) and returns it.
///
/// The previous hash is the last entry's `hash`; when the last entry cannot be decoded (it was
/// tampered with) it is the SHA-256 of its stored bytes, so appends go on and `verify` reports
/// the damaged entry.
pub(crate) fn append(
    txn: &WriteTransaction,
    kind: EntryKind,
    added: Option<ChainSegment>,
    removed: Option<u64>,
    detail: &str,
) -> Result<ChainEntry> {
    let mut table = txn.open_table(CHAIN).map_err(store_error("open chain"))?;
    let (sequence, previous_hash) = match table.last().map_err(store_error("read chain"))? {
        None => (1, GENESIS_HASH.to_owned()),
        Some((key, value)) => {
            let sequence = key.value();
            let previous = match ChainEntry::decode(sequence, value.value()) {
                Ok(entry) => entry.hash,
                Err(_) => sha256_hex(value.value()),
            };
            (sequence + 1, previous)
        }
    };
    let mut entry = ChainEntry {
        sequence,
        kind,
        time_ns: now_ns(),
        added,
        removed,
        detail: detail.to_owned(),
        previous_hash,
        hash: String::new(),
    };
    entry.hash = entry.compute_hash();
    table
        .insert(sequence, entry.encode().as_slice())
        .map_err(store_error("append chain"))?;
    Ok(entry)
}

/// The entries after `after`, at most `limit` of them, in order. An entry that cannot be
/// decoded is an error naming it (`sightline verify` says more).
pub(crate) fn entries_after(
    txn: &ReadTransaction,
    after: u64,
    limit: usize,
) -> Result<Vec<ChainEntry>> {
    let table = match txn.open_table(CHAIN) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(error) => return Err(Error::store("open chain", error)),
    };
    let mut out = Vec::new();
    for item in table
        .range(after.saturating_add(1)..)
        .map_err(store_error("read chain"))?
    {
        if out.len() >= limit {
            break;
        }
        let (key, value) = item.map_err(store_error("read chain"))?;
        let entry =
            ChainEntry::decode(key.value(), value.value()).map_err(|detail| Error::Corrupt {
                location: format!("chain entry {}", key.value()),
                detail,
            })?;
        out.push(entry);
    }
    Ok(out)
}

/// Records, in the expiry's transaction, that retention deleted segment `meta` (call it for
/// every segment whose catalog entry the transaction removes).
pub(crate) fn append_expired(txn: &WriteTransaction, meta: &SegmentMeta) -> Result<ChainEntry> {
    append(
        txn,
        EntryKind::Expired,
        None,
        Some(meta.id),
        &format!("tier {} day {}", meta.tier, meta.day),
    )
}

/// Records, in the purge's transaction, that [`crate::Engine::purge`] deleted segment `id`
/// (`meta` is its catalog entry when that could be read).
pub(crate) fn append_purged(
    txn: &WriteTransaction,
    id: u64,
    meta: Option<&SegmentMeta>,
) -> Result<ChainEntry> {
    let detail = match meta {
        Some(meta) => format!("tier {} day {}", meta.tier, meta.day),
        None => "unreadable catalog entry".to_owned(),
    };
    append(txn, EntryKind::Purged, None, Some(id), &detail)
}

/// What `verify` found wrong, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// A segment file's bytes differ from the digest the chain recorded.
    Altered,
    /// A segment the chain says is live is missing from the catalog or from disk.
    Removed,
    /// A catalog segment the chain does not list as live (added, or kept, out of turn).
    Unchained,
    /// A catalog entry disagrees with the chain (path, rows, tier) or cannot be read.
    CatalogMismatch,
    /// A chain entry's contents do not match its hash (edited) or cannot be read.
    EditedEntry,
    /// A chain entry does not follow the one before it, or a sequence number is missing:
    /// entries were reordered, removed or inserted.
    Reordered,
    /// A chain entry contradicts the live set (removes a segment that is not live, adds one
    /// twice).
    Inconsistent,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProblemKind::Altered => "altered",
            ProblemKind::Removed => "removed",
            ProblemKind::Unchained => "not in the chain",
            ProblemKind::CatalogMismatch => "catalog mismatch",
            ProblemKind::EditedEntry => "chain entry edited",
            ProblemKind::Reordered => "chain entries reordered or removed",
            ProblemKind::Inconsistent => "chain inconsistent",
        })
    }
}

/// One problem `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChainProblem {
    /// What kind.
    pub kind: ProblemKind,
    /// The chain entry concerned, if any.
    pub sequence: Option<u64>,
    /// The segment concerned, if any.
    pub segment_id: Option<u64>,
    /// That segment's path relative to the data directory, if known.
    pub path: Option<String>,
    /// Expected vs found.
    pub detail: String,
}

impl fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(id) = self.segment_id {
            write!(f, "segment {id}")?;
            if let Some(path) = &self.path {
                write!(f, " ({path})")?;
            }
            write!(f, " {}", self.kind)?;
        } else {
            write!(f, "{}", self.kind)?;
        }
        if let Some(sequence) = self.sequence {
            write!(f, " at chain entry {sequence}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// One erasure the chain records (one `sightline erase`, possibly over several segments).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChainErasure {
    /// The erased session.
    pub session_id: String,
    /// When, unix ns.
    pub time_ns: i64,
    /// The first chain entry recording it.
    pub first_sequence: u64,
    /// (segment replaced, its replacement if rows were left) per segment that held the session.
    pub segments: Vec<(u64, Option<u64>)>,
}

impl fmt::Display for ChainErasure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "session {} erased at {} (chain entry {}",
            self.session_id,
            format_utc(self.time_ns),
            self.first_sequence
        )?;
        if self.segments.is_empty() {
            write!(f, ", no sealed rows")?;
        }
        for (old, new) in &self.segments {
            match new {
                Some(new) => write!(f, ", segment {old} -> {new}")?,
                None => write!(f, ", segment {old} removed")?,
            }
        }
        write!(f, ")")
    }
}

/// The result of [`crate::Engine::verify`] / [`crate::verify_data_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Chain entries.
    pub entries: u64,
    /// Live segments the chain lists (each checked against the catalog and its file).
    pub segments: u64,
    /// Erasures the chain records.
    pub erasures: Vec<ChainErasure>,
    /// Segments expired by retention.
    pub expired: u64,
    /// Segments deleted by [`crate::Engine::purge`].
    pub purged: u64,
    /// Hash of the last entry (zeros for an empty chain). Keep it somewhere else (a ticket, a
    /// log, a second system): it is what proves the chain was not rewritten whole.
    pub head_hash: String,
    /// Everything found wrong; empty when the store verifies.
    pub problems: Vec<ChainProblem>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.is_ok() { "OK" } else { "FAILED" };
        write!(
            f,
            "{status}: {} entries, {} segments, {} erasures, {} expired",
            self.entries,
            self.segments,
            self.erasures.len(),
            self.expired
        )?;
        // Only stores that were purged say so: the line stays as documented for the others.
        if self.purged > 0 {
            write!(f, ", {} purged", self.purged)?;
        }
        writeln!(f)?;
        writeln!(f, "head {}", self.head_hash)?;
        for erasure in &self.erasures {
            writeln!(f, "  {erasure}")?;
        }
        for problem in &self.problems {
            writeln!(f, "  problem: {problem}")?;
        }
        Ok(())
    }
}

/// Recomputes the chain in `txn` and checks it against the catalog and the files under `dir`.
pub(crate) fn verify(txn: &ReadTransaction, dir: &Path) -> Result<VerifyReport> {
    let mut report = VerifyReport {
        entries: 0,
        segments: 0,
        erasures: Vec::new(),
        expired: 0,
        purged: 0,
        head_hash: GENESIS_HASH.to_owned(),
        problems: Vec::new(),
    };
    let problem = |kind, sequence, segment: Option<(u64, Option<String>)>, detail: String| {
        let (segment_id, path) = match segment {
            Some((id, path)) => (Some(id), path),
            None => (None, None),
        };
        ChainProblem {
            kind,
            sequence,
            segment_id,
            path,
            detail,
        }
    };
    let mut problems = Vec::new();

    // 1. Linkage and hashes; replay into the live set.
    let mut live: BTreeMap<u64, (u64, ChainSegment)> = BTreeMap::new();
    let mut gone: BTreeMap<u64, (u64, EntryKind)> = BTreeMap::new();
    match txn.open_table(CHAIN) {
        Ok(table) => {
            let mut expected_sequence = 1u64;
            let mut previous_hash = GENESIS_HASH.to_owned();
            for item in table.iter().map_err(store_error("read chain"))? {
                let (key, value) = item.map_err(store_error("read chain"))?;
                let sequence = key.value();
                report.entries += 1;
                if sequence != expected_sequence {
                    problems.push(problem(
                        ProblemKind::Reordered,
                        Some(sequence),
                        None,
                        format!("expected entry {expected_sequence} next, found {sequence}"),
                    ));
                }
                expected_sequence = sequence + 1;
                let entry = match ChainEntry::decode(sequence, value.value()) {
                    Ok(entry) => entry,
                    Err(detail) => {
                        problems.push(problem(
                            ProblemKind::EditedEntry,
                            Some(sequence),
                            None,
                            format!("unreadable entry: {detail}"),
                        ));
                        previous_hash = sha256_hex(value.value());
                        continue;
                    }
                };
                let computed = entry.compute_hash();
                if computed != entry.hash {
                    problems.push(problem(
                        ProblemKind::EditedEntry,
                        Some(sequence),
                        entry.added.as_ref().map(|s| (s.id, Some(s.path.clone()))),
                        format!("contents hash to {computed}, the entry says {}", entry.hash),
                    ));
                }
                if entry.previous_hash != previous_hash {
                    problems.push(problem(
                        ProblemKind::Reordered,
                        Some(sequence),
                        None,
                        format!(
                            "entry links to previous hash {}, but the entry before it hashes to {previous_hash}",
                            entry.previous_hash
                        ),
                    ));
                }
                previous_hash = entry.hash.clone();
                match entry.kind {
                    EntryKind::Expired => report.expired += 1,
                    EntryKind::Purged => report.purged += 1,
                    EntryKind::Erased => {
                        let pair = entry
                            .removed
                            .map(|old| (old, entry.added.as_ref().map(|new| new.id)));
                        match report.erasures.last_mut() {
                            Some(last)
                                if last.session_id == entry.detail
                                    && last.time_ns == entry.time_ns =>
                            {
                                last.segments.extend(pair);
                            }
                            _ => report.erasures.push(ChainErasure {
                                session_id: entry.detail.clone(),
                                time_ns: entry.time_ns,
                                first_sequence: sequence,
                                segments: pair.into_iter().collect(),
                            }),
                        }
                    }
                    EntryKind::Sealed | EntryKind::Rewritten => {}
                }
                if let Some(removed) = entry.removed {
                    match live.remove(&removed) {
                        Some(_) => {
                            gone.insert(removed, (sequence, entry.kind));
                        }
                        None => problems.push(problem(
                            ProblemKind::Inconsistent,
                            Some(sequence),
                            Some((removed, None)),
                            format!(
                                "entry ({}) removes a segment that is not live",
                                entry.kind.name()
                            ),
                        )),
                    }
                }
                if let Some(added) = entry.added {
                    if live.contains_key(&added.id) || gone.contains_key(&added.id) {
                        problems.push(problem(
                            ProblemKind::Inconsistent,
                            Some(sequence),
                            Some((added.id, Some(added.path.clone()))),
                            "entry adds a segment id the chain already used".to_owned(),
                        ));
                    }
                    live.insert(added.id, (sequence, added));
                }
            }
            report.head_hash = previous_hash;
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(error) => return Err(Error::store("open chain", error)),
    }

    // 2. The catalog against the live set.
    let mut catalog: BTreeMap<u64, Option<SegmentMeta>> = BTreeMap::new();
    match txn.open_table(SEGMENTS) {
        Ok(table) => {
            for item in table.iter().map_err(store_error("read catalog"))? {
                let (key, value) = item.map_err(store_error("read catalog"))?;
                let id = key.value();
                match SegmentMeta::decode(id, value.value()) {
                    Ok(meta) => {
                        catalog.insert(id, Some(meta));
                    }
                    Err(error) => {
                        problems.push(problem(
                            ProblemKind::CatalogMismatch,
                            None,
                            Some((id, None)),
                            format!("unreadable catalog entry: {error}"),
                        ));
                        catalog.insert(id, None);
                    }
                }
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(error) => return Err(Error::store("open catalog", error)),
    }
    for (id, meta) in &catalog {
        if live.contains_key(id) {
            continue;
        }
        let path = meta.as_ref().map(|meta| meta.path.clone());
        let detail = match gone.get(id) {
            Some((sequence, kind)) => format!(
                "in the catalog, but chain entry {sequence} says it was {}",
                kind.name()
            ),
            None => "in the catalog, but no chain entry ever added it".to_owned(),
        };
        problems.push(problem(
            ProblemKind::Unchained,
            None,
            Some((*id, path)),
            detail,
        ));
    }

    // 3. Every live segment: in the catalog as chained, on disk, with the chained digest.
    report.segments = live.len() as u64;
    for (id, (sequence, chained)) in &live {
        let at = Some((*id, Some(chained.path.clone())));
        match catalog.get(id) {
            None => problems.push(problem(
                ProblemKind::Removed,
                Some(*sequence),
                at.clone(),
                "chained as live but missing from the catalog".to_owned(),
            )),
            Some(Some(meta)) => {
                let mut differences = Vec::new();
                if meta.path != chained.path {
                    differences.push(format!("path {} vs chained {}", meta.path, chained.path));
                }
                if meta.rows != chained.rows {
                    differences.push(format!("rows {} vs chained {}", meta.rows, chained.rows));
                }
                if meta.tier != chained.tier {
                    differences.push(format!("tier {} vs chained {}", meta.tier, chained.tier));
                }
                if !differences.is_empty() {
                    problems.push(problem(
                        ProblemKind::CatalogMismatch,
                        Some(*sequence),
                        at.clone(),
                        format!("catalog entry differs: {}", differences.join(", ")),
                    ));
                }
            }
            Some(None) => {}
        }
        let file = dir.join(&chained.path);
        if !file.is_file() {
            problems.push(problem(
                ProblemKind::Removed,
                Some(*sequence),
                at,
                "segment file is missing".to_owned(),
            ));
            continue;
        }
        let digest = file_digest(&file)?;
        if digest != chained.digest {
            problems.push(problem(
                ProblemKind::Altered,
                Some(*sequence),
                at,
                format!(
                    "file sha256 is {digest}, the chain recorded {}",
                    chained.digest
                ),
            ));
        }
    }
    report.problems = problems;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> ChainEntry {
        let mut entry = ChainEntry {
            sequence: 3,
            kind: EntryKind::Erased,
            time_ns: 1_793_491_200_000_000_000,
            added: Some(ChainSegment {
                id: 9,
                tier: "decision".to_owned(),
                path: "segments/decision/2026-11-01/0000000000000009.parquet".to_owned(),
                digest: "ab".repeat(32),
                rows: 12,
            }),
            removed: Some(4),
            detail: "sess-1".to_owned(),
            previous_hash: GENESIS_HASH.to_owned(),
            hash: String::new(),
        };
        entry.hash = entry.compute_hash();
        entry
    }

    #[test]
    fn entries_round_trip_and_every_field_changes_the_hash() {
        let original = entry();
        assert_eq!(ChainEntry::decode(3, &original.encode()).unwrap(), original);
        assert!(ChainEntry::decode(4, &original.encode()).is_err());
        assert!(ChainEntry::decode(3, &[2, b'{']).is_err());
        let edits: Vec<fn(&mut ChainEntry)> = vec![
            |e| e.sequence += 1,
            |e| e.kind = EntryKind::Rewritten,
            |e| e.time_ns += 1,
            |e| e.added = None,
            |e| e.removed = None,
            |e| e.detail.push('x'),
            |e| e.previous_hash = "1".repeat(64),
            |e| e.added.as_mut().unwrap().rows += 1,
            |e| e.added.as_mut().unwrap().digest = "cd".repeat(32),
            |e| e.added.as_mut().unwrap().path.push('x'),
        ];
        for edit in edits {
            let mut changed = original.clone();
            edit(&mut changed);
            assert_ne!(changed.compute_hash(), original.hash);
        }
    }

    #[test]
    fn times_format_as_utc() {
        assert_eq!(
            format_utc(1_793_491_200_000_000_000),
            "2026-11-01T00:00:00Z"
        );
        assert_eq!(
            format_utc(1_793_491_200_000_000_000 + 3_723_000_000_000),
            "2026-11-01T01:02:03Z"
        );
    }
}
