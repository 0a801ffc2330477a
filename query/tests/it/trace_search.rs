//! `query::trace_search`: Jaeger's find-traces, services, operations, summaries and
//! dependencies over a small hand-built store (some spans sealed into segments, the rest in the
//! memtable, so both scan paths are exercised).

use std::borrow::Cow;

use engine::{Engine, EventRecord, LinkRecord, SpanBatchBuilder, SpanId, SpanRecord, TraceId};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as OtlpSpan};
use query::trace_search::{
    self, Dependency, FoundTrace, Operation, ServiceSummary, TraceSearch, TraceSummary,
};
use tempfile::TempDir;

/// 2024-05-01T00:00:00Z in ns; span times below are offsets from it.
const BASE: i64 = 1_714_521_600_000_000_000;
/// Duration of a span unless a test sets one.
const DEFAULT_DURATION: i64 = 10;

fn trace_id(trace: u8) -> TraceId {
    TraceId([trace; 16])
}

fn hex(trace: u8) -> String {
    trace_id(trace).to_string()
}

type Pairs = Vec<(&'static str, String)>;

/// One span, owned, turned into an engine row by [`Store::new`].
#[derive(Clone, Default)]
struct Span {
    trace: u8,
    id: u8,
    parent: Option<u8>,
    service: Option<&'static str>,
    name: &'static str,
    kind: i32,
    /// ns after [`BASE`].
    start: i64,
    duration: i64,
    error: bool,
    attributes: Pairs,
    resource: Pairs,
    scope: Pairs,
    events: Vec<Pairs>,
    links: Vec<Pairs>,
}

fn span(trace: u8, id: u8, service: &'static str, name: &'static str, start: i64) -> Span {
    Span {
        trace,
        id,
        service: Some(service),
        name,
        start,
        duration: DEFAULT_DURATION,
        ..Span::default()
    }
}

impl Span {
    fn parent(mut self, parent: u8) -> Self {
        self.parent = Some(parent);
        self
    }
    fn no_service(mut self) -> Self {
        self.service = None;
        self
    }
    fn kind(mut self, kind: i32) -> Self {
        self.kind = kind;
        self
    }
    fn duration(mut self, duration: i64) -> Self {
        self.duration = duration;
        self
    }
    fn error(mut self) -> Self {
        self.error = true;
        self
    }
    fn attribute(mut self, key: &'static str, value: &str) -> Self {
        self.attributes.push((key, value.to_owned()));
        self
    }
    fn resource(mut self, key: &'static str, value: &str) -> Self {
        self.resource.push((key, value.to_owned()));
        self
    }
    fn scope(mut self, key: &'static str, value: &str) -> Self {
        self.scope.push((key, value.to_owned()));
        self
    }
    fn event(mut self, attributes: &[(&'static str, &str)]) -> Self {
        self.events.push(owned(attributes));
        self
    }
    fn link(mut self, attributes: &[(&'static str, &str)]) -> Self {
        self.links.push(owned(attributes));
        self
    }

    fn append_to(&self, builder: &mut SpanBatchBuilder) {
        let events: Vec<EventRecord<'_>> = self
            .events
            .iter()
            .map(|attributes| EventRecord {
                time_unix_nano: BASE + self.start,
                name: "event",
                attributes: pairs(attributes),
                dropped_attributes_count: 0,
            })
            .collect();
        let links: Vec<LinkRecord<'_>> = self
            .links
            .iter()
            .map(|attributes| LinkRecord {
                trace_id: trace_id(0xee),
                span_id: SpanId([0xee; 8]),
                trace_state: "",
                flags: 0,
                attributes: pairs(attributes),
                dropped_attributes_count: 0,
            })
            .collect();
        let (attributes, resource, scope) = (
            pairs(&self.attributes),
            pairs(&self.resource),
            pairs(&self.scope),
        );
        builder.append(&SpanRecord {
            trace_id: trace_id(self.trace),
            span_id: SpanId([self.id; 8]),
            parent_span_id: self.parent.map(|parent| SpanId([parent; 8])),
            name: self.name,
            kind: self.kind,
            start_time_unix_nano: BASE + self.start,
            end_time_unix_nano: BASE + self.start + self.duration,
            status_code: if self.error { 2 } else { 1 },
            service_name: self.service,
            attributes: &attributes,
            resource_attributes: &resource,
            scope_attributes: &scope,
            events: &events,
            links: &links,
            ..SpanRecord::default()
        });
    }
}

fn pairs(pairs: &Pairs) -> Vec<(&'static str, Cow<'_, str>)> {
    pairs
        .iter()
        .map(|(key, value)| (*key, Cow::Borrowed(value.as_str())))
        .collect()
}

fn owned(attributes: &[(&'static str, &str)]) -> Pairs {
    attributes
        .iter()
        .map(|(key, value)| (*key, (*value).to_owned()))
        .collect()
}

struct Store {
    // Dropped first: the engine closes before its directory goes away.
    engine: Engine,
    _dir: TempDir,
}

impl Store {
    /// Each of `sealed` becomes one segment; `memtable` stays in the memtable.
    fn new(sealed: &[&[Span]], memtable: &[Span]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(
            dir.path(),
            engine::Options::default().with_background_sealing(false),
        )
        .unwrap();
        for spans in sealed {
            write(&engine, spans);
            engine.seal().unwrap();
        }
        write(&engine, memtable);
        assert_eq!(engine.stats().segments, sealed.len());
        Store { engine, _dir: dir }
    }

    fn find(&self, search: &TraceSearch) -> Vec<String> {
        self.found(search)
            .into_iter()
            .map(|found| found.trace_id.to_string())
            .collect()
    }

    fn found(&self, search: &TraceSearch) -> Vec<FoundTrace> {
        trace_search::find_traces(&self.engine, search).unwrap()
    }
}

fn write(engine: &Engine, spans: &[Span]) {
    if spans.is_empty() {
        return;
    }
    let mut builder = SpanBatchBuilder::new();
    for span in spans {
        span.append_to(&mut builder);
    }
    engine.write(builder.finish()).unwrap();
}

fn search() -> TraceSearch {
    TraceSearch {
        depth: 100,
        ..TraceSearch::default()
    }
}

fn with_attributes(pairs: &[(&str, &str)]) -> TraceSearch {
    TraceSearch {
        attributes: pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
        ..search()
    }
}

fn hexes(traces: &[u8]) -> Vec<String> {
    traces.iter().map(|trace| hex(*trace)).collect()
}

#[test]
fn an_attribute_matches_in_each_of_the_five_places() {
    // Trace n holds `place = <name>` only in place n; every span carries decoys elsewhere.
    let decoys = |span: Span| {
        span.attribute("decoy", "span")
            .resource("service.name", "svc")
            .scope("decoy", "scope")
            .event(&[("decoy", "event")])
            .link(&[("decoy", "link")])
    };
    let store = Store::new(
        &[&[
            decoys(span(1, 1, "svc", "op", 10)).attribute("place", "span"),
            decoys(span(2, 1, "svc", "op", 20)).resource("place", "resource"),
        ]],
        &[
            decoys(span(3, 1, "svc", "op", 30)).scope("place", "scope"),
            // The match is in the second event / link of the span.
            decoys(span(4, 1, "svc", "op", 40)).event(&[("other", "x"), ("place", "event")]),
            decoys(span(5, 1, "svc", "op", 50)).link(&[("place", "link")]),
        ],
    );
    for (trace, place) in [
        (1, "span"),
        (2, "resource"),
        (3, "scope"),
        (4, "event"),
        (5, "link"),
    ] {
        assert_eq!(
            store.find(&with_attributes(&[("place", place)])),
            hexes(&[trace]),
            "{place}"
        );
    }
    // Key and value must both match, on the same entry.
    assert!(
        store
            .find(&with_attributes(&[("place", "other")]))
            .is_empty()
    );
    assert!(
        store
            .find(&with_attributes(&[("other", "event")]))
            .is_empty()
    );
    assert!(
        store
            .find(&with_attributes(&[("place", "Span")]))
            .is_empty()
    );
    // The decoy key is everywhere: every trace, newest first.
    assert_eq!(
        store.find(&with_attributes(&[("decoy", "link")])),
        hexes(&[5, 4, 3, 2, 1])
    );
}

#[test]
fn keys_may_match_in_different_places_but_only_on_one_span() {
    let store = Store::new(
        &[],
        &[
            // Trace 1: both keys on one span, in its attributes and an event.
            span(1, 1, "svc", "op", 10)
                .attribute("a", "1")
                .event(&[("b", "2")]),
            // Trace 2: the keys on two different spans of the trace.
            span(2, 1, "svc", "op", 20).attribute("a", "1"),
            span(2, 2, "svc", "op", 21).parent(1).resource("b", "2"),
            // Trace 3: right keys, one wrong value.
            span(3, 1, "svc", "op", 30)
                .attribute("a", "1")
                .scope("b", "3"),
            // Trace 4: both keys in resource and link.
            span(4, 1, "svc", "op", 40)
                .resource("a", "1")
                .link(&[("b", "2")]),
        ],
    );
    assert_eq!(
        store.find(&with_attributes(&[("a", "1"), ("b", "2")])),
        hexes(&[4, 1])
    );
    assert_eq!(
        store.find(&with_attributes(&[("a", "1")])),
        hexes(&[4, 3, 2, 1])
    );
    assert_eq!(
        store.find(&with_attributes(&[("b", "2")])),
        hexes(&[4, 2, 1])
    );
}

fn key_value(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

#[test]
fn typed_attributes_match_by_their_string_forms() {
    // Through ingest, so the string forms are the ones real data gets.
    let otlp_span = OtlpSpan {
        trace_id: trace_id(7).0.to_vec(),
        span_id: vec![1; 8],
        name: "typed".to_owned(),
        start_time_unix_nano: 1_000,
        end_time_unix_nano: 2_000,
        attributes: vec![
            key_value("int", Value::IntValue(123)),
            key_value("negative", Value::IntValue(-5)),
            key_value("double", Value::DoubleValue(72.5)),
            key_value("whole_double", Value::DoubleValue(3.0)),
            key_value("bool", Value::BoolValue(true)),
            key_value("bytes", Value::BytesValue(vec![1, 2, 3])),
        ],
        ..OtlpSpan::default()
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![key_value("service.name", Value::StringValue("t".into()))],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![otlp_span],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    };
    let store = Store::new(&[], &[]);
    store
        .engine
        .write(ingest::to_span_batch(&request).unwrap().batch)
        .unwrap();
    for (key, value) in [
        ("int", "123"),
        ("negative", "-5"),
        ("double", "72.5"),
        ("whole_double", "3"),
        ("bool", "true"),
        ("bytes", "AQID"),
    ] {
        assert_eq!(
            store.find(&with_attributes(&[(key, value)])),
            hexes(&[7]),
            "{key} = {value}"
        );
    }
    for (key, value) in [
        ("int", "123.0"),
        ("double", "72.50"),
        ("whole_double", "3.0"),
        ("bool", "True"),
        ("bool", "1"),
        ("bytes", "010203"),
    ] {
        assert!(
            store.find(&with_attributes(&[(key, value)])).is_empty(),
            "{key} = {value}"
        );
    }
    // All at once, plus the service.
    let all = TraceSearch {
        service_name: Some("t".to_owned()),
        ..with_attributes(&[("int", "123"), ("double", "72.5"), ("bool", "true")])
    };
    assert_eq!(store.find(&all), hexes(&[7]));
}

#[test]
fn time_bounds_are_inclusive_and_found_traces_are_whole() {
    let store = Store::new(
        &[&[
            span(1, 1, "front", "op", 100),
            // Outside the window: still part of trace 1's extent and ranking.
            span(1, 2, "back", "op", 500).parent(1).duration(70),
            span(1, 3, "back", "op", 50).parent(1).duration(5),
        ]],
        &[
            span(2, 1, "front", "op", 200),
            span(3, 1, "front", "op", 99),
            span(4, 1, "front", "op", 301),
            span(5, 1, "front", "op", 300),
        ],
    );
    let window = TraceSearch {
        start_time_min: Some(BASE + 100),
        start_time_max: Some(BASE + 300),
        ..search()
    };
    assert_eq!(
        store.found(&window),
        vec![
            FoundTrace {
                trace_id: trace_id(1),
                start_unix_nanos: BASE + 50,
                end_unix_nanos: BASE + 570,
                latest_start_unix_nanos: BASE + 500,
            },
            FoundTrace {
                trace_id: trace_id(5),
                start_unix_nanos: BASE + 300,
                end_unix_nanos: BASE + 310,
                latest_start_unix_nanos: BASE + 300,
            },
            FoundTrace {
                trace_id: trace_id(2),
                start_unix_nanos: BASE + 200,
                end_unix_nanos: BASE + 210,
                latest_start_unix_nanos: BASE + 200,
            },
        ]
    );
    // One-sided bounds.
    let from = TraceSearch {
        start_time_min: Some(BASE + 300),
        ..search()
    };
    assert_eq!(store.find(&from), hexes(&[1, 4, 5]));
    let until = TraceSearch {
        start_time_max: Some(BASE + 99),
        ..search()
    };
    assert_eq!(store.find(&until), hexes(&[1, 3]));
    // Window plus service: trace 1 matches only through its `back` span at 500.
    let back = TraceSearch {
        service_name: Some("back".to_owned()),
        start_time_min: Some(BASE + 400),
        ..search()
    };
    assert_eq!(store.find(&back), hexes(&[1]));
    let empty = TraceSearch {
        start_time_min: Some(BASE + 302),
        start_time_max: Some(BASE + 499),
        ..search()
    };
    assert!(store.find(&empty).is_empty());
}

#[test]
fn duration_bounds_are_inclusive() {
    let store = Store::new(
        &[&[
            span(1, 1, "svc", "op", 10).duration(10),
            span(2, 1, "svc", "op", 20).duration(20),
        ]],
        &[
            span(3, 1, "svc", "op", 30).duration(30),
            span(4, 1, "svc", "op", 40).duration(40),
        ],
    );
    let between = TraceSearch {
        duration_min: Some(20),
        duration_max: Some(30),
        ..search()
    };
    assert_eq!(store.find(&between), hexes(&[3, 2]));
    let at_least = TraceSearch {
        duration_min: Some(30),
        ..search()
    };
    assert_eq!(store.find(&at_least), hexes(&[4, 3]));
    let at_most = TraceSearch {
        duration_max: Some(10),
        ..search()
    };
    assert_eq!(store.find(&at_most), hexes(&[1]));
    let none = TraceSearch {
        duration_min: Some(41),
        ..search()
    };
    assert!(store.find(&none).is_empty());
}

#[test]
fn service_and_operation_must_hold_on_the_same_span() {
    let store = Store::new(
        &[&[
            span(1, 1, "a", "x", 10),
            span(2, 1, "a", "y", 20),
            span(3, 1, "b", "x", 30),
        ]],
        &[
            span(4, 1, "a", "z", 40),
            span(4, 2, "b", "w", 41).parent(1),
            span(5, 1, "b", "x", 50).no_service(),
        ],
    );
    let find = |service: Option<&str>, operation: Option<&str>| {
        store.find(&TraceSearch {
            service_name: service.map(str::to_owned),
            operation_name: operation.map(str::to_owned),
            ..search()
        })
    };
    assert_eq!(find(Some("a"), Some("x")), hexes(&[1]));
    assert_eq!(find(None, Some("x")), hexes(&[5, 3, 1]));
    assert_eq!(find(Some("a"), None), hexes(&[4, 2, 1]));
    assert_eq!(find(Some("b"), None), hexes(&[4, 3]));
    assert!(find(Some("a"), Some("w")).is_empty());
    assert!(find(Some("b"), Some("y")).is_empty());
    assert!(find(Some("nope"), None).is_empty());
    // No conditions at all: every trace.
    assert_eq!(find(None, None), hexes(&[5, 4, 3, 2, 1]));
}

#[test]
fn newest_first_by_the_latest_start_of_the_whole_trace_then_depth() {
    // Every trace has a matching `front` span at 10 * n; trace 1 also has the newest span of
    // the store (a `back` span at 1000) and trace 2 one at 60, tying with trace 6.
    let mut sealed = Vec::new();
    let mut memtable = Vec::new();
    for trace in 1..=6u8 {
        let spans = if trace <= 3 {
            &mut sealed
        } else {
            &mut memtable
        };
        spans.push(span(trace, 1, "front", "op", 10 * i64::from(trace)));
    }
    memtable.push(span(1, 2, "back", "op", 1000).parent(1));
    sealed.push(span(2, 2, "back", "op", 60).parent(1));
    let store = Store::new(&[&sealed], &memtable);
    let front = |depth: usize| TraceSearch {
        service_name: Some("front".to_owned()),
        depth,
        ..TraceSearch::default()
    };
    assert_eq!(store.find(&front(100)), hexes(&[1, 2, 6, 5, 4, 3]));
    assert_eq!(store.find(&front(6)), hexes(&[1, 2, 6, 5, 4, 3]));
    // Fewer than the candidates: the whole-trace ranking still decides.
    assert_eq!(store.find(&front(3)), hexes(&[1, 2, 6]));
    assert_eq!(store.find(&front(2)), hexes(&[1, 2]));
    assert_eq!(store.find(&front(1)), hexes(&[1]));
    assert!(store.find(&front(0)).is_empty());
    let first = &store.found(&front(1))[0];
    assert_eq!(
        (
            first.start_unix_nanos,
            first.end_unix_nanos,
            first.latest_start_unix_nanos
        ),
        (BASE + 10, BASE + 1010, BASE + 1000)
    );
    // The same with a time window that excludes the `back` spans.
    let window = TraceSearch {
        start_time_max: Some(BASE + 50),
        ..front(2)
    };
    assert_eq!(store.find(&window), hexes(&[1, 2]));
}

#[test]
fn services_are_distinct_and_sorted() {
    let store = Store::new(
        &[
            &[span(1, 1, "b", "op", 1), span(1, 2, "a", "op", 2)],
            &[span(2, 1, "c", "op", 3), span(2, 2, "a", "op", 4)],
        ],
        &[
            span(3, 1, "b", "op", 5),
            span(3, 2, "x", "op", 6).no_service(),
            span(3, 3, "", "op", 7),
        ],
    );
    let services = trace_search::services(&store.engine).unwrap();
    // Spans without service.name are left out; an empty one is a value seen.
    assert_eq!(services, ["", "a", "b", "c"]);
    let empty = Store::new(&[], &[]);
    assert!(trace_search::services(&empty.engine).unwrap().is_empty());
}

#[test]
fn operations_list_names_with_their_kinds() {
    let store = Store::new(
        &[&[
            span(1, 1, "a", "get", 1).kind(2),
            span(1, 2, "a", "get", 2).kind(3),
            span(1, 3, "b", "other", 3).kind(2),
        ]],
        &[
            span(2, 1, "a", "get", 4).kind(2),
            span(2, 2, "a", "init", 5).kind(0),
            span(2, 3, "a", "put", 6).kind(1),
            span(2, 4, "a", "send", 7).kind(4),
            span(2, 5, "a", "receive", 8).kind(5),
        ],
    );
    let operation = |name: &str, span_kind: &str| Operation {
        name: name.to_owned(),
        span_kind: span_kind.to_owned(),
    };
    let all = vec![
        operation("get", "client"),
        operation("get", "server"),
        operation("init", ""),
        operation("put", "internal"),
        operation("receive", "consumer"),
        operation("send", "producer"),
    ];
    assert_eq!(
        trace_search::operations(&store.engine, "a", None).unwrap(),
        all
    );
    assert_eq!(
        trace_search::operations(&store.engine, "a", Some("")).unwrap(),
        all
    );
    assert_eq!(
        trace_search::operations(&store.engine, "a", Some("server")).unwrap(),
        vec![operation("get", "server")]
    );
    assert_eq!(
        trace_search::operations(&store.engine, "a", Some("unspecified")).unwrap(),
        vec![operation("init", "")]
    );
    assert_eq!(
        trace_search::operations(&store.engine, "b", None).unwrap(),
        vec![operation("other", "server")]
    );
    assert!(
        trace_search::operations(&store.engine, "a", Some("consumerx"))
            .unwrap()
            .is_empty()
    );
    assert!(
        trace_search::operations(&store.engine, "nope", None)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn summaries_count_spans_errors_orphans_and_services() {
    let store = Store::new(
        &[&[
            // Trace 1: the root, a later parentless span, a child sent twice, an orphan.
            span(1, 1, "front", "root", 10),
            span(1, 2, "back", "child", 20).parent(1).error(),
            span(1, 2, "back", "child", 20).parent(1),
            span(1, 3, "front", "late-root", 30).duration(100),
        ]],
        &[
            span(1, 4, "front", "orphan", 5).parent(9).error(),
            span(1, 5, "x", "anonymous", 40).parent(3).no_service(),
            // Trace 2: no span without a parent.
            span(2, 1, "front", "lost", 50).parent(7),
            span(2, 2, "back", "lost-child", 60).parent(1),
            // Trace 3: two roots starting together; the first written wins.
            span(3, 1, "first", "first", 70),
            span(3, 2, "second", "second", 70),
        ],
    );
    let summaries = trace_search::summarize(
        &store.engine,
        &[
            trace_id(3),
            trace_id(9),
            trace_id(1),
            trace_id(2),
            trace_id(3),
        ],
    )
    .unwrap();
    let service = |name: &str, span_count, error_span_count| ServiceSummary {
        name: name.to_owned(),
        span_count,
        error_span_count,
    };
    assert_eq!(
        summaries,
        vec![
            TraceSummary {
                trace_id: trace_id(3),
                root_service_name: "first".to_owned(),
                root_operation_name: "first".to_owned(),
                min_start_unix_nanos: BASE + 70,
                max_end_unix_nanos: BASE + 80,
                span_count: 2,
                error_span_count: 0,
                orphan_span_count: 0,
                services: vec![service("first", 1, 0), service("second", 1, 0)],
            },
            TraceSummary {
                trace_id: trace_id(1),
                root_service_name: "front".to_owned(),
                root_operation_name: "root".to_owned(),
                min_start_unix_nanos: BASE + 5,
                max_end_unix_nanos: BASE + 130,
                span_count: 6,
                error_span_count: 2,
                orphan_span_count: 1,
                services: vec![
                    service("", 1, 0),
                    service("back", 2, 1),
                    service("front", 3, 1),
                ],
            },
            TraceSummary {
                trace_id: trace_id(2),
                root_service_name: String::new(),
                root_operation_name: String::new(),
                min_start_unix_nanos: BASE + 50,
                max_end_unix_nanos: BASE + 70,
                span_count: 2,
                error_span_count: 0,
                orphan_span_count: 1,
                services: vec![service("back", 1, 0), service("front", 1, 0)],
            },
        ]
    );
    assert!(
        trace_search::summarize(&store.engine, &[])
            .unwrap()
            .is_empty()
    );
}

#[test]
fn dependencies_count_cross_service_calls_within_a_trace() {
    let store = Store::new(
        &[&[
            // Trace 1 (at 0..10): front -> back twice, back -> db once, back -> back ignored.
            span(1, 1, "front", "op", 0),
            span(1, 2, "back", "op", 1).parent(1),
            span(1, 3, "db", "op", 2).parent(2),
            span(1, 4, "back", "op", 3).parent(1),
            span(1, 5, "back", "op", 4).parent(2),
        ]],
        &[
            // Trace 2 (at 100): front -> back, with the same span ids as trace 1.
            span(2, 1, "front", "op", 100),
            span(2, 2, "back", "op", 101).parent(1),
            // Trace 3 (at 200): its parent span id exists only in other traces.
            span(3, 7, "cache", "op", 200).parent(1),
            // Trace 4 (at 300): a child without a service.
            span(4, 1, "front", "op", 300),
            span(4, 2, "x", "op", 301).parent(1).no_service(),
        ],
    );
    let dependency = |parent: &str, child: &str, call_count| Dependency {
        parent: parent.to_owned(),
        child: child.to_owned(),
        call_count,
    };
    assert_eq!(
        trace_search::dependencies(&store.engine, None, None).unwrap(),
        vec![
            dependency("back", "db", 1),
            dependency("front", "", 1),
            dependency("front", "back", 3),
        ]
    );
    assert_eq!(
        trace_search::dependencies(&store.engine, Some(BASE), Some(BASE + 99)).unwrap(),
        vec![dependency("back", "db", 1), dependency("front", "back", 2)]
    );
    // Inclusive bounds; trace 2 only.
    assert_eq!(
        trace_search::dependencies(&store.engine, Some(BASE + 100), Some(BASE + 101)).unwrap(),
        vec![dependency("front", "back", 1)]
    );
    // The parent outside the range: nothing to join with.
    assert!(
        trace_search::dependencies(&store.engine, Some(BASE + 101), Some(BASE + 250))
            .unwrap()
            .is_empty()
    );
}
