//! Golden tests of the agent columns, one per dialect: each OTLP/JSON fixture in
//! `testdata/files/dialects/<name>.json` must map to exactly the rows written by hand in
//! `<name>.expected.json` (one object per span, in request order, with `span_id` and every agent
//! column; `null` for NULL). The rules are in `docs/conventions.md`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use engine::schema::{column_index, columns, span_schema};
use ingest::{batches_to_otlp, decode_traces_json, to_span_batch};
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

/// Maps `<name>.json` and compares every agent column with `<name>.expected.json`.
fn check(name: &str) {
    let request = decode_traces_json(&read(&format!("{name}.json"))).unwrap();
    let rows = to_span_batch(&request).unwrap();
    let batch = &rows.batch;

    let expected: Vec<Map<String, Value>> =
        serde_json::from_slice(&read(&format!("{name}.expected.json")))
            .unwrap_or_else(|error| panic!("{name}.expected.json: {error}"));
    assert_eq!(
        expected.len(),
        rows.spans,
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

    // Normalizing never touches the raw keys: the rows still rebuild the request exactly.
    assert_eq!(
        batches_to_otlp(&[rows.batch]).unwrap().encode_to_vec(),
        request.encode_to_vec(),
        "{name}: rows no longer round-trip"
    );
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
