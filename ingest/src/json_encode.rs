//! Export request -> OTLP/JSON ([`encode_traces_json`]) and the export response body.
//!
//! Output follows the OTLP/JSON encoding: lowerCamelCase names, lowercase hex ids, 64-bit
//! integers as decimal strings, enums as integers, bytes as standard base64, non-finite doubles
//! as `"NaN"` / `"Infinity"` / `"-Infinity"`. Scalar fields with their default value and empty
//! lists are omitted; a present message is written even when empty (`"resource": {}`), and a
//! set `AnyValue` field is written even when it holds a default (`{"intValue": "0"}`), so
//! [`crate::decode_traces_json`] gives back exactly the same request.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, EntityRef, InstrumentationScope, KeyValue, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use serde_json::{Map, Value, json};

/// Encodes an export request as OTLP/JSON: `{"resourceSpans": [...]}`.
pub fn encode_traces_json(request: &ExportTraceServiceRequest) -> Value {
    let mut out = Map::new();
    put_list(
        &mut out,
        "resourceSpans",
        &request.resource_spans,
        resource_spans,
    );
    Value::Object(out)
}

/// Encodes a logs export request as OTLP/JSON: `{"resourceLogs": [...]}`.
pub fn encode_logs_json(request: &ExportLogsServiceRequest) -> Value {
    let mut out = Map::new();
    put_list(
        &mut out,
        "resourceLogs",
        &request.resource_logs,
        resource_logs,
    );
    Value::Object(out)
}

fn resource_logs(resource_logs: &ResourceLogs) -> Value {
    let mut out = Map::new();
    put_message(
        &mut out,
        "resource",
        resource_logs.resource.as_ref(),
        resource,
    );
    put_list(&mut out, "scopeLogs", &resource_logs.scope_logs, scope_logs);
    put_string(&mut out, "schemaUrl", &resource_logs.schema_url);
    Value::Object(out)
}

fn scope_logs(scope_logs: &ScopeLogs) -> Value {
    let mut out = Map::new();
    put_message(&mut out, "scope", scope_logs.scope.as_ref(), scope);
    put_list(&mut out, "logRecords", &scope_logs.log_records, log_record);
    put_string(&mut out, "schemaUrl", &scope_logs.schema_url);
    Value::Object(out)
}

fn log_record(record: &LogRecord) -> Value {
    let mut out = Map::new();
    put_u64(&mut out, "timeUnixNano", record.time_unix_nano);
    put_u64(
        &mut out,
        "observedTimeUnixNano",
        record.observed_time_unix_nano,
    );
    put_i32(&mut out, "severityNumber", record.severity_number);
    put_string(&mut out, "severityText", &record.severity_text);
    put_message(&mut out, "body", record.body.as_ref(), any_value);
    put_list(&mut out, "attributes", &record.attributes, key_value);
    put_u32(
        &mut out,
        "droppedAttributesCount",
        record.dropped_attributes_count,
    );
    put_u32(&mut out, "flags", record.flags);
    put_hex(&mut out, "traceId", &record.trace_id);
    put_hex(&mut out, "spanId", &record.span_id);
    put_string(&mut out, "eventName", &record.event_name);
    Value::Object(out)
}

/// The OTLP/HTTP JSON body answering an export: `{}` when everything was accepted, otherwise
/// `{"partialSuccess": {"rejectedSpans": "N", "errorMessage": "..."}}`.
///
/// `rejected_spans` = 0 with a non-empty `message` is a warning and keeps the message (with
/// `rejectedSpans` omitted, as the JSON mapping omits zero values).
pub fn encode_export_response_json(rejected_spans: i64, message: &str) -> Value {
    if rejected_spans == 0 && message.is_empty() {
        return json!({});
    }
    let mut partial = Map::new();
    if rejected_spans != 0 {
        partial.insert(
            "rejectedSpans".to_owned(),
            Value::String(rejected_spans.to_string()),
        );
    }
    put_string(&mut partial, "errorMessage", message);
    json!({ "partialSuccess": partial })
}

fn put_string(out: &mut Map<String, Value>, name: &str, text: &str) {
    if !text.is_empty() {
        out.insert(name.to_owned(), Value::String(text.to_owned()));
    }
}

fn put_u32(out: &mut Map<String, Value>, name: &str, number: u32) {
    if number != 0 {
        out.insert(name.to_owned(), Value::from(number));
    }
}

fn put_i32(out: &mut Map<String, Value>, name: &str, number: i32) {
    if number != 0 {
        out.insert(name.to_owned(), Value::from(number));
    }
}

fn put_u64(out: &mut Map<String, Value>, name: &str, number: u64) {
    if number != 0 {
        out.insert(name.to_owned(), Value::String(number.to_string()));
    }
}

fn put_hex(out: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
    if !bytes.is_empty() {
        out.insert(name.to_owned(), Value::String(hex::encode(bytes)));
    }
}

fn put_list<T>(out: &mut Map<String, Value>, name: &str, items: &[T], item: fn(&T) -> Value) {
    if !items.is_empty() {
        out.insert(
            name.to_owned(),
            Value::Array(items.iter().map(item).collect()),
        );
    }
}

fn put_message<T>(
    out: &mut Map<String, Value>,
    name: &str,
    message: Option<&T>,
    encode: fn(&T) -> Value,
) {
    if let Some(message) = message {
        out.insert(name.to_owned(), encode(message));
    }
}

fn resource_spans(resource_spans: &ResourceSpans) -> Value {
    let mut out = Map::new();
    put_message(
        &mut out,
        "resource",
        resource_spans.resource.as_ref(),
        resource,
    );
    put_list(
        &mut out,
        "scopeSpans",
        &resource_spans.scope_spans,
        scope_spans,
    );
    put_string(&mut out, "schemaUrl", &resource_spans.schema_url);
    Value::Object(out)
}

fn resource(resource: &Resource) -> Value {
    let mut out = Map::new();
    put_list(&mut out, "attributes", &resource.attributes, key_value);
    put_u32(
        &mut out,
        "droppedAttributesCount",
        resource.dropped_attributes_count,
    );
    put_list(&mut out, "entityRefs", &resource.entity_refs, entity_ref);
    Value::Object(out)
}

fn entity_ref(entity: &EntityRef) -> Value {
    let mut out = Map::new();
    put_string(&mut out, "schemaUrl", &entity.schema_url);
    put_string(&mut out, "type", &entity.r#type);
    put_list(&mut out, "idKeys", &entity.id_keys, |key| {
        Value::String(key.clone())
    });
    put_list(
        &mut out,
        "descriptionKeys",
        &entity.description_keys,
        |key| Value::String(key.clone()),
    );
    Value::Object(out)
}

fn scope_spans(scope_spans: &ScopeSpans) -> Value {
    let mut out = Map::new();
    put_message(&mut out, "scope", scope_spans.scope.as_ref(), scope);
    put_list(&mut out, "spans", &scope_spans.spans, span);
    put_string(&mut out, "schemaUrl", &scope_spans.schema_url);
    Value::Object(out)
}

fn scope(scope: &InstrumentationScope) -> Value {
    let mut out = Map::new();
    put_string(&mut out, "name", &scope.name);
    put_string(&mut out, "version", &scope.version);
    put_list(&mut out, "attributes", &scope.attributes, key_value);
    put_u32(
        &mut out,
        "droppedAttributesCount",
        scope.dropped_attributes_count,
    );
    Value::Object(out)
}

fn span(span: &Span) -> Value {
    let mut out = Map::new();
    put_hex(&mut out, "traceId", &span.trace_id);
    put_hex(&mut out, "spanId", &span.span_id);
    put_string(&mut out, "traceState", &span.trace_state);
    put_hex(&mut out, "parentSpanId", &span.parent_span_id);
    put_u32(&mut out, "flags", span.flags);
    put_string(&mut out, "name", &span.name);
    put_i32(&mut out, "kind", span.kind);
    put_u64(&mut out, "startTimeUnixNano", span.start_time_unix_nano);
    put_u64(&mut out, "endTimeUnixNano", span.end_time_unix_nano);
    put_list(&mut out, "attributes", &span.attributes, key_value);
    put_u32(
        &mut out,
        "droppedAttributesCount",
        span.dropped_attributes_count,
    );
    put_list(&mut out, "events", &span.events, event);
    put_u32(&mut out, "droppedEventsCount", span.dropped_events_count);
    put_list(&mut out, "links", &span.links, link);
    put_u32(&mut out, "droppedLinksCount", span.dropped_links_count);
    put_message(&mut out, "status", span.status.as_ref(), status);
    Value::Object(out)
}

fn event(event: &span::Event) -> Value {
    let mut out = Map::new();
    put_u64(&mut out, "timeUnixNano", event.time_unix_nano);
    put_string(&mut out, "name", &event.name);
    put_list(&mut out, "attributes", &event.attributes, key_value);
    put_u32(
        &mut out,
        "droppedAttributesCount",
        event.dropped_attributes_count,
    );
    Value::Object(out)
}

fn link(link: &span::Link) -> Value {
    let mut out = Map::new();
    put_hex(&mut out, "traceId", &link.trace_id);
    put_hex(&mut out, "spanId", &link.span_id);
    put_string(&mut out, "traceState", &link.trace_state);
    put_list(&mut out, "attributes", &link.attributes, key_value);
    put_u32(
        &mut out,
        "droppedAttributesCount",
        link.dropped_attributes_count,
    );
    put_u32(&mut out, "flags", link.flags);
    Value::Object(out)
}

fn status(status: &Status) -> Value {
    let mut out = Map::new();
    put_string(&mut out, "message", &status.message);
    put_i32(&mut out, "code", status.code);
    Value::Object(out)
}

fn key_value(pair: &KeyValue) -> Value {
    let mut out = Map::new();
    put_string(&mut out, "key", &pair.key);
    put_message(&mut out, "value", pair.value.as_ref(), any_value);
    put_i32(&mut out, "keyStrindex", pair.key_strindex);
    Value::Object(out)
}

pub(crate) fn any_value(value: &AnyValue) -> Value {
    use any_value::Value as V;
    let Some(value) = &value.value else {
        return Value::Object(Map::new());
    };
    let (name, encoded) = match value {
        V::StringValue(text) => ("stringValue", Value::String(text.clone())),
        V::BoolValue(flag) => ("boolValue", Value::Bool(*flag)),
        V::IntValue(number) => ("intValue", Value::String(number.to_string())),
        V::DoubleValue(number) => ("doubleValue", double(*number)),
        V::ArrayValue(array) => (
            "arrayValue",
            json!({ "values": array.values.iter().map(any_value).collect::<Vec<_>>() }),
        ),
        V::KvlistValue(list) => (
            "kvlistValue",
            json!({ "values": list.values.iter().map(key_value).collect::<Vec<_>>() }),
        ),
        V::BytesValue(bytes) => ("bytesValue", Value::String(STANDARD.encode(bytes))),
        V::StringValueStrindex(index) => ("stringValueStrindex", Value::from(*index)),
    };
    let mut out = Map::new();
    out.insert(name.to_owned(), encoded);
    Value::Object(out)
}

fn double(number: f64) -> Value {
    match serde_json::Number::from_f64(number) {
        Some(number) => Value::Number(number),
        None if number.is_nan() => Value::String("NaN".to_owned()),
        None if number > 0.0 => Value::String("Infinity".to_owned()),
        None => Value::String("-Infinity".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn export_response_is_empty_when_everything_was_accepted() {
        assert_eq!(encode_export_response_json(0, ""), json!({}));
    }

    #[test]
    fn export_response_reports_rejected_spans_as_a_string() {
        assert_eq!(
            encode_export_response_json(3, "span 2 has a zero trace id"),
            json!({"partialSuccess": {
                "rejectedSpans": "3",
                "errorMessage": "span 2 has a zero trace id",
            }})
        );
        assert_eq!(
            encode_export_response_json(0, "clock skew"),
            json!({"partialSuccess": {"errorMessage": "clock skew"}})
        );
    }

    #[test]
    fn empty_request_is_an_empty_object() {
        assert_eq!(
            encode_traces_json(&ExportTraceServiceRequest::default()),
            json!({})
        );
    }

    #[test]
    fn span_fields_use_the_otlp_json_conventions() {
        use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
        let value = |value| Some(AnyValue { value: Some(value) });
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource::default()),
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans: vec![Span {
                        trace_id: vec![0xab; 16],
                        span_id: vec![0x0c; 8],
                        kind: 3,
                        start_time_unix_nano: u64::MAX,
                        attributes: vec![
                            KeyValue {
                                key: "n".into(),
                                value: value(V::IntValue(0)),
                                key_strindex: 0,
                            },
                            KeyValue {
                                key: "d".into(),
                                value: value(V::DoubleValue(f64::NEG_INFINITY)),
                                key_strindex: 0,
                            },
                            KeyValue {
                                key: "b".into(),
                                value: value(V::BytesValue(vec![0xff, 0xfe])),
                                key_strindex: 0,
                            },
                            KeyValue {
                                key: "none".into(),
                                value: None,
                                key_strindex: 0,
                            },
                        ],
                        status: Some(Status {
                            message: String::new(),
                            code: 2,
                        }),
                        ..Span::default()
                    }],
                    schema_url: String::new(),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.30.0".into(),
            }],
        };
        assert_eq!(
            encode_traces_json(&request),
            json!({"resourceSpans": [{
                "resource": {},
                "schemaUrl": "https://opentelemetry.io/schemas/1.30.0",
                "scopeSpans": [{"spans": [{
                    "traceId": "abababababababababababababababab",
                    "spanId": "0c0c0c0c0c0c0c0c",
                    "kind": 3,
                    "startTimeUnixNano": "18446744073709551615",
                    "attributes": [
                        {"key": "n", "value": {"intValue": "0"}},
                        {"key": "d", "value": {"doubleValue": "-Infinity"}},
                        {"key": "b", "value": {"bytesValue": "//4="}},
                        {"key": "none"},
                    ],
                    "status": {"code": 2},
                }]}],
            }]})
        );
    }
}
