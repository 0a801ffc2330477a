//! The SQL guard: only read-only statements run, and nothing reads files.

use query::{Error, ErrorKind};

use crate::fixture::Fixture;

#[tokio::test(flavor = "multi_thread")]
async fn every_non_query_statement_is_rejected_with_its_kind() {
    let fixture = Fixture::new();
    let cases = [
        ("CREATE TABLE t (x INT)", "CREATE TABLE"),
        ("CREATE TABLE t AS SELECT * FROM spans", "CREATE TABLE"),
        (
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
            "CREATE EXTERNAL TABLE",
        ),
        ("CREATE VIEW v AS SELECT * FROM spans", "CREATE VIEW"),
        ("CREATE OR REPLACE VIEW v AS SELECT 1", "CREATE VIEW"),
        (
            "CREATE FUNCTION f(x INT) RETURNS INT RETURN x + 1",
            "CREATE FUNCTION",
        ),
        ("CREATE SCHEMA s", "CREATE SCHEMA"),
        ("CREATE DATABASE d", "CREATE DATABASE"),
        ("CREATE INDEX i ON spans (trace_id)", "CREATE INDEX"),
        ("DROP TABLE spans", "DROP TABLE"),
        ("DROP VIEW v", "DROP VIEW"),
        ("DROP FUNCTION f", "DROP FUNCTION"),
        ("ALTER TABLE spans ADD COLUMN x INT", "ALTER TABLE"),
        ("INSERT INTO spans (trace_id) VALUES ('x')", "INSERT"),
        ("UPDATE spans SET span_name = 'x'", "UPDATE"),
        ("DELETE FROM spans", "DELETE"),
        ("TRUNCATE TABLE spans", "TRUNCATE"),
        (
            "MERGE INTO spans USING spans s ON true WHEN MATCHED THEN DELETE",
            "MERGE",
        ),
        ("COPY spans TO '/tmp/spans.csv' STORED AS CSV", "COPY"),
        ("COPY (SELECT 1) TO '/tmp/one.parquet'", "COPY"),
        ("COPY spans FROM '/tmp/spans.csv'", "COPY"),
        ("SET datafusion.execution.target_partitions = 64", "SET"),
        ("SET TIME ZONE 'UTC'", "SET"),
        ("RESET datafusion.execution.batch_size", "RESET"),
        ("SHOW ALL", "SHOW"),
        ("SHOW datafusion.execution.batch_size", "SHOW"),
        ("PREPARE q AS SELECT 1", "PREPARE"),
        ("EXECUTE q", "EXECUTE"),
        ("DEALLOCATE q", "DEALLOCATE"),
        ("ATTACH DATABASE 'x.db' AS x", "ATTACH"),
        ("LOAD DATA INPATH '/tmp/x' INTO TABLE spans", "LOAD"),
        ("BEGIN TRANSACTION", "START TRANSACTION"),
        ("EXPLAIN CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
        (
            "EXPLAIN ANALYZE INSERT INTO spans (trace_id) VALUES ('x')",
            "INSERT",
        ),
        ("EXPLAIN COPY spans TO '/tmp/x.csv'", "COPY"),
        ("SELECT * INTO copy_of_spans FROM spans", "SELECT INTO"),
        ("SELECT 1; SELECT 2", "multiple statements"),
        ("SELECT 1; DROP TABLE spans", "multiple statements"),
    ];
    for (sql, kind) in cases {
        match fixture.sql.execute(sql).await {
            Err(error @ Error::Rejected { .. }) => {
                let Error::Rejected { statement_kind, .. } = &error else {
                    unreachable!()
                };
                assert!(
                    statement_kind.starts_with(kind),
                    "{sql}: kind {statement_kind:?} should start with {kind:?}"
                );
                assert!(error.to_string().starts_with(kind), "{sql}: {error}");
                assert_eq!(error.kind(), ErrorKind::Caller);
            }
            other => panic!("{sql}: expected a rejection, got {other:?}"),
        }
    }
    // Nothing above changed the catalog: the six tables (spans, span_events, span_links,
    // content, retention, logs), the five agent tables and the `evaluations` view.
    let tables = fixture
        .rows("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
        .await;
    assert_eq!(tables, vec![serde_json::json!([12])]);
}

#[tokio::test(flavor = "multi_thread")]
async fn files_cannot_be_read_through_sql() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("secret.csv");
    std::fs::write(&csv, "a,b\n1,2\n").unwrap();
    let path = csv.display();
    let fixture = Fixture::new();
    for sql in [
        format!("SELECT * FROM '{path}'"),
        "SELECT * FROM 'some/file.csv'".to_owned(),
        format!("SELECT * FROM read_csv('{path}')"),
        "SELECT * FROM read_csv('x')".to_owned(),
        format!("SELECT * FROM read_parquet('{path}')"),
        format!("SELECT * FROM read_json('{path}')"),
        format!("SELECT * FROM \"file://{path}\""),
    ] {
        match fixture.sql.execute(&sql).await {
            Err(Error::InvalidQuery(message)) => {
                assert!(!message.contains("1,2"), "{sql}: {message}");
            }
            other => panic!("{sql}: expected an invalid query, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_sql_is_an_invalid_query() {
    let fixture = Fixture::new();
    for sql in [
        "SELEC 1",
        "SELECT nope FROM spans",
        "SELECT * FROM no_such_table",
        "SELECT no_such_function(1)",
        "",
    ] {
        match fixture.sql.execute(sql).await {
            Err(error @ Error::InvalidQuery(_)) => assert_eq!(error.kind(), ErrorKind::Caller),
            other => panic!("{sql:?}: expected an invalid query, got {other:?}"),
        }
    }
    // Runtime failures of a valid query are the caller's too.
    match fixture
        .sql
        .execute("SELECT CAST(span_name AS INT) FROM spans")
        .await
    {
        Err(error @ Error::Execution(_)) => assert_eq!(error.kind(), ErrorKind::Caller),
        other => panic!("expected an execution error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn content_text_needs_content_access_wherever_the_query_reads_it() {
    let fixture = crate::fixture::Fixture::new();
    let no_content = query::Access::NO_CONTENT;
    for sql in [
        "SELECT * FROM content",
        "SELECT count(*) FROM spans WHERE trace_id IN (SELECT trace_id FROM content)",
        "WITH c AS (SELECT * FROM content) SELECT count(*) FROM c",
        "SELECT (SELECT count(*) FROM content) AS n",
        "EXPLAIN SELECT * FROM content",
    ] {
        match fixture.sql.execute_with(sql, no_content).await {
            Err(error @ query::Error::Forbidden(_)) => {
                assert_eq!(error.kind(), query::ErrorKind::Caller);
                assert!(error.to_string().contains("content"), "{error}");
            }
            other => panic!(
                "{sql}: expected forbidden, got {:?}",
                other.map(|o| o.num_rows())
            ),
        }
        assert!(
            fixture
                .sql
                .execute_with(sql, query::Access::ALL)
                .await
                .is_ok(),
            "{sql}"
        );
    }
    // Everything else reads as before.
    let spans = fixture
        .sql
        .execute_with("SELECT count(*) FROM spans", no_content)
        .await
        .unwrap();
    assert_eq!(spans.num_rows(), 1);
}
