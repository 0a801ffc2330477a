//! Property tests: OTLP -> rows -> engine (sealed, reopened) -> OTLP, and OTLP -> JSON -> OTLP.

use engine::{Engine, Options, ScanRequest};
use ingest::{
    batches_to_otlp, decode_traces_json, decode_traces_protobuf, encode_traces_json, to_span_batch,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use proptest::prelude::*;
use prost::Message;

use crate::strategies::{export_request, span_multiset};

fn span_count(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|resource| &resource.scope_spans)
        .map(|scope| scope.spans.len())
        .sum()
}

/// Writes the request through the engine, seals, reopens and reads everything back.
fn through_engine(request: &ExportTraceServiceRequest) -> ExportTraceServiceRequest {
    let dir = tempfile::tempdir().unwrap();
    let options = || Options::default().with_background_sealing(false);
    let rows = to_span_batch(request).unwrap();
    assert_eq!(rows.spans, span_count(request));
    {
        let engine = Engine::open(dir.path(), options()).unwrap();
        engine.write(rows.batch).unwrap();
        engine.seal().unwrap();
        engine.close().unwrap();
    }
    let engine = Engine::open(dir.path(), options()).unwrap();
    let batches = engine.scan(&ScanRequest::default()).unwrap();
    engine.close().unwrap();
    batches_to_otlp(&batches).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_otlp_field_survives_the_engine(request in export_request()) {
        let back = through_engine(&request);
        prop_assert_eq!(span_multiset(&back), span_multiset(&request));
    }

    #[test]
    fn rows_convert_back_without_the_engine(request in export_request()) {
        let rows = to_span_batch(&request).unwrap();
        let back = batches_to_otlp(&[rows.batch]).unwrap();
        prop_assert_eq!(span_multiset(&back), span_multiset(&request));
    }

    #[test]
    fn otlp_json_round_trips_exactly(request in export_request()) {
        let body = serde_json::to_vec(&encode_traces_json(&request)).unwrap();
        let back = decode_traces_json(&body).unwrap();
        // Compare encodings: exact, and NaN equals itself there.
        prop_assert_eq!(back.encode_to_vec(), request.encode_to_vec());
    }

    #[test]
    fn json_and_protobuf_bodies_give_the_same_rows(request in export_request()) {
        let from_json = decode_traces_json(&serde_json::to_vec(&encode_traces_json(&request)).unwrap()).unwrap();
        let from_protobuf = decode_traces_protobuf(&request.encode_to_vec()).unwrap();
        let json_rows = to_span_batch(&from_json).unwrap().batch;
        let protobuf_rows = to_span_batch(&from_protobuf).unwrap().batch;
        // Row-for-row equality of every column; NaN-free because doubles only appear as
        // string forms and inside the binary columns.
        prop_assert_eq!(json_rows, protobuf_rows);
    }
}
