//! One bad span rejects the whole request, and nothing reaches the engine.

use engine::{Engine, Options, ScanRequest};
use ingest::{Error, decode_traces_json, to_span_batch};
use serde_json::json;

/// What the edge does with a JSON body: decode, map, write.
fn ingest_json(engine: &Engine, body: &[u8]) -> ingest::Result<usize> {
    let rows = to_span_batch(&decode_traces_json(body)?)?;
    engine.write(rows.batch).expect("engine write");
    Ok(rows.spans)
}

fn span(span_id: &str) -> serde_json::Value {
    json!({
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": span_id,
        "name": "step",
        "startTimeUnixNano": "1763790000000000000",
        "endTimeUnixNano": "1763790001000000000",
    })
}

#[test]
fn one_bad_span_rejects_the_whole_request() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(
        dir.path(),
        Options::default().with_background_sealing(false),
    )
    .unwrap();
    let body = |bad_span_id: &str| {
        serde_json::to_vec(&json!({"resourceSpans": [
            {"scopeSpans": [{"spans": [span("0000000000000001"), span("0000000000000002")]}]},
            {"scopeSpans": [
                {"spans": [span("0000000000000003")]},
                {"spans": [span("0000000000000004"), span(bad_span_id), span("0000000000000006")]},
            ]},
        ]}))
        .unwrap()
    };

    let error = ingest_json(&engine, &body("0000000000000000")).unwrap_err();
    assert!(error.is_caller_error());
    assert!(matches!(error, Error::InvalidSpan { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "resourceSpans[1].scopeSpans[1].spans[1].spanId: id is all zero bytes"
    );
    let stored: usize = engine
        .scan(&ScanRequest::default())
        .unwrap()
        .iter()
        .map(|batch| batch.num_rows())
        .sum();
    assert_eq!(stored, 0, "a rejected request stores nothing");

    // The same request with the span fixed is stored whole.
    assert_eq!(ingest_json(&engine, &body("0000000000000005")).unwrap(), 6);
    let stored: usize = engine
        .scan(&ScanRequest::default())
        .unwrap()
        .iter()
        .map(|batch| batch.num_rows())
        .sum();
    assert_eq!(stored, 6);
    engine.close().unwrap();
}
