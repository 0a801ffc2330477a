//! Filter, projection and limit pushdown: visible in EXPLAIN, effective in what the engine
//! reads, and never changing results.

use crate::fixture::{Fixture, TRACES, trace_hex};

#[tokio::test(flavor = "multi_thread")]
async fn explain_shows_pushed_filters_in_the_scan_and_no_filter_above() {
    let fixture = Fixture::new();
    let hex = trace_hex(2);
    let plan = fixture
        .plan(&format!(
            "EXPLAIN SELECT span_name FROM spans WHERE trace_id = '{hex}' \
             AND start_time >= TIMESTAMP '2024-05-01T00:00:00Z' AND service_name = 'tools'"
        ))
        .await;
    assert!(
        plan.contains(&format!(
            "SpansScanExec: trace_ids=[{hex}], start_time=[2024-05-01T00:00:00.000000000Z, +inf), \
             services=[tools], projection=[span_name]"
        )),
        "{plan}"
    );
    assert!(!plan.contains("FilterExec"), "{plan}");

    // Filters that cannot push down stay in a FilterExec above the scan.
    let plan = fixture
        .plan("EXPLAIN SELECT span_name FROM spans WHERE span_name = 'chat' AND service_name IN ('llm', 'tools')")
        .await;
    assert!(plan.contains("FilterExec: span_name@"), "{plan}");
    assert!(plan.contains("services=[llm, tools]"), "{plan}");
}

#[tokio::test(flavor = "multi_thread")]
async fn time_literals_of_every_form_push_down() {
    let fixture = Fixture::new();
    for (predicate, shown) in [
        (
            "start_time >= '2024-05-01T02:00:00Z'",
            "start_time=[2024-05-01T02:00:00.000000000Z, +inf)",
        ),
        (
            "start_time < TIMESTAMP '2024-05-01 02:00:00'",
            "start_time=(-inf, 2024-05-01T02:00:00.000000000Z)",
        ),
        (
            "start_time > to_timestamp_millis(1714528800000)",
            "start_time=(2024-05-01T02:00:00.000000000Z, +inf)",
        ),
        (
            "start_time BETWEEN to_timestamp_seconds(1714525200) AND '2024-05-01T03:00:00Z'",
            "start_time=[2024-05-01T01:00:00.000000000Z, 2024-05-01T03:00:00.000000000Z]",
        ),
        (
            "'2024-05-01T02:00:00Z' <= start_time AND start_time <= '2024-05-01T02:00:00Z'",
            "start_time=[2024-05-01T02:00:00.000000000Z, 2024-05-01T02:00:00.000000000Z]",
        ),
    ] {
        let plan = fixture
            .plan(&format!(
                "EXPLAIN SELECT span_id FROM spans WHERE {predicate}"
            ))
            .await;
        assert!(plan.contains(shown), "{predicate}:\n{plan}");
        assert!(!plan.contains("FilterExec"), "{predicate}:\n{plan}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_analyze_shows_engine_reads_and_segment_pruning() {
    let fixture = Fixture::new();
    // Trace 1 is in the first sealed segment only.
    let plan = fixture
        .plan(&format!(
            "EXPLAIN ANALYZE SELECT span_name FROM spans WHERE trace_id = '{}'",
            trace_hex(1)
        ))
        .await;
    assert!(plan.contains("segments_total=2"), "{plan}");
    assert!(plan.contains("segments_selected=1"), "{plan}");
    assert!(plan.contains("bytes_read="), "{plan}");
    assert!(plan.contains("rows_scanned="), "{plan}");

    let output = fixture
        .query(&format!(
            "SELECT span_name FROM spans WHERE trace_id = '{}'",
            trace_hex(1)
        ))
        .await;
    let metrics = output.scan_metrics;
    assert_eq!((metrics.segments_total, metrics.segments_selected), (2, 1));
    assert!(metrics.bytes_read > 0);
    assert_eq!(metrics.rows_returned, 4);

    // A trace that lives only in the memtable reads no segment at all.
    let output = fixture
        .query(&format!(
            "SELECT span_name FROM spans WHERE trace_id = '{}'",
            trace_hex(5)
        ))
        .await;
    assert_eq!(output.scan_metrics.segments_selected, 0);
    assert_eq!(output.scan_metrics.bytes_read, 0);
    assert_eq!(output.num_rows(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn pushed_and_unpushed_filters_return_the_same_rows() {
    let fixture = Fixture::new();
    let a = trace_hex(1);
    let b = trace_hex(4);
    let cases = [
        (
            format!("trace_id = '{a}'"),
            format!("trace_id || '' = '{a}'"),
        ),
        (
            format!("trace_id IN ('{a}', '{b}', 'not-a-trace')"),
            format!("trace_id || '' IN ('{a}', '{b}', 'not-a-trace')"),
        ),
        (
            format!("(trace_id = '{a}' OR trace_id = '{b}') AND service_name = 'tools'"),
            format!(
                "(trace_id || '' = '{a}' OR trace_id || '' = '{b}') AND service_name || '' = 'tools'"
            ),
        ),
        (
            "service_name IN ('llm', 'planner')".to_owned(),
            "service_name || '' IN ('llm', 'planner')".to_owned(),
        ),
        (
            "start_time >= '2024-05-01T01:00:00Z' AND start_time < '2024-05-01T04:00:00.000001Z'"
                .to_owned(),
            "start_time + INTERVAL '0 seconds' >= '2024-05-01T01:00:00Z' \
             AND start_time + INTERVAL '0 seconds' < '2024-05-01T04:00:00.000001Z'"
                .to_owned(),
        ),
        (
            "start_time = '2024-05-01T03:00:00.000001001Z'".to_owned(),
            "start_time + INTERVAL '0 seconds' = '2024-05-01T03:00:00.000001001Z'".to_owned(),
        ),
        (
            format!("trace_id = '{}'", a.to_uppercase()),
            format!("trace_id || '' = '{}'", a.to_uppercase()),
        ),
        (
            "start_time > '2024-05-01T05:00:00Z' AND start_time < '2024-05-01T01:00:00Z'"
                .to_owned(),
            "start_time + INTERVAL '0 seconds' > '2024-05-01T05:00:00Z' \
             AND start_time + INTERVAL '0 seconds' < '2024-05-01T01:00:00Z'"
                .to_owned(),
        ),
    ];
    for (pushed, kept) in cases {
        let select = "SELECT trace_id, span_id, service_name, start_time FROM spans WHERE";
        let order = "ORDER BY trace_id, span_id";
        let pushed_plan = fixture
            .plan(&format!("EXPLAIN {select} {pushed} {order}"))
            .await;
        assert!(
            !pushed_plan.contains("FilterExec"),
            "{pushed}:\n{pushed_plan}"
        );
        let kept_plan = fixture
            .plan(&format!("EXPLAIN {select} {kept} {order}"))
            .await;
        assert!(kept_plan.contains("FilterExec"), "{kept}:\n{kept_plan}");
        let with_pushdown = fixture.rows(&format!("{select} {pushed} {order}")).await;
        let without = fixture.rows(&format!("{select} {kept} {order}")).await;
        assert_eq!(with_pushdown, without, "{pushed} vs {kept}");
    }
    // Sanity: the cases above are not all empty.
    let some = fixture
        .rows(&format!("SELECT * FROM spans WHERE trace_id = '{a}'"))
        .await;
    assert_eq!(some.len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn uppercase_trace_ids_match_nothing_like_sql_says() {
    let fixture = Fixture::new();
    let upper = trace_hex(1).to_uppercase();
    let output = fixture
        .query(&format!("SELECT * FROM spans WHERE trace_id = '{upper}'"))
        .await;
    assert_eq!(output.num_rows(), 0);
    // Nothing was read: the empty id set is known before the engine is asked.
    assert_eq!(output.scan_metrics.segments_total, 0);
    let rows = fixture
        .rows(&format!(
            "SELECT count(*) FROM spans WHERE upper(trace_id) = '{upper}'"
        ))
        .await;
    assert_eq!(rows, vec![serde_json::json!([4])]);
}

#[tokio::test(flavor = "multi_thread")]
async fn nested_tables_push_filters_into_the_span_scan() {
    let fixture = Fixture::new();
    let hex = trace_hex(2);
    let plan = fixture
        .plan(&format!(
            "EXPLAIN SELECT name FROM span_events WHERE trace_id = '{hex}' \
             AND service_name = 'llm' AND span_start_time < '2024-05-02T00:00:00Z'"
        ))
        .await;
    assert!(plan.contains("SpanEventsExec: columns=[name]"), "{plan}");
    assert!(
        plan.contains(&format!(
            "SpansScanExec: trace_ids=[{hex}], start_time=(-inf, 2024-05-02T00:00:00.000000000Z), \
             services=[llm], projection=[events]"
        )),
        "{plan}"
    );
    assert!(!plan.contains("FilterExec"), "{plan}");
    for trace in 0..TRACES {
        let hex = trace_hex(trace);
        let output = fixture
            .query(&format!(
                "SELECT linked_span_id FROM span_links WHERE trace_id = '{hex}'"
            ))
            .await;
        let expected = if trace == 0 {
            0
        } else {
            usize::from(trace % 2 + 1)
        };
        assert_eq!(output.num_rows(), expected, "trace {trace}");
        assert!(output.scan_metrics.segments_selected <= 1);
    }
}
