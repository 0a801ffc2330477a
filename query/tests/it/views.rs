//! The agent views: they plan on any store, and filters on trace_id and session_id reach every
//! scan they make. Their contents are checked by the `.slt` files of `tests/slt/monitoring/`
//! and by `monitoring.rs`.

use std::sync::Arc;

use engine::Engine;
use query::{Options, SqlEngine};
use serde_json::{Value, json};

use crate::fixture::Fixture;
use crate::monitoring_fixture::MonitoringFixture;

const VIEWS: [&str; 5] = [
    "llm_calls",
    "tool_calls",
    "decisions",
    "agent_runs",
    "sessions",
];

async fn rows(sql: &SqlEngine, query: &str) -> Vec<Value> {
    let output = match sql.execute(query).await {
        Ok(output) => output,
        Err(error) => panic!("{query}: {error}"),
    };
    match query::format::to_json(&output)["rows"].take() {
        Value::Array(rows) => rows,
        other => panic!("rows are not an array: {other}"),
    }
}

/// The physical plan lines of an EXPLAIN.
async fn physical_plan(sql: &SqlEngine, query: &str) -> Vec<String> {
    rows(sql, &format!("EXPLAIN {query}"))
        .await
        .into_iter()
        .filter(|row| row[0] == "physical_plan")
        .flat_map(|row| {
            row[1]
                .as_str()
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn views_run_on_an_empty_store_and_on_spans_without_agent_columns() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(
        Engine::open(
            dir.path(),
            engine::Options::default().with_background_sealing(false),
        )
        .unwrap(),
    );
    let empty = SqlEngine::new(engine, Options::default()).unwrap();
    // The agent_runs fixture has spans but no agent columns.
    let plain = Fixture::new();
    for view in VIEWS {
        assert!(
            rows(&empty, &format!("SELECT * FROM {view}"))
                .await
                .is_empty()
        );
        assert!(
            rows(&plain.sql, &format!("SELECT * FROM {view}"))
                .await
                .is_empty()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_and_session_filters_reach_every_scan_of_every_view() {
    let fixture = MonitoringFixture::new();
    let trace = "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1";
    for view in VIEWS {
        let mut filters = vec![("session_id = 'sess_gateway'", "sessions=[sess_gateway]")];
        if view != "sessions" {
            filters.push((
                "trace_id = 'e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1'",
                "trace_ids=[",
            ));
        }
        for (filter, pushed) in filters {
            let query = format!("SELECT * FROM {view} WHERE {filter}");
            let plan = physical_plan(&fixture.sql, &query).await;
            let scans: Vec<&String> = plan
                .iter()
                .filter(|line| line.contains("SpansScanExec"))
                .collect();
            assert!(!scans.is_empty(), "{query}:\n{}", plan.join("\n"));
            for scan in &scans {
                assert!(
                    scan.contains(pushed),
                    "{query}: a scan without {pushed}:\n{}",
                    plan.join("\n")
                );
            }
            // And the pushed filter gives the same rows as filtering afterwards.
            let column = filter.split(' ').next().unwrap_or_default();
            let value = if column == "trace_id" {
                trace
            } else {
                "sess_gateway"
            };
            let mut pushed_rows = rows(&fixture.sql, &query).await;
            let mut later = rows(
                &fixture.sql,
                &format!(
                    "SELECT * FROM (SELECT *, {column} || '' AS unpushable FROM {view}) \
                     WHERE unpushable = '{value}'"
                ),
            )
            .await;
            for row in &mut later {
                if let Value::Array(cells) = row {
                    cells.pop();
                }
            }
            pushed_rows.sort_by_key(Value::to_string);
            later.sort_by_key(Value::to_string);
            assert!(!pushed_rows.is_empty(), "{query}");
            assert_eq!(pushed_rows, later, "{query}");
        }
    }
}

/// The ```sql blocks of a document under `docs/`.
fn sql_blocks(document: &str) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(document);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path:?}: {error}"));
    testdata::sql_blocks(&text)
}

fn normalized(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_query_of_the_docs_runs() {
    let fixture = MonitoringFixture::new();
    let examples = sql_blocks("sql.md");
    assert!(!examples.is_empty());
    for block in examples {
        for statement in block.split(";\n").filter(|sql| !sql.trim().is_empty()) {
            if let Err(error) = fixture.sql.execute(statement).await {
                panic!("docs/sql.md example fails: {statement}\n{error}");
            }
        }
    }
    // Each monitoring query is one of the .slt suite's, verbatim, so its results are pinned.
    let slt_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt/monitoring");
    let suite: String = ["monitoring.slt", "propagation.slt"]
        .iter()
        .map(|file| std::fs::read_to_string(slt_dir.join(file)).unwrap())
        .map(|text| normalized(&text))
        .collect::<Vec<_>>()
        .join(" ");
    let queries = sql_blocks("monitoring.md");
    assert_eq!(queries.len(), 9);
    for query in queries {
        assert!(
            suite.contains(&normalized(&query)),
            "docs/monitoring.md query not in the .slt suite:\n{query}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_monitoring_query_answers_the_same_after_the_corpus_is_sent_twice() {
    let once = MonitoringFixture::new();
    let twice = MonitoringFixture::resent();
    let count = "SELECT count(*) FROM spans";
    let stored_once = rows(&once.sql, count).await[0][0].as_i64().unwrap();
    let stored_twice = rows(&twice.sql, count).await[0][0].as_i64().unwrap();
    // The raw table keeps every copy...
    assert_eq!(stored_twice, 2 * stored_once);
    // ... and tells them apart: every stored row has its own write's arrival_time.
    let apart = rows(
        &twice.sql,
        "SELECT count(*), sum(copies), sum(stamped), \
            count(*) FILTER (WHERE copies <> arrivals) \
         FROM (SELECT trace_id, span_id, count(*) AS copies, \
                 count(arrival_time) AS stamped, \
                 count(DISTINCT arrival_time) AS arrivals \
               FROM spans GROUP BY trace_id, span_id)",
    )
    .await;
    let groups = rows(
        &twice.sql,
        "SELECT count(*) FROM (SELECT DISTINCT trace_id, span_id FROM spans)",
    )
    .await[0][0]
        .as_i64()
        .unwrap();
    assert_eq!(apart, vec![json!([groups, stored_twice, stored_twice, 0])]);
    let arrived = rows(
        &twice.sql,
        "SELECT count(*) FROM spans WHERE arrival_time IS NULL OR arrival_time < now() - INTERVAL '1 hour'",
    )
    .await;
    assert_eq!(arrived, vec![json!([0])]);
    // ... and every monitoring question counts each logical span once.
    let queries = sql_blocks("monitoring.md");
    assert_eq!(queries.len(), 9);
    for query in queries {
        let expected = rows(&once.sql, &query).await;
        assert!(!expected.is_empty(), "{query}");
        assert_eq!(rows(&twice.sql, &query).await, expected, "{query}");
    }
    for table in [
        "llm_calls",
        "tool_calls",
        "decisions",
        "agent_runs",
        "sessions",
    ] {
        let all = format!("SELECT * FROM {table}");
        let sorted = |mut rows: Vec<Value>| {
            rows.sort_by_key(Value::to_string);
            rows
        };
        let expected = sorted(rows(&once.sql, &all).await);
        assert!(!expected.is_empty(), "{table}");
        assert_eq!(sorted(rows(&twice.sql, &all).await), expected, "{table}");
    }
}
