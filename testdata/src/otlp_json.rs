//! OTLP/JSON encoding of trace export requests, written by hand so the crate stays free of serde.
//!
//! Follows the OTLP/HTTP JSON mapping (opentelemetry-proto `docs/specification.md`, "JSON
//! Protobuf Encoding"): lowerCamelCase field names; trace and span ids as lowercase hex (not
//! base64); 64-bit integers (`timeUnixNano`, `intValue`) as decimal strings; enums as integers;
//! `bytesValue` as base64; fields at their default value omitted.

use std::fmt::Write as _;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// Encodes `request` as the body of an OTLP/HTTP JSON `POST /v1/traces`.
///
/// ```
/// let config = testdata::AgentTraceConfig { traces: 1, ..Default::default() };
/// let request = testdata::export_requests(&config, 1).remove(0);
/// let json = testdata::export_request_to_json(&request);
/// assert!(json.starts_with(r#"{"resourceSpans":[{"resource":{"attributes":["#));
/// ```
pub fn export_request_to_json(request: &ExportTraceServiceRequest) -> String {
    let mut out = String::with_capacity(1024);
    let mut object = JsonObject::begin(&mut out);
    object.array(
        "resourceSpans",
        &request.resource_spans,
        write_resource_spans,
    );
    object.end();
    out
}

fn write_resource_spans(out: &mut String, resource_spans: &ResourceSpans) {
    let mut object = JsonObject::begin(out);
    if let Some(resource) = &resource_spans.resource {
        object.field("resource", |out| write_resource(out, resource));
    }
    object.array("scopeSpans", &resource_spans.scope_spans, write_scope_spans);
    object.string("schemaUrl", &resource_spans.schema_url);
    object.end();
}

fn write_resource(out: &mut String, resource: &Resource) {
    let mut object = JsonObject::begin(out);
    object.array("attributes", &resource.attributes, write_key_value);
    object.uint32("droppedAttributesCount", resource.dropped_attributes_count);
    object.end();
}

fn write_scope_spans(out: &mut String, scope_spans: &ScopeSpans) {
    let mut object = JsonObject::begin(out);
    if let Some(scope) = &scope_spans.scope {
        object.field("scope", |out| write_scope(out, scope));
    }
    object.array("spans", &scope_spans.spans, write_span);
    object.string("schemaUrl", &scope_spans.schema_url);
    object.end();
}

fn write_scope(out: &mut String, scope: &InstrumentationScope) {
    let mut object = JsonObject::begin(out);
    object.string("name", &scope.name);
    object.string("version", &scope.version);
    object.array("attributes", &scope.attributes, write_key_value);
    object.uint32("droppedAttributesCount", scope.dropped_attributes_count);
    object.end();
}

fn write_span(out: &mut String, span: &Span) {
    let mut object = JsonObject::begin(out);
    object.hex("traceId", &span.trace_id);
    object.hex("spanId", &span.span_id);
    object.string("traceState", &span.trace_state);
    object.hex("parentSpanId", &span.parent_span_id);
    object.uint32("flags", span.flags);
    object.string("name", &span.name);
    object.int32("kind", span.kind);
    object.uint64("startTimeUnixNano", span.start_time_unix_nano);
    object.uint64("endTimeUnixNano", span.end_time_unix_nano);
    object.array("attributes", &span.attributes, write_key_value);
    object.uint32("droppedAttributesCount", span.dropped_attributes_count);
    object.array("events", &span.events, write_event);
    object.uint32("droppedEventsCount", span.dropped_events_count);
    object.array("links", &span.links, write_link);
    object.uint32("droppedLinksCount", span.dropped_links_count);
    if let Some(status) = &span.status {
        object.field("status", |out| write_status(out, status));
    }
    object.end();
}

fn write_event(out: &mut String, event: &Event) {
    let mut object = JsonObject::begin(out);
    object.uint64("timeUnixNano", event.time_unix_nano);
    object.string("name", &event.name);
    object.array("attributes", &event.attributes, write_key_value);
    object.uint32("droppedAttributesCount", event.dropped_attributes_count);
    object.end();
}

fn write_link(out: &mut String, link: &Link) {
    let mut object = JsonObject::begin(out);
    object.hex("traceId", &link.trace_id);
    object.hex("spanId", &link.span_id);
    object.string("traceState", &link.trace_state);
    object.array("attributes", &link.attributes, write_key_value);
    object.uint32("droppedAttributesCount", link.dropped_attributes_count);
    object.uint32("flags", link.flags);
    object.end();
}

fn write_status(out: &mut String, status: &Status) {
    let mut object = JsonObject::begin(out);
    object.string("message", &status.message);
    object.int32("code", status.code);
    object.end();
}

fn write_key_value(out: &mut String, key_value: &KeyValue) {
    let mut object = JsonObject::begin(out);
    object.always_string("key", &key_value.key);
    if let Some(value) = &key_value.value {
        object.field("value", |out| write_any_value(out, value));
    }
    object.end();
}

fn write_any_value(out: &mut String, value: &AnyValue) {
    let mut object = JsonObject::begin(out);
    match &value.value {
        None => {}
        Some(Value::StringValue(text)) => object.always_string("stringValue", text),
        Some(Value::BoolValue(flag)) => object.field("boolValue", |out| {
            out.push_str(if *flag { "true" } else { "false" })
        }),
        Some(Value::IntValue(number)) => object.field("intValue", |out| {
            let _ = write!(out, "\"{number}\"");
        }),
        Some(Value::DoubleValue(number)) => {
            object.field("doubleValue", |out| write_double(out, *number))
        }
        Some(Value::ArrayValue(array)) => object.field("arrayValue", |out| {
            let mut inner = JsonObject::begin(out);
            inner.array("values", &array.values, write_any_value);
            inner.end();
        }),
        Some(Value::KvlistValue(list)) => object.field("kvlistValue", |out| {
            let mut inner = JsonObject::begin(out);
            inner.array("values", &list.values, write_key_value);
            inner.end();
        }),
        Some(Value::BytesValue(bytes)) => object.field("bytesValue", |out| {
            out.push('"');
            write_base64(out, bytes);
            out.push('"');
        }),
        Some(Value::StringValueStrindex(index)) => object.field("stringValueStrindex", |out| {
            let _ = write!(out, "{index}");
        }),
    }
    object.end();
}

/// Proto3 JSON: finite doubles as numbers, the rest as the strings "NaN", "Infinity", "-Infinity".
fn write_double(out: &mut String, number: f64) {
    if number.is_nan() {
        out.push_str("\"NaN\"");
    } else if number.is_infinite() {
        out.push_str(if number > 0.0 {
            "\"Infinity\""
        } else {
            "\"-Infinity\""
        });
    } else {
        // Debug prints the shortest round-tripping form, `1.0` rather than `1`, and switches to
        // an exponent (`1e300`, `1e-7`) for very large or small values: all valid JSON numbers.
        let _ = write!(out, "{number:?}");
    }
}

fn write_json_string(out: &mut String, text: &str) {
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ch if u32::from(ch) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(ch));
            }
            ch => out.push(ch),
        }
    }
    out.push('"');
}

fn write_base64(out: &mut String, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b0 = u32::from(chunk[0]);
        let b1 = chunk.get(1).copied().map_or(0, u32::from);
        let b2 = chunk.get(2).copied().map_or(0, u32::from);
        let triple = (b0 << 16) | (b1 << 8) | b2;
        out.push(char::from(ALPHABET[(triple >> 18) as usize & 63]));
        out.push(char::from(ALPHABET[(triple >> 12) as usize & 63]));
        out.push(if chunk.len() > 1 {
            char::from(ALPHABET[(triple >> 6) as usize & 63])
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            char::from(ALPHABET[triple as usize & 63])
        } else {
            '='
        });
    }
}

/// Writes one JSON object, taking care of braces and commas; default-valued fields are skipped.
struct JsonObject<'a> {
    out: &'a mut String,
    empty: bool,
}

impl<'a> JsonObject<'a> {
    fn begin(out: &'a mut String) -> Self {
        out.push('{');
        Self { out, empty: true }
    }

    fn end(self) {
        self.out.push('}');
    }

    fn field(&mut self, name: &str, write_value: impl FnOnce(&mut String)) {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        write_json_string(self.out, name);
        self.out.push(':');
        write_value(self.out);
    }

    fn always_string(&mut self, name: &str, value: &str) {
        self.field(name, |out| write_json_string(out, value));
    }

    fn string(&mut self, name: &str, value: &str) {
        if !value.is_empty() {
            self.always_string(name, value);
        }
    }

    fn hex(&mut self, name: &str, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.field(name, |out| {
            out.push('"');
            for byte in bytes {
                let _ = write!(out, "{byte:02x}");
            }
            out.push('"');
        });
    }

    fn uint32(&mut self, name: &str, value: u32) {
        if value != 0 {
            self.field(name, |out| {
                let _ = write!(out, "{value}");
            });
        }
    }

    fn int32(&mut self, name: &str, value: i32) {
        if value != 0 {
            self.field(name, |out| {
                let _ = write!(out, "{value}");
            });
        }
    }

    /// 64-bit integers are JSON strings in proto3 JSON.
    fn uint64(&mut self, name: &str, value: u64) {
        if value != 0 {
            self.field(name, |out| {
                let _ = write!(out, "\"{value}\"");
            });
        }
    }

    fn array<T>(&mut self, name: &str, items: &[T], write_item: fn(&mut String, &T)) {
        if items.is_empty() {
            return;
        }
        self.field(name, |out| {
            out.push('[');
            for (position, item) in items.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                write_item(out, item);
            }
            out.push(']');
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut out = String::new();
            write_base64(&mut out, input.as_bytes());
            assert_eq!(out, expected, "base64 of {input:?}");
        }
    }

    #[test]
    fn strings_are_escaped() {
        let mut out = String::new();
        write_json_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn doubles_follow_proto3_json() {
        for (value, expected) in [
            (0.7, "0.7"),
            (1.0, "1.0"),
            (-2.5, "-2.5"),
            (f64::NAN, "\"NaN\""),
            (f64::INFINITY, "\"Infinity\""),
            (f64::NEG_INFINITY, "\"-Infinity\""),
            (1e300, "1e300"),
            (1e-7, "1e-7"),
        ] {
            let mut out = String::new();
            write_double(&mut out, value);
            assert_eq!(out, expected);
        }
    }
}
