//! Typed, borrowed access to span rows for the agent derivation: the columns it reads, looked
//! up by name in each batch (so any projection that holds them works), rows addressed by
//! `(batch, row)` without copying strings.
//!
//! Invariant: [`SpanRows::logical`] lists every *logical* span once. Two rows are copies of one
//! logical span when trace id, span id, start and end time and the span attributes (keys and
//! string forms, in order) are equal: an exporter that re-sends after a timeout sends exactly
//! that. The first copy in scan order stands for all of them.

use std::collections::HashMap;

use arrow::array::{
    Array, AsArray, Int64Array, ListArray, MapArray, RecordBatch, StringArray, StructArray,
    TimestampNanosecondArray,
};
use arrow::datatypes::TimestampNanosecondType;

use crate::error::{Error, Result};
use crate::schema::columns;

/// The span columns the derivation reads, in span-schema order of
/// [`crate::span_schema`] (so a projection of them keeps this order).
pub(crate) const INPUT_COLUMNS: [&str; 30] = [
    columns::TRACE_ID,
    columns::SPAN_ID,
    columns::PARENT_SPAN_ID,
    columns::START_TIME,
    columns::END_TIME,
    columns::DURATION_NS,
    columns::STATUS_CODE,
    columns::SESSION_ID,
    columns::CONVERSATION_ID,
    columns::USER_ID,
    columns::OPERATION,
    columns::PROVIDER,
    columns::REQUEST_MODEL,
    columns::RESPONSE_MODEL,
    columns::AGENT_NAME,
    columns::WORKFLOW_NAME,
    columns::TOOL_NAME,
    columns::TOOL_CALL_ID,
    columns::TOOL_RISK,
    columns::INPUT_TOKENS,
    columns::OUTPUT_TOKENS,
    columns::CACHE_READ_TOKENS,
    columns::REASONING_TOKENS,
    columns::FINISH_REASONS,
    columns::ERROR_TYPE,
    columns::RETRY_ATTEMPT,
    columns::DECISION_VERDICT,
    columns::ATTRIBUTES,
    columns::EVENTS,
    columns::LOG,
];

/// The event name of the log record that carries a model call's details when an
/// instrumentation records them as an event (`gen_ai.client.inference.operation.details`).
const OPERATION_DETAILS: &str = "gen_ai.client.inference.operation.details";

/// One batch's columns, downcast once.
struct Columns {
    trace_id: StringArray,
    span_id: StringArray,
    parent_span_id: StringArray,
    start_time: TimestampNanosecondArray,
    end_time: TimestampNanosecondArray,
    duration_ns: Int64Array,
    status_code: StringArray,
    session_id: StringArray,
    conversation_id: StringArray,
    user_id: StringArray,
    operation: StringArray,
    provider: StringArray,
    request_model: StringArray,
    response_model: StringArray,
    agent_name: StringArray,
    workflow_name: StringArray,
    tool_name: StringArray,
    tool_call_id: StringArray,
    tool_risk: StringArray,
    input_tokens: Int64Array,
    output_tokens: Int64Array,
    cache_read_tokens: Int64Array,
    reasoning_tokens: Int64Array,
    finish_reasons: ListArray,
    error_type: StringArray,
    retry_attempt: Int64Array,
    decision_verdict: StringArray,
    attributes: MapArray,
    /// `None` when the projection left events out (tables that need no event).
    events: Option<ListArray>,
    /// The `log` struct: valid on log record rows; `None` when the batch has no log row.
    log: Option<StructArray>,
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a dyn Array> {
    batch
        .column_by_name(name)
        .map(|array| array.as_ref())
        .ok_or_else(|| Error::SchemaMismatch(format!("agent derivation needs column {name}")))
}

fn strings(batch: &RecordBatch, name: &str) -> Result<StringArray> {
    column(batch, name)?
        .as_string_opt::<i32>()
        .cloned()
        .ok_or_else(|| type_error(name))
}

fn int64s(batch: &RecordBatch, name: &str) -> Result<Int64Array> {
    column(batch, name)?
        .as_primitive_opt::<arrow::datatypes::Int64Type>()
        .cloned()
        .ok_or_else(|| type_error(name))
}

fn times(batch: &RecordBatch, name: &str) -> Result<TimestampNanosecondArray> {
    column(batch, name)?
        .as_primitive_opt::<TimestampNanosecondType>()
        .cloned()
        .ok_or_else(|| type_error(name))
}

fn list(batch: &RecordBatch, name: &str) -> Result<ListArray> {
    column(batch, name)?
        .as_list_opt::<i32>()
        .cloned()
        .ok_or_else(|| type_error(name))
}

fn type_error(name: &str) -> Error {
    Error::SchemaMismatch(format!("column {name} does not have the span schema type"))
}

impl Columns {
    fn of(batch: &RecordBatch, with_events: bool) -> Result<Columns> {
        use columns::*;
        let attributes = column(batch, ATTRIBUTES)?
            .as_map_opt()
            .cloned()
            .ok_or_else(|| type_error(ATTRIBUTES))?;
        Ok(Columns {
            trace_id: strings(batch, TRACE_ID)?,
            span_id: strings(batch, SPAN_ID)?,
            parent_span_id: strings(batch, PARENT_SPAN_ID)?,
            start_time: times(batch, START_TIME)?,
            end_time: times(batch, END_TIME)?,
            duration_ns: int64s(batch, DURATION_NS)?,
            status_code: strings(batch, STATUS_CODE)?,
            session_id: strings(batch, SESSION_ID)?,
            conversation_id: strings(batch, CONVERSATION_ID)?,
            user_id: strings(batch, USER_ID)?,
            operation: strings(batch, OPERATION)?,
            provider: strings(batch, PROVIDER)?,
            request_model: strings(batch, REQUEST_MODEL)?,
            response_model: strings(batch, RESPONSE_MODEL)?,
            agent_name: strings(batch, AGENT_NAME)?,
            workflow_name: strings(batch, WORKFLOW_NAME)?,
            tool_name: strings(batch, TOOL_NAME)?,
            tool_call_id: strings(batch, TOOL_CALL_ID)?,
            tool_risk: strings(batch, TOOL_RISK)?,
            input_tokens: int64s(batch, INPUT_TOKENS)?,
            output_tokens: int64s(batch, OUTPUT_TOKENS)?,
            cache_read_tokens: int64s(batch, CACHE_READ_TOKENS)?,
            reasoning_tokens: int64s(batch, REASONING_TOKENS)?,
            finish_reasons: list(batch, FINISH_REASONS)?,
            error_type: strings(batch, ERROR_TYPE)?,
            retry_attempt: int64s(batch, RETRY_ATTEMPT)?,
            decision_verdict: strings(batch, DECISION_VERDICT)?,
            attributes,
            events: if with_events {
                Some(list(batch, EVENTS)?)
            } else {
                None
            },
            log: batch
                .column_by_name(LOG)
                .and_then(|log| log.as_struct_opt())
                .filter(|log| log.null_count() < log.len())
                .cloned(),
        })
    }
}

/// A row: its batch and its index in the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Row {
    batch: u32,
    row: u32,
}

/// A string-keyed attribute map of one row or event: keys and string forms.
#[derive(Clone, Copy)]
pub(crate) struct Attributes<'a> {
    keys: &'a StringArray,
    values: &'a StringArray,
    start: usize,
    end: usize,
}

impl<'a> Attributes<'a> {
    fn of(map: &'a MapArray, index: usize) -> Attributes<'a> {
        let offsets = map.value_offsets();
        let entries: &StructArray = map.entries();
        Attributes {
            keys: entries.column(0).as_string::<i32>(),
            values: entries.column(1).as_string::<i32>(),
            start: offsets[index] as usize,
            end: offsets[index + 1] as usize,
        }
    }

    /// The string form of `key` (the first entry with that key, as ingest resolves them).
    pub(crate) fn get(&self, key: &str) -> Option<&'a str> {
        (self.start..self.end)
            .find(|&at| self.keys.value(at) == key)
            .and_then(|at| self.values.is_valid(at).then(|| self.values.value(at)))
    }

    /// True when some key starts with one of `prefixes` (one pass over the keys: the cheap
    /// test before several [`Attributes::get`]s).
    pub(crate) fn any_key_starts_with(&self, prefixes: &[&str]) -> bool {
        (self.start..self.end).any(|at| {
            let key = self.keys.value(at);
            prefixes.iter().any(|prefix| key.starts_with(prefix))
        })
    }

    /// Equal keys and values in the same order.
    fn same_as(&self, other: &Attributes<'_>) -> bool {
        self.end - self.start == other.end - other.start
            && (0..self.end - self.start).all(|offset| {
                let (a, b) = (self.start + offset, other.start + offset);
                self.keys.value(a) == other.keys.value(b)
                    && self.values.is_valid(a) == other.values.is_valid(b)
                    && (!self.values.is_valid(a) || self.values.value(a) == other.values.value(b))
            })
    }
}

/// One span event as the derivation sees it.
#[derive(Clone, Copy)]
pub(crate) struct Event<'a> {
    pub(crate) time: i64,
    pub(crate) name: &'a str,
    pub(crate) attributes: Attributes<'a>,
}

/// The span rows of a scan, with typed accessors.
///
/// Log record rows among them are not spans: [`SpanRows::logical_traces`] leaves them out, and
/// each distinct one (resent copies once) is seen as one more event of the span it names
/// ([`SpanRows::events`]), so a decision or an approval recorded as a log record counts like
/// its event form. A model call's token, model and finish-reason columns that the span left
/// NULL are read from its `gen_ai.client.inference.operation.details` record.
pub(crate) struct SpanRows {
    batches: Vec<Columns>,
    /// The log rows naming each span row (every copy of a span gets them), copies of a record
    /// dropped, in scan order.
    notes: HashMap<Row, Vec<Row>>,
}

fn text(array: &StringArray, index: u32) -> Option<&str> {
    let index = index as usize;
    array.is_valid(index).then(|| array.value(index))
}

fn number(array: &Int64Array, index: u32) -> Option<i64> {
    let index = index as usize;
    array.is_valid(index).then(|| array.value(index))
}

macro_rules! text_accessors {
    ($($name:ident),* $(,)?) => {
        $(
            pub(crate) fn $name(&self, row: Row) -> Option<&str> {
                let columns = &self.batches[row.batch as usize];
                text(&columns.$name, row.row)
            }
        )*
    };
}

macro_rules! number_accessors {
    ($($name:ident),* $(,)?) => {
        $(
            pub(crate) fn $name(&self, row: Row) -> Option<i64> {
                let columns = &self.batches[row.batch as usize];
                number(&columns.$name, row.row)
            }
        )*
    };
}

impl SpanRows {
    /// Wraps `batches` (each holding at least [`INPUT_COLUMNS`], `events` only when
    /// `with_events`).
    pub(crate) fn new(batches: &[RecordBatch], with_events: bool) -> Result<SpanRows> {
        let batches = batches
            .iter()
            .filter(|batch| batch.num_rows() > 0)
            .map(|batch| Columns::of(batch, with_events))
            .collect::<Result<Vec<_>>>()?;
        let mut rows = SpanRows {
            batches,
            notes: HashMap::new(),
        };
        rows.notes = rows.collect_notes();
        Ok(rows)
    }

    /// True when `row` is a log record, not a span.
    pub(crate) fn is_log(&self, row: Row) -> bool {
        self.batches[row.batch as usize]
            .log
            .as_ref()
            .is_some_and(|log| log.is_valid(row.row as usize))
    }

    fn log_event_name(&self, row: Row) -> &str {
        self.batches[row.batch as usize]
            .log
            .as_ref()
            .and_then(|log| log.column_by_name(columns::log::EVENT_NAME))
            .and_then(|names| names.as_string_opt::<i32>())
            .and_then(|names| text(names, row.row))
            .unwrap_or("")
    }

    fn collect_notes(&self) -> HashMap<Row, Vec<Row>> {
        let mut by_span: HashMap<(&str, &str), Vec<Row>> = HashMap::new();
        for (batch, columns) in self.batches.iter().enumerate() {
            let Some(log) = &columns.log else { continue };
            for index in 0..log.len() {
                if log.is_null(index) {
                    continue;
                }
                let row = Row {
                    batch: batch as u32,
                    row: index as u32,
                };
                let kept = by_span
                    .entry((self.trace_id(row), self.span_id(row)))
                    .or_default();
                let attributes = self.attributes(row);
                let copy = kept.iter().any(|&other| {
                    self.start_time(other) == self.start_time(row)
                        && self.log_event_name(other) == self.log_event_name(row)
                        && self.attributes(other).same_as(&attributes)
                });
                if !copy {
                    kept.push(row);
                }
            }
        }
        let mut notes = HashMap::new();
        if by_span.is_empty() {
            return notes;
        }
        for (batch, columns) in self.batches.iter().enumerate() {
            for index in 0..columns.trace_id.len() {
                let row = Row {
                    batch: batch as u32,
                    row: index as u32,
                };
                if self.is_log(row) {
                    continue;
                }
                if let Some(kept) = by_span.get(&(self.trace_id(row), self.span_id(row))) {
                    notes.insert(row, kept.clone());
                }
            }
        }
        notes
    }

    /// The log records of the span at `row`, as events.
    fn notes(&self, row: Row) -> impl Iterator<Item = Event<'_>> {
        self.notes
            .get(&row)
            .into_iter()
            .flatten()
            .map(|&note| Event {
                time: self.start_time(note),
                name: self.log_event_name(note),
                attributes: self.attributes(note),
            })
    }

    /// The span's `gen_ai.client.inference.operation.details` record's value of `key`.
    fn details(&self, row: Row, key: &str) -> Option<&str> {
        self.notes(row)
            .filter(|note| note.name == OPERATION_DETAILS)
            .find_map(|note| note.attributes.get(key))
    }

    fn details_number(&self, row: Row, keys: &[&str]) -> Option<i64> {
        keys.iter()
            .find_map(|key| self.details(row, key)?.parse().ok())
    }

    pub(crate) fn request_model(&self, row: Row) -> Option<&str> {
        let columns = &self.batches[row.batch as usize];
        text(&columns.request_model, row.row).or_else(|| self.details(row, "gen_ai.request.model"))
    }

    pub(crate) fn response_model(&self, row: Row) -> Option<&str> {
        let columns = &self.batches[row.batch as usize];
        text(&columns.response_model, row.row)
            .or_else(|| self.details(row, "gen_ai.response.model"))
    }

    pub(crate) fn input_tokens(&self, row: Row) -> Option<i64> {
        let columns = &self.batches[row.batch as usize];
        number(&columns.input_tokens, row.row)
            .or_else(|| self.details_number(row, &["gen_ai.usage.input_tokens"]))
    }

    pub(crate) fn output_tokens(&self, row: Row) -> Option<i64> {
        let columns = &self.batches[row.batch as usize];
        number(&columns.output_tokens, row.row)
            .or_else(|| self.details_number(row, &["gen_ai.usage.output_tokens"]))
    }

    pub(crate) fn cache_read_tokens(&self, row: Row) -> Option<i64> {
        let columns = &self.batches[row.batch as usize];
        number(&columns.cache_read_tokens, row.row)
            .or_else(|| self.details_number(row, &["gen_ai.usage.cache_read.input_tokens"]))
    }

    pub(crate) fn reasoning_tokens(&self, row: Row) -> Option<i64> {
        let columns = &self.batches[row.batch as usize];
        number(&columns.reasoning_tokens, row.row)
            .or_else(|| self.details_number(row, &["gen_ai.usage.reasoning.output_tokens"]))
    }

    text_accessors!(
        parent_span_id,
        session_id,
        conversation_id,
        user_id,
        operation,
        provider,
        agent_name,
        workflow_name,
        tool_name,
        tool_call_id,
        tool_risk,
        error_type,
        decision_verdict,
    );

    number_accessors!(retry_attempt);

    pub(crate) fn trace_id(&self, row: Row) -> &str {
        self.batches[row.batch as usize]
            .trace_id
            .value(row.row as usize)
    }

    pub(crate) fn span_id(&self, row: Row) -> &str {
        self.batches[row.batch as usize]
            .span_id
            .value(row.row as usize)
    }

    pub(crate) fn status_code(&self, row: Row) -> &str {
        self.batches[row.batch as usize]
            .status_code
            .value(row.row as usize)
    }

    pub(crate) fn is_error(&self, row: Row) -> bool {
        self.status_code(row) == "error"
    }

    pub(crate) fn start_time(&self, row: Row) -> i64 {
        self.batches[row.batch as usize]
            .start_time
            .value(row.row as usize)
    }

    pub(crate) fn end_time(&self, row: Row) -> i64 {
        self.batches[row.batch as usize]
            .end_time
            .value(row.row as usize)
    }

    pub(crate) fn duration_ns(&self, row: Row) -> i64 {
        self.batches[row.batch as usize]
            .duration_ns
            .value(row.row as usize)
    }

    /// The finish reasons list (`None` when NULL and the span's operation details name none).
    pub(crate) fn finish_reasons(&self, row: Row) -> Option<Vec<&str>> {
        let list = &self.batches[row.batch as usize].finish_reasons;
        let index = row.row as usize;
        if list.is_null(index) {
            // The string form of a string array is its compact JSON.
            return self
                .details(row, "gen_ai.response.finish_reasons")
                .and_then(|reasons| serde_json::from_str::<Vec<&str>>(reasons).ok());
        }
        let offsets = list.value_offsets();
        let values = list.values().as_string::<i32>();
        Some(
            (offsets[index] as usize..offsets[index + 1] as usize)
                .map(|at| values.value(at))
                .collect(),
        )
    }

    pub(crate) fn has_finish_reason(&self, row: Row, reason: &str) -> bool {
        self.finish_reasons(row)
            .is_some_and(|reasons| reasons.contains(&reason))
    }

    pub(crate) fn attributes(&self, row: Row) -> Attributes<'_> {
        Attributes::of(
            &self.batches[row.batch as usize].attributes,
            row.row as usize,
        )
    }

    /// The span's events in stored order (none when events were not read), then the log
    /// records naming the span, in scan order.
    pub(crate) fn events(&self, row: Row) -> Vec<Event<'_>> {
        let mut events = self.own_events(row);
        events.extend(self.notes(row));
        events
    }

    fn own_events(&self, row: Row) -> Vec<Event<'_>> {
        let Some(list) = &self.batches[row.batch as usize].events else {
            return Vec::new();
        };
        let index = row.row as usize;
        let offsets = list.value_offsets();
        let (start, end) = (offsets[index] as usize, offsets[index + 1] as usize);
        if start == end {
            return Vec::new();
        }
        let items = list.values().as_struct();
        let time = items
            .column(0)
            .as_primitive::<TimestampNanosecondType>()
            .values();
        let name = items.column(1).as_string::<i32>();
        let attributes = items.column(2).as_map();
        (start..end)
            .map(|at| Event {
                time: time[at],
                name: name.value(at),
                attributes: Attributes::of(attributes, at),
            })
            .collect()
    }

    /// Every logical span once (the first copy of each), grouped by trace: traces in order of
    /// first appearance, rows in scan order within a trace.
    pub(crate) fn logical_traces(&self) -> Vec<Vec<Row>> {
        let mut trace_of: HashMap<&str, usize> = HashMap::new();
        let mut traces: Vec<Vec<Row>> = Vec::new();
        for (batch, columns) in self.batches.iter().enumerate() {
            for row in 0..columns.trace_id.len() {
                let row = Row {
                    batch: batch as u32,
                    row: row as u32,
                };
                if self.is_log(row) {
                    continue;
                }
                let slot = *trace_of.entry(self.trace_id(row)).or_insert_with(|| {
                    traces.push(Vec::new());
                    traces.len() - 1
                });
                traces[slot].push(row);
            }
        }
        for rows in &mut traces {
            self.drop_copies(rows);
        }
        traces
    }

    /// Removes every row that is a copy of an earlier row of the same trace.
    fn drop_copies(&self, rows: &mut Vec<Row>) {
        let mut first_of: HashMap<(&str, i64, i64), Vec<Row>> = HashMap::new();
        rows.retain(|&row| {
            let key = (self.span_id(row), self.start_time(row), self.end_time(row));
            let kept = first_of.entry(key).or_default();
            let attributes = self.attributes(row);
            if kept
                .iter()
                .any(|&other| self.attributes(other).same_as(&attributes))
            {
                return false;
            }
            kept.push(row);
            true
        });
    }
}
