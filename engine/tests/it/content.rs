//! The content store: dedup, reads, expiry per tier, capture off, reopen.

use engine::{
    ContentBatch, ContentExpiryRequest, ContentPiece, ContentRef, ContentValue, Engine, Options,
    SpanId, TraceId,
};

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
fn expiry_counts_from_the_newest_reference_and_leaves_digests() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let old = ([1; 32], "old".to_owned());
    let shared = ([2; 32], "shared".to_owned());
    engine
        .put_content(&ContentBatch {
            blobs: vec![old.clone(), shared.clone()],
            refs: vec![reference(1, 1, "k", &[old.0, shared.0], None)],
            stored_unix_nanos: 10,
        })
        .unwrap();
    // The shared blob is referenced again later: it must outlive the cutoff at 15.
    engine
        .put_content(&ContentBatch {
            blobs: vec![shared.clone()],
            refs: vec![reference(2, 1, "k", &[shared.0], None)],
            stored_unix_nanos: 20,
        })
        .unwrap();
    let dry = engine.expire_content(15, true).unwrap();
    assert_eq!(dry.messages, 1);
    assert_eq!(engine.content_stats().unwrap().messages, 2);
    let done = engine.expire_content(15, false).unwrap();
    assert_eq!(done, dry);
    assert_eq!(engine.content_stats().unwrap().messages, 1);
    let first = engine.content_for_trace(&TraceId([1; 16])).unwrap();
    assert_eq!(first[0].value, ContentValue::Expired { digest: [0; 32] });
    let second = engine.content_for_trace(&TraceId([2; 16])).unwrap();
    assert_eq!(second[0].value, ContentValue::Present("[shared]".into()));
    assert_eq!(engine.expire_content(25, false).unwrap().messages, 1);
    assert_eq!(engine.content_stats().unwrap().references, 2);
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
