//! OTLP log records -> log rows ([`map_logs`]) and back ([`rows_to_logs`]).
//!
//! A log record is stored as one row of the span schema with the `log` column set (see
//! `engine::schema::columns::LOG`), so it lives, is kept, erased and recovered with its trace.
//!
//! # Validation
//!
//! The whole request is checked before any row is built, and one bad record rejects all of it
//! ([`Error::InvalidSpan`] naming `resourceLogs[i].scopeLogs[j].logRecords[k].<field>`):
//! `traceId` is empty or 16 bytes, `spanId` empty or 8 bytes, `timeUnixNano` and
//! `observedTimeUnixNano` at most `i64::MAX` ns. An all-zero id is "no id", as OTLP defines.
//!
//! # OTLP field -> column
//!
//! | OTLP                                   | column                                          |
//! |----------------------------------------|-------------------------------------------------|
//! | `trace_id`, `span_id`                  | `trace_id`, `span_id` (hex; all zeros when absent) |
//! | `time_unix_nano`                       | `start_time` = `end_time`: the time, else the observed time, else the time the request was prepared |
//! | `observed_time_unix_nano`              | `log.observed_time` (NULL when 0)               |
//! | `event_name` (else attribute `event.name`) | `span_name` and `log.event_name`            |
//! | `severity_number`, `severity_text`     | `log.severity_number`, `log.severity_text`      |
//! | `body`                                 | `log.body`: its OTLP/JSON (`{"stringValue":..}`) |
//! | `attributes`, `dropped_attributes_count`, `flags` | as for spans                         |
//! | resource, scope, schema urls           | as for spans (`resource_otlp`, `scope_otlp`)    |
//! | the whole `LogRecord` as stored        | `log.otlp` (exact round trip)                   |
//!
//! The agent columns are resolved from the record's attributes as for a span's, so a record
//! naming a session or conversation gives its trace those keys and a decision record's verdict
//! reaches the retention rules.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use engine::schema::columns;
use engine::{AttributePair, LogFields, SpanBatchBuilder, SpanId, SpanRecord, TraceId};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::error::{Error, Result, SpanProblem};
use crate::mapping::{EMPTY_RESOURCE_OTLP, EMPTY_SCOPE_OTLP, encode_optional};
use crate::string_form::string_form;

/// The trace id stored for a record without one.
pub const NO_TRACE: TraceId = TraceId([0; 16]);
/// The span id stored for a record without one.
pub const NO_SPAN: SpanId = SpanId([0; 8]);

/// The record's trace id, or [`NO_TRACE`] (empty or all-zero bytes).
pub(crate) fn record_trace(record: &LogRecord) -> TraceId {
    <[u8; 16]>::try_from(record.trace_id.as_slice()).map_or(NO_TRACE, TraceId)
}

/// The record's span id, or [`NO_SPAN`].
pub(crate) fn record_span(record: &LogRecord) -> SpanId {
    <[u8; 8]>::try_from(record.span_id.as_slice()).map_or(NO_SPAN, SpanId)
}

/// The record's event name: `event_name`, else the string attribute `event.name`.
pub(crate) fn event_name(record: &LogRecord) -> Option<&str> {
    if !record.event_name.is_empty() {
        return Some(&record.event_name);
    }
    record
        .attributes
        .iter()
        .find(|pair| pair.key == "event.name")
        .and_then(|pair| match pair.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(text) if !text.is_empty() => Some(text.as_str()),
            _ => None,
        })
}

/// Checks every record of `request` (see the module docs).
pub(crate) fn validate(request: &ExportLogsServiceRequest) -> Result<()> {
    for (r, resource) in request.resource_logs.iter().enumerate() {
        for (s, scope) in resource.scope_logs.iter().enumerate() {
            for (l, record) in scope.log_records.iter().enumerate() {
                let path = |field: &str| {
                    format!("resourceLogs[{r}].scopeLogs[{s}].logRecords[{l}].{field}")
                };
                for (field, bytes, expected) in [
                    ("traceId", &record.trace_id, 16),
                    ("spanId", &record.span_id, 8),
                ] {
                    if !bytes.is_empty() && bytes.len() != expected {
                        return Err(Error::InvalidSpan {
                            path: path(field),
                            problem: SpanProblem::IdLength {
                                expected,
                                found: bytes.len(),
                                optional: true,
                            },
                        });
                    }
                }
                for (field, value) in [
                    ("timeUnixNano", record.time_unix_nano),
                    ("observedTimeUnixNano", record.observed_time_unix_nano),
                ] {
                    if i64::try_from(value).is_err() {
                        return Err(Error::InvalidSpan {
                            path: path(field),
                            problem: SpanProblem::TimeOutOfRange { value },
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// Maps a request [`validate`] accepted (and content extraction rewrote) to log rows, one per
/// record, in request order.
pub(crate) fn map_logs(request: &ExportLogsServiceRequest) -> RecordBatch {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX)
        });
    let records = request
        .resource_logs
        .iter()
        .flat_map(|resource| &resource.scope_logs)
        .map(|scope| scope.log_records.len())
        .sum();
    let mut builder = SpanBatchBuilder::with_capacity(records);
    let no_reasons = HashMap::new();
    for resource_logs in &request.resource_logs {
        let resource = resource_logs.resource.as_ref();
        let resource_otlp = encode_optional(resource, EMPTY_RESOURCE_OTLP);
        let resource_attributes = forms(resource.map_or(&[][..], |r| &r.attributes));
        let service_name = resource_attributes
            .iter()
            .find(|(key, _)| *key == "service.name")
            .map(|(_, value)| value.as_ref());
        for scope_logs in &resource_logs.scope_logs {
            let scope = scope_logs.scope.as_ref();
            let scope_otlp = encode_optional(scope, EMPTY_SCOPE_OTLP);
            let scope_attributes = forms(scope.map_or(&[][..], |s| &s.attributes));
            for record in &scope_logs.log_records {
                let attributes = forms(&record.attributes);
                let name = event_name(record);
                // Times fit: validated before.
                let observed = record.observed_time_unix_nano as i64;
                let time = match (record.time_unix_nano as i64, observed) {
                    (0, 0) => now,
                    (0, observed) => observed,
                    (time, _) => time,
                };
                let body_json = record
                    .body
                    .as_ref()
                    .map(|body| crate::json_encode::any_value(body).to_string());
                let otlp = record.encode_to_vec();
                // The agent columns of a span with the record's attributes.
                let as_span = Span {
                    name: name.unwrap_or_default().to_owned(),
                    attributes: record.attributes.clone(),
                    ..Span::default()
                };
                builder.append(&SpanRecord {
                    trace_id: record_trace(record),
                    span_id: record_span(record),
                    flags: record.flags,
                    name: name.unwrap_or_default(),
                    start_time_unix_nano: time,
                    end_time_unix_nano: time,
                    service_name,
                    agent: crate::normalize::agent_fields(&as_span, &no_reasons),
                    resource_attributes: &resource_attributes,
                    resource_schema_url: &resource_logs.schema_url,
                    scope_name: scope.map_or("", |scope| scope.name.as_str()),
                    scope_version: scope.map_or("", |scope| scope.version.as_str()),
                    scope_attributes: &scope_attributes,
                    scope_schema_url: &scope_logs.schema_url,
                    attributes: &attributes,
                    dropped_attributes_count: record.dropped_attributes_count,
                    resource_otlp: &resource_otlp,
                    scope_otlp: &scope_otlp,
                    log: Some(LogFields {
                        event_name: name,
                        observed_time_unix_nano: observed,
                        severity_number: record.severity_number,
                        severity_text: &record.severity_text,
                        body_json: body_json.as_deref(),
                        otlp: &otlp,
                    }),
                    ..SpanRecord::default()
                });
            }
        }
    }
    builder.finish()
}

fn forms(pairs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> Vec<AttributePair<'_>> {
    pairs
        .iter()
        .map(|pair| {
            (
                pair.key.as_str(),
                Cow::Owned(string_form(pair.value.as_ref())),
            )
        })
        .collect()
}

/// Rebuilds the export request of stored log rows (any projection holding `log`,
/// `resource_otlp`, `scope_otlp`, `resource_schema_url` and `scope_schema_url`; rows that are
/// not log records are skipped). Records of equal resources and scopes are grouped in
/// first-seen order.
pub fn rows_to_logs(batches: &[RecordBatch]) -> Result<ExportLogsServiceRequest> {
    let mut request = ExportLogsServiceRequest::default();
    // (resource bytes, schema url) -> index; (resource index, scope bytes, url) -> index.
    let mut resources: HashMap<(Vec<u8>, String), usize> = HashMap::new();
    let mut scopes: HashMap<(usize, Vec<u8>, String), usize> = HashMap::new();
    for batch in batches {
        let log = column(batch, columns::LOG)?
            .as_struct_opt()
            .ok_or_else(|| Error::ColumnMismatch {
                column: columns::LOG,
                detail: "expected the log struct".into(),
            })?;
        let otlp = log
            .column_by_name(columns::log::OTLP)
            .and_then(|otlp| otlp.as_binary_opt::<i32>())
            .ok_or_else(|| Error::ColumnMismatch {
                column: columns::log::OTLP,
                detail: "expected binary".into(),
            })?;
        let resource_otlp = binary(batch, columns::RESOURCE_OTLP)?;
        let scope_otlp = binary(batch, columns::SCOPE_OTLP)?;
        let resource_url = strings(batch, columns::RESOURCE_SCHEMA_URL)?;
        let scope_url = strings(batch, columns::SCOPE_SCHEMA_URL)?;
        for row in 0..batch.num_rows() {
            if log.is_null(row) {
                continue;
            }
            let corrupt = |column: &'static str, detail: String| Error::CorruptRows {
                column,
                row,
                detail,
            };
            let record = LogRecord::decode(otlp.value(row))
                .map_err(|error| corrupt(columns::log::OTLP, error.to_string()))?;
            let resource_key = (
                resource_otlp.value(row).to_vec(),
                text(resource_url, row).to_owned(),
            );
            let resource_index = match resources.get(&resource_key) {
                Some(index) => *index,
                None => {
                    let resource = decode_optional::<Resource>(&resource_key.0)
                        .map_err(|error| corrupt(columns::RESOURCE_OTLP, error.to_string()))?;
                    request.resource_logs.push(ResourceLogs {
                        resource,
                        scope_logs: Vec::new(),
                        schema_url: resource_key.1.clone(),
                    });
                    resources.insert(resource_key, request.resource_logs.len() - 1);
                    request.resource_logs.len() - 1
                }
            };
            let scope_key = (
                resource_index,
                scope_otlp.value(row).to_vec(),
                text(scope_url, row).to_owned(),
            );
            let scope_index = match scopes.get(&scope_key) {
                Some(index) => *index,
                None => {
                    let scope = decode_optional::<InstrumentationScope>(&scope_key.1)
                        .map_err(|error| corrupt(columns::SCOPE_OTLP, error.to_string()))?;
                    let scope_logs = &mut request.resource_logs[resource_index].scope_logs;
                    scope_logs.push(ScopeLogs {
                        scope,
                        log_records: Vec::new(),
                        schema_url: scope_key.2.clone(),
                    });
                    let index = scope_logs.len() - 1;
                    scopes.insert(scope_key, index);
                    index
                }
            };
            request.resource_logs[resource_index].scope_logs[scope_index]
                .log_records
                .push(record);
        }
    }
    Ok(request)
}

fn decode_optional<M: Message + Default>(bytes: &[u8]) -> Result<Option<M>, prost::DecodeError> {
    if bytes.is_empty() {
        Ok(None)
    } else {
        M::decode(bytes).map(Some)
    }
}

fn column<'b>(batch: &'b RecordBatch, name: &'static str) -> Result<&'b arrow::array::ArrayRef> {
    batch.column_by_name(name).ok_or(Error::ColumnMismatch {
        column: name,
        detail: "missing".into(),
    })
}

fn binary<'b>(batch: &'b RecordBatch, name: &'static str) -> Result<&'b arrow::array::BinaryArray> {
    column(batch, name)?
        .as_binary_opt::<i32>()
        .ok_or(Error::ColumnMismatch {
            column: name,
            detail: "expected binary".into(),
        })
}

fn strings<'b>(batch: &'b RecordBatch, name: &'static str) -> Result<&'b StringArray> {
    column(batch, name)?
        .as_string_opt::<i32>()
        .ok_or(Error::ColumnMismatch {
            column: name,
            detail: "expected utf8".into(),
        })
}

fn text(array: &StringArray, row: usize) -> &str {
    if array.is_valid(row) {
        array.value(row)
    } else {
        ""
    }
}
