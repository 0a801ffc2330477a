//! The write pipeline: one call from a decoded export request to what the engine stores.
//!
//! [`prepare`] redacts and extracts content ([`crate::extract`]), then validates and maps the
//! spans ([`crate::to_span_batch`]), handing mapping what extraction read from the values it
//! removed (finish reasons inside output messages). The request is stored whole or not at all:
//! an invalid span fails the call before anything is returned.

use engine::ContentBatch;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::content::{ContentPolicy, extract_with_finish_reasons};
use crate::error::Result;
use crate::mapping::{SpanBatch, map_request};

/// What one export request becomes: span rows (content replaced by references) and the content
/// they reference.
#[derive(Debug)]
pub struct Prepared {
    /// One row per span, in [`engine::span_schema`].
    pub spans: SpanBatch,
    /// The extracted content (`stored_unix_nanos` left 0 for the caller to set).
    pub content: ContentBatch,
}

/// Redacts, extracts content and maps `request` (see the module docs).
pub fn prepare(mut request: ExportTraceServiceRequest, policy: &ContentPolicy) -> Result<Prepared> {
    let (content, finish_reasons) = extract_with_finish_reasons(&mut request, policy);
    let spans = map_request(&request, &finish_reasons)?;
    Ok(Prepared { spans, content })
}
