//! The catalog of named questions (`query::monitoring`): it is the SQL of docs/monitoring.md,
//! its time windows keep exactly the rows in them, the run search keeps exactly the runs that
//! match, and `execute_capped` stops at its cap and says so.

use std::collections::{BTreeMap, BTreeSet};

use query::monitoring::{
    QUESTIONS, RunFilter, TimeWindow, find_runs_sql, find_sessions_sql, string_literal,
};
use query::{Access, SqlEngine};
use serde_json::Value;

use crate::monitoring_fixture::{BASE_TIME, MonitoringFixture};

const HOUR_NS: i64 = 3_600_000_000_000;

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

fn base_ns() -> i64 {
    i64::try_from(BASE_TIME).unwrap()
}

/// Nanoseconds of an RFC 3339 result value.
fn nanos(value: &Value) -> i64 {
    arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(value.as_str().unwrap()).unwrap()
}

#[test]
fn the_catalog_is_the_sql_of_docs_monitoring_md_in_order_and_by_name() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/monitoring.md");
    let page = std::fs::read_to_string(path).unwrap();
    let blocks = testdata::sql_blocks(&page);
    let catalog: Vec<&str> = QUESTIONS.iter().map(|question| question.sql).collect();
    let documented: Vec<&str> = blocks.iter().map(|block| block.trim_end()).collect();
    assert_eq!(documented, catalog);
    // Each block is introduced by its question's name, after the previous block.
    let mut rest = page.as_str();
    for question in QUESTIONS {
        let at = rest.find("```sql\n").unwrap();
        let before = &rest[..at];
        assert!(
            before.contains(&format!("`{}`", question.name)),
            "docs/monitoring.md does not name `{}` before its query",
            question.name
        );
        assert!(
            page.to_lowercase().contains(&question.title.to_lowercase()),
            "docs/monitoring.md has no heading or text {:?}",
            question.title
        );
        rest = &rest[at + 7..];
        rest = &rest[rest.find("```").unwrap() + 3..];
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_window_over_everything_changes_no_answer_and_an_empty_one_empties_every_answer() {
    let fixture = MonitoringFixture::new();
    let everything = TimeWindow {
        since_ns: Some(0),
        until_ns: Some(i64::MAX / 2),
    };
    let nothing = TimeWindow {
        since_ns: Some(base_ns() + 1_000 * HOUR_NS),
        until_ns: None,
    };
    for question in QUESTIONS {
        let whole = rows(&fixture.sql, question.sql).await;
        assert!(!whole.is_empty(), "{}", question.name);
        let windowed = rows(&fixture.sql, &question.sql_within(everything)).await;
        assert_eq!(windowed, whole, "{}", question.name);
        let empty = rows(&fixture.sql, &question.sql_within(nothing)).await;
        // Aggregates over no rows still answer one row of NULLs/zeros for ungrouped queries;
        // every catalog query groups or lists, so nothing is left.
        assert_eq!(empty, Vec::<Value>::new(), "{}", question.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_window_keeps_the_rows_in_it() {
    let fixture = MonitoringFixture::new();
    // The second day of the fixture, UTC.
    let window = TimeWindow {
        since_ns: Some(base_ns() + 24 * HOUR_NS),
        until_ns: Some(base_ns() + 48 * HOUR_NS),
    };
    let denials = query::monitoring::question("denials_by_policy_per_day").unwrap();
    let whole = rows(&fixture.sql, denials.sql).await;
    let expected: Vec<Value> = whole
        .iter()
        .filter(|row| nanos(&row[0]) == base_ns() + 24 * HOUR_NS)
        .cloned()
        .collect();
    assert!(!expected.is_empty() && expected.len() < whole.len());
    assert_eq!(
        rows(&fixture.sql, &denials.sql_within(window)).await,
        expected
    );

    // Tool executions by source: the counts add up to the executions that started in the
    // window, counted here from their start times.
    let starts = rows(&fixture.sql, "SELECT start_time FROM tool_calls").await;
    let in_window = starts
        .iter()
        .map(|row| nanos(&row[0]))
        .filter(|start| *start >= window.since_ns.unwrap() && *start < window.until_ns.unwrap())
        .count();
    assert!(in_window > 0 && in_window < starts.len());
    let sources = query::monitoring::question("retries_by_source").unwrap();
    let counted: i64 = rows(&fixture.sql, &sources.sql_within(window))
        .await
        .iter()
        .map(|row| row[1].as_i64().unwrap())
        .sum();
    assert_eq!(counted, i64::try_from(in_window).unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn string_literals_read_back_as_the_same_text() {
    let fixture = MonitoringFixture::new();
    for text in [
        "plain",
        "it's",
        "''",
        r"back\slash\'",
        "new\nline\ttab",
        "ünïcødé ✓",
        "'; DROP TABLE spans; --",
        "",
    ] {
        let answer = rows(&fixture.sql, &format!("SELECT {}", string_literal(text))).await;
        assert_eq!(
            answer,
            vec![Value::from(vec![Value::from(text)])],
            "{text:?}"
        );
    }
}

/// Which `agent_runs` rows a search must keep.
type Keep<'a> = Box<dyn Fn(&Value) -> bool + 'a>;

/// The `agent_runs` rows, with the trace sets of tools and verdicts, for recomputing searches.
struct Runs {
    rows: Vec<Value>,
    traces_with_tool: BTreeSet<String>,
    traces_with_verdict: BTreeSet<String>,
}

#[tokio::test(flavor = "multi_thread")]
async fn run_search_keeps_exactly_the_matching_runs_newest_first() {
    let fixture = MonitoringFixture::new();
    let all = rows(
        &fixture.sql,
        "SELECT trace_id, span_id, agent_name, outcome, session_id, start_time, user_id, errors, \
         denials, escalations, retries, input_tokens, output_tokens FROM agent_runs",
    )
    .await;
    let tool = "save_report";
    let runs = Runs {
        rows: all,
        traces_with_tool: rows(
            &fixture.sql,
            &format!("SELECT trace_id FROM tool_calls WHERE tool_name = '{tool}'"),
        )
        .await
        .iter()
        .map(|row| row[0].as_str().unwrap().to_owned())
        .collect(),
        traces_with_verdict: rows(
            &fixture.sql,
            "SELECT trace_id FROM decisions WHERE verdict = 'deny'",
        )
        .await
        .iter()
        .map(|row| row[0].as_str().unwrap().to_owned())
        .collect(),
    };
    let agent = runs.rows[0][2].as_str().unwrap().to_owned();
    let session = runs
        .rows
        .iter()
        .find_map(|row| row[4].as_str())
        .unwrap()
        .to_owned();
    let user = runs
        .rows
        .iter()
        .find_map(|row| row[6].as_str())
        .unwrap()
        .to_owned();
    // A piece of a session id, as typed into a search box.
    let piece = session[session.len() - 4..].to_owned();
    let since = base_ns() + 12 * HOUR_NS;
    let cases: Vec<(RunFilter, Keep<'_>)> = vec![
        (RunFilter::default(), Box::new(|_| true)),
        (
            RunFilter {
                agent: Some(agent.clone()),
                ..RunFilter::default()
            },
            Box::new(|row| row[2] == agent.as_str()),
        ),
        (
            RunFilter {
                outcome: Some("error".to_owned()),
                ..RunFilter::default()
            },
            Box::new(|row| row[3] == "error"),
        ),
        (
            RunFilter {
                session_id: Some(session.clone()),
                ..RunFilter::default()
            },
            Box::new(|row| row[4] == session.as_str()),
        ),
        (
            RunFilter {
                tool: Some(tool.to_owned()),
                ..RunFilter::default()
            },
            Box::new(|row| runs.traces_with_tool.contains(row[0].as_str().unwrap())),
        ),
        (
            RunFilter {
                verdict: Some("deny".to_owned()),
                window: TimeWindow {
                    since_ns: Some(since),
                    until_ns: None,
                },
                ..RunFilter::default()
            },
            Box::new(|row| {
                runs.traces_with_verdict.contains(row[0].as_str().unwrap())
                    && nanos(&row[5]) >= since
            }),
        ),
        (
            RunFilter {
                user_id: Some(user.clone()),
                ..RunFilter::default()
            },
            Box::new(|row| row[6] == user.as_str()),
        ),
        (
            RunFilter {
                search: Some(piece.clone()),
                ..RunFilter::default()
            },
            Box::new(|row| {
                [&row[4], &row[6]]
                    .iter()
                    .any(|value| value.as_str().is_some_and(|text| text.contains(&piece)))
            }),
        ),
        (
            RunFilter {
                agent: Some("no such agent' OR 'x' = 'x".to_owned()),
                ..RunFilter::default()
            },
            Box::new(|_| false),
        ),
    ];
    for (filter, keep) in &cases {
        // Sessions: the matching runs grouped by session, summed in Rust.
        let mut sessions: BTreeMap<Option<String>, Vec<i64>> = BTreeMap::new();
        for row in runs.rows.iter().filter(|row| keep(row)) {
            let sums = sessions
                .entry(row[4].as_str().map(str::to_owned))
                .or_insert_with(|| vec![0; 7]);
            sums[0] += 1;
            for (sum, column) in sums[1..].iter_mut().zip(7..=12) {
                *sum += row[column].as_i64().unwrap_or(0);
            }
        }
        let found: BTreeMap<Option<String>, Vec<i64>> =
            rows(&fixture.sql, &find_sessions_sql(filter, 10_000))
                .await
                .iter()
                .map(|row| {
                    (
                        row[0].as_str().map(str::to_owned),
                        (5..=11)
                            .map(|column| row[column].as_i64().unwrap_or(0))
                            .collect(),
                    )
                })
                .collect();
        assert_eq!(found, sessions, "sessions of {filter:?}");
    }
    for (filter, keep) in cases {
        let mut expected: Vec<(i64, String, String)> = runs
            .rows
            .iter()
            .filter(|row| keep(row))
            .map(|row| {
                (
                    -nanos(&row[5]),
                    row[0].as_str().unwrap().to_owned(),
                    row[1].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        expected.sort();
        let found: Vec<(i64, String, String)> = rows(&fixture.sql, &find_runs_sql(&filter, 10_000))
            .await
            .iter()
            .map(|row| {
                (
                    -nanos(&row[0]),
                    row[1].as_str().unwrap().to_owned(),
                    row[2].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(found, expected, "{filter:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_capped_query_keeps_the_first_rows_and_says_it_stopped() {
    let fixture = MonitoringFixture::new();
    let total = rows(&fixture.sql, "SELECT count(*) FROM spans").await[0][0]
        .as_u64()
        .unwrap() as usize;
    assert!(total > 10);
    let ordered = "SELECT span_id, trace_id FROM spans ORDER BY trace_id, span_id, start_time";
    let all = rows(&fixture.sql, ordered).await;
    for cap in [0, 1, 7, total - 1] {
        let output = fixture
            .sql
            .execute_capped(ordered, Access::ALL, cap)
            .await
            .unwrap();
        assert!(output.truncated, "cap {cap}");
        let kept = query::format::to_json(&output)["rows"].take();
        assert_eq!(
            kept.as_array().unwrap().as_slice(),
            &all[..cap],
            "cap {cap}"
        );
    }
    for cap in [total, total + 1] {
        let output = fixture
            .sql
            .execute_capped(ordered, Access::ALL, cap)
            .await
            .unwrap();
        assert!(!output.truncated, "cap {cap}");
        assert_eq!(output.num_rows(), total);
    }
    // Content stays out of reach whatever the cap.
    let refused = fixture
        .sql
        .execute_capped("SELECT * FROM content", Access::NO_CONTENT, 5)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), query::ErrorKind::Caller);
}
