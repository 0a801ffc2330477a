//! Retention tiers: named classes of data, each kept for its own age. A trace lives in the
//! highest tier (the longest kept) that any of its spans reached; expiry deletes whole
//! segments whose every row is past its tier's age.
//!
//! A row's age counts, by default, from the later of its span's end time and its arrival
//! (`arrival_time`, stamped by the engine when the write is acknowledged), so data sent late
//! (a backfill, an exporter's retry days later) keeps its tier's full keep from when it
//! arrived. A tier with `age_from = span_time` counts from the end time alone.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};

/// What a row's age counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgeFrom {
    /// The later of the span's end time and when the row arrived (the default).
    #[default]
    Arrival,
    /// The span's end time.
    SpanTime,
}

impl AgeFrom {
    /// The configuration spelling: `arrival` or `span_time`.
    pub fn name(self) -> &'static str {
        match self {
            AgeFrom::Arrival => "arrival",
            AgeFrom::SpanTime => "span_time",
        }
    }

    /// Parses [`AgeFrom::name`].
    pub fn parse(text: &str) -> Option<AgeFrom> {
        match text {
            "arrival" => Some(AgeFrom::Arrival),
            "span_time" => Some(AgeFrom::SpanTime),
            _ => None,
        }
    }

    /// The time a row's age counts from, given its end and arrival times (ns).
    pub fn basis(self, end: i64, arrival: Option<i64>) -> i64 {
        match (self, arrival) {
            (AgeFrom::Arrival, Some(arrival)) => end.max(arrival),
            _ => end,
        }
    }
}

/// Places span rows in retention tiers: the configured rules. The query crate's rule set
/// implements it (the rules are SQL expressions); the write pipeline calls it.
pub trait TierRules: Send + Sync {
    /// One tier per row of `spans` (`None`: the default tier), or why the rules could not be
    /// evaluated.
    fn assign_tiers(
        &self,
        spans: &arrow::array::RecordBatch,
    ) -> std::result::Result<Vec<Option<&str>>, String>;
}

/// No rules: every row in the default tier.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTierRules;

impl TierRules for NoTierRules {
    fn assign_tiers(
        &self,
        spans: &arrow::array::RecordBatch,
    ) -> std::result::Result<Vec<Option<&str>>, String> {
        Ok(vec![None; spans.num_rows()])
    }
}

/// One retention tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    /// Tier name, as stored in the `retention_tier` column and in segment paths.
    pub name: String,
    /// How long rows of this tier are kept, from [`Tier::age_from`].
    pub keep: Duration,
    /// What the age counts from.
    pub age_from: AgeFrom,
}

impl Tier {
    /// A tier whose age counts from arrival (the default).
    pub fn new(name: impl Into<String>, keep: Duration) -> Self {
        Tier {
            name: name.into(),
            keep,
            age_from: AgeFrom::default(),
        }
    }
}

/// The tiers and the tier of rows that no rule placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Tiers, sorted from the shortest kept to the longest (the rank order).
    tiers: Vec<Tier>,
    default_tier: Arc<str>,
}

impl Default for RetentionPolicy {
    /// `decision` kept 400 days, `standard` kept 14 days, `standard` by default.
    fn default() -> Self {
        const DAY: u64 = 86_400;
        RetentionPolicy::new(
            vec![
                Tier::new("decision", Duration::from_secs(400 * DAY)),
                Tier::new("standard", Duration::from_secs(14 * DAY)),
            ],
            "standard",
        )
        .unwrap_or_else(|_| unreachable!("the default policy is valid"))
    }
}

impl RetentionPolicy {
    /// A policy; fails on no tiers, duplicate or invalid names, or an unknown default tier.
    pub fn new(mut tiers: Vec<Tier>, default_tier: &str) -> Result<Self> {
        let invalid = |detail: String| Error::InvalidOptions(detail);
        if tiers.is_empty() {
            return Err(invalid("at least one retention tier is needed".to_owned()));
        }
        for (index, tier) in tiers.iter().enumerate() {
            let valid = !tier.name.is_empty()
                && tier.name.len() <= 64
                && tier
                    .name
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
            if !valid {
                return Err(invalid(format!(
                    "tier name {:?} must be 1-64 ASCII letters, digits, '_' or '-'",
                    tier.name
                )));
            }
            if tiers[..index].iter().any(|other| other.name == tier.name) {
                return Err(invalid(format!("tier {:?} is defined twice", tier.name)));
            }
        }
        if !tiers.iter().any(|tier| tier.name == default_tier) {
            return Err(invalid(format!(
                "default tier {default_tier:?} is not one of the tiers ({})",
                tiers
                    .iter()
                    .map(|tier| tier.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        // Stable: equal keeps rank in the order given.
        tiers.sort_by_key(|tier| tier.keep);
        Ok(RetentionPolicy {
            tiers,
            default_tier: Arc::from(default_tier),
        })
    }

    /// The tiers, from the shortest kept to the longest.
    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// The tier of rows no rule placed.
    pub fn default_tier(&self) -> &str {
        &self.default_tier
    }

    /// The tier called `name`.
    pub fn tier(&self, name: &str) -> Option<&Tier> {
        self.tiers.iter().find(|tier| tier.name == name)
    }

    /// Rank of a tier (higher = kept longer); unknown names rank as the default tier.
    pub(crate) fn rank(&self, name: &str) -> usize {
        self.tiers
            .iter()
            .position(|tier| tier.name == name)
            .or_else(|| {
                self.tiers
                    .iter()
                    .position(|tier| *tier.name == *self.default_tier)
            })
            .unwrap_or(0)
    }

    /// The higher-ranked of two tiers (`a` on a tie).
    pub(crate) fn higher<'a>(&self, a: &'a str, b: &'a str) -> &'a str {
        if self.rank(b) > self.rank(a) { b } else { a }
    }

    /// How long rows of tier `name` are kept (the default tier's keep for unknown names).
    pub fn keep(&self, name: &str) -> Duration {
        self.tier(name)
            .or_else(|| self.tier(&self.default_tier))
            .map_or(Duration::MAX, |tier| tier.keep)
    }

    /// What the age of rows of tier `name` counts from (the default tier's for unknown names).
    pub fn age_from(&self, name: &str) -> AgeFrom {
        self.tier(name)
            .or_else(|| self.tier(&self.default_tier))
            .map_or(AgeFrom::default(), |tier| tier.age_from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier(name: &str, days: u64) -> Tier {
        Tier::new(name, Duration::from_secs(days * 86_400))
    }

    #[test]
    fn ranks_follow_keep_and_bad_policies_are_refused() {
        let policy = RetentionPolicy::new(
            vec![tier("long", 400), tier("short", 7), tier("mid", 30)],
            "short",
        )
        .unwrap();
        assert!(policy.rank("long") > policy.rank("mid"));
        assert!(policy.rank("mid") > policy.rank("short"));
        assert_eq!(policy.rank("unknown"), policy.rank("short"));
        assert_eq!(policy.higher("short", "long"), "long");
        assert_eq!(policy.keep("nope"), Duration::from_secs(7 * 86_400));
        assert!(RetentionPolicy::new(vec![], "x").is_err());
        assert!(RetentionPolicy::new(vec![tier("a", 1), tier("a", 2)], "a").is_err());
        assert!(RetentionPolicy::new(vec![tier("a b", 1)], "a b").is_err());
        let error = RetentionPolicy::new(vec![tier("a", 1)], "b").unwrap_err();
        assert!(error.to_string().contains("default tier \"b\""), "{error}");
    }
}
