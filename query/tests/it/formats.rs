//! Output formats: JSON shape, CSV, Arrow IPC stream, text table.

use arrow::ipc::reader::StreamReader;
use serde_json::json;

use crate::fixture::{Fixture, root_span, trace_hex};

#[tokio::test(flavor = "multi_thread")]
async fn json_has_columns_and_rows() {
    let fixture = Fixture::new();
    let output = fixture
        .query(&format!(
            "SELECT trace_id, span_name, start_time, duration_ns, parent_span_id, attributes, \
             events, 2.5 AS ratio, true AS flag FROM spans WHERE span_id = '{}'",
            root_span(1)
        ))
        .await;
    assert_eq!(
        query::format::to_json(&output),
        json!({
            "columns": [
                {"name": "trace_id", "type": "Utf8"},
                {"name": "span_name", "type": "Utf8"},
                {"name": "start_time", "type": "Timestamp(ns, \"UTC\")"},
                {"name": "duration_ns", "type": "Int64"},
                {"name": "parent_span_id", "type": "Utf8"},
                {"name": "attributes", "type": output.schema.field(5).data_type().to_string()},
                {"name": "events", "type": output.schema.field(6).data_type().to_string()},
                {"name": "ratio", "type": "Float64"},
                {"name": "flag", "type": "Boolean"},
            ],
            "rows": [[
                trace_hex(1),
                "invoke_agent",
                "2024-05-01T01:00:00.000000000Z",
                10000,
                null,
                {"gen_ai.operation.name": "invoke_agent"},
                [],
                2.5,
                true,
            ]],
        })
    );
    let events = fixture
        .query(&format!(
            "SELECT events FROM spans WHERE trace_id = '{}' AND span_name = 'chat'",
            trace_hex(0)
        ))
        .await;
    assert_eq!(
        query::format::to_json(&events)["rows"][0][0],
        json!([
            {"time": "2024-05-01T00:00:00.000003100Z", "name": "prompt",
             "attributes": {"gen_ai.prompt.tokens": "12"}, "dropped_attributes_count": 0},
            {"time": "2024-05-01T00:00:00.000003900Z", "name": "completion",
             "attributes": {"gen_ai.completion.tokens": "0"}, "dropped_attributes_count": 1},
        ])
    );
    let big = fixture
        .query("SELECT arrow_cast(18446744073709551615, 'UInt64') AS big, 9007199254740993 AS odd, 'NaN'::double AS nan")
        .await;
    assert_eq!(
        query::format::to_json(&big)["rows"],
        json!([[
            18_446_744_073_709_551_615_u64,
            9_007_199_254_740_993_i64,
            null
        ]])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_has_a_header_and_renders_nested_values_as_json() {
    let fixture = Fixture::new();
    let output = fixture
        .query(&format!(
            "SELECT span_id, start_time, attributes, parent_span_id, dropped_attributes_count \
             FROM spans WHERE span_id = '{}'",
            root_span(1)
        ))
        .await;
    let csv = String::from_utf8(query::format::to_csv(&output, usize::MAX).unwrap()).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("span_id,start_time,attributes,parent_span_id,dropped_attributes_count")
    );
    assert_eq!(
        lines.next(),
        Some(
            format!(
                "{},2024-05-01T01:00:00.000000000Z,\"{{\"\"gen_ai.operation.name\"\":\"\"invoke_agent\"\"}}\",,0",
                root_span(1)
            )
            .as_str()
        )
    );
    assert_eq!(lines.next(), None);
    let empty = fixture.query("SELECT span_id FROM spans WHERE false").await;
    assert_eq!(
        query::format::to_csv(&empty, usize::MAX).unwrap(),
        b"span_id\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn arrow_ipc_is_a_readable_stream() {
    let fixture = Fixture::new();
    let output = fixture
        .query("SELECT trace_id, span_id, attributes, events, links FROM spans ORDER BY span_id")
        .await;
    let bytes = query::format::to_arrow_ipc(&output, usize::MAX).unwrap();
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    assert_eq!(reader.schema(), output.schema);
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    assert_eq!(batches, output.batches);
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 21);
}

#[tokio::test(flavor = "multi_thread")]
async fn table_is_boxed_text() {
    let fixture = Fixture::new();
    let output = fixture
        .query("SELECT service_name, count(*) AS spans FROM spans GROUP BY 1 ORDER BY 1")
        .await;
    let table = query::format::to_table(&output).unwrap();
    assert_eq!(
        table,
        "+--------------+-------+\n\
         | service_name | spans |\n\
         +--------------+-------+\n\
         | llm          | 6     |\n\
         | planner      | 6     |\n\
         | tools        | 9     |\n\
         +--------------+-------+"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn written_json_equals_the_json_value_and_stops_at_its_byte_cap() {
    let fixture = Fixture::new();
    let output = fixture.query("SELECT * FROM spans ORDER BY span_id").await;
    let bytes = query::format::to_json_bytes(&output, usize::MAX).unwrap();
    assert_eq!(
        String::from_utf8(bytes.clone()).unwrap(),
        serde_json::to_string(&query::format::to_json(&output)).unwrap(),
        "the written text is the value's text, byte for byte"
    );
    let empty = fixture.query("SELECT * FROM spans WHERE false").await;
    let parsed: serde_json::Value =
        serde_json::from_slice(&query::format::to_json_bytes(&empty, usize::MAX).unwrap()).unwrap();
    assert_eq!(parsed, query::format::to_json(&empty));
    // One byte under the full text: refused, in every format.
    let limit = bytes.len() - 1;
    assert!(matches!(
        query::format::to_json_bytes(&output, limit),
        Err(query::Error::TooLarge { limit: l }) if l == limit
    ));
    let csv = query::format::to_csv(&output, usize::MAX).unwrap();
    assert!(query::format::to_csv(&output, csv.len() - 1).is_err());
    let ipc = query::format::to_arrow_ipc(&output, usize::MAX).unwrap();
    assert!(query::format::to_arrow_ipc(&output, ipc.len() / 2).is_err());
}
