//! Trace-level keys: the session, conversation and user a trace belongs to.
//!
//! Instrumentations usually set `session.id`, `gen_ai.conversation.id` and `user.id` on one span
//! of a trace (the root, which ends and is exported last), while the question "what happened in
//! this session" needs every span of the trace. The engine therefore keeps, per trace, the first
//! non-null value of each key seen on any of its spans ([`TraceKeys`], table `trace_keys`), and
//! resolves every row against it:
//!
//! ```text
//! session_id      = own session_id ?? trace session ?? own conversation_id ?? trace conversation
//! conversation_id = own conversation_id ?? trace conversation        (never fabricated)
//! user_id         = own user_id ?? trace user
//! ```
//!
//! Rows in the memtable are resolved when they are read and when they are sealed; rows sealed
//! before their trace's keys arrived are resolved on read from the segment's *late keys* (see
//! `docs/design/storage-format.md`).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, StringBuilder};

use crate::error::{Error, Result};
use crate::retention::RetentionPolicy;
use crate::schema::columns;

/// Raw 16-byte trace id.
pub(crate) type RawTraceId = [u8; 16];

/// Version byte in front of every `trace_keys` value.
const KEYS_VERSION: u8 = 1;

/// The keys of one trace; each `None` until some span of the trace carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TraceKeys {
    /// First `session_id` seen on a span of the trace.
    pub(crate) session_id: Option<Arc<str>>,
    /// First `conversation_id` seen on a span of the trace.
    pub(crate) conversation_id: Option<Arc<str>>,
    /// First `user_id` seen on a span of the trace.
    pub(crate) user_id: Option<Arc<str>>,
    /// Highest retention tier a span of the trace was placed in (by rank), if any rule placed
    /// one.
    pub(crate) tier: Option<Arc<str>>,
}

impl TraceKeys {
    /// Fills the keys this one lacks from `other` and raises the tier to `other`'s when that
    /// ranks higher; returns true when something changed.
    pub(crate) fn merge(&mut self, other: &TraceKeys, policy: &RetentionPolicy) -> bool {
        let mut changed = false;
        if let Some(theirs) = &other.tier {
            let raise = match &self.tier {
                None => true,
                Some(mine) => policy.rank(theirs) > policy.rank(mine),
            };
            if raise {
                self.tier = Some(Arc::clone(theirs));
                changed = true;
            }
        }
        for (mine, theirs) in [
            (&mut self.session_id, &other.session_id),
            (&mut self.conversation_id, &other.conversation_id),
            (&mut self.user_id, &other.user_id),
        ] {
            if mine.is_none() && theirs.is_some() {
                mine.clone_from(theirs);
                changed = true;
            }
        }
        changed
    }

    /// True when `self` knows a key that `before` did not, or a higher tier.
    pub(crate) fn adds_to(&self, before: Option<&TraceKeys>, policy: &RetentionPolicy) -> bool {
        let before = before.cloned().unwrap_or_default();
        let tier_raised = match (&self.tier, &before.tier) {
            (Some(_), None) => true,
            (Some(now), Some(then)) => policy.rank(now) > policy.rank(then),
            _ => false,
        };
        (self.session_id.is_some() && before.session_id.is_none())
            || (self.conversation_id.is_some() && before.conversation_id.is_none())
            || (self.user_id.is_some() && before.user_id.is_none())
            || tier_raised
    }

    /// The session a row gets when its own columns are `own_session` and `own_conversation`.
    fn session_for<'a>(
        &'a self,
        own_session: Option<&'a str>,
        own_conversation: Option<&'a str>,
    ) -> Option<&'a str> {
        own_session
            .or(self.session_id.as_deref())
            .or(own_conversation)
            .or(self.conversation_id.as_deref())
    }

    /// Encodes a `trace_keys` value: version byte, then per key (session, conversation, user, tier) a little-endian u32 of
    /// `length + 1` (0 for none) and the UTF-8 bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![KEYS_VERSION];
        for key in [
            &self.session_id,
            &self.conversation_id,
            &self.user_id,
            &self.tier,
        ] {
            match key {
                None => out.extend(0u32.to_le_bytes()),
                Some(text) => {
                    let length = u32::try_from(text.len() + 1).unwrap_or(u32::MAX);
                    out.extend(length.to_le_bytes());
                    out.extend(text.as_bytes());
                }
            }
        }
        out
    }

    /// Decodes a value written by [`TraceKeys::encode`].
    pub(crate) fn decode(bytes: &[u8]) -> Result<TraceKeys> {
        let corrupt = |detail: &str| Error::Corrupt {
            location: "trace_keys table".to_owned(),
            detail: detail.to_owned(),
        };
        let Some((&version, mut rest)) = bytes.split_first() else {
            return Err(corrupt("empty value"));
        };
        if version != KEYS_VERSION {
            return Err(corrupt(&format!(
                "expected version {KEYS_VERSION}, found {version}"
            )));
        }
        let mut keys: [Option<Arc<str>>; 4] = Default::default();
        for key in &mut keys {
            let (length, tail) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| corrupt("truncated value"))?;
            let length = u32::from_le_bytes(*length) as usize;
            rest = tail;
            if length == 0 {
                continue;
            }
            let text = rest
                .get(..length - 1)
                .ok_or_else(|| corrupt("truncated value"))?;
            let text = std::str::from_utf8(text).map_err(|_| corrupt("key is not UTF-8"))?;
            *key = Some(Arc::from(text));
            rest = &rest[length - 1..];
        }
        let [session_id, conversation_id, user_id, tier] = keys;
        Ok(TraceKeys {
            session_id,
            conversation_id,
            user_id,
            tier,
        })
    }
}

/// Decodes a lowercase-hex trace id; `None` for anything else.
pub(crate) fn raw_trace_id(text: &str) -> Option<RawTraceId> {
    let mut raw = [0u8; 16];
    hex::decode_to_slice(text, &mut raw).ok()?;
    Some(raw)
}

/// The keys each trace of a full-schema batch carries on its own rows (first non-null per key,
/// in row order; the highest tier). Traces without any key or tier are left out.
pub(crate) fn keys_in_batch(
    batch: &RecordBatch,
    policy: &RetentionPolicy,
) -> HashMap<RawTraceId, TraceKeys> {
    let mut out: HashMap<RawTraceId, TraceKeys> = HashMap::new();
    let (Some(traces), Some(sessions), Some(conversations), Some(users), Some(tiers)) = (
        batch.column_by_name(columns::TRACE_ID),
        batch.column_by_name(columns::SESSION_ID),
        batch.column_by_name(columns::CONVERSATION_ID),
        batch.column_by_name(columns::USER_ID),
        batch.column_by_name(columns::RETENTION_TIER),
    ) else {
        return out;
    };
    let traces = traces.as_string::<i32>();
    let sessions = sessions.as_string::<i32>();
    let conversations = conversations.as_string::<i32>();
    let users = users.as_string::<i32>();
    let tiers = tiers.as_string::<i32>();
    let all_null = |column: &StringArray| column.null_count() == column.len();
    if all_null(sessions) && all_null(conversations) && all_null(users) && all_null(tiers) {
        return out;
    }
    let value = |column: &StringArray, row: usize| -> Option<Arc<str>> {
        column.is_valid(row).then(|| Arc::from(column.value(row)))
    };
    for row in 0..batch.num_rows() {
        if sessions.is_null(row)
            && conversations.is_null(row)
            && users.is_null(row)
            && tiers.is_null(row)
        {
            continue;
        }
        let Some(trace) = raw_trace_id(traces.value(row)) else {
            continue;
        };
        let entry = out.entry(trace).or_default();
        let own = TraceKeys {
            session_id: value(sessions, row),
            conversation_id: value(conversations, row),
            user_id: value(users, row),
            tier: value(tiers, row),
        };
        entry.merge(&own, policy);
    }
    out
}

/// The trace of each run of equal trace ids in `batch`, in row order (a trace whose rows are
/// not together comes once per run).
fn trace_runs(batch: &RecordBatch) -> impl Iterator<Item = RawTraceId> + '_ {
    let column = batch
        .column_by_name(columns::TRACE_ID)
        .and_then(|column| column.as_string_opt::<i32>());
    let mut previous: Option<&str> = None;
    column
        .into_iter()
        .flat_map(|column| (0..column.len()).map(move |row| column.value(row)))
        .filter_map(move |text| {
            if previous == Some(text) {
                return None;
            }
            previous = Some(text);
            raw_trace_id(text)
        })
}

/// Adds the trace of every row of `batch` to `traces`.
pub(crate) fn extend_traces(
    traces: &mut std::collections::HashSet<RawTraceId>,
    batch: &RecordBatch,
) {
    traces.extend(trace_runs(batch));
}

/// The distinct traces of a batch (raw ids), in first-seen order.
pub(crate) fn traces_in_batch(batch: &RecordBatch) -> Vec<RawTraceId> {
    let mut seen = std::collections::HashSet::new();
    trace_runs(batch).filter(|raw| seen.insert(*raw)).collect()
}

/// Resolves the session, conversation and user columns of `batch` (which must hold
/// `trace_id` and whichever of the three key columns it has) against the trace keys
/// `lookup` returns. Columns not in the batch are left alone; the session fallback to the
/// conversation needs `conversation_id` in the batch.
pub(crate) fn resolve_keys<'a>(
    batch: &RecordBatch,
    lookup: impl Fn(&RawTraceId) -> Option<&'a TraceKeys>,
    policy: &RetentionPolicy,
) -> Result<RecordBatch> {
    let schema = batch.schema();
    let index = |name: &str| schema.index_of(name).ok();
    let (Some(trace_index), session_index, conversation_index, user_index, tier_index) = (
        index(columns::TRACE_ID),
        index(columns::SESSION_ID),
        index(columns::CONVERSATION_ID),
        index(columns::USER_ID),
        index(columns::RETENTION_TIER),
    ) else {
        return Ok(batch.clone());
    };
    if session_index.is_none()
        && conversation_index.is_none()
        && user_index.is_none()
        && tier_index.is_none()
    {
        return Ok(batch.clone());
    }
    let rows = batch.num_rows();
    let strings = |at: Option<usize>| at.map(|at| batch.column(at).as_string::<i32>().clone());
    let sessions = strings(session_index);
    let conversations = strings(conversation_index);
    let users = strings(user_index);
    let tiers = strings(tier_index);
    // Borrowed: this runs for every row of every memtable scan and seal.
    fn own(column: &Option<StringArray>, row: usize) -> Option<&str> {
        column
            .as_ref()
            .and_then(|column| column.is_valid(row).then(|| column.value(row)))
    }
    let needs_work = |column: &Option<StringArray>| {
        column
            .as_ref()
            .is_some_and(|column| column.null_count() > 0)
    };
    // Tiers always need a look: the trace may rank higher than a row's own tier.
    if !needs_work(&sessions)
        && !needs_work(&conversations)
        && !needs_work(&users)
        && tiers.is_none()
    {
        return Ok(batch.clone());
    }
    let traces = batch.column(trace_index).as_string::<i32>();
    let mut session_out = StringBuilder::with_capacity(rows, rows * 16);
    let mut conversation_out = StringBuilder::with_capacity(rows, rows * 16);
    let mut user_out = StringBuilder::with_capacity(rows, rows * 8);
    let mut tier_out = StringBuilder::with_capacity(rows, rows * 8);
    let empty = TraceKeys::default();
    let mut cached: Option<(&str, Option<&TraceKeys>)> = None;
    for row in 0..rows {
        let own_session = own(&sessions, row);
        let own_conversation = own(&conversations, row);
        let own_user = own(&users, row);
        let all_known = (sessions.is_none() || own_session.is_some())
            && (conversations.is_none() || own_conversation.is_some())
            && (users.is_none() || own_user.is_some())
            && tiers.is_none();
        let keys = if all_known {
            &empty
        } else {
            let trace = traces.value(row);
            let found = match cached {
                Some((previous, found)) if previous == trace => found,
                _ => {
                    let found = raw_trace_id(trace).and_then(|raw| lookup(&raw));
                    cached = Some((trace, found));
                    found
                }
            };
            found.unwrap_or(&empty)
        };
        session_out.append_option(keys.session_for(own_session, own_conversation));
        conversation_out.append_option(own_conversation.or(keys.conversation_id.as_deref()));
        user_out.append_option(own_user.or(keys.user_id.as_deref()));
        if tiers.is_some() {
            let own_tier = own(&tiers, row).unwrap_or(policy.default_tier());
            let tier = match keys.tier.as_deref() {
                Some(trace_tier) => policy.higher(own_tier, trace_tier),
                None => own_tier,
            };
            tier_out.append_value(tier);
        }
    }
    let mut columns_out: Vec<ArrayRef> = batch.columns().to_vec();
    if let Some(at) = session_index {
        columns_out[at] = Arc::new(session_out.finish());
    }
    if let Some(at) = conversation_index {
        columns_out[at] = Arc::new(conversation_out.finish());
    }
    if let Some(at) = user_index {
        columns_out[at] = Arc::new(user_out.finish());
    }
    if let Some(at) = tier_index {
        columns_out[at] = Arc::new(tier_out.finish());
    }
    Ok(RecordBatch::try_new(schema, columns_out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(session: Option<&str>, conversation: Option<&str>, user: Option<&str>) -> TraceKeys {
        TraceKeys {
            session_id: session.map(Arc::from),
            conversation_id: conversation.map(Arc::from),
            user_id: user.map(Arc::from),
            tier: None,
        }
    }

    #[test]
    fn values_round_trip_and_bad_bytes_are_corrupt() {
        // Four keys now: a value with three is truncated.
        for value in [
            keys(None, None, None),
            keys(Some("s-1"), None, Some("")),
            keys(Some("é"), Some("conv"), Some("u")),
            TraceKeys {
                tier: Some(Arc::from("decision")),
                ..keys(None, None, None)
            },
        ] {
            assert_eq!(TraceKeys::decode(&value.encode()).unwrap(), value);
        }
        assert!(TraceKeys::decode(&[]).is_err());
        assert!(TraceKeys::decode(&[2, 0, 0, 0, 0]).is_err());
        assert!(TraceKeys::decode(&[1, 9, 0, 0, 0, b'x']).is_err());
    }

    #[test]
    fn merge_keeps_the_first_value_of_each_key() {
        let policy = RetentionPolicy::default();
        let mut first = keys(Some("a"), None, None);
        assert!(first.merge(&keys(Some("b"), Some("c"), None), &policy));
        assert_eq!(first, keys(Some("a"), Some("c"), None));
        assert!(!first.merge(&keys(Some("z"), Some("z"), None), &policy));
        assert!(first.adds_to(Some(&keys(Some("a"), None, None)), &policy));
        assert!(!first.adds_to(Some(&keys(Some("x"), Some("y"), None)), &policy));
        let tiered = |tier: &str| TraceKeys {
            tier: Some(Arc::from(tier)),
            ..TraceKeys::default()
        };
        let mut trace = tiered("standard");
        assert!(trace.merge(&tiered("decision"), &policy));
        assert!(!trace.merge(&tiered("standard"), &policy));
        assert_eq!(trace.tier.as_deref(), Some("decision"));
        assert!(trace.adds_to(Some(&tiered("standard")), &policy));
    }

    #[test]
    fn resolution_prefers_own_values_then_trace_then_conversation() {
        let trace = keys(None, Some("conv"), Some("user"));
        assert_eq!(trace.session_for(None, None), Some("conv"));
        assert_eq!(trace.session_for(None, Some("mine")), Some("mine"));
        assert_eq!(trace.session_for(Some("s"), Some("mine")), Some("s"));
        let with_session = keys(Some("sess"), Some("conv"), None);
        assert_eq!(with_session.session_for(None, Some("mine")), Some("sess"));
    }
}
