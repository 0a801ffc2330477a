//! OTLP/JSON logs body -> export request ([`decode_logs_json`]), with the same leniency and
//! error paths as the traces decoder (`resourceLogs[0].scopeLogs[1].logRecords[2].traceId`).

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use serde_json::Value;

use super::{
    Path, any_value, enumeration, hex_id, key_value, list, object, resource, scope, string,
    unsigned_32, unsigned_64,
};
use crate::error::{Error, Result};

/// Decodes an OTLP/HTTP JSON logs body (`application/json`) into an export request. Ids are
/// hex, 64-bit integers strings or numbers, `severityNumber` an integer or its name
/// (`"SEVERITY_NUMBER_INFO"`), `body` an `AnyValue`. Checks are made by
/// [`crate::prepare_logs`].
pub fn decode_logs_json(body: &[u8]) -> Result<ExportLogsServiceRequest> {
    let document: Value = serde_json::from_slice(body).map_err(Error::JsonSyntax)?;
    let root = Path::Root;
    let mut request = ExportLogsServiceRequest::default();
    for (key, value) in object(&document, &root)? {
        if value.is_null() {
            continue;
        }
        if let "resourceLogs" | "resource_logs" = key.as_str() {
            request.resource_logs = list(value, &root.field("resourceLogs"), resource_logs)?;
        }
    }
    Ok(request)
}

fn resource_logs(value: &Value, path: &Path<'_>) -> Result<ResourceLogs> {
    let mut out = ResourceLogs::default();
    for (key, value) in object(value, path)? {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "resource" => out.resource = Some(resource(value, &path.field("resource"))?),
            "scopeLogs" | "scope_logs" => {
                out.scope_logs = list(value, &path.field("scopeLogs"), scope_logs)?;
            }
            "schemaUrl" | "schema_url" => out.schema_url = string(value, &path.field("schemaUrl"))?,
            _ => {}
        }
    }
    Ok(out)
}

fn scope_logs(value: &Value, path: &Path<'_>) -> Result<ScopeLogs> {
    let mut out = ScopeLogs::default();
    for (key, value) in object(value, path)? {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "scope" => out.scope = Some(scope(value, &path.field("scope"))?),
            "logRecords" | "log_records" => {
                out.log_records = list(value, &path.field("logRecords"), log_record)?;
            }
            "schemaUrl" | "schema_url" => out.schema_url = string(value, &path.field("schemaUrl"))?,
            _ => {}
        }
    }
    Ok(out)
}

fn severity_from_name(name: &str) -> Option<i32> {
    SeverityNumber::from_str_name(name).map(|severity| severity as i32)
}

fn log_record(value: &Value, path: &Path<'_>) -> Result<LogRecord> {
    let mut out = LogRecord::default();
    for (key, value) in object(value, path)? {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "timeUnixNano" | "time_unix_nano" => {
                out.time_unix_nano = unsigned_64(value, &path.field("timeUnixNano"))?;
            }
            "observedTimeUnixNano" | "observed_time_unix_nano" => {
                out.observed_time_unix_nano =
                    unsigned_64(value, &path.field("observedTimeUnixNano"))?;
            }
            "severityNumber" | "severity_number" => {
                out.severity_number = enumeration(
                    value,
                    &path.field("severityNumber"),
                    severity_from_name,
                    "severity number",
                )?;
            }
            "severityText" | "severity_text" => {
                out.severity_text = string(value, &path.field("severityText"))?;
            }
            "body" => out.body = Some(any_value(value, &path.field("body"))?),
            "attributes" => out.attributes = list(value, &path.field("attributes"), key_value)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                out.dropped_attributes_count =
                    unsigned_32(value, &path.field("droppedAttributesCount"))?;
            }
            "flags" => out.flags = unsigned_32(value, &path.field("flags"))?,
            "traceId" | "trace_id" => out.trace_id = hex_id(value, &path.field("traceId"), 16)?,
            "spanId" | "span_id" => out.span_id = hex_id(value, &path.field("spanId"), 8)?,
            "eventName" | "event_name" => out.event_name = string(value, &path.field("eventName"))?,
            _ => {}
        }
    }
    Ok(out)
}
