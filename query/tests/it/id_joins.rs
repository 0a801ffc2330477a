//! Semi- and anti-joins on span and trace ids (planned as `IdSetJoinExec`), checked against
//! answers computed from the spans as they were written.
//!
//! The store has the shapes real exporters produce: children whose parent never arrives, a
//! parent id that exists only in another trace, parents that arrive in a later export (after
//! their children were sealed), exports sent twice, spread over three segments and the memtable.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use engine::{Engine, SpanBatchBuilder, SpanId, SpanRecord, TraceId};
use query::{Options, SqlEngine};
use serde_json::json;

/// One written span: trace, span, parent, name (each copy of a re-sent span is listed).
type Written = ([u8; 16], [u8; 8], Option<[u8; 8]>, &'static str);

/// splitmix64: a seeded stream of numbers, independent of the code under test.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes 400 traces in 4 exports (the first three sealed); returns every span written.
fn store(dir: &std::path::Path) -> (Arc<Engine>, Vec<Written>) {
    let engine = Arc::new(
        Engine::open(
            dir,
            engine::Options::default().with_background_sealing(false),
        )
        .unwrap(),
    );
    let mut random = Seeded(7);
    let mut exports: Vec<Vec<Written>> = vec![Vec::new(); 4];
    let mut foreign_span = None;
    for _ in 0..400u32 {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&random.next().to_le_bytes());
        trace_id[8..].copy_from_slice(&random.next().to_le_bytes());
        let export = random.below(3) as usize;
        let root = random.next().to_le_bytes();
        let mut spans = vec![root];
        // The root: usually with its children; sometimes late (the last export), sometimes
        // never sent.
        match random.below(10) {
            0 => exports[3].push((trace_id, root, None, "invoke_agent")),
            1 => {}
            _ => exports[export].push((trace_id, root, None, "invoke_agent")),
        }
        for _ in 0..1 + random.below(4) {
            let span = random.next().to_le_bytes();
            let parent = match random.below(12) {
                // A parent that was never sent.
                0 => random.next().to_le_bytes(),
                // A parent id that is a span of another trace only.
                1 => foreign_span.unwrap_or(root),
                _ => spans[random.below(spans.len() as u64) as usize],
            };
            let name = if random.below(20) == 0 {
                "marker"
            } else {
                "execute_tool"
            };
            exports[export].push((trace_id, span, Some(parent), name));
            spans.push(span);
        }
        foreign_span = Some(spans[spans.len() - 1]);
    }
    // Exports re-sent after a timeout: a copy of every fifth span of the first export arrives
    // again in the second, and of the third in the fourth.
    let again: Vec<Written> = exports[0].iter().step_by(5).copied().collect();
    exports[1].extend(again);
    let again: Vec<Written> = exports[2].iter().step_by(5).copied().collect();
    exports[3].extend(again);
    let mut written = Vec::new();
    for (index, export) in exports.iter().enumerate() {
        let mut builder = SpanBatchBuilder::new();
        for (trace, span, parent, name) in export {
            builder.append(&SpanRecord {
                trace_id: TraceId(*trace),
                span_id: SpanId(*span),
                parent_span_id: parent.map(SpanId),
                name,
                kind: 1,
                start_time_unix_nano: 1_714_521_600_000_000_000 + written.len() as i64,
                end_time_unix_nano: 1_714_521_600_000_001_000 + written.len() as i64,
                service_name: Some("agent"),
                ..SpanRecord::default()
            });
        }
        engine.write(builder.finish()).unwrap();
        if index < 3 {
            engine.seal().unwrap();
        }
        written.extend(export.iter().copied());
    }
    assert_eq!(engine.stats().segments, 3);
    (engine, written)
}

async fn count(sql: &SqlEngine, query: &str) -> u64 {
    let plan = query::format::to_json(&sql.execute(&format!("EXPLAIN {query}")).await.unwrap());
    assert!(
        plan.to_string().contains("IdSetJoinExec"),
        "{query}: {plan}"
    );
    let output = sql.execute(query).await.unwrap();
    query::format::to_json(&output)["rows"][0][0]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn id_joins_answer_as_the_spans_written() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, written) = store(dir.path());
    let sql = SqlEngine::new(Arc::clone(&engine), Options::default()).unwrap();
    let present: HashSet<([u8; 16], [u8; 8])> = written
        .iter()
        .map(|(trace, span, ..)| (*trace, *span))
        .collect();
    let has_parent = |(trace, _, parent, _): &&Written| {
        parent.is_some_and(|parent| present.contains(&(*trace, parent)))
    };

    // docs query 7a: each orphan once, in order, though re-sent copies are stored twice.
    let orphans: BTreeSet<(String, String)> = written
        .iter()
        .filter(|row| row.2.is_some() && !has_parent(row))
        .map(|(trace, span, ..)| (hex(trace), hex(span)))
        .collect();
    assert!(orphans.len() > 20, "{}", orphans.len());
    let orphan_spans = query::monitoring::question("orphan_spans").unwrap().sql;
    let plan = query::format::to_json(
        &sql.execute(&format!("EXPLAIN {orphan_spans}"))
            .await
            .unwrap(),
    );
    let text = plan.to_string();
    assert!(
        text.contains("IdSetJoinExec: join_type=RightAnti"),
        "{plan}"
    );
    // The join drops the roots (no parent) itself: no filter copies the other rows.
    assert!(
        text.contains("null_keys=dropped") && !text.contains("FilterExec"),
        "{plan}"
    );
    let rows = query::format::to_json(&sql.execute(orphan_spans).await.unwrap())["rows"].clone();
    let found: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row[0].as_str().unwrap().into(),
                row[1].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(found, orphans.into_iter().collect::<Vec<_>>());

    // Without `parent_span_id IS NOT NULL`, an anti-join keeps the roots: their NULL parent
    // matches nothing.
    let roots = written.iter().filter(|row| row.2.is_none()).count() as u64;
    let orphan_copies = written
        .iter()
        .filter(|row| row.2.is_some() && !has_parent(row))
        .count() as u64;
    let parent_in_trace = "SELECT 1 FROM spans p \
                           WHERE p.trace_id = s.trace_id AND p.span_id = s.parent_span_id";
    let spans_where = |condition: String| format!("SELECT count(*) FROM spans s WHERE {condition}");
    assert_eq!(
        count(
            &sql,
            &spans_where(format!("NOT EXISTS ({parent_in_trace})"))
        )
        .await,
        roots + orphan_copies
    );

    // EXISTS: every stored copy whose parent is in its trace.
    let with_parent = written.iter().filter(has_parent).count() as u64;
    assert_eq!(
        count(&sql, &spans_where(format!("EXISTS ({parent_in_trace})"))).await,
        with_parent
    );
    // NOT EXISTS with the NULLs on the set side (roots have no parent): spans no one names as
    // parent in their trace.
    let parents: HashSet<([u8; 16], [u8; 8])> = written
        .iter()
        .filter_map(|(trace, _, parent, _)| parent.map(|parent| (*trace, parent)))
        .collect();
    let leaves = written
        .iter()
        .filter(|(trace, span, ..)| !parents.contains(&(*trace, *span)))
        .count() as u64;
    assert_eq!(
        count(
            &sql,
            "SELECT count(*) FROM spans s WHERE NOT EXISTS (SELECT 1 FROM spans c \
             WHERE c.trace_id = s.trace_id AND c.parent_span_id = s.span_id)"
        )
        .await,
        leaves
    );
    // IN on the trace id alone: the spans of traces with a marker span.
    let marked: HashSet<[u8; 16]> = written
        .iter()
        .filter(|row| row.3 == "marker")
        .map(|row| row.0)
        .collect();
    let in_marked = written.iter().filter(|row| marked.contains(&row.0)).count() as u64;
    assert!(in_marked > 0 && in_marked < written.len() as u64);
    assert_eq!(
        count(
            &sql,
            "SELECT count(*) FROM spans WHERE trace_id IN \
             (SELECT trace_id FROM spans WHERE span_name = 'marker')"
        )
        .await,
        in_marked
    );
    // A parent id matched without its trace would find the foreign parents: there are some.
    let all_spans: HashSet<[u8; 8]> = written.iter().map(|row| row.1).collect();
    let foreign = written
        .iter()
        .filter(|row| !has_parent(row) && row.2.is_some_and(|p| all_spans.contains(&p)))
        .count();
    assert!(foreign > 0);
    assert_eq!(
        count(
            &sql,
            "SELECT count(*) FROM spans s WHERE EXISTS (SELECT 1 FROM spans p \
             WHERE p.span_id = s.parent_span_id)"
        )
        .await,
        with_parent + foreign as u64
    );
    // The set's memory counts against the query's budget: too small a budget fails the query
    // with "resources exhausted" naming the join, before the set is held.
    let small = SqlEngine::new(
        Arc::clone(&engine),
        Options::default().with_memory_limit(16 << 10),
    )
    .unwrap();
    let exists = "SELECT count(*) FROM spans s WHERE EXISTS (SELECT 1 FROM spans p \
                  WHERE p.trace_id = s.trace_id AND p.span_id = s.parent_span_id)";
    match small.execute(exists).await {
        Err(query::Error::ResourcesExhausted(message)) => {
            assert!(message.contains("IdSetJoinExec"), "{message}")
        }
        other => panic!(
            "expected resources exhausted, got {:?}",
            other.map(|o| o.num_rows())
        ),
    }

    // `spans` keeps every copy.
    let total = sql.execute("SELECT count(*) FROM spans").await.unwrap();
    assert_eq!(
        query::format::to_json(&total)["rows"],
        json!([[written.len()]])
    );
}
