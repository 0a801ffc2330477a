//! The agent tables' Arrow schemas and the code that writes their rows.
//!
//! Column names and meanings are docs/sql.md's; columns are only ever added, never renamed.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow::array::{
    Array, ArrayRef, BooleanBuilder, Int64Array, Int64Builder, ListArray, ListBuilder, RecordBatch,
    StringArray, StringBuilder, TimestampNanosecondArray, TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::AgentTable;
use super::spans::{Row, SpanRows};
use super::trace::{RetrySource, TraceFacts, is_model_call};
use crate::error::{Error, Result};
use crate::schema::timestamp_type;

fn text(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn int(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Int64, nullable)
}

fn time(name: &str) -> Field {
    Field::new(name, timestamp_type(), false)
}

fn finish_reasons_field() -> Field {
    Field::new(
        "finish_reasons",
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, false))),
        true,
    )
}

fn build_schema(table: AgentTable) -> Schema {
    let ids = || vec![text("trace_id", false), text("span_id", false)];
    let keys = || vec![text("session_id", true), text("conversation_id", true)];
    let mut fields = Vec::new();
    match table {
        AgentTable::LlmCalls => {
            fields.extend(ids());
            fields.extend(keys());
            fields.extend([
                text("agent_name", true),
                text("provider", true),
                text("request_model", true),
                text("response_model", true),
                time("start_time"),
                int("duration_ns", false),
                int("input_tokens", true),
                int("output_tokens", true),
                int("cache_read_tokens", true),
                int("reasoning_tokens", true),
                finish_reasons_field(),
                text("status_code", false),
                text("error_type", true),
                int("retry_attempt", true),
            ]);
        }
        AgentTable::ToolCalls => {
            fields.extend(ids());
            fields.extend(keys());
            fields.extend([
                text("agent_name", true),
                text("tool_name", true),
                time("start_time"),
                int("duration_ns", false),
                text("status_code", false),
                text("error_type", true),
                int("attempt", false),
                Field::new("is_retry", DataType::Boolean, false),
                text("retry_source", true),
                text("risk", true),
                text("verdict", true),
                text("tool_call_id", true),
                text("operation_span_id", true),
            ]);
        }
        AgentTable::Decisions => {
            fields.push(time("time"));
            fields.extend(ids());
            fields.extend(keys());
            fields.extend([
                text("agent_name", true),
                text("tool_name", true),
                text("kind", true),
                text("verdict", true),
                text("action", true),
                text("policy_id", true),
                text("risk", true),
                text("context_source", true),
                text("reasoning", true),
                text("decision_id", true),
                text("approval_status", true),
                int("approval_latency_ms", true),
                text("forms", false),
            ]);
        }
        AgentTable::AgentRuns => {
            fields.extend(ids());
            fields.extend(keys());
            fields.extend([
                text("user_id", true),
                text("agent_name", true),
                time("start_time"),
                int("duration_ns", false),
                text("outcome", false),
                int("llm_calls", false),
                int("tool_calls", false),
                int("errors", false),
                int("retries", false),
                int("denials", false),
                int("escalations", false),
                int("input_tokens", true),
                int("output_tokens", true),
            ]);
        }
        AgentTable::Sessions => {
            fields.extend([
                text("session_id", false),
                text("user_id", true),
                time("first_seen"),
                time("last_seen"),
                int("runs", false),
                int("conversations", false),
                int("spans", false),
                int("errors", false),
                int("denials", false),
                int("input_tokens", true),
                int("output_tokens", true),
            ]);
        }
    }
    Schema::new(fields)
}

/// The Arrow schema of an agent table.
pub fn agent_table_schema(table: AgentTable) -> SchemaRef {
    static SCHEMAS: OnceLock<[SchemaRef; 5]> = OnceLock::new();
    let schemas =
        SCHEMAS.get_or_init(|| AgentTable::ALL.map(|table| Arc::new(build_schema(table))));
    let index = AgentTable::ALL
        .iter()
        .position(|candidate| *candidate == table)
        .unwrap_or_default();
    Arc::clone(&schemas[index])
}

enum Builder {
    Text(StringBuilder),
    Int(Int64Builder),
    Time(TimestampNanosecondBuilder),
    Bool(BooleanBuilder),
    List(ListBuilder<StringBuilder>),
}

impl Builder {
    fn for_field(field: &Field) -> Builder {
        match field.data_type() {
            DataType::Int64 => Builder::Int(Int64Builder::new()),
            DataType::Timestamp(..) => Builder::Time(TimestampNanosecondBuilder::new()),
            DataType::Boolean => Builder::Bool(BooleanBuilder::new()),
            DataType::List(item) => {
                Builder::List(ListBuilder::new(StringBuilder::new()).with_field(Arc::clone(item)))
            }
            _ => Builder::Text(StringBuilder::new()),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Builder::Text(mut builder) => Arc::new(builder.finish()),
            Builder::Int(mut builder) => Arc::new(builder.finish()),
            Builder::Time(mut builder) => Arc::new(builder.finish().with_timezone("UTC")),
            Builder::Bool(mut builder) => Arc::new(builder.finish()),
            Builder::List(mut builder) => Arc::new(builder.finish()),
        }
    }
}

/// Rows of one table, written column by column in schema order.
struct Out {
    schema: SchemaRef,
    builders: Vec<Builder>,
    at: usize,
}

impl Out {
    fn new(table: AgentTable) -> Out {
        Out::with_schema(agent_table_schema(table))
    }

    fn with_schema(schema: SchemaRef) -> Out {
        let builders = schema
            .fields()
            .iter()
            .map(|f| Builder::for_field(f))
            .collect();
        Out {
            schema,
            builders,
            at: 0,
        }
    }

    fn next(&mut self) -> &mut Builder {
        let builder = &mut self.builders[self.at];
        self.at = (self.at + 1) % self.schema.fields().len();
        builder
    }

    fn text(&mut self, value: Option<&str>) -> &mut Self {
        if let Builder::Text(builder) = self.next() {
            builder.append_option(value);
        }
        self
    }

    fn int(&mut self, value: Option<i64>) -> &mut Self {
        if let Builder::Int(builder) = self.next() {
            builder.append_option(value);
        }
        self
    }

    fn time(&mut self, value: i64) -> &mut Self {
        if let Builder::Time(builder) = self.next() {
            builder.append_value(value);
        }
        self
    }

    fn boolean(&mut self, value: bool) -> &mut Self {
        if let Builder::Bool(builder) = self.next() {
            builder.append_value(value);
        }
        self
    }

    fn list(&mut self, value: Option<Vec<&str>>) -> &mut Self {
        if let Builder::List(builder) = self.next() {
            match value {
                Some(items) => {
                    for item in items {
                        builder.values().append_value(item);
                    }
                    builder.append(true);
                }
                None => builder.append(false),
            }
        }
        self
    }

    fn finish(self) -> Result<RecordBatch> {
        let columns = self.builders.into_iter().map(Builder::finish).collect();
        Ok(RecordBatch::try_new(self.schema, columns)?)
    }
}

/// Per-session totals while traces are folded in.
#[derive(Default)]
struct SessionTotals<'a> {
    user_id: Option<&'a str>,
    first_seen: i64,
    last_seen: i64,
    runs: i64,
    conversations: std::collections::HashSet<&'a str>,
    /// The one part's conversation list folded so far (a part lists each conversation
    /// once), kept as a slice until a second part of the session needs the set.
    listed: Option<(&'a StringArray, std::ops::Range<usize>)>,
    spans: i64,
    errors: i64,
    denials: i64,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
}

impl<'a> SessionTotals<'a> {
    /// Adds a part's conversation list (`values[range]`, each conversation once).
    fn add_listed(&mut self, values: &'a StringArray, range: std::ops::Range<usize>) {
        if self.listed.is_none() && self.conversations.is_empty() {
            self.listed = Some((values, range));
            return;
        }
        if let Some((earlier, earlier_range)) = self.listed.take() {
            self.conversations
                .extend(earlier_range.map(|index| earlier.value(index)));
        }
        self.conversations
            .extend(range.map(|index| values.value(index)));
    }

    /// The number of distinct conversations.
    fn conversation_count(&self) -> usize {
        match &self.listed {
            Some((_, range)) => range.len(),
            None => self.conversations.len(),
        }
    }

    /// The distinct conversations, sorted.
    fn sorted_conversations(&self) -> Vec<&'a str> {
        let mut conversations: Vec<&str> = match &self.listed {
            Some((values, range)) => range.clone().map(|index| values.value(index)).collect(),
            None => self.conversations.iter().copied().collect(),
        };
        conversations.sort_unstable();
        conversations
    }
}

fn add(total: &mut Option<i64>, value: Option<i64>) {
    if let Some(value) = value {
        *total = Some(total.unwrap_or(0).saturating_add(value));
    }
}

pub(super) fn build(table: AgentTable, rows: &SpanRows) -> Result<RecordBatch> {
    if table == AgentTable::Sessions {
        return fold_session_parts(&[build_session_parts(rows)?]);
    }
    let mut out = Out::new(table);
    for spans in rows.logical_traces() {
        let facts = TraceFacts::derive(rows, spans, table);
        match table {
            AgentTable::LlmCalls => llm_calls(&mut out, rows, &facts),
            AgentTable::ToolCalls => tool_calls(&mut out, rows, &facts),
            AgentTable::Decisions => decisions(&mut out, rows, &facts),
            AgentTable::AgentRuns => agent_runs(&mut out, rows, &facts),
            AgentTable::Sessions => {}
        }
    }
    out.finish()
}

/// The schema of a session part: one trace's contribution to one session's `sessions` row
/// (how `sessions` is stored, since a session's traces may be sealed apart).
pub fn session_parts_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| {
        Arc::new(Schema::new(vec![
            text("session_id", false),
            text("trace_id", false),
            text("user_id", true),
            time("first_seen"),
            time("last_seen"),
            int("runs", false),
            Field::new(
                "conversations",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, false))),
                false,
            ),
            int("spans", false),
            int("errors", false),
            int("denials", false),
            int("input_tokens", true),
            int("output_tokens", true),
        ]))
    }))
}

/// One row per (trace, session) of `rows`: the trace's share of the session's totals.
pub(super) fn build_session_parts(rows: &SpanRows) -> Result<RecordBatch> {
    let mut out = Out::with_schema(session_parts_schema());
    for spans in rows.logical_traces() {
        let facts = TraceFacts::derive(rows, spans, AgentTable::Sessions);
        session_parts(&mut out, rows, &facts);
    }
    out.finish()
}

/// Every agent table in its stored form (`sessions` as session parts), in
/// [`AgentTable::ALL`] order, from one derivation per trace.
pub(super) fn build_all(rows: &SpanRows) -> Result<Vec<RecordBatch>> {
    let mut llm = Out::new(AgentTable::LlmCalls);
    let mut tools = Out::new(AgentTable::ToolCalls);
    let mut gates = Out::new(AgentTable::Decisions);
    let mut runs = Out::new(AgentTable::AgentRuns);
    let mut parts = Out::with_schema(session_parts_schema());
    for spans in rows.logical_traces() {
        // The facts `agent_runs` needs are every table's.
        let facts = TraceFacts::derive(rows, spans, AgentTable::AgentRuns);
        llm_calls(&mut llm, rows, &facts);
        tool_calls(&mut tools, rows, &facts);
        decisions(&mut gates, rows, &facts);
        agent_runs(&mut runs, rows, &facts);
        session_parts(&mut parts, rows, &facts);
    }
    [llm, tools, gates, runs, parts]
        .into_iter()
        .map(Out::finish)
        .collect()
}

/// The session parts of one trace.
fn session_parts(out: &mut Out, rows: &SpanRows, facts: &TraceFacts<'_>) {
    let mut order: Vec<&str> = Vec::new();
    let mut totals: HashMap<&str, SessionTotals<'_>> = HashMap::new();
    fold_sessions(rows, facts, &mut order, &mut totals);
    let Some(&first) = facts.spans.first() else {
        return;
    };
    let trace_id = rows.trace_id(first);
    for session in order {
        push_part(out, session, trace_id, &totals[session]);
    }
}

/// Appends one session part (a row of [`session_parts_schema`]).
fn push_part(out: &mut Out, session: &str, trace_id: &str, part: &SessionTotals<'_>) {
    out.text(Some(session))
        .text(Some(trace_id))
        .text(part.user_id)
        .time(part.first_seen)
        .time(part.last_seen)
        .int(Some(part.runs))
        .list(Some(part.sorted_conversations()))
        .int(Some(part.spans))
        .int(Some(part.errors))
        .int(Some(part.denials))
        .int(part.input_tokens)
        .int(part.output_tokens);
}

/// Folds session parts (any number of batches of [`session_parts_schema`], each (trace,
/// session) at most once) into `sessions` rows, sessions in order of first appearance.
pub fn fold_session_parts(parts: &[RecordBatch]) -> Result<RecordBatch> {
    let columns = parts
        .iter()
        .map(PartColumns::of)
        .collect::<Result<Vec<_>>>()?;
    let mut out = Out::new(AgentTable::Sessions);
    for (session, totals) in fold_parts(parts, &columns) {
        let totals = &totals;
        out.text(Some(session))
            .text(totals.user_id)
            .time(totals.first_seen)
            .time(totals.last_seen)
            .int(Some(totals.runs))
            .int(Some(totals.conversation_count() as i64))
            .int(Some(totals.spans))
            .int(Some(totals.errors))
            .int(Some(totals.denials))
            .int(totals.input_tokens)
            .int(totals.output_tokens);
    }
    out.finish()
}

/// Merges session parts into one part per session (`trace_id` empty): folding the merged
/// parts gives the same `sessions` rows as folding the originals, so a read can merge each
/// partition's parts in parallel before the final fold.
pub fn merge_session_parts(parts: &[RecordBatch]) -> Result<RecordBatch> {
    let columns = parts
        .iter()
        .map(PartColumns::of)
        .collect::<Result<Vec<_>>>()?;
    let mut out = Out::with_schema(session_parts_schema());
    for (session, totals) in fold_parts(parts, &columns) {
        push_part(&mut out, session, "", &totals);
    }
    out.finish()
}

/// Per-session totals of `parts`, sessions in order of first appearance.
///
/// Every `sessions` read folds its parts (one per session once the rollup is kept), so the
/// index is sized for every part up front and hashed with foldhash rather than SipHash.
fn fold_parts<'a>(
    parts: &'a [RecordBatch],
    columns: &[PartColumns<'a>],
) -> Vec<(&'a str, SessionTotals<'a>)> {
    use foldhash::HashMapExt;
    let rows: usize = parts.iter().map(RecordBatch::num_rows).sum();
    let mut index: foldhash::HashMap<&str, usize> = foldhash::HashMap::with_capacity(rows);
    let mut totals: Vec<(&str, SessionTotals<'_>)> = Vec::with_capacity(rows);
    for (batch, part) in parts.iter().zip(columns) {
        for row in 0..batch.num_rows() {
            let session = part.session_id.value(row);
            let slot = *index.entry(session).or_insert_with(|| {
                totals.push((
                    session,
                    SessionTotals {
                        first_seen: i64::MAX,
                        last_seen: i64::MIN,
                        ..SessionTotals::default()
                    },
                ));
                totals.len() - 1
            });
            let entry = &mut totals[slot].1;
            if part.user_id.is_valid(row) {
                let user = part.user_id.value(row);
                if entry.user_id.is_none_or(|current| user < current) {
                    entry.user_id = Some(user);
                }
            }
            entry.first_seen = entry.first_seen.min(part.first_seen.value(row));
            entry.last_seen = entry.last_seen.max(part.last_seen.value(row));
            entry.runs += part.runs.value(row);
            let offsets = part.conversations.value_offsets();
            let (from, to) = (offsets[row] as usize, offsets[row + 1] as usize);
            entry.add_listed(part.conversation_values, from..to);
            entry.spans += part.spans.value(row);
            entry.errors += part.errors.value(row);
            entry.denials += part.denials.value(row);
            add(
                &mut entry.input_tokens,
                part.input_tokens
                    .is_valid(row)
                    .then(|| part.input_tokens.value(row)),
            );
            add(
                &mut entry.output_tokens,
                part.output_tokens
                    .is_valid(row)
                    .then(|| part.output_tokens.value(row)),
            );
        }
    }
    totals
}

/// Typed columns of a session-parts batch.
struct PartColumns<'a> {
    session_id: &'a StringArray,
    user_id: &'a StringArray,
    first_seen: &'a TimestampNanosecondArray,
    last_seen: &'a TimestampNanosecondArray,
    runs: &'a Int64Array,
    conversations: &'a ListArray,
    conversation_values: &'a StringArray,
    spans: &'a Int64Array,
    errors: &'a Int64Array,
    denials: &'a Int64Array,
    input_tokens: &'a Int64Array,
    output_tokens: &'a Int64Array,
}

impl<'a> PartColumns<'a> {
    fn of(batch: &'a RecordBatch) -> Result<PartColumns<'a>> {
        fn column<'b, T: 'static>(batch: &'b RecordBatch, name: &str) -> Result<&'b T> {
            batch
                .column_by_name(name)
                .and_then(|column| column.as_any().downcast_ref::<T>())
                .ok_or_else(|| Error::Corrupt {
                    location: "session parts".to_owned(),
                    detail: format!("column {name} is missing or has the wrong type"),
                })
        }
        let conversations: &ListArray = column(batch, "conversations")?;
        let conversation_values = conversations
            .values()
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| Error::Corrupt {
                location: "session parts".to_owned(),
                detail: "conversations are not strings".to_owned(),
            })?;
        Ok(PartColumns {
            session_id: column(batch, "session_id")?,
            user_id: column(batch, "user_id")?,
            first_seen: column(batch, "first_seen")?,
            last_seen: column(batch, "last_seen")?,
            runs: column(batch, "runs")?,
            conversations,
            conversation_values,
            spans: column(batch, "spans")?,
            errors: column(batch, "errors")?,
            denials: column(batch, "denials")?,
            input_tokens: column(batch, "input_tokens")?,
            output_tokens: column(batch, "output_tokens")?,
        })
    }
}

fn llm_calls(out: &mut Out, rows: &SpanRows, facts: &TraceFacts<'_>) {
    for &row in &facts.llm_calls {
        out.text(Some(rows.trace_id(row)))
            .text(Some(rows.span_id(row)))
            .text(rows.session_id(row))
            .text(rows.conversation_id(row))
            .text(facts.agent_name(rows, row))
            .text(rows.provider(row))
            .text(rows.request_model(row))
            .text(rows.response_model(row))
            .time(rows.start_time(row))
            .int(Some(rows.duration_ns(row)))
            .int(rows.input_tokens(row))
            .int(rows.output_tokens(row))
            .int(rows.cache_read_tokens(row))
            .int(rows.reasoning_tokens(row))
            .list(rows.finish_reasons(row))
            .text(Some(rows.status_code(row)))
            .text(rows.error_type(row))
            .int(rows.retry_attempt(row));
    }
}

fn tool_calls(out: &mut Out, rows: &SpanRows, facts: &TraceFacts<'_>) {
    for call in &facts.tool_calls {
        let row = call.row;
        out.text(Some(rows.trace_id(row)))
            .text(Some(rows.span_id(row)))
            .text(rows.session_id(row))
            .text(rows.conversation_id(row))
            .text(facts.agent_name(rows, row))
            .text(rows.tool_name(row))
            .time(rows.start_time(row))
            .int(Some(rows.duration_ns(row)))
            .text(Some(rows.status_code(row)))
            .text(rows.error_type(row))
            .int(Some(call.attempt))
            .boolean(call.retry != RetrySource::None)
            .text(match call.retry {
                RetrySource::None => None,
                RetrySource::Explicit => Some("explicit"),
                RetrySource::Inferred => Some("inferred"),
            })
            .text(rows.tool_risk(row))
            .text(rows.decision_verdict(row))
            .text(rows.tool_call_id(row))
            .text(call.operation.map(|first| rows.span_id(first)));
    }
}

fn decisions(out: &mut Out, rows: &SpanRows, facts: &TraceFacts<'_>) {
    for gated in &facts.decisions {
        let row = gated.row;
        let decision = &gated.decision;
        out.time(decision.time)
            .text(Some(rows.trace_id(row)))
            .text(Some(rows.span_id(row)))
            .text(rows.session_id(row))
            .text(rows.conversation_id(row))
            .text(facts.agent_name(rows, row))
            .text(rows.tool_name(row))
            .text(decision.kind)
            .text(decision.verdict)
            .text(decision.action)
            .text(decision.policy_id)
            .text(decision.risk)
            .text(decision.context_source)
            .text(decision.reasoning)
            .text(decision.decision_id)
            .text(gated.approval.and_then(|approval| approval.status))
            .int(
                gated
                    .approval
                    .map(|approval| (approval.time - decision.time) / 1_000_000),
            )
            .text(Some(decision.forms()));
    }
}

fn agent_runs(out: &mut Out, rows: &SpanRows, facts: &TraceFacts<'_>) {
    for (row, run) in &facts.runs {
        let row = *row;
        let declared = rows.attributes(row).get("agent.outcome");
        out.text(Some(rows.trace_id(row)))
            .text(Some(rows.span_id(row)))
            .text(rows.session_id(row))
            .text(rows.conversation_id(row))
            .text(rows.user_id(row))
            .text(rows.agent_name(row).or_else(|| rows.workflow_name(row)))
            .time(rows.start_time(row))
            .int(Some(rows.duration_ns(row)))
            .text(Some(run.outcome(declared, rows.is_error(row))))
            .int(Some(run.llm_calls))
            .int(Some(run.tool_calls))
            .int(Some(run.errors))
            .int(Some(run.retries))
            .int(Some(run.denials))
            .int(Some(run.escalations))
            .int(run.input_tokens)
            .int(run.output_tokens);
    }
}

fn fold_sessions<'a>(
    rows: &'a SpanRows,
    facts: &TraceFacts<'a>,
    order: &mut Vec<&'a str>,
    totals: &mut HashMap<&'a str, SessionTotals<'a>>,
) {
    fn slot<'a, 't>(
        rows: &'a SpanRows,
        row: Row,
        order: &mut Vec<&'a str>,
        totals: &'t mut HashMap<&'a str, SessionTotals<'a>>,
    ) -> Option<&'t mut SessionTotals<'a>> {
        let session = rows.session_id(row)?;
        Some(totals.entry(session).or_insert_with(|| {
            order.push(session);
            SessionTotals {
                first_seen: i64::MAX,
                last_seen: i64::MIN,
                ..SessionTotals::default()
            }
        }))
    }
    for &row in &facts.spans {
        let model_call = is_model_call(rows, row);
        let Some(session) = slot(rows, row, order, totals) else {
            continue;
        };
        session.spans += 1;
        session.first_seen = session.first_seen.min(rows.start_time(row));
        session.last_seen = session.last_seen.max(rows.end_time(row));
        if let Some(user) = rows.user_id(row)
            && session.user_id.is_none_or(|current| user < current)
        {
            session.user_id = Some(user);
        }
        if let Some(conversation) = rows.conversation_id(row) {
            session.conversations.insert(conversation);
        }
        if rows.is_error(row) && (model_call || rows.operation(row) == Some("execute_tool")) {
            session.errors += 1;
        }
        if model_call {
            add(&mut session.input_tokens, rows.input_tokens(row));
            add(&mut session.output_tokens, rows.output_tokens(row));
        }
    }
    for (row, _) in &facts.runs {
        if let Some(session) = slot(rows, *row, order, totals) {
            session.runs += 1;
        }
    }
    for gated in &facts.decisions {
        if gated.decision.verdict == Some("deny")
            && let Some(session) = slot(rows, gated.row, order, totals)
        {
            session.denials += 1;
        }
    }
}
