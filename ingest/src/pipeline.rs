//! The write pipeline: one call from a decoded export request to the one engine write batch it
//! becomes.
//!
//! [`prepare`] redacts and extracts content ([`crate::extract`]), validates, maps and
//! normalizes the spans ([`crate::to_span_batch`]), handing mapping what extraction read from
//! the values it removed (finish reasons inside output messages), places each span in its
//! retention tier (the configured [`TierRules`]) and gives each content reference its span's
//! tier. The engine commits the result in one transaction ([`engine::Engine::write_batch`]).
//! The request is stored whole or not at all: an invalid span fails the call before anything
//! is returned, and nothing is written before it returns.

use std::collections::HashMap;

use arrow::array::{Array, AsArray, RecordBatch};
use engine::schema::columns;
use engine::{ContentBatch, TierRules, WriteBatch};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::content::{ContentPolicy, extract_with_finish_reasons};
use crate::error::{Error, Result};
use crate::mapping::map_request;

/// Redacts, extracts content, maps and places `request` in tiers (see the module docs). The
/// content's `stored_unix_nanos` is left for the engine to set.
pub fn prepare(
    mut request: ExportTraceServiceRequest,
    policy: &ContentPolicy,
    rules: &dyn TierRules,
) -> Result<WriteBatch> {
    let (mut content, finish_reasons) = extract_with_finish_reasons(&mut request, policy);
    let spans = map_request(&request, &finish_reasons)?.batch;
    let spans = place_in_tiers(rules, spans)?;
    set_content_tiers(&spans, &mut content);
    Ok(WriteBatch { spans, content })
}

/// Redacts, extracts content, validates and maps a logs `request` (see `logs.rs`), and places
/// its rows in tiers: the same steps as [`prepare`], for log records. Each record becomes a
/// row of its trace (see `engine::schema::columns::LOG`).
pub fn prepare_logs(
    mut request: ExportLogsServiceRequest,
    policy: &ContentPolicy,
    rules: &dyn TierRules,
) -> Result<WriteBatch> {
    crate::logs::validate(&request)?;
    let mut content = crate::content::extract_logs(&mut request, policy);
    let rows = crate::logs::map_logs(&request);
    let rows = place_in_tiers(rules, rows)?;
    set_content_tiers(&rows, &mut content);
    Ok(WriteBatch {
        spans: rows,
        content,
    })
}

/// Sets each row's retention tier from the rules (NULL: the default tier).
fn place_in_tiers(rules: &dyn TierRules, batch: RecordBatch) -> Result<RecordBatch> {
    if batch.num_rows() == 0 {
        return Ok(batch);
    }
    let tiers = rules
        .assign_tiers(&batch)
        .map_err(|detail| Error::Placement { detail })?;
    if tiers.iter().all(Option::is_none) {
        return Ok(batch);
    }
    engine::with_retention_tiers(&batch, &tiers).map_err(|error| Error::Placement {
        detail: error.to_string(),
    })
}

/// Gives each content reference the retention tier its span was placed in, so content of a
/// longer-kept tier is kept longer too (the engine raises it to the trace's tier).
fn set_content_tiers(batch: &RecordBatch, content: &mut ContentBatch) {
    if content.refs.is_empty() {
        return;
    }
    let (Some(traces), Some(spans), Some(tiers)) = (
        batch.column_by_name(columns::TRACE_ID),
        batch.column_by_name(columns::SPAN_ID),
        batch.column_by_name(columns::RETENTION_TIER),
    ) else {
        return;
    };
    let (Some(traces), Some(spans), Some(tiers)) = (
        traces.as_string_opt::<i32>(),
        spans.as_string_opt::<i32>(),
        tiers.as_string_opt::<i32>(),
    ) else {
        return;
    };
    let mut by_span = HashMap::new();
    for row in 0..batch.num_rows() {
        if tiers.is_valid(row) {
            by_span.insert((traces.value(row), spans.value(row)), tiers.value(row));
        }
    }
    if by_span.is_empty() {
        return;
    }
    for reference in &mut content.refs {
        let trace = reference.trace_id.to_string();
        let span = reference.span_id.to_string();
        if let Some(tier) = by_span.get(&(trace.as_str(), span.as_str())) {
            reference.tier = Some((*tier).to_owned());
        }
    }
}
