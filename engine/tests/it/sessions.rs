//! Session, conversation and user keys: propagation to every span of a trace (in the memtable,
//! at seal, and for rows sealed before their trace's keys arrived), and the partition indexes
//! that let a session or conversation query read only that data.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use engine::schema::columns;
use engine::{
    AgentFields, Engine, Options, ScanRequest, SpanBatchBuilder, SpanId, SpanRecord, TraceId,
};

/// 2026-11-01T00:00:00Z
const BASE: i64 = 1_793_491_200_000_000_000;

fn trace_id(n: u32) -> TraceId {
    let mut raw = [0u8; 16];
    raw[12..].copy_from_slice(&n.to_be_bytes());
    raw[0] = 0x20;
    TraceId(raw)
}

/// What one span says about its keys.
#[derive(Clone, Copy, Default)]
struct Own<'a> {
    session: Option<&'a str>,
    conversation: Option<&'a str>,
    user: Option<&'a str>,
}

/// Spans `first..first + count` of `trace`, each carrying `own`.
fn spans(trace: u32, first: u32, count: u32, service: &str, own: Own<'_>) -> RecordBatch {
    let mut builder = SpanBatchBuilder::new();
    for index in first..first + count {
        let mut span = [0u8; 8];
        span[..4].copy_from_slice(&trace.to_be_bytes());
        span[4..].copy_from_slice(&(index + 1).to_be_bytes());
        builder.append(&SpanRecord {
            trace_id: trace_id(trace),
            span_id: SpanId(span),
            name: "step",
            kind: 1,
            start_time_unix_nano: BASE + i64::from(trace) * 1_000_000 + i64::from(index),
            end_time_unix_nano: BASE + i64::from(trace) * 1_000_000 + i64::from(index) + 10,
            service_name: Some(service),
            agent: AgentFields {
                session_id: own.session.map(Cow::Borrowed),
                conversation_id: own.conversation.map(Cow::Borrowed),
                user_id: own.user.map(Cow::Borrowed),
                ..AgentFields::default()
            },
            ..SpanRecord::default()
        });
    }
    builder.finish()
}

fn manual() -> Options {
    Options::default().with_background_sealing(false)
}

type Keys = (Option<String>, Option<String>, Option<String>);

/// span_id -> (session, conversation, user) of every row the request returns.
fn keys(engine: &Engine, request: &ScanRequest) -> BTreeMap<String, Keys> {
    let mut out = BTreeMap::new();
    for batch in engine.scan(request).unwrap() {
        let text = |name: &str, row: usize| {
            let column = batch.column_by_name(name).unwrap().as_string::<i32>();
            column.is_valid(row).then(|| column.value(row).to_owned())
        };
        for row in 0..batch.num_rows() {
            out.insert(
                text(columns::SPAN_ID, row).unwrap(),
                (
                    text(columns::SESSION_ID, row),
                    text(columns::CONVERSATION_ID, row),
                    text(columns::USER_ID, row),
                ),
            );
        }
    }
    out
}

fn all_keys(engine: &Engine) -> BTreeMap<String, Keys> {
    keys(engine, &ScanRequest::default())
}

fn session(id: &str) -> ScanRequest {
    ScanRequest {
        session_ids: Some(vec![id.to_owned()]),
        ..ScanRequest::default()
    }
}

fn conversation(id: &str) -> ScanRequest {
    ScanRequest {
        conversation_ids: Some(vec![id.to_owned()]),
        ..ScanRequest::default()
    }
}

fn some(text: &str) -> Option<String> {
    Some(text.to_owned())
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

const ROOT: Own<'static> = Own {
    session: Some("sess-1"),
    conversation: Some("conv-1"),
    user: Some("user-1"),
};

#[test]
fn keys_set_on_one_span_reach_every_span_of_the_trace_in_other_calls_and_services() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), manual()).unwrap();
    // Children first (they end first), from two services, then the root with the keys.
    engine
        .write(spans(1, 0, 3, "agent", Own::default()))
        .unwrap();
    engine
        .write(spans(1, 3, 2, "mcp-server", Own::default()))
        .unwrap();
    engine.write(spans(1, 5, 1, "agent", ROOT)).unwrap();
    // Another trace without keys stays without.
    engine
        .write(spans(2, 0, 2, "agent", Own::default()))
        .unwrap();
    let expected: Keys = (some("sess-1"), some("conv-1"), some("user-1"));
    let check = |engine: &Engine| {
        let found = all_keys(engine);
        assert_eq!(found.len(), 8);
        let trace_one: Vec<&Keys> = found
            .iter()
            .filter(|(span, _)| span.starts_with("00000001"))
            .map(|(_, keys)| keys)
            .collect();
        assert_eq!(trace_one.len(), 6);
        assert!(trace_one.iter().all(|keys| **keys == expected), "{found:?}");
        assert!(
            found
                .iter()
                .filter(|(span, _)| span.starts_with("00000002"))
                .all(|(_, keys)| *keys == (None, None, None))
        );
        assert_eq!(keys(engine, &session("sess-1")).len(), 6);
        assert_eq!(keys(engine, &conversation("conv-1")).len(), 6);
    };
    check(&engine); // memtable
    engine.seal().unwrap();
    check(&engine); // segment
    engine.close().unwrap();
    drop(engine);
    let engine = Engine::open(dir.path(), manual()).unwrap();
    check(&engine);
}

#[test]
fn keys_that_arrive_after_rows_were_sealed_apply_to_those_rows_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path(), manual()).unwrap();
        engine
            .write(spans(1, 0, 4, "agent", Own::default()))
            .unwrap();
        engine
            .write(spans(3, 0, 2, "agent", Own::default()))
            .unwrap();
        engine.seal().unwrap();
        // The root arrives after its children are in a segment; a span of another call then
        // brings the user only.
        engine
            .write(spans(1, 4, 1, "agent", Own { user: None, ..ROOT }))
            .unwrap();
        engine
            .write(spans(
                1,
                5,
                1,
                "agent",
                Own {
                    user: Some("user-9"),
                    ..Own::default()
                },
            ))
            .unwrap();
        let found = keys(&engine, &session("sess-1"));
        assert_eq!(found.len(), 6, "{found:?}");
        assert!(
            found
                .values()
                .all(|keys| *keys == (some("sess-1"), some("conv-1"), some("user-9")))
        );
        engine.seal().unwrap();
        assert_eq!(keys(&engine, &session("sess-1")).len(), 6);
        // Dropped without close: the late keys must be durable by themselves.
    }
    let engine = Engine::open(dir.path(), manual()).unwrap();
    let found = all_keys(&engine);
    assert_eq!(found.len(), 8);
    let sessions: Vec<Option<String>> = found.values().map(|keys| keys.0.clone()).collect();
    assert_eq!(
        sessions
            .iter()
            .filter(|s| s.as_deref() == Some("sess-1"))
            .count(),
        6
    );
    assert_eq!(keys(&engine, &session("sess-1")).len(), 6);
    assert_eq!(keys(&engine, &conversation("conv-1")).len(), 6);
    assert_eq!(keys(&engine, &session("sess-none")).len(), 0);
    // Trace 3 never got keys.
    assert_eq!(
        found
            .iter()
            .filter(|(span, keys)| span.starts_with("00000003") && keys.0.is_none())
            .count(),
        2
    );
}

#[test]
fn a_conversation_without_a_session_is_the_session_but_never_the_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), manual()).unwrap();
    engine
        .write(spans(
            1,
            0,
            2,
            "agent",
            Own {
                conversation: Some("conv-only"),
                ..Own::default()
            },
        ))
        .unwrap();
    engine
        .write(spans(
            2,
            0,
            2,
            "agent",
            Own {
                session: Some("sess-only"),
                ..Own::default()
            },
        ))
        .unwrap();
    for _ in 0..2 {
        let found = all_keys(&engine);
        for (span, keys) in &found {
            if span.starts_with("00000001") {
                assert_eq!(*keys, (some("conv-only"), some("conv-only"), None));
            } else {
                assert_eq!(*keys, (some("sess-only"), None, None));
            }
        }
        assert_eq!(keys(&engine, &session("conv-only")).len(), 2);
        assert_eq!(keys(&engine, &conversation("sess-only")).len(), 0);
        engine.seal().unwrap();
    }
}

#[test]
fn a_session_query_reads_only_that_sessions_rows() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), manual().with_row_group_rows(4096)).unwrap();
    // 200 sessions x 5 traces x 20 spans, interleaved over time as agents would send them.
    for round in 0..5u32 {
        let mut builder_batches = Vec::new();
        for session_index in 0..200u32 {
            let name = format!("s{session_index:03}");
            let trace = round * 1000 + session_index;
            builder_batches.push(spans(
                trace,
                0,
                19,
                &format!("svc{}", session_index % 3),
                Own::default(),
            ));
            builder_batches.push(spans(
                trace,
                19,
                1,
                "root",
                Own {
                    session: Some(&name),
                    conversation: Some(&format!("c{trace}")),
                    user: Some("u"),
                },
            ));
        }
        for batch in builder_batches {
            engine.write(batch).unwrap();
        }
        if round % 2 == 1 {
            engine.seal().unwrap();
        }
    }
    engine.seal().unwrap();
    let projection = Some(vec![0, 1, 5, 7, 9]);
    let full = engine
        .plan_scan(&ScanRequest {
            projection: projection.clone(),
            ..ScanRequest::default()
        })
        .unwrap();
    let full_metrics = full.metrics();
    assert_eq!(rows(&full.collect().unwrap()), 20_000);
    let one = engine
        .plan_scan(&ScanRequest {
            session_ids: Some(vec!["s042".to_owned()]),
            projection,
            ..ScanRequest::default()
        })
        .unwrap();
    let one_metrics = one.metrics();
    assert_eq!(rows(&one.collect().unwrap()), 100);
    let (full, one) = (full_metrics.snapshot(), one_metrics.snapshot());
    assert_eq!(one.rows_returned, 100);
    // Only the session's row runs are decoded, through small pages: here 100 of 20,000 rows in
    // three segments of ~8 pages each, so about one page per column per segment.
    assert!(
        one.rows_scanned <= 100,
        "rows scanned for one session: {}",
        one.rows_scanned
    );
    assert!(
        one.bytes_read * 4 < full.bytes_read,
        "one session read {} of {} bytes",
        one.bytes_read,
        full.bytes_read
    );
    // Same answer as filtering a full scan.
    let by_index = keys(&engine, &session("s042"));
    let by_scan: BTreeMap<String, Keys> = all_keys(&engine)
        .into_iter()
        .filter(|(_, keys)| keys.0.as_deref() == Some("s042"))
        .collect();
    assert_eq!(by_index, by_scan);
    // A conversation is one trace here.
    assert_eq!(keys(&engine, &conversation("c3042")).len(), 20);
    // Session and trace filters intersect.
    let both = ScanRequest {
        session_ids: Some(vec!["s042".to_owned()]),
        trace_ids: Some(vec![trace_id(3042), trace_id(3043)]),
        ..ScanRequest::default()
    };
    assert_eq!(keys(&engine, &both).len(), 20);
}

#[test]
fn session_or_conversation_disjunctions_read_both_keys_runs_and_all_must_hold() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), manual()).unwrap();
    // Trace n: session s<n % 3>, conversation c<n>; 4 spans each (the last names the keys).
    // Traces 0-5 sealed in segment 1, 6-11 in segment 2, 12-14 stay in the memtable; trace 7
    // gets a late session (its rows are sealed before its root arrives).
    let write = |trace: u32| {
        let (session, conversation) = (format!("s{}", trace % 3), format!("c{trace}"));
        engine
            .write(spans(trace, 0, 3, "svc", Own::default()))
            .unwrap();
        if trace != 7 {
            let own = Own {
                session: Some(&session),
                conversation: Some(&conversation),
                user: None,
            };
            engine.write(spans(trace, 3, 1, "svc", own)).unwrap();
        }
    };
    (0..6).for_each(write);
    engine.seal().unwrap();
    (6..12).for_each(write);
    engine.seal().unwrap();
    let own = Own {
        session: Some("s1"),
        conversation: Some("c7"),
        user: None,
    };
    engine.write(spans(7, 3, 1, "svc", own)).unwrap();
    (12..15).for_each(write);

    let by_scan = |keep: &dyn Fn(&Keys) -> bool| -> BTreeMap<String, Keys> {
        all_keys(&engine)
            .into_iter()
            .filter(|(_, keys)| keep(keys))
            .collect()
    };
    let either = |sessions: &[&str], conversations: &[&str]| {
        (
            sessions
                .iter()
                .map(|id| (*id).to_owned())
                .collect::<Vec<_>>(),
            conversations
                .iter()
                .map(|id| (*id).to_owned())
                .collect::<Vec<_>>(),
        )
    };
    let is = |value: &Option<String>, wanted: &[&str]| {
        value
            .as_deref()
            .is_some_and(|value| wanted.contains(&value))
    };

    // s2 or c4 / c7 / c13: traces 2, 5, 8, 11, 14 (s2) and 4, 7, 13.
    let request = ScanRequest {
        sessions_or_conversations: vec![either(&["s2"], &["c4", "c7", "c13"])],
        ..ScanRequest::default()
    };
    let found = keys(&engine, &request);
    assert_eq!(found.len(), 8 * 4);
    assert_eq!(
        found,
        by_scan(&|keys| is(&keys.0, &["s2"]) || is(&keys.1, &["c4", "c7", "c13"]))
    );
    let plan = engine.plan_scan(&request).unwrap();
    let metrics = plan.metrics();
    plan.collect().unwrap();
    assert_eq!(metrics.snapshot().segments_selected, 2);

    // Only conversations of the first segment (and none in memory): one segment.
    let request = ScanRequest {
        sessions_or_conversations: vec![either(&["nope"], &["c1", "c3"])],
        ..ScanRequest::default()
    };
    let plan = engine.plan_scan(&request).unwrap();
    let metrics = plan.metrics();
    assert_eq!(rows(&plan.collect().unwrap()), 8);
    assert_eq!(metrics.snapshot().segments_selected, 1);

    // Neither key exists: no segment.
    let request = ScanRequest {
        sessions_or_conversations: vec![either(&["nope"], &["nada"])],
        ..ScanRequest::default()
    };
    let plan = engine.plan_scan(&request).unwrap();
    let metrics = plan.metrics();
    assert_eq!(rows(&plan.collect().unwrap()), 0);
    assert_eq!(metrics.snapshot().segments_selected, 0);

    // Two disjunctions and a plain session filter all hold.
    let request = ScanRequest {
        session_ids: Some(vec!["s1".to_owned(), "s2".to_owned()]),
        sessions_or_conversations: vec![
            either(&["s1"], &["c5", "c8"]),
            either(&["s0"], &["c4", "c7", "c10", "c13", "c5"]),
        ],
        ..ScanRequest::default()
    };
    let found = keys(&engine, &request);
    // s1 traces 1, 4, 7, 10, 13 or c5/c8, and s0 or c4/c7/c10/c13/c5: 4, 7, 10, 13 and 5.
    assert_eq!(found.len(), 5 * 4);
    assert_eq!(
        found,
        by_scan(&|keys| {
            is(&keys.0, &["s1", "s2"])
                && (is(&keys.0, &["s1"]) || is(&keys.1, &["c5", "c8"]))
                && (is(&keys.0, &["s0"]) || is(&keys.1, &["c4", "c7", "c10", "c13", "c5"]))
        })
    );
}

#[test]
fn a_point_read_split_between_row_groups_reads_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), manual().with_row_group_rows(8)).unwrap();
    // Ten sessions of 4 traces x 5 spans, interleaved, in one segment of 25 row groups.
    for trace in 0..40u32 {
        let name = format!("s{}", trace % 10);
        engine
            .write(spans(
                trace,
                0,
                5,
                "svc",
                Own {
                    session: Some(&name),
                    ..Own::default()
                },
            ))
            .unwrap();
    }
    engine.seal().unwrap();
    let span_ids = |units: Vec<engine::ScanUnit>| -> Vec<Vec<String>> {
        units
            .into_iter()
            .map(|unit| {
                let mut ids = Vec::new();
                for batch in unit.execute().unwrap() {
                    let batch = batch.unwrap();
                    let column = batch
                        .column_by_name(columns::SPAN_ID)
                        .unwrap()
                        .as_string::<i32>();
                    ids.extend(column.iter().map(|id| id.unwrap().to_owned()));
                }
                ids
            })
            .collect()
    };
    let whole = span_ids(engine.plan_scan(&session("s3")).unwrap().into_units());
    assert_eq!(whole.len(), 1, "one segment, one unit");
    let expected: Vec<String> = whole.concat();
    assert_eq!(expected.len(), 20);
    for parts in [2, 3, 8] {
        let split = span_ids(
            engine
                .plan_scan(&session("s3"))
                .unwrap()
                .into_parallel_units(parts),
        );
        assert!(
            split.len() > 1 && split.len() <= parts,
            "{parts}: {}",
            split.len()
        );
        assert!(split.iter().all(|ids| !ids.is_empty()));
        // Every row once, in storage order across the units.
        assert_eq!(split.concat(), expected, "{parts} parts");
    }
    // A whole-store read is one unit per segment, never split.
    let all = engine.plan_scan(&ScanRequest::default()).unwrap();
    assert_eq!(all.into_parallel_units(4).len(), 1);
}

/// All the rows of `batches`, in order, as one batch.
fn concat(batches: &[RecordBatch]) -> RecordBatch {
    arrow::compute::concat_batches(&engine::span_schema(), batches).unwrap()
}

/// The rows of `all` whose `session_id` is `session`, in order.
fn of_session(all: &RecordBatch, session: &str) -> RecordBatch {
    let ids = all
        .column_by_name(columns::SESSION_ID)
        .unwrap()
        .as_string::<i32>();
    let keep: arrow::array::BooleanArray = ids.iter().map(|id| Some(id == Some(session))).collect();
    arrow::compute::filter_record_batch(all, &keep).unwrap()
}

#[test]
fn a_point_read_of_every_column_returns_the_rows_a_whole_read_does() {
    // A session read with row ranges and every column is decoded by column groups on parallel
    // threads (on a machine with more than one core); every column must come back as a whole
    // read of the store (no ranges, one reader) returns it.
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), manual().with_row_group_rows(16)).unwrap();
    for trace in 0..24u32 {
        let name = format!("s{}", trace % 4);
        let mut batch = spans(
            trace,
            0,
            7,
            &format!("svc-{}", trace % 3),
            Own {
                session: Some(&name),
                ..Own::default()
            },
        );
        if trace == 5 {
            // Trace 5's spans arrive without keys and are sealed; its key comes later.
            batch = spans(trace, 0, 7, "svc-late", Own::default());
        }
        engine.write(batch).unwrap();
    }
    engine.seal().unwrap();
    engine
        .write(spans(
            5,
            7,
            1,
            "svc-late",
            Own {
                session: Some("s1"),
                ..Own::default()
            },
        ))
        .unwrap();
    engine.seal().unwrap();

    let all = concat(&engine.scan(&ScanRequest::default()).unwrap());
    assert_eq!(all.num_rows(), 24 * 7 + 1);
    // Every read below is split on a machine with more than one core.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let read_split = |request: &ScanRequest| {
        let plan = engine.plan_scan(request).unwrap();
        let metrics = plan.metrics();
        let read = concat(&plan.collect().unwrap());
        assert_eq!(
            metrics.snapshot().split_reads > 0,
            cores > 1,
            "split on {cores} cores"
        );
        read
    };
    for session_name in ["s0", "s1", "s3"] {
        let read = read_split(&session(session_name));
        let expected = of_session(&all, session_name);
        // 6 traces of 7 spans per session; in s1, trace 5 has 8 spans (7 keyed late).
        let traces_rows = if session_name == "s1" {
            5 * 7 + 8
        } else {
            6 * 7
        };
        assert_eq!(read.num_rows(), traces_rows, "{session_name}");
        assert_eq!(read, expected, "{session_name}");
    }

    // A caller's filter on a point read: the rows it keeps, and its own error when it fails.
    let name_index = engine::span_schema()
        .index_of(columns::SERVICE_NAME)
        .unwrap();
    let keep_svc0: Arc<engine::agent::KeepRows> = Arc::new(|batch: &RecordBatch| {
        Ok(batch
            .column(0)
            .as_string::<i32>()
            .iter()
            .map(|name| Some(name == Some("svc-0")))
            .collect())
    });
    let mut request = session("s0");
    request.row_filter = Some(engine::agent::RowPredicate {
        columns: vec![name_index],
        keep: keep_svc0,
    });
    let read = read_split(&request);
    let expected = of_session(&all, "s0");
    let names = expected
        .column_by_name(columns::SERVICE_NAME)
        .unwrap()
        .as_string::<i32>();
    let keep: arrow::array::BooleanArray = names
        .iter()
        .map(|name| Some(name == Some("svc-0")))
        .collect();
    let expected = arrow::compute::filter_record_batch(&expected, &keep).unwrap();
    assert!(expected.num_rows() > 0);
    assert_eq!(read, expected);
    // A filter that answers differently each time it is asked is asked once: the rows it kept
    // the first time, every column of them from those rows.
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    request.row_filter = Some(engine::agent::RowPredicate {
        columns: vec![name_index],
        keep: Arc::new(move |batch: &RecordBatch| {
            let call = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok((0..batch.num_rows())
                .map(|row| Some((row + call).is_multiple_of(2)))
                .collect())
        }),
    });
    let read = read_split(&request);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    let expected = of_session(&all, "s0");
    let even: arrow::array::BooleanArray = (0..expected.num_rows())
        .map(|row| Some(row % 2 == 0))
        .collect();
    assert_eq!(
        read,
        arrow::compute::filter_record_batch(&expected, &even).unwrap()
    );
    request.row_filter = Some(engine::agent::RowPredicate {
        columns: vec![name_index],
        keep: Arc::new(|_: &RecordBatch| Err("the filter says no".to_owned())),
    });
    let error = engine.scan(&request).unwrap_err();
    assert!(
        matches!(&error, engine::Error::Filter(message) if message == "the filter says no"),
        "{error:?}"
    );
}
