//! Seeded agent-trace generators for Sightline tests and benches.
//!
//! Everything here is a pure function of its inputs: a seed and a base time go in, OTLP messages
//! come out, byte-for-byte the same on every run and platform (a SplitMix64 PRNG, no wall clock,
//! no `HashMap` iteration). The crate depends on no workspace crate, so every crate can
//! dev-depend on it; each converts the OTLP messages into its own types in its own test helpers.
//!
//! Main items:
//! - [`AgentTraceConfig`]: how many traces, sessions and services, the seed, the base time, the
//!   average spans per trace.
//! - [`agent_trace_iter`] / [`agent_trace`]: one [`AgentTrace`] at a time (an agent run:
//!   `invoke_agent` root, `chat` model calls, `execute_tool` calls with HTTP children, decisions,
//!   approvals, retries and errors, following the GenAI semantic conventions and Sightline's
//!   `agent.*` conventions).
//! - [`export_request_iter`] / [`export_requests`]: the same traces batched into
//!   `ExportTraceServiceRequest`s, as an exporter would send them; [`random_request`] for a
//!   small request whose shape also comes from the seed.
//! - [`export_request_to_json`]: OTLP/JSON encoding of a request, for the HTTP JSON path.
//!
//! Small fixture files (golden OTLP payloads) live under `testdata/files/`; larger data is
//! generated from seeds.
//!
//! ```
//! use prost::Message as _;
//! use testdata::{AgentTraceConfig, export_requests, span_count};
//!
//! let config = AgentTraceConfig { traces: 20, spans_per_trace: 25, ..Default::default() };
//! let requests = export_requests(&config, 4);
//! assert_eq!(requests.len(), 5);
//! let spans: usize = requests.iter().map(span_count).sum();
//! assert!((300..=700).contains(&spans), "{spans} spans");
//!
//! // Same seed, same bytes.
//! let again = export_requests(&config, 4);
//! assert_eq!(requests[0].encode_to_vec(), again[0].encode_to_vec());
//! ```

mod agent;
#[cfg(feature = "browser")]
pub mod browser;
mod catalog;
mod markdown;
mod otlp_json;
mod prng;
mod requests;

pub use agent::{
    AgentTrace, AgentTraceConfig, AgentTraceIter, DEFAULT_BASE_TIME_UNIX_NANO, GENAI_SCOPE_NAME,
    HTTP_SCOPE_NAME, agent_trace, agent_trace_iter,
};
pub use markdown::sql_blocks;
pub use otlp_json::export_request_to_json;
pub use requests::{
    ExportRequestIter, export_request_iter, export_requests, merge_resource_spans, random_request,
    span_count,
};
