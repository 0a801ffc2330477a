//! Legal holds (table `holds`): a held session may not be erased, and segments of a held tier,
//! or holding rows of a held session, may not be expired.

use std::fmt;

use redb::{ReadTransaction, ReadableMultimapTable, ReadableTable, WriteTransaction};

use crate::error::{Error, Result};
use crate::segment::SegmentMeta;
use crate::tables::{HOLDS, SESSION_ROWS};

const SESSION_PREFIX: &str = "session:";
const TIER_PREFIX: &str = "tier:";

/// What a legal hold protects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum HoldTarget {
    /// Every row of one session: it cannot be erased, and segments holding it cannot expire.
    Session(String),
    /// Every segment of one retention tier: none can expire.
    Tier(String),
}

impl HoldTarget {
    fn key(&self) -> String {
        match self {
            HoldTarget::Session(id) => format!("{SESSION_PREFIX}{id}"),
            HoldTarget::Tier(name) => format!("{TIER_PREFIX}{name}"),
        }
    }

    fn from_key(key: &str) -> Option<HoldTarget> {
        if let Some(id) = key.strip_prefix(SESSION_PREFIX) {
            Some(HoldTarget::Session(id.to_owned()))
        } else {
            key.strip_prefix(TIER_PREFIX)
                .map(|name| HoldTarget::Tier(name.to_owned()))
        }
    }
}

impl fmt::Display for HoldTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HoldTarget::Session(id) => write!(f, "session {id}"),
            HoldTarget::Tier(name) => write!(f, "tier {name}"),
        }
    }
}

/// One legal hold in force.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LegalHold {
    /// What is held.
    pub target: HoldTarget,
    /// When the hold was placed, unix ns.
    pub since_ns: i64,
}

impl fmt::Display for LegalHold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} since {}",
            self.target,
            crate::chain::format_utc(self.since_ns)
        )
    }
}

fn store_error<E: Into<redb::Error>>(operation: &'static str) -> impl FnOnce(E) -> Error {
    move |source| Error::store(operation, source)
}

fn as_ns(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Places a hold at `now_ns`; returns false (and keeps the original time) when it was in force.
pub(crate) fn place(txn: &WriteTransaction, target: &HoldTarget, now_ns: i64) -> Result<bool> {
    let mut table = txn.open_table(HOLDS).map_err(store_error("open holds"))?;
    let key = target.key();
    if table
        .get(key.as_str())
        .map_err(store_error("read holds"))?
        .is_some()
    {
        return Ok(false);
    }
    table
        .insert(key.as_str(), u64::try_from(now_ns).unwrap_or(0))
        .map_err(store_error("write holds"))?;
    Ok(true)
}

/// Releases a hold; returns false when there was none.
pub(crate) fn release(txn: &WriteTransaction, target: &HoldTarget) -> Result<bool> {
    let mut table = txn.open_table(HOLDS).map_err(store_error("open holds"))?;
    let removed = table
        .remove(target.key().as_str())
        .map_err(store_error("write holds"))?;
    Ok(removed.is_some())
}

/// Every hold in force, sessions first, each group sorted.
pub(crate) fn list(txn: &ReadTransaction) -> Result<Vec<LegalHold>> {
    let table = match txn.open_table(HOLDS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(error) => return Err(Error::store("open holds", error)),
    };
    let mut out = Vec::new();
    for item in table.iter().map_err(store_error("read holds"))? {
        let (key, since) = item.map_err(store_error("read holds"))?;
        let target = HoldTarget::from_key(key.value()).ok_or_else(|| Error::Corrupt {
            location: "holds table".to_owned(),
            detail: format!("unknown hold key {:?}", key.value()),
        })?;
        out.push(LegalHold {
            target,
            since_ns: as_ns(since.value()),
        });
    }
    out.sort_by(|left, right| left.target.cmp(&right.target));
    Ok(out)
}

/// Fails with [`Error::Held`] when `target` is held (call inside the transaction that would
/// erase or expire it, so a hold committed meanwhile is seen).
pub(crate) fn refuse_if_held(txn: &WriteTransaction, target: &HoldTarget) -> Result<()> {
    let table = txn.open_table(HOLDS).map_err(store_error("open holds"))?;
    let since = table
        .get(target.key().as_str())
        .map_err(store_error("read holds"))?
        .map(|value| as_ns(value.value()));
    match since {
        Some(since_ns) => Err(Error::Held {
            target: target.clone(),
            since_ns,
        }),
        None => Ok(()),
    }
}

/// Fails with [`Error::Held`] when retention may not delete segment `meta`: its tier is held,
/// or it holds rows of a held session. Retention calls it inside its transaction, per segment.
pub(crate) fn refuse_expiry_if_held(txn: &WriteTransaction, meta: &SegmentMeta) -> Result<()> {
    refuse_if_held(txn, &HoldTarget::Tier(meta.tier.clone()))?;
    let holds = txn.open_table(HOLDS).map_err(store_error("open holds"))?;
    let sessions = txn
        .open_multimap_table(SESSION_ROWS)
        .map_err(store_error("open session index"))?;
    for item in holds
        .range(SESSION_PREFIX..)
        .map_err(store_error("read holds"))?
    {
        let (key, since) = item.map_err(store_error("read holds"))?;
        let Some(session) = key.value().strip_prefix(SESSION_PREFIX) else {
            break;
        };
        for run in sessions
            .get(session)
            .map_err(store_error("read session index"))?
        {
            if run.map_err(store_error("read session index"))?.value().0 == meta.id {
                return Err(Error::Held {
                    target: HoldTarget::Session(session.to_owned()),
                    since_ns: as_ns(since.value()),
                });
            }
        }
    }
    Ok(())
}
