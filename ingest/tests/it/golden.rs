//! The hand-written OTLP/JSON payloads in `testdata/files/otlp/`.

use std::path::PathBuf;

use arrow::array::{Array, AsArray, MapArray, RecordBatch};
use engine::schema::{column_index, columns};
use ingest::{
    batches_to_otlp, decode_traces_json, decode_traces_protobuf, encode_traces_json, to_span_batch,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

fn payload(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/files/otlp")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

fn strings(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
    let array = batch.column(column_index(column)).as_string::<i32>();
    (0..array.len())
        .map(|row| (!array.is_null(row)).then(|| array.value(row).to_owned()))
        .collect()
}

fn map_row(map: &MapArray, row: usize) -> Vec<(String, String)> {
    let entries = map.value(row);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_string::<i32>();
    (0..entries.len())
        .map(|index| (keys.value(index).to_owned(), values.value(index).to_owned()))
        .collect()
}

fn some(texts: &[&str]) -> Vec<Option<String>> {
    texts.iter().map(|text| Some((*text).to_owned())).collect()
}

/// Every golden payload must survive rows, JSON and protobuf unchanged.
fn assert_round_trips(request: &ExportTraceServiceRequest) {
    let rows = to_span_batch(request).unwrap();
    // Compared as encodings: exact, and NaN equals itself there.
    assert_eq!(
        batches_to_otlp(&[rows.batch]).unwrap().encode_to_vec(),
        request.encode_to_vec()
    );
    let json = serde_json::to_vec(&encode_traces_json(request)).unwrap();
    assert_eq!(
        decode_traces_json(&json).unwrap().encode_to_vec(),
        request.encode_to_vec()
    );
    assert_eq!(
        decode_traces_protobuf(&request.encode_to_vec())
            .unwrap()
            .encode_to_vec(),
        request.encode_to_vec()
    );
}

#[test]
fn agent_trace_decodes_and_maps() {
    let request = decode_traces_json(&payload("agent_trace.json")).unwrap();
    assert_eq!(request.resource_spans.len(), 1);
    let resource_spans = &request.resource_spans[0];
    assert_eq!(
        resource_spans.schema_url,
        "https://opentelemetry.io/schemas/1.37.0"
    );
    let spans = &resource_spans.scope_spans[0].spans;
    assert_eq!(spans.len(), 3);
    assert_eq!(spans[1].kind, 3, "SPAN_KIND_CLIENT by name");
    assert_eq!(spans[1].start_time_unix_nano, 1_763_790_000_100_000_000);
    assert_eq!(spans[1].parent_span_id, spans[0].span_id);
    assert_eq!(spans[2].status.as_ref().unwrap().code, 2);
    assert_eq!(
        spans[0].links[0].trace_id[0], 0x0a,
        "upper-case hex link id"
    );

    let rows = to_span_batch(&request).unwrap();
    assert_eq!(rows.spans, 3);
    let batch = &rows.batch;
    assert_eq!(
        strings(batch, columns::SPAN_NAME),
        some(&[
            "invoke_agent travel_planner",
            "chat gpt-4o",
            "execute_tool search_flights"
        ])
    );
    assert_eq!(
        strings(batch, columns::TRACE_ID),
        some(&["5b8efff798038103d269b633813fc60c"; 3])
    );
    assert_eq!(
        strings(batch, columns::PARENT_SPAN_ID),
        vec![
            None,
            Some("eee19b7ec3c1b174".to_owned()),
            Some("eee19b7ec3c1b174".to_owned())
        ]
    );
    assert_eq!(
        strings(batch, columns::SPAN_KIND),
        some(&["internal", "client", "internal"])
    );
    assert_eq!(
        strings(batch, columns::STATUS_CODE),
        some(&["ok", "unset", "error"])
    );
    assert_eq!(
        strings(batch, columns::STATUS_MESSAGE),
        vec![None, None, Some("upstream timeout".to_owned())]
    );
    assert_eq!(
        strings(batch, columns::SERVICE_NAME),
        some(&["travel-agent"; 3])
    );
    assert_eq!(
        strings(batch, columns::SCOPE_NAME),
        some(&["opentelemetry.instrumentation.openai_agents"; 3])
    );
    let attributes = batch.column(column_index(columns::ATTRIBUTES)).as_map();
    let chat = map_row(attributes, 1);
    let chat = |key: &str| {
        chat.iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.clone())
    };
    assert_eq!(chat("gen_ai.request.model").as_deref(), Some("gpt-4o"));
    assert_eq!(chat("gen_ai.usage.input_tokens").as_deref(), Some("1834"));
    assert_eq!(chat("gen_ai.usage.output_tokens").as_deref(), Some("96"));
    assert_eq!(chat("gen_ai.request.temperature").as_deref(), Some("0.2"));
    assert_eq!(
        chat("gen_ai.response.finish_reasons").as_deref(),
        Some(r#"["tool_calls"]"#)
    );

    let events = batch.column(column_index(columns::EVENTS)).as_list::<i32>();
    assert_eq!(
        (0..3)
            .map(|row| events.value_length(row))
            .collect::<Vec<_>>(),
        vec![0, 1, 0]
    );
    let links = batch.column(column_index(columns::LINKS)).as_list::<i32>();
    let link = links.value(0);
    let link = link.as_struct();
    assert_eq!(
        link.column_by_name("trace_id")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert_eq!(
        link.column_by_name("trace_state")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "rojo=00f067aa0ba902b7"
    );

    assert_round_trips(&request);
}

#[test]
fn all_value_types_decode_and_have_their_string_forms() {
    let request = decode_traces_json(&payload("all_value_types.json")).unwrap();
    let span = &request.resource_spans[0].scope_spans[0].spans[0];
    let typed = |key: &str| {
        span.attributes
            .iter()
            .find(|pair| pair.key == key)
            .and_then(|pair| pair.value.clone())
            .and_then(|value| value.value)
    };
    assert_eq!(
        typed("int_number"),
        Some(Value::IntValue(9_007_199_254_740_993))
    );
    assert_eq!(typed("int_string"), Some(Value::IntValue(i64::MIN)));
    assert_eq!(
        typed("bytes"),
        Some(Value::BytesValue(vec![0xde, 0xad, 0xbe, 0xef]))
    );
    assert!(matches!(typed("double_nan"), Some(Value::DoubleValue(number)) if number.is_nan()));
    assert_eq!(typed("no_value"), None);

    let rows = to_span_batch(&request).unwrap();
    let attributes = map_row(
        rows.batch
            .column(column_index(columns::ATTRIBUTES))
            .as_map(),
        0,
    );
    let expected: Vec<(String, String)> = [
        ("string", "héllo \"world\""),
        ("empty_string", ""),
        ("bool", "false"),
        ("int_string", "-9223372036854775808"),
        ("int_number", "9007199254740993"),
        ("double", "1.5"),
        ("double_integral", "2"),
        ("double_nan", "NaN"),
        ("double_infinity", "-inf"),
        ("bytes", "3q2+7w=="),
        ("array", r#"["a",1,0.5,true,"AQI=",null,[2]]"#),
        ("kvlist", r#"{"nested":"x","n":"inf","missing":null}"#),
        ("no_value", ""),
    ]
    .iter()
    .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
    .collect();
    assert_eq!(attributes, expected);
    assert_eq!(
        map_row(
            rows.batch
                .column(column_index(columns::SCOPE_ATTRIBUTES))
                .as_map(),
            0
        ),
        vec![("scope.bool".to_owned(), "true".to_owned())]
    );

    assert_round_trips(&request);
}
