//! Translation of DataFusion filter expressions into the predicates of an
//! [`engine::ScanRequest`].
//!
//! The engine applies every predicate of a request exactly, so a filter is answered
//! `Exact` when it translates completely and `Unsupported` otherwise; nothing is translated
//! partially, so `Inexact` is never used. What translates:
//!
//! - `start_time` compared (`=`, `<`, `<=`, `>`, `>=`, `BETWEEN`) with a timestamp literal of
//!   any unit or zone (also `CAST(literal AS ...)` and a column cast that keeps nanoseconds);
//! - `trace_id = 'hex'`, `trace_id IN (...)` and ORs of such equalities;
//! - `service_name = 'name'`, `service_name IN (...)` and ORs of such equalities;
//! - the same shapes on `session_id` and `conversation_id`, which the engine answers from its
//!   session and conversation indexes (only the row runs of those keys are read).
//!
//! Trace ids: the column holds lowercase hex, but the engine lowercases the ids it is given.
//! To keep SQL semantics (`trace_id = 'ABC…'` matches nothing) a literal that is not already
//! lowercase is dropped from the set rather than sent to the engine: it cannot equal any
//! stored value, so dropping it is exact.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Bound;

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

use crate::timestamp::format_timestamp_ns;

/// A column whose predicates the engine can apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushColumn {
    /// The span's `trace_id`.
    TraceId,
    /// The span's `service_name`.
    ServiceName,
    /// The span's `start_time`.
    StartTime,
    /// The span's (resolved) `session_id`.
    SessionId,
    /// The span's (resolved) `conversation_id`.
    ConversationId,
}

/// One translated filter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Predicate {
    StartTime(Bound<i64>, Bound<i64>),
    TraceIds(BTreeSet<String>),
    Services(BTreeSet<String>),
    Sessions(BTreeSet<String>),
    Conversations(BTreeSet<String>),
}

/// The conjunction of every translated filter of one scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanFilters {
    pub(crate) start_time: (Bound<i64>, Bound<i64>),
    pub(crate) trace_ids: Option<BTreeSet<String>>,
    pub(crate) services: Option<BTreeSet<String>>,
    pub(crate) sessions: Option<BTreeSet<String>>,
    pub(crate) conversations: Option<BTreeSet<String>>,
}

impl Default for ScanFilters {
    fn default() -> Self {
        ScanFilters {
            start_time: (Bound::Unbounded, Bound::Unbounded),
            trace_ids: None,
            services: None,
            sessions: None,
            conversations: None,
        }
    }
}

impl ScanFilters {
    /// Translates the filters DataFusion hands to `scan` (those answered `Exact`). Filters that
    /// do not translate are skipped; `supports_filters_pushdown` never accepted them.
    pub(crate) fn from_exprs(
        filters: &[Expr],
        resolve: &dyn Fn(&str) -> Option<PushColumn>,
    ) -> Self {
        let mut out = ScanFilters::default();
        for filter in filters {
            if let Some(predicate) = translate(filter, resolve) {
                out.add(predicate);
            }
        }
        out
    }

    fn add(&mut self, predicate: Predicate) {
        match predicate {
            Predicate::StartTime(lower, upper) => {
                self.start_time = (
                    tighter_lower(self.start_time.0, lower),
                    tighter_upper(self.start_time.1, upper),
                );
            }
            Predicate::TraceIds(ids) => {
                self.trace_ids = Some(intersect(self.trace_ids.take(), ids))
            }
            Predicate::Services(names) => {
                self.services = Some(intersect(self.services.take(), names))
            }
            Predicate::Sessions(ids) => self.sessions = Some(intersect(self.sessions.take(), ids)),
            Predicate::Conversations(ids) => {
                self.conversations = Some(intersect(self.conversations.take(), ids))
            }
        }
    }

    /// True when no row can match (an empty id or service set, or an empty time range), so
    /// the scan need not ask the engine at all.
    pub(crate) fn matches_nothing(&self) -> bool {
        self.trace_ids.as_ref().is_some_and(BTreeSet::is_empty)
            || self.services.as_ref().is_some_and(BTreeSet::is_empty)
            || self.sessions.as_ref().is_some_and(BTreeSet::is_empty)
            || self.conversations.as_ref().is_some_and(BTreeSet::is_empty)
            || time_range_is_empty(self.start_time)
    }

    /// True when there is at least one predicate.
    pub(crate) fn is_empty(&self) -> bool {
        self == &ScanFilters::default()
    }
}

impl fmt::Display for ScanFilters {
    /// `trace_ids=[…], start_time=[…], services=[…]`, only the parts that are set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(ids) = &self.trace_ids {
            parts.push(format!("trace_ids=[{}]", join(ids)));
        }
        if self.start_time != (Bound::Unbounded, Bound::Unbounded) {
            let lower = match self.start_time.0 {
                Bound::Included(value) => format!("[{}", format_timestamp_ns(value)),
                Bound::Excluded(value) => format!("({}", format_timestamp_ns(value)),
                Bound::Unbounded => "(-inf".to_owned(),
            };
            let upper = match self.start_time.1 {
                Bound::Included(value) => format!("{}]", format_timestamp_ns(value)),
                Bound::Excluded(value) => format!("{})", format_timestamp_ns(value)),
                Bound::Unbounded => "+inf)".to_owned(),
            };
            parts.push(format!("start_time={lower}, {upper}"));
        }
        if let Some(names) = &self.services {
            parts.push(format!("services=[{}]", join(names)));
        }
        if let Some(ids) = &self.sessions {
            parts.push(format!("sessions=[{}]", join(ids)));
        }
        if let Some(ids) = &self.conversations {
            parts.push(format!("conversations=[{}]", join(ids)));
        }
        f.write_str(&parts.join(", "))
    }
}

fn join(values: &BTreeSet<String>) -> String {
    values
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// True when `expr` translates completely into an engine predicate.
pub(crate) fn is_exact(expr: &Expr, resolve: &dyn Fn(&str) -> Option<PushColumn>) -> bool {
    translate(expr, resolve).is_some()
}

fn translate(expr: &Expr, resolve: &dyn Fn(&str) -> Option<PushColumn>) -> Option<Predicate> {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::Or => {
                // Only unions of id or service sets stay exact under OR.
                match (translate(left, resolve)?, translate(right, resolve)?) {
                    (Predicate::TraceIds(mut a), Predicate::TraceIds(b)) => {
                        a.extend(b);
                        Some(Predicate::TraceIds(a))
                    }
                    (Predicate::Services(mut a), Predicate::Services(b)) => {
                        a.extend(b);
                        Some(Predicate::Services(a))
                    }
                    _ => None,
                }
            }
            Operator::Eq | Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq => {
                if let Some(column) = column_of(left, resolve) {
                    comparison(column, *op, right)
                } else {
                    let column = column_of(right, resolve)?;
                    comparison(column, op.swap()?, left)
                }
            }
            _ => None,
        },
        Expr::InList(InList {
            expr,
            list,
            negated: false,
        }) => {
            let column = column_of(expr, resolve)?;
            let mut values = BTreeSet::new();
            for item in list {
                // A NULL item never makes the predicate true, so it adds nothing.
                if let Some(value) = string_literal(item)? {
                    values.insert(value);
                }
            }
            string_set(column, values)
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) => {
            if column_of(expr, resolve)? != PushColumn::StartTime {
                return None;
            }
            let low = timestamp_literal(low)?;
            let high = timestamp_literal(high)?;
            Some(Predicate::StartTime(
                Bound::Included(low),
                Bound::Included(high),
            ))
        }
        _ => None,
    }
}

/// `column op literal`.
fn comparison(column: PushColumn, op: Operator, literal: &Expr) -> Option<Predicate> {
    match column {
        PushColumn::StartTime => {
            let value = timestamp_literal(literal)?;
            let (lower, upper) = match op {
                Operator::Eq => (Bound::Included(value), Bound::Included(value)),
                Operator::Lt => (Bound::Unbounded, Bound::Excluded(value)),
                Operator::LtEq => (Bound::Unbounded, Bound::Included(value)),
                Operator::Gt => (Bound::Excluded(value), Bound::Unbounded),
                Operator::GtEq => (Bound::Included(value), Bound::Unbounded),
                _ => return None,
            };
            Some(Predicate::StartTime(lower, upper))
        }
        PushColumn::TraceId
        | PushColumn::ServiceName
        | PushColumn::SessionId
        | PushColumn::ConversationId => {
            if op != Operator::Eq {
                return None;
            }
            // `column = NULL` is never true; leave it to DataFusion rather than special-case it.
            let value = string_literal(literal)??;
            string_set(column, BTreeSet::from([value]))
        }
    }
}

fn string_set(column: PushColumn, values: BTreeSet<String>) -> Option<Predicate> {
    match column {
        PushColumn::TraceId => Some(Predicate::TraceIds(
            values
                .into_iter()
                // Stored ids are lowercase hex; any other literal cannot match (module docs).
                .filter(|id| !id.bytes().any(|byte| byte.is_ascii_uppercase()))
                .collect(),
        )),
        PushColumn::ServiceName => Some(Predicate::Services(values)),
        PushColumn::SessionId => Some(Predicate::Sessions(values)),
        PushColumn::ConversationId => Some(Predicate::Conversations(values)),
        PushColumn::StartTime => None,
    }
}

/// The pushable column `expr` reads, unwrapping casts that keep every value unchanged.
fn column_of(expr: &Expr, resolve: &dyn Fn(&str) -> Option<PushColumn>) -> Option<PushColumn> {
    match expr {
        Expr::Column(column) => resolve(&column.name),
        Expr::Cast(cast) => {
            value_preserving(column_of(&cast.expr, resolve)?, cast.field.data_type())
        }
        Expr::TryCast(cast) => {
            value_preserving(column_of(&cast.expr, resolve)?, cast.field.data_type())
        }
        _ => None,
    }
}

fn value_preserving(column: PushColumn, target: &DataType) -> Option<PushColumn> {
    let preserves = match column {
        // A time zone is metadata; the nanosecond count stays the same.
        PushColumn::StartTime => matches!(target, DataType::Timestamp(TimeUnit::Nanosecond, _)),
        PushColumn::TraceId
        | PushColumn::ServiceName
        | PushColumn::SessionId
        | PushColumn::ConversationId => {
            matches!(
                target,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            )
        }
    };
    preserves.then_some(column)
}

/// The literal value of `expr` (folding a cast of a literal), or `None` if it is not one.
fn literal(expr: &Expr) -> Option<ScalarValue> {
    match expr {
        Expr::Literal(value, _) => Some(value.clone()),
        Expr::Cast(cast) => literal(&cast.expr)?.cast_to(cast.field.data_type()).ok(),
        Expr::TryCast(cast) => literal(&cast.expr)?.cast_to(cast.field.data_type()).ok(),
        _ => None,
    }
}

/// `Some(Some(text))` for a string literal, `Some(None)` for NULL, `None` for anything else.
fn string_literal(expr: &Expr) -> Option<Option<String>> {
    match literal(expr)? {
        ScalarValue::Utf8(value) | ScalarValue::LargeUtf8(value) | ScalarValue::Utf8View(value) => {
            Some(value)
        }
        ScalarValue::Null => Some(None),
        _ => None,
    }
}

/// A non-null timestamp literal as nanoseconds since the epoch (UTC instant).
fn timestamp_literal(expr: &Expr) -> Option<i64> {
    match literal(expr)? {
        ScalarValue::TimestampNanosecond(Some(value), _) => Some(value),
        ScalarValue::TimestampMicrosecond(Some(value), _) => value.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(value), _) => value.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(value), _) => value.checked_mul(1_000_000_000),
        _ => None,
    }
}

fn intersect(current: Option<BTreeSet<String>>, new: BTreeSet<String>) -> BTreeSet<String> {
    match current {
        Some(current) => current.intersection(&new).cloned().collect(),
        None => new,
    }
}

fn tighter_lower(a: Bound<i64>, b: Bound<i64>) -> Bound<i64> {
    match (a, b) {
        (Bound::Unbounded, other) | (other, Bound::Unbounded) => other,
        (Bound::Included(x), Bound::Included(y)) => Bound::Included(x.max(y)),
        (Bound::Excluded(x), Bound::Excluded(y)) => Bound::Excluded(x.max(y)),
        (Bound::Included(inc), Bound::Excluded(exc))
        | (Bound::Excluded(exc), Bound::Included(inc)) => {
            if inc > exc {
                Bound::Included(inc)
            } else {
                Bound::Excluded(exc)
            }
        }
    }
}

fn tighter_upper(a: Bound<i64>, b: Bound<i64>) -> Bound<i64> {
    match (a, b) {
        (Bound::Unbounded, other) | (other, Bound::Unbounded) => other,
        (Bound::Included(x), Bound::Included(y)) => Bound::Included(x.min(y)),
        (Bound::Excluded(x), Bound::Excluded(y)) => Bound::Excluded(x.min(y)),
        (Bound::Included(inc), Bound::Excluded(exc))
        | (Bound::Excluded(exc), Bound::Included(inc)) => {
            if inc < exc {
                Bound::Included(inc)
            } else {
                Bound::Excluded(exc)
            }
        }
    }
}

fn time_range_is_empty((lower, upper): (Bound<i64>, Bound<i64>)) -> bool {
    match (lower, upper) {
        (Bound::Included(low), Bound::Included(high)) => low > high,
        (Bound::Included(low), Bound::Excluded(high))
        | (Bound::Excluded(low), Bound::Included(high)) => low >= high,
        (Bound::Excluded(low), Bound::Excluded(high)) => {
            low >= high || low.checked_add(1) == Some(high)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn resolve(name: &str) -> Option<PushColumn> {
        match name {
            "trace_id" => Some(PushColumn::TraceId),
            "service_name" => Some(PushColumn::ServiceName),
            "start_time" => Some(PushColumn::StartTime),
            _ => None,
        }
    }

    fn ts(value: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(
            Some(value),
            Some("UTC".into()),
        ))
    }

    fn filters(exprs: &[Expr]) -> ScanFilters {
        for expr in exprs {
            assert!(is_exact(expr, &resolve), "{expr} should push down");
        }
        ScanFilters::from_exprs(exprs, &resolve)
    }

    #[test]
    fn time_comparisons_become_bounds_and_intersect() {
        let pushed = filters(&[
            col("start_time").gt_eq(ts(10)),
            ts(20).gt(col("start_time")),
        ]);
        assert_eq!(
            pushed.start_time,
            (Bound::Included(10), Bound::Excluded(20))
        );
        let pushed = filters(&[
            col("start_time").between(ts(5), ts(7)),
            col("start_time").gt(ts(5)),
        ]);
        assert_eq!(pushed.start_time, (Bound::Excluded(5), Bound::Included(7)));
        let millis = lit(ScalarValue::TimestampMillisecond(Some(3), None));
        assert_eq!(
            filters(&[col("start_time").eq(millis)]).start_time,
            (Bound::Included(3_000_000), Bound::Included(3_000_000))
        );
    }

    #[test]
    fn empty_time_ranges_match_nothing() {
        assert!(
            filters(&[col("start_time").gt(ts(10)), col("start_time").lt(ts(11))])
                .matches_nothing()
        );
        assert!(
            !filters(&[
                col("start_time").gt_eq(ts(10)),
                col("start_time").lt(ts(11))
            ])
            .matches_nothing()
        );
        assert!(
            filters(&[col("start_time").gt(ts(10)), col("start_time").lt(ts(5))]).matches_nothing()
        );
    }

    #[test]
    fn id_and_service_sets_union_under_or_and_intersect_under_and() {
        let a = "a".repeat(32);
        let b = "b".repeat(32);
        let pushed = filters(&[
            col("trace_id")
                .eq(lit(a.clone()))
                .or(col("trace_id").eq(lit(b.clone()))),
            col("trace_id").in_list(vec![lit(b.clone()), lit("c".repeat(32))], false),
        ]);
        assert_eq!(pushed.trace_ids, Some(BTreeSet::from([b.clone()])));
        let pushed =
            filters(&[col("service_name").in_list(vec![lit("cart"), lit("checkout")], false)]);
        assert_eq!(pushed.services.map(|set| set.len()), Some(2));
        assert_eq!(
            pushed_display(&[
                col("trace_id").eq(lit(a.clone())),
                col("service_name").eq(lit("x"))
            ]),
            format!("trace_ids=[{a}], services=[x]")
        );
    }

    fn pushed_display(exprs: &[Expr]) -> String {
        filters(exprs).to_string()
    }

    #[test]
    fn uppercase_trace_ids_are_dropped_because_they_cannot_match() {
        let pushed = filters(&[col("trace_id").eq(lit("AB".repeat(16)))]);
        assert_eq!(pushed.trace_ids, Some(BTreeSet::new()));
        assert!(pushed.matches_nothing());
    }

    #[test]
    fn other_shapes_are_not_pushed() {
        for expr in [
            col("trace_id").not_eq(lit("x")),
            col("span_name").eq(lit("x")),
            col("trace_id")
                .eq(lit("x"))
                .or(col("service_name").eq(lit("y"))),
            col("start_time").gt(ts(1)).or(col("start_time").lt(ts(0))),
            col("service_name").in_list(vec![lit("x")], true),
            col("start_time").not_between(ts(1), ts(2)),
            col("service_name").is_null(),
            col("trace_id").eq(col("span_id")),
            col("service_name").lt(lit("x")),
        ] {
            assert!(!is_exact(&expr, &resolve), "{expr} must not push down");
        }
    }
}
