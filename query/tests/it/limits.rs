//! Per-query bounds: memory, time, result rows and bytes, SQL size and depth.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{Engine, SpanBatchBuilder, SpanId, SpanRecord, TraceId};
use query::{Error, ErrorKind, Options, SqlEngine};

use crate::fixture::Fixture;

#[tokio::test(flavor = "multi_thread")]
async fn a_query_over_the_memory_budget_fails_with_resources_exhausted() {
    let fixture = Fixture::with_options(Options::default().with_memory_limit(1 << 20));
    // A million distinct groups need far more than 1 MiB and nothing may spill to disk.
    let sql = "SELECT value % 1000003 AS k, count(*) FROM generate_series(1, 3000000) GROUP BY k";
    match fixture.sql.execute(sql).await {
        Err(error @ Error::ResourcesExhausted(_)) => assert_eq!(error.kind(), ErrorKind::Caller),
        other => panic!(
            "expected resources exhausted, got {:?}",
            other.map(|o| o.num_rows())
        ),
    }
    // A sort of span rows: the same budget refuses it as well.
    let sql = "SELECT a.*, b.span_id AS other FROM spans a CROSS JOIN spans b \
               CROSS JOIN generate_series(1, 200) ORDER BY a.span_name, other";
    assert!(matches!(
        fixture.sql.execute(sql).await,
        Err(Error::ResourcesExhausted(_))
    ));
    // Small queries still run within the budget.
    assert_eq!(
        fixture
            .query("SELECT * FROM spans ORDER BY span_name")
            .await
            .num_rows(),
        21
    );
}

// Current-thread runtime on purpose: the timer must fire even with one worker thread busy
// running the query, which relies on the plan's streams yielding (tokio's task budget).
#[tokio::test]
async fn a_query_over_the_time_budget_is_cancelled() {
    let timeout = Duration::from_millis(200);
    let fixture = Fixture::with_options(Options::default().with_timeout(timeout));
    let started = Instant::now();
    // 21 * 21 * 10^8 rows: hours of work, were it not cancelled.
    let sql =
        "SELECT count(*) FROM spans a CROSS JOIN spans b CROSS JOIN generate_series(1, 100000000)";
    match fixture.sql.execute(sql).await {
        Err(error @ Error::Timeout(_)) => {
            assert_eq!(error.kind(), ErrorKind::Timeout);
            assert!(error.to_string().contains("200ms"), "{error}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    // The engine is still usable afterwards.
    assert_eq!(
        fixture.query("SELECT count(*) FROM spans").await.num_rows(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn results_over_max_result_rows_are_refused() {
    let fixture = Fixture::with_options(Options::default().with_max_result_rows(5));
    match fixture.sql.execute("SELECT span_id FROM spans").await {
        Err(error @ Error::TooManyRows { limit: 5 }) => {
            assert_eq!(error.kind(), ErrorKind::Caller);
            assert!(error.to_string().contains("LIMIT"), "{error}");
        }
        other => panic!("expected too many rows, got {other:?}"),
    }
    assert_eq!(
        fixture
            .query("SELECT span_id FROM spans LIMIT 5")
            .await
            .num_rows(),
        5
    );
    assert_eq!(
        fixture.query("SELECT count(*) FROM spans").await.num_rows(),
        1
    );
}

/// `SELECT <term> <op> <term> ... FROM spans LIMIT 1` with `operators` operators.
fn chain(term: &str, operator: &str, operators: usize) -> String {
    let mut sql = format!("SELECT {term}");
    for _ in 0..operators {
        sql.push_str(operator);
        sql.push_str(term);
    }
    sql.push_str(" AS v FROM spans LIMIT 1");
    sql
}

#[tokio::test(flavor = "multi_thread")]
async fn no_sql_text_overflows_the_stack() {
    let fixture = Fixture::new();
    // Chains as long as allowed plan, run and answer right, on every operator kind that
    // builds one tree level per term.
    let limit = query::MAX_OPERATORS;
    let cases = [
        ("1", " + ", serde_json::json!(limit + 1)),
        (
            "starts_with(span_name, 'zzz')",
            " OR ",
            serde_json::json!(false),
        ),
        (
            "starts_with(span_name, '')",
            " AND ",
            serde_json::json!(true),
        ),
        ("'a'", " || ", serde_json::json!("a".repeat(limit + 1))),
    ];
    for (term, operator, expected) in cases {
        let rows = fixture.rows(&chain(term, operator, limit)).await;
        assert_eq!(rows, vec![serde_json::json!([expected])], "{operator}");
    }
    // 100,000 terms: refused with a message, the server (this process) still standing.
    for (term, operator) in [
        ("1", " + "),
        ("true", " OR "),
        ("true", " AND "),
        ("'a'", " || "),
    ] {
        match fixture.sql.execute(&chain(term, operator, 100_000)).await {
            Err(error @ Error::TooComplex(_)) => {
                assert_eq!(error.kind(), ErrorKind::Caller);
                assert!(error.to_string().contains("operators"), "{error}");
            }
            other => panic!("{operator}: expected too complex, got {other:?}"),
        }
    }
    // Nesting is bounded by the parser's recursion limit, also at 100,000 levels.
    let nested = [
        format!("SELECT {}1{}", "(".repeat(100_000), ")".repeat(100_000)),
        format!("SELECT {}1{}", "abs(".repeat(100_000), ")".repeat(100_000)),
        format!("SELECT {}1", "NOT ".repeat(100_000)),
        format!("SELECT {}1", "- ".repeat(100_000)),
        format!(
            "SELECT * FROM {}spans{}",
            "(SELECT * FROM ".repeat(100_000),
            ")".repeat(100_000)
        ),
    ];
    for sql in &nested {
        let error = fixture.sql.execute(sql).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Caller, "{error}");
    }
    // Set operations and joins chain too.
    let unions = vec!["SELECT 1"; 100_000].join(" UNION ALL ");
    let joins = format!(
        "SELECT count(*) FROM spans{}",
        " JOIN spans USING (span_id)".repeat(100_000)
    );
    for sql in [unions, joins] {
        assert!(matches!(
            fixture.sql.execute(&sql).await,
            Err(Error::TooComplex(_))
        ));
    }
    let unions = vec!["SELECT 1 AS one"; 500].join(" UNION ALL ");
    let total = fixture
        .rows(&format!("SELECT sum(one) FROM ({unions})"))
        .await;
    assert_eq!(total, vec![serde_json::json!([500])]);
    assert_eq!(
        fixture.query("SELECT count(*) FROM spans").await.num_rows(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timed_out_query_frees_its_slot() {
    let options = Options::default()
        .with_timeout(Duration::from_millis(300))
        .with_max_concurrent(1);
    let fixture = Fixture::with_options(options);
    let runaway =
        "SELECT count(*) FROM spans a CROSS JOIN spans b CROSS JOIN generate_series(1, 100000000)";
    for _ in 0..3 {
        assert!(matches!(
            fixture.sql.execute(runaway).await,
            Err(Error::Timeout(_))
        ));
        // With one slot, this only runs if the aborted query let go of it.
        assert_eq!(
            fixture.query("SELECT count(*) FROM spans").await.num_rows(),
            1
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn results_over_max_result_bytes_are_refused() {
    let fixture = Fixture::with_options(Options::default().with_max_result_bytes(64 << 10));
    match fixture
        .sql
        .execute("SELECT repeat('x', 1000) FROM generate_series(1, 1000)")
        .await
    {
        Err(error @ Error::TooLarge { limit }) => {
            assert_eq!(limit, 64 << 10);
            assert_eq!(error.kind(), ErrorKind::Caller);
        }
        other => panic!("expected too large, got {:?}", other.map(|o| o.num_rows())),
    }
    assert_eq!(
        fixture
            .query("SELECT repeat('x', 10) FROM generate_series(1, 100)")
            .await
            .num_rows(),
        100
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn functions_that_generate_values_stay_within_the_memory_budget() {
    let fixture = Fixture::with_options(Options::default().with_memory_limit(64 << 20));
    let runaways = [
        "SELECT repeat('x', 10000000000)",
        "SELECT length(repeat('x', value)) FROM generate_series(100000, 110000)",
        "SELECT lpad('x', 2000000000, 'ab')",
        "SELECT rpad(span_name, 100000000) FROM spans",
        "SELECT cardinality(range(1000000000000))",
        "SELECT cardinality(generate_series(1, 100000000, 1))",
        "SELECT cardinality(range(TIMESTAMP '1970-01-01', TIMESTAMP '2200-01-01', INTERVAL '1 second'))",
        "SELECT cardinality(array_repeat('abc', 100000000))",
        "SELECT length(replace(repeat('x', 100000), 'x', repeat('y', 10000)))",
        "SELECT length(regexp_replace(repeat('x', 100000), '', repeat('y', 1000), 'g'))",
    ];
    for sql in runaways {
        match fixture.sql.execute(sql).await {
            Err(error @ Error::ResourcesExhausted(_)) => {
                assert_eq!(error.kind(), ErrorKind::Caller, "{sql}");
            }
            other => panic!(
                "{sql}: expected resources exhausted, got {:?}",
                other.map(|o| o.num_rows())
            ),
        }
    }
    // The same functions at sane sizes answer as before.
    let rows = fixture
        .rows(
            "SELECT repeat('ab', 3), lpad('x', 3, '0'), rpad('x', 3, '-'), \
             cardinality(range(1, 4)), cardinality(generate_series(1, 4)), \
             replace('a-b-c', '-', '+'), regexp_replace('a1b22', '[0-9]+', '#', 'g'), \
             cardinality(array_repeat(7, 5)), \
             cardinality(range(DATE '2026-01-01', DATE '2026-01-08', INTERVAL '1 day')), \
             length(repeat('x', 1000000))",
        )
        .await;
    assert_eq!(
        rows,
        vec![serde_json::json!([
            "ababab", "00x", "x--", 3, 4, "a+b+c", "a#b#", 5, 7, 1_000_000
        ])]
    );
    assert_eq!(
        fixture
            .query("SELECT repeat(span_name, 2) FROM spans")
            .await
            .num_rows(),
        21
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn what_generated_values_are_joined_into_stays_within_the_budget() {
    let fixture = Fixture::with_options(Options::default().with_memory_limit(64 << 20));
    // Each repeat alone fits (16 MB of 64 MiB); eight of them joined do not.
    let terms = ["repeat('x', 16000000)"; 8].join(", ");
    for sql in [
        format!("SELECT octet_length(concat({terms}))"),
        format!("SELECT octet_length(concat_ws('-', {terms}))"),
    ] {
        match fixture.sql.execute(&sql).await {
            Err(Error::ResourcesExhausted(_)) => {}
            other => panic!(
                "expected resources exhausted, got {:?}",
                other.map(|o| o.num_rows())
            ),
        }
    }
    // Within the budget, the same shapes answer right.
    let rows = fixture
        .rows("SELECT octet_length(concat(repeat('ab', 1000), repeat('c', 10), 'd'))")
        .await;
    assert_eq!(rows, vec![serde_json::json!([2011])]);
    let names = fixture
        .rows("SELECT count(*) FROM spans WHERE concat(span_name, '/', span_id) LIKE '%/%'")
        .await;
    assert_eq!(names, vec![serde_json::json!([21])]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_concatenation_operator_stays_within_the_budget_and_keeps_its_meaning() {
    let fixture = Fixture::with_options(Options::default().with_memory_limit(64 << 20));
    // One 16 MB value referenced many times: each `||` doubles nothing by itself, but the
    // chain reaches 16 MB x 40.
    let chain = vec!["s"; 40].join(" || ");
    for sql in [
        format!("SELECT octet_length({chain}) FROM (SELECT repeat('x', 16000000) AS s)"),
        format!(
            "SELECT octet_length({chain}) FROM (SELECT repeat(span_name, 1000000) AS s FROM spans)"
        ),
        // Found by an outside tester: many rows of a generated value (an offset overflow panic).
        "SELECT length(s||s||s||s||s||s||s||s) FROM (SELECT repeat('ab', 1000000) AS s FROM unnest(range(2000)))".to_owned(),
        format!("WITH a AS (SELECT repeat('x', 8000000) AS s) SELECT length({}) FROM a", ["s"; 16].join("||")),
    ] {
        match fixture.sql.execute(&sql).await {
            Err(error @ Error::ResourcesExhausted(_)) => {
                assert_eq!(error.kind(), ErrorKind::Caller, "{sql}");
            }
            other => panic!(
                "{sql}: expected resources exhausted, got {:?}",
                other.map(|o| o.num_rows())
            ),
        }
    }
    // Within the budget: same values, NULLs and column names as the operator's.
    let answer = fixture
        .sql
        .execute(
            "SELECT 'a' || 'b', 'a' || NULL, NULL || 'b', octet_length(repeat('x', 1000) || 'y')",
        )
        .await
        .unwrap();
    let names: Vec<String> = answer
        .schema
        .fields()
        .iter()
        .map(|field| field.name().clone())
        .collect();
    assert_eq!(names[0], "Utf8(\"a\") || Utf8(\"b\")");
    let rows = fixture
        .rows("SELECT 'a' || 'b', 'a' || NULL, NULL || 'b', octet_length(repeat('x', 1000) || 'y')")
        .await;
    assert_eq!(rows, vec![serde_json::json!(["ab", null, null, 1001])]);
    // Over a table, against the same text built in Rust from the rows.
    let pairs = fixture
        .rows("SELECT span_name, span_id, span_name || '/' || span_id FROM spans ORDER BY span_id")
        .await;
    assert_eq!(pairs.len(), 21);
    for row in &pairs {
        let expected = format!("{}/{}", row[0].as_str().unwrap(), row[1].as_str().unwrap());
        assert_eq!(row[2], serde_json::json!(expected));
    }
    // Arrays keep their own `||`.
    let arrays = fixture
        .rows("SELECT make_array(1, 2) || make_array(3)")
        .await;
    assert_eq!(arrays, vec![serde_json::json!([[1, 2, 3]])]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_regular_expression_is_the_callers_error() {
    let fixture = Fixture::new();
    for sql in [
        "SELECT regexp_like('a', '[')",
        "SELECT 'a' ~ '('",
        "SELECT regexp_replace('a', '(', 'b')",
        "SELECT count(*) FROM spans WHERE span_name ~ '('",
    ] {
        let error = fixture.sql.execute(sql).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Caller, "{sql}: {error:?}");
    }
}

/// Traces of a root and two children; in every seventh trace the second child names a parent
/// that was never sent. Returns the store and the orphans' (trace, span) ids in hex.
fn store_with_orphans(
    dir: &std::path::Path,
    traces: u32,
) -> (Arc<Engine>, BTreeSet<(String, String)>) {
    let engine = Arc::new(
        Engine::open(
            dir,
            engine::Options::default().with_background_sealing(false),
        )
        .unwrap(),
    );
    let mut orphans = BTreeSet::new();
    let mut builder = SpanBatchBuilder::new();
    for trace in 0..traces {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&trace.to_be_bytes());
        id[15] = 1;
        let trace_id = TraceId(id);
        let span = |n: u8| {
            let mut span = [0u8; 8];
            span[..4].copy_from_slice(&trace.to_be_bytes());
            span[7] = n;
            SpanId(span)
        };
        let start = 1_714_521_600_000_000_000 + i64::from(trace) * 1_000_000;
        let record = |span_id: SpanId, parent: Option<SpanId>, name: &'static str| SpanRecord {
            trace_id,
            span_id,
            parent_span_id: parent,
            name,
            kind: 1,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 1_000,
            service_name: Some("agent"),
            ..SpanRecord::default()
        };
        builder.append(&record(span(1), None, "invoke_agent"));
        builder.append(&record(span(2), Some(span(1)), "chat"));
        let missing = trace % 7 == 3;
        let parent = if missing { span(9) } else { span(1) };
        builder.append(&record(span(3), Some(parent), "execute_tool"));
        if missing {
            orphans.insert((trace_id.to_string(), span(3).to_string()));
        }
        if trace % 50_000 == 49_999 {
            engine
                .write(std::mem::replace(&mut builder, SpanBatchBuilder::new()).finish())
                .unwrap();
            engine.seal().unwrap();
        }
    }
    engine.write(builder.finish()).unwrap();
    (engine, orphans)
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_past_the_memory_budget_spill_and_answer_right() {
    const TRACES: u32 = 250_000;
    let dir = tempfile::tempdir().unwrap();
    let (engine, orphans) = store_with_orphans(dir.path(), TRACES);
    let budget = 64 << 20;
    let in_memory = SqlEngine::new(
        Arc::clone(&engine),
        Options::default().with_memory_limit(budget),
    )
    .unwrap();
    // docs query 7a joins on ids alone: its set of decoded ids fits the budget.
    let orphan_spans = query::monitoring::question("orphan_spans").unwrap().sql;
    let orphans: Vec<(String, String)> = orphans.into_iter().collect();
    assert_eq!(ids(&in_memory, orphan_spans).await, orphans);
    // With one more condition, on names, the join keeps whole rows of strings and does not
    // fit without a spill directory. (No parent has its child's name: the same orphans.)
    let orphan_spans = "SELECT DISTINCT s.trace_id, s.span_id FROM spans s \
        WHERE s.parent_span_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM spans p \
        WHERE p.trace_id = s.trace_id AND p.span_id = s.parent_span_id \
        AND p.span_name <> s.span_name) ORDER BY s.trace_id, s.span_id";
    assert_exhausted(&in_memory, orphan_spans).await;
    // Spill files of an earlier run are removed at start; anything else there stays.
    let spill = tempfile::tempdir().unwrap();
    let stale = spill.path().join("datafusion-stale");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("sort.arrow"), b"left by a crash").unwrap();
    std::fs::write(spill.path().join("notes.txt"), b"a user's file").unwrap();
    let spilling = SqlEngine::new(
        Arc::clone(&engine),
        Options::default()
            .with_memory_limit(budget)
            .with_spill(spill.path(), 1 << 30),
    )
    .unwrap();
    assert!(!stale.exists());
    assert!(spill.path().join("notes.txt").exists());
    // The same budget with spilling: the query runs again with a sort-merge join, which
    // spills, and answers with exactly the orphans the generator made, in order.
    assert_eq!(ids(&spilling, orphan_spans).await, orphans);
    assert_eq!(orphans.len(), (TRACES as usize + 3) / 7);
    // Other queries do not spill: an aggregation of more groups than fit still fails.
    let groups =
        "SELECT value % 1000003 AS k, count(*) FROM generate_series(1, 3000000) GROUP BY k";
    assert!(matches!(
        spilling.execute(groups).await,
        Err(Error::ResourcesExhausted(_))
    ));
    // Nothing stays in the spill directory once the queries are done.
    let left: Vec<_> = walk(spill.path())
        .into_iter()
        .filter(|path| path.is_file() && !path.ends_with("notes.txt"))
        .collect();
    assert!(left.is_empty(), "spill files left: {left:?}");
    // With no disk to spill to, spilling fails as a memory error, not as a crash.
    let tiny_disk = SqlEngine::new(
        Arc::clone(&engine),
        Options::default()
            .with_memory_limit(budget)
            .with_spill(spill.path(), 1024),
    )
    .unwrap();
    assert_exhausted(&tiny_disk, orphan_spans).await;
}

/// The (trace, span) ids `sql` answers on `engine`, in its order.
async fn ids(engine: &SqlEngine, sql: &str) -> Vec<(String, String)> {
    let output = engine.execute(sql).await.unwrap();
    let json = query::format::to_json(&output);
    let rows: Vec<(String, String)> = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row[0].as_str().unwrap().to_owned(),
                row[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    rows
}

/// `sql` fails on `engine` with `ResourcesExhausted`, the caller's error.
async fn assert_exhausted(engine: &SqlEngine, sql: &str) {
    match engine.execute(sql).await {
        Err(error @ Error::ResourcesExhausted(_)) => assert_eq!(error.kind(), ErrorKind::Caller),
        other => panic!(
            "{sql}: expected resources exhausted, got {:?}",
            other.map(|o| o.num_rows())
        ),
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            paths.extend(walk(&path));
        }
        paths.push(path);
    }
    paths
}

#[tokio::test(flavor = "multi_thread")]
async fn anti_and_semi_joins_of_spans_build_on_the_narrower_side() {
    let fixture = Fixture::new();
    let orphan_spans = query::monitoring::question("orphan_spans").unwrap().sql;
    // The outer query reads 5 columns, the subquery 2: the hash table holds the 2.
    let plan = fixture.plan(&format!("EXPLAIN {orphan_spans}")).await;
    assert!(plan.contains("join_type=RightAnti"), "{plan}");
    assert!(!plan.contains("join_type=LeftAnti"), "{plan}");
    // A join on ids only: a set of decoded ids built from both partitions of the narrower
    // side, and neither side repartitioned for the join (the one repartition is the
    // DISTINCT's).
    assert!(
        plan.contains("IdSetJoinExec: join_type=RightAnti"),
        "{plan}"
    );
    assert!(!plan.contains("HashJoinExec"), "{plan}");
    assert_eq!(plan.matches("RepartitionExec").count(), 1, "{plan}");
    // Same answers: no span of the fixture lacks its parent; 15 of its 21 spans have one
    // (6 traces, each a root and 2 or 3 children).
    assert!(fixture.rows(orphan_spans).await.is_empty());
    let exists = "EXISTS (SELECT 1 FROM spans p \
                  WHERE p.trace_id = s.trace_id AND p.span_id = s.parent_span_id)";
    let with_parent =
        format!("SELECT s.trace_id, s.span_id, s.span_name FROM spans s WHERE {exists}");
    let plan = fixture.plan(&format!("EXPLAIN {with_parent}")).await;
    assert!(plan.contains("join_type=RightSemi"), "{plan}");
    assert_eq!(fixture.rows(&with_parent).await.len(), 15);
    // As wide as the subquery (2 columns each): DataFusion's choice stands.
    let count = format!("SELECT count(*) FROM spans s WHERE {exists}");
    let plan = fixture.plan(&format!("EXPLAIN {count}")).await;
    assert!(plan.contains("join_type=LeftSemi"), "{plan}");
    assert_eq!(fixture.rows(&count).await, vec![serde_json::json!([15])]);
    let without_parent = "SELECT count(*) FROM spans s WHERE NOT EXISTS \
                          (SELECT 1 FROM spans p WHERE p.trace_id = s.trace_id AND p.span_id = s.parent_span_id)";
    assert_eq!(
        fixture.rows(without_parent).await,
        vec![serde_json::json!([6])]
    );
    // Narrowed to one trace, both sides are (the trace id passes through the join keys): the
    // id set holds that trace's spans.
    let one_trace = format!(
        "SELECT s.trace_id, s.span_id, s.span_name FROM spans s \
         WHERE s.trace_id = '{}' AND NOT {exists}",
        crate::fixture::trace_hex(1)
    );
    let plan = fixture.plan(&format!("EXPLAIN {one_trace}")).await;
    assert!(plan.contains("IdSetJoinExec: join_type=LeftAnti"), "{plan}");
    assert_eq!(plan.matches("trace_ids=[").count(), 2, "{plan}");
    assert_eq!(fixture.rows(&one_trace).await.len(), 1);
    // Narrowed to one service, the wider side may hold a few rows against the whole store: it
    // stays the build side, of DataFusion's hash join.
    let tools = format!(
        "SELECT s.trace_id, s.span_id, s.span_name FROM spans s \
         WHERE s.service_name = 'tools' AND {exists}"
    );
    let plan = fixture.plan(&format!("EXPLAIN {tools}")).await;
    assert!(plan.contains("join_type=LeftSemi"), "{plan}");
    assert!(plan.contains("HashJoinExec"), "{plan}");
    assert!(!plan.contains("IdSetJoinExec"), "{plan}");
    assert_eq!(fixture.rows(&tools).await.len(), 9);
    // `NOT IN` is a null-aware anti-join and keeps its sides: a NULL in the list (the roots'
    // parent) means no row qualifies; without it, the 15 spans that are nobody's parent.
    let nobodys_parent = "SELECT s.trace_id, s.span_id, s.span_name FROM spans s \
                          WHERE s.span_id NOT IN (SELECT parent_span_id FROM spans)";
    assert!(fixture.rows(nobodys_parent).await.is_empty());
    let nobodys_parent = "SELECT s.trace_id, s.span_id, s.span_name FROM spans s \
                          WHERE s.span_id NOT IN \
                          (SELECT parent_span_id FROM spans WHERE parent_span_id IS NOT NULL)";
    assert_eq!(fixture.rows(nobodys_parent).await.len(), 15);
}

#[tokio::test(flavor = "multi_thread")]
async fn content_text_past_the_memory_budget_is_refused_and_counts_read_no_text() {
    let fixture = Fixture::with_options(Options::default().with_memory_limit(1 << 20));
    // One trace, four spans, each with its own 512 KiB prompt: 2 MiB of text in all.
    let trace = TraceId([0x77; 16]);
    let mut builder = SpanBatchBuilder::new();
    let mut content = engine::ContentBatch::default();
    for span in 1..=4u8 {
        builder.append(&SpanRecord {
            trace_id: trace,
            span_id: SpanId([span; 8]),
            name: "chat",
            kind: 3,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            ..SpanRecord::default()
        });
        let hash = [span; 32];
        content
            .blobs
            .push((hash, format!("\"{}\"", "x".repeat(512 << 10))));
        content.refs.push(engine::ContentRef {
            trace_id: trace,
            span_id: SpanId([span; 8]),
            key: "gen_ai.input.messages".into(),
            digest: [span; 32],
            form: 0,
            pieces: Some(vec![engine::ContentPiece::Blob(hash)]),
            tier: None,
        });
    }
    fixture
        .engine
        .write_batch(engine::WriteBatch {
            spans: builder.finish(),
            content,
        })
        .unwrap();
    // Every value: past the budget, a clear caller error instead of the store in memory.
    match fixture.sql.execute("SELECT value FROM content").await {
        Err(Error::Engine(inner)) => {
            assert_eq!(inner.kind(), engine::ErrorKind::Caller, "{inner}");
            assert!(
                inner.to_string().contains("exceeds 1048576 bytes"),
                "{inner}"
            );
        }
        Err(other) => panic!("expected the engine's bound, got {other:?}"),
        Ok(output) => panic!("expected an error, got {} rows", output.num_rows()),
    }
    // Counts and statuses read no text; one value fits.
    let counted = fixture
        .query("SELECT status, count(*) AS n FROM content GROUP BY status")
        .await;
    assert_eq!(counted.num_rows(), 1);
    {
        use arrow::array::AsArray;
        let batch = &counted.batches[0];
        assert_eq!(batch.column(0).as_string::<i32>().value(0), "present");
        let n = batch
            .column(1)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0);
        assert_eq!(n, 4);
    }
    let one = fixture
        .query("SELECT length(value) FROM content LIMIT 1")
        .await;
    assert_eq!(one.num_rows(), 1);
}
