//! Jaeger v2 remote storage (`../shared/conformance/JAEGER.md`), driven only through tonic
//! clients over the network: Jaeger's storage-integration fixtures written through OTLP Export (5
//! spans a call) and every `queries.json` case through FindTraces and FindTraceIDs; GetServices,
//! GetOperations and GetTraces (left-padded and bad ids, a 10,008-span trace, duplicate span
//! ids); searches without a service; trace summaries, dependencies, capabilities, bound
//! validation and `POST /purge`.
//!
//! The fixture-based tests read `../shared/conformance/jaeger-fixtures` beside the workspace and
//! are skipped, with a line on stderr, where it is absent.
//!
//! Spans are compared as Jaeger's suite compares them: one (resource, scope, span) triple per
//! span, sorted, duplicate span ids removed (except where duplicates are the point), every field
//! compared, attribute lists as maps. An empty resource, scope or status counts as absent, as it
//! does in Jaeger's pdata.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use api::ServerConfig;
use api::jaeger::proto;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status as SpanStatus, TracesData, span::SpanKind,
};
use prost::Message as _;
use proto::capabilities_client::CapabilitiesClient;
use proto::dependency_reader_client::DependencyReaderClient;
use proto::trace_reader_client::TraceReaderClient;
use serde_json::Value;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

use crate::support::TestServer;

const NANOS_PER_SECOND: u64 = 1_000_000_000;
const NANOS_PER_DAY: u64 = 86_400 * NANOS_PER_SECOND;
/// Go's zero `time.Time` (0001-01-01T00:00:00Z) in Unix seconds: Jaeger's "unset" time.
const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;
/// Jaeger's default gRPC receive limit; tonic's client has the same default.
const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Spans per Export call, as in Jaeger's own writer test.
const SPANS_PER_EXPORT: usize = 5;
/// Trace id of example_trace.json.
const EXAMPLE_TRACE_ID: u128 = 0x11;

// ---------------------------------------------------------------------------------------------
// Dates

/// Days since 1970-01-01 of a (proleptic Gregorian) date; H. Hinnant's `days_from_civil`.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day number; the inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn date_string(days: i64) -> String {
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}")
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, the only form queries.json uses.
fn parse_rfc3339(text: &str) -> prost_types::Timestamp {
    fn bad(text: &str) -> ! {
        panic!("not an RFC 3339 UTC time: {text:?}")
    }
    let (date, time) = text.split_once('T').unwrap_or_else(|| bad(text));
    let time = time.strip_suffix('Z').unwrap_or_else(|| bad(text));
    let numbers = |part: &str, separator: char| -> Vec<i64> {
        part.split(separator)
            .map(|number| number.parse().unwrap_or_else(|_| bad(text)))
            .collect()
    };
    let [year, month, day] = numbers(date, '-')[..] else {
        bad(text)
    };
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let [hour, minute, second] = numbers(clock, ':')[..] else {
        bad(text)
    };
    let nanos = if fraction.is_empty() {
        0
    } else {
        let digits = format!("{fraction:0<9}");
        digits[..9].parse().unwrap_or_else(|_| bad(text))
    };
    prost_types::Timestamp {
        seconds: days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second,
        nanos,
    }
}

fn now_nanos() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since_epoch.as_nanos()).expect("nanoseconds fit u64")
}

fn timestamp(unix_nanos: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::try_from(unix_nanos / NANOS_PER_SECOND).expect("seconds fit i64"),
        nanos: i32::try_from(unix_nanos % NANOS_PER_SECOND).expect("nanos fit i32"),
    }
}

fn duration(nanos: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(nanos / NANOS_PER_SECOND).expect("seconds fit i64"),
        nanos: i32::try_from(nanos % NANOS_PER_SECOND).expect("nanos fit i32"),
    }
}

fn go_zero_time() -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: GO_ZERO_TIME_SECONDS,
        nanos: 0,
    }
}

/// The fixture date rewrite: 2017-01-26 becomes yesterday (UTC), 2017-01-25 the day before.
#[derive(Debug, Clone, Copy)]
struct FixtureDates {
    /// Day number (days since 1970-01-01) of yesterday.
    yesterday: i64,
    /// Day number of the day before yesterday.
    day_before: i64,
}

impl FixtureDates {
    fn today_utc() -> Self {
        let today = i64::try_from(now_nanos() / NANOS_PER_DAY).expect("day fits i64");
        FixtureDates {
            yesterday: today - 1,
            day_before: today - 2,
        }
    }

    fn rewrite_query_text(&self, text: &str) -> String {
        text.replace("2017-01-26", &date_string(self.yesterday))
            .replace("2017-01-25", &date_string(self.day_before))
    }

    /// Keeps the time of day; the date becomes yesterday, or the day before when it was
    /// 2017-01-25.
    fn rewrite_time(&self, unix_nanos: u64) -> u64 {
        if unix_nanos == 0 {
            return 0;
        }
        let day = i64::try_from(unix_nanos / NANOS_PER_DAY).expect("day fits i64");
        let new_day = if day == days_from_civil(2017, 1, 25) {
            self.day_before
        } else {
            self.yesterday
        };
        u64::try_from(new_day).expect("a day after 1970") * NANOS_PER_DAY
            + unix_nanos % NANOS_PER_DAY
    }

    fn rewrite_span(&self, span: &mut Span) {
        span.start_time_unix_nano = self.rewrite_time(span.start_time_unix_nano);
        span.end_time_unix_nano = self.rewrite_time(span.end_time_unix_nano);
        for event in &mut span.events {
            event.time_unix_nano = self.rewrite_time(event.time_unix_nano);
        }
    }

    /// Start of yesterday's day before, in Unix nanoseconds.
    fn day_before_start(&self) -> u64 {
        u64::try_from(self.day_before).expect("a day after 1970") * NANOS_PER_DAY
    }
}

// ---------------------------------------------------------------------------------------------
// Spans with their resource and scope

/// One span with its resource and scope: the unit traces are written and compared in.
#[derive(Debug, Clone, PartialEq)]
struct FlatSpan {
    resource: Option<Resource>,
    resource_schema_url: String,
    scope: Option<InstrumentationScope>,
    scope_schema_url: String,
    span: Span,
}

fn flatten(resource_spans: &[ResourceSpans]) -> Vec<FlatSpan> {
    let mut flat = Vec::new();
    for resource in resource_spans {
        for scope in &resource.scope_spans {
            for span in &scope.spans {
                flat.push(FlatSpan {
                    resource: resource.resource.clone(),
                    resource_schema_url: resource.schema_url.clone(),
                    scope: scope.scope.clone(),
                    scope_schema_url: scope.schema_url.clone(),
                    span: span.clone(),
                });
            }
        }
    }
    flat
}

/// OTLP resource spans holding `spans` in order, adjacent spans of one resource and scope
/// grouped together.
fn regroup(spans: &[FlatSpan]) -> Vec<ResourceSpans> {
    let mut grouped: Vec<ResourceSpans> = Vec::new();
    for flat in spans {
        let same_resource = grouped.last().is_some_and(|last| {
            last.resource == flat.resource && last.schema_url == flat.resource_schema_url
        });
        if !same_resource {
            grouped.push(ResourceSpans {
                resource: flat.resource.clone(),
                scope_spans: Vec::new(),
                schema_url: flat.resource_schema_url.clone(),
            });
        }
        let resource = grouped.last_mut().expect("a resource group");
        let same_scope = resource.scope_spans.last().is_some_and(|last| {
            last.scope == flat.scope && last.schema_url == flat.scope_schema_url
        });
        if !same_scope {
            resource.scope_spans.push(ScopeSpans {
                scope: flat.scope.clone(),
                spans: Vec::new(),
                schema_url: flat.scope_schema_url.clone(),
            });
        }
        let scope = resource.scope_spans.last_mut().expect("a scope group");
        scope.spans.push(flat.span.clone());
    }
    grouped
}

fn string_value(value: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(value.to_owned())),
    })
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: string_value(value),
        ..Default::default()
    }
}

/// A span of our own (an internal span unless changed).
fn own_span(trace: u128, id: u64, parent: Option<u64>, name: &str, start: u64, nanos: u64) -> Span {
    Span {
        trace_id: trace.to_be_bytes().to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: parent
            .map(|parent| parent.to_be_bytes().to_vec())
            .unwrap_or_default(),
        name: name.to_owned(),
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + nanos,
        ..Default::default()
    }
}

/// `span` as written by service `service` (with a scope of its own).
fn in_service(service: &str, span: Span) -> FlatSpan {
    FlatSpan {
        resource: Some(Resource {
            attributes: vec![string_attribute("service.name", service)],
            ..Default::default()
        }),
        resource_schema_url: String::new(),
        scope: Some(InstrumentationScope {
            name: "sightline-jaeger-it".to_owned(),
            version: "1.0.0".to_owned(),
            ..Default::default()
        }),
        scope_schema_url: String::new(),
        span,
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison

/// Attributes sorted by key (stable, so repeated keys keep their order), recursively inside
/// key-value lists; arrays keep their order.
fn sort_attributes(attributes: &mut [KeyValue]) {
    for attribute in attributes.iter_mut() {
        if let Some(value) = &mut attribute.value {
            normalize_value(value);
        }
    }
    attributes.sort_by(|a, b| a.key.cmp(&b.key));
}

fn normalize_value(value: &mut AnyValue) {
    match &mut value.value {
        Some(any_value::Value::KvlistValue(list)) => sort_attributes(&mut list.values),
        Some(any_value::Value::ArrayValue(array)) => {
            for value in &mut array.values {
                normalize_value(value);
            }
        }
        _ => {}
    }
}

fn normalize(mut flat: FlatSpan) -> FlatSpan {
    if let Some(resource) = &mut flat.resource {
        sort_attributes(&mut resource.attributes);
    }
    flat.resource = flat
        .resource
        .filter(|resource| *resource != Resource::default());
    if let Some(scope) = &mut flat.scope {
        sort_attributes(&mut scope.attributes);
    }
    flat.scope = flat
        .scope
        .filter(|scope| *scope != InstrumentationScope::default());
    let span = &mut flat.span;
    sort_attributes(&mut span.attributes);
    for event in &mut span.events {
        sort_attributes(&mut event.attributes);
    }
    for link in &mut span.links {
        sort_attributes(&mut link.attributes);
    }
    span.status = span
        .status
        .take()
        .filter(|status| *status != SpanStatus::default());
    flat
}

/// Normalized and sorted by (trace id, span id, everything else); with `dedup`, one span per
/// (trace id, span id).
fn canonical(spans: &[FlatSpan], dedup: bool) -> Vec<FlatSpan> {
    let mut keyed: Vec<(String, FlatSpan)> = spans
        .iter()
        .cloned()
        .map(normalize)
        .map(|flat| (format!("{flat:?}"), flat))
        .collect();
    keyed.sort_by(|(a_debug, a), (b_debug, b)| {
        (&a.span.trace_id, &a.span.span_id, a_debug).cmp(&(
            &b.span.trace_id,
            &b.span.span_id,
            b_debug,
        ))
    });
    if dedup {
        keyed.dedup_by(|(_, a), (_, b)| {
            a.span.trace_id == b.span.trace_id && a.span.span_id == b.span.span_id
        });
    }
    keyed.into_iter().map(|(_, flat)| flat).collect()
}

fn span_key(flat: &FlatSpan) -> String {
    format!(
        "{}/{}",
        hex::encode(&flat.span.trace_id),
        hex::encode(&flat.span.span_id)
    )
}

fn trace_ids(spans: &[FlatSpan]) -> BTreeSet<String> {
    spans
        .iter()
        .map(|flat| hex::encode(&flat.span.trace_id))
        .collect()
}

/// `Err` names the first difference: trace ids, then span ids, then the first field.
fn compare_spans(expected: &[FlatSpan], actual: &[FlatSpan], dedup: bool) -> Result<(), String> {
    let expected = canonical(expected, dedup);
    let actual = canonical(actual, dedup);
    let (expected_ids, actual_ids) = (trace_ids(&expected), trace_ids(&actual));
    if expected_ids != actual_ids {
        return Err(format!(
            "trace ids: expected {expected_ids:?}, got {actual_ids:?}"
        ));
    }
    for (position, (want, got)) in expected.iter().zip(&actual).enumerate() {
        if span_key(want) != span_key(got) {
            return Err(format!(
                "span #{position}: expected span {}, got {} ({} spans expected, {} received)",
                span_key(want),
                span_key(got),
                expected.len(),
                actual.len()
            ));
        }
        if want != got {
            return Err(first_difference(want, got));
        }
    }
    if expected.len() != actual.len() {
        let extra = expected.get(actual.len()).or(actual.get(expected.len()));
        return Err(format!(
            "span count: expected {}, got {} (first unmatched: {})",
            expected.len(),
            actual.len(),
            extra.map(span_key).unwrap_or_default()
        ));
    }
    Ok(())
}

/// The first differing field of two (normalized) spans with the same ids, with both values.
fn first_difference(expected: &FlatSpan, actual: &FlatSpan) -> String {
    fn field(
        name: &'static str,
        want: &dyn Debug,
        got: &dyn Debug,
    ) -> (&'static str, String, String) {
        (name, format!("{want:?}"), format!("{got:?}"))
    }
    let (want, got) = (&expected.span, &actual.span);
    let fields = [
        field("resource", &expected.resource, &actual.resource),
        field(
            "resource schema_url",
            &expected.resource_schema_url,
            &actual.resource_schema_url,
        ),
        field("scope", &expected.scope, &actual.scope),
        field(
            "scope schema_url",
            &expected.scope_schema_url,
            &actual.scope_schema_url,
        ),
        field("trace_state", &want.trace_state, &got.trace_state),
        field(
            "parent_span_id",
            &hex::encode(&want.parent_span_id),
            &hex::encode(&got.parent_span_id),
        ),
        field("flags", &want.flags, &got.flags),
        field("name", &want.name, &got.name),
        field("kind", &want.kind, &got.kind),
        field(
            "start_time_unix_nano",
            &want.start_time_unix_nano,
            &got.start_time_unix_nano,
        ),
        field(
            "end_time_unix_nano",
            &want.end_time_unix_nano,
            &got.end_time_unix_nano,
        ),
        field("attributes", &want.attributes, &got.attributes),
        field(
            "dropped_attributes_count",
            &want.dropped_attributes_count,
            &got.dropped_attributes_count,
        ),
        field("events", &want.events, &got.events),
        field(
            "dropped_events_count",
            &want.dropped_events_count,
            &got.dropped_events_count,
        ),
        field("links", &want.links, &got.links),
        field(
            "dropped_links_count",
            &want.dropped_links_count,
            &got.dropped_links_count,
        ),
        field("status", &want.status, &got.status),
    ];
    let at = span_key(expected);
    for (name, want, got) in fields {
        if want != got {
            return format!("span {at}: {name}:\n  expected {want}\n  got      {got}");
        }
    }
    format!("span {at} differs:\n  expected {expected:?}\n  got      {actual:?}")
}

// ---------------------------------------------------------------------------------------------
// Clients and streams

/// Every message of a server stream, or the status it failed with (at the call or mid-stream).
async fn drain<T>(
    call: Result<tonic::Response<Streaming<T>>, tonic::Status>,
) -> Result<Vec<T>, tonic::Status> {
    let mut stream = call?.into_inner();
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await? {
        messages.push(message);
    }
    Ok(messages)
}

/// One streamed trace: its id and spans.
#[derive(Debug)]
struct StreamedTrace {
    trace_id: Vec<u8>,
    spans: Vec<FlatSpan>,
}

/// Joins streamed chunks into traces, checking the stream contract: no chunk is empty, each
/// holds spans of one trace, and a trace's chunks are consecutive.
fn split_traces(chunks: &[TracesData]) -> Result<Vec<StreamedTrace>, String> {
    let mut traces: Vec<StreamedTrace> = Vec::new();
    for (index, chunk) in chunks.iter().enumerate() {
        let spans = flatten(&chunk.resource_spans);
        let Some(first) = spans.first() else {
            return Err(format!("chunk #{index} holds no spans: {chunk:?}"));
        };
        let trace_id = first.span.trace_id.clone();
        if let Some(other) = spans.iter().find(|flat| flat.span.trace_id != trace_id) {
            return Err(format!(
                "chunk #{index} mixes traces {} and {}",
                hex::encode(&trace_id),
                hex::encode(&other.span.trace_id)
            ));
        }
        match traces.last_mut() {
            Some(last) if last.trace_id == trace_id => last.spans.extend(spans),
            _ => {
                if traces.iter().any(|trace| trace.trace_id == trace_id) {
                    return Err(format!(
                        "trace {} comes back in non-consecutive chunks (again at chunk #{index})",
                        hex::encode(&trace_id)
                    ));
                }
                traces.push(StreamedTrace { trace_id, spans });
            }
        }
    }
    Ok(traces)
}

fn all_spans(traces: &[StreamedTrace]) -> Vec<FlatSpan> {
    traces
        .iter()
        .flat_map(|trace| trace.spans.iter().cloned())
        .collect()
}

fn get_traces_request(trace_ids: &[Vec<u8>]) -> proto::GetTracesRequest {
    proto::GetTracesRequest {
        query: trace_ids
            .iter()
            .map(|trace_id| proto::GetTraceParams {
                trace_id: trace_id.clone(),
                start_time: None,
                end_time: None,
            })
            .collect(),
    }
}

/// The Jaeger reader and the OTLP writer on a server's Jaeger address.
#[derive(Debug)]
struct Clients {
    reader: TraceReaderClient<Channel>,
    writer: TraceServiceClient<Channel>,
}

impl Clients {
    async fn connect(server: &TestServer) -> Clients {
        Clients {
            reader: TraceReaderClient::connect(server.jaeger.clone())
                .await
                .expect("connect TraceReader"),
            writer: TraceServiceClient::connect(server.jaeger.clone())
                .await
                .expect("connect OTLP TraceService on the Jaeger address"),
        }
    }

    /// Writes `spans` through OTLP Export, `per_call` spans a call, each with its resource and
    /// scope; every call must accept every span.
    async fn write(&mut self, spans: &[FlatSpan], per_call: usize) {
        for group in spans.chunks(per_call) {
            let response = self
                .writer
                .export(ExportTraceServiceRequest {
                    resource_spans: regroup(group),
                })
                .await
                .unwrap_or_else(|status| panic!("Export of {} spans: {status}", group.len()))
                .into_inner();
            if let Some(partial) = response.partial_success {
                assert_eq!(
                    partial.rejected_spans, 0,
                    "Export rejected spans: {}",
                    partial.error_message
                );
            }
        }
    }

    async fn get_traces(
        &mut self,
        trace_ids: &[Vec<u8>],
    ) -> Result<Vec<TracesData>, tonic::Status> {
        drain(self.reader.get_traces(get_traces_request(trace_ids)).await).await
    }

    async fn find_traces(
        &mut self,
        query: proto::TraceQueryParameters,
    ) -> Result<Vec<TracesData>, tonic::Status> {
        let request = proto::FindTracesRequest { query: Some(query) };
        drain(self.reader.find_traces(request).await).await
    }

    async fn services(&mut self) -> Vec<String> {
        self.reader
            .get_services(proto::GetServicesRequest {})
            .await
            .expect("GetServices")
            .into_inner()
            .services
    }

    async fn operations(&mut self, service: &str, span_kind: &str) -> Vec<(String, String)> {
        let request = proto::GetOperationsRequest {
            service: service.to_owned(),
            span_kind: span_kind.to_owned(),
        };
        self.reader
            .get_operations(request)
            .await
            .unwrap_or_else(|status| panic!("GetOperations({service:?}, {span_kind:?}): {status}"))
            .into_inner()
            .operations
            .into_iter()
            .map(|operation| (operation.name, operation.span_kind))
            .collect()
    }

    /// The traces of GetTraces for one id, checked against the stream contract.
    async fn trace(&mut self, trace_id: &[u8]) -> Vec<StreamedTrace> {
        let chunks = self
            .get_traces(&[trace_id.to_vec()])
            .await
            .unwrap_or_else(|status| panic!("GetTraces({}): {status}", hex::encode(trace_id)));
        split_traces(&chunks).unwrap_or_else(|problem| panic!("GetTraces: {problem}"))
    }
}

fn status_code<T: Debug>(result: Result<T, tonic::Status>) -> Code {
    match result {
        Ok(value) => panic!("expected an error status, got {value:?}"),
        Err(status) => status.code(),
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/jaeger-fixtures/internal/storage/integration/fixtures")
}

/// One FindTraces case of queries.json, dates rewritten.
#[derive(Debug, Clone)]
struct QueryCase {
    caption: String,
    query: proto::TraceQueryParameters,
    expected: Vec<String>,
}

/// Jaeger's storage-integration fixtures with today's date rewrite.
#[derive(Debug)]
struct Fixtures {
    dir: PathBuf,
    dates: FixtureDates,
}

/// The fixtures, or `None` (and a line on stderr) when they are not beside the workspace.
fn fixtures_or_skip() -> Option<Fixtures> {
    let dir = fixtures_dir();
    if !dir.join("queries.json").is_file() {
        // Written to the process's stderr directly rather than with `eprintln!`, which the test
        // harness captures and only shows for failing tests: a skip must be visible.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: Jaeger fixtures not found at {} (CI has them beside the clone)",
            dir.display()
        );
        return None;
    }
    Some(Fixtures {
        dir,
        dates: FixtureDates::today_utc(),
    })
}

impl Fixtures {
    /// A trace fixture (`traces/<name>.json`), dates rewritten.
    fn trace(&self, name: &str) -> Vec<FlatSpan> {
        let path = self.dir.join("traces").join(format!("{name}.json"));
        let bytes =
            std::fs::read(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
        let request = ingest::decode_traces_json(&bytes)
            .unwrap_or_else(|error| panic!("decode {}: {error}", path.display()));
        let mut spans = flatten(&request.resource_spans);
        assert!(!spans.is_empty(), "{} holds no spans", path.display());
        for flat in &mut spans {
            self.dates.rewrite_span(&mut flat.span);
        }
        spans
    }

    fn cases(&self) -> Vec<QueryCase> {
        let path = self.dir.join("queries.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
        let document: Value = serde_json::from_str(&self.dates.rewrite_query_text(&text))
            .unwrap_or_else(|error| panic!("parse {}: {error}", path.display()));
        document
            .as_array()
            .expect("queries.json is an array")
            .iter()
            .map(query_case)
            .collect()
    }

    /// Every trace any case expects, and example_trace, by fixture name.
    fn traces_for(&self, cases: &[QueryCase]) -> BTreeMap<String, Vec<FlatSpan>> {
        let mut names: BTreeSet<&str> = BTreeSet::from(["example_trace"]);
        for case in cases {
            names.extend(case.expected.iter().map(String::as_str));
        }
        names
            .into_iter()
            .map(|name| (name.to_owned(), self.trace(name)))
            .collect()
    }
}

fn query_case(case: &Value) -> QueryCase {
    let query = &case["Query"];
    let text = |field: &str| query[field].as_str().unwrap_or_default().to_owned();
    let nanos = |field: &str| {
        query[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} is not a nanosecond count: {}", query[field]))
    };
    let attributes = match &query["Tags"] {
        Value::Null => Vec::new(),
        Value::Object(tags) => tags
            .iter()
            .map(|(key, value)| query_attribute(key, value))
            .collect(),
        other => panic!("Tags is neither null nor an object: {other}"),
    };
    let time = |field: &str| {
        let value = text(field);
        Some(if value.is_empty() {
            go_zero_time()
        } else {
            parse_rfc3339(&value)
        })
    };
    QueryCase {
        caption: case["Caption"].as_str().unwrap_or_default().to_owned(),
        query: proto::TraceQueryParameters {
            service_name: text("ServiceName"),
            operation_name: text("OperationName"),
            attributes,
            start_time_min: time("StartTimeMin"),
            start_time_max: time("StartTimeMax"),
            // Jaeger's client always sends the durations; zero means no bound.
            duration_min: Some(duration(nanos("DurationMin"))),
            duration_max: Some(duration(nanos("DurationMax"))),
            search_depth: i32::try_from(query["NumTraces"].as_i64().unwrap_or(0))
                .expect("NumTraces fits i32"),
        },
        expected: case["ExpectedFixtures"]
            .as_array()
            .expect("ExpectedFixtures is an array")
            .iter()
            .map(|name| name.as_str().expect("fixture names are strings").to_owned())
            .collect(),
    }
}

/// A typed query attribute: strings, bools, integers (also integer-valued floats) and doubles.
fn query_attribute(key: &str, value: &Value) -> proto::KeyValue {
    use proto::any_value::Value as Typed;
    let typed = match value {
        Value::String(text) => Typed::StringValue(text.clone()),
        Value::Bool(flag) => Typed::BoolValue(*flag),
        Value::Number(number) => match number.as_i64() {
            Some(integer) => Typed::IntValue(integer),
            None => {
                let float = number.as_f64().expect("a JSON number is an f64");
                let integer = float as i64;
                if float.fract() == 0.0 && integer as f64 == float {
                    Typed::IntValue(integer)
                } else {
                    Typed::DoubleValue(float)
                }
            }
        },
        other => panic!("unsupported tag value for {key}: {other}"),
    };
    proto::KeyValue {
        key: key.to_owned(),
        value: Some(proto::AnyValue { value: Some(typed) }),
    }
}

/// Writes every trace (in Export calls of 5 spans, as Jaeger does) to a fresh server.
async fn fixture_server(
    dir: &Path,
    traces: &BTreeMap<String, Vec<FlatSpan>>,
) -> (TestServer, Clients) {
    let server = TestServer::start(dir).await;
    let mut clients = Clients::connect(&server).await;
    for spans in traces.values() {
        clients.write(spans, SPANS_PER_EXPORT).await;
    }
    (server, clients)
}

/// The string form a query value is matched by, for the scalar values the fixtures use.
fn string_form(value: &AnyValue) -> Option<String> {
    match &value.value {
        Some(any_value::Value::StringValue(text)) => Some(text.clone()),
        Some(any_value::Value::IntValue(integer)) => Some(integer.to_string()),
        Some(any_value::Value::DoubleValue(double)) => Some(double.to_string()),
        Some(any_value::Value::BoolValue(flag)) => Some(flag.to_string()),
        _ => None,
    }
}

/// Whether `key` has string form `form` on the span, its scope, its resource, an event or a link.
fn has_attribute(flat: &FlatSpan, key: &str, form: &str) -> bool {
    let mut lists: Vec<&[KeyValue]> = vec![&flat.span.attributes];
    if let Some(resource) = &flat.resource {
        lists.push(&resource.attributes);
    }
    if let Some(scope) = &flat.scope {
        lists.push(&scope.attributes);
    }
    lists.extend(
        flat.span
            .events
            .iter()
            .map(|event| event.attributes.as_slice()),
    );
    lists.extend(
        flat.span
            .links
            .iter()
            .map(|link| link.attributes.as_slice()),
    );
    lists.iter().any(|list| {
        list.iter().any(|attribute| {
            attribute.key == key
                && attribute.value.as_ref().and_then(string_form).as_deref() == Some(form)
        })
    })
}

/// Every span of the traces having a span that starts in `[min, max]` and satisfies `matches`:
/// what a search should return, worked out from the fixtures themselves.
fn reference_search(
    traces: &BTreeMap<String, Vec<FlatSpan>>,
    min: u64,
    max: u64,
    matches: impl Fn(&FlatSpan) -> bool,
) -> Vec<FlatSpan> {
    let mut found = Vec::new();
    for spans in traces.values() {
        let hit = spans
            .iter()
            .any(|flat| (min..=max).contains(&flat.span.start_time_unix_nano) && matches(flat));
        if hit {
            found.extend(spans.iter().cloned());
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn date_helpers_rewrite_fixture_times() {
    assert_eq!(days_from_civil(1970, 1, 1), 0);
    assert_eq!(days_from_civil(2017, 1, 26), 17_192);
    assert_eq!(date_string(17_192), "2017-01-26");
    assert_eq!(date_string(days_from_civil(2024, 2, 29)), "2024-02-29");
    assert_eq!(date_string(days_from_civil(2000, 12, 31) + 1), "2001-01-01");
    assert_eq!(
        parse_rfc3339("2017-01-26T15:46:31.639875Z"),
        prost_types::Timestamp {
            seconds: 1_485_445_591,
            nanos: 639_875_000
        }
    );
    let dates = FixtureDates {
        yesterday: days_from_civil(2030, 3, 1),
        day_before: days_from_civil(2030, 2, 28),
    };
    assert_eq!(
        dates.rewrite_query_text("2017-01-26T00:00:31Z 2017-01-25T23:56:31Z"),
        "2030-03-01T00:00:31Z 2030-02-28T23:56:31Z"
    );
    // 2017-01-26T16:46:31.639875Z and 2017-01-25T23:56:31.639875Z (multi_index_trace).
    let moved = |nanos: u64| {
        let moved = dates.rewrite_time(nanos);
        (
            date_string(i64::try_from(moved / NANOS_PER_DAY).unwrap()),
            moved % NANOS_PER_DAY,
        )
    };
    assert_eq!(
        moved(1_485_449_191_639_875_000),
        (
            "2030-03-01".to_owned(),
            1_485_449_191_639_875_000 % NANOS_PER_DAY
        )
    );
    assert_eq!(
        moved(1_485_388_591_639_875_000),
        (
            "2030-02-28".to_owned(),
            1_485_388_591_639_875_000 % NANOS_PER_DAY
        )
    );
    assert_eq!(dates.rewrite_time(0), 0);
}

/// Every queries.json case through FindTraces returns exactly its expected fixtures, every span
/// and field, in chunks of one trace each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_queries_return_exactly_their_traces() {
    let Some(fixtures) = fixtures_or_skip() else {
        return;
    };
    let cases = fixtures.cases();
    assert_eq!(cases.len(), 25, "queries.json cases");
    let traces = fixtures.traces_for(&cases);
    let dir = tempfile::tempdir().unwrap();
    let (server, mut clients) = fixture_server(dir.path(), &traces).await;

    let mut failures = Vec::new();
    for case in &cases {
        let expected: Vec<FlatSpan> = case
            .expected
            .iter()
            .flat_map(|name| traces[name].iter().cloned())
            .collect();
        let outcome = match clients.find_traces(case.query.clone()).await {
            Err(status) => Err(format!("FindTraces failed: {status}")),
            Ok(chunks) => split_traces(&chunks)
                .and_then(|found| compare_spans(&expected, &all_spans(&found), true)),
        };
        if let Err(problem) = outcome {
            failures.push(format!("case {:?}: {problem}", case.caption));
        }
    }
    server.stop().await;
    assert!(
        failures.is_empty(),
        "{} of {} FindTraces cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// FindTraceIDs answers each case with its expected trace ids, each with the trace's earliest
/// span start and latest span end; searches without a service name (operation, attribute or
/// time window only) find what the fixtures say they should.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_ids_and_searches_without_a_service_name() {
    let Some(fixtures) = fixtures_or_skip() else {
        return;
    };
    let cases = fixtures.cases();
    let traces = fixtures.traces_for(&cases);
    let dir = tempfile::tempdir().unwrap();
    let (server, mut clients) = fixture_server(dir.path(), &traces).await;

    let mut failures = Vec::new();
    for case in &cases {
        let request = proto::FindTraceIDsRequest {
            query: Some(case.query.clone()),
        };
        let found = match clients.reader.find_trace_i_ds(request).await {
            Ok(response) => response.into_inner().trace_ids,
            Err(status) => {
                failures.push(format!(
                    "case {:?}: FindTraceIDs failed: {status}",
                    case.caption
                ));
                continue;
            }
        };
        let mut expected = BTreeMap::new();
        for name in &case.expected {
            let spans = &traces[name];
            let start = spans
                .iter()
                .map(|flat| flat.span.start_time_unix_nano)
                .min();
            let end = spans.iter().map(|flat| flat.span.end_time_unix_nano).max();
            expected.insert(
                hex::encode(&spans[0].span.trace_id),
                (start.map(timestamp), end.map(timestamp)),
            );
        }
        let got: BTreeMap<String, _> = found
            .iter()
            .map(|id| (hex::encode(&id.trace_id), (id.start, id.end)))
            .collect();
        if got.len() != found.len() {
            failures.push(format!(
                "case {:?}: FindTraceIDs repeats a trace id: {found:?}",
                case.caption
            ));
        } else if got != expected {
            failures.push(format!(
                "case {:?}: FindTraceIDs (id -> (start, end)):\n  expected {expected:?}\n  got      {got:?}",
                case.caption
            ));
        }
    }

    // Searches without a service name, expectations worked out from the fixtures.
    let dates = fixtures.dates;
    let window = (dates.day_before_start(), now_nanos());
    let window_query = proto::TraceQueryParameters {
        start_time_min: Some(timestamp(window.0)),
        start_time_max: Some(timestamp(window.1)),
        duration_min: Some(duration(0)),
        duration_max: Some(duration(0)),
        search_depth: 1000,
        ..Default::default()
    };
    let operation = "example-operation-1";
    let tag = |key: &str, value: Value| query_attribute(key, &value);
    // query05's window: 00:00:31.639875 to 00:07:31.639875 yesterday.
    let narrow = (
        dates.rewrite_time(1_485_388_831_639_875_000),
        dates.rewrite_time(1_485_389_251_639_875_000),
    );
    let searches: Vec<(String, proto::TraceQueryParameters, Vec<FlatSpan>)> = vec![
        (
            format!("operation {operation:?} only"),
            proto::TraceQueryParameters {
                operation_name: operation.to_owned(),
                ..window_query.clone()
            },
            reference_search(&traces, window.0, window.1, |flat| {
                flat.span.name == operation
            }),
        ),
        (
            "attribute sameplacetag1=\"sameplacevalue\" only".to_owned(),
            proto::TraceQueryParameters {
                attributes: vec![tag("sameplacetag1", Value::from("sameplacevalue"))],
                ..window_query.clone()
            },
            reference_search(&traces, window.0, window.1, |flat| {
                has_attribute(flat, "sameplacetag1", "sameplacevalue")
            }),
        ),
        (
            "attributes sameplacetag2=123 and sameplacetag3=72.5 only".to_owned(),
            proto::TraceQueryParameters {
                attributes: vec![
                    tag("sameplacetag2", Value::from(123)),
                    tag("sameplacetag3", Value::from(72.5)),
                ],
                ..window_query.clone()
            },
            reference_search(&traces, window.0, window.1, |flat| {
                has_attribute(flat, "sameplacetag2", "123")
                    && has_attribute(flat, "sameplacetag3", "72.5")
            }),
        ),
        (
            "time window only".to_owned(),
            proto::TraceQueryParameters {
                start_time_min: Some(timestamp(narrow.0)),
                start_time_max: Some(timestamp(narrow.1)),
                ..window_query.clone()
            },
            reference_search(&traces, narrow.0, narrow.1, |_| true),
        ),
    ];
    for (caption, query, expected) in searches {
        assert!(!expected.is_empty(), "{caption}: the fixtures have matches");
        let outcome = match clients.find_traces(query).await {
            Err(status) => Err(format!("FindTraces failed: {status}")),
            Ok(chunks) => split_traces(&chunks)
                .and_then(|found| compare_spans(&expected, &all_spans(&found), true)),
        };
        if let Err(problem) = outcome {
            failures.push(format!("search by {caption}: {problem}"));
        }
    }
    server.stop().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Jaeger's GetServices, GetOperations and GetTrace checks on example_trace alone, plus the
/// trace id rules: unknown ids give an empty OK stream, 17 bytes INVALID_ARGUMENT, a short id
/// is left-padded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_trace_services_operations_and_lookups() {
    let Some(fixtures) = fixtures_or_skip() else {
        return;
    };
    let example = fixtures.trace("example_trace");
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut clients = Clients::connect(&server).await;
    clients.write(&example, SPANS_PER_EXPORT).await;

    assert_eq!(
        clients.services().await,
        [
            "example-service-1",
            "example-service-2",
            "example-service-3"
        ]
    );
    let operation = |name: &str, kind: &str| (name.to_owned(), kind.to_owned());
    assert_eq!(
        clients.operations("example-service-1", "").await,
        [
            operation("example-operation-1", ""),
            operation("example-operation-3", "server"),
            operation("example-operation-4", "client"),
        ]
    );
    assert_eq!(
        clients.operations("example-service-1", "server").await,
        [operation("example-operation-3", "server")]
    );
    assert_eq!(
        clients.operations("example-service-1", "producer").await,
        Vec::<(String, String)>::new()
    );

    let example_id = EXAMPLE_TRACE_ID.to_be_bytes();
    let found = clients.trace(&example_id).await;
    assert_eq!(found.len(), 1, "one trace for {}", hex::encode(example_id));
    if let Err(problem) = compare_spans(&example, &found[0].spans, false) {
        panic!("GetTraces(...0011): {problem}");
    }

    let unknown = clients.trace(&1u128.to_be_bytes()).await;
    assert!(unknown.is_empty(), "GetTraces(...0001): {unknown:?}");

    assert_eq!(
        status_code(clients.get_traces(&[vec![0x11; 17]]).await),
        Code::InvalidArgument,
        "a 17-byte trace id"
    );

    let padded = clients.trace(&[0x11]).await;
    assert_eq!(padded.len(), 1, "GetTraces(0x11) finds ...0011");
    assert_eq!(padded[0].trace_id, example_id);
    if let Err(problem) = compare_spans(&example, &padded[0].spans, false) {
        panic!("GetTraces(0x11): {problem}");
    }

    // Several ids in one request: each found trace once, unknown ones skipped.
    let chunks = clients
        .get_traces(&[
            1u128.to_be_bytes().to_vec(),
            example_id.to_vec(),
            2u128.to_be_bytes().to_vec(),
        ])
        .await
        .expect("GetTraces of several ids");
    let traces = split_traces(&chunks).unwrap_or_else(|problem| panic!("{problem}"));
    assert_eq!(traces.len(), 1);
    server.stop().await;
}

/// Jaeger's GetLargeTrace: 10,008 spans of one trace come back whole, over several chunks of
/// one trace each, every chunk under Jaeger's 4 MiB limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_trace_round_trips_in_chunks_under_4_mib() {
    const SPANS: u64 = 10_008;
    let Some(fixtures) = fixtures_or_skip() else {
        return;
    };
    let template = fixtures.trace("example_trace").remove(0);
    // Each copy carries a 600-byte attribute, so the trace (over 6 MiB) cannot fit one message.
    let spans: Vec<FlatSpan> = (1..=SPANS)
        .map(|id| {
            let mut flat = template.clone();
            flat.span.span_id = id.to_be_bytes().to_vec();
            flat.span
                .attributes
                .push(string_attribute("payload", &format!("{id:0>600}")));
            flat
        })
        .collect();
    let written: usize = spans.iter().map(|flat| flat.span.encoded_len()).sum();
    assert!(written > MAX_MESSAGE_BYTES, "the trace is {written} bytes");
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut clients = Clients::connect(&server).await;
    clients.write(&spans, 1000).await;

    let trace_id = template.span.trace_id.clone();
    let chunks = clients
        .get_traces(std::slice::from_ref(&trace_id))
        .await
        .expect("GetTraces of the large trace");
    assert!(
        chunks.len() > 1,
        "{} chunk(s) for {SPANS} spans",
        chunks.len()
    );
    for (index, chunk) in chunks.iter().enumerate() {
        assert!(
            chunk.encoded_len() < MAX_MESSAGE_BYTES,
            "chunk #{index} is {} bytes",
            chunk.encoded_len()
        );
    }
    let traces = split_traces(&chunks).unwrap_or_else(|problem| panic!("{problem}"));
    assert_eq!(traces.len(), 1, "one trace");
    assert_eq!(traces[0].trace_id, trace_id);
    assert_eq!(traces[0].spans.len(), spans.len(), "span count");
    if let Err(problem) = compare_spans(&spans, &traces[0].spans, false) {
        panic!("large trace: {problem}");
    }
    server.stop().await;
}

/// Jaeger's GetTraceWithDuplicateSpans: spans sharing a span id are all kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_span_ids_are_all_kept() {
    let trace: u128 = 0xd0_0b1e;
    let start = now_nanos() - 3_600 * NANOS_PER_SECOND;
    let mut spans = Vec::new();
    for copy in 0..2 {
        for id in 1..=100u64 {
            let mut span = own_span(trace, id, None, "duplicated", start + id * 1000, 5_000);
            span.attributes = vec![
                KeyValue {
                    key: "copy".to_owned(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::IntValue(copy)),
                    }),
                    ..Default::default()
                },
                string_attribute("side", if copy == 0 { "first" } else { "second" }),
            ];
            spans.push(in_service("duplicates-service", span));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut clients = Clients::connect(&server).await;
    clients.write(&spans, SPANS_PER_EXPORT).await;

    let found = clients.trace(&trace.to_be_bytes()).await;
    assert_eq!(found.len(), 1, "one trace");
    assert_eq!(found[0].spans.len(), 200, "every span, duplicates included");
    if let Err(problem) = compare_spans(&spans, &found[0].spans, false) {
        panic!("duplicate span ids: {problem}");
    }
    server.stop().await;
}

/// FindTraceSummaries on a trace of our own: root, errors, orphans, per-service counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_summaries_count_roots_errors_orphans_and_services() {
    let trace: u128 = 0x5_0e11_a11e;
    let base = now_nanos() - 3_600 * NANOS_PER_SECOND;
    let ms = 1_000_000;
    let mut root = own_span(trace, 1, None, "GET /checkout", base, 100 * ms);
    root.kind = SpanKind::Server as i32;
    let child = own_span(trace, 2, Some(1), "render", base + 5 * ms, 10 * ms);
    let mut call = own_span(trace, 3, Some(1), "POST /charge", base + 20 * ms, 50 * ms);
    call.kind = SpanKind::Server as i32;
    call.status = Some(SpanStatus {
        message: "card declined".to_owned(),
        code: StatusCode::Error as i32,
    });
    let query = own_span(trace, 4, Some(3), "SELECT cards", base + 25 * ms, 5 * ms);
    // Parent 0x99 is not in the trace; it starts before the root and ends after everything, so
    // it sets the min and max times without being the root.
    let orphan = own_span(trace, 5, Some(0x99), "retry", base - 7 * ms, 200 * ms);
    // A second parentless span, later than the root: not the root.
    let late = own_span(trace, 6, None, "cleanup", base + 150 * ms, ms);
    let mut ok = own_span(trace, 7, Some(3), "audit", base + 30 * ms, ms);
    ok.status = Some(SpanStatus {
        message: String::new(),
        code: StatusCode::Ok as i32,
    });
    let spans = vec![
        in_service("checkout-backend", query),
        in_service("checkout-frontend", child),
        in_service("checkout-backend", orphan.clone()),
        in_service("checkout-frontend", root),
        in_service("checkout-backend", call),
        in_service("checkout-backend", late),
        in_service("checkout-backend", ok),
    ];
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut clients = Clients::connect(&server).await;
    clients.write(&spans, 3).await;

    let request = proto::FindTraceSummariesRequest {
        query: Some(proto::TraceQueryParameters {
            service_name: "checkout-frontend".to_owned(),
            start_time_min: Some(timestamp(base - 60 * NANOS_PER_SECOND)),
            start_time_max: Some(timestamp(base + 60 * NANOS_PER_SECOND)),
            ..Default::default()
        }),
    };
    let messages = drain(clients.reader.find_trace_summaries(request).await)
        .await
        .expect("FindTraceSummaries");
    let mut summaries: Vec<proto::TraceSummary> = messages
        .into_iter()
        .flat_map(|message| message.summaries)
        .collect();
    assert_eq!(summaries.len(), 1, "one trace: {summaries:?}");
    let mut summary = summaries.remove(0);
    summary.services.sort_by(|a, b| a.name.cmp(&b.name));
    let service = |name: &str, span_count, error_span_count| proto::ServiceSummary {
        name: name.to_owned(),
        span_count,
        error_span_count,
    };
    assert_eq!(
        summary,
        proto::TraceSummary {
            trace_id: trace.to_be_bytes().to_vec(),
            root_service_name: "checkout-frontend".to_owned(),
            root_operation_name: "GET /checkout".to_owned(),
            min_start_time_unix_nano: orphan.start_time_unix_nano,
            max_end_time_unix_nano: orphan.end_time_unix_nano,
            span_count: 7,
            error_span_count: 1,
            orphan_span_count: 1,
            services: vec![
                service("checkout-backend", 5, 1),
                service("checkout-frontend", 2, 0),
            ],
        }
    );

    // A search matching nothing streams no summaries, with OK.
    let request = proto::FindTraceSummariesRequest {
        query: Some(proto::TraceQueryParameters {
            service_name: "no-such-service".to_owned(),
            ..Default::default()
        }),
    };
    let messages = drain(clients.reader.find_trace_summaries(request).await)
        .await
        .expect("FindTraceSummaries of nothing");
    assert!(
        messages.iter().all(|message| message.summaries.is_empty()),
        "{messages:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_allow_search_without_service_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut client = CapabilitiesClient::connect(server.jaeger.clone())
        .await
        .expect("connect Capabilities");
    let response = client
        .get_capabilities(proto::GetCapabilitiesRequest {})
        .await
        .expect("GetCapabilities")
        .into_inner();
    let search = response.search.expect("search capabilities");
    assert!(search.without_service_name, "{search:?}");
    server.stop().await;
}

/// Inverted time or duration bounds are INVALID_ARGUMENT; zero and Go's zero time are no bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_bounds_are_validated_and_go_zero_time_is_no_bound() {
    let trace: u128 = 0xb0_0d5;
    let now = now_nanos();
    let start = now - 3_600 * NANOS_PER_SECOND;
    let spans = vec![in_service(
        "bounds-service",
        own_span(trace, 1, None, "bounded", start, 5_000_000),
    )];
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut clients = Clients::connect(&server).await;
    clients.write(&spans, SPANS_PER_EXPORT).await;

    let base = proto::TraceQueryParameters {
        service_name: "bounds-service".to_owned(),
        ..Default::default()
    };
    let inverted_times = proto::TraceQueryParameters {
        start_time_min: Some(timestamp(now)),
        start_time_max: Some(timestamp(start)),
        ..base.clone()
    };
    let inverted_durations = proto::TraceQueryParameters {
        duration_min: Some(duration(10_000_000)),
        duration_max: Some(duration(1_000_000)),
        ..base.clone()
    };
    for (what, query) in [
        ("start_time_max < start_time_min", inverted_times),
        ("duration_max < duration_min", inverted_durations),
    ] {
        assert_eq!(
            status_code(clients.find_traces(query.clone()).await),
            Code::InvalidArgument,
            "FindTraces with {what}"
        );
        let request = proto::FindTraceIDsRequest {
            query: Some(query.clone()),
        };
        assert_eq!(
            status_code(clients.reader.find_trace_i_ds(request).await),
            Code::InvalidArgument,
            "FindTraceIDs with {what}"
        );
        let request = proto::FindTraceSummariesRequest { query: Some(query) };
        assert_eq!(
            status_code(drain(clients.reader.find_trace_summaries(request).await).await),
            Code::InvalidArgument,
            "FindTraceSummaries with {what}"
        );
    }

    let no_bounds = [
        (
            "Go zero times, zero durations",
            proto::TraceQueryParameters {
                start_time_min: Some(go_zero_time()),
                start_time_max: Some(go_zero_time()),
                duration_min: Some(duration(0)),
                duration_max: Some(duration(0)),
                ..base.clone()
            },
        ),
        (
            "Go zero min, a real max",
            proto::TraceQueryParameters {
                start_time_min: Some(go_zero_time()),
                start_time_max: Some(timestamp(now + 3_600 * NANOS_PER_SECOND)),
                ..base.clone()
            },
        ),
        (
            "zero Timestamps",
            proto::TraceQueryParameters {
                start_time_min: Some(prost_types::Timestamp::default()),
                start_time_max: Some(prost_types::Timestamp::default()),
                ..base.clone()
            },
        ),
        ("nothing set", base.clone()),
    ];
    for (what, query) in no_bounds {
        let chunks = clients
            .find_traces(query)
            .await
            .unwrap_or_else(|status| panic!("FindTraces with {what}: {status}"));
        let traces = split_traces(&chunks).unwrap_or_else(|problem| panic!("{what}: {problem}"));
        if let Err(problem) = compare_spans(&spans, &all_spans(&traces), true) {
            panic!("FindTraces with {what}: {problem}");
        }
    }

    // GetTraces time hints: Go zero times are no hint either.
    let request = proto::GetTracesRequest {
        query: vec![proto::GetTraceParams {
            trace_id: trace.to_be_bytes().to_vec(),
            start_time: Some(go_zero_time()),
            end_time: Some(go_zero_time()),
        }],
    };
    let chunks = drain(clients.reader.get_traces(request).await)
        .await
        .expect("GetTraces with Go zero hints");
    let traces = split_traces(&chunks).unwrap_or_else(|problem| panic!("{problem}"));
    if let Err(problem) = compare_spans(&spans, &all_spans(&traces), false) {
        panic!("GetTraces with Go zero hints: {problem}");
    }
    server.stop().await;
}

/// GetDependencies: A calls B twice (across two traces), B calls C once; calls inside one
/// service are no dependency; a time range without the spans gives none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_count_calls_between_services() {
    let now = now_nanos();
    let base = now - 3_600 * NANOS_PER_SECOND;
    let ms = 1_000_000;
    let spans = vec![
        // Trace 1: A -> B -> C, and A -> A (same service).
        in_service(
            "deps-a",
            own_span(0xde_01, 1, None, "a-root", base, 50 * ms),
        ),
        in_service(
            "deps-b",
            own_span(0xde_01, 2, Some(1), "b-work", base + ms, 20 * ms),
        ),
        in_service(
            "deps-c",
            own_span(0xde_01, 3, Some(2), "c-work", base + 2 * ms, 5 * ms),
        ),
        in_service(
            "deps-a",
            own_span(0xde_01, 4, Some(1), "a-local", base + 30 * ms, ms),
        ),
        // Trace 2: A -> B.
        in_service(
            "deps-a",
            own_span(0xde_02, 1, None, "a-root", base + 100 * ms, 50 * ms),
        ),
        in_service(
            "deps-b",
            own_span(0xde_02, 2, Some(1), "b-work", base + 101 * ms, 9 * ms),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let mut clients = Clients::connect(&server).await;
    clients.write(&spans, 2).await;
    let mut dependencies = DependencyReaderClient::connect(server.jaeger.clone())
        .await
        .expect("connect DependencyReader");

    let mut request = proto::GetDependenciesRequest {
        start_time: Some(timestamp(base - 600 * NANOS_PER_SECOND)),
        end_time: Some(timestamp(now)),
    };
    let response = dependencies
        .get_dependencies(request)
        .await
        .expect("GetDependencies")
        .into_inner();
    let mut found: Vec<(String, String, u64)> = response
        .dependencies
        .into_iter()
        .map(|dependency| (dependency.parent, dependency.child, dependency.call_count))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("deps-a".to_owned(), "deps-b".to_owned(), 2),
            ("deps-b".to_owned(), "deps-c".to_owned(), 1),
        ]
    );

    request = proto::GetDependenciesRequest {
        start_time: Some(timestamp(now - 10 * NANOS_PER_DAY)),
        end_time: Some(timestamp(now - 9 * NANOS_PER_DAY)),
    };
    let response = dependencies
        .get_dependencies(request)
        .await
        .expect("GetDependencies of an empty range")
        .into_inner();
    assert!(
        response.dependencies.is_empty(),
        "nothing between 10 and 9 days ago: {:?}",
        response.dependencies
    );
    server.stop().await;
}

async fn post_purge(server: &TestServer) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!("{}/purge", server.api))
        .send()
        .await
        .expect("POST /purge")
        .status()
}

/// `POST /purge` wipes traces and services when enabled and writes work afterwards; without
/// the flag the route does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_wipes_everything_only_when_enabled() {
    let start = now_nanos() - 3_600 * NANOS_PER_SECOND;
    let before = vec![in_service(
        "purged-service",
        own_span(0x9a_01, 1, None, "old", start, 1_000),
    )];
    let after = vec![in_service(
        "fresh-service",
        own_span(0x9a_02, 1, None, "new", start, 1_000),
    )];

    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::ephemeral(dir.path());
    config.enable_purge = true;
    let server = TestServer::start_with(config).await;
    let mut clients = Clients::connect(&server).await;
    clients.write(&before, SPANS_PER_EXPORT).await;
    assert_eq!(clients.services().await, ["purged-service"]);
    assert_eq!(clients.trace(&0x9a_01u128.to_be_bytes()).await.len(), 1);

    assert_eq!(post_purge(&server).await, reqwest::StatusCode::OK);
    assert_eq!(
        clients.services().await,
        Vec::<String>::new(),
        "services after purge"
    );
    let gone = clients.trace(&0x9a_01u128.to_be_bytes()).await;
    assert!(gone.is_empty(), "trace after purge: {gone:?}");
    let searched = clients
        .find_traces(proto::TraceQueryParameters {
            service_name: "purged-service".to_owned(),
            ..Default::default()
        })
        .await
        .expect("FindTraces after purge");
    assert!(searched.is_empty(), "search after purge: {searched:?}");

    clients.write(&after, SPANS_PER_EXPORT).await;
    assert_eq!(clients.services().await, ["fresh-service"]);
    let fresh = clients.trace(&0x9a_02u128.to_be_bytes()).await;
    assert_eq!(fresh.len(), 1, "the write after purge reads back");
    if let Err(problem) = compare_spans(&after, &fresh[0].spans, false) {
        panic!("write after purge: {problem}");
    }
    server.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    assert_eq!(
        post_purge(&server).await,
        reqwest::StatusCode::NOT_FOUND,
        "POST /purge without enable_purge"
    );
    server.stop().await;
}
