//! The content store: dedup, reads, expiry per tier, capture off, reopen.

use engine::{
    ContentBatch, ContentExpiryRequest, ContentPiece, ContentRef, ContentValue, Engine, Options,
    SpanId, TraceId,
};

/// Writes `batch` with one span row per (trace, span) its references name (references live
/// in their spans' rows), keeping its store clock.
trait PutContent {
    fn put_content(&self, batch: &ContentBatch) -> engine::Result<u64>;
}

impl PutContent for Engine {
    fn put_content(&self, batch: &ContentBatch) -> engine::Result<u64> {
        let mut builder = engine::SpanBatchBuilder::new();
        let mut seen = std::collections::HashSet::new();
        for reference in &batch.refs {
            if seen.insert((reference.trace_id, reference.span_id)) {
                builder.append(&engine::SpanRecord {
                    trace_id: reference.trace_id,
                    span_id: reference.span_id,
                    name: "chat",
                    kind: 1,
                    start_time_unix_nano: 1,
                    end_time_unix_nano: 2,
                    ..engine::SpanRecord::default()
                });
            }
        }
        self.write_batch(engine::WriteBatch {
            spans: builder.finish(),
            content: batch.clone(),
        })
    }
}

fn open(dir: &std::path::Path) -> Engine {
    Engine::open(dir, Options::default().with_background_sealing(false)).unwrap()
}

fn reference(trace: u8, span: u8, key: &str, blobs: &[[u8; 32]], tier: Option<&str>) -> ContentRef {
    let mut pieces = vec![ContentPiece::Literal("[".into())];
    for (index, hash) in blobs.iter().enumerate() {
        if index > 0 {
            pieces.push(ContentPiece::Literal(",".into()));
        }
        pieces.push(ContentPiece::Blob(*hash));
    }
    pieces.push(ContentPiece::Literal("]".into()));
    ContentRef {
        trace_id: TraceId([trace; 16]),
        span_id: SpanId([span; 8]),
        key: key.into(),
        digest: [trace ^ span; 32],
        form: 0,
        pieces: Some(pieces),
        tier: tier.map(str::to_owned),
    }
}

#[test]
fn blobs_are_stored_once_and_values_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let a = ([1; 32], "\"first\"".to_owned());
    let b = ([2; 32], "\"second\"".to_owned());
    engine
        .put_content(&ContentBatch {
            blobs: vec![a.clone()],
            refs: vec![reference(1, 1, "gen_ai.input.messages", &[a.0], None)],
            stored_unix_nanos: 10,
        })
        .unwrap();
    engine
        .put_content(&ContentBatch {
            blobs: vec![a.clone(), b.clone()],
            refs: vec![reference(1, 2, "gen_ai.input.messages", &[a.0, b.0], None)],
            stored_unix_nanos: 20,
        })
        .unwrap();
    let stats = engine.content_stats().unwrap();
    assert_eq!((stats.messages, stats.references), (2, 2));
    let rows = engine.content_for_trace(&TraceId([1; 16])).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].value, ContentValue::Present("[\"first\"]".into()));
    assert_eq!(
        rows[1].value,
        ContentValue::Present("[\"first\",\"second\"]".into())
    );
    assert!(
        engine
            .content_for_trace(&TraceId([9; 16]))
            .unwrap()
            .is_empty()
    );

    // Reopen: everything is durable.
    engine.close().unwrap();
    drop(engine);
    let engine = open(dir.path());
    assert_eq!(engine.scan_content(None).unwrap().len(), 2);
}

#[test]
fn a_content_segment_expires_whole_once_its_newest_reference_is_past_the_keep() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let old = ([1; 32], "old".to_owned());
    let shared = ([2; 32], "shared".to_owned());
    let later = ([3; 32], "later".to_owned());
    engine
        .put_content(&ContentBatch {
            blobs: vec![old.clone(), shared.clone()],
            refs: vec![reference(1, 1, "k", &[old.0, shared.0], None)],
            stored_unix_nanos: 10,
        })
        .unwrap();
    // A dry run counts memtable content as the segment a seal would write.
    assert_eq!(engine.expire_content(u64::MAX, true).unwrap().messages, 2);
    assert_eq!(engine.expire_content(5, false).unwrap().messages, 0);
    engine.seal().unwrap();
    // The shared blob is referenced again at 20: its segment is not stored again, it is kept
    // until 20 is past the keep.
    engine
        .put_content(&ContentBatch {
            blobs: vec![shared.clone()],
            refs: vec![reference(2, 1, "k", &[shared.0], None)],
            stored_unix_nanos: 20,
        })
        .unwrap();
    engine
        .put_content(&ContentBatch {
            blobs: vec![later.clone()],
            refs: vec![reference(3, 1, "k", &[later.0], None)],
            stored_unix_nanos: 30,
        })
        .unwrap();
    engine.seal().unwrap();
    assert_eq!(engine.content_stats().unwrap().messages, 3);
    assert_eq!(engine.expire_content(15, false).unwrap().messages, 0);
    let dry = engine.expire_content(25, true).unwrap();
    assert_eq!(dry.messages, 2);
    assert!(dry.bytes > 0);
    assert_eq!(engine.content_stats().unwrap().messages, 3);
    let done = engine.expire_content(25, false).unwrap();
    assert_eq!(done, dry);
    assert_eq!(engine.content_stats().unwrap().messages, 1);
    let first = engine.content_for_trace(&TraceId([1; 16])).unwrap();
    assert_eq!(first[0].value, ContentValue::Expired { digest: [0; 32] });
    let second = engine.content_for_trace(&TraceId([2; 16])).unwrap();
    assert_eq!(second[0].value, ContentValue::Expired { digest: [3; 32] });
    let third = engine.content_for_trace(&TraceId([3; 16])).unwrap();
    assert_eq!(third[0].value, ContentValue::Present("[later]".into()));
    // Expired segments' files are gone; reopening reads the same.
    drop(engine);
    let engine = open(dir.path());
    assert_eq!(engine.content_stats().unwrap().messages, 1);
    let third = engine.content_for_trace(&TraceId([3; 16])).unwrap();
    assert_eq!(third[0].value, ContentValue::Present("[later]".into()));
    assert_eq!(engine.expire_content(35, false).unwrap().messages, 1);
    assert_eq!(engine.content_stats().unwrap().references, 3);
    let files = std::fs::read_dir(dir.path().join("content"))
        .unwrap()
        .count();
    assert_eq!(files, 0);
}

#[test]
fn a_blob_referenced_again_long_after_its_segment_is_stored_again() {
    // One hot blob (a system prompt every run sends) must not keep a whole segment of
    // otherwise expired content alive: past an hour it is stored again with the new reference.
    const HOUR: u64 = 3_600 * 1_000_000_000;
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let system = ([1; 32], "system prompt".to_owned());
    let question = ([2; 32], "question".to_owned());
    engine
        .put_content(&ContentBatch {
            blobs: vec![system.clone(), question.clone()],
            refs: vec![reference(1, 1, "k", &[system.0, question.0], None)],
            stored_unix_nanos: 10,
        })
        .unwrap();
    engine.seal().unwrap();
    engine
        .put_content(&ContentBatch {
            blobs: vec![system.clone()],
            refs: vec![reference(2, 1, "k", &[system.0], None)],
            stored_unix_nanos: 10 + 2 * HOUR,
        })
        .unwrap();
    engine.seal().unwrap();
    // The first segment's newest reference is at 10: it goes, and with it the question (one
    // message); the prompt stays readable from its new segment.
    assert_eq!(engine.expire_content(HOUR, false).unwrap().messages, 1);
    let rows = engine.content_for_trace(&TraceId([2; 16])).unwrap();
    assert_eq!(
        rows[0].value,
        ContentValue::Present("[system prompt]".into())
    );
    let rows = engine.content_for_trace(&TraceId([1; 16])).unwrap();
    assert!(matches!(rows[0].value, ContentValue::Expired { .. }));
}

#[test]
fn a_longer_tier_keep_holds_blobs_its_spans_reference() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let plain = ([1; 32], "plain".to_owned());
    let kept = ([2; 32], "kept".to_owned());
    engine
        .put_content(&ContentBatch {
            blobs: vec![plain.clone(), kept.clone()],
            refs: vec![
                reference(1, 1, "k", &[plain.0], None),
                reference(1, 2, "k", &[kept.0], Some("decision")),
            ],
            stored_unix_nanos: 10,
        })
        .unwrap();
    engine.seal().unwrap();
    let request = ContentExpiryRequest::new(100).with_tier("decision", 5);
    assert_eq!(engine.expire_content_with(&request).unwrap().messages, 1);
    let rows = engine.content_for_trace(&TraceId([1; 16])).unwrap();
    assert!(matches!(rows[0].value, ContentValue::Expired { .. }));
    assert_eq!(rows[1].value, ContentValue::Present("[kept]".into()));
}

#[test]
fn references_without_capture_read_as_not_captured() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let mut digest_only = reference(1, 1, "k", &[], None);
    digest_only.pieces = None;
    engine
        .put_content(&ContentBatch {
            blobs: Vec::new(),
            refs: vec![digest_only],
            stored_unix_nanos: 1,
        })
        .unwrap();
    let rows = engine.content_for_trace(&TraceId([1; 16])).unwrap();
    assert_eq!(rows[0].value, ContentValue::NotCaptured { digest: [0; 32] });
    assert_eq!(engine.content_stats().unwrap().messages, 0);
    let key = engine.content_digest_key().unwrap();
    assert_eq!(engine.content_digest_key().unwrap(), key);
}

mod resend {
    //! Any mixture of re-sent exports, history extensions and changed values leaves every
    //! content value readable exactly as sent: one row per (span, key, value), nothing else
    //! (issue 11: a re-sent export used to write a base-pointer cycle that failed every later
    //! content read).

    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    use super::*;

    const KEYS: [&str; 2] = ["gen_ai.input.messages", "gen_ai.output.messages"];

    /// Message `n` of the conversation, or of the changed variant.
    fn message(n: usize, variant: u8) -> ([u8; 32], String) {
        let text = format!("{{\"role\":\"user\",\"n\":{n},\"v\":{variant}}}");
        (Sha256::digest(text.as_bytes()).into(), text)
    }

    /// The value a span carries: the history up to its turn (two messages per turn, so that
    /// consecutive turns share a prefix long enough to be stored as a pointer); the changed
    /// variant ends with a message of its own.
    fn value(span: u8, key: usize, variant: u8) -> Vec<([u8; 32], String)> {
        let turns = 2 * usize::from(span) + 3 + key;
        (0..turns)
            .map(|n| message(n, if n + 1 == turns { variant } else { 0 }))
            .collect()
    }

    fn export(sends: &[(u8, usize, u8)], stored: u64) -> (ContentBatch, Vec<(Vec<u8>, String)>) {
        let mut batch = ContentBatch {
            stored_unix_nanos: stored,
            ..ContentBatch::default()
        };
        let mut texts = Vec::new();
        for &(span, key, variant) in sends {
            let messages = value(span, key, variant);
            let mut pieces = vec![ContentPiece::Literal("[".into())];
            let mut text = "[".to_owned();
            for (index, (hash, message)) in messages.iter().enumerate() {
                if index > 0 {
                    pieces.push(ContentPiece::Literal(",".into()));
                    text.push(',');
                }
                pieces.push(ContentPiece::Blob(*hash));
                text.push_str(message);
                batch.blobs.push((*hash, message.clone()));
            }
            pieces.push(ContentPiece::Literal("]".into()));
            text.push(']');
            batch.refs.push(ContentRef {
                trace_id: TraceId([7; 16]),
                span_id: SpanId([span; 8]),
                key: KEYS[key].into(),
                digest: Sha256::digest(text.as_bytes()).into(),
                form: 0,
                pieces: Some(pieces),
                tier: None,
            });
            let mut id = vec![span];
            id.extend_from_slice(KEYS[key].as_bytes());
            texts.push((id, text));
        }
        (batch, texts)
    }

    fn sends() -> impl Strategy<Value = Vec<(u8, usize, u8)>> {
        // Mostly the one value of each span; one send in eight carries a changed value.
        proptest::collection::vec(
            (
                1u8..=6,
                0usize..2,
                prop_oneof![7 => Just(0u8), 1 => Just(1u8)],
            ),
            1..6,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn every_value_reads_back_after_any_mix_of_resends_and_extensions(
            exports in proptest::collection::vec(sends(), 1..5),
            order in proptest::collection::vec(0usize..5, 1..12),
            reopen in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut engine = open(dir.path());
            let mut expected: BTreeMap<Vec<u8>, BTreeSet<String>> = BTreeMap::new();
            for (step, index) in order.iter().enumerate() {
                let sends = &exports[index % exports.len()];
                let (batch, texts) = export(sends, 10 + step as u64);
                engine.put_content(&batch).unwrap();
                for (id, text) in texts {
                    expected.entry(id).or_default().insert(text);
                }
                if reopen && step == order.len() / 2 {
                    drop(engine);
                    engine = open(dir.path());
                }
            }
            let rows = engine.content_for_trace(&TraceId([7; 16])).unwrap();
            let mut got: BTreeMap<Vec<u8>, BTreeSet<String>> = BTreeMap::new();
            let count = rows.len();
            for row in rows {
                let mut id = vec![row.span_id.0[0]];
                id.extend_from_slice(row.key.as_bytes());
                match row.value {
                    ContentValue::Present(text) => {
                        got.entry(id).or_default().insert(text);
                    }
                    other => panic!("{id:?}: {other:?}"),
                }
            }
            // No value twice.
            prop_assert_eq!(count, got.values().map(BTreeSet::len).sum::<usize>());
            prop_assert_eq!(got, expected);
            // The whole-store read (the `content` table) answers too.
            prop_assert!(engine.scan_content(None).is_ok());
        }
    }

    #[test]
    fn the_same_export_twice_stays_readable() {
        // The report's case: two chat spans, the second's input extending the first's, sent
        // twice.
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path());
        let (batch, texts) = export(&[(1, 0, 0), (2, 0, 0)], 10);
        engine.put_content(&batch).unwrap();
        engine.put_content(&batch).unwrap();
        let rows = engine.content_for_trace(&TraceId([7; 16])).unwrap();
        let got: Vec<String> = rows
            .into_iter()
            .map(|row| match row.value {
                ContentValue::Present(text) => text,
                other => panic!("{other:?}"),
            })
            .collect();
        let want: Vec<String> = texts.into_iter().map(|(_, text)| text).collect();
        assert_eq!(got, want);
        // The first rows alone, in the same order.
        let all = engine.scan_content(None).unwrap();
        assert_eq!(all.len(), 2);
        for limit in 0..=3 {
            let first = engine
                .scan_content_with(&engine::ContentScan::new().limit(limit))
                .unwrap();
            assert_eq!(first, all[..limit.min(2)].to_vec(), "limit {limit}");
        }
        // Statuses alone: the same rows, present values without their text.
        let statuses = engine
            .scan_content_with(&engine::ContentScan::new().status_only())
            .unwrap();
        assert_eq!(statuses.len(), 2);
        for (status, full) in statuses.iter().zip(&all) {
            assert_eq!((status.span_id, &status.key), (full.span_id, &full.key));
            assert_eq!(status.value, ContentValue::Present(String::new()));
        }
        // A bound on the text read: the first value's length passes, one byte less fails.
        let first_len = match &all[0].value {
            ContentValue::Present(text) => text.len(),
            other => panic!("{other:?}"),
        };
        let bounded = |bytes| {
            engine.scan_content_with(&engine::ContentScan::new().limit(1).max_text_bytes(bytes))
        };
        assert_eq!(bounded(first_len).unwrap(), all[..1].to_vec());
        let error = bounded(first_len - 1).unwrap_err();
        assert!(matches!(error, engine::Error::TooLarge { .. }), "{error}");
        assert_eq!(error.kind(), engine::ErrorKind::Caller);
    }
}

mod promotion {
    //! Content follows its trace's tier (issue 11): content stored before a rule placed a
    //! span of the trace in a longer-kept tier, and content stored after, both get that
    //! tier's content keep.

    use engine::{ContentExpiryRequest, SpanBatchBuilder, SpanRecord, with_retention_tiers};

    use super::*;

    fn span(trace: u8, span: u8, tier: Option<&str>) -> arrow::array::RecordBatch {
        let mut builder = SpanBatchBuilder::new();
        builder.append(&SpanRecord {
            trace_id: TraceId([trace; 16]),
            span_id: SpanId([span; 8]),
            name: "step",
            kind: 1,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            ..SpanRecord::default()
        });
        with_retention_tiers(&builder.finish(), &[tier]).unwrap()
    }

    fn blob(n: u8) -> ([u8; 32], String) {
        ([n; 32], format!("\"message {n}\""))
    }

    /// One content value of `trace`'s span `span`: blob `n` under `key`, stored at `stored`.
    fn message(trace: u8, span: u8, n: u8, key: &str, stored: u64) -> ContentBatch {
        ContentBatch {
            blobs: vec![blob(n)],
            refs: vec![reference(trace, span, key, &[blob(n).0], None)],
            stored_unix_nanos: stored,
        }
    }

    /// After a restart, trace 1's one message is still there, and goes once the decision
    /// tier's content keep passes.
    fn kept_across_a_restart_until_the_decision_keep(dir: &std::path::Path, engine: Engine) {
        drop(engine);
        let engine = open(dir);
        assert_eq!(present(&engine, 1), vec![true]);
        let request = ContentExpiryRequest::new(100).with_tier("decision", 100);
        assert_eq!(engine.expire_content_with(&request).unwrap().messages, 1);
        assert_eq!(present(&engine, 1), vec![false]);
    }

    fn present(engine: &Engine, trace: u8) -> Vec<bool> {
        engine
            .content_for_trace(&TraceId([trace; 16]))
            .unwrap()
            .into_iter()
            .map(|row| matches!(row.value, ContentValue::Present(_)))
            .collect()
    }

    #[test]
    fn content_stored_before_and_after_a_promotion_gets_the_promoted_tiers_keep() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path());
        // Traces 1 and 2 each store a prompt (default tier) with their first span.
        for trace in [1u8, 2] {
            engine
                .put_content(&message(trace, 1, trace, "input.value", 10))
                .unwrap();
            engine.write(span(trace, 1, None)).unwrap();
        }
        // Trace 1's later span is a decision: the trace moves to the decision tier.
        engine.write(span(1, 2, Some("decision"))).unwrap();
        // Content of trace 1 stored after the promotion, by a default-tier span.
        engine
            .put_content(&message(1, 3, 3, "output.value", 20))
            .unwrap();

        engine.seal().unwrap();
        // Default content keep past everything; the decision tier's keep past nothing.
        let request = ContentExpiryRequest::new(100).with_tier("decision", 5);
        let expired = engine.expire_content_with(&request).unwrap();
        assert_eq!(expired.messages, 1, "only trace 2's prompt");
        assert_eq!(present(&engine, 1), vec![true, true]);
        assert_eq!(present(&engine, 2), vec![false]);
        // The decision tier's keep, once past, removes them.
        let request = ContentExpiryRequest::new(100).with_tier("decision", 100);
        assert_eq!(engine.expire_content_with(&request).unwrap().messages, 2);
        assert_eq!(present(&engine, 1), vec![false, false]);
    }

    #[test]
    fn content_written_with_the_decision_that_promotes_its_trace_gets_the_promoted_keep() {
        // One write: a default-tier chat span with its prompt and a decision span of the same
        // trace. Every row of the trace is in that write, so the prompt is staged at the
        // decision tier at once (no later scan of the trace's rows). Trace 2, the same without
        // the decision, keeps the default keep.
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path());
        for (trace, decision) in [(1u8, true), (2, false)] {
            let mut rows = vec![span(trace, 1, None)];
            if decision {
                rows.push(span(trace, 2, Some("decision")));
            }
            let spans = arrow::compute::concat_batches(&rows[0].schema(), &rows).unwrap();
            engine
                .write_batch(engine::WriteBatch {
                    spans,
                    content: message(trace, 1, trace, "input.value", 10),
                })
                .unwrap();
        }
        let request = ContentExpiryRequest::new(100).with_tier("decision", 5);
        // Trace 2's prompt goes while in memory; trace 1's stays there, in the sealed
        // segments, and after a restart.
        assert_eq!(engine.expire_content_with(&request).unwrap().messages, 1);
        assert_eq!(present(&engine, 1), vec![true]);
        assert_eq!(present(&engine, 2), vec![false]);
        engine.seal().unwrap();
        assert_eq!(engine.expire_content_with(&request).unwrap().messages, 0);
        assert_eq!(present(&engine, 1), vec![true]);
        kept_across_a_restart_until_the_decision_keep(dir.path(), engine);
    }

    #[test]
    fn content_of_a_trace_whose_earlier_rows_are_sealed_follows_a_later_promotion() {
        // The trace's first rows (with its prompt) are sealed; its decision arrives alone in
        // a later write, with content of its own: the sealed prompt is still pinned.
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path());
        engine
            .put_content(&message(1, 1, 1, "input.value", 10))
            .unwrap();
        engine.seal().unwrap();
        engine
            .write_batch(engine::WriteBatch {
                spans: span(1, 2, Some("decision")),
                content: message(1, 2, 2, "output.value", 20),
            })
            .unwrap();
        engine.seal().unwrap();
        let request = ContentExpiryRequest::new(100).with_tier("decision", 5);
        assert_eq!(engine.expire_content_with(&request).unwrap().messages, 0);
        assert_eq!(present(&engine, 1), vec![true, true]);
    }

    #[test]
    fn content_sealed_before_a_promotion_is_copied_into_the_promoted_tier() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path());
        for trace in [1u8, 2] {
            engine
                .put_content(&message(trace, 1, trace, "input.value", 10))
                .unwrap();
            engine.write(span(trace, 1, None)).unwrap();
        }
        // Both prompts are in one default-tier segment when trace 1 is promoted.
        engine.seal().unwrap();
        engine.write(span(1, 2, Some("decision"))).unwrap();
        // Until a seal copies the pinned prompt, its segment is not expired.
        let request = ContentExpiryRequest::new(100).with_tier("decision", 5);
        assert_eq!(engine.expire_content_with(&request).unwrap().messages, 0);
        engine.seal().unwrap();
        // The default-tier segment goes: trace 2's prompt with it (one message: trace 1's is
        // readable from its copy in the decision tier).
        assert_eq!(engine.expire_content_with(&request).unwrap().messages, 1);
        assert_eq!(present(&engine, 1), vec![true]);
        assert_eq!(present(&engine, 2), vec![false]);
        // Across a restart too.
        kept_across_a_restart_until_the_decision_keep(dir.path(), engine);
    }
}

mod one_write {
    //! Spans and their content are one write (issue 11): committed in the same transaction,
    //! or not at all.

    use engine::{SpanBatchBuilder, SpanRecord, WriteBatch};

    use super::*;

    fn write_of(trace: u8, blob: ([u8; 32], String)) -> WriteBatch {
        let mut builder = SpanBatchBuilder::new();
        builder.append(&SpanRecord {
            trace_id: TraceId([trace; 16]),
            span_id: SpanId([1; 8]),
            name: "chat",
            kind: 3,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            ..SpanRecord::default()
        });
        WriteBatch {
            spans: builder.finish(),
            content: ContentBatch {
                blobs: vec![blob.clone()],
                refs: vec![reference(trace, 1, "input.value", &[blob.0], None)],
                stored_unix_nanos: 0,
            },
        }
    }

    #[test]
    fn spans_and_content_are_stored_together_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path());
        engine
            .write_batch(write_of(1, ([1; 32], "\"hello\"".to_owned())))
            .unwrap();
        let rows = engine.content_for_trace(&TraceId([1; 16])).unwrap();
        assert_eq!(rows[0].value, ContentValue::Present("[\"hello\"]".into()));
        // The content's retention clock is the write's arrival time.
        let stats = engine.content_stats().unwrap();
        let arrival = engine
            .scan(&engine::ScanRequest::default())
            .unwrap()
            .iter()
            .map(|batch| {
                use arrow::array::AsArray;
                batch
                    .column_by_name("arrival_time")
                    .unwrap()
                    .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
                    .value(0)
            })
            .next()
            .unwrap();
        assert_eq!(stats.oldest_seen, Some(arrival as u64));
        drop(engine);

        // Reopened: both there. A write refused (the memtable is over its bound) leaves
        // neither its spans nor its content.
        let engine = Engine::open(
            dir.path(),
            Options::default()
                .with_background_sealing(false)
                .with_max_memtable_bytes(1),
        )
        .unwrap();
        assert_eq!(
            engine.scan(&engine::ScanRequest::default()).unwrap().len(),
            1
        );
        let refused = engine.write_batch(write_of(2, ([2; 32], "\"refused\"".to_owned())));
        assert!(
            matches!(refused, Err(engine::Error::Overloaded { .. })),
            "{refused:?}"
        );
        assert!(
            engine
                .content_for_trace(&TraceId([2; 16]))
                .unwrap()
                .is_empty()
        );
        assert_eq!(engine.content_stats().unwrap().messages, 1);
    }
}
