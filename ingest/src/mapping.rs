//! OTLP export request -> span rows ([`to_span_batch`]).
//!
//! # Validation
//!
//! The whole request is checked before any row is built, and one bad span rejects the whole
//! request ([`Error::InvalidSpan`], a caller error naming
//! `resourceSpans[i].scopeSpans[j].spans[k].<field>`):
//!
//! - `traceId`: exactly 16 bytes, not all zero; `spanId`: exactly 8 bytes, not all zero;
//! - `parentSpanId`: empty (root span) or exactly 8 bytes (an all-zero parent is kept as is);
//! - `links[l].traceId` / `links[l].spanId`: exactly 16 / 8 bytes, not all zero;
//! - `startTimeUnixNano`, `endTimeUnixNano`, `events[e].timeUnixNano`: at most `i64::MAX` ns
//!   (the columns are signed nanosecond timestamps). `end < start` is accepted as sent.
//!
//! # OTLP field -> column
//!
//! One row per span. `""` in a nullable string column is stored as NULL (proto3 cannot tell
//! them apart) and read back as `""`.
//!
//! | OTLP                                       | column                                     |
//! |--------------------------------------------|--------------------------------------------|
//! | `Span.trace_id`, `span_id`                 | `trace_id`, `span_id` (lowercase hex)      |
//! | `Span.parent_span_id`                      | `parent_span_id` (hex; NULL when empty)    |
//! | `Span.trace_state`, `flags`, `name`        | `trace_state`, `flags`, `span_name`        |
//! | `Span.kind`                                | `span_kind`: `unspecified` `internal` `server` `client` `producer` `consumer`, or the decimal value if unknown |
//! | `Span.start_time_unix_nano`, `end_...`     | `start_time`, `end_time` (ns UTC); `duration_ns` = end - start |
//! | `Span.status.code`, `status.message`       | `status_code`: `unset` `ok` `error` or the decimal value; `status_message` |
//! | resource attribute `service.name`          | `service_name`: its string form (first occurrence); NULL when absent |
//! | `Resource.attributes`                      | `resource_attributes` (string forms)       |
//! | `ResourceSpans.schema_url`                 | `resource_schema_url`                      |
//! | `InstrumentationScope.name`, `version`     | `scope_name`, `scope_version`              |
//! | `InstrumentationScope.attributes`          | `scope_attributes` (string forms)          |
//! | `ScopeSpans.schema_url`                    | `scope_schema_url`                         |
//! | `Span.attributes`                          | `attributes` (string forms)                |
//! | `Span.dropped_{attributes,events,links}_count` | `dropped_attributes_count`, `dropped_events_count`, `dropped_links_count` |
//! | `Span.events[]`                            | `events`: list of {time, name, attributes, dropped_attributes_count} |
//! | `Span.links[]`                             | `links`: list of {trace_id, span_id, trace_state, flags, attributes, dropped_attributes_count} |
//! | `ResourceSpans.resource` (whole message)   | hidden `resource_otlp`                     |
//! | `ScopeSpans.scope` (whole message)         | hidden `scope_otlp`                        |
//! | typed attribute lists of span/events/links | hidden `span_otlp`                         |
//!
//! Attribute maps keep every pair in order, duplicate keys included. The string forms are
//! described in the `string_form` module: strings as is, ints in decimal, doubles via Rust's
//! `f64` `Display` (shortest round-trip digits, no exponent; `NaN`, `inf`, `-inf`), booleans
//! `true`/`false`, bytes as standard base64, arrays and key-value lists as compact JSON, and a
//! value with nothing set as `""`.
//!
//! # Hidden columns and exact round trips
//!
//! The string forms are for SQL; exact types come from the hidden protobuf columns, which
//! [`crate::batches_to_otlp`] uses to rebuild the request:
//!
//! - `resource_otlp` is the protobuf encoding of `ResourceSpans.resource`. An absent resource is
//!   the empty byte string; a present but empty resource (whose normal encoding would also be
//!   empty) is written as `10 00` (`dropped_attributes_count = 0` set explicitly), which any
//!   protobuf parser reads as an empty `Resource`. So `None` and `Some(default)` both round-trip.
//! - `scope_otlp` is the same for `ScopeSpans.scope`, with `20 00` for a present empty scope.
//! - `span_otlp` is the encoding of a `Span` holding only `attributes`, one `events[i]` per event
//!   holding only its `attributes`, and one `links[i]` per link holding only its `attributes`
//!   (same counts and order as the `events` and `links` columns). When the span's `status` is
//!   present but empty (`code` 0, no message) it also holds an empty `status` (`7a 00`), so that
//!   `status: None` and `status: Some(default)` stay apart; a non-default status is rebuilt from
//!   the `status_code` / `status_message` columns.
//!
//! What does not survive: `ResourceSpans`/`ScopeSpans` without spans (there is no row to hold
//! them), the grouping and order of spans (rebuilt by grouping equal resources and scopes in
//! first-seen order), and unknown protobuf fields (prost drops them when decoding).

use crate::content::ExtractedFinishReasons;
use std::borrow::Cow;

use arrow::record_batch::RecordBatch;
use engine::{
    AttributePair, EventRecord, LinkRecord, SpanBatchBuilder, SpanId, SpanRecord, TraceId,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::error::{Error, Result, SpanProblem};
use crate::string_form::{borrowed_form, write_string_form};

/// `resource_otlp` of a present but empty `Resource`: field 2 (`dropped_attributes_count`) = 0.
pub(crate) const EMPTY_RESOURCE_OTLP: &[u8] = &[0x10, 0x00];
/// `scope_otlp` of a present but empty `InstrumentationScope`: field 4 = 0.
pub(crate) const EMPTY_SCOPE_OTLP: &[u8] = &[0x20, 0x00];

// Protobuf keys (field number << 3 | wire type 2) of the fields written into `span_otlp`.
const SPAN_ATTRIBUTES_KEY: u8 = (9 << 3) | 2;
const SPAN_EVENTS_KEY: u8 = (11 << 3) | 2;
const SPAN_LINKS_KEY: u8 = (13 << 3) | 2;
const SPAN_STATUS_KEY: u8 = (15 << 3) | 2;
const EVENT_ATTRIBUTES_KEY: u8 = (3 << 3) | 2;
const LINK_ATTRIBUTES_KEY: u8 = (4 << 3) | 2;

/// Span rows built from one export request.
#[derive(Debug, Clone)]
pub struct SpanBatch {
    /// One row per span, in [`engine::span_schema`], in request order.
    pub batch: RecordBatch,
    /// Number of spans (= rows) in `batch`.
    pub spans: usize,
}

/// Validates an export request and maps it to span rows, one per span, in request order.
///
/// The whole request is checked first, and one bad span rejects all of it with
/// [`Error::InvalidSpan`] naming the field, e.g.
/// `resourceSpans[0].scopeSpans[1].spans[3].spanId: id is all zero bytes`. Rules: trace ids
/// are 16 bytes and span ids 8, neither all zero (links too); a parent span id is empty or 8
/// bytes; span and event times are at most `i64::MAX` ns. An empty request gives an empty batch.
///
/// Attribute values are stored twice: as string forms in the map columns (strings as is, ints
/// in decimal, doubles via `f64` `Display`, booleans `true`/`false`, bytes as base64, arrays and
/// key-value lists as compact JSON, an unset value as `""`), and typed in the hidden protobuf
/// columns, from which [`crate::batches_to_otlp`] rebuilds the request exactly. The full
/// field-to-column table is in the source of this module.
pub fn to_span_batch(request: &ExportTraceServiceRequest) -> Result<SpanBatch> {
    map_request(request, &ExtractedFinishReasons::new())
}

/// [`to_span_batch`] of a request whose content was extracted: `extracted` holds the finish
/// reasons of the output messages extraction replaced by references.
pub(crate) fn map_request(
    request: &ExportTraceServiceRequest,
    extracted: &ExtractedFinishReasons,
) -> Result<SpanBatch> {
    // Pass 1 validates everything and writes every string form that cannot be borrowed into one
    // buffer; pass 2 walks the request in the same order and borrows from it, so building rows
    // allocates nothing per span.
    let forms = StringForms::validate_and_collect(request)?;
    let mut forms = forms.cursor();

    let span_count = request
        .resource_spans
        .iter()
        .flat_map(|resource| &resource.scope_spans)
        .map(|scope| scope.spans.len())
        .sum();
    let mut builder = SpanBatchBuilder::with_capacity(span_count);
    let mut resource_attributes: Vec<AttributePair<'_>> = Vec::new();
    let mut scope_attributes: Vec<AttributePair<'_>> = Vec::new();
    let mut attributes: Vec<AttributePair<'_>> = Vec::new();
    let mut events: Vec<EventRecord<'_>> = Vec::new();
    let mut links: Vec<LinkRecord<'_>> = Vec::new();
    let mut span_otlp: Vec<u8> = Vec::new();

    for (resource_index, resource_spans) in request.resource_spans.iter().enumerate() {
        let resource = resource_spans.resource.as_ref();
        let resource_otlp = encode_optional(resource, EMPTY_RESOURCE_OTLP);
        resource_attributes.clear();
        push_pairs(
            resource.map_or(&[][..], |resource| &resource.attributes),
            &mut forms,
            &mut resource_attributes,
        );
        let service_name = resource_attributes
            .iter()
            .find(|(key, _)| *key == "service.name")
            .map(|(_, value)| value.as_ref());

        for (scope_index, scope_spans) in resource_spans.scope_spans.iter().enumerate() {
            let scope = scope_spans.scope.as_ref();
            let scope_otlp = encode_optional(scope, EMPTY_SCOPE_OTLP);
            scope_attributes.clear();
            push_pairs(
                scope.map_or(&[][..], |scope| &scope.attributes),
                &mut forms,
                &mut scope_attributes,
            );

            for (span_index, span) in scope_spans.spans.iter().enumerate() {
                let at = SpanPath {
                    resource: resource_index,
                    scope: scope_index,
                    span: span_index,
                };
                // Cannot fail: pass 1 ran the same checks.
                let ids = SpanIds::of(span, &at)?;

                attributes.clear();
                push_pairs(&span.attributes, &mut forms, &mut attributes);

                if events.len() < span.events.len() {
                    events.resize_with(span.events.len(), EventRecord::default);
                }
                for (event_index, (record, event)) in
                    events.iter_mut().zip(&span.events).enumerate()
                {
                    record.time_unix_nano = time(event.time_unix_nano, || {
                        at.nested("events", event_index, "timeUnixNano")
                    })?;
                    record.name = &event.name;
                    record.dropped_attributes_count = event.dropped_attributes_count;
                    record.attributes.clear();
                    push_pairs(&event.attributes, &mut forms, &mut record.attributes);
                }

                if links.len() < span.links.len() {
                    links.resize_with(span.links.len(), LinkRecord::default);
                }
                for (link_index, (record, link)) in links.iter_mut().zip(&span.links).enumerate() {
                    record.trace_id = trace_id(&link.trace_id, || at.link(link_index, "traceId"))?;
                    record.span_id = span_id(&link.span_id, || at.link(link_index, "spanId"))?;
                    record.trace_state = &link.trace_state;
                    record.flags = link.flags;
                    record.dropped_attributes_count = link.dropped_attributes_count;
                    record.attributes.clear();
                    push_pairs(&link.attributes, &mut forms, &mut record.attributes);
                }

                span_otlp.clear();
                encode_span_otlp(span, &mut span_otlp)?;

                let (status_code, status_message) = span
                    .status
                    .as_ref()
                    .map_or((0, ""), |status| (status.code, status.message.as_str()));
                builder.append(&SpanRecord {
                    trace_id: ids.trace_id,
                    span_id: ids.span_id,
                    parent_span_id: ids.parent_span_id,
                    trace_state: &span.trace_state,
                    flags: span.flags,
                    name: &span.name,
                    kind: span.kind,
                    start_time_unix_nano: ids.start,
                    end_time_unix_nano: ids.end,
                    status_code,
                    status_message,
                    service_name,
                    agent: crate::normalize::agent_fields(span, extracted),
                    resource_attributes: &resource_attributes,
                    resource_schema_url: &resource_spans.schema_url,
                    scope_name: scope.map_or("", |scope| scope.name.as_str()),
                    scope_version: scope.map_or("", |scope| scope.version.as_str()),
                    scope_attributes: &scope_attributes,
                    scope_schema_url: &scope_spans.schema_url,
                    attributes: &attributes,
                    dropped_attributes_count: span.dropped_attributes_count,
                    events: &events[..span.events.len()],
                    dropped_events_count: span.dropped_events_count,
                    links: &links[..span.links.len()],
                    dropped_links_count: span.dropped_links_count,
                    resource_otlp: &resource_otlp,
                    scope_otlp: &scope_otlp,
                    span_otlp: &span_otlp,
                    log: None,
                });
            }
        }
    }
    debug_assert!(forms.is_exhausted(), "pass 1 and pass 2 walked differently");
    let spans = builder.len();
    tracing::trace!(spans, "mapped otlp export request to span rows");
    Ok(SpanBatch {
        batch: builder.finish(),
        spans,
    })
}

/// Encodes an optional message for a hidden column: `None` -> empty, a message whose encoding is
/// empty -> `present_empty`, otherwise its protobuf encoding.
pub(crate) fn encode_optional<M: Message>(message: Option<&M>, present_empty: &[u8]) -> Vec<u8> {
    match message {
        None => Vec::new(),
        Some(message) => {
            let bytes = message.encode_to_vec();
            if bytes.is_empty() {
                present_empty.to_vec()
            } else {
                bytes
            }
        }
    }
}

/// Writes `span_otlp` (see the module docs) by hand, so no partial `Span` is cloned.
fn encode_span_otlp(span: &Span, out: &mut Vec<u8>) -> Result<()> {
    for pair in &span.attributes {
        out.push(SPAN_ATTRIBUTES_KEY);
        pair.encode_length_delimited(out)?;
    }
    for event in &span.events {
        out.push(SPAN_EVENTS_KEY);
        prost::encode_length_delimiter(nested_attributes_len(&event.attributes), out)?;
        for pair in &event.attributes {
            out.push(EVENT_ATTRIBUTES_KEY);
            pair.encode_length_delimited(out)?;
        }
    }
    for link in &span.links {
        out.push(SPAN_LINKS_KEY);
        prost::encode_length_delimiter(nested_attributes_len(&link.attributes), out)?;
        for pair in &link.attributes {
            out.push(LINK_ATTRIBUTES_KEY);
            pair.encode_length_delimited(out)?;
        }
    }
    if let Some(status) = &span.status
        && status.code == 0
        && status.message.is_empty()
    {
        out.extend_from_slice(&[SPAN_STATUS_KEY, 0]);
    }
    Ok(())
}

/// Encoded length of a repeated `KeyValue` field with a one-byte key.
fn nested_attributes_len(attributes: &[KeyValue]) -> usize {
    attributes
        .iter()
        .map(|pair| {
            let len = pair.encoded_len();
            1 + prost::length_delimiter_len(len) + len
        })
        .sum()
}

/// String forms that cannot be borrowed from the request, in walk order.
#[derive(Debug, Default)]
struct StringForms {
    text: String,
    /// End offset in `text` of each form; each starts where the previous one ended.
    ends: Vec<usize>,
}

impl StringForms {
    /// Pass 1: checks every span and collects the string forms, walking the request in the same
    /// order as [`to_span_batch`]'s pass 2.
    fn validate_and_collect(request: &ExportTraceServiceRequest) -> Result<StringForms> {
        let mut forms = StringForms::default();
        for (resource_index, resource_spans) in request.resource_spans.iter().enumerate() {
            if let Some(resource) = &resource_spans.resource {
                forms.collect(&resource.attributes);
            }
            for (scope_index, scope_spans) in resource_spans.scope_spans.iter().enumerate() {
                if let Some(scope) = &scope_spans.scope {
                    forms.collect(&scope.attributes);
                }
                for (span_index, span) in scope_spans.spans.iter().enumerate() {
                    let at = SpanPath {
                        resource: resource_index,
                        scope: scope_index,
                        span: span_index,
                    };
                    SpanIds::of(span, &at)?;
                    forms.collect(&span.attributes);
                    for (event_index, event) in span.events.iter().enumerate() {
                        time(event.time_unix_nano, || {
                            at.nested("events", event_index, "timeUnixNano")
                        })?;
                        forms.collect(&event.attributes);
                    }
                    for (link_index, link) in span.links.iter().enumerate() {
                        trace_id(&link.trace_id, || at.link(link_index, "traceId"))?;
                        span_id(&link.span_id, || at.link(link_index, "spanId"))?;
                        forms.collect(&link.attributes);
                    }
                }
            }
        }
        Ok(forms)
    }

    fn collect(&mut self, attributes: &[KeyValue]) {
        for pair in attributes {
            let value = pair.value.as_ref();
            if borrowed_form(value).is_none() {
                write_string_form(value, &mut self.text);
                self.ends.push(self.text.len());
            }
        }
    }

    fn cursor(&self) -> FormCursor<'_> {
        FormCursor {
            text: &self.text,
            ends: self.ends.iter(),
            start: 0,
        }
    }
}

/// Pass 2's read position in [`StringForms`].
#[derive(Debug)]
struct FormCursor<'s> {
    text: &'s str,
    ends: std::slice::Iter<'s, usize>,
    start: usize,
}

impl<'s> FormCursor<'s> {
    fn next_form(&mut self) -> &'s str {
        let end = self.ends.next().copied();
        debug_assert!(
            end.is_some(),
            "pass 2 asked for more string forms than pass 1 wrote"
        );
        let end = end.unwrap_or(self.start);
        let form = self.text.get(self.start..end).unwrap_or_default();
        self.start = end;
        form
    }

    fn is_exhausted(&self) -> bool {
        self.ends.len() == 0
    }
}

/// Appends (key, string form) pairs, borrowing from the request and from `forms`.
fn push_pairs<'s>(
    attributes: &'s [KeyValue],
    forms: &mut FormCursor<'s>,
    out: &mut Vec<AttributePair<'s>>,
) {
    for pair in attributes {
        let form = match borrowed_form(pair.value.as_ref()) {
            Some(text) => text,
            None => forms.next_form(),
        };
        out.push((pair.key.as_str(), Cow::Borrowed(form)));
    }
}

/// Indexes of a span in its request, for error paths.
#[derive(Debug, Clone, Copy)]
struct SpanPath {
    resource: usize,
    scope: usize,
    span: usize,
}

impl SpanPath {
    fn field(&self, field: &str) -> String {
        format!(
            "resourceSpans[{}].scopeSpans[{}].spans[{}].{field}",
            self.resource, self.scope, self.span
        )
    }

    fn nested(&self, list: &str, index: usize, field: &str) -> String {
        self.field(&format!("{list}[{index}].{field}"))
    }

    fn link(&self, index: usize, field: &str) -> String {
        self.nested("links", index, field)
    }
}

/// The checked ids and times of one span.
#[derive(Debug)]
struct SpanIds {
    trace_id: TraceId,
    span_id: SpanId,
    parent_span_id: Option<SpanId>,
    start: i64,
    end: i64,
}

impl SpanIds {
    fn of(span: &Span, at: &SpanPath) -> Result<SpanIds> {
        let trace_id = trace_id(&span.trace_id, || at.field("traceId"))?;
        let span_id = span_id(&span.span_id, || at.field("spanId"))?;
        let parent_span_id = if span.parent_span_id.is_empty() {
            None
        } else {
            let parent = <[u8; 8]>::try_from(span.parent_span_id.as_slice()).map_err(|_| {
                invalid(
                    at.field("parentSpanId"),
                    SpanProblem::IdLength {
                        expected: 8,
                        found: span.parent_span_id.len(),
                        optional: true,
                    },
                )
            })?;
            Some(SpanId(parent))
        };
        let start = time(span.start_time_unix_nano, || at.field("startTimeUnixNano"))?;
        let end = time(span.end_time_unix_nano, || at.field("endTimeUnixNano"))?;
        Ok(SpanIds {
            trace_id,
            span_id,
            parent_span_id,
            start,
            end,
        })
    }
}

fn invalid(path: String, problem: SpanProblem) -> Error {
    Error::InvalidSpan { path, problem }
}

fn fixed_id<const N: usize>(bytes: &[u8], path: impl FnOnce() -> String) -> Result<[u8; N]> {
    let Ok(id) = <[u8; N]>::try_from(bytes) else {
        return Err(invalid(
            path(),
            SpanProblem::IdLength {
                expected: N,
                found: bytes.len(),
                optional: false,
            },
        ));
    };
    if id == [0; N] {
        return Err(invalid(path(), SpanProblem::ZeroId));
    }
    Ok(id)
}

fn trace_id(bytes: &[u8], path: impl FnOnce() -> String) -> Result<TraceId> {
    fixed_id(bytes, path).map(TraceId)
}

fn span_id(bytes: &[u8], path: impl FnOnce() -> String) -> Result<SpanId> {
    fixed_id(bytes, path).map(SpanId)
}

fn time(value: u64, path: impl FnOnce() -> String) -> Result<i64> {
    i64::try_from(value).map_err(|_| invalid(path(), SpanProblem::TimeOutOfRange { value }))
}

#[cfg(test)]
mod tests;
