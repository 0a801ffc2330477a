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
//!   session and conversation indexes (only the row runs of those keys are read);
//! - an OR mixing `session_id` and `conversation_id` equalities / IN lists, which becomes one
//!   session-or-conversation disjunction of the request (the union of both indexes' runs).
//!
//! OR of equalities matters as much as IN: DataFusion's simplifier rewrites `col IN (a, b, c)`
//! with at most three items (`THRESHOLD_INLINE_INLIST`) into `col = a OR col = b OR col = c`
//! before the table is asked, and `col IN (a)` into `col = a`. A `NULL` operand of an OR
//! (`col IN ('a', NULL)` becomes `col = 'a' OR NULL`) can never make a row pass, so it is the
//! empty set. `NOT IN` becomes `<>` comparisons (or a negated list), which never push down.
//!
//! [`scan_request`] is the whole translation (filters -> engine request) for any table whose
//! columns a resolver maps to [`PushColumn`]s; [`pushdown_support`] is the matching answer to
//! `supports_filters_pushdown`.
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
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use engine::{ScanRequest, TraceId};

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
    /// `session_id IN sessions OR conversation_id IN conversations`.
    Either(BTreeSet<String>, BTreeSet<String>),
}

/// The conjunction of every translated filter of one scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanFilters {
    pub(crate) start_time: (Bound<i64>, Bound<i64>),
    pub(crate) trace_ids: Option<BTreeSet<String>>,
    pub(crate) services: Option<BTreeSet<String>>,
    pub(crate) sessions: Option<BTreeSet<String>>,
    pub(crate) conversations: Option<BTreeSet<String>>,
    /// Each `(sessions, conversations)`: a row's session is in the first or its conversation in
    /// the second.
    pub(crate) sessions_or_conversations: Vec<(BTreeSet<String>, BTreeSet<String>)>,
}

impl Default for ScanFilters {
    fn default() -> Self {
        ScanFilters {
            start_time: (Bound::Unbounded, Bound::Unbounded),
            trace_ids: None,
            services: None,
            sessions: None,
            conversations: None,
            sessions_or_conversations: Vec::new(),
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
            Predicate::Either(sessions, conversations) => {
                self.sessions_or_conversations
                    .push((sessions, conversations));
            }
        }
    }

    /// The engine request for these predicates, reading `projection` (span schema indices;
    /// `None` for every column) and stopping each unit after `limit` rows.
    pub(crate) fn to_request(
        &self,
        projection: Option<Vec<usize>>,
        limit: Option<usize>,
    ) -> ScanRequest {
        let list = |set: &Option<BTreeSet<String>>| {
            set.as_ref().map(|values| values.iter().cloned().collect())
        };
        ScanRequest {
            start_time: self.start_time,
            trace_ids: self.trace_ids.as_ref().map(stored_trace_ids),
            service_names: list(&self.services),
            session_ids: list(&self.sessions),
            conversation_ids: list(&self.conversations),
            sessions_or_conversations: self
                .sessions_or_conversations
                .iter()
                .map(|(sessions, conversations)| {
                    (
                        sessions.iter().cloned().collect(),
                        conversations.iter().cloned().collect(),
                    )
                })
                .collect(),
            projection,
            limit,
            row_filter: None,
            family: engine::RowFamily::Spans,
        }
    }

    /// True when no row can match; see [`matches_nothing`].
    #[cfg(test)]
    fn matches_nothing(&self) -> bool {
        matches_nothing(&self.to_request(None, None))
    }
}

impl fmt::Display for ScanFilters {
    /// As [`describe`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&describe(&self.to_request(None, None)))
    }
}

/// The trace ids of SQL literals that can match a stored id: stored ids are lowercase hex, so
/// a literal that is not exactly 32 lowercase hex digits matches nothing and is left out.
fn stored_trace_ids(literals: &BTreeSet<String>) -> Vec<TraceId> {
    literals
        .iter()
        .filter_map(|literal| {
            let id = TraceId::from_hex(literal).ok()?;
            (id.to_string() == *literal).then_some(id)
        })
        .collect()
}

/// True when `request` can match no row (an empty id, service or key set, or an empty time
/// range), so a scan need not ask the engine at all.
pub(crate) fn matches_nothing(request: &ScanRequest) -> bool {
    let empty = |values: &Option<Vec<String>>| values.as_ref().is_some_and(Vec::is_empty);
    request.trace_ids.as_ref().is_some_and(Vec::is_empty)
        || empty(&request.service_names)
        || empty(&request.session_ids)
        || empty(&request.conversation_ids)
        || request
            .sessions_or_conversations
            .iter()
            .any(|(sessions, conversations)| sessions.is_empty() && conversations.is_empty())
        || time_range_is_empty(request.start_time)
}

/// The predicates of `request` as `EXPLAIN` shows them: `trace_ids=[…], start_time=[…],
/// services=[…], sessions=[…], conversations=[…], (sessions=[…] OR conversations=[…])`, and
/// `rows=logs` / `rows=spans+logs` for a scan of log rows, only the parts that are set (empty
/// when there are none). Projection and limit are not included.
pub(crate) fn describe(request: &ScanRequest) -> String {
    let mut parts = Vec::new();
    if let Some(ids) = &request.trace_ids {
        let ids: Vec<String> = ids.iter().map(TraceId::to_string).collect();
        parts.push(format!("trace_ids=[{}]", ids.join(", ")));
    }
    if request.start_time != (Bound::Unbounded, Bound::Unbounded) {
        let lower = match request.start_time.0 {
            Bound::Included(value) => format!("[{}", format_timestamp_ns(value)),
            Bound::Excluded(value) => format!("({}", format_timestamp_ns(value)),
            Bound::Unbounded => "(-inf".to_owned(),
        };
        let upper = match request.start_time.1 {
            Bound::Included(value) => format!("{}]", format_timestamp_ns(value)),
            Bound::Excluded(value) => format!("{})", format_timestamp_ns(value)),
            Bound::Unbounded => "+inf)".to_owned(),
        };
        parts.push(format!("start_time={lower}, {upper}"));
    }
    if let Some(names) = &request.service_names {
        parts.push(format!("services=[{}]", names.join(", ")));
    }
    if let Some(ids) = &request.session_ids {
        parts.push(format!("sessions=[{}]", ids.join(", ")));
    }
    if let Some(ids) = &request.conversation_ids {
        parts.push(format!("conversations=[{}]", ids.join(", ")));
    }
    for (sessions, conversations) in &request.sessions_or_conversations {
        parts.push(format!(
            "(sessions=[{}] OR conversations=[{}])",
            sessions.join(", "),
            conversations.join(", ")
        ));
    }
    match request.family {
        engine::RowFamily::Spans => {}
        engine::RowFamily::Logs => parts.push("rows=logs".to_owned()),
        engine::RowFamily::All => parts.push("rows=spans+logs".to_owned()),
    }
    parts.join(", ")
}

/// True when `expr` translates completely into an engine predicate.
pub(crate) fn is_exact(expr: &Expr, resolve: &dyn Fn(&str) -> Option<PushColumn>) -> bool {
    translate(expr, resolve).is_some()
}

/// The answer to `TableProvider::supports_filters_pushdown` for a table whose columns
/// `resolve` maps: `Exact` for every filter [`scan_request`] translates, `Unsupported` for the
/// rest (which DataFusion then evaluates above the scan).
pub(crate) fn pushdown_support(
    filters: &[&Expr],
    resolve: &dyn Fn(&str) -> Option<PushColumn>,
) -> Vec<TableProviderFilterPushDown> {
    filters
        .iter()
        .map(|filter| {
            if is_exact(filter, resolve) {
                TableProviderFilterPushDown::Exact
            } else {
                TableProviderFilterPushDown::Unsupported
            }
        })
        .collect()
}

/// The engine request for the filters DataFusion passes to `TableProvider::scan` (those
/// [`pushdown_support`] answered `Exact`), on a table whose columns `resolve` maps to the
/// span columns the engine filters on. Projection is every column and there is no limit; set
/// them on the result; [`describe`] shows it for `EXPLAIN`, [`matches_nothing`] says when no
/// engine call is needed.
pub(crate) fn scan_request(
    filters: &[Expr],
    resolve: &dyn Fn(&str) -> Option<PushColumn>,
) -> ScanRequest {
    ScanFilters::from_exprs(filters, resolve).to_request(None, None)
}

/// The union of two translated filters under OR, when it is one engine predicate.
fn union(left: Predicate, right: Predicate) -> Option<Predicate> {
    use Predicate::{Conversations, Either, Services, Sessions, TraceIds};
    let keys = |predicate: Predicate| match predicate {
        Sessions(ids) => Some((ids, BTreeSet::new())),
        Conversations(ids) => Some((BTreeSet::new(), ids)),
        Either(sessions, conversations) => Some((sessions, conversations)),
        _ => None,
    };
    Some(match (left, right) {
        (TraceIds(mut a), TraceIds(b)) => {
            a.extend(b);
            TraceIds(a)
        }
        (Services(mut a), Services(b)) => {
            a.extend(b);
            Services(a)
        }
        (Sessions(mut a), Sessions(b)) => {
            a.extend(b);
            Sessions(a)
        }
        (Conversations(mut a), Conversations(b)) => {
            a.extend(b);
            Conversations(a)
        }
        (left, right) => {
            let (mut sessions, mut conversations) = keys(left)?;
            let (more_sessions, more_conversations) = keys(right)?;
            sessions.extend(more_sessions);
            conversations.extend(more_conversations);
            Either(sessions, conversations)
        }
    })
}

/// True for a literal that can never make a filter pass (NULL or false).
fn never_true(expr: &Expr) -> bool {
    matches!(
        literal(expr),
        Some(ScalarValue::Null | ScalarValue::Boolean(None | Some(false)))
    )
}

fn translate(expr: &Expr, resolve: &dyn Fn(&str) -> Option<PushColumn>) -> Option<Predicate> {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::Or => {
                // A NULL or false operand adds no row (`col IN ('a', NULL)` becomes
                // `col = 'a' OR NULL`).
                if never_true(right) {
                    return translate(left, resolve);
                }
                if never_true(left) {
                    return translate(right, resolve);
                }
                // Only unions of key or service sets stay exact under OR.
                union(translate(left, resolve)?, translate(right, resolve)?)
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
            "session_id" => Some(PushColumn::SessionId),
            "conversation_id" => Some(PushColumn::ConversationId),
            _ => None,
        }
    }

    fn set(values: &[&str]) -> BTreeSet<String> {
        values.iter().map(|value| (*value).to_owned()).collect()
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
    fn session_and_conversation_ors_push_down_like_in_lists() {
        // `session_id IN ('a', 'b')` reaches the table as this OR (DataFusion inlines IN lists
        // of up to three items).
        let pushed = filters(&[col("session_id")
            .eq(lit("a"))
            .or(col("session_id").eq(lit("b")))]);
        assert_eq!(pushed.sessions, Some(set(&["a", "b"])));
        let pushed = filters(&[col("conversation_id")
            .eq(lit("x"))
            .or(col("conversation_id").in_list(vec![lit("y"), lit("z")], false))]);
        assert_eq!(pushed.conversations, Some(set(&["x", "y", "z"])));
        // `IN ('a', NULL)` becomes `= 'a' OR NULL`: the NULL adds no row.
        let pushed = filters(&[col("session_id").eq(lit("a")).or(lit(ScalarValue::Null))]);
        assert_eq!(pushed.sessions, Some(set(&["a"])));
        // A mix of the two keys is one disjunction; two of them must both hold.
        let pushed = filters(&[
            col("session_id")
                .eq(lit("a"))
                .or(col("conversation_id").eq(lit("x")))
                .or(col("session_id").eq(lit("b"))),
            col("conversation_id")
                .eq(lit("y"))
                .or(col("session_id").eq(lit("c"))),
            col("session_id").eq(lit("a")),
        ]);
        assert_eq!(pushed.sessions, Some(set(&["a"])));
        assert_eq!(
            pushed.sessions_or_conversations,
            vec![(set(&["a", "b"]), set(&["x"])), (set(&["c"]), set(&["y"]))]
        );
        assert_eq!(
            pushed.to_string(),
            "sessions=[a], (sessions=[a, b] OR conversations=[x]), \
             (sessions=[c] OR conversations=[y])"
        );
        let request = scan_request(
            &[col("session_id")
                .eq(lit("a"))
                .or(col("conversation_id").eq(lit("x")))],
            &resolve,
        );
        assert_eq!(
            request.sessions_or_conversations,
            vec![(vec!["a".to_owned()], vec!["x".to_owned()])]
        );
        assert_eq!(request.session_ids, None);
        // Disjoint session sets under AND match nothing.
        assert!(
            filters(&[
                col("session_id").eq(lit("a")),
                col("session_id").eq(lit("b"))
            ])
            .matches_nothing()
        );
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
            col("session_id").not_eq(lit("a")),
            col("session_id").in_list(vec![lit("a"), lit("b")], true),
            col("session_id")
                .not_eq(lit("a"))
                .and(col("session_id").not_eq(lit("b"))),
            col("session_id")
                .eq(lit("a"))
                .or(col("trace_id").eq(lit("x"))),
            col("session_id")
                .eq(lit("a"))
                .or(col("span_name").eq(lit("x"))),
            col("conversation_id")
                .eq(lit("a"))
                .or(col("start_time").gt(ts(1))),
            col("session_id").is_null(),
            col("session_id").eq(lit(ScalarValue::Null)),
        ] {
            assert!(!is_exact(&expr, &resolve), "{expr} must not push down");
        }
    }
}
