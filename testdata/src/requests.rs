//! Grouping generated traces into OTLP export requests.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

use crate::agent::{AgentTrace, AgentTraceConfig, AgentTraceIter, agent_trace_iter};
use crate::prng::SplitMix64;

/// Iterator over export requests (see [`export_request_iter`]).
#[derive(Debug, Clone)]
pub struct ExportRequestIter {
    traces: AgentTraceIter,
    traces_per_request: usize,
}

/// The traces of `config`, `traces_per_request` per request (the last request may hold fewer;
/// 0 is treated as 1), produced one request at a time.
///
/// Like a collector's batch processor, a request holds one `ResourceSpans` per distinct resource
/// and one `ScopeSpans` per scope within it, so traces of the same service share them.
pub fn export_request_iter(
    config: &AgentTraceConfig,
    traces_per_request: usize,
) -> ExportRequestIter {
    ExportRequestIter {
        traces: agent_trace_iter(config),
        traces_per_request: traces_per_request.max(1),
    }
}

/// All requests of [`export_request_iter`] at once.
///
/// ```
/// let config = testdata::AgentTraceConfig { traces: 10, ..Default::default() };
/// let requests = testdata::export_requests(&config, 4);
/// assert_eq!(requests.len(), 3);
/// ```
pub fn export_requests(
    config: &AgentTraceConfig,
    traces_per_request: usize,
) -> Vec<ExportTraceServiceRequest> {
    export_request_iter(config, traces_per_request).collect()
}

impl Iterator for ExportRequestIter {
    type Item = ExportTraceServiceRequest;

    fn next(&mut self) -> Option<ExportTraceServiceRequest> {
        let mut resource_spans = Vec::new();
        for trace in self.traces.by_ref().take(self.traces_per_request) {
            for spans in trace.resource_spans {
                merge_resource_spans(&mut resource_spans, spans);
            }
        }
        if resource_spans.is_empty() {
            return None;
        }
        Some(ExportTraceServiceRequest { resource_spans })
    }

    /// Jumps to request `n` without generating the traces before it (so `skip` is cheap).
    fn nth(&mut self, n: usize) -> Option<ExportTraceServiceRequest> {
        self.traces
            .advance(n.saturating_mul(self.traces_per_request));
        self.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.traces.len().div_ceil(self.traces_per_request);
        (left, Some(left))
    }
}

impl ExactSizeIterator for ExportRequestIter {}

impl AgentTrace {
    /// This trace alone as an export request.
    pub fn into_export_request(self) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: self.resource_spans,
        }
    }
}

/// Appends `incoming` to `into`, reusing an existing `ResourceSpans` with the same resource and
/// schema URL, and within it an existing `ScopeSpans` with the same scope and schema URL.
pub fn merge_resource_spans(into: &mut Vec<ResourceSpans>, incoming: ResourceSpans) {
    let Some(existing) = into.iter_mut().find(|existing| {
        existing.resource == incoming.resource && existing.schema_url == incoming.schema_url
    }) else {
        into.push(incoming);
        return;
    };
    for scope_spans in incoming.scope_spans {
        match existing.scope_spans.iter_mut().find(|existing| {
            existing.scope == scope_spans.scope && existing.schema_url == scope_spans.schema_url
        }) {
            Some(existing) => existing.spans.extend(scope_spans.spans),
            None => existing.scope_spans.push(scope_spans),
        }
    }
}

/// Number of spans in a request.
pub fn span_count(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|resource_spans| &resource_spans.scope_spans)
        .map(|scope_spans| scope_spans.spans.len())
        .sum()
}

/// A small request of agent traces whose shape (1 to 4 traces, an average of 2 to 40 spans per
/// trace, 1 to 3 services, base time within a year of the default) is itself drawn from `seed`; for
/// property tests and fuzz-style round trips.
pub fn random_request(seed: u64) -> ExportTraceServiceRequest {
    let mut rng = SplitMix64::new(seed);
    let traces = rng.range(1, 4) as usize;
    let config = AgentTraceConfig {
        seed: rng.next_u64(),
        traces,
        sessions: rng.range(1, 4) as usize,
        services: rng.range(1, 3) as usize,
        base_time_unix_nano: AgentTraceConfig::default().base_time_unix_nano
            + rng.below(365 * 24 * 3_600) * 1_000_000_000,
        spans_per_trace: rng.range(2, 40) as usize,
        time_spread_ns: rng.range(1, 600) * 1_000_000_000,
        tool_reissue_percent: 0,
    };
    let mut requests = export_request_iter(&config, traces);
    // `traces >= 1`, so the iterator yields exactly one request.
    requests.next().unwrap_or_default()
}
