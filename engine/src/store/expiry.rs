//! Retention: per-tier status of the store and expiry of the segments past their tier's
//! keep (rows of traces promoted since their seal are first moved to their tier).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::array::{Array, AsArray, BooleanArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::TimestampNanosecondType;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::ids::TraceId;
use crate::retention::{AgeFrom, RetentionPolicy};
use crate::scan::{ScanPlan, ScanRequest, SegmentRead};
use crate::schema::{column_index, columns};
use crate::segment::SegmentMeta;
use crate::tables::TRACE_SEGMENTS;
use crate::trace_keys::{RawTraceId, TraceKeys};

use super::*;

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
    /// False for a tier of stored segments that this configuration does not define (written
    /// under another one): its `keep` is unknown (zero here) and expiry leaves it alone.
    pub configured: bool,
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
        let mut status: Vec<TierStatus> = policy
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
                    configured: true,
                }
            })
            .collect();
        // Tiers of segments written under another configuration: shown, never expired here.
        let unknown: BTreeSet<&str> = segments
            .iter()
            .map(|meta| meta.tier.as_str())
            .filter(|tier| policy.tier(tier).is_none())
            .collect();
        for tier in unknown {
            let mine: Vec<&Arc<SegmentMeta>> =
                segments.iter().filter(|meta| meta.tier == tier).collect();
            status.push(TierStatus {
                tier: tier.to_owned(),
                keep: Duration::ZERO,
                segments: mine.len() as u64,
                spans: sealed.get(tier).copied().unwrap_or(0),
                unsealed: 0,
                bytes: mine.iter().map(|meta| meta.bytes).sum(),
                oldest: mine.iter().map(|meta| meta.min_start).min(),
                next_expiry: None,
                configured: false,
            });
        }
        Ok(status)
    }

    /// Deletes every sealed segment whose rows are all older than their tier keeps at `as_of`
    /// (ns since the epoch), whole segments at a time. A row's age counts from its tier's
    /// [`crate::AgeFrom`]: by default the later of its end time and its arrival. Rows of traces promoted to a
    /// longer-kept tier after the segment was sealed are first moved to a segment of that tier.
    /// With `dry_run`, reports what would be deleted and changes nothing.
    pub fn expire(&self, as_of: i64, dry_run: bool) -> Result<ExpiryReport> {
        let started = std::time::Instant::now();
        let result = self.expire_locked(as_of, dry_run);
        if !dry_run {
            let expired = result.as_ref().ok().map(|report| report.segments.len());
            self.shared.activity.expiry(started.elapsed(), expired);
        }
        result
    }

    fn expire_locked(&self, as_of: i64, dry_run: bool) -> Result<ExpiryReport> {
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
            if policy.tier(&meta.tier).is_none() {
                // Written under a configuration with this tier: its keep is unknown here, so
                // nothing of it is deleted (it would otherwise take the default tier's keep).
                let problem = format!(
                    "segment {} ({}): tier {:?} is not in this configuration; run with the \
                     configuration that defines it",
                    meta.id, meta.path, meta.tier
                );
                warn!(segment = meta.id, tier = %meta.tier, "retention skipped a segment of an unknown tier");
                report.refused.push(problem);
                continue;
            }
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
            // Fresh by the wall clock, not by `as_of`: a pass run "as of" a later date that
            // deletes what arrived minutes ago is exactly the surprise to warn about.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| {
                    i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX)
                });
            let hour_ago = now
                .saturating_sub(3_600_000_000_000)
                .min(as_of.saturating_sub(3_600_000_000_000));
            if outcome.is_ok() && meta.max_arrival.is_some_and(|arrival| arrival > hour_ago) {
                recent.0 += expired.rows;
                recent.1 += 1;
                let keep = policy.keep(&meta.tier);
                let rule = match policy.age_from(&meta.tier) {
                    AgeFrom::SpanTime => "counted from the span's end time (age_from = span_time)",
                    AgeFrom::Arrival => "counted from the later of end time and arrival",
                };
                recent
                    .2
                    .insert(format!("{} (keep {}s, {rule})", meta.tier, keep.as_secs()));
            }
            match outcome {
                Ok(()) => report.segments.push(expired),
                Err(error @ Error::Held { .. }) => {
                    if dry_run {
                        info!(segment = meta.id, error = %error, "retention would refuse to expire a held segment (dry run)");
                    } else {
                        warn!(segment = meta.id, error = %error, "retention refused to expire a held segment");
                    }
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
                 held rows sent within the hour, and by their tier's age rule (shown per tier) \
                 they are past its keep"
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
    pub(super) fn promoted_rows(
        &self,
        meta: &Arc<SegmentMeta>,
        traces: &[(RawTraceId, TraceKeys)],
        as_of: i64,
    ) -> Result<Vec<RecordBatch>> {
        let policy = &self.shared.options.retention;
        let request = ScanRequest {
            trace_ids: Some(traces.iter().map(|(trace, _)| TraceId(*trace)).collect()),
            family: crate::RowFamily::All,
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
}
