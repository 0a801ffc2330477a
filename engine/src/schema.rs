//! The span row schema: the one Arrow schema shared by ingest (which builds rows), the engine
//! (which stores them) and query (which exposes them to SQL).
//!
//! One row per OTLP span. Scalar OTLP fields have their own typed columns. Attribute sets are
//! stored twice: as a `Map<Utf8, Utf8>` of *string forms* that SQL can index
//! (`attributes['gen_ai.tool.name']`), and inside the hidden `*_otlp` columns as the protobuf
//! encoding of the original typed values, so every OTLP field reads back exactly. The mapping
//! from OTLP fields to columns is written down in `docs/design/storage-format.md`.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Column names of the span schema, in schema order.
pub mod columns {
    /// Trace id, 32 lowercase hex characters.
    pub const TRACE_ID: &str = "trace_id";
    /// Span id, 16 lowercase hex characters.
    pub const SPAN_ID: &str = "span_id";
    /// Parent span id, 16 lowercase hex characters; NULL for a root span.
    pub const PARENT_SPAN_ID: &str = "parent_span_id";
    /// W3C trace state; NULL when empty.
    pub const TRACE_STATE: &str = "trace_state";
    /// OTLP span flags (W3C trace flags in the low byte).
    pub const FLAGS: &str = "flags";
    /// Span name.
    pub const SPAN_NAME: &str = "span_name";
    /// Span kind: `unspecified`, `internal`, `server`, `client`, `producer`, `consumer`, or the
    /// decimal number of a kind this version does not know.
    pub const SPAN_KIND: &str = "span_kind";
    /// Start time, nanoseconds since the Unix epoch, UTC.
    pub const START_TIME: &str = "start_time";
    /// End time, nanoseconds since the Unix epoch, UTC.
    pub const END_TIME: &str = "end_time";
    /// `end_time - start_time` in nanoseconds (negative if the client sent end < start).
    pub const DURATION_NS: &str = "duration_ns";
    /// Status code: `unset`, `ok`, `error`, or the decimal number of an unknown code.
    pub const STATUS_CODE: &str = "status_code";
    /// Status message; NULL when empty.
    pub const STATUS_MESSAGE: &str = "status_message";
    /// `service.name` of the resource (its string form); NULL when absent.
    pub const SERVICE_NAME: &str = "service_name";
    /// Agent session id, resolved across dialects and propagated to every span of the trace.
    pub const SESSION_ID: &str = "session_id";
    /// Conversation id, resolved across dialects and propagated to every span of the trace.
    pub const CONVERSATION_ID: &str = "conversation_id";
    /// End-user id, resolved across dialects and propagated to every span of the trace.
    pub const USER_ID: &str = "user_id";
    /// GenAI operation (`chat`, `invoke_agent`, `execute_tool`, ...).
    pub const OPERATION: &str = "operation";
    /// GenAI provider (`openai`, `anthropic`, ...), normalized.
    pub const PROVIDER: &str = "provider";
    /// Requested model.
    pub const REQUEST_MODEL: &str = "request_model";
    /// Model that answered.
    pub const RESPONSE_MODEL: &str = "response_model";
    /// Agent name.
    pub const AGENT_NAME: &str = "agent_name";
    /// Agent id.
    pub const AGENT_ID: &str = "agent_id";
    /// Workflow name.
    pub const WORKFLOW_NAME: &str = "workflow_name";
    /// Tool name.
    pub const TOOL_NAME: &str = "tool_name";
    /// Tool call id.
    pub const TOOL_CALL_ID: &str = "tool_call_id";
    /// Tool type (`function`, `extension`, `datastore`, ...).
    pub const TOOL_TYPE: &str = "tool_type";
    /// Tool risk class (`read`, `write`, `destructive`, `external`, `access_change`, ...).
    pub const TOOL_RISK: &str = "tool_risk";
    /// Input tokens (model-call spans only; aggregates on agent spans stay in `attributes`).
    pub const INPUT_TOKENS: &str = "input_tokens";
    /// Output tokens (model-call spans only).
    pub const OUTPUT_TOKENS: &str = "output_tokens";
    /// Cache-read input tokens (a part of `input_tokens`).
    pub const CACHE_READ_TOKENS: &str = "cache_read_tokens";
    /// Cache-write input tokens (a part of `input_tokens`).
    pub const CACHE_WRITE_TOKENS: &str = "cache_write_tokens";
    /// Reasoning output tokens (a part of `output_tokens`).
    pub const REASONING_TOKENS: &str = "reasoning_tokens";
    /// Finish reasons, one vocabulary across dialects.
    pub const FINISH_REASONS: &str = "finish_reasons";
    /// Error type (`error.type`, an exception type, or `_OTHER` when the status is error).
    pub const ERROR_TYPE: &str = "error_type";
    /// Retry attempt (0 = first try), when the span says so.
    pub const RETRY_ATTEMPT: &str = "retry_attempt";
    /// Strongest verdict among the span's decisions: deny > escalate > modify > warn > allow.
    pub const DECISION_VERDICT: &str = "decision_verdict";
    /// Dialects that supplied the normalized columns, comma separated.
    pub const DIALECT: &str = "dialect";
    /// Retention tier of the row: the highest tier any span of its trace reached (the
    /// engine's default tier when no rule placed it).
    pub const RETENTION_TIER: &str = "retention_tier";
    /// Resource attributes as string forms.
    pub const RESOURCE_ATTRIBUTES: &str = "resource_attributes";
    /// `ResourceSpans.schema_url`; NULL when empty.
    pub const RESOURCE_SCHEMA_URL: &str = "resource_schema_url";
    /// Instrumentation scope name; NULL when empty.
    pub const SCOPE_NAME: &str = "scope_name";
    /// Instrumentation scope version; NULL when empty.
    pub const SCOPE_VERSION: &str = "scope_version";
    /// Instrumentation scope attributes as string forms.
    pub const SCOPE_ATTRIBUTES: &str = "scope_attributes";
    /// `ScopeSpans.schema_url`; NULL when empty.
    pub const SCOPE_SCHEMA_URL: &str = "scope_schema_url";
    /// Span attributes as string forms.
    pub const ATTRIBUTES: &str = "attributes";
    /// `Span.dropped_attributes_count`.
    pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
    /// Span events: list of struct {time, name, attributes, dropped_attributes_count}.
    pub const EVENTS: &str = "events";
    /// `Span.dropped_events_count`.
    pub const DROPPED_EVENTS_COUNT: &str = "dropped_events_count";
    /// Span links: list of struct {trace_id, span_id, trace_state, flags, attributes,
    /// dropped_attributes_count}.
    pub const LINKS: &str = "links";
    /// `Span.dropped_links_count`.
    pub const DROPPED_LINKS_COUNT: &str = "dropped_links_count";
    /// Hidden: protobuf-encoded `opentelemetry.proto.resource.v1.Resource` (exact, typed).
    /// Empty bytes mean the request had no resource; a present but empty resource is stored
    /// as the encoding of a `ResourceSpans` field 1 of length 0 (`10 00`), which decodes as an
    /// empty `Resource`, so absent and empty both read back as sent.
    pub const RESOURCE_OTLP: &str = "resource_otlp";
    /// Hidden: protobuf-encoded `opentelemetry.proto.common.v1.InstrumentationScope`; absent
    /// vs present-but-empty as for [`RESOURCE_OTLP`] (`20 00`).
    pub const SCOPE_OTLP: &str = "scope_otlp";
    /// Hidden: protobuf-encoded `opentelemetry.proto.trace.v1.Span` holding only the typed
    /// attribute lists: `attributes`, `events[i].attributes`, `links[i].attributes` (same order
    /// and count as the `events` and `links` columns), plus an empty `status` as a presence
    /// marker when the span had a status with default fields. Everything else comes from the
    /// columns.
    pub const SPAN_OTLP: &str = "span_otlp";
    /// When the engine accepted the write that stored this row (ns, UTC), strictly increasing
    /// from one write to the next, so two stored copies of one span (an export sent again)
    /// differ here. NULL for rows stored before the column existed.
    pub const ARRIVAL_TIME: &str = "arrival_time";
    /// The span's content references (hidden): for each content attribute the ingest moved to
    /// the content store, its key, keyed digest, form and pieces (see `content_refs.rs`).
    /// NULL when the span has none.
    pub const CONTENT_REFS: &str = "content_refs";
    /// Set only on the rows of OTLP log records (NULL on spans): a struct of the log fields
    /// with no span column to hold them ([`log`]). A log row keeps its trace and span id in
    /// `trace_id` / `span_id` (all zeros when the record had none), its time in `start_time`
    /// and `end_time`, its event name in `span_name`, and its attributes, resource and scope
    /// where a span keeps them; scans return span rows only unless they ask for logs
    /// ([`crate::RowFamily`]).
    pub const LOG: &str = "log";

    /// Field names inside the [`LOG`] struct.
    pub mod log {
        /// `LogRecord.event_name`, else the `event.name` attribute; NULL when neither.
        pub const EVENT_NAME: &str = "event_name";
        /// `LogRecord.observed_time_unix_nano` (ns, UTC); NULL when 0.
        pub const OBSERVED_TIME: &str = "observed_time";
        /// `LogRecord.severity_number`.
        pub const SEVERITY_NUMBER: &str = "severity_number";
        /// `LogRecord.severity_text`; NULL when empty.
        pub const SEVERITY_TEXT: &str = "severity_text";
        /// `LogRecord.body` as its OTLP/JSON encoding (`{"stringValue":"..."}`); NULL when the
        /// record has no body.
        pub const BODY: &str = "body";
        /// The protobuf encoding of the whole `LogRecord` as stored (content already replaced
        /// by references), from which the record is rebuilt exactly.
        pub const OTLP: &str = "otlp";
    }

    /// Field names inside an `events` list element.
    pub mod event {
        /// Event time, nanoseconds, UTC.
        pub const TIME: &str = "time";
        /// Event name.
        pub const NAME: &str = "name";
        /// Event attributes as string forms.
        pub const ATTRIBUTES: &str = "attributes";
        /// `Event.dropped_attributes_count`.
        pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
    }

    /// Field names inside a `links` list element.
    pub mod link {
        /// Linked trace id, lowercase hex.
        pub const TRACE_ID: &str = "trace_id";
        /// Linked span id, lowercase hex.
        pub const SPAN_ID: &str = "span_id";
        /// Linked trace state; NULL when empty.
        pub const TRACE_STATE: &str = "trace_state";
        /// `Link.flags`.
        pub const FLAGS: &str = "flags";
        /// Link attributes as string forms.
        pub const ATTRIBUTES: &str = "attributes";
        /// `Link.dropped_attributes_count`.
        pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
    }
}

/// Names of the columns that hold protobuf bytes for exact reconstruction. They are part of the
/// stored schema but not of the SQL-facing `spans` table.
pub const HIDDEN_COLUMNS: [&str; 5] = [
    columns::RESOURCE_OTLP,
    columns::SCOPE_OTLP,
    columns::SPAN_OTLP,
    columns::CONTENT_REFS,
    columns::LOG,
];

/// The fields of the [`columns::LOG`] struct.
pub fn log_fields() -> Fields {
    use columns::log::*;
    Fields::from(vec![
        Field::new(EVENT_NAME, DataType::Utf8, true),
        Field::new(OBSERVED_TIME, timestamp_type(), true),
        Field::new(SEVERITY_NUMBER, DataType::Int32, true),
        Field::new(SEVERITY_TEXT, DataType::Utf8, true),
        Field::new(BODY, DataType::Utf8, true),
        Field::new(OTLP, DataType::Binary, true),
    ])
}

/// The timestamp type used for every time column: nanoseconds, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// `Map<Utf8, Utf8>` used for every attribute set: key -> string form of the value.
///
/// String forms: strings as they are, integers in decimal, doubles in Rust's `Display` form
/// (shortest that parses back to the same value, no exponent), booleans as `true`/`false`, bytes
/// as standard base64, arrays and key-value lists as compact JSON with natural types (`null` for
/// an unset value). The typed originals are in the hidden `*_otlp` columns.
pub fn attribute_map_type() -> DataType {
    DataType::Map(Arc::new(attribute_map_entries_field()), false)
}

/// The `entries` field of [`attribute_map_type`].
pub fn attribute_map_entries_field() -> Field {
    Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("keys", DataType::Utf8, false),
            Field::new("values", DataType::Utf8, true),
        ])),
        false,
    )
}

/// The struct type of one element of the `events` column.
pub fn event_fields() -> Fields {
    use columns::event;
    Fields::from(vec![
        Field::new(event::TIME, timestamp_type(), false),
        Field::new(event::NAME, DataType::Utf8, false),
        Field::new(event::ATTRIBUTES, attribute_map_type(), false),
        Field::new(event::DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
    ])
}

/// The struct type of one element of the `links` column.
pub fn link_fields() -> Fields {
    use columns::link;
    Fields::from(vec![
        Field::new(link::TRACE_ID, DataType::Utf8, false),
        Field::new(link::SPAN_ID, DataType::Utf8, false),
        Field::new(link::TRACE_STATE, DataType::Utf8, true),
        Field::new(link::FLAGS, DataType::UInt32, false),
        Field::new(link::ATTRIBUTES, attribute_map_type(), false),
        Field::new(link::DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
    ])
}

/// The list item field for the `events` column.
pub fn event_item_field() -> Field {
    Field::new("item", DataType::Struct(event_fields()), false)
}

/// The list item field for the `links` column.
pub fn link_item_field() -> Field {
    Field::new("item", DataType::Struct(link_fields()), false)
}

fn build_span_schema() -> Schema {
    use columns::*;
    Schema::new(vec![
        Field::new(TRACE_ID, DataType::Utf8, false),
        Field::new(SPAN_ID, DataType::Utf8, false),
        Field::new(PARENT_SPAN_ID, DataType::Utf8, true),
        Field::new(TRACE_STATE, DataType::Utf8, true),
        Field::new(FLAGS, DataType::UInt32, false),
        Field::new(SPAN_NAME, DataType::Utf8, false),
        Field::new(SPAN_KIND, DataType::Utf8, false),
        Field::new(START_TIME, timestamp_type(), false),
        Field::new(END_TIME, timestamp_type(), false),
        Field::new(DURATION_NS, DataType::Int64, false),
        Field::new(STATUS_CODE, DataType::Utf8, false),
        Field::new(STATUS_MESSAGE, DataType::Utf8, true),
        Field::new(SERVICE_NAME, DataType::Utf8, true),
        Field::new(SESSION_ID, DataType::Utf8, true),
        Field::new(CONVERSATION_ID, DataType::Utf8, true),
        Field::new(USER_ID, DataType::Utf8, true),
        Field::new(OPERATION, DataType::Utf8, true),
        Field::new(PROVIDER, DataType::Utf8, true),
        Field::new(REQUEST_MODEL, DataType::Utf8, true),
        Field::new(RESPONSE_MODEL, DataType::Utf8, true),
        Field::new(AGENT_NAME, DataType::Utf8, true),
        Field::new(AGENT_ID, DataType::Utf8, true),
        Field::new(WORKFLOW_NAME, DataType::Utf8, true),
        Field::new(TOOL_NAME, DataType::Utf8, true),
        Field::new(TOOL_CALL_ID, DataType::Utf8, true),
        Field::new(TOOL_TYPE, DataType::Utf8, true),
        Field::new(TOOL_RISK, DataType::Utf8, true),
        Field::new(INPUT_TOKENS, DataType::Int64, true),
        Field::new(OUTPUT_TOKENS, DataType::Int64, true),
        Field::new(CACHE_READ_TOKENS, DataType::Int64, true),
        Field::new(CACHE_WRITE_TOKENS, DataType::Int64, true),
        Field::new(REASONING_TOKENS, DataType::Int64, true),
        Field::new(
            FINISH_REASONS,
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, false))),
            true,
        ),
        Field::new(ERROR_TYPE, DataType::Utf8, true),
        Field::new(RETRY_ATTEMPT, DataType::Int64, true),
        Field::new(DECISION_VERDICT, DataType::Utf8, true),
        Field::new(DIALECT, DataType::Utf8, true),
        Field::new(RETENTION_TIER, DataType::Utf8, true),
        Field::new(RESOURCE_ATTRIBUTES, attribute_map_type(), false),
        Field::new(RESOURCE_SCHEMA_URL, DataType::Utf8, true),
        Field::new(SCOPE_NAME, DataType::Utf8, true),
        Field::new(SCOPE_VERSION, DataType::Utf8, true),
        Field::new(SCOPE_ATTRIBUTES, attribute_map_type(), false),
        Field::new(SCOPE_SCHEMA_URL, DataType::Utf8, true),
        Field::new(ATTRIBUTES, attribute_map_type(), false),
        Field::new(DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
        Field::new(EVENTS, DataType::List(Arc::new(event_item_field())), false),
        Field::new(DROPPED_EVENTS_COUNT, DataType::UInt32, false),
        Field::new(LINKS, DataType::List(Arc::new(link_item_field())), false),
        Field::new(DROPPED_LINKS_COUNT, DataType::UInt32, false),
        Field::new(RESOURCE_OTLP, DataType::Binary, false),
        Field::new(SCOPE_OTLP, DataType::Binary, false),
        Field::new(SPAN_OTLP, DataType::Binary, false),
        // Added after store format 2 shipped: files and WAL records written before it lack the
        // column and read it as NULL (see `upgrade`).
        Field::new(ARRIVAL_TIME, timestamp_type(), true),
        // Added after `arrival_time`: older files and records read it as NULL (no references
        // in the rows; theirs are in the `content_refs` redb table).
        Field::new(CONTENT_REFS, DataType::Binary, true),
        // Added with OTLP logs: older files and records have no log rows and read it as NULL.
        Field::new(LOG, DataType::Struct(log_fields()), true),
    ])
}

/// How many trailing columns of the span schema `fields` lack, when they are the span schema
/// as an older version wrote it (without `arrival_time` and `content_refs`, or without
/// `content_refs`); `None` when they are not a prefix of it. Columns added later are nullable
/// and read as NULL.
pub(crate) fn missing_columns(fields: &arrow::datatypes::Fields) -> Option<usize> {
    let current = span_schema();
    let current = current.fields();
    let missing = current.len().checked_sub(fields.len())?;
    (missing <= ADDED_COLUMNS && fields.iter().zip(current.iter()).all(|(a, b)| a == b))
        .then_some(missing)
}

/// Columns added at the end of the span schema since store format 2 shipped.
const ADDED_COLUMNS: usize = 3;

/// A batch of the span schema from one an older version wrote (the later columns are added,
/// NULL), or as it is when it already has the span schema.
pub(crate) fn upgrade(batch: RecordBatch) -> crate::Result<RecordBatch> {
    let Some(missing) = missing_columns(batch.schema().fields()) else {
        return Err(crate::Error::SchemaMismatch(format!(
            "not the span schema: {:?}",
            batch.schema()
        )));
    };
    if missing == 0 {
        return Ok(batch);
    }
    let schema = span_schema();
    let mut columns = batch.columns().to_vec();
    for field in &schema.fields()[batch.num_columns()..] {
        columns.push(arrow::array::new_null_array(
            field.data_type(),
            batch.num_rows(),
        ));
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The stored span schema (all columns, hidden ones included).
pub fn span_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| Arc::new(build_span_schema())))
}

/// Index of a column in [`span_schema`].
///
/// Panics only on a name that is not a column, which is a programming error caught by tests.
pub fn column_index(name: &str) -> usize {
    match span_schema().index_of(name) {
        Ok(index) => index,
        Err(_) => panic!("no column {name} in the span schema"),
    }
}

/// Span kind names, indexed by the OTLP enum value.
pub const SPAN_KIND_NAMES: [&str; 6] = [
    "unspecified",
    "internal",
    "server",
    "client",
    "producer",
    "consumer",
];

/// Status code names, indexed by the OTLP enum value.
pub const STATUS_CODE_NAMES: [&str; 3] = ["unset", "ok", "error"];

/// The stored name of an OTLP span kind value.
pub fn span_kind_name(kind: i32) -> Cow<'static, str> {
    enum_name(&SPAN_KIND_NAMES, kind)
}

/// The OTLP span kind value of a stored name (inverse of [`span_kind_name`]).
pub fn span_kind_value(name: &str) -> Option<i32> {
    enum_value(&SPAN_KIND_NAMES, name)
}

/// The stored name of an OTLP status code value.
pub fn status_code_name(code: i32) -> Cow<'static, str> {
    enum_name(&STATUS_CODE_NAMES, code)
}

/// The OTLP status code value of a stored name (inverse of [`status_code_name`]).
pub fn status_code_value(name: &str) -> Option<i32> {
    enum_value(&STATUS_CODE_NAMES, name)
}

fn enum_name(names: &[&'static str], value: i32) -> Cow<'static, str> {
    usize::try_from(value)
        .ok()
        .and_then(|index| names.get(index))
        .map(|name| Cow::Borrowed(*name))
        .unwrap_or_else(|| Cow::Owned(value.to_string()))
}

fn enum_value(names: &[&str], name: &str) -> Option<i32> {
    match names.iter().position(|candidate| *candidate == name) {
        Some(index) => i32::try_from(index).ok(),
        None => name.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_names_round_trip_known_and_unknown_values() {
        for value in [-3, 0, 1, 2, 3, 4, 5, 6, 99] {
            assert_eq!(span_kind_value(&span_kind_name(value)), Some(value));
            assert_eq!(status_code_value(&status_code_name(value)), Some(value));
        }
        assert_eq!(span_kind_name(2), "server");
        assert_eq!(status_code_name(2), "error");
    }

    #[test]
    fn every_named_column_is_in_the_schema() {
        for name in HIDDEN_COLUMNS {
            assert!(span_schema().index_of(name).is_ok());
        }
        assert_eq!(column_index(columns::TRACE_ID), 0);
    }
}
