use arrow::array::{Array, AsArray, MapArray};
use arrow::datatypes::{Int64Type, TimestampNanosecondType, UInt32Type};
use engine::schema::{column_index, columns};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status, span};

use super::*;
use crate::batches_to_otlp;

fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

fn string(key: &str, text: &str) -> KeyValue {
    attribute(key, Value::StringValue(text.to_owned()))
}

fn valid_span(seed: u8) -> Span {
    Span {
        trace_id: vec![seed; 16],
        span_id: vec![seed; 8],
        name: format!("span {seed}"),
        start_time_unix_nano: 1_000,
        end_time_unix_nano: 3_500,
        ..Span::default()
    }
}

fn request_of(spans_per_scope: Vec<Vec<Span>>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string("service.name", "planner")],
                ..Resource::default()
            }),
            scope_spans: spans_per_scope
                .into_iter()
                .map(|spans| ScopeSpans {
                    scope: None,
                    spans,
                    schema_url: String::new(),
                })
                .collect(),
            schema_url: String::new(),
        }],
    }
}

/// The first bad span is at resourceSpans[0].scopeSpans[1].spans[3].
fn rejection(edit: impl FnOnce(&mut Span)) -> String {
    let mut bad = valid_span(9);
    edit(&mut bad);
    let request = request_of(vec![
        vec![valid_span(1)],
        vec![
            valid_span(2),
            valid_span(3),
            valid_span(4),
            bad,
            valid_span(5),
        ],
    ]);
    let error = to_span_batch(&request).unwrap_err();
    assert!(error.is_caller_error(), "{error:?}");
    assert!(matches!(error, Error::InvalidSpan { .. }), "{error:?}");
    error.to_string()
}

const AT: &str = "resourceSpans[0].scopeSpans[1].spans[3]";

#[test]
fn wrong_id_lengths_are_rejected_with_their_path() {
    assert_eq!(
        rejection(|span| span.trace_id.truncate(15)),
        format!("{AT}.traceId: expected 16 bytes, found 15")
    );
    assert_eq!(
        rejection(|span| span.trace_id.clear()),
        format!("{AT}.traceId: expected 16 bytes, found 0")
    );
    assert_eq!(
        rejection(|span| span.span_id.push(1)),
        format!("{AT}.spanId: expected 8 bytes, found 9")
    );
    assert_eq!(
        rejection(|span| span.parent_span_id = vec![1; 7]),
        format!("{AT}.parentSpanId: expected 0 or 8 bytes, found 7")
    );
}

#[test]
fn zero_ids_are_rejected() {
    assert_eq!(
        rejection(|span| span.trace_id = vec![0; 16]),
        format!("{AT}.traceId: id is all zero bytes")
    );
    assert_eq!(
        rejection(|span| span.span_id = vec![0; 8]),
        format!("{AT}.spanId: id is all zero bytes")
    );
}

#[test]
fn bad_link_ids_are_rejected_with_their_path() {
    let link = |trace_id: Vec<u8>, span_id: Vec<u8>| span::Link {
        trace_id,
        span_id,
        ..span::Link::default()
    };
    assert_eq!(
        rejection(
            |span| span.links = vec![link(vec![1; 16], vec![1; 8]), link(vec![1; 8], vec![1; 8])]
        ),
        format!("{AT}.links[1].traceId: expected 16 bytes, found 8")
    );
    assert_eq!(
        rejection(|span| span.links = vec![link(vec![1; 16], vec![0; 8])]),
        format!("{AT}.links[0].spanId: id is all zero bytes")
    );
}

#[test]
fn times_past_i64_are_rejected() {
    let too_late = i64::MAX as u64 + 1;
    assert_eq!(
        rejection(|span| span.end_time_unix_nano = too_late),
        format!(
            "{AT}.endTimeUnixNano: 9223372036854775808 ns is past the largest supported time \
             (9223372036854775807 ns)"
        )
    );
    assert!(
        rejection(|span| span.start_time_unix_nano = u64::MAX)
            .starts_with(&format!("{AT}.startTimeUnixNano: "))
    );
    assert!(
        rejection(|span| {
            span.events = vec![
                span::Event::default(),
                span::Event {
                    time_unix_nano: u64::MAX,
                    ..span::Event::default()
                },
            ]
        })
        .starts_with(&format!("{AT}.events[1].timeUnixNano: "))
    );
    // The largest representable time itself is fine.
    let mut request = request_of(vec![vec![valid_span(1)]]);
    request.resource_spans[0].scope_spans[0].spans[0].end_time_unix_nano = i64::MAX as u64;
    assert_eq!(to_span_batch(&request).unwrap().spans, 1);
}

#[test]
fn all_zero_parent_and_end_before_start_are_kept_as_sent() {
    let mut span = valid_span(1);
    span.parent_span_id = vec![0; 8];
    span.start_time_unix_nano = 10;
    span.end_time_unix_nano = 4;
    let rows = to_span_batch(&request_of(vec![vec![span]])).unwrap().batch;
    let parent = rows
        .column(column_index(columns::PARENT_SPAN_ID))
        .as_string::<i32>();
    assert_eq!(parent.value(0), "0000000000000000");
    let duration = rows
        .column(column_index(columns::DURATION_NS))
        .as_primitive::<Int64Type>();
    assert_eq!(duration.value(0), -6);
}

fn map_entries(map: &MapArray, row: usize) -> Vec<(String, String)> {
    let entries = map.value(row);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_string::<i32>();
    (0..entries.len())
        .map(|index| (keys.value(index).to_owned(), values.value(index).to_owned()))
        .collect()
}

fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

#[test]
fn span_fields_map_to_their_columns() {
    let mut span = valid_span(0xab);
    span.parent_span_id = vec![0xcd; 8];
    span.trace_state = "vendor=1".into();
    span.flags = 0x301;
    span.kind = 3;
    span.status = Some(Status {
        message: "tool failed".into(),
        code: 2,
    });
    span.attributes = vec![
        string("gen_ai.operation.name", "chat"),
        attribute("gen_ai.usage.input_tokens", Value::IntValue(1200)),
        attribute("temperature", Value::DoubleValue(0.7)),
        attribute("stream", Value::BoolValue(false)),
        attribute(
            "gen_ai.response.finish_reasons",
            Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(Value::StringValue("stop".into())),
                }],
            }),
        ),
        KeyValue {
            key: "unset".into(),
            value: None,
            key_strindex: 0,
        },
    ];
    span.dropped_attributes_count = 4;
    span.events = vec![span::Event {
        time_unix_nano: 2_000,
        name: "gen_ai.choice".into(),
        attributes: vec![attribute("index", Value::IntValue(0))],
        dropped_attributes_count: 1,
    }];
    span.dropped_events_count = 5;
    span.links = vec![span::Link {
        trace_id: vec![0x11; 16],
        span_id: vec![0x22; 8],
        trace_state: String::new(),
        attributes: vec![string("link.reason", "retry")],
        dropped_attributes_count: 2,
        flags: 1,
    }];
    span.dropped_links_count = 6;
    let mut request = request_of(vec![vec![span]]);
    request.resource_spans[0].schema_url = "https://schema/r".into();
    request.resource_spans[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .push(attribute("host.cpu", Value::IntValue(8)));
    request.resource_spans[0].scope_spans[0].scope = Some(InstrumentationScope {
        name: "openai".into(),
        version: "1.2".into(),
        attributes: vec![attribute("scope.flag", Value::BoolValue(true))],
        dropped_attributes_count: 0,
    });

    let SpanBatch { batch, spans } = to_span_batch(&request).unwrap();
    assert_eq!(spans, 1);
    assert_eq!(batch.num_rows(), 1);
    assert_eq!(batch.schema(), engine::span_schema());
    let text = |name: &str| {
        let array = batch.column(column_index(name)).as_string::<i32>();
        (!array.is_null(0)).then(|| array.value(0).to_owned())
    };
    let number = |name: &str| {
        batch
            .column(column_index(name))
            .as_primitive::<UInt32Type>()
            .value(0)
    };
    assert_eq!(text(columns::TRACE_ID).unwrap(), "ab".repeat(16));
    assert_eq!(text(columns::SPAN_ID).unwrap(), "ab".repeat(8));
    assert_eq!(text(columns::PARENT_SPAN_ID).unwrap(), "cd".repeat(8));
    assert_eq!(text(columns::TRACE_STATE).unwrap(), "vendor=1");
    assert_eq!(number(columns::FLAGS), 0x301);
    assert_eq!(text(columns::SPAN_NAME).unwrap(), "span 171");
    assert_eq!(text(columns::SPAN_KIND).unwrap(), "client");
    assert_eq!(text(columns::STATUS_CODE).unwrap(), "error");
    assert_eq!(text(columns::STATUS_MESSAGE).unwrap(), "tool failed");
    assert_eq!(text(columns::SERVICE_NAME).unwrap(), "planner");
    assert_eq!(
        text(columns::RESOURCE_SCHEMA_URL).unwrap(),
        "https://schema/r"
    );
    assert_eq!(text(columns::SCOPE_NAME).unwrap(), "openai");
    assert_eq!(text(columns::SCOPE_VERSION).unwrap(), "1.2");
    assert_eq!(text(columns::SCOPE_SCHEMA_URL), None);
    assert_eq!(number(columns::DROPPED_ATTRIBUTES_COUNT), 4);
    assert_eq!(number(columns::DROPPED_EVENTS_COUNT), 5);
    assert_eq!(number(columns::DROPPED_LINKS_COUNT), 6);
    let start = batch
        .column(column_index(columns::START_TIME))
        .as_primitive::<TimestampNanosecondType>();
    assert_eq!(start.value(0), 1_000);

    let map = |name: &str| map_entries(batch.column(column_index(name)).as_map(), 0);
    assert_eq!(
        map(columns::ATTRIBUTES),
        pairs(&[
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.usage.input_tokens", "1200"),
            ("temperature", "0.7"),
            ("stream", "false"),
            ("gen_ai.response.finish_reasons", r#"["stop"]"#),
            ("unset", ""),
        ])
    );
    assert_eq!(
        map(columns::RESOURCE_ATTRIBUTES),
        pairs(&[("service.name", "planner"), ("host.cpu", "8")])
    );
    assert_eq!(
        map(columns::SCOPE_ATTRIBUTES),
        pairs(&[("scope.flag", "true")])
    );

    let events = batch.column(column_index(columns::EVENTS)).as_list::<i32>();
    let event = events.value(0);
    let event = event.as_struct();
    assert_eq!(event.len(), 1);
    assert_eq!(
        event
            .column_by_name("name")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "gen_ai.choice"
    );
    assert_eq!(
        map_entries(event.column_by_name("attributes").unwrap().as_map(), 0),
        pairs(&[("index", "0")])
    );
    let links = batch.column(column_index(columns::LINKS)).as_list::<i32>();
    let link = links.value(0);
    let link = link.as_struct();
    assert_eq!(
        link.column_by_name("trace_id")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "11".repeat(16)
    );
    assert!(link.column_by_name("trace_state").unwrap().is_null(0));

    // span_otlp holds exactly the typed attribute lists.
    let span_otlp = batch
        .column(column_index(columns::SPAN_OTLP))
        .as_binary::<i32>()
        .value(0);
    let original = &request.resource_spans[0].scope_spans[0].spans[0];
    let typed = Span::decode(span_otlp).unwrap();
    assert_eq!(
        typed,
        Span {
            attributes: original.attributes.clone(),
            events: vec![span::Event {
                attributes: original.events[0].attributes.clone(),
                ..span::Event::default()
            }],
            links: vec![span::Link {
                attributes: original.links[0].attributes.clone(),
                ..span::Link::default()
            }],
            ..Span::default()
        }
    );
    // ...and encodes them like prost would.
    assert_eq!(span_otlp, typed.encode_to_vec());

    assert_eq!(batches_to_otlp(&[batch]).unwrap(), request);
}

#[test]
fn service_name_is_null_without_the_attribute_and_a_string_form_otherwise() {
    let mut request = request_of(vec![vec![valid_span(1)]]);
    request.resource_spans[0].resource = None;
    let rows = to_span_batch(&request).unwrap().batch;
    assert!(rows.column(column_index(columns::SERVICE_NAME)).is_null(0));

    request.resource_spans[0].resource = Some(Resource {
        attributes: vec![attribute("service.name", Value::IntValue(7))],
        ..Resource::default()
    });
    let rows = to_span_batch(&request).unwrap().batch;
    let service = rows
        .column(column_index(columns::SERVICE_NAME))
        .as_string::<i32>();
    assert_eq!(service.value(0), "7");
}

#[test]
fn absent_and_empty_messages_are_told_apart_in_hidden_columns() {
    let mut with_empty = request_of(vec![vec![valid_span(1)]]);
    with_empty.resource_spans[0].resource = Some(Resource::default());
    with_empty.resource_spans[0].scope_spans[0].scope = Some(InstrumentationScope::default());
    with_empty.resource_spans[0].scope_spans[0].spans[0].status = Some(Status::default());
    let mut absent = with_empty.clone();
    absent.resource_spans[0].resource = None;
    absent.resource_spans[0].scope_spans[0].scope = None;
    absent.resource_spans[0].scope_spans[0].spans[0].status = None;

    let rows = to_span_batch(&with_empty).unwrap().batch;
    let hidden = |name: &str| {
        rows.column(column_index(name))
            .as_binary::<i32>()
            .value(0)
            .to_vec()
    };
    assert_eq!(hidden(columns::RESOURCE_OTLP), EMPTY_RESOURCE_OTLP);
    assert_eq!(hidden(columns::SCOPE_OTLP), EMPTY_SCOPE_OTLP);
    assert_eq!(hidden(columns::SPAN_OTLP), [SPAN_STATUS_KEY, 0]);
    assert_eq!(
        Resource::decode(EMPTY_RESOURCE_OTLP).unwrap(),
        Resource::default()
    );
    assert_eq!(
        InstrumentationScope::decode(EMPTY_SCOPE_OTLP).unwrap(),
        InstrumentationScope::default()
    );
    assert_eq!(batches_to_otlp(&[rows]).unwrap(), with_empty);

    let rows = to_span_batch(&absent).unwrap().batch;
    let hidden = |name: &str| {
        rows.column(column_index(name))
            .as_binary::<i32>()
            .value(0)
            .len()
    };
    assert_eq!(hidden(columns::RESOURCE_OTLP), 0);
    assert_eq!(hidden(columns::SCOPE_OTLP), 0);
    assert_eq!(hidden(columns::SPAN_OTLP), 0);
    assert_eq!(batches_to_otlp(&[rows]).unwrap(), absent);
}

#[test]
fn unknown_enum_values_round_trip_through_their_decimal_names() {
    let mut span = valid_span(1);
    span.kind = 9;
    span.status = Some(Status {
        message: String::new(),
        code: 5,
    });
    let request = request_of(vec![vec![span]]);
    let rows = to_span_batch(&request).unwrap().batch;
    let kind = rows
        .column(column_index(columns::SPAN_KIND))
        .as_string::<i32>();
    assert_eq!(kind.value(0), "9");
    let code = rows
        .column(column_index(columns::STATUS_CODE))
        .as_string::<i32>();
    assert_eq!(code.value(0), "5");
    assert_eq!(batches_to_otlp(&[rows]).unwrap(), request);
}

#[test]
fn empty_request_gives_an_empty_batch() {
    let rows = to_span_batch(&ExportTraceServiceRequest::default()).unwrap();
    assert_eq!(rows.spans, 0);
    assert_eq!(rows.batch.num_rows(), 0);
    assert_eq!(
        batches_to_otlp(&[rows.batch]).unwrap(),
        ExportTraceServiceRequest::default()
    );
}
