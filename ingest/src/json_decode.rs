//! OTLP/JSON -> export request ([`decode_traces_json`]), written over `serde_json::Value`.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Decodes an OTLP/HTTP JSON body (`application/json`) into an export request.
///
/// Follows the OTLP/JSON encoding (the proto3 JSON mapping with OTLP's exceptions), leniently:
///
/// - field names in lowerCamelCase or in the original snake_case; unknown fields are ignored;
///   `null` means "not set";
/// - `traceId`, `spanId`, `parentSpanId` and link ids are hex strings in either case, `""`
///   meaning empty; a non-empty id must have exactly 32 (trace) or 16 (span) hex digits;
/// - 64-bit integers (`*TimeUnixNano`, `intValue`) as JSON strings or numbers, exact over their
///   whole range (also past 2^53); 32-bit integers likewise;
/// - enums (`kind`, `status.code`) as integers or as their names (`"SPAN_KIND_SERVER"`,
///   `"STATUS_CODE_ERROR"`);
/// - `bytesValue` as base64, standard or URL-safe alphabet, padding optional;
/// - `doubleValue` as a number or a string: `"NaN"`, `"Infinity"`, `"-Infinity"` or a decimal;
/// - an `AnyValue` object with no value field is an `AnyValue` with nothing set; two value
///   fields are an error.
///
/// Invalid JSON is [`Error::JsonSyntax`]; anything else wrong is [`Error::Json`] naming the
/// path, e.g. `resourceSpans[0].scopeSpans[1].spans[3].traceId: expected 32 hex characters,
/// found 31`. Only decodes: zero ids, missing ids and out-of-range times are checked by
/// [`crate::to_span_batch`].
pub fn decode_traces_json(body: &[u8]) -> Result<ExportTraceServiceRequest> {
    let document: Value = serde_json::from_slice(body).map_err(Error::JsonSyntax)?;
    let root = Path::Root;
    let mut request = ExportTraceServiceRequest::default();
    for (key, value) in object(&document, &root)? {
        if value.is_null() {
            continue;
        }
        if let "resourceSpans" | "resource_spans" = key.as_str() {
            let path = root.field("resourceSpans");
            request.resource_spans = list(value, &path, resource_spans)?;
        }
    }
    Ok(request)
}

/// A JSON path, built on the stack while descending and only formatted for an error.
#[derive(Debug, Clone, Copy)]
enum Path<'p> {
    Root,
    Field(&'p Path<'p>, &'static str),
    Index(&'p Path<'p>, usize),
}

impl<'p> Path<'p> {
    fn field(&'p self, name: &'static str) -> Path<'p> {
        Path::Field(self, name)
    }

    fn index(&'p self, index: usize) -> Path<'p> {
        Path::Index(self, index)
    }

    fn error(&self, problem: impl Into<String>) -> Error {
        Error::Json {
            path: self.to_string(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => f.write_str("(document)"),
            Path::Field(Path::Root, name) => f.write_str(name),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn expected(path: &Path<'_>, what: &str, value: &Value) -> Error {
    path.error(format!("expected {what}, found {}", type_name(value)))
}

fn object<'v>(value: &'v Value, path: &Path<'_>) -> Result<&'v Map<String, Value>> {
    value
        .as_object()
        .ok_or_else(|| expected(path, "an object", value))
}

/// Decodes a JSON array with `item`; `null` is an empty list.
fn list<T>(
    value: &Value,
    path: &Path<'_>,
    item: impl Fn(&Value, &Path<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (index, value) in items.iter().enumerate() {
                out.push(item(value, &path.index(index))?);
            }
            Ok(out)
        }
        other => Err(expected(path, "an array", other)),
    }
}

fn string(value: &Value, path: &Path<'_>) -> Result<String> {
    match value {
        Value::String(text) => Ok(text.clone()),
        other => Err(expected(path, "a string", other)),
    }
}

fn boolean(value: &Value, path: &Path<'_>) -> Result<bool> {
    match value {
        Value::Bool(flag) => Ok(*flag),
        other => Err(expected(path, "a boolean", other)),
    }
}

/// An integral JSON number that serde_json could only hold as `f64` (e.g. `1e3`).
fn integral_f64(number: &serde_json::Number) -> Option<f64> {
    number
        .as_f64()
        .filter(|float| float.is_finite() && float.fract() == 0.0)
}

fn unsigned_64(value: &Value, path: &Path<'_>) -> Result<u64> {
    match value {
        Value::Number(number) => number
            .as_u64()
            .or_else(|| {
                // 2^64 as f64; `as` saturates, so check the range first.
                integral_f64(number)
                    .filter(|float| *float >= 0.0 && *float < 18_446_744_073_709_551_616.0)
                    .map(|float| float as u64)
            })
            .ok_or_else(|| {
                path.error(format!(
                    "expected an unsigned 64-bit integer, found {number}"
                ))
            }),
        Value::String(text) => text.parse().map_err(|_| {
            path.error(format!(
                "expected an unsigned 64-bit integer, found {text:?}"
            ))
        }),
        other => Err(expected(path, "an unsigned 64-bit integer", other)),
    }
}

fn signed_64(value: &Value, path: &Path<'_>) -> Result<i64> {
    match value {
        Value::Number(number) => number
            .as_i64()
            .or_else(|| {
                integral_f64(number)
                    .filter(|float| {
                        *float >= -9_223_372_036_854_775_808.0
                            && *float < 9_223_372_036_854_775_808.0
                    })
                    .map(|float| float as i64)
            })
            .ok_or_else(|| path.error(format!("expected a signed 64-bit integer, found {number}"))),
        Value::String(text) => text
            .parse()
            .map_err(|_| path.error(format!("expected a signed 64-bit integer, found {text:?}"))),
        other => Err(expected(path, "a signed 64-bit integer", other)),
    }
}

fn unsigned_32(value: &Value, path: &Path<'_>) -> Result<u32> {
    let wide = match value {
        Value::String(text) => text.parse::<u64>().map_err(|_| {
            path.error(format!(
                "expected an unsigned 32-bit integer, found {text:?}"
            ))
        })?,
        other => unsigned_64(other, path)?,
    };
    u32::try_from(wide)
        .map_err(|_| path.error(format!("expected an unsigned 32-bit integer, found {wide}")))
}

fn signed_32(value: &Value, path: &Path<'_>) -> Result<i32> {
    let wide = signed_64(value, path)?;
    i32::try_from(wide)
        .map_err(|_| path.error(format!("expected a signed 32-bit integer, found {wide}")))
}

/// An enum: its number (as a JSON number or decimal string) or its name.
fn enumeration(
    value: &Value,
    path: &Path<'_>,
    from_name: fn(&str) -> Option<i32>,
    what: &str,
) -> Result<i32> {
    if let Value::String(text) = value
        && let Some(number) = from_name(text)
    {
        return Ok(number);
    }
    match value {
        Value::Number(_) => signed_32(value, path),
        Value::String(text) => text
            .parse()
            .map_err(|_| path.error(format!("unknown {what} {text:?}"))),
        other => Err(expected(path, &format!("a {what}"), other)),
    }
}

fn span_kind_from_name(name: &str) -> Option<i32> {
    span::SpanKind::from_str_name(name).map(|kind| kind as i32)
}

fn status_code_from_name(name: &str) -> Option<i32> {
    opentelemetry_proto::tonic::trace::v1::status::StatusCode::from_str_name(name)
        .map(|code| code as i32)
}

fn double(value: &Value, path: &Path<'_>) -> Result<f64> {
    match value {
        Value::Number(number) => number
            .as_f64()
            .ok_or_else(|| path.error(format!("expected a double, found {number}"))),
        Value::String(text) => match text.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other
                .parse()
                .map_err(|_| path.error(format!("expected a double, found {other:?}"))),
        },
        other => Err(expected(path, "a double", other)),
    }
}

fn base64_bytes(value: &Value, path: &Path<'_>) -> Result<Vec<u8>> {
    const CONFIG: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, CONFIG);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CONFIG);
    let Value::String(text) = value else {
        return Err(expected(path, "a base64 string", value));
    };
    STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .map_err(|error| path.error(format!("invalid base64: {error}")))
}

/// A hex id of exactly `bytes` bytes, or `""` for an empty id.
fn hex_id(value: &Value, path: &Path<'_>, bytes: usize) -> Result<Vec<u8>> {
    let Value::String(text) = value else {
        return Err(expected(path, "a hex string", value));
    };
    if text.is_empty() {
        return Ok(Vec::new());
    }
    if text.len() != bytes * 2 {
        return Err(path.error(format!(
            "expected {} hex characters, found {}",
            bytes * 2,
            text.chars().count()
        )));
    }
    hex::decode(text).map_err(|_| path.error(format!("expected a hex string, found {text:?}")))
}

fn resource_spans(value: &Value, path: &Path<'_>) -> Result<ResourceSpans> {
    let mut out = ResourceSpans::default();
    for (key, value) in object(value, path)? {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "resource" => out.resource = Some(resource(value, &path.field("resource"))?),
            "scopeSpans" | "scope_spans" => {
                out.scope_spans = list(value, &path.field("scopeSpans"), scope_spans)?;
            }
            "schemaUrl" | "schema_url" => out.schema_url = string(value, &path.field("schemaUrl"))?,
            _ => {}
        }
    }
    Ok(out)
}

fn resource(value: &Value, path: &Path<'_>) -> Result<Resource> {
    let mut out = Resource::default();
    for (key, value) in object(value, path)? {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "attributes" => out.attributes = list(value, &path.field("attributes"), key_value)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                out.dropped_attributes_count =
                    unsigned_32(value, &path.field("droppedAttributesCount"))?;
            }
            "entityRefs" | "entity_refs" => {
                out.entity_refs = list(value, &path.field("entityRefs"), entity_ref)?;
            }
            _ => {}
        }
    }
    Ok(out)
}

fn entity_ref(value: &Value, path: &Path<'_>) -> Result<EntityRef> {
    let mut out = EntityRef::default();
    for (key, value) in object(value, path)? {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "schemaUrl" | "schema_url" => out.schema_url = string(value, &path.field("schemaUrl"))?,
            "type" => out.r#type = string(value, &path.field("type"))?,
            "idKeys" | "id_keys" => out.id_keys = list(value, &path.field("idKeys"), string)?,
            "descriptionKeys" | "description_keys" => {
                out.description_keys = list(value, &path.field("descriptionKeys"), string)?;
            }
            _ => {}
        }
    }
    Ok(out)
}

fn scope_spans(value: &Value, path: &Path<'_>) -> Result<ScopeSpans> {
    let mut out = ScopeSpans::default();
    for (key, value) in object(value, path)? {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "scope" => out.scope = Some(scope(value, &path.field("scope"))?),
            "spans" => out.spans = list(value, &path.field("spans"), span)?,
            "schemaUrl" | "schema_url" => out.schema_url = string(value, &path.field("schemaUrl"))?,
            _ => {}
        }
    }
    Ok(out)
}

fn scope(value: &Value, path: &Path<'_>) -> Result<InstrumentationScope> {
    let mut out = InstrumentationScope::default();
    for (key, value) in object(value, path)? {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "name" => out.name = string(value, &path.field("name"))?,
            "version" => out.version = string(value, &path.field("version"))?,
            "attributes" => out.attributes = list(value, &path.field("attributes"), key_value)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                out.dropped_attributes_count =
                    unsigned_32(value, &path.field("droppedAttributesCount"))?;
            }
            _ => {}
        }
    }
    Ok(out)
}

fn span(value: &Value, path: &Path<'_>) -> Result<Span> {
    let mut out = Span::default();
    for (key, value) in object(value, path)? {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "traceId" | "trace_id" => out.trace_id = hex_id(value, &path.field("traceId"), 16)?,
            "spanId" | "span_id" => out.span_id = hex_id(value, &path.field("spanId"), 8)?,
            "traceState" | "trace_state" => {
                out.trace_state = string(value, &path.field("traceState"))?;
            }
            "parentSpanId" | "parent_span_id" => {
                out.parent_span_id = hex_id(value, &path.field("parentSpanId"), 8)?;
            }
            "flags" => out.flags = unsigned_32(value, &path.field("flags"))?,
            "name" => out.name = string(value, &path.field("name"))?,
            "kind" => {
                out.kind =
                    enumeration(value, &path.field("kind"), span_kind_from_name, "span kind")?;
            }
            "startTimeUnixNano" | "start_time_unix_nano" => {
                out.start_time_unix_nano = unsigned_64(value, &path.field("startTimeUnixNano"))?;
            }
            "endTimeUnixNano" | "end_time_unix_nano" => {
                out.end_time_unix_nano = unsigned_64(value, &path.field("endTimeUnixNano"))?;
            }
            "attributes" => out.attributes = list(value, &path.field("attributes"), key_value)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                out.dropped_attributes_count =
                    unsigned_32(value, &path.field("droppedAttributesCount"))?;
            }
            "events" => out.events = list(value, &path.field("events"), event)?,
            "droppedEventsCount" | "dropped_events_count" => {
                out.dropped_events_count = unsigned_32(value, &path.field("droppedEventsCount"))?;
            }
            "links" => out.links = list(value, &path.field("links"), link)?,
            "droppedLinksCount" | "dropped_links_count" => {
                out.dropped_links_count = unsigned_32(value, &path.field("droppedLinksCount"))?;
            }
            "status" => out.status = Some(status(value, &path.field("status"))?),
            _ => {}
        }
    }
    Ok(out)
}

fn event(value: &Value, path: &Path<'_>) -> Result<span::Event> {
    let mut out = span::Event::default();
    for (key, value) in object(value, path)? {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "timeUnixNano" | "time_unix_nano" => {
                out.time_unix_nano = unsigned_64(value, &path.field("timeUnixNano"))?;
            }
            "name" => out.name = string(value, &path.field("name"))?,
            "attributes" => out.attributes = list(value, &path.field("attributes"), key_value)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                out.dropped_attributes_count =
                    unsigned_32(value, &path.field("droppedAttributesCount"))?;
            }
            _ => {}
        }
    }
    Ok(out)
}

fn link(value: &Value, path: &Path<'_>) -> Result<span::Link> {
    let mut out = span::Link::default();
    for (key, value) in object(value, path)? {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "traceId" | "trace_id" => out.trace_id = hex_id(value, &path.field("traceId"), 16)?,
            "spanId" | "span_id" => out.span_id = hex_id(value, &path.field("spanId"), 8)?,
            "traceState" | "trace_state" => {
                out.trace_state = string(value, &path.field("traceState"))?;
            }
            "attributes" => out.attributes = list(value, &path.field("attributes"), key_value)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                out.dropped_attributes_count =
                    unsigned_32(value, &path.field("droppedAttributesCount"))?;
            }
            "flags" => out.flags = unsigned_32(value, &path.field("flags"))?,
            _ => {}
        }
    }
    Ok(out)
}

fn status(value: &Value, path: &Path<'_>) -> Result<Status> {
    let mut out = Status::default();
    for (key, value) in object(value, path)? {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "message" => out.message = string(value, &path.field("message"))?,
            "code" => {
                out.code = enumeration(
                    value,
                    &path.field("code"),
                    status_code_from_name,
                    "status code",
                )?;
            }
            _ => {}
        }
    }
    Ok(out)
}

fn key_value(value: &Value, path: &Path<'_>) -> Result<KeyValue> {
    let mut out = KeyValue::default();
    for (key, value) in object(value, path)? {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "key" => out.key = string(value, &path.field("key"))?,
            "value" => out.value = Some(any_value(value, &path.field("value"))?),
            "keyStrindex" | "key_strindex" => {
                out.key_strindex = signed_32(value, &path.field("keyStrindex"))?;
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Decodes one OTLP/JSON `AnyValue` (how structured content values are stored).
pub(crate) fn decode_any_value(value: &Value) -> Result<AnyValue> {
    any_value(value, &Path::Root)
}

fn any_value(value: &Value, path: &Path<'_>) -> Result<AnyValue> {
    use any_value::Value as V;
    let mut out: Option<V> = None;
    for (key, value) in object(value, path)? {
        if value.is_null() {
            continue;
        }
        let decoded = match key.as_str() {
            "stringValue" | "string_value" => {
                V::StringValue(string(value, &path.field("stringValue"))?)
            }
            "boolValue" | "bool_value" => V::BoolValue(boolean(value, &path.field("boolValue"))?),
            "intValue" | "int_value" => V::IntValue(signed_64(value, &path.field("intValue"))?),
            "doubleValue" | "double_value" => {
                V::DoubleValue(double(value, &path.field("doubleValue"))?)
            }
            "arrayValue" | "array_value" => {
                V::ArrayValue(array_value(value, &path.field("arrayValue"))?)
            }
            "kvlistValue" | "kvlist_value" => {
                V::KvlistValue(kvlist_value(value, &path.field("kvlistValue"))?)
            }
            "bytesValue" | "bytes_value" => {
                V::BytesValue(base64_bytes(value, &path.field("bytesValue"))?)
            }
            "stringValueStrindex" | "string_value_strindex" => {
                V::StringValueStrindex(signed_32(value, &path.field("stringValueStrindex"))?)
            }
            _ => continue,
        };
        if out.is_some() {
            return Err(path.error("more than one value field set"));
        }
        out = Some(decoded);
    }
    Ok(AnyValue { value: out })
}

fn array_value(value: &Value, path: &Path<'_>) -> Result<ArrayValue> {
    let mut out = ArrayValue::default();
    for (key, value) in object(value, path)? {
        if key == "values" {
            out.values = list(value, &path.field("values"), any_value)?;
        }
    }
    Ok(out)
}

fn kvlist_value(value: &Value, path: &Path<'_>) -> Result<KeyValueList> {
    let mut out = KeyValueList::default();
    for (key, value) in object(value, path)? {
        if key == "values" {
            out.values = list(value, &path.field("values"), key_value)?;
        }
    }
    Ok(out)
}

mod logs;
pub use logs::decode_logs_json;

#[cfg(test)]
mod tests;
