//! [`SpanBatchBuilder`]: builds a `RecordBatch` in the [span schema](crate::span_schema) from
//! borrowed span fields, so ingest (and tests) never assemble the nested Arrow arrays by hand.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Builder, Int64Builder, ListArray, ListBuilder, MapBuilder,
    MapFieldNames, StringBuilder, StructArray, TimestampNanosecondBuilder, UInt32Builder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field};
use arrow::record_batch::RecordBatch;

use crate::ids::{SpanId, TraceId};
use crate::schema::{
    event_fields, event_item_field, link_fields, link_item_field, span_kind_name, span_schema,
    status_code_name,
};

/// One attribute as (key, string form). See [`crate::schema::attribute_map_type`].
pub type AttributePair<'a> = (&'a str, Cow<'a, str>);

/// One span event, borrowed.
#[derive(Debug, Clone, Default)]
pub struct EventRecord<'a> {
    /// Event time, ns since the epoch.
    pub time_unix_nano: i64,
    /// Event name.
    pub name: &'a str,
    /// Attributes as string forms.
    pub attributes: Vec<AttributePair<'a>>,
    /// `Event.dropped_attributes_count`.
    pub dropped_attributes_count: u32,
}

/// One span link, borrowed.
#[derive(Debug, Clone, Default)]
pub struct LinkRecord<'a> {
    /// Linked trace id.
    pub trace_id: TraceId,
    /// Linked span id.
    pub span_id: SpanId,
    /// Linked trace state ("" when none).
    pub trace_state: &'a str,
    /// `Link.flags`.
    pub flags: u32,
    /// Attributes as string forms.
    pub attributes: Vec<AttributePair<'a>>,
    /// `Link.dropped_attributes_count`.
    pub dropped_attributes_count: u32,
}

/// The agent columns of one span, resolved across dialects by ingest (see
/// `docs/conventions.md`). `None` becomes NULL.
///
/// `session_id`, `conversation_id` and `user_id` hold what this span itself says; the engine
/// propagates them to every span of the trace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFields<'a> {
    /// Session id.
    pub session_id: Option<Cow<'a, str>>,
    /// Conversation id.
    pub conversation_id: Option<Cow<'a, str>>,
    /// End-user id.
    pub user_id: Option<Cow<'a, str>>,
    /// GenAI operation.
    pub operation: Option<Cow<'a, str>>,
    /// Provider.
    pub provider: Option<Cow<'a, str>>,
    /// Requested model.
    pub request_model: Option<Cow<'a, str>>,
    /// Model that answered.
    pub response_model: Option<Cow<'a, str>>,
    /// Agent name.
    pub agent_name: Option<Cow<'a, str>>,
    /// Agent id.
    pub agent_id: Option<Cow<'a, str>>,
    /// Workflow name.
    pub workflow_name: Option<Cow<'a, str>>,
    /// Tool name.
    pub tool_name: Option<Cow<'a, str>>,
    /// Tool call id.
    pub tool_call_id: Option<Cow<'a, str>>,
    /// Tool type.
    pub tool_type: Option<Cow<'a, str>>,
    /// Tool risk class.
    pub tool_risk: Option<Cow<'a, str>>,
    /// Input tokens.
    pub input_tokens: Option<i64>,
    /// Output tokens.
    pub output_tokens: Option<i64>,
    /// Cache-read input tokens.
    pub cache_read_tokens: Option<i64>,
    /// Cache-write input tokens.
    pub cache_write_tokens: Option<i64>,
    /// Reasoning output tokens.
    pub reasoning_tokens: Option<i64>,
    /// Finish reasons.
    pub finish_reasons: Option<Vec<Cow<'a, str>>>,
    /// Error type.
    pub error_type: Option<Cow<'a, str>>,
    /// Retry attempt.
    pub retry_attempt: Option<i64>,
    /// Strongest decision verdict.
    pub decision_verdict: Option<Cow<'a, str>>,
    /// Dialects that supplied the columns, comma separated.
    pub dialect: Option<Cow<'a, str>>,
}

/// The fields of an OTLP log record that no span column holds (the `log` column; see
/// [`crate::schema::columns::LOG`]). A [`SpanRecord`] with `log: Some(..)` is a log row.
#[derive(Debug, Clone, Default)]
pub struct LogFields<'a> {
    /// Event name (`LogRecord.event_name`, else the `event.name` attribute).
    pub event_name: Option<&'a str>,
    /// `LogRecord.observed_time_unix_nano`; 0 is stored as NULL.
    pub observed_time_unix_nano: i64,
    /// `LogRecord.severity_number`.
    pub severity_number: i32,
    /// `LogRecord.severity_text`.
    pub severity_text: &'a str,
    /// OTLP/JSON of the body; `None` when the record has none.
    pub body_json: Option<&'a str>,
    /// Protobuf encoding of the whole stored `LogRecord`.
    pub otlp: &'a [u8],
}

/// Everything about one span that goes into a row, borrowed from the decoded request.
///
/// Empty strings become NULL in the nullable columns (proto3 does not distinguish them).
#[derive(Debug, Clone, Default)]
pub struct SpanRecord<'a> {
    /// Trace id.
    pub trace_id: TraceId,
    /// Span id.
    pub span_id: SpanId,
    /// Parent span id; `None` for a root span.
    pub parent_span_id: Option<SpanId>,
    /// W3C trace state.
    pub trace_state: &'a str,
    /// `Span.flags`.
    pub flags: u32,
    /// Span name.
    pub name: &'a str,
    /// OTLP span kind enum value.
    pub kind: i32,
    /// Start time, ns since the epoch.
    pub start_time_unix_nano: i64,
    /// End time, ns since the epoch.
    pub end_time_unix_nano: i64,
    /// OTLP status code enum value.
    pub status_code: i32,
    /// Status message.
    pub status_message: &'a str,
    /// Resource `service.name` string form.
    pub service_name: Option<&'a str>,
    /// Agent columns resolved by ingest.
    pub agent: AgentFields<'a>,
    /// Resource attributes as string forms.
    pub resource_attributes: &'a [AttributePair<'a>],
    /// `ResourceSpans.schema_url`.
    pub resource_schema_url: &'a str,
    /// Scope name.
    pub scope_name: &'a str,
    /// Scope version.
    pub scope_version: &'a str,
    /// Scope attributes as string forms.
    pub scope_attributes: &'a [AttributePair<'a>],
    /// `ScopeSpans.schema_url`.
    pub scope_schema_url: &'a str,
    /// Span attributes as string forms.
    pub attributes: &'a [AttributePair<'a>],
    /// `Span.dropped_attributes_count`.
    pub dropped_attributes_count: u32,
    /// Events.
    pub events: &'a [EventRecord<'a>],
    /// `Span.dropped_events_count`.
    pub dropped_events_count: u32,
    /// Links.
    pub links: &'a [LinkRecord<'a>],
    /// `Span.dropped_links_count`.
    pub dropped_links_count: u32,
    /// Protobuf bytes of the resource (see [`crate::schema::columns::RESOURCE_OTLP`]).
    pub resource_otlp: &'a [u8],
    /// Protobuf bytes of the scope (see [`crate::schema::columns::SCOPE_OTLP`]).
    pub scope_otlp: &'a [u8],
    /// Protobuf bytes of the typed attribute lists (see [`crate::schema::columns::SPAN_OTLP`]).
    pub span_otlp: &'a [u8],
    /// Set on a log record's row (see [`LogFields`]); `None` for a span.
    pub log: Option<LogFields<'a>>,
}

fn map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::new(
        Some(MapFieldNames {
            entry: "entries".to_owned(),
            key: "keys".to_owned(),
            value: "values".to_owned(),
        }),
        StringBuilder::new(),
        StringBuilder::new(),
    )
}

fn append_map(builder: &mut MapBuilder<StringBuilder, StringBuilder>, pairs: &[AttributePair<'_>]) {
    for (key, value) in pairs {
        builder.keys().append_value(key);
        builder.values().append_value(value);
    }
    // Appending a non-null entry cannot fail: keys and values were appended pairwise.
    let _ = builder.append(true);
}

fn optional(text: &str) -> Option<&str> {
    if text.is_empty() { None } else { Some(text) }
}

/// Builds a span `RecordBatch`, one [`SpanRecord`] at a time.
#[derive(Debug)]
pub struct SpanBatchBuilder {
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent_span_id: StringBuilder,
    trace_state: StringBuilder,
    flags: UInt32Builder,
    span_name: StringBuilder,
    span_kind: StringBuilder,
    start_time: TimestampNanosecondBuilder,
    end_time: TimestampNanosecondBuilder,
    duration_ns: Int64Builder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    service_name: StringBuilder,
    agent: AgentBuilders,
    resource_attributes: MapBuilder<StringBuilder, StringBuilder>,
    resource_schema_url: StringBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    scope_attributes: MapBuilder<StringBuilder, StringBuilder>,
    scope_schema_url: StringBuilder,
    attributes: MapBuilder<StringBuilder, StringBuilder>,
    dropped_attributes_count: UInt32Builder,
    event_offsets: Vec<i32>,
    event_time: TimestampNanosecondBuilder,
    event_name: StringBuilder,
    event_attributes: MapBuilder<StringBuilder, StringBuilder>,
    event_dropped: UInt32Builder,
    dropped_events_count: UInt32Builder,
    link_offsets: Vec<i32>,
    link_trace_id: StringBuilder,
    link_span_id: StringBuilder,
    link_trace_state: StringBuilder,
    link_flags: UInt32Builder,
    link_attributes: MapBuilder<StringBuilder, StringBuilder>,
    link_dropped: UInt32Builder,
    dropped_links_count: UInt32Builder,
    resource_otlp: BinaryBuilder,
    scope_otlp: BinaryBuilder,
    span_otlp: BinaryBuilder,
    log: LogBuilders,
    rows: usize,
}

/// Builders of the `log` struct's fields, and its validity.
#[derive(Debug)]
struct LogBuilders {
    event_name: StringBuilder,
    observed_time: TimestampNanosecondBuilder,
    severity_number: Int32Builder,
    severity_text: StringBuilder,
    body: StringBuilder,
    otlp: BinaryBuilder,
    valid: Vec<bool>,
}

impl Default for LogBuilders {
    fn default() -> Self {
        LogBuilders {
            event_name: StringBuilder::new(),
            observed_time: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            severity_number: Int32Builder::new(),
            severity_text: StringBuilder::new(),
            body: StringBuilder::new(),
            otlp: BinaryBuilder::new(),
            valid: Vec::new(),
        }
    }
}

impl LogBuilders {
    fn append(&mut self, log: Option<&LogFields<'_>>) {
        match log {
            Some(log) => {
                self.event_name.append_option(log.event_name);
                self.observed_time.append_option(
                    (log.observed_time_unix_nano != 0).then_some(log.observed_time_unix_nano),
                );
                self.severity_number.append_value(log.severity_number);
                self.severity_text
                    .append_option(optional(log.severity_text));
                self.body.append_option(log.body_json);
                self.otlp.append_value(log.otlp);
            }
            None => {
                self.event_name.append_null();
                self.observed_time.append_null();
                self.severity_number.append_null();
                self.severity_text.append_null();
                self.body.append_null();
                self.otlp.append_null();
            }
        }
        self.valid.push(log.is_some());
    }

    fn finish(&mut self) -> ArrayRef {
        let valid = std::mem::take(&mut self.valid);
        let nulls = valid
            .iter()
            .any(|valid| !valid)
            .then(|| arrow::buffer::NullBuffer::from(valid));
        Arc::new(StructArray::new(
            crate::schema::log_fields(),
            vec![
                Arc::new(self.event_name.finish()) as ArrayRef,
                Arc::new(self.observed_time.finish()),
                Arc::new(self.severity_number.finish()),
                Arc::new(self.severity_text.finish()),
                Arc::new(self.body.finish()),
                Arc::new(self.otlp.finish()),
            ],
            nulls,
        ))
    }
}

impl Default for SpanBatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl SpanBatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        let timestamps = || TimestampNanosecondBuilder::new().with_timezone("UTC");
        SpanBatchBuilder {
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            parent_span_id: StringBuilder::new(),
            trace_state: StringBuilder::new(),
            flags: UInt32Builder::new(),
            span_name: StringBuilder::new(),
            span_kind: StringBuilder::new(),
            start_time: timestamps(),
            end_time: timestamps(),
            duration_ns: Int64Builder::new(),
            status_code: StringBuilder::new(),
            status_message: StringBuilder::new(),
            service_name: StringBuilder::new(),
            agent: AgentBuilders::default(),
            resource_attributes: map_builder(),
            resource_schema_url: StringBuilder::new(),
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
            scope_attributes: map_builder(),
            scope_schema_url: StringBuilder::new(),
            attributes: map_builder(),
            dropped_attributes_count: UInt32Builder::new(),
            event_offsets: vec![0],
            event_time: timestamps(),
            event_name: StringBuilder::new(),
            event_attributes: map_builder(),
            event_dropped: UInt32Builder::new(),
            dropped_events_count: UInt32Builder::new(),
            link_offsets: vec![0],
            link_trace_id: StringBuilder::new(),
            link_span_id: StringBuilder::new(),
            link_trace_state: StringBuilder::new(),
            link_flags: UInt32Builder::new(),
            link_attributes: map_builder(),
            link_dropped: UInt32Builder::new(),
            dropped_links_count: UInt32Builder::new(),
            resource_otlp: BinaryBuilder::new(),
            scope_otlp: BinaryBuilder::new(),
            span_otlp: BinaryBuilder::new(),
            log: LogBuilders::default(),
            rows: 0,
        }
    }

    /// An empty builder with room for `rows` spans (avoids regrowing buffers on the hot path).
    pub fn with_capacity(rows: usize) -> Self {
        let timestamps = || TimestampNanosecondBuilder::with_capacity(rows).with_timezone("UTC");
        let ids = |width: usize| StringBuilder::with_capacity(rows, rows * width);
        let strings = || StringBuilder::with_capacity(rows, rows * 16);
        let counts = || UInt32Builder::with_capacity(rows);
        let mut builder = SpanBatchBuilder::new();
        builder.trace_id = ids(32);
        builder.span_id = ids(16);
        builder.parent_span_id = ids(16);
        builder.trace_state = StringBuilder::with_capacity(rows, 0);
        builder.flags = counts();
        builder.span_name = strings();
        builder.span_kind = StringBuilder::with_capacity(rows, rows * 8);
        builder.start_time = timestamps();
        builder.end_time = timestamps();
        builder.duration_ns = Int64Builder::with_capacity(rows);
        builder.status_code = StringBuilder::with_capacity(rows, rows * 5);
        builder.status_message = StringBuilder::with_capacity(rows, 0);
        builder.service_name = strings();
        builder.dropped_attributes_count = counts();
        builder.dropped_events_count = counts();
        builder.dropped_links_count = counts();
        builder.event_offsets.reserve(rows);
        builder.link_offsets.reserve(rows);
        builder.resource_otlp = BinaryBuilder::with_capacity(rows, rows * 64);
        builder.scope_otlp = BinaryBuilder::with_capacity(rows, rows * 16);
        builder.span_otlp = BinaryBuilder::with_capacity(rows, rows * 256);
        builder
    }

    /// Number of spans appended so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True when no span was appended.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one span as one row.
    pub fn append(&mut self, span: &SpanRecord<'_>) {
        let mut trace_hex = [0u8; 32];
        let mut span_hex = [0u8; 16];
        self.trace_id
            .append_value(span.trace_id.encode_hex(&mut trace_hex));
        self.span_id
            .append_value(span.span_id.encode_hex(&mut span_hex));
        match span.parent_span_id {
            Some(parent) => self
                .parent_span_id
                .append_value(parent.encode_hex(&mut span_hex)),
            None => self.parent_span_id.append_null(),
        }
        self.trace_state.append_option(optional(span.trace_state));
        self.flags.append_value(span.flags);
        self.span_name.append_value(span.name);
        self.span_kind
            .append_value(span_kind_name(span.kind).as_ref());
        self.start_time.append_value(span.start_time_unix_nano);
        self.end_time.append_value(span.end_time_unix_nano);
        self.duration_ns.append_value(
            span.end_time_unix_nano
                .wrapping_sub(span.start_time_unix_nano),
        );
        self.status_code
            .append_value(status_code_name(span.status_code).as_ref());
        self.status_message
            .append_option(optional(span.status_message));
        self.service_name.append_option(span.service_name);
        self.agent.append(&span.agent);
        append_map(&mut self.resource_attributes, span.resource_attributes);
        self.resource_schema_url
            .append_option(optional(span.resource_schema_url));
        self.scope_name.append_option(optional(span.scope_name));
        self.scope_version
            .append_option(optional(span.scope_version));
        append_map(&mut self.scope_attributes, span.scope_attributes);
        self.scope_schema_url
            .append_option(optional(span.scope_schema_url));
        append_map(&mut self.attributes, span.attributes);
        self.dropped_attributes_count
            .append_value(span.dropped_attributes_count);

        for event in span.events {
            self.event_time.append_value(event.time_unix_nano);
            self.event_name.append_value(event.name);
            append_map(&mut self.event_attributes, &event.attributes);
            self.event_dropped
                .append_value(event.dropped_attributes_count);
        }
        let last = self.event_offsets.last().copied().unwrap_or(0);
        self.event_offsets.push(last + offset(span.events.len()));
        self.dropped_events_count
            .append_value(span.dropped_events_count);

        for link in span.links {
            self.link_trace_id
                .append_value(link.trace_id.encode_hex(&mut trace_hex));
            self.link_span_id
                .append_value(link.span_id.encode_hex(&mut span_hex));
            self.link_trace_state
                .append_option(optional(link.trace_state));
            self.link_flags.append_value(link.flags);
            append_map(&mut self.link_attributes, &link.attributes);
            self.link_dropped
                .append_value(link.dropped_attributes_count);
        }
        let last = self.link_offsets.last().copied().unwrap_or(0);
        self.link_offsets.push(last + offset(span.links.len()));
        self.dropped_links_count
            .append_value(span.dropped_links_count);

        self.resource_otlp.append_value(span.resource_otlp);
        self.scope_otlp.append_value(span.scope_otlp);
        self.span_otlp.append_value(span.span_otlp);
        self.log.append(span.log.as_ref());
        self.rows += 1;
    }

    /// Finishes the batch. The builder is left empty and can be reused.
    pub fn finish(&mut self) -> RecordBatch {
        let events = StructArray::new(
            event_fields(),
            vec![
                Arc::new(self.event_time.finish()) as ArrayRef,
                Arc::new(self.event_name.finish()),
                Arc::new(self.event_attributes.finish()),
                Arc::new(self.event_dropped.finish()),
            ],
            None,
        );
        let event_offsets = std::mem::replace(&mut self.event_offsets, vec![0]);
        let events = ListArray::new(
            Arc::new(event_item_field()),
            OffsetBuffer::new(event_offsets.into()),
            Arc::new(events),
            None,
        );
        let links = StructArray::new(
            link_fields(),
            vec![
                Arc::new(self.link_trace_id.finish()) as ArrayRef,
                Arc::new(self.link_span_id.finish()),
                Arc::new(self.link_trace_state.finish()),
                Arc::new(self.link_flags.finish()),
                Arc::new(self.link_attributes.finish()),
                Arc::new(self.link_dropped.finish()),
            ],
            None,
        );
        let link_offsets = std::mem::replace(&mut self.link_offsets, vec![0]);
        let links = ListArray::new(
            Arc::new(link_item_field()),
            OffsetBuffer::new(link_offsets.into()),
            Arc::new(links),
            None,
        );
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.span_name.finish()),
            Arc::new(self.span_kind.finish()),
            Arc::new(self.start_time.finish()),
            Arc::new(self.end_time.finish()),
            Arc::new(self.duration_ns.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
            Arc::new(self.service_name.finish()),
        ];
        columns.extend(self.agent.finish());
        columns.extend::<[ArrayRef; 15]>([
            Arc::new(self.resource_attributes.finish()),
            Arc::new(self.resource_schema_url.finish()),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            Arc::new(self.scope_attributes.finish()),
            Arc::new(self.scope_schema_url.finish()),
            Arc::new(self.attributes.finish()),
            Arc::new(self.dropped_attributes_count.finish()),
            Arc::new(events),
            Arc::new(self.dropped_events_count.finish()),
            Arc::new(links),
            Arc::new(self.dropped_links_count.finish()),
            Arc::new(self.resource_otlp.finish()),
            Arc::new(self.scope_otlp.finish()),
            Arc::new(self.span_otlp.finish()),
        ]);
        // Set by the engine when it accepts the write.
        let rows = self.rows;
        columns.push(arrow::array::new_null_array(
            &crate::schema::timestamp_type(),
            rows,
        ));
        // Set by the engine from the write's content references.
        columns.push(arrow::array::new_null_array(
            &arrow::datatypes::DataType::Binary,
            rows,
        ));
        columns.push(self.log.finish());
        self.rows = 0;
        // The columns are built to match span_schema() field for field; a mismatch is a bug in
        // this file, caught by the unit test below.
        match RecordBatch::try_new(span_schema(), columns) {
            Ok(batch) => batch,
            Err(error) => panic!("span batch does not match the span schema: {error}"),
        }
    }
}

/// Builders for the agent columns, in schema order.
#[derive(Debug, Default)]
struct AgentBuilders {
    strings_before_tokens: [StringBuilder; 14],
    tokens: [Int64Builder; 5],
    finish_reasons: ListBuilder<StringBuilder>,
    error_type: StringBuilder,
    retry_attempt: Int64Builder,
    decision_verdict: StringBuilder,
    dialect: StringBuilder,
    retention_tier: StringBuilder,
}

impl AgentBuilders {
    fn append(&mut self, agent: &AgentFields<'_>) {
        let strings = [
            &agent.session_id,
            &agent.conversation_id,
            &agent.user_id,
            &agent.operation,
            &agent.provider,
            &agent.request_model,
            &agent.response_model,
            &agent.agent_name,
            &agent.agent_id,
            &agent.workflow_name,
            &agent.tool_name,
            &agent.tool_call_id,
            &agent.tool_type,
            &agent.tool_risk,
        ];
        for (builder, value) in self.strings_before_tokens.iter_mut().zip(strings) {
            builder.append_option(value.as_deref());
        }
        let tokens = [
            agent.input_tokens,
            agent.output_tokens,
            agent.cache_read_tokens,
            agent.cache_write_tokens,
            agent.reasoning_tokens,
        ];
        for (builder, value) in self.tokens.iter_mut().zip(tokens) {
            builder.append_option(value);
        }
        match &agent.finish_reasons {
            Some(reasons) => {
                for reason in reasons {
                    self.finish_reasons.values().append_value(reason);
                }
                self.finish_reasons.append(true);
            }
            None => self.finish_reasons.append(false),
        }
        self.error_type.append_option(agent.error_type.as_deref());
        self.retry_attempt.append_option(agent.retry_attempt);
        self.decision_verdict
            .append_option(agent.decision_verdict.as_deref());
        self.dialect.append_option(agent.dialect.as_deref());
        // Placed by the retention rules after mapping (see `with_retention_tiers`).
        self.retention_tier.append_null();
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        let mut out: Vec<ArrayRef> = Vec::with_capacity(24);
        for builder in &mut self.strings_before_tokens {
            out.push(Arc::new(builder.finish()));
        }
        for builder in &mut self.tokens {
            out.push(Arc::new(builder.finish()));
        }
        let reasons = self.finish_reasons.finish();
        let (_, offsets, values, nulls) = reasons.into_parts();
        out.push(Arc::new(ListArray::new(
            Arc::new(Field::new("item", DataType::Utf8, false)),
            offsets,
            values,
            nulls,
        )));
        out.push(Arc::new(self.error_type.finish()));
        out.push(Arc::new(self.retry_attempt.finish()));
        out.push(Arc::new(self.decision_verdict.finish()));
        out.push(Arc::new(self.dialect.finish()));
        out.push(Arc::new(self.retention_tier.finish()));
        out
    }
}

/// Sets the `retention_tier` column of a span batch: `tiers[row]` is the tier a retention rule
/// placed the row in, `None` for the engine's default tier.
pub fn with_retention_tiers(
    batch: &RecordBatch,
    tiers: &[Option<&str>],
) -> crate::Result<RecordBatch> {
    let index = crate::schema::column_index(crate::schema::columns::RETENTION_TIER);
    if tiers.len() != batch.num_rows() {
        return Err(crate::Error::SchemaMismatch(format!(
            "{} retention tiers for {} rows",
            tiers.len(),
            batch.num_rows()
        )));
    }
    let mut columns = batch.columns().to_vec();
    columns[index] = Arc::new(tiers.iter().copied().collect::<arrow::array::StringArray>());
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

fn offset(len: usize) -> i32 {
    // A single span with more than i32::MAX events cannot be decoded from a 64 MiB request.
    i32::try_from(len).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};

    #[test]
    fn builder_output_matches_the_span_schema() {
        let mut builder = SpanBatchBuilder::new();
        let attrs = [("k", Cow::Borrowed("v"))];
        let events = [EventRecord {
            time_unix_nano: 5,
            name: "e",
            attributes: vec![("a", Cow::Borrowed("1"))],
            dropped_attributes_count: 2,
        }];
        builder.append(&SpanRecord {
            trace_id: TraceId([1; 16]),
            span_id: SpanId([2; 8]),
            name: "root",
            kind: 2,
            start_time_unix_nano: 10,
            end_time_unix_nano: 25,
            attributes: &attrs,
            events: &events,
            ..SpanRecord::default()
        });
        builder.append(&SpanRecord {
            trace_id: TraceId([1; 16]),
            span_id: SpanId([3; 8]),
            parent_span_id: Some(SpanId([2; 8])),
            ..SpanRecord::default()
        });
        let batch = builder.finish();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), span_schema());
        let kinds = batch.column(6).as_string::<i32>();
        assert!(
            batch
                .column(crate::schema::column_index("session_id"))
                .is_null(0)
        );
        assert_eq!(kinds.value(0), "server");
        let durations = batch
            .column(9)
            .as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(durations.value(0), 15);
        assert!(batch.column(2).is_null(0));
        let events = batch
            .column(crate::schema::column_index("events"))
            .as_list::<i32>();
        assert_eq!(events.value_length(0), 1);
        assert_eq!(events.value_length(1), 0);
        assert!(builder.is_empty());
    }
}
