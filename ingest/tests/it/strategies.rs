//! proptest strategies for small random `ExportTraceServiceRequest`s, and a helper comparing
//! requests as multisets of spans with their resource and scope.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;

/// Short strings, including empty ones, non-ASCII text and characters JSON must escape.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z._]{0,8}",
        2 => "\\PC{0,5}",
        1 => "[\\x00-\\x1f\"\\\\/\u{7f}\u{2028}]{0,4}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("service.name".to_owned()),
        Just("gen_ai.operation.name".to_owned()),
        Just(String::new()),
        text(),
    ]
}

/// Doubles including the awkward ones. NaN is the canonical quiet NaN only: OTLP/JSON writes
/// every NaN as "NaN", so payload bits cannot survive the JSON round trip.
fn double() -> impl Strategy<Value = f64> {
    use proptest::num::f64 as floats;
    prop_oneof![
        4 => floats::NORMAL | floats::SUBNORMAL | floats::ZERO | floats::POSITIVE | floats::NEGATIVE,
        1 => Just(f64::NAN),
        1 => Just(-0.0),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(1.0),
    ]
}

fn any_value() -> impl Strategy<Value = AnyValue> {
    use any_value::Value;
    let leaf = prop_oneof![
        1 => Just(None),
        4 => text().prop_map(|text| Some(Value::StringValue(text))),
        2 => any::<bool>().prop_map(|flag| Some(Value::BoolValue(flag))),
        3 => any::<i64>().prop_map(|number| Some(Value::IntValue(number))),
        3 => double().prop_map(|number| Some(Value::DoubleValue(number))),
        2 => vec(any::<u8>(), 0..6).prop_map(|bytes| Some(Value::BytesValue(bytes))),
        1 => (-2..5i32).prop_map(|index| Some(Value::StringValueStrindex(index))),
    ]
    .prop_map(|value| AnyValue { value });
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue { values })),
            }),
            vec(key_value_of(inner), 0..4).prop_map(|values| AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList { values })),
            }),
        ]
    })
}

fn key_value_of(value: impl Strategy<Value = AnyValue>) -> impl Strategy<Value = KeyValue> {
    (
        key(),
        proptest::option::weighted(0.9, value),
        prop_oneof![6 => Just(0), 1 => 1..4i32],
    )
        .prop_map(|(key, value, key_strindex)| KeyValue {
            key,
            value,
            key_strindex,
        })
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    vec(key_value_of(any_value()), 0..4)
}

fn small_count() -> impl Strategy<Value = u32> {
    prop_oneof![3 => Just(0), 1 => any::<u32>()]
}

fn trace_id() -> impl Strategy<Value = Vec<u8>> {
    any::<[u8; 16]>()
        .prop_filter("trace ids are not all zero", |id| *id != [0; 16])
        .prop_map(|id| id.to_vec())
}

fn span_id() -> impl Strategy<Value = Vec<u8>> {
    any::<[u8; 8]>()
        .prop_filter("span ids are not all zero", |id| *id != [0; 8])
        .prop_map(|id| id.to_vec())
}

fn time() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(i64::MAX as u64),
        1_600_000_000_000_000_000..1_900_000_000_000_000_000u64,
        0..=i64::MAX as u64,
    ]
}

fn event() -> impl Strategy<Value = span::Event> {
    (time(), text(), attributes(), small_count()).prop_map(
        |(time_unix_nano, name, attributes, dropped_attributes_count)| span::Event {
            time_unix_nano,
            name,
            attributes,
            dropped_attributes_count,
        },
    )
}

fn link() -> impl Strategy<Value = span::Link> {
    (
        trace_id(),
        span_id(),
        text(),
        attributes(),
        small_count(),
        any::<u32>(),
    )
        .prop_map(
            |(trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags)| {
                span::Link {
                    trace_id,
                    span_id,
                    trace_state,
                    attributes,
                    dropped_attributes_count,
                    flags,
                }
            },
        )
}

fn status() -> impl Strategy<Value = Option<Status>> {
    proptest::option::of((text(), 0..6i32).prop_map(|(message, code)| Status { message, code }))
}

fn span() -> impl Strategy<Value = Span> {
    let identity = (
        trace_id(),
        span_id(),
        prop_oneof![
            Just(Vec::new()),
            any::<[u8; 8]>().prop_map(|id| id.to_vec())
        ],
        text(),
        prop_oneof![Just(0u32), Just(1), Just(0x301), any::<u32>()],
        text(),
        0..10i32,
        time(),
        time(),
    );
    let body = (
        attributes(),
        small_count(),
        vec(event(), 0..3),
        small_count(),
        vec(link(), 0..3),
        small_count(),
        status(),
    );
    (identity, body).prop_map(
        |(
            (trace_id, span_id, parent_span_id, trace_state, flags, name, kind, start, end),
            (attributes, dropped_attributes, events, dropped_events, links, dropped_links, status),
        )| Span {
            trace_id,
            span_id,
            trace_state,
            parent_span_id,
            flags,
            name,
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            dropped_attributes_count: dropped_attributes,
            events,
            dropped_events_count: dropped_events,
            links,
            dropped_links_count: dropped_links,
            status,
        },
    )
}

fn schema_url() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("https://opentelemetry.io/schemas/1.30.0".to_owned()),
        text(),
    ]
}

fn entity_ref() -> impl Strategy<Value = EntityRef> {
    (schema_url(), text(), vec(key(), 0..2), vec(key(), 0..2)).prop_map(
        |(schema_url, r#type, id_keys, description_keys)| EntityRef {
            schema_url,
            r#type,
            id_keys,
            description_keys,
        },
    )
}

fn resource() -> impl Strategy<Value = Option<Resource>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(Resource::default())),
        4 => (attributes(), small_count(), vec(entity_ref(), 0..2)).prop_map(
            |(attributes, dropped_attributes_count, entity_refs)| Some(Resource {
                attributes,
                dropped_attributes_count,
                entity_refs,
            })
        ),
    ]
}

fn scope() -> impl Strategy<Value = Option<InstrumentationScope>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(InstrumentationScope::default())),
        4 => (text(), text(), attributes(), small_count()).prop_map(
            |(name, version, attributes, dropped_attributes_count)| Some(InstrumentationScope {
                name,
                version,
                attributes,
                dropped_attributes_count,
            })
        ),
    ]
}

fn scope_spans() -> impl Strategy<Value = ScopeSpans> {
    (scope(), vec(span(), 1..=5), schema_url()).prop_map(|(scope, spans, schema_url)| ScopeSpans {
        scope,
        spans,
        schema_url,
    })
}

fn resource_spans() -> impl Strategy<Value = ResourceSpans> {
    (resource(), vec(scope_spans(), 1..=3), schema_url()).prop_map(
        |(resource, scope_spans, schema_url)| ResourceSpans {
            resource,
            scope_spans,
            schema_url,
        },
    )
}

/// A valid export request: 1-3 resources of 1-3 scopes of 1-5 spans.
pub(crate) fn export_request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    vec(resource_spans(), 1..=3)
        .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

/// Every span with its resource and scope, each as the protobuf bytes of a one-span
/// `ResourceSpans` (exact, NaN bits included), sorted: equal for requests holding the same spans
/// however they are grouped and ordered.
pub(crate) fn span_multiset(request: &ExportTraceServiceRequest) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for resource_spans in &request.resource_spans {
        for scope_spans in &resource_spans.scope_spans {
            for span in &scope_spans.spans {
                let single = ResourceSpans {
                    resource: resource_spans.resource.clone(),
                    scope_spans: vec![ScopeSpans {
                        scope: scope_spans.scope.clone(),
                        spans: vec![span.clone()],
                        schema_url: scope_spans.schema_url.clone(),
                    }],
                    schema_url: resource_spans.schema_url.clone(),
                };
                out.push(single.encode_to_vec());
            }
        }
    }
    out.sort();
    out
}

/// Empty (no id), or a valid id.
fn optional_id(id: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![1 => Just(Vec::new()), 3 => id]
}

fn log_record() -> impl Strategy<Value = opentelemetry_proto::tonic::logs::v1::LogRecord> {
    (
        (time(), time(), -2..30i32, text()),
        (
            prop::option::of(any_value()),
            attributes(),
            small_count(),
            any::<u32>(),
        ),
        (optional_id(trace_id()), optional_id(span_id()), text()),
    )
        .prop_map(
            |(
                (time_unix_nano, observed_time_unix_nano, severity_number, severity_text),
                (body, attributes, dropped_attributes_count, flags),
                (trace_id, span_id, event_name),
            )| opentelemetry_proto::tonic::logs::v1::LogRecord {
                time_unix_nano,
                observed_time_unix_nano,
                severity_number,
                severity_text,
                body,
                attributes,
                dropped_attributes_count,
                flags,
                trace_id,
                span_id,
                event_name,
            },
        )
}

/// A valid logs export request: 1-3 resources of 1-3 scopes of 1-5 records.
pub(crate) fn logs_request()
-> impl Strategy<Value = opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest>
{
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    let scope_logs = (scope(), vec(log_record(), 1..=5), schema_url()).prop_map(
        |(scope, log_records, schema_url)| ScopeLogs {
            scope,
            log_records,
            schema_url,
        },
    );
    let resource_logs = (resource(), vec(scope_logs, 1..=3), schema_url()).prop_map(
        |(resource, scope_logs, schema_url)| ResourceLogs {
            resource,
            scope_logs,
            schema_url,
        },
    );
    vec(resource_logs, 1..=3).prop_map(|resource_logs| {
        opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest { resource_logs }
    })
}

/// One record with its resource and scope: (resource, schema url, scope, schema url, record),
/// messages encoded (a leading 1 marks a present one).
pub(crate) type PlacedRecord = (Vec<u8>, String, Vec<u8>, String, Vec<u8>);

/// Every record of a logs request with its resource and scope, sorted: two requests holding
/// the same records in any grouping and order compare equal.
pub(crate) fn record_multiset(
    request: &opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest,
) -> Vec<PlacedRecord> {
    let mut out = Vec::new();
    for resource in &request.resource_logs {
        for scope in &resource.scope_logs {
            for record in &scope.log_records {
                out.push((
                    resource
                        .resource
                        .as_ref()
                        .map(|r| [vec![1], r.encode_to_vec()].concat())
                        .unwrap_or_default(),
                    resource.schema_url.clone(),
                    scope
                        .scope
                        .as_ref()
                        .map(|s| [vec![1], s.encode_to_vec()].concat())
                        .unwrap_or_default(),
                    scope.schema_url.clone(),
                    record.encode_to_vec(),
                ));
            }
        }
    }
    out.sort();
    out
}
