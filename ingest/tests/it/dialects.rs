//! Golden tests of the agent columns, one per dialect: each OTLP/JSON fixture in
//! `testdata/files/dialects/<name>.json` must map to exactly the rows written by hand in
//! `<name>.expected.json` (one object per span, in request order, with `span_id` and every agent
//! column; `null` for NULL). The rules are in `docs/conventions.md`.
//!
//! Each fixture is also mapped the way the server maps an export: redaction and content
//! extraction first ([`ingest::extract`], capture on and off), then [`to_span_batch`]. The agent
//! columns must not change: extraction replaces content (`gen_ai.output.messages`, ...) with a
//! reference before the columns are resolved.

use std::collections::BTreeSet;
use std::path::PathBuf;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use engine::schema::{column_index, columns, span_schema};
use ingest::{
    CONTENT_REF_PREFIX, ContentPolicy, batches_to_otlp, decode_traces_json, extract, prepare,
    to_span_batch,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use serde_json::{Map, Value, json};

/// The agent columns, in schema order.
const AGENT_COLUMNS: [&str; 24] = [
    columns::SESSION_ID,
    columns::CONVERSATION_ID,
    columns::USER_ID,
    columns::OPERATION,
    columns::PROVIDER,
    columns::REQUEST_MODEL,
    columns::RESPONSE_MODEL,
    columns::AGENT_NAME,
    columns::AGENT_ID,
    columns::WORKFLOW_NAME,
    columns::TOOL_NAME,
    columns::TOOL_CALL_ID,
    columns::TOOL_TYPE,
    columns::TOOL_RISK,
    columns::INPUT_TOKENS,
    columns::OUTPUT_TOKENS,
    columns::CACHE_READ_TOKENS,
    columns::CACHE_WRITE_TOKENS,
    columns::REASONING_TOKENS,
    columns::FINISH_REASONS,
    columns::ERROR_TYPE,
    columns::RETRY_ATTEMPT,
    columns::DECISION_VERDICT,
    columns::DIALECT,
];

/// Every fixture in `testdata/files/dialects/`, each checked by its own test below.
const FIXTURES: [&str; 7] = [
    "genai",
    "genai_deprecated",
    "openinference",
    "traceloop",
    "langfuse",
    "vercel_ai",
    "agent",
];

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/files/dialects")
}

fn read(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

/// One cell as JSON: strings, numbers, string lists, or `null`.
fn cell(batch: &RecordBatch, column: &str, row: usize) -> Value {
    let array = batch.column(column_index(column));
    if array.is_null(row) {
        return Value::Null;
    }
    if let Some(strings) = array.as_string_opt::<i32>() {
        return json!(strings.value(row));
    }
    if let Some(numbers) = array.as_primitive_opt::<Int64Type>() {
        return json!(numbers.value(row));
    }
    if let Some(lists) = array.as_list_opt::<i32>() {
        let items = lists.value(row);
        let items = items.as_string::<i32>();
        return Value::Array(
            (0..items.len())
                .map(|index| json!(items.value(index)))
                .collect(),
        );
    }
    panic!(
        "column {column} has an unexpected type {}",
        array.data_type()
    );
}

/// The server's content policy (default redaction rules), capture on or off.
fn policy(capture: bool) -> ContentPolicy {
    ContentPolicy::new(capture, &ContentPolicy::default_rules(), [7; 32]).unwrap()
}

/// Maps `<name>.json` and compares every agent column with `<name>.expected.json`, without
/// and with content extraction first.
fn check(name: &str) {
    let request = decode_traces_json(&read(&format!("{name}.json"))).unwrap();
    let rows = to_span_batch(&request).unwrap();
    let expected: Vec<Map<String, Value>> =
        serde_json::from_slice(&read(&format!("{name}.expected.json")))
            .unwrap_or_else(|error| panic!("{name}.expected.json: {error}"));
    compare(name, &rows.batch, &expected);

    // Normalizing never touches the raw keys: the rows still rebuild the request exactly.
    assert_eq!(
        batches_to_otlp(&[rows.batch]).unwrap().encode_to_vec(),
        request.encode_to_vec(),
        "{name}: rows no longer round-trip"
    );

    for capture in [true, false] {
        // Redaction, extraction and mapping in one pipeline call, as the server does.
        let rows = prepare(request.clone(), &policy(capture), &engine::NoTierRules)
            .unwrap()
            .spans;
        compare(
            &format!("{name} (content extracted, capture {capture})"),
            &rows,
            &expected,
        );
    }
}

/// Compares every agent column of `batch` with the `expected` rows.
fn compare(name: &str, batch: &RecordBatch, expected: &[Map<String, Value>]) {
    assert_eq!(
        expected.len(),
        batch.num_rows(),
        "{name}: expected rows vs spans in the fixture"
    );

    let wanted_keys: BTreeSet<&str> = std::iter::once("span_id").chain(AGENT_COLUMNS).collect();
    let mut differences = Vec::new();
    for (row, expected) in expected.iter().enumerate() {
        let keys: BTreeSet<&str> = expected.keys().map(String::as_str).collect();
        assert_eq!(
            keys, wanted_keys,
            "{name}.expected.json row {row}: every object lists span_id and all 24 agent columns"
        );
        let span_id = cell(batch, columns::SPAN_ID, row);
        assert_eq!(
            span_id, expected["span_id"],
            "{name}: row {row} is a different span"
        );
        for column in AGENT_COLUMNS {
            let actual = cell(batch, column, row);
            if actual != expected[column] {
                differences.push(format!(
                    "span {span_id} {column}: expected {}, got {actual}",
                    expected[column]
                ));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{name}: {} agent column(s) differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

/// The official instrumentation's streaming chat span (`a000000000000006` in `genai.json`)
/// carries its finish reasons only inside `gen_ai.output.messages`, which content extraction
/// replaces with a reference before the span is mapped; the column still has them, whether or
/// not the content is captured.
#[test]
fn finish_reasons_in_output_messages_survive_content_extraction() {
    let original = decode_traces_json(&read("genai.json")).unwrap();
    for capture in [true, false] {
        let mut request = original.clone();
        let content = extract(&mut request, &policy(capture));
        let spans = &request.resource_spans[0].scope_spans[0].spans;
        let row = spans
            .iter()
            .position(|span| span.span_id == [0xa0, 0, 0, 0, 0, 0, 0, 6])
            .unwrap();
        let messages = spans[row]
            .attributes
            .iter()
            .find(|pair| pair.key == "gen_ai.output.messages")
            .and_then(|pair| pair.value.as_ref()?.value.as_ref());
        assert!(
            matches!(messages, Some(any_value::Value::StringValue(text))
                if text.starts_with(CONTENT_REF_PREFIX)),
            "capture {capture}: the messages were not extracted: {messages:?}"
        );
        let reference = content
            .refs
            .iter()
            .find(|reference| {
                reference.key == "gen_ai.output.messages"
                    && reference.span_id.0 == [0xa0, 0, 0, 0, 0, 0, 0, 6]
            })
            .unwrap();
        assert_eq!(reference.pieces.is_some(), capture);

        // The pipeline maps the extracted request with what extraction read.
        let rows = prepare(original.clone(), &policy(capture), &engine::NoTierRules)
            .unwrap()
            .spans;
        // Mapping the extracted request alone cannot see inside the reference.
        assert_eq!(
            cell(
                &to_span_batch(&request).unwrap().batch,
                columns::FINISH_REASONS,
                row
            ),
            Value::Null,
            "capture {capture}"
        );
        assert_eq!(
            cell(&rows, columns::FINISH_REASONS, row),
            json!(["stop", "length"]),
            "capture {capture}"
        );
        assert_eq!(cell(&rows, columns::DIALECT, row), json!("gen_ai"));
        // The next span's attribute still wins over its (extracted) messages.
        assert_eq!(
            cell(&rows, columns::FINISH_REASONS, row + 1),
            json!(["length"]),
            "capture {capture}"
        );
    }
}

#[test]
fn agent_columns_are_the_schema_columns_from_session_id_to_dialect() {
    let schema = span_schema();
    let first = column_index(columns::SESSION_ID);
    let in_schema: Vec<&str> = schema.fields()[first..first + AGENT_COLUMNS.len()]
        .iter()
        .map(|field| field.name().as_str())
        .collect();
    assert_eq!(in_schema, AGENT_COLUMNS);
}

#[test]
fn every_fixture_file_has_a_golden_test() {
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let file_name = entry.unwrap().file_name().into_string().unwrap();
        let name = file_name
            .strip_suffix(".expected.json")
            .or_else(|| file_name.strip_suffix(".json"))
            .unwrap_or_else(|| panic!("unexpected file {file_name} in testdata/files/dialects"));
        found.insert(name.to_owned());
    }
    let known: BTreeSet<String> = FIXTURES.iter().map(|name| (*name).to_owned()).collect();
    assert_eq!(found, known);
    for name in FIXTURES {
        for file in [format!("{name}.json"), format!("{name}.expected.json")] {
            assert!(fixture_dir().join(&file).is_file(), "missing {file}");
        }
    }
}

#[test]
fn genai() {
    check("genai");
}

#[test]
fn genai_deprecated() {
    check("genai_deprecated");
}

#[test]
fn openinference() {
    check("openinference");
}

#[test]
fn traceloop() {
    check("traceloop");
}

#[test]
fn langfuse() {
    check("langfuse");
}

#[test]
fn vercel_ai() {
    check("vercel_ai");
}

#[test]
fn agent() {
    check("agent");
}
