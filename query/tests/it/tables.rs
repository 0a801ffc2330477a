//! The three tables: row counts, grouping, attribute access, events and links.

use serde_json::{Value, json};

use crate::fixture::{Fixture, TRACES, root_span, trace_hex};

#[test]
fn sql_engine_and_its_queries_can_move_across_threads() {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    fn assert_send<T: Send>(_: &T) {}
    let fixture = Fixture::new();
    assert_send_sync(&fixture.sql);
    // The api crate runs `execute` inside multi-threaded handlers.
    let query = fixture.sql.execute("SELECT 1");
    assert_send(&query);
}

// Current-thread runtime: the blocking scan threads must not need a second worker.
#[tokio::test]
async fn count_star_covers_segments_and_memtable() {
    let fixture = Fixture::new();
    assert_eq!(
        fixture.rows("SELECT count(*) FROM spans").await,
        vec![json!([21])]
    );
    let output = fixture.query("SELECT count(*) FROM spans").await;
    assert_eq!(output.scan_metrics.segments_total, 2);
    assert_eq!(output.scan_metrics.segments_selected, 2);
    assert_eq!(output.scan_metrics.rows_returned, 21);
}

#[tokio::test(flavor = "multi_thread")]
async fn group_by_service_counts_each_service() {
    let fixture = Fixture::new();
    let rows = fixture
        .rows("SELECT service_name, count(*) AS spans FROM spans GROUP BY service_name ORDER BY service_name")
        .await;
    assert_eq!(
        rows,
        vec![
            json!(["llm", 6]),
            json!(["planner", 6]),
            json!(["tools", 9])
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn attribute_subscript_reads_the_map() {
    let fixture = Fixture::new();
    let rows = fixture
        .rows(
            "SELECT attributes['gen_ai.tool.name'] AS tool, count(*) FROM spans \
             WHERE attributes['gen_ai.tool.name'] IS NOT NULL GROUP BY 1 ORDER BY 1",
        )
        .await;
    assert_eq!(rows, vec![json!(["calculator", 3]), json!(["search", 6])]);
    // A missing key is NULL, not an error.
    let rows = fixture
        .rows("SELECT count(*) FROM spans WHERE attributes['no.such.key'] IS NULL")
        .await;
    assert_eq!(rows, vec![json!([21])]);
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_id_lookup_returns_exactly_that_trace() {
    let fixture = Fixture::new();
    for trace in 0..TRACES {
        let hex = trace_hex(trace);
        let rows = fixture
            .rows(&format!(
                "SELECT trace_id, span_name FROM spans WHERE trace_id = '{hex}' ORDER BY span_id"
            ))
            .await;
        let tools = usize::from(trace % 2 + 1);
        assert_eq!(rows.len(), 2 + tools, "trace {trace}");
        assert!(rows.iter().all(|row| row[0] == json!(hex)));
        assert_eq!(rows[0][1], json!("invoke_agent"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn span_events_has_one_row_per_event_with_its_span() {
    let fixture = Fixture::new();
    assert_eq!(
        fixture.rows("SELECT count(*) FROM span_events").await,
        vec![json!([12])]
    );
    let hex = trace_hex(3);
    let rows = fixture
        .rows(&format!(
            "SELECT trace_id, span_name, service_name, name, time, attributes, \
             dropped_attributes_count FROM span_events WHERE trace_id = '{hex}' ORDER BY time"
        ))
        .await;
    assert_eq!(
        rows,
        vec![
            json!([hex, "chat", "llm", "prompt", "2024-05-01T03:00:00.000003100Z",
                   {"gen_ai.prompt.tokens": "12"}, 0]),
            json!([hex, "chat", "llm", "completion", "2024-05-01T03:00:00.000003900Z",
                   {"gen_ai.completion.tokens": "30"}, 1]),
        ]
    );
    let rows = fixture
        .rows("SELECT attributes['gen_ai.completion.tokens'] FROM span_events WHERE name = 'completion' ORDER BY 1")
        .await;
    assert_eq!(rows.len(), 6);
    assert_eq!(rows[5], json!(["50"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn span_links_has_one_row_per_link() {
    let fixture = Fixture::new();
    assert_eq!(
        fixture.rows("SELECT count(*) FROM span_links").await,
        vec![json!([8])]
    );
    let rows = fixture
        .rows(&format!(
            "SELECT DISTINCT linked_trace_id, linked_span_id, flags, attributes['link.reason'], \
             trace_state FROM span_links WHERE trace_id = '{}'",
            trace_hex(3)
        ))
        .await;
    assert_eq!(
        rows,
        vec![json!([
            trace_hex(2),
            root_span(2).to_string(),
            1,
            "retry",
            Value::Null
        ])]
    );
    // Joins back to the linked span.
    let rows = fixture
        .rows(
            "SELECT l.trace_id, s.span_name FROM span_links l JOIN spans s \
             ON s.trace_id = l.linked_trace_id AND s.span_id = l.linked_span_id \
             ORDER BY l.trace_id LIMIT 1",
        )
        .await;
    assert_eq!(rows, vec![json!([trace_hex(1), "invoke_agent"])]);
}

#[tokio::test(flavor = "multi_thread")]
async fn catalog_statements_list_the_tables_and_columns() {
    let fixture = Fixture::new();
    let rows = fixture
        .rows(
            "SELECT table_name, table_type FROM information_schema.tables \
             WHERE table_schema = 'public' ORDER BY 1",
        )
        .await;
    assert_eq!(
        rows,
        vec![
            json!(["agent_runs", "BASE TABLE"]),
            json!(["content", "BASE TABLE"]),
            json!(["decisions", "BASE TABLE"]),
            json!(["evaluations", "VIEW"]),
            json!(["llm_calls", "BASE TABLE"]),
            json!(["logs", "BASE TABLE"]),
            json!(["retention", "BASE TABLE"]),
            json!(["sessions", "BASE TABLE"]),
            json!(["span_events", "BASE TABLE"]),
            json!(["span_links", "BASE TABLE"]),
            json!(["spans", "BASE TABLE"]),
            json!(["tool_calls", "BASE TABLE"]),
        ]
    );
    let shown = fixture.rows("SHOW TABLES").await;
    for table in ["spans", "span_events", "span_links"] {
        assert!(
            shown.iter().any(|row| row[2] == json!(table)),
            "{table} in {shown:?}"
        );
    }
    let columns = fixture.rows("DESCRIBE spans").await;
    let names: Vec<&str> = columns.iter().filter_map(|row| row[0].as_str()).collect();
    assert_eq!(
        names.len(),
        engine::span_schema().fields().len() - engine::schema::HIDDEN_COLUMNS.len()
    );
    assert!(
        !names.contains(&"span_otlp"),
        "hidden columns must not be visible: {names:?}"
    );
    assert_eq!(
        fixture
            .query("SHOW COLUMNS FROM span_links")
            .await
            .num_rows(),
        11
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn limit_is_pushed_into_the_scan_and_honoured() {
    let fixture = Fixture::new();
    let plan = fixture
        .plan("EXPLAIN SELECT span_id FROM spans LIMIT 3")
        .await;
    assert!(
        plan.contains("SpansScanExec: projection=[span_id], limit=3"),
        "{plan}"
    );
    assert_eq!(
        fixture
            .query("SELECT span_id FROM spans LIMIT 3")
            .await
            .num_rows(),
        3
    );
    let output = fixture
        .query("SELECT span_id FROM spans WHERE service_name = 'tools' LIMIT 4")
        .await;
    assert_eq!(output.num_rows(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn recursive_query_rescans_each_iteration() {
    // A recursive CTE re-executes its scan; each run must see the whole table once.
    let fixture = Fixture::new();
    let rows = fixture
        .rows(&format!(
            "WITH RECURSIVE tree AS ( \
               SELECT span_id, 0 AS depth FROM spans \
               WHERE trace_id = '{0}' AND parent_span_id IS NULL \
               UNION ALL \
               SELECT s.span_id, t.depth + 1 FROM spans s JOIN tree t ON s.parent_span_id = t.span_id \
               WHERE s.trace_id = '{0}') \
             SELECT depth, count(*) FROM tree GROUP BY depth ORDER BY depth",
            trace_hex(5)
        ))
        .await;
    assert_eq!(rows, vec![json!([0, 1]), json!([1, 3])]);
}
