//! A small agent-trace store: 6 traces over 3 services, two sealed segments and the rest in
//! the memtable.
//!
//! Trace `t` (0..6) starts at 2024-05-01T00:00:00Z + `t` hours and has:
//! - a root `invoke_agent` span (service `planner`);
//! - `t % 2 + 1` `execute_tool` spans (service `tools`), the first with
//!   `gen_ai.tool.name = search`, the second with `calculator`; from trace 1 on, each links
//!   to the root span of trace `t - 1`;
//! - one `chat` span (service `llm`) with two events, `prompt` and `completion`.
//!
//! Traces 0-1 are sealed into the first segment, 2-3 into the second, 4-5 stay in the
//! memtable. Totals: 21 spans (planner 6, tools 9, llm 6), 12 events, 8 links.

use std::borrow::Cow;
use std::sync::Arc;

use engine::{Engine, EventRecord, LinkRecord, SpanBatchBuilder, SpanId, SpanRecord, TraceId};
use query::{Options, QueryOutput, SqlEngine};
use serde_json::Value;
use tempfile::TempDir;

/// Nanoseconds of 2024-05-01T00:00:00Z.
pub(crate) const BASE_TIME: i64 = 1_714_521_600_000_000_000;
/// One hour in nanoseconds.
pub(crate) const HOUR: i64 = 3_600_000_000_000;
/// Number of traces.
pub(crate) const TRACES: u8 = 6;

pub(crate) struct Fixture {
    // Dropped last: the engine must close before the directory goes away.
    pub(crate) sql: SqlEngine,
    pub(crate) engine: Arc<Engine>,
    _dir: TempDir,
}

pub(crate) fn trace_id(trace: u8) -> TraceId {
    TraceId([trace.wrapping_add(0xa0); 16])
}

pub(crate) fn trace_hex(trace: u8) -> String {
    trace_id(trace).to_string()
}

pub(crate) fn root_span(trace: u8) -> SpanId {
    SpanId([trace, 0, 0, 0, 0, 0, 0, 1])
}

fn tool_span(trace: u8, index: u8) -> SpanId {
    SpanId([trace, 0, 0, 0, 0, 0, 1, index])
}

fn chat_span(trace: u8) -> SpanId {
    SpanId([trace, 0, 0, 0, 0, 0, 2, 0])
}

/// Appends every span of `trace`.
fn append_trace(builder: &mut SpanBatchBuilder, trace: u8) {
    let start = BASE_TIME + i64::from(trace) * HOUR;
    let id = trace_id(trace);
    builder.append(&SpanRecord {
        trace_id: id,
        span_id: root_span(trace),
        name: "invoke_agent",
        kind: 1,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 10_000,
        service_name: Some("planner"),
        attributes: &[("gen_ai.operation.name", Cow::Borrowed("invoke_agent"))],
        ..SpanRecord::default()
    });
    let tools = ["search", "calculator"];
    let links = [LinkRecord {
        trace_id: trace_id(trace.wrapping_sub(1)),
        span_id: root_span(trace.wrapping_sub(1)),
        trace_state: "",
        flags: 1,
        attributes: vec![("link.reason", Cow::Borrowed("retry"))],
        dropped_attributes_count: 0,
    }];
    for index in 0..(trace % 2 + 1) {
        let attributes = [
            ("gen_ai.operation.name", Cow::Borrowed("execute_tool")),
            ("gen_ai.tool.name", Cow::Borrowed(tools[usize::from(index)])),
        ];
        builder.append(&SpanRecord {
            trace_id: id,
            span_id: tool_span(trace, index),
            parent_span_id: Some(root_span(trace)),
            name: "execute_tool",
            kind: 1,
            start_time_unix_nano: start + 1_000 + i64::from(index),
            end_time_unix_nano: start + 2_000,
            status_code: if index == 1 { 2 } else { 1 },
            service_name: Some("tools"),
            attributes: &attributes,
            links: if trace > 0 { &links } else { &[] },
            ..SpanRecord::default()
        });
    }
    let events = [
        EventRecord {
            time_unix_nano: start + 3_100,
            name: "prompt",
            attributes: vec![("gen_ai.prompt.tokens", Cow::Borrowed("12"))],
            dropped_attributes_count: 0,
        },
        EventRecord {
            time_unix_nano: start + 3_900,
            name: "completion",
            attributes: vec![(
                "gen_ai.completion.tokens",
                Cow::Owned((trace * 10).to_string()),
            )],
            dropped_attributes_count: 1,
        },
    ];
    builder.append(&SpanRecord {
        trace_id: id,
        span_id: chat_span(trace),
        parent_span_id: Some(root_span(trace)),
        name: "chat",
        kind: 3,
        start_time_unix_nano: start + 3_000,
        end_time_unix_nano: start + 4_000,
        service_name: Some("llm"),
        attributes: &[("gen_ai.request.model", Cow::Borrowed("gpt-4o"))],
        events: &events,
        ..SpanRecord::default()
    });
}

impl Fixture {
    pub(crate) fn new() -> Self {
        Self::with_options(Options::default())
    }

    pub(crate) fn with_options(options: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(
            Engine::open(
                dir.path(),
                engine::Options::default().with_background_sealing(false),
            )
            .unwrap(),
        );
        for traces in [0..2, 2..4] {
            let mut builder = SpanBatchBuilder::new();
            for trace in traces {
                append_trace(&mut builder, trace);
            }
            engine.write(builder.finish()).unwrap();
            engine.seal().unwrap();
        }
        let mut builder = SpanBatchBuilder::new();
        for trace in 4..TRACES {
            append_trace(&mut builder, trace);
        }
        engine.write(builder.finish()).unwrap();
        assert_eq!(engine.stats().segments, 2);
        assert_eq!(engine.stats().memtable_rows, 7);
        let sql = SqlEngine::new(Arc::clone(&engine), options).unwrap();
        Fixture {
            sql,
            engine,
            _dir: dir,
        }
    }

    pub(crate) async fn query(&self, sql: &str) -> QueryOutput {
        match self.sql.execute(sql).await {
            Ok(output) => output,
            Err(error) => panic!("{sql}: {error:?}"),
        }
    }

    /// The result rows as JSON values.
    pub(crate) async fn rows(&self, sql: &str) -> Vec<Value> {
        let output = self.query(sql).await;
        match query::format::to_json(&output)["rows"].take() {
            Value::Array(rows) => rows,
            other => panic!("rows are not an array: {other}"),
        }
    }

    /// The text of an EXPLAIN's plan column, all lines.
    pub(crate) async fn plan(&self, sql: &str) -> String {
        let output = self.query(sql).await;
        let json = query::format::to_json(&output);
        json["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| format!("{}\n{}", row[0].as_str().unwrap(), row[1].as_str().unwrap()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
