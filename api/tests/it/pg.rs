//! The PostgreSQL wire protocol (`--pg-addr`): psql and tokio-postgres against a seeded
//! server, compared with the HTTP SQL API on the same store.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use api::ServerConfig;
use api::auth::{Scope, TokenSection, Tokens, token_hash};
use chrono::{DateTime, Utc};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use serde_json::Value;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::support::TestServer;

/// The seeded traces of every test here.
fn seed_config() -> testdata::AgentTraceConfig {
    testdata::AgentTraceConfig {
        traces: 12,
        ..testdata::AgentTraceConfig::default()
    }
}

/// A server with `config`, holding the seeded traces, and its PostgreSQL address.
async fn seeded(config: ServerConfig) -> (TestServer, SocketAddr) {
    let server = TestServer::start_with(config).await;
    let mut client = TraceServiceClient::connect(server.otlp_grpc.clone())
        .await
        .unwrap();
    for request in testdata::export_requests(&seed_config(), 4) {
        client.export(request).await.expect("export acknowledged");
    }
    let addr = server.server.as_ref().expect("running").pg_addr;
    (server, addr)
}

async fn connect(
    addr: SocketAddr,
    password: Option<&str>,
) -> Result<Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(addr.ip().to_string())
        .port(addr.port())
        .user("grafana")
        .dbname("sightline");
    if let Some(password) = password {
        config.password(password);
    }
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The SQLSTATE of a failed statement.
fn sqlstate(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map(|db| db.code().code().to_owned())
        .unwrap_or_else(|| panic!("not a server error: {error}"))
}

/// The rows of a simple query, as text (None for NULL).
async fn simple_rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error:?}"));
    let mut rows = Vec::new();
    for message in messages {
        if let SimpleQueryMessage::Row(row) = message {
            rows.push(
                (0..row.len())
                    .map(|index| row.get(index).map(str::to_owned))
                    .collect(),
            );
        }
    }
    rows
}

/// Whether a PostgreSQL text value and the HTTP API's JSON value are the same value.
fn same_value(text: Option<&str>, json: &Value) -> bool {
    match (text, json) {
        (None, Value::Null) => true,
        (Some(text), Value::Number(number)) => {
            let (Ok(left), Some(right)) = (text.parse::<f64>(), number.as_f64()) else {
                return false;
            };
            (left - right).abs() <= 1e-9 * right.abs().max(1.0)
        }
        (Some(text), Value::Bool(flag)) => text == if *flag { "t" } else { "f" },
        (Some(text), Value::String(string)) => {
            text == string
                || matches!(
                    (parse_time(text), parse_time(string)),
                    (Some(left), Some(right)) if left == right
                )
        }
        (Some(text), other) => serde_json::to_string(other).is_ok_and(|json| json == text),
        (None, _) => false,
    }
}

/// A timestamp as PostgreSQL (`2026-01-02 03:04:05.123456+00:00`) or RFC 3339 writes it, to
/// microseconds (PostgreSQL's precision).
fn parse_time(text: &str) -> Option<i64> {
    let parsed = DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%:z"))
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .ok()?;
    Some(parsed.timestamp_micros())
}

fn psql(addr: SocketAddr, password: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut command = Command::new("psql");
    command
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args([
            "-U",
            "grafana",
            "-d",
            "sightline",
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .args(args)
        .env("PGSSLMODE", "prefer")
        .env("PGCONNECT_TIMEOUT", "10");
    match password {
        Some(password) => command.env("PGPASSWORD", password),
        None => command.env_remove("PGPASSWORD"),
    };
    command
        .output()
        .expect("psql runs (install postgresql-client)")
}

/// The relations of `kind` (`BASE TABLE`, `VIEW`; `None` for both) the HTTP API's
/// information_schema lists in `public`.
async fn public_relations(server: &TestServer, kind: Option<&str>) -> Vec<String> {
    let kind = kind.map_or(String::new(), |kind| format!("AND table_type = '{kind}'"));
    let rows = server
        .rows(&format!(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' \
             {kind} ORDER BY table_name"
        ))
        .await;
    rows.iter()
        .map(|row| row[0].as_str().expect("a name").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_lists_the_tables_and_runs_the_monitoring_queries_as_http_does() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = seeded(ServerConfig::ephemeral(dir.path())).await;

    // `\dt` lists every table the SQL engine has, named as information_schema names them;
    // `\dv` the views.
    let relations = public_relations(&server, Some("BASE TABLE")).await;
    for expected in [
        "spans",
        "span_events",
        "span_links",
        "content",
        "llm_calls",
        "tool_calls",
    ] {
        assert!(
            relations.iter().any(|name| name == expected),
            "{relations:?}"
        );
    }
    let listing = psql(addr, None, &["-A", "-t", "-c", r"\dt"]);
    assert!(
        listing.status.success(),
        "{}",
        String::from_utf8_lossy(&listing.stderr)
    );
    let listed: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|line| line.split('|').collect::<Vec<_>>())
        .filter(|fields| fields.len() == 4)
        .inspect(|fields| {
            assert_eq!(
                (fields[0], fields[2], fields[3]),
                ("public", "table", "sightline")
            )
        })
        .map(|fields| fields[1].to_owned())
        .collect();
    assert_eq!(listed, relations);
    let views = psql(addr, None, &["-A", "-t", "-c", r"\dv"]);
    let views: Vec<String> = String::from_utf8_lossy(&views.stdout)
        .lines()
        .filter_map(|line| line.split('|').nth(1).map(str::to_owned))
        .collect();
    assert_eq!(views, public_relations(&server, Some("VIEW")).await);
    assert!(views.iter().any(|view| view == "evaluations"), "{views:?}");

    // Each query of docs/monitoring.md: the same rows through psql as through the HTTP API.
    let queries = testdata::sql_blocks(include_str!("../../../docs/monitoring.md"));
    assert!(queries.len() >= 7, "{queries:?}");
    let mut answered = 0;
    for sql in &queries {
        let expected = server.rows(sql).await;
        answered += usize::from(!expected.is_empty());
        let output = psql(
            addr,
            None,
            &[
                "-A",
                "-t",
                "-F",
                "\x1f",
                "-R",
                "\x1e",
                "-P",
                "null=\x01",
                "-c",
                sql,
            ],
        );
        assert!(
            output.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let rows: Vec<Vec<Option<&str>>> = stdout
            .trim_end_matches('\n')
            .split('\x1e')
            .filter(|row| !row.is_empty())
            .map(|row| {
                row.split('\x1f')
                    .map(|cell| (cell != "\x01").then_some(cell))
                    .collect()
            })
            .collect();
        assert_eq!(rows.len(), expected.len(), "{sql}\npsql: {stdout}");
        for (row, expected_row) in rows.iter().zip(&expected) {
            let expected_row = expected_row.as_array().expect("a row");
            assert_eq!(row.len(), expected_row.len(), "{sql}");
            for (cell, expected_cell) in row.iter().zip(expected_row) {
                assert!(
                    same_value(*cell, expected_cell),
                    "{sql}\npsql {cell:?} vs http {expected_cell}"
                );
            }
        }
    }
    // The comparison means something only if the seed gives most questions an answer.
    assert!(
        answered >= queries.len() / 2,
        "{answered} of {}",
        queries.len()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_queries_bind_parameters_and_return_typed_values() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = seeded(ServerConfig::ephemeral(dir.path())).await;
    let client = connect(addr, None)
        .await
        .expect("trust on loopback without tokens");

    let traces = server
        .rows("SELECT trace_id, count(*) FROM spans GROUP BY trace_id ORDER BY trace_id")
        .await;
    assert!(traces.len() >= 2, "{traces:?}");
    for trace in &traces {
        let id = trace[0].as_str().expect("hex id");
        // A text parameter compared with a string column, the rows counted as int8.
        let row = client
            .query_one(
                "SELECT count(*) AS spans FROM spans WHERE trace_id = $1",
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, i64>("spans"),
            trace[1].as_i64().unwrap(),
            "{id}"
        );
    }

    // Typed results in binary format: timestamps, integers, floats, booleans, text.
    let id = traces[0][0].as_str().unwrap();
    let rows = client
        .query(
            "SELECT span_name, start_time, CAST(start_time AS BIGINT) AS start_nanos, \
             duration_ns, CAST(duration_ns AS DOUBLE) / 1000.0 AS duration_us, \
             duration_ns >= $2 AS long_enough \
             FROM spans WHERE trace_id = $1 ORDER BY start_time, span_id",
            &[&id, &0_i64],
        )
        .await
        .unwrap();
    let expected = server
        .rows(&format!(
            "SELECT span_name, duration_ns FROM spans WHERE trace_id = '{id}' \
             ORDER BY start_time, span_id"
        ))
        .await;
    assert_eq!(rows.len(), expected.len());
    for (row, expected) in rows.iter().zip(&expected) {
        assert_eq!(
            row.get::<_, String>("span_name"),
            expected[0].as_str().unwrap()
        );
        let start: DateTime<Utc> = row.get("start_time");
        let nanos: i64 = row.get("start_nanos");
        assert_eq!(start.timestamp_micros(), nanos.div_euclid(1000));
        let duration: i64 = row.get("duration_ns");
        assert_eq!(duration, expected[1].as_i64().unwrap());
        let micros: f64 = row.get("duration_us");
        assert!((micros - duration as f64 / 1000.0).abs() < 1e-6);
        assert!(row.get::<_, bool>("long_enough"));
    }

    // A timestamp parameter bound in binary: spans that started at or after the first one.
    let first: DateTime<Utc> = rows[0].get("start_time");
    let later = client
        .query_one(
            "SELECT count(*) FROM spans WHERE trace_id = $1 AND start_time >= $2",
            &[&id, &first],
        )
        .await
        .unwrap();
    assert_eq!(later.get::<_, i64>(0), i64::try_from(rows.len()).unwrap());

    // A parameter whose type only the client says (`LIMIT $1` fixes none), declared in Parse
    // as drivers such as psycopg do: int8 is read as an integer, not as text.
    let limited = client
        .query_typed(
            "SELECT span_id FROM spans WHERE trace_id = $1 ORDER BY span_id LIMIT $2",
            &[
                (&id, tokio_postgres::types::Type::TEXT),
                (&2_i64, tokio_postgres::types::Type::INT8),
            ],
        )
        .await
        .unwrap();
    assert_eq!(limited.len(), rows.len().min(2));
    let statement = client
        .prepare_typed(
            "SELECT span_id FROM spans LIMIT $1",
            &[tokio_postgres::types::Type::INT4],
        )
        .await
        .unwrap();
    assert_eq!(statement.params(), &[tokio_postgres::types::Type::INT4]);
    assert_eq!(client.query(&statement, &[&1_i32]).await.unwrap().len(), 1);

    // Session statements drivers send, and a read-only transaction around a query.
    client
        .batch_execute("SET extra_float_digits = 3")
        .await
        .unwrap();
    let transaction_client = connect(addr, None).await.unwrap();
    let mut transaction_client = transaction_client;
    let transaction = transaction_client.transaction().await.unwrap();
    let count: i64 = transaction
        .query_one("SELECT count(*) FROM spans", &[])
        .await
        .unwrap()
        .get(0);
    transaction.commit().await.unwrap();
    assert_eq!(count, server.count("SELECT count(*) FROM spans").await);
    assert_eq!(
        simple_rows(&client, "SHOW server_version").await,
        [[Some("15.0".to_owned())]]
    );
    assert_eq!(
        simple_rows(&client, "SELECT current_schema()").await,
        [[Some("public".to_owned())]]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_a_sqlstate_and_leave_the_connection_usable() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::ephemeral(dir.path());
    config.query = config.query.clone().with_max_result_rows(5);
    let (server, addr) = seeded(config).await;
    let client = connect(addr, None).await.unwrap();
    let spans = server.count("SELECT count(*) FROM spans").await;
    assert!(spans > 5, "the seed must exceed the row limit: {spans}");

    for (sql, code) in [
        ("DELETE FROM spans", "25006"),
        ("DROP TABLE spans", "25006"),
        ("CREATE TABLE t (x INT)", "25006"),
        ("COPY spans TO STDOUT", "25006"),
        ("INSERT INTO spans VALUES (1)", "25006"),
        ("SELEC 1", "42601"),
        ("SELECT nope FROM spans", "42601"),
        ("SELECT * FROM spans", "54000"),
        ("SHOW no_such_setting", "42704"),
    ] {
        // Simple protocol.
        let error = client.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&error), code, "{sql}: {error:?}");
        // Extended protocol (Parse fails for most; Execute for the row limit).
        let error = client.query(sql, &[]).await.expect_err(sql);
        assert_eq!(sqlstate(&error), code, "{sql}: {error:?}");
        // Still usable.
        assert_eq!(
            simple_rows(&client, "SELECT 1").await,
            [[Some("1".to_owned())]]
        );
    }
    // Within the limit, the same table answers.
    let rows = client
        .query("SELECT span_id FROM spans LIMIT 5", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 5);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_the_password_is_a_query_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::ephemeral(dir.path());
    let entry = |name: &str, token: &str, scopes: Vec<Scope>| TokenSection {
        name: name.to_owned(),
        sha256: token_hash(token),
        scopes,
    };
    config.tokens = Arc::new(
        Tokens::from_sections(&[
            entry("reader", "reader-token", vec![Scope::Query]),
            entry("collector", "ingest-token", vec![Scope::Ingest]),
        ])
        .unwrap(),
    );
    let server = TestServer::start_with(config).await;
    let addr = server.server.as_ref().unwrap().pg_addr;

    let wrong = connect(addr, Some("not-a-token"))
        .await
        .expect_err("refused");
    assert_eq!(sqlstate(&wrong), "28P01");
    let ingest_only = connect(addr, Some("ingest-token"))
        .await
        .expect_err("refused");
    assert_eq!(sqlstate(&ingest_only), "42501");
    let client = connect(addr, Some("reader-token"))
        .await
        .expect("a query token");
    assert_eq!(
        simple_rows(&client, "SELECT 1 + 1").await,
        [[Some("2".to_owned())]]
    );
    // Refusals are counted like the other listeners'.
    let metrics = server
        .client
        .get(format!("{}/metrics", server.api))
        .bearer_auth("reader-token")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "sightline_auth_refusals_total{listener=\"pg\",status=\"401\"} 1",
        "sightline_auth_refusals_total{listener=\"pg\",status=\"403\"} 1",
    ] {
        assert!(
            metrics.lines().any(|text| text == line),
            "{line} in {metrics}"
        );
    }
    // The content table needs the content scope, as over HTTP.
    let error = client
        .simple_query("SELECT count(*) FROM content")
        .await
        .expect_err("content needs its scope");
    assert_eq!(sqlstate(&error), "42501");

    // psql with PGPASSWORD, and without a password.
    let ok = psql(
        addr,
        Some("reader-token"),
        &["-A", "-t", "-c", "SELECT 40 + 2"],
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "42");
    let refused = psql(addr, Some("nope"), &["-c", "SELECT 1"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("password authentication failed"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    server.stop().await;
}

/// The catalog queries Grafana's PostgreSQL data source sends (its `postgresMetaQuery.ts`),
/// and a time series as its `$__timeFilter` expands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_catalog_queries_and_a_time_series_work() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = seeded(ServerConfig::ephemeral(dir.path())).await;
    let client = connect(addr, None).await.unwrap();
    let relations = public_relations(&server, None).await;

    // The data source's health check: pgx pings with a comment alone.
    let answer = client
        .simple_query("-- ping")
        .await
        .expect("an empty query");
    assert!(
        answer
            .iter()
            .all(|message| !matches!(message, SimpleQueryMessage::Row(_))),
        "no rows for a ping"
    );
    client
        .batch_execute("-- ping")
        .await
        .expect("an empty query");

    // getVersion(): the version number Grafana keeps.
    let version = client
        .query_one(
            "SELECT current_setting('server_version_num')::int/100 as version",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(version.get::<_, i64>(0), 1500);

    // showTables(schema) and showTables() without a schema (the search-path constraint).
    let tables = client
        .query(
            "SELECT quote_ident(table_name) AS \"table\"
      FROM information_schema.tables
      WHERE quote_ident(table_schema) = 'public'
      ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let names: Vec<String> = tables.iter().map(|row| row.get(0)).collect();
    assert_eq!(names, relations);
    let constraint = "
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '\"$user\"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )";
    let show_tables = format!(
        "SELECT
    CASE WHEN {constraint}
      THEN quote_ident(table_name)
      ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
    END AS \"table\"
    FROM information_schema.tables
    WHERE quote_ident(table_schema) NOT IN ('information_schema',
                             'pg_catalog',
                             '_timescaledb_cache',
                             '_timescaledb_catalog',
                             '_timescaledb_internal',
                             '_timescaledb_config',
                             'timescaledb_information',
                             'timescaledb_experimental')
    ORDER BY CASE WHEN {constraint} THEN 0 ELSE 1 END, 1"
    );
    let listed: Vec<String> = client
        .query(&show_tables, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(listed, relations);

    // getSchema('spans'): the columns of a table, as information_schema lists them.
    let get_schema = format!(
        "SELECT quote_ident(column_name) AS \"column\", data_type AS \"type\"
    FROM information_schema.columns
    WHERE
      CASE WHEN array_length(parse_ident('spans'),1) = 2
        THEN quote_ident(table_schema) = (parse_ident('spans'))[1]
          AND quote_ident(table_name) = (parse_ident('spans'))[2]
        ELSE quote_ident(table_name) = 'spans'
          AND {constraint}
      END"
    );
    let columns: Vec<String> = client
        .query(&get_schema, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let expected_columns: Vec<String> = server
        .rows(
            "SELECT column_name FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = 'spans'",
        )
        .await
        .iter()
        .map(|row| row[0].as_str().unwrap().to_owned())
        .collect();
    assert!(columns.contains(&"start_time".to_owned()), "{columns:?}");
    assert_eq!(columns, expected_columns);

    // A time series: spans per minute in the dashboard's range, as $__timeFilter expands it,
    // against the seeded start times bucketed here.
    let starts: Vec<i64> = server
        .rows("SELECT CAST(start_time AS BIGINT) FROM spans")
        .await
        .iter()
        .map(|row| row[0].as_i64().unwrap())
        .collect();
    let first = *starts.iter().min().unwrap();
    let last = *starts.iter().max().unwrap();
    let from = DateTime::from_timestamp_nanos(first - 60_000_000_000);
    let to = DateTime::from_timestamp_nanos(last + 60_000_000_000);
    let rfc3339 = |time: DateTime<Utc>| time.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let series = client
        .query(
            &format!(
                "SELECT date_trunc('minute', start_time) AS time, count(*) AS spans \
                 FROM spans WHERE start_time BETWEEN '{}' AND '{}' GROUP BY 1 ORDER BY 1",
                rfc3339(from),
                rfc3339(to)
            ),
            &[],
        )
        .await
        .unwrap();
    let from_nanos = from.timestamp() * 1_000_000_000;
    let to_nanos = to.timestamp() * 1_000_000_000;
    let mut expected: BTreeMap<i64, i64> = BTreeMap::new();
    for start in &starts {
        if (from_nanos..=to_nanos).contains(start) {
            *expected
                .entry(start.div_euclid(60_000_000_000) * 60)
                .or_default() += 1;
        }
    }
    let got: BTreeMap<i64, i64> = series
        .iter()
        .map(|row| {
            let time: DateTime<Utc> = row.get("time");
            (time.timestamp(), row.get::<_, i64>("spans"))
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!(
        got.values().sum::<i64>(),
        i64::try_from(starts.len()).unwrap()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_refused_with_53300() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(ServerConfig::ephemeral(dir.path())).await;
    let addr = server.server.as_ref().unwrap().pg_addr;
    let mut clients = Vec::new();
    for _ in 0..api::pg::MAX_CONNECTIONS {
        clients.push(connect(addr, None).await.expect("within the cap"));
    }
    let refused = connect(addr, None).await.expect_err("over the cap");
    assert_eq!(sqlstate(&refused), "53300");
    // Closing one frees its slot.
    drop(clients.pop());
    let mut reconnected = None;
    for _ in 0..100 {
        if let Ok(client) = connect(addr, None).await {
            reconnected = Some(client);
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let client = reconnected.expect("a slot frees when a client leaves");
    assert_eq!(
        simple_rows(&client, "SELECT 1").await,
        [[Some("1".to_owned())]]
    );
    for client in &clients {
        assert_eq!(
            simple_rows(client, "SELECT 2").await,
            [[Some("2".to_owned())]]
        );
    }
    server.stop().await;
}
