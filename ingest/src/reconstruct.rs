//! Span rows -> OTLP export request ([`batches_to_otlp`]), the inverse of
//! [`crate::to_span_batch`].

use std::collections::HashMap;
use std::ops::Range;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, ListArray, StringArray, StructArray,
    TimestampNanosecondArray, UInt32Array,
};
use arrow::datatypes::{TimestampNanosecondType, UInt32Type};
use arrow::record_batch::RecordBatch;
use engine::schema::{columns, span_kind_value, status_code_value};
use engine::{SpanId, TraceId};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use prost::Message;

use crate::error::{Error, Result};

/// Rebuilds an export request from span rows (batches holding every column of
/// [`engine::span_schema`], in any order, e.g. from `Engine::scan` with no projection).
///
/// Rows with identical (`resource_otlp`, `resource_schema_url`) form one `ResourceSpans`, and
/// within it rows with identical (`scope_otlp`, `scope_schema_url`) one `ScopeSpans`, in
/// first-seen order, whether or not the rows are adjacent; log record rows (a valid `log`
/// column) are skipped ([`crate::rows_to_logs`] rebuilds them). Typed attributes come from
/// `span_otlp`; everything else from the columns, NULL strings read as `""`. A row that does not
/// convert (bad hex id, unknown kind name, negative time, undecodable protobuf) is
/// [`Error::CorruptRows`]; a missing or mistyped column is [`Error::ColumnMismatch`].
pub fn batches_to_otlp(batches: &[RecordBatch]) -> Result<ExportTraceServiceRequest> {
    let mut request = ExportTraceServiceRequest::default();
    let mut resource_groups: HashMap<(&[u8], &str), usize> = HashMap::new();
    let mut scope_groups: HashMap<(usize, &[u8], &str), usize> = HashMap::new();
    for batch in batches {
        let columns = SpanColumns::new(batch)?;
        // Rows of one resource and scope are usually adjacent: remember the last groups so most
        // rows skip hashing the protobuf bytes.
        let mut last: Option<GroupKey<'_>> = None;
        for row in 0..batch.num_rows() {
            if columns.log.is_some_and(|log| log.is_valid(row)) {
                continue;
            }
            let key = GroupKey {
                resource: columns.resource_otlp.value(row),
                resource_schema_url: text(columns.resource_schema_url, row),
                scope: columns.scope_otlp.value(row),
                scope_schema_url: text(columns.scope_schema_url, row),
                resource_index: 0,
                scope_index: 0,
            };
            let (resource_index, scope_index) = match &last {
                Some(previous) if previous.same_groups(&key) => {
                    (previous.resource_index, previous.scope_index)
                }
                _ => {
                    let resource_index = match resource_groups
                        .get(&(key.resource, key.resource_schema_url))
                    {
                        Some(&index) => index,
                        None => {
                            let resource = decode_optional::<Resource>(key.resource)
                                .map_err(|error| corrupt(columns::RESOURCE_OTLP, row, error))?;
                            request.resource_spans.push(ResourceSpans {
                                resource,
                                scope_spans: Vec::new(),
                                schema_url: key.resource_schema_url.to_owned(),
                            });
                            let index = request.resource_spans.len() - 1;
                            resource_groups.insert((key.resource, key.resource_schema_url), index);
                            index
                        }
                    };
                    let scope_key = (resource_index, key.scope, key.scope_schema_url);
                    let scope_index = match scope_groups.get(&scope_key) {
                        Some(&index) => index,
                        None => {
                            let scope = decode_optional::<InstrumentationScope>(key.scope)
                                .map_err(|error| corrupt(columns::SCOPE_OTLP, row, error))?;
                            let scopes = &mut request.resource_spans[resource_index].scope_spans;
                            scopes.push(ScopeSpans {
                                scope,
                                spans: Vec::new(),
                                schema_url: key.scope_schema_url.to_owned(),
                            });
                            scope_groups.insert(scope_key, scopes.len() - 1);
                            scopes.len() - 1
                        }
                    };
                    (resource_index, scope_index)
                }
            };
            last = Some(GroupKey {
                resource_index,
                scope_index,
                ..key
            });
            let span = columns.span(row)?;
            request.resource_spans[resource_index].scope_spans[scope_index]
                .spans
                .push(span);
        }
    }
    Ok(request)
}

/// The grouping columns of one row and the groups they were resolved to.
#[derive(Debug)]
struct GroupKey<'b> {
    resource: &'b [u8],
    resource_schema_url: &'b str,
    scope: &'b [u8],
    scope_schema_url: &'b str,
    resource_index: usize,
    scope_index: usize,
}

impl GroupKey<'_> {
    fn same_groups(&self, other: &GroupKey<'_>) -> bool {
        self.resource == other.resource
            && self.resource_schema_url == other.resource_schema_url
            && self.scope == other.scope
            && self.scope_schema_url == other.scope_schema_url
    }
}

/// Decodes a hidden `*_otlp` column value: empty means the message was absent.
fn decode_optional<M: Message + Default>(bytes: &[u8]) -> Result<Option<M>, prost::DecodeError> {
    if bytes.is_empty() {
        Ok(None)
    } else {
        M::decode(bytes).map(Some)
    }
}

fn corrupt(column: &'static str, row: usize, detail: impl ToString) -> Error {
    Error::CorruptRows {
        column,
        row,
        detail: detail.to_string(),
    }
}

fn text(array: &StringArray, row: usize) -> &str {
    if array.is_null(row) {
        ""
    } else {
        array.value(row)
    }
}

fn unsigned_time(column: &'static str, row: usize, nanos: i64) -> Result<u64> {
    u64::try_from(nanos).map_err(|_| corrupt(column, row, format!("negative time {nanos}")))
}

/// Typed views of the columns [`batches_to_otlp`] reads.
#[derive(Debug)]
struct SpanColumns<'b> {
    /// The `log` column when the batch has it: its valid rows are log records, not spans.
    log: Option<&'b ArrayRef>,
    trace_id: &'b StringArray,
    span_id: &'b StringArray,
    parent_span_id: &'b StringArray,
    trace_state: &'b StringArray,
    flags: &'b UInt32Array,
    span_name: &'b StringArray,
    span_kind: &'b StringArray,
    start_time: &'b TimestampNanosecondArray,
    end_time: &'b TimestampNanosecondArray,
    status_code: &'b StringArray,
    status_message: &'b StringArray,
    resource_schema_url: &'b StringArray,
    scope_schema_url: &'b StringArray,
    dropped_attributes_count: &'b UInt32Array,
    events: &'b ListArray,
    event_time: &'b TimestampNanosecondArray,
    event_name: &'b StringArray,
    event_dropped: &'b UInt32Array,
    dropped_events_count: &'b UInt32Array,
    links: &'b ListArray,
    link_trace_id: &'b StringArray,
    link_span_id: &'b StringArray,
    link_trace_state: &'b StringArray,
    link_flags: &'b UInt32Array,
    link_dropped: &'b UInt32Array,
    dropped_links_count: &'b UInt32Array,
    resource_otlp: &'b BinaryArray,
    scope_otlp: &'b BinaryArray,
    span_otlp: &'b BinaryArray,
}

fn column<'b>(batch: &'b RecordBatch, name: &'static str) -> Result<&'b ArrayRef> {
    batch.column_by_name(name).ok_or(Error::ColumnMismatch {
        column: name,
        detail: "missing".to_owned(),
    })
}

fn field<'b>(parent: &'b StructArray, name: &'static str) -> Result<&'b ArrayRef> {
    parent.column_by_name(name).ok_or(Error::ColumnMismatch {
        column: name,
        detail: "missing struct field".to_owned(),
    })
}

fn mistyped(name: &'static str, array: &ArrayRef, expected: &str) -> Error {
    Error::ColumnMismatch {
        column: name,
        detail: format!("expected {expected}, found {}", array.data_type()),
    }
}

fn strings<'b>(array: &'b ArrayRef, name: &'static str) -> Result<&'b StringArray> {
    array
        .as_string_opt::<i32>()
        .ok_or_else(|| mistyped(name, array, "Utf8"))
}

fn binaries<'b>(array: &'b ArrayRef, name: &'static str) -> Result<&'b BinaryArray> {
    array
        .as_binary_opt::<i32>()
        .ok_or_else(|| mistyped(name, array, "Binary"))
}

fn u32s<'b>(array: &'b ArrayRef, name: &'static str) -> Result<&'b UInt32Array> {
    array
        .as_primitive_opt::<UInt32Type>()
        .ok_or_else(|| mistyped(name, array, "UInt32"))
}

fn timestamps<'b>(array: &'b ArrayRef, name: &'static str) -> Result<&'b TimestampNanosecondArray> {
    array
        .as_primitive_opt::<TimestampNanosecondType>()
        .ok_or_else(|| mistyped(name, array, "Timestamp(ns)"))
}

fn list<'b>(array: &'b ArrayRef, name: &'static str) -> Result<(&'b ListArray, &'b StructArray)> {
    let list = array
        .as_list_opt::<i32>()
        .ok_or_else(|| mistyped(name, array, "List<Struct>"))?;
    let items = list
        .values()
        .as_struct_opt()
        .ok_or_else(|| mistyped(name, array, "List<Struct>"))?;
    Ok((list, items))
}

/// The element range of row `row` of a list column (empty for a NULL list).
fn item_range(list: &ListArray, row: usize) -> Range<usize> {
    if list.is_null(row) {
        return 0..0;
    }
    let offsets = list.value_offsets();
    let start = usize::try_from(offsets[row]).unwrap_or_default();
    let end = usize::try_from(offsets[row + 1]).unwrap_or_default();
    start..end.max(start)
}

impl<'b> SpanColumns<'b> {
    fn new(batch: &'b RecordBatch) -> Result<SpanColumns<'b>> {
        use columns::{event, link};
        let string_column = |name| strings(column(batch, name)?, name);
        let u32_column = |name| u32s(column(batch, name)?, name);
        let time_column = |name| timestamps(column(batch, name)?, name);
        let binary_column = |name| binaries(column(batch, name)?, name);
        let (events, event_items) = list(column(batch, columns::EVENTS)?, columns::EVENTS)?;
        let (links, link_items) = list(column(batch, columns::LINKS)?, columns::LINKS)?;
        Ok(SpanColumns {
            log: batch.column_by_name(columns::LOG),
            trace_id: string_column(columns::TRACE_ID)?,
            span_id: string_column(columns::SPAN_ID)?,
            parent_span_id: string_column(columns::PARENT_SPAN_ID)?,
            trace_state: string_column(columns::TRACE_STATE)?,
            flags: u32_column(columns::FLAGS)?,
            span_name: string_column(columns::SPAN_NAME)?,
            span_kind: string_column(columns::SPAN_KIND)?,
            start_time: time_column(columns::START_TIME)?,
            end_time: time_column(columns::END_TIME)?,
            status_code: string_column(columns::STATUS_CODE)?,
            status_message: string_column(columns::STATUS_MESSAGE)?,
            resource_schema_url: string_column(columns::RESOURCE_SCHEMA_URL)?,
            scope_schema_url: string_column(columns::SCOPE_SCHEMA_URL)?,
            dropped_attributes_count: u32_column(columns::DROPPED_ATTRIBUTES_COUNT)?,
            events,
            event_time: timestamps(field(event_items, event::TIME)?, event::TIME)?,
            event_name: strings(field(event_items, event::NAME)?, event::NAME)?,
            event_dropped: u32s(
                field(event_items, event::DROPPED_ATTRIBUTES_COUNT)?,
                event::DROPPED_ATTRIBUTES_COUNT,
            )?,
            dropped_events_count: u32_column(columns::DROPPED_EVENTS_COUNT)?,
            links,
            link_trace_id: strings(field(link_items, link::TRACE_ID)?, link::TRACE_ID)?,
            link_span_id: strings(field(link_items, link::SPAN_ID)?, link::SPAN_ID)?,
            link_trace_state: strings(field(link_items, link::TRACE_STATE)?, link::TRACE_STATE)?,
            link_flags: u32s(field(link_items, link::FLAGS)?, link::FLAGS)?,
            link_dropped: u32s(
                field(link_items, link::DROPPED_ATTRIBUTES_COUNT)?,
                link::DROPPED_ATTRIBUTES_COUNT,
            )?,
            dropped_links_count: u32_column(columns::DROPPED_LINKS_COUNT)?,
            resource_otlp: binary_column(columns::RESOURCE_OTLP)?,
            scope_otlp: binary_column(columns::SCOPE_OTLP)?,
            span_otlp: binary_column(columns::SPAN_OTLP)?,
        })
    }

    /// Rebuilds the span of one row.
    fn span(&self, row: usize) -> Result<Span> {
        let typed = Span::decode(self.span_otlp.value(row))
            .map_err(|error| corrupt(columns::SPAN_OTLP, row, error))?;

        let event_range = item_range(self.events, row);
        if typed.events.len() != event_range.len() {
            return Err(corrupt(
                columns::SPAN_OTLP,
                row,
                format!(
                    "{} typed event attribute lists for {} events",
                    typed.events.len(),
                    event_range.len()
                ),
            ));
        }
        let mut events = Vec::with_capacity(typed.events.len());
        for (item, typed_event) in event_range.zip(typed.events) {
            events.push(span::Event {
                time_unix_nano: unsigned_time("events.time", row, self.event_time.value(item))?,
                name: self.event_name.value(item).to_owned(),
                attributes: typed_event.attributes,
                dropped_attributes_count: self.event_dropped.value(item),
            });
        }

        let link_range = item_range(self.links, row);
        if typed.links.len() != link_range.len() {
            return Err(corrupt(
                columns::SPAN_OTLP,
                row,
                format!(
                    "{} typed link attribute lists for {} links",
                    typed.links.len(),
                    link_range.len()
                ),
            ));
        }
        let mut links = Vec::with_capacity(typed.links.len());
        for (item, typed_link) in link_range.zip(typed.links) {
            let trace_id = TraceId::from_hex(self.link_trace_id.value(item))
                .map_err(|error| corrupt("links.trace_id", row, error))?;
            let span_id = SpanId::from_hex(self.link_span_id.value(item))
                .map_err(|error| corrupt("links.span_id", row, error))?;
            links.push(span::Link {
                trace_id: trace_id.0.to_vec(),
                span_id: span_id.0.to_vec(),
                trace_state: text(self.link_trace_state, item).to_owned(),
                attributes: typed_link.attributes,
                dropped_attributes_count: self.link_dropped.value(item),
                flags: self.link_flags.value(item),
            });
        }

        let trace_id = TraceId::from_hex(self.trace_id.value(row))
            .map_err(|error| corrupt(columns::TRACE_ID, row, error))?;
        let span_id = SpanId::from_hex(self.span_id.value(row))
            .map_err(|error| corrupt(columns::SPAN_ID, row, error))?;
        let parent_span_id = if self.parent_span_id.is_null(row) {
            Vec::new()
        } else {
            SpanId::from_hex(self.parent_span_id.value(row))
                .map_err(|error| corrupt(columns::PARENT_SPAN_ID, row, error))?
                .0
                .to_vec()
        };
        let kind_name = self.span_kind.value(row);
        let kind = span_kind_value(kind_name).ok_or_else(|| {
            corrupt(
                columns::SPAN_KIND,
                row,
                format!("unknown span kind {kind_name:?}"),
            )
        })?;
        let code_name = self.status_code.value(row);
        let code = status_code_value(code_name).ok_or_else(|| {
            corrupt(
                columns::STATUS_CODE,
                row,
                format!("unknown status code {code_name:?}"),
            )
        })?;
        let message = text(self.status_message, row);
        // `span_otlp` carries an empty status only for a present-but-default status; any other
        // present status shows in the columns.
        let status = (typed.status.is_some() || code != 0 || !message.is_empty()).then(|| Status {
            message: message.to_owned(),
            code,
        });

        Ok(Span {
            trace_id: trace_id.0.to_vec(),
            span_id: span_id.0.to_vec(),
            trace_state: text(self.trace_state, row).to_owned(),
            parent_span_id,
            flags: self.flags.value(row),
            name: self.span_name.value(row).to_owned(),
            kind,
            start_time_unix_nano: unsigned_time(
                columns::START_TIME,
                row,
                self.start_time.value(row),
            )?,
            end_time_unix_nano: unsigned_time(columns::END_TIME, row, self.end_time.value(row))?,
            attributes: typed.attributes,
            dropped_attributes_count: self.dropped_attributes_count.value(row),
            events,
            dropped_events_count: self.dropped_events_count.value(row),
            links,
            dropped_links_count: self.dropped_links_count.value(row),
            status,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::StringArray;
    use engine::schema::column_index;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

    use super::*;
    use crate::to_span_batch;

    fn span(seed: u8) -> Span {
        Span {
            trace_id: vec![seed; 16],
            span_id: vec![seed; 8],
            name: format!("s{seed}"),
            ..Span::default()
        }
    }

    fn resource(service: &str) -> Option<Resource> {
        Some(Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(service.into())),
                }),
                key_strindex: 0,
            }],
            ..Resource::default()
        })
    }

    fn resource_spans(service: &str, scope_url: &str, spans: Vec<Span>) -> ResourceSpans {
        ResourceSpans {
            resource: resource(service),
            scope_spans: vec![ScopeSpans {
                scope: None,
                spans,
                schema_url: scope_url.into(),
            }],
            schema_url: String::new(),
        }
    }

    #[test]
    fn rows_group_by_resource_and_scope_in_first_seen_order() {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![
                resource_spans("a", "", vec![span(1)]),
                resource_spans("b", "", vec![span(2)]),
                resource_spans("a", "", vec![span(3)]),
                resource_spans("a", "v2", vec![span(4)]),
            ],
        };
        let rows = to_span_batch(&request).unwrap().batch;
        // Split into two batches: grouping works across batches too.
        let back = batches_to_otlp(&[rows.slice(0, 3), rows.slice(3, 1)]).unwrap();
        let names = |resource: &ResourceSpans| -> Vec<Vec<String>> {
            resource
                .scope_spans
                .iter()
                .map(|scope| scope.spans.iter().map(|span| span.name.clone()).collect())
                .collect()
        };
        assert_eq!(back.resource_spans.len(), 2);
        assert_eq!(back.resource_spans[0].resource, resource("a"));
        assert_eq!(
            names(&back.resource_spans[0]),
            vec![vec!["s1", "s3"], vec!["s4"]]
        );
        assert_eq!(back.resource_spans[0].scope_spans[1].schema_url, "v2");
        assert_eq!(back.resource_spans[1].resource, resource("b"));
        assert_eq!(names(&back.resource_spans[1]), vec![vec!["s2"]]);
    }

    #[test]
    fn a_missing_column_is_reported() {
        let rows = to_span_batch(&ExportTraceServiceRequest {
            resource_spans: vec![resource_spans("a", "", vec![span(1)])],
        })
        .unwrap()
        .batch;
        let projected = rows.project(&[0, 1, 2]).unwrap();
        let error = batches_to_otlp(&[projected]).unwrap_err();
        assert!(matches!(error, Error::ColumnMismatch { .. }), "{error:?}");
        assert_eq!(error.kind(), engine::ErrorKind::Corruption);
    }

    #[test]
    fn a_bad_stored_id_is_corruption_naming_column_and_row() {
        let rows = to_span_batch(&ExportTraceServiceRequest {
            resource_spans: vec![resource_spans("a", "", vec![span(1), span(2)])],
        })
        .unwrap()
        .batch;
        let mut arrays = rows.columns().to_vec();
        arrays[column_index(columns::SPAN_ID)] =
            Arc::new(StringArray::from(vec!["0101010101010101", "xyz"]));
        let damaged = RecordBatch::try_new(rows.schema(), arrays).unwrap();
        let error = batches_to_otlp(&[damaged]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "stored span rows are invalid: column span_id, row 1: expected 16 hex characters, \
             found 3"
        );
        assert_eq!(error.kind(), engine::ErrorKind::Corruption);
    }
}
