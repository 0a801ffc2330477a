//! Per-query bounds: memory, time, result rows.

use std::time::{Duration, Instant};

use query::{Error, ErrorKind, Options};

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
            assert_eq!(error.kind(), ErrorKind::Caller);
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
