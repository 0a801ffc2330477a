//! Sightline ingest: OTLP trace export requests in, engine span rows out, and back.
//!
//! - Bodies: [`decompress_gzip`] (bounded), [`decode_traces_protobuf`] and
//!   [`decode_traces_json`] (the OTLP/JSON mapping, written by hand and lenient about spelling)
//!   turn OTLP/HTTP bodies into an `ExportTraceServiceRequest`; gRPC hands one over directly.
//! - Storing: [`prepare`] is the write pipeline (redaction, content extraction, mapping,
//!   tier placement) from a decoded request to the one `engine::WriteBatch` it stores.
//! - Rows: [`to_span_batch`] validates a request as a whole and maps it to one Arrow
//!   `RecordBatch` in [`engine::span_schema`], built with [`engine::SpanBatchBuilder`];
//!   [`batches_to_otlp`] is the exact inverse, reading the hidden protobuf columns.
//! - Responses: [`encode_traces_json`] and [`encode_export_response_json`].
//!
//! The OTLP-field-to-column mapping, the string forms of attribute values and what round-trips
//! exactly are documented on the `mapping` and `string_form` modules (see the crate sources).
//!
//! Ingest sits between the edge and storage (`api -> ingest -> engine`): it uses OTLP *message*
//! types only, never sockets or servers. Every failure is an [`Error`] whose
//! [`kind`](Error::kind) tells a caller's mistake (4xx) from damaged stored rows (500).
//!
//! ```
//! # fn main() -> ingest::Result<()> {
//! let body = br#"{"resourceSpans": [{
//!   "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "agent"}}]},
//!   "scopeSpans": [{"spans": [{
//!     "traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7",
//!     "name": "invoke_agent", "kind": "SPAN_KIND_INTERNAL",
//!     "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": 1700000000500000000,
//!     "attributes": [{"key": "gen_ai.usage.input_tokens", "value": {"intValue": "42"}}]
//!   }]}]
//! }]}"#;
//! let request = ingest::decode_traces_json(body)?;
//! let rows = ingest::to_span_batch(&request)?;
//! assert_eq!(rows.spans, 1);
//!
//! // The rows (as the engine would store them) convert back to the same request.
//! let back = ingest::batches_to_otlp(&[rows.batch])?;
//! assert_eq!(back, request);
//! assert_eq!(ingest::encode_traces_json(&back)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
//!     ["attributes"][0]["value"]["intValue"], "42");
//! # Ok(())
//! # }
//! ```

mod body;
mod content;
mod error;
mod json_decode;
mod json_encode;
mod logs;
mod mapping;
mod normalize;
mod pipeline;
mod reconstruct;
mod redact;
mod string_form;

pub use body::{decode_logs_protobuf, decode_traces_protobuf, decompress_gzip};
pub use content::{
    CONTENT_REF_PREFIX, ContentPolicy, FORM_ANY_VALUE, FORM_STRING, RestoredContent, extract,
    is_content_key, reference_string, restore_content, restore_log_content,
};
pub use error::{Error, Result, SpanProblem};
pub use json_decode::{decode_logs_json, decode_traces_json};
pub use json_encode::{encode_export_response_json, encode_logs_json, encode_traces_json};
pub use logs::{NO_SPAN, NO_TRACE, rows_to_logs};
pub use mapping::{SpanBatch, to_span_batch};
pub use pipeline::{prepare, prepare_logs};
pub use reconstruct::batches_to_otlp;
pub use redact::{Detector, RedactionRule, RedactionRuleConfig};
pub use string_form::string_form;
