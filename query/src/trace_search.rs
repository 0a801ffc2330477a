//! Trace search over the engine with the semantics of Jaeger's v2 remote-storage API
//! (`jaeger.storage.v2`): find traces, services, operations, trace summaries, dependencies.
//! The gRPC service itself lives in `api`; this module only reads the engine.
//!
//! Everything here is synchronous and reads through [`Engine::plan_scan`] one batch at a time,
//! projecting only the columns it needs; async callers run it in `spawn_blocking`.
//!
//! [`find_traces`] runs in up to three scans:
//! 1. the spans that may match (service and start-time bounds pushed into the engine), checked
//!    batch by batch on the Arrow arrays (attribute maps through their offsets, no per-row
//!    allocation); each trace with a matching span becomes a candidate with a lower bound on
//!    its latest span start (the latest start of its matching spans);
//! 2. only when there are more candidates than `depth`: the `trace_id` and `start_time` of the
//!    spans starting at or after `threshold`, the `depth`-th largest lower bound. Every trace
//!    that can rank in the first `depth` has its latest span at or after `threshold` (at least
//!    `depth` traces already reach it), so this gives the exact latest start of every trace
//!    that can win, and the winners are exact;
//! 3. every span of the winners, by trace id (the engine's trace index), for their start, end
//!    and latest start over the whole trace, including spans outside the search window.
//!
//! Ranking is by the latest span start of the whole trace, newest first, ties by trace id.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, ListArray, MapArray, PrimitiveArray, RecordBatch, StringArray,
};
use arrow::datatypes::{Int64Type, TimestampNanosecondType};
use engine::schema::{column_index, columns};
use engine::{Engine, ScanRequest, TraceId};

use crate::error::{Error, Result};

/// What [`find_traces`] looks for. Every given condition must hold on one and the same span;
/// a trace is found when at least one of its spans matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceSearch {
    /// The span's `service.name` equals this.
    pub service_name: Option<String>,
    /// The span's name equals this.
    pub operation_name: Option<String>,
    /// Each (key, string form) is present with exactly that value in the span's attributes,
    /// its resource's or scope's attributes, or the attributes of any of its events or links.
    /// Different keys may be found in different places of the span.
    pub attributes: Vec<(String, String)>,
    /// Span start, ns since the epoch, inclusive.
    pub start_time_min: Option<i64>,
    /// Span start, ns since the epoch, inclusive.
    pub start_time_max: Option<i64>,
    /// Span duration in ns, inclusive. `Some(0)` is a real bound; Jaeger's "0 = unset" is the
    /// caller's to turn into `None`.
    pub duration_min: Option<i64>,
    /// Span duration in ns, inclusive.
    pub duration_max: Option<i64>,
    /// At most this many traces are returned; 0 returns none (Jaeger's "<= 0 means 100" is the
    /// caller's to apply).
    pub depth: usize,
}

/// A trace [`find_traces`] found, with its extent over all its spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundTrace {
    /// The trace.
    pub trace_id: TraceId,
    /// Earliest span start of the trace (ns since the epoch).
    pub start_unix_nanos: i64,
    /// Latest span end of the trace.
    pub end_unix_nanos: i64,
    /// Latest span start of the trace (what "newest first" orders by).
    pub latest_start_unix_nanos: i64,
}

/// One operation of a service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Operation {
    /// Span name.
    pub name: String,
    /// Lower-case span kind (`server`, `client`, `producer`, `consumer`, `internal`), `""` for
    /// unspecified, or the stored decimal number of a kind this version does not know.
    pub span_kind: String,
}

/// Span and error counts of one service within a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSummary {
    /// `service.name`, `""` for spans without one.
    pub name: String,
    /// Spans (rows, so duplicate span ids each count).
    pub span_count: u32,
    /// Spans with status error.
    pub error_span_count: u32,
}

/// Jaeger's summary of one trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSummary {
    /// The trace.
    pub trace_id: TraceId,
    /// Service of the root span (`""` when there is no root, or it has no service).
    pub root_service_name: String,
    /// Name of the root span (`""` when there is no root).
    pub root_operation_name: String,
    /// Earliest span start.
    pub min_start_unix_nanos: i64,
    /// Latest span end.
    pub max_end_unix_nanos: i64,
    /// Spans (rows).
    pub span_count: u32,
    /// Spans with status error.
    pub error_span_count: u32,
    /// Spans whose parent span id is set but names no span of the trace.
    pub orphan_span_count: u32,
    /// Per service, sorted by name.
    pub services: Vec<ServiceSummary>,
}

/// Calls from one service to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// Service of the parent span.
    pub parent: String,
    /// Service of the child span.
    pub child: String,
    /// Child spans whose parent is a span of the parent service.
    pub call_count: u64,
}

/// Finds the traces with at least one span matching `search`, newest first by the latest span
/// start of the whole trace (ties by trace id), at most `search.depth`.
///
/// Cost: one scan of the spans in the service and time bounds (only the columns the
/// conditions need), one of the spans starting at or after the `depth`-th newest candidate
/// when there are more candidates than `depth`, and one index lookup of the winners.
pub fn find_traces(engine: &Engine, search: &TraceSearch) -> Result<Vec<FoundTrace>> {
    if search.depth == 0 {
        return Ok(Vec::new());
    }
    let mut candidates = matching_traces(engine, search)?;
    let candidate_count = candidates.len();
    if candidates.len() > search.depth {
        candidates = rank_candidates(engine, candidates, search.depth)?;
    }
    let winners = candidates
        .into_keys()
        .map(|id| stored_trace_id(&id))
        .collect::<Result<Vec<_>>>()?;
    let mut found = trace_extents(engine, winners)?;
    found.sort_by(|a, b| {
        b.latest_start_unix_nanos
            .cmp(&a.latest_start_unix_nanos)
            .then_with(|| a.trace_id.cmp(&b.trace_id))
    });
    found.truncate(search.depth);
    tracing::debug!(
        candidates = candidate_count,
        found = found.len(),
        "trace search"
    );
    Ok(found)
}

/// The distinct `service.name` values of all stored spans, sorted (spans without one are
/// left out; an empty `service.name` is listed as `""`).
pub fn services(engine: &Engine) -> Result<Vec<String>> {
    let request = ScanRequest {
        projection: Some(projection(&[columns::SERVICE_NAME])),
        ..ScanRequest::default()
    };
    let mut found: BTreeSet<String> = BTreeSet::new();
    scan_each(engine, &request, |batch| {
        let names = strings(batch, columns::SERVICE_NAME)?;
        let mut previous: Option<&str> = None;
        for row in 0..batch.num_rows() {
            if names.is_null(row) {
                continue;
            }
            let name = names.value(row);
            // Rows of a service come in runs; skip the set lookup inside a run.
            if previous == Some(name) {
                continue;
            }
            previous = Some(name);
            if !found.contains(name) {
                found.insert(name.to_owned());
            }
        }
        Ok(())
    })?;
    Ok(found.into_iter().collect())
}

/// The distinct (span name, span kind) pairs of `service`, sorted by name then kind.
///
/// `span_kind` `None` or `Some("")` means every kind; otherwise only spans of that kind, given
/// as [`Operation::span_kind`] spells it (`"unspecified"` is accepted for `""` too).
pub fn operations(
    engine: &Engine,
    service: &str,
    span_kind: Option<&str>,
) -> Result<Vec<Operation>> {
    let wanted_kind = match span_kind {
        None | Some("") => None,
        Some(kind) => Some(kind),
    };
    let request = ScanRequest {
        service_names: Some(vec![service.to_owned()]),
        projection: Some(projection(&[columns::SPAN_NAME, columns::SPAN_KIND])),
        ..ScanRequest::default()
    };
    // name -> stored kinds.
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    scan_each(engine, &request, |batch| {
        let names = strings(batch, columns::SPAN_NAME)?;
        let kinds = strings(batch, columns::SPAN_KIND)?;
        for row in 0..batch.num_rows() {
            let kind = kinds.value(row);
            if let Some(wanted) = wanted_kind
                && wanted != kind
                && wanted != jaeger_span_kind(kind)
            {
                continue;
            }
            let name = names.value(row);
            let kinds_of_name = match found.get_mut(name) {
                Some(kinds_of_name) => kinds_of_name,
                None => found.entry(name.to_owned()).or_default(),
            };
            if !kinds_of_name.contains(kind) {
                kinds_of_name.insert(kind.to_owned());
            }
        }
        Ok(())
    })?;
    let mut operations: Vec<Operation> = Vec::new();
    for (name, kinds) in found {
        for kind in kinds {
            operations.push(Operation {
                name: name.clone(),
                span_kind: jaeger_span_kind(&kind).to_owned(),
            });
        }
    }
    // "unspecified" sorts differently from its Jaeger spelling "".
    operations.sort();
    Ok(operations)
}

/// Summaries of the given traces, in the order given (an id given twice is summarized once,
/// at its first place); ids with no stored span are skipped.
pub fn summarize(engine: &Engine, trace_ids: &[TraceId]) -> Result<Vec<TraceSummary>> {
    let mut order: Vec<TraceId> = Vec::with_capacity(trace_ids.len());
    let mut seen: HashSet<TraceId> = HashSet::with_capacity(trace_ids.len());
    for &id in trace_ids {
        if seen.insert(id) {
            order.push(id);
        }
    }
    if order.is_empty() {
        return Ok(Vec::new());
    }
    let request = ScanRequest {
        trace_ids: Some(order.clone()),
        projection: Some(projection(&[
            columns::TRACE_ID,
            columns::SPAN_ID,
            columns::PARENT_SPAN_ID,
            columns::SPAN_NAME,
            columns::START_TIME,
            columns::END_TIME,
            columns::STATUS_CODE,
            columns::SERVICE_NAME,
        ])),
        ..ScanRequest::default()
    };
    let mut traces: HashMap<String, SummaryBuilder> = HashMap::with_capacity(order.len());
    scan_each(engine, &request, |batch| {
        let trace_column = strings(batch, columns::TRACE_ID)?;
        let span_ids = strings(batch, columns::SPAN_ID)?;
        let parents = strings(batch, columns::PARENT_SPAN_ID)?;
        let names = strings(batch, columns::SPAN_NAME)?;
        let starts = timestamps(batch, columns::START_TIME)?;
        let ends = timestamps(batch, columns::END_TIME)?;
        let statuses = strings(batch, columns::STATUS_CODE)?;
        let services = strings(batch, columns::SERVICE_NAME)?;
        for row in 0..batch.num_rows() {
            let trace_id = trace_column.value(row);
            let builder = match traces.get_mut(trace_id) {
                Some(builder) => builder,
                None => traces.entry(trace_id.to_owned()).or_default(),
            };
            builder.add(SummaryRow {
                span_id: span_ids.value(row),
                parent_span_id: optional_value(parents, row).filter(|parent| !parent.is_empty()),
                name: names.value(row),
                start: starts.value(row),
                end: ends.value(row),
                error: statuses.value(row) == "error",
                service: optional_value(services, row).unwrap_or(""),
            });
        }
        Ok(())
    })?;
    let mut summaries = Vec::with_capacity(traces.len());
    for trace_id in order {
        if let Some(builder) = traces.remove(&trace_id.to_string()) {
            summaries.push(builder.finish(trace_id));
        }
    }
    Ok(summaries)
}

/// Service-to-service calls among the spans that start in `[start, end]` (either bound may be
/// open): for every span whose parent span is in the same trace, also starts in the range, and
/// has a different `service.name`, one call from the parent's service to the child's. Spans
/// without a service count as service `""`. Sorted by (parent, child).
///
/// Reads four columns of every span in the range and keeps 32 bytes per span (64 for a span
/// with a parent) in memory.
pub fn dependencies(
    engine: &Engine,
    start_unix_nanos: Option<i64>,
    end_unix_nanos: Option<i64>,
) -> Result<Vec<Dependency>> {
    let request = ScanRequest {
        start_time: time_bounds(start_unix_nanos, end_unix_nanos),
        projection: Some(projection(&[
            columns::TRACE_ID,
            columns::SPAN_ID,
            columns::PARENT_SPAN_ID,
            columns::SERVICE_NAME,
        ])),
        ..ScanRequest::default()
    };
    let mut service_names: Vec<String> = Vec::new();
    let mut service_numbers: HashMap<String, u32> = HashMap::new();
    // (trace, span, service number) of every span, and (trace, parent span, service number)
    // of every span with a parent; joined by sorting, not hashing: ids are client-chosen.
    let mut spans: Vec<(u128, u64, u32)> = Vec::new();
    let mut children: Vec<(u128, u64, u32)> = Vec::new();
    scan_each(engine, &request, |batch| {
        let trace_column = strings(batch, columns::TRACE_ID)?;
        let span_ids = strings(batch, columns::SPAN_ID)?;
        let parents = strings(batch, columns::PARENT_SPAN_ID)?;
        let services = strings(batch, columns::SERVICE_NAME)?;
        spans.reserve(batch.num_rows());
        let mut previous: Option<(&str, u32)> = None;
        for row in 0..batch.num_rows() {
            let name = optional_value(services, row).unwrap_or("");
            let service = match previous {
                Some((previous_name, number)) if previous_name == name => number,
                _ => {
                    let number = match service_numbers.get(name) {
                        Some(number) => *number,
                        None => {
                            let number = u32::try_from(service_names.len()).map_err(|_| {
                                Error::Internal("more than u32::MAX distinct services".to_owned())
                            })?;
                            service_names.push(name.to_owned());
                            service_numbers.insert(name.to_owned(), number);
                            number
                        }
                    };
                    previous = Some((name, number));
                    number
                }
            };
            let trace = trace_number(trace_column.value(row))?;
            spans.push((trace, span_number(span_ids.value(row))?, service));
            if let Some(parent) = optional_value(parents, row).filter(|parent| !parent.is_empty()) {
                children.push((trace, span_number(parent)?, service));
            }
        }
        Ok(())
    })?;
    // Stable: of rows sharing a span id, the first scanned stays.
    spans.sort_by_key(|&(trace, span, _)| (trace, span));
    spans.dedup_by_key(|&mut (trace, span, _)| (trace, span));
    children.sort_unstable();
    let mut calls: HashMap<(u32, u32), u64> = HashMap::new();
    let mut parents = spans.iter().peekable();
    for (trace, parent, child_service) in children {
        while parents
            .next_if(|&&(t, s, _)| (t, s) < (trace, parent))
            .is_some()
        {}
        if let Some(&&(t, s, parent_service)) = parents.peek()
            && (t, s) == (trace, parent)
            && parent_service != child_service
        {
            *calls.entry((parent_service, child_service)).or_default() += 1;
        }
    }
    let mut dependencies: Vec<Dependency> = calls
        .into_iter()
        .map(|((parent, child), call_count)| Dependency {
            parent: service_names[parent as usize].clone(),
            child: service_names[child as usize].clone(),
            call_count,
        })
        .collect();
    dependencies.sort_by(|a, b| (&a.parent, &a.child).cmp(&(&b.parent, &b.child)));
    Ok(dependencies)
}

// --- find_traces ---------------------------------------------------------------------------

/// Scan 1: trace id -> latest start among the trace's matching spans.
fn matching_traces(engine: &Engine, search: &TraceSearch) -> Result<HashMap<String, i64>> {
    let mut names = vec![columns::TRACE_ID, columns::START_TIME];
    if search.operation_name.is_some() {
        names.push(columns::SPAN_NAME);
    }
    let check_duration = search.duration_min.is_some() || search.duration_max.is_some();
    if check_duration {
        names.push(columns::DURATION_NS);
    }
    if !search.attributes.is_empty() {
        names.extend(AttributePlaces::COLUMNS);
    }
    let request = ScanRequest {
        start_time: time_bounds(search.start_time_min, search.start_time_max),
        service_names: search.service_name.clone().map(|name| vec![name]),
        projection: Some(projection(&names)),
        ..ScanRequest::default()
    };
    let duration_min = search.duration_min.unwrap_or(i64::MIN);
    let duration_max = search.duration_max.unwrap_or(i64::MAX);
    let mut candidates: HashMap<String, i64> = HashMap::new();
    scan_each(engine, &request, |batch| {
        let trace_ids = strings(batch, columns::TRACE_ID)?;
        let starts = timestamps(batch, columns::START_TIME)?;
        let span_names = match &search.operation_name {
            Some(operation) => Some((strings(batch, columns::SPAN_NAME)?, operation.as_str())),
            None => None,
        };
        let durations = if check_duration {
            Some(int64s(batch, columns::DURATION_NS)?)
        } else {
            None
        };
        let places = if search.attributes.is_empty() {
            None
        } else {
            Some(AttributePlaces::new(batch)?)
        };
        for row in 0..batch.num_rows() {
            if let Some((span_names, operation)) = span_names
                && span_names.value(row) != operation
            {
                continue;
            }
            if let Some(durations) = durations {
                let duration = durations.value(row);
                if duration < duration_min || duration > duration_max {
                    continue;
                }
            }
            if let Some(places) = &places
                && !search
                    .attributes
                    .iter()
                    .all(|(key, value)| places.contains(row, key, value))
            {
                continue;
            }
            let trace_id = trace_ids.value(row);
            let start = starts.value(row);
            match candidates.get_mut(trace_id) {
                Some(latest) => *latest = (*latest).max(start),
                None => {
                    candidates.insert(trace_id.to_owned(), start);
                }
            }
        }
        Ok(())
    })?;
    Ok(candidates)
}

/// Scan 2: the `depth` candidates with the latest span starts over their whole traces.
///
/// `candidates` maps each trace to a lower bound of its latest start; more than `depth` of them.
fn rank_candidates(
    engine: &Engine,
    mut candidates: HashMap<String, i64>,
    depth: usize,
) -> Result<HashMap<String, i64>> {
    debug_assert!(depth > 0 && candidates.len() > depth);
    let mut bounds: Vec<i64> = candidates.values().copied().collect();
    let (_, threshold, _) = bounds.select_nth_unstable_by(depth - 1, |a, b| b.cmp(a));
    let threshold = *threshold;
    let request = ScanRequest {
        start_time: (Bound::Included(threshold), Bound::Unbounded),
        projection: Some(projection(&[columns::TRACE_ID, columns::START_TIME])),
        ..ScanRequest::default()
    };
    scan_each(engine, &request, |batch| {
        let trace_ids = strings(batch, columns::TRACE_ID)?;
        let starts = timestamps(batch, columns::START_TIME)?;
        for row in 0..batch.num_rows() {
            if let Some(latest) = candidates.get_mut(trace_ids.value(row)) {
                *latest = (*latest).max(starts.value(row));
            }
        }
        Ok(())
    })?;
    let mut ranked: Vec<(String, i64)> = candidates.into_iter().collect();
    let newest_first = |a: &(String, i64), b: &(String, i64)| b.1.cmp(&a.1).then(a.0.cmp(&b.0));
    ranked.select_nth_unstable_by(depth - 1, newest_first);
    ranked.truncate(depth);
    Ok(ranked.into_iter().collect())
}

/// Scan 3: start, end and latest start of each trace over all its spans; traces without spans
/// (deleted since scan 1) are left out.
fn trace_extents(engine: &Engine, trace_ids: Vec<TraceId>) -> Result<Vec<FoundTrace>> {
    if trace_ids.is_empty() {
        return Ok(Vec::new());
    }
    let request = ScanRequest {
        trace_ids: Some(trace_ids),
        projection: Some(projection(&[
            columns::TRACE_ID,
            columns::START_TIME,
            columns::END_TIME,
        ])),
        ..ScanRequest::default()
    };
    let mut extents: HashMap<String, FoundTrace> = HashMap::new();
    scan_each(engine, &request, |batch| {
        let trace_ids = strings(batch, columns::TRACE_ID)?;
        let starts = timestamps(batch, columns::START_TIME)?;
        let ends = timestamps(batch, columns::END_TIME)?;
        for row in 0..batch.num_rows() {
            let trace_id = trace_ids.value(row);
            let (start, end) = (starts.value(row), ends.value(row));
            match extents.get_mut(trace_id) {
                Some(extent) => {
                    extent.start_unix_nanos = extent.start_unix_nanos.min(start);
                    extent.end_unix_nanos = extent.end_unix_nanos.max(end);
                    extent.latest_start_unix_nanos = extent.latest_start_unix_nanos.max(start);
                }
                None => {
                    extents.insert(
                        trace_id.to_owned(),
                        FoundTrace {
                            trace_id: stored_trace_id(trace_id)?,
                            start_unix_nanos: start,
                            end_unix_nanos: end,
                            latest_start_unix_nanos: start,
                        },
                    );
                }
            }
        }
        Ok(())
    })?;
    Ok(extents.into_values().collect())
}

/// The attribute string forms of one batch, everywhere a search key may be found.
struct AttributePlaces<'a> {
    /// Span, resource and scope attributes.
    maps: [MapView<'a>; 3],
    /// Event and link attributes.
    nested: [NestedMaps<'a>; 2],
}

impl<'a> AttributePlaces<'a> {
    const COLUMNS: [&'static str; 5] = [
        columns::ATTRIBUTES,
        columns::RESOURCE_ATTRIBUTES,
        columns::SCOPE_ATTRIBUTES,
        columns::EVENTS,
        columns::LINKS,
    ];

    fn new(batch: &'a RecordBatch) -> Result<Self> {
        Ok(AttributePlaces {
            maps: [
                MapView::new(maps(batch, columns::ATTRIBUTES)?)?,
                MapView::new(maps(batch, columns::RESOURCE_ATTRIBUTES)?)?,
                MapView::new(maps(batch, columns::SCOPE_ATTRIBUTES)?)?,
            ],
            nested: [
                NestedMaps::new(lists(batch, columns::EVENTS)?, columns::event::ATTRIBUTES)?,
                NestedMaps::new(lists(batch, columns::LINKS)?, columns::link::ATTRIBUTES)?,
            ],
        })
    }

    /// True when `key` has the string form `value` somewhere on span `row`.
    fn contains(&self, row: usize, key: &str, value: &str) -> bool {
        self.maps.iter().any(|map| map.contains(row, key, value))
            || self
                .nested
                .iter()
                .any(|list| list.contains(row, key, value))
    }
}

/// A `Map<Utf8, Utf8>` array read through its offsets.
#[derive(Clone, Copy)]
struct MapView<'a> {
    offsets: &'a [i32],
    keys: &'a StringArray,
    values: &'a StringArray,
}

impl<'a> MapView<'a> {
    fn new(map: &'a MapArray) -> Result<Self> {
        let keys = map
            .keys()
            .as_string_opt::<i32>()
            .ok_or_else(|| unexpected_type("attribute map keys"))?;
        let values = map
            .values()
            .as_string_opt::<i32>()
            .ok_or_else(|| unexpected_type("attribute map values"))?;
        Ok(MapView {
            offsets: map.value_offsets(),
            keys,
            values,
        })
    }

    /// True when map `index` holds `key` with the value `value`.
    fn contains(&self, index: usize, key: &str, value: &str) -> bool {
        // Arrow validated the offsets: non-negative and increasing.
        let start = self.offsets[index] as usize;
        let end = self.offsets[index + 1] as usize;
        (start..end).any(|entry| {
            self.keys.value(entry) == key
                && self.values.is_valid(entry)
                && self.values.value(entry) == value
        })
    }
}

/// The attribute maps inside a list of structs (span events or links).
struct NestedMaps<'a> {
    offsets: &'a [i32],
    maps: MapView<'a>,
}

impl<'a> NestedMaps<'a> {
    fn new(list: &'a ListArray, field: &str) -> Result<Self> {
        let items = list
            .values()
            .as_struct_opt()
            .ok_or_else(|| unexpected_type("event or link items"))?;
        let map = items
            .column_by_name(field)
            .and_then(|column| column.as_map_opt())
            .ok_or_else(|| unexpected_type("event or link attributes"))?;
        Ok(NestedMaps {
            offsets: list.value_offsets(),
            maps: MapView::new(map)?,
        })
    }

    /// True when any item of list `row` has `key` with the value `value`.
    fn contains(&self, row: usize, key: &str, value: &str) -> bool {
        // Arrow validated the offsets: non-negative and increasing.
        let start = self.offsets[row] as usize;
        let end = self.offsets[row + 1] as usize;
        (start..end).any(|item| self.maps.contains(item, key, value))
    }
}

// --- summarize -----------------------------------------------------------------------------

struct SummaryRow<'a> {
    span_id: &'a str,
    parent_span_id: Option<&'a str>,
    name: &'a str,
    start: i64,
    end: i64,
    error: bool,
    service: &'a str,
}

#[derive(Default)]
struct SummaryBuilder {
    span_ids: HashSet<String>,
    parents: Vec<String>,
    /// (start, service, name) of the earliest span without a parent so far.
    root: Option<(i64, String, String)>,
    min_start: Option<i64>,
    max_end: Option<i64>,
    span_count: u32,
    error_span_count: u32,
    /// service -> (spans, error spans)
    services: BTreeMap<String, (u32, u32)>,
}

impl SummaryBuilder {
    fn add(&mut self, row: SummaryRow<'_>) {
        if !self.span_ids.contains(row.span_id) {
            self.span_ids.insert(row.span_id.to_owned());
        }
        match row.parent_span_id {
            Some(parent) => self.parents.push(parent.to_owned()),
            // Ties keep the first seen.
            None if self.root.as_ref().is_none_or(|root| row.start < root.0) => {
                self.root = Some((row.start, row.service.to_owned(), row.name.to_owned()));
            }
            None => {}
        }
        self.min_start = Some(self.min_start.map_or(row.start, |min| min.min(row.start)));
        self.max_end = Some(self.max_end.map_or(row.end, |max| max.max(row.end)));
        let error = u32::from(row.error);
        self.span_count = self.span_count.saturating_add(1);
        self.error_span_count = self.error_span_count.saturating_add(error);
        let counts = match self.services.get_mut(row.service) {
            Some(counts) => counts,
            None => self.services.entry(row.service.to_owned()).or_default(),
        };
        counts.0 = counts.0.saturating_add(1);
        counts.1 = counts.1.saturating_add(error);
    }

    fn finish(self, trace_id: TraceId) -> TraceSummary {
        let orphans = self
            .parents
            .iter()
            .filter(|parent| !self.span_ids.contains(parent.as_str()))
            .count();
        let (root_service_name, root_operation_name) = match self.root {
            Some((_, service, name)) => (service, name),
            None => (String::new(), String::new()),
        };
        TraceSummary {
            trace_id,
            root_service_name,
            root_operation_name,
            min_start_unix_nanos: self.min_start.unwrap_or(0),
            max_end_unix_nanos: self.max_end.unwrap_or(0),
            span_count: self.span_count,
            error_span_count: self.error_span_count,
            orphan_span_count: u32::try_from(orphans).unwrap_or(u32::MAX),
            services: self
                .services
                .into_iter()
                .map(|(name, (span_count, error_span_count))| ServiceSummary {
                    name,
                    span_count,
                    error_span_count,
                })
                .collect(),
        }
    }
}

// --- shared --------------------------------------------------------------------------------

/// The Jaeger spelling of a stored span kind: `""` for unspecified, else unchanged.
fn jaeger_span_kind(stored: &str) -> &str {
    if stored == "unspecified" { "" } else { stored }
}

fn time_bounds(min: Option<i64>, max: Option<i64>) -> (Bound<i64>, Bound<i64>) {
    (
        min.map_or(Bound::Unbounded, Bound::Included),
        max.map_or(Bound::Unbounded, Bound::Included),
    )
}

fn projection(names: &[&str]) -> Vec<usize> {
    names.iter().map(|name| column_index(name)).collect()
}

/// Runs `request` and hands each batch to `visit`, one at a time (nothing is collected).
fn scan_each(
    engine: &Engine,
    request: &ScanRequest,
    mut visit: impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<()> {
    let plan = engine.plan_scan(request).map_err(engine_error)?;
    for unit in plan.into_units() {
        for batch in unit.execute().map_err(engine_error)? {
            visit(&batch.map_err(engine_error)?)?;
        }
    }
    Ok(())
}

fn engine_error(error: engine::Error) -> Error {
    Error::Engine(Arc::new(error))
}

fn unexpected_type(what: &str) -> Error {
    Error::Internal(format!("{what} do not have the span schema's type"))
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| Error::Internal(format!("scan returned no {name} column")))
}

fn strings<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    column(batch, name)?
        .as_string_opt::<i32>()
        .ok_or_else(|| unexpected_type(name))
}

fn timestamps<'a>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a PrimitiveArray<TimestampNanosecondType>> {
    column(batch, name)?
        .as_primitive_opt::<TimestampNanosecondType>()
        .ok_or_else(|| unexpected_type(name))
}

fn int64s<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a PrimitiveArray<Int64Type>> {
    column(batch, name)?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| unexpected_type(name))
}

fn maps<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a MapArray> {
    column(batch, name)?
        .as_map_opt()
        .ok_or_else(|| unexpected_type(name))
}

fn lists<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ListArray> {
    column(batch, name)?
        .as_list_opt::<i32>()
        .ok_or_else(|| unexpected_type(name))
}

fn optional_value(array: &StringArray, row: usize) -> Option<&str> {
    array.is_valid(row).then(|| array.value(row))
}

fn stored_trace_id(hex: &str) -> Result<TraceId> {
    TraceId::from_hex(hex)
        .map_err(|_| Error::Internal(format!("stored trace id {hex:?} is not 32 hex digits")))
}

fn trace_number(hex: &str) -> Result<u128> {
    parse_hex(hex, 32)
        .ok_or_else(|| Error::Internal(format!("stored trace id {hex:?} is not 32 hex digits")))
}

fn span_number(hex: &str) -> Result<u64> {
    // 16 digits fit in 64 bits, so the narrowing keeps every bit.
    parse_hex(hex, 16)
        .map(|bits| bits as u64)
        .ok_or_else(|| Error::Internal(format!("stored span id {hex:?} is not 16 hex digits")))
}

/// The value of exactly `digits` (at most 32) hex digits of either case.
fn parse_hex(text: &str, digits: usize) -> Option<u128> {
    debug_assert!(digits <= 32);
    if text.len() != digits {
        return None;
    }
    let mut value: u128 = 0;
    for byte in text.bytes() {
        let nibble = match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'f' => byte - b'a' + 10,
            b'A'..=b'F' => byte - b'A' + 10,
            _ => return None,
        };
        value = (value << 4) | u128::from(nibble);
    }
    Some(value)
}
