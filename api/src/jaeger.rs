//! Jaeger v2 remote storage: `jaeger.storage.v2.TraceReader`, `DependencyReader` and
//! `Capabilities` over the engine, served with the OTLP `TraceService` (writes) on one gRPC
//! server. The contract is ../shared/conformance/JAEGER.md; the protos are in api/proto.
//!
//! Searching (which traces match) is `query::trace_search`; this module validates requests,
//! reads whole traces, and streams them one trace per message in chunks well under Jaeger's
//! 4 MiB receive limit.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray, UInt32Array};
use engine::{ScanRequest, TraceId};
use futures::Stream;
use opentelemetry_proto::tonic::common::v1 as otlp_common;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, TracesData};
use prost::Message as _;
use query::trace_search::{self, TraceSearch};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::edge_error::EdgeError;
use crate::server::AppState;

/// Code generated from api/proto/jaeger/storage/v2 (messages, servers and clients).
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all,
    clippy::clone_on_ref_ptr
)]
pub mod proto {
    tonic::include_proto!("jaeger.storage.v2");
}

use proto::capabilities_server::Capabilities;
use proto::dependency_reader_server::DependencyReader;
use proto::trace_reader_server::TraceReader;

/// Target encoded size of one streamed `TracesData` message. Jaeger's client refuses messages
/// over 4 MiB; a single span larger than this still goes out alone.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Traces returned by a search whose `search_depth` is zero or negative (Jaeger's default).
pub const DEFAULT_SEARCH_DEPTH: usize = 100;

/// Go's zero `time.Time` (0001-01-01T00:00:00Z) in Unix seconds: Jaeger sends it for an unset
/// time bound.
const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

/// Summaries per `FindTraceSummariesResponse` message.
const SUMMARIES_PER_MESSAGE: usize = 1000;

/// Traces read by one scan when streaming several.
const TRACES_PER_READ: usize = 20;

/// Streamed messages buffered ahead of a slow client.
const STREAM_BUFFER: usize = 4;

/// The Jaeger storage services over one server's state.
#[derive(Debug, Clone)]
pub struct JaegerStorage {
    state: Arc<AppState>,
}

impl JaegerStorage {
    /// Services reading `state.engine`.
    pub fn new(state: Arc<AppState>) -> Self {
        JaegerStorage { state }
    }

    /// The three Jaeger services, ready to add to a tonic server.
    pub fn services(
        self,
    ) -> (
        proto::trace_reader_server::TraceReaderServer<JaegerStorage>,
        proto::dependency_reader_server::DependencyReaderServer<JaegerStorage>,
        proto::capabilities_server::CapabilitiesServer<JaegerStorage>,
    ) {
        (
            proto::trace_reader_server::TraceReaderServer::new(self.clone()),
            proto::dependency_reader_server::DependencyReaderServer::new(self.clone()),
            proto::capabilities_server::CapabilitiesServer::new(self),
        )
    }
}

type MessageStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn query_status(error: query::Error) -> Status {
    EdgeError::from(error).into_status()
}

fn engine_status(error: engine::Error) -> Status {
    EdgeError::from(error).into_status()
}

/// INTERNAL, logged once with `cause`; the client gets a generic message.
fn internal(cause: String) -> Status {
    EdgeError::internal(cause).into_status()
}

/// Runs blocking engine work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| internal(format!("jaeger read task failed: {error}")))?
}

/// A Jaeger trace id: at most 16 bytes, a shorter one left-padded with zeros.
pub fn parse_trace_id(bytes: &[u8]) -> Result<TraceId, Status> {
    if bytes.len() > 16 {
        return Err(Status::invalid_argument(format!(
            "trace id has {} bytes; at most 16 are allowed",
            bytes.len()
        )));
    }
    if bytes.is_empty() {
        return Err(Status::invalid_argument("trace id is empty"));
    }
    let mut id = [0u8; 16];
    id[16 - bytes.len()..].copy_from_slice(bytes);
    Ok(TraceId(id))
}

/// A time bound: unset, zero and Go's zero time all mean "no bound".
fn time_bound(
    timestamp: Option<&prost_types::Timestamp>,
    what: &str,
) -> Result<Option<i64>, Status> {
    let Some(timestamp) = timestamp else {
        return Ok(None);
    };
    if (timestamp.seconds == 0 && timestamp.nanos == 0) || timestamp.seconds <= GO_ZERO_TIME_SECONDS
    {
        return Ok(None);
    }
    if !(0..1_000_000_000).contains(&timestamp.nanos) {
        return Err(Status::invalid_argument(format!(
            "{what} has {} nanoseconds; expected 0 to 999999999",
            timestamp.nanos
        )));
    }
    timestamp
        .seconds
        .checked_mul(1_000_000_000)
        .and_then(|nanos| nanos.checked_add(i64::from(timestamp.nanos)))
        .map(Some)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "{what} ({} s) is outside the range of nanosecond timestamps (years 1678 to 2262)",
                timestamp.seconds
            ))
        })
}

/// A duration bound: unset and zero mean "no bound"; negative is an error.
fn duration_bound(
    duration: Option<&prost_types::Duration>,
    what: &str,
) -> Result<Option<i64>, Status> {
    let Some(duration) = duration else {
        return Ok(None);
    };
    if duration.seconds == 0 && duration.nanos == 0 {
        return Ok(None);
    }
    if duration.seconds < 0 || duration.nanos < 0 {
        return Err(Status::invalid_argument(format!(
            "{what} is negative ({} s {} ns)",
            duration.seconds, duration.nanos
        )));
    }
    duration
        .seconds
        .checked_mul(1_000_000_000)
        .and_then(|nanos| nanos.checked_add(i64::from(duration.nanos)))
        .map(Some)
        .ok_or_else(|| Status::invalid_argument(format!("{what} is too long")))
}

/// The string form a query attribute value is matched by: the same form stored spans' attribute
/// maps hold (ints in decimal, doubles in shortest round-trip form, bools as true/false, bytes as
/// base64). The Jaeger `AnyValue` has the OTLP wire format, so it converts through the bytes.
fn attribute_string_form(attribute: &proto::KeyValue) -> Result<String, Status> {
    let value = attribute
        .value
        .as_ref()
        .map(|value| otlp_common::AnyValue::decode(value.encode_to_vec().as_slice()));
    match value {
        None => Ok(String::new()),
        Some(Ok(value)) => Ok(ingest::string_form(Some(&value))),
        Some(Err(error)) => Err(Status::invalid_argument(format!(
            "attribute {:?} has an invalid value: {error}",
            attribute.key
        ))),
    }
}

/// Validates Jaeger query parameters into a search.
pub fn search_from_query(
    query: Option<&proto::TraceQueryParameters>,
) -> Result<TraceSearch, Status> {
    let default = proto::TraceQueryParameters::default();
    let query = query.unwrap_or(&default);
    let start_time_min = time_bound(query.start_time_min.as_ref(), "start_time_min")?;
    let start_time_max = time_bound(query.start_time_max.as_ref(), "start_time_max")?;
    if let (Some(min), Some(max)) = (start_time_min, start_time_max)
        && max < min
    {
        return Err(Status::invalid_argument(format!(
            "start_time_max ({max} ns) is before start_time_min ({min} ns)"
        )));
    }
    let duration_min = duration_bound(query.duration_min.as_ref(), "duration_min")?;
    let duration_max = duration_bound(query.duration_max.as_ref(), "duration_max")?;
    if let (Some(min), Some(max)) = (duration_min, duration_max)
        && max < min
    {
        return Err(Status::invalid_argument(format!(
            "duration_max ({max} ns) is below duration_min ({min} ns)"
        )));
    }
    let mut attributes = Vec::with_capacity(query.attributes.len());
    for attribute in &query.attributes {
        if attribute.key.is_empty() {
            return Err(Status::invalid_argument("an attribute has an empty key"));
        }
        attributes.push((attribute.key.clone(), attribute_string_form(attribute)?));
    }
    let depth = usize::try_from(query.search_depth)
        .ok()
        .filter(|depth| *depth > 0)
        .unwrap_or(DEFAULT_SEARCH_DEPTH);
    Ok(TraceSearch {
        service_name: Some(query.service_name.clone()).filter(|name| !name.is_empty()),
        operation_name: Some(query.operation_name.clone()).filter(|name| !name.is_empty()),
        attributes,
        start_time_min,
        start_time_max,
        duration_min,
        duration_max,
        depth,
    })
}

/// Every span of one trace as OTLP, in chunks of at most about [`CHUNK_BYTES`] each; empty when
/// the trace is unknown.
pub fn read_trace(engine: &engine::Engine, trace_id: &TraceId) -> Result<Vec<TracesData>, Status> {
    let mut traces = read_traces(engine, std::slice::from_ref(trace_id))?;
    Ok(traces.pop().map(|(_, chunks)| chunks).unwrap_or_default())
}

/// Traces read by one scan of the trace index: each known trace of `trace_ids` (in that order)
/// with its chunks ([`read_trace`]); unknown ids are left out.
pub fn read_traces(
    engine: &engine::Engine,
    trace_ids: &[TraceId],
) -> Result<Vec<(TraceId, Vec<TracesData>)>, Status> {
    let wanted: Vec<String> = trace_ids.iter().map(ToString::to_string).collect();
    let batches = engine
        .scan(&ScanRequest {
            trace_ids: Some(trace_ids.to_vec()),
            ..ScanRequest::default()
        })
        .map_err(engine_status)?;
    // Each trace's rows, batch by batch, in scan order.
    let trace_column = engine::schema::column_index(engine::schema::columns::TRACE_ID);
    let mut rows: HashMap<String, Vec<RecordBatch>> = HashMap::new();
    for batch in &batches {
        let ids = batch
            .column(trace_column)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| internal("trace_id column is not a string column".to_owned()))?;
        let mut indices: HashMap<&str, Vec<u32>> = HashMap::new();
        for row in 0..batch.num_rows() {
            let row_index = u32::try_from(row)
                .map_err(|_| internal(format!("batch of {} rows", batch.num_rows())))?;
            indices.entry(ids.value(row)).or_default().push(row_index);
        }
        for (id, indices) in indices {
            let taken = if indices.len() == batch.num_rows() {
                batch.clone()
            } else {
                let indices = UInt32Array::from(indices);
                let columns = batch
                    .columns()
                    .iter()
                    .map(|column| arrow::compute::take(column, &indices, None))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|error| internal(format!("splitting traces: {error}")))?;
                RecordBatch::try_new(batch.schema(), columns)
                    .map_err(|error| internal(format!("splitting traces: {error}")))?
            };
            rows.entry(id.to_owned()).or_default().push(taken);
        }
    }
    let mut traces = Vec::with_capacity(trace_ids.len());
    for (trace_id, hex_id) in trace_ids.iter().zip(&wanted) {
        let Some(batches) = rows.get(hex_id) else {
            continue;
        };
        let request = ingest::batches_to_otlp(batches)
            .map_err(|error| internal(format!("rebuilding trace {trace_id}: {error}")))?;
        traces.push((*trace_id, chunk(request.resource_spans, CHUNK_BYTES)));
    }
    Ok(traces)
}

/// Splits one trace's resource spans into messages of at most about `limit` encoded bytes,
/// keeping span order and each span's resource and scope.
pub fn chunk(resource_spans: Vec<ResourceSpans>, limit: usize) -> Vec<TracesData> {
    let mut chunks = Vec::new();
    let mut current = TracesData::default();
    let mut current_bytes = 0usize;
    for resource in resource_spans {
        let resource_bytes = resource.resource.as_ref().map_or(0, |r| r.encoded_len())
            + resource.schema_url.len()
            + 16;
        for scope in resource.scope_spans {
            let scope_bytes =
                scope.scope.as_ref().map_or(0, |s| s.encoded_len()) + scope.schema_url.len() + 16;
            let mut open_scope = false;
            for span in scope.spans {
                let span_bytes = span.encoded_len() + 8;
                let header = if open_scope {
                    0
                } else {
                    resource_bytes + scope_bytes
                };
                if current_bytes > 0 && current_bytes + header + span_bytes > limit {
                    chunks.push(std::mem::take(&mut current));
                    current_bytes = 0;
                    open_scope = false;
                }
                if !open_scope {
                    current.resource_spans.push(ResourceSpans {
                        resource: resource.resource.clone(),
                        scope_spans: vec![ScopeSpans {
                            scope: scope.scope.clone(),
                            spans: Vec::new(),
                            schema_url: scope.schema_url.clone(),
                        }],
                        schema_url: resource.schema_url.clone(),
                    });
                    current_bytes += resource_bytes + scope_bytes;
                    open_scope = true;
                }
                current_bytes += span_bytes;
                if let Some(open) = current
                    .resource_spans
                    .last_mut()
                    .and_then(|resource| resource.scope_spans.last_mut())
                {
                    open.spans.push(span);
                }
            }
        }
    }
    if current_bytes > 0 {
        chunks.push(current);
    }
    chunks
}

/// Streams the given traces, one after another, each as its chunks.
fn stream_traces(
    engine: Arc<engine::Engine>,
    trace_ids: Vec<TraceId>,
) -> MessageStream<TracesData> {
    let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
    tokio::task::spawn_blocking(move || {
        // One scan per group: the trace index finds a group's rows in one pass, and a group's
        // traces are small enough to hold while they stream.
        for group in trace_ids.chunks(TRACES_PER_READ) {
            let traces = match read_traces(&engine, group) {
                Ok(traces) => traces,
                Err(status) => {
                    let _ = sender.blocking_send(Err(status));
                    return;
                }
            };
            for chunk in traces.into_iter().flat_map(|(_, chunks)| chunks) {
                if sender.blocking_send(Ok(chunk)).is_err() {
                    // The client went away.
                    return;
                }
            }
        }
    });
    receiver_stream(receiver)
}

fn receiver_stream<T: Send + 'static>(
    mut receiver: mpsc::Receiver<Result<T, Status>>,
) -> MessageStream<T> {
    Box::pin(futures::stream::poll_fn(move |context| {
        receiver.poll_recv(context)
    }))
}

/// A protobuf `Timestamp` of ns since the Unix epoch (negative ones too).
pub fn timestamp(unix_nanos: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: unix_nanos.div_euclid(1_000_000_000),
        // In 0..1e9 by construction.
        nanos: i32::try_from(unix_nanos.rem_euclid(1_000_000_000)).unwrap_or(0),
    }
}

fn count(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

const SPAN_KINDS: [&str; 6] = ["", "internal", "server", "client", "producer", "consumer"];

#[tonic::async_trait]
impl TraceReader for JaegerStorage {
    type GetTracesStream = MessageStream<TracesData>;
    type FindTracesStream = MessageStream<TracesData>;
    type FindTraceSummariesStream = MessageStream<proto::FindTraceSummariesResponse>;

    async fn get_traces(
        &self,
        request: Request<proto::GetTracesRequest>,
    ) -> Result<Response<Self::GetTracesStream>, Status> {
        // Every id is checked before anything is streamed. The time hints are not needed: the
        // trace index finds a trace's rows wherever they are.
        let trace_ids = request
            .into_inner()
            .query
            .iter()
            .map(|params| parse_trace_id(&params.trace_id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(stream_traces(
            Arc::clone(&self.state.engine),
            trace_ids,
        )))
    }

    async fn get_services(
        &self,
        _request: Request<proto::GetServicesRequest>,
    ) -> Result<Response<proto::GetServicesResponse>, Status> {
        let engine = Arc::clone(&self.state.engine);
        let services =
            blocking(move || trace_search::services(&engine).map_err(query_status)).await?;
        Ok(Response::new(proto::GetServicesResponse { services }))
    }

    async fn get_operations(
        &self,
        request: Request<proto::GetOperationsRequest>,
    ) -> Result<Response<proto::GetOperationsResponse>, Status> {
        let request = request.into_inner();
        if request.service.is_empty() {
            return Err(Status::invalid_argument("service is required"));
        }
        if !SPAN_KINDS.contains(&request.span_kind.as_str()) {
            return Err(Status::invalid_argument(format!(
                "unknown span kind {:?}; expected one of server, client, producer, consumer, internal, or empty for all",
                request.span_kind
            )));
        }
        let engine = Arc::clone(&self.state.engine);
        let operations = blocking(move || {
            let kind = Some(request.span_kind.as_str()).filter(|kind| !kind.is_empty());
            trace_search::operations(&engine, &request.service, kind).map_err(query_status)
        })
        .await?;
        Ok(Response::new(proto::GetOperationsResponse {
            operations: operations
                .into_iter()
                .map(|operation| proto::Operation {
                    name: operation.name,
                    span_kind: operation.span_kind,
                })
                .collect(),
        }))
    }

    async fn find_traces(
        &self,
        request: Request<proto::FindTracesRequest>,
    ) -> Result<Response<Self::FindTracesStream>, Status> {
        let search = search_from_query(request.get_ref().query.as_ref())?;
        let engine = Arc::clone(&self.state.engine);
        let found =
            blocking(move || trace_search::find_traces(&engine, &search).map_err(query_status))
                .await?;
        Ok(Response::new(stream_traces(
            Arc::clone(&self.state.engine),
            found.iter().map(|trace| trace.trace_id).collect(),
        )))
    }

    async fn find_trace_i_ds(
        &self,
        request: Request<proto::FindTraceIDsRequest>,
    ) -> Result<Response<proto::FindTraceIDsResponse>, Status> {
        let search = search_from_query(request.get_ref().query.as_ref())?;
        let engine = Arc::clone(&self.state.engine);
        let found =
            blocking(move || trace_search::find_traces(&engine, &search).map_err(query_status))
                .await?;
        let trace_ids = found
            .iter()
            .map(|trace| {
                Ok(proto::FoundTraceId {
                    trace_id: trace.trace_id.0.to_vec(),
                    start: Some(timestamp(trace.start_unix_nanos)),
                    end: Some(timestamp(trace.end_unix_nanos)),
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        Ok(Response::new(proto::FindTraceIDsResponse { trace_ids }))
    }

    async fn find_trace_summaries(
        &self,
        request: Request<proto::FindTraceSummariesRequest>,
    ) -> Result<Response<Self::FindTraceSummariesStream>, Status> {
        let search = search_from_query(request.get_ref().query.as_ref())?;
        let engine = Arc::clone(&self.state.engine);
        let summaries = blocking(move || {
            let found = trace_search::find_traces(&engine, &search).map_err(query_status)?;
            let ids: Vec<TraceId> = found.iter().map(|trace| trace.trace_id).collect();
            trace_search::summarize(&engine, &ids).map_err(query_status)
        })
        .await?;
        let mut messages = Vec::new();
        for group in summaries.chunks(SUMMARIES_PER_MESSAGE) {
            let summaries = group
                .iter()
                .map(|summary| {
                    Ok(proto::TraceSummary {
                        trace_id: summary.trace_id.0.to_vec(),
                        root_service_name: summary.root_service_name.clone(),
                        root_operation_name: summary.root_operation_name.clone(),
                        min_start_time_unix_nano: u64::try_from(summary.min_start_unix_nanos)
                            .unwrap_or(0),
                        max_end_time_unix_nano: u64::try_from(summary.max_end_unix_nanos)
                            .unwrap_or(0),
                        span_count: count(summary.span_count),
                        error_span_count: count(summary.error_span_count),
                        orphan_span_count: count(summary.orphan_span_count),
                        services: summary
                            .services
                            .iter()
                            .map(|service| proto::ServiceSummary {
                                name: service.name.clone(),
                                span_count: count(service.span_count),
                                error_span_count: count(service.error_span_count),
                            })
                            .collect(),
                    })
                })
                .collect::<Result<Vec<_>, Status>>()?;
            messages.push(Ok(proto::FindTraceSummariesResponse { summaries }));
        }
        Ok(Response::new(Box::pin(futures::stream::iter(messages))))
    }
}

#[tonic::async_trait]
impl DependencyReader for JaegerStorage {
    async fn get_dependencies(
        &self,
        request: Request<proto::GetDependenciesRequest>,
    ) -> Result<Response<proto::GetDependenciesResponse>, Status> {
        let request = request.into_inner();
        let start = time_bound(request.start_time.as_ref(), "start_time")?;
        let end = time_bound(request.end_time.as_ref(), "end_time")?;
        if let (Some(start), Some(end)) = (start, end)
            && end < start
        {
            return Err(Status::invalid_argument(format!(
                "end_time ({end} ns) is before start_time ({start} ns)"
            )));
        }
        let engine = Arc::clone(&self.state.engine);
        let dependencies =
            blocking(move || trace_search::dependencies(&engine, start, end).map_err(query_status))
                .await?;
        Ok(Response::new(proto::GetDependenciesResponse {
            dependencies: dependencies
                .into_iter()
                .map(|dependency| proto::Dependency {
                    parent: dependency.parent,
                    child: dependency.child,
                    call_count: dependency.call_count,
                    source: String::new(),
                })
                .collect(),
        }))
    }
}

#[tonic::async_trait]
impl Capabilities for JaegerStorage {
    async fn get_capabilities(
        &self,
        _request: Request<proto::GetCapabilitiesRequest>,
    ) -> Result<Response<proto::GetCapabilitiesResponse>, Status> {
        Ok(Response::new(proto::GetCapabilitiesResponse {
            search: Some(proto::SearchCapabilities {
                without_service_name: true,
                // Every attribute of a search must match on the same span.
                same_span_conjunction: true,
                filter: None,
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::Span;

    #[test]
    fn short_trace_ids_are_left_padded_and_long_ones_refused() {
        let id = parse_trace_id(&[0x11]).unwrap_or_else(|status| panic!("{status}"));
        assert_eq!(id.to_string(), "00000000000000000000000000000011");
        let error = parse_trace_id(&[1; 17]).err().map(|status| status.code());
        assert_eq!(error, Some(tonic::Code::InvalidArgument));
    }

    #[test]
    fn unset_and_go_zero_times_are_no_bound() {
        let go_zero = prost_types::Timestamp {
            seconds: GO_ZERO_TIME_SECONDS,
            nanos: 0,
        };
        assert_eq!(time_bound(Some(&go_zero), "t").ok(), Some(None));
        assert_eq!(
            time_bound(Some(&prost_types::Timestamp::default()), "t").ok(),
            Some(None)
        );
        let set = prost_types::Timestamp {
            seconds: 2,
            nanos: 5,
        };
        assert_eq!(time_bound(Some(&set), "t").ok(), Some(Some(2_000_000_005)));
    }

    #[test]
    fn inverted_bounds_are_invalid() {
        let query = proto::TraceQueryParameters {
            start_time_min: Some(prost_types::Timestamp {
                seconds: 10,
                nanos: 0,
            }),
            start_time_max: Some(prost_types::Timestamp {
                seconds: 5,
                nanos: 0,
            }),
            ..Default::default()
        };
        assert_eq!(
            search_from_query(Some(&query))
                .err()
                .map(|status| status.code()),
            Some(tonic::Code::InvalidArgument)
        );
        let query = proto::TraceQueryParameters {
            duration_min: Some(prost_types::Duration {
                seconds: 10,
                nanos: 0,
            }),
            duration_max: Some(prost_types::Duration {
                seconds: 5,
                nanos: 0,
            }),
            ..Default::default()
        };
        assert_eq!(
            search_from_query(Some(&query))
                .err()
                .map(|status| status.code()),
            Some(tonic::Code::InvalidArgument)
        );
    }

    #[test]
    fn query_values_match_by_their_string_forms() {
        let value = |value| proto::KeyValue {
            key: "k".to_owned(),
            value: Some(proto::AnyValue { value: Some(value) }),
        };
        use proto::any_value::Value;
        let forms: Vec<String> = [
            Value::StringValue("x".to_owned()),
            Value::IntValue(123),
            Value::DoubleValue(72.5),
            Value::BoolValue(true),
            Value::BytesValue(vec![1, 2, 3]),
        ]
        .into_iter()
        .map(|v| attribute_string_form(&value(v)).unwrap_or_else(|status| panic!("{status}")))
        .collect();
        assert_eq!(forms, ["x", "123", "72.5", "true", "AQID"]);
    }

    #[test]
    fn chunks_stay_under_the_limit_and_keep_every_span_in_order() {
        let spans: Vec<Span> = (0u32..500)
            .map(|index| Span {
                name: format!("span-{index}-{}", "x".repeat(200)),
                span_id: index.to_be_bytes().repeat(2),
                ..Default::default()
            })
            .collect();
        let resource_spans = vec![ResourceSpans {
            resource: None,
            scope_spans: vec![ScopeSpans {
                scope: None,
                spans: spans.clone(),
                schema_url: "s".to_owned(),
            }],
            schema_url: "r".to_owned(),
        }];
        let chunks = chunk(resource_spans, 10_000);
        assert!(chunks.len() > 10, "{} chunks", chunks.len());
        let mut seen = Vec::new();
        for chunk in &chunks {
            assert!(chunk.encoded_len() <= 10_000, "{}", chunk.encoded_len());
            for resource in &chunk.resource_spans {
                assert_eq!(resource.schema_url, "r");
                for scope in &resource.scope_spans {
                    assert_eq!(scope.schema_url, "s");
                    assert!(!scope.spans.is_empty());
                    seen.extend(scope.spans.iter().cloned());
                }
            }
        }
        assert_eq!(seen, spans);
    }
}
