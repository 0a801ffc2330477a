use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::*;

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

fn span(id: u8, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![id; 8],
        name: "chat".into(),
        attributes,
        ..Span::default()
    }
}

fn policy() -> ContentPolicy {
    ContentPolicy::with_defaults([3; 32])
}

/// The rows the engine would give back for `batch` (nothing expired).
fn rows(batch: &ContentBatch) -> Vec<ContentRow> {
    let blobs: HashMap<_, _> = batch.blobs.iter().cloned().collect();
    batch
        .refs
        .iter()
        .map(|reference| ContentRow {
            trace_id: reference.trace_id,
            span_id: reference.span_id,
            key: reference.key.clone(),
            form: reference.form,
            digest: reference.digest,
            value: match &reference.pieces {
                None => ContentValue::NotCaptured {
                    digest: reference.digest,
                },
                Some(pieces) => ContentValue::Present(
                    pieces
                        .iter()
                        .map(|piece| match piece {
                            ContentPiece::Literal(text) => text.clone(),
                            ContentPiece::Blob(hash) => blobs[hash].clone(),
                        })
                        .collect(),
                ),
            },
        })
        .collect()
}

#[test]
fn hmac_matches_rfc_4231_test_case_1() {
    // A key shorter than the block is zero-padded by HMAC, so 20 bytes of 0x0b + 12 zeros is
    // the RFC's 20-byte key.
    let mut key = [0u8; 32];
    key[..20].fill(0x0b);
    assert_eq!(
        hex::encode(hmac_sha256(&key, &[b"Hi There"])),
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    );
    // The message in parts hashes as the whole.
    assert_eq!(
        hmac_sha256(&key, &[b"Hi", b" The", b"", b"re"]),
        hmac_sha256(&key, &[b"Hi There"])
    );
}

/// The digest from the pieces (per-blob canonical JSON, cached) equals the digest of the whole
/// value, for every shape of string value, and again when the cache answers.
#[test]
fn digest_of_split_values_equals_the_whole_value_digest() {
    let policy = ContentPolicy::with_defaults([7; 32]);
    let deep = format!("[{}1{}]", "[".repeat(150), "]".repeat(150));
    let texts = [
        r#"[{"role":"user","content":"hi"}]"#.to_owned(),
        r#"  [ {"content": "a, [b] {c}", "role" : "user"} ,{"z":1,"a":[1, 2.50, -0, 1e3]}, "s\"]", 7 ]  "#.to_owned(),
        r#"[{"b":{"d":1,"c":2},"a":null}, true, false, null, 18446744073709551616]"#.to_owned(),
        r#"{"role":"system","content":"You are helpful."}"#.to_owned(),
        "plain prompt text, not JSON".to_owned(),
        "[not json".to_owned(),
        "[]".to_owned(),
        "[\"only\"]".to_owned(),
        r#""a JSON string""#.to_owned(),
        "42".to_owned(),
        deep,
        format!("[{}]", (0..40).map(|i| format!(r#"{{"n":{i},"t":"é\u00e9\n"}}"#)).collect::<Vec<_>>().join(",")),
    ];
    // The digest from cached parts equals the digest of the whole value.
    let check = |text: &str, context: &str| {
        let value = AnyValue {
            value: Some(any_value::Value::StringValue(text.to_owned())),
        };
        let (_, pieces) = split_hashed(&value);
        assert_eq!(
            policy.digest_of_split(text, &pieces),
            policy.digest(&value),
            "{context}: {text}"
        );
    };
    for round in 0..2 {
        for text in &texts {
            check(text, &format!("round {round}"));
        }
    }
    // An element that is also a whole value elsewhere keeps its own canonical form.
    let element = r#"["x"]"#;
    let whole = r#""x""#;
    for text in [element, whole, element] {
        check(text, "element and whole");
    }
}

#[test]
fn content_keys_follow_the_conventions_list() {
    for key in [
        "gen_ai.input.messages",
        "gen_ai.prompt.0.content",
        "gen_ai.completion.1.tool_calls.0.arguments",
        "llm.input_messages.0.message.content",
        "input.value",
        "ai.prompt.messages",
        "ai.toolCall.args",
        "retrieval.documents.0.document.content",
        "gen_ai.prompt.variable.city",
    ] {
        assert!(is_content_key(key), "{key}");
    }
    for key in [
        "gen_ai.completion.0.finish_reason",
        "gen_ai.prompt.name",
        "gen_ai.request.model",
        "llm.input_messages.0.message.role",
        "ai.response.model",
        "input.mime_type",
        "retrieval.documents.0.document.id",
    ] {
        assert!(!is_content_key(key), "{key}");
    }
}

#[test]
fn json_string_messages_are_split_and_restored_exactly() {
    let messages = r#"[{"role": "user", "parts": [{"type": "text", "content": "hi"}]},  {"role":"assistant","parts":[]} ]"#;
    let original = request(vec![span(
        1,
        vec![
            string("gen_ai.input.messages", messages),
            string("gen_ai.request.model", "m"),
        ],
    )]);
    let mut stripped = original.clone();
    let batch = extract(&mut stripped, &policy());
    assert_eq!(batch.blobs.len(), 2);
    assert_eq!(batch.refs.len(), 1);
    let attributes = &stripped.resource_spans[0].scope_spans[0].spans[0].attributes;
    let reference = reference_string(&batch.refs[0].digest);
    assert_eq!(attributes[0], string("gen_ai.input.messages", &reference));
    assert_eq!(attributes[1], string("gen_ai.request.model", "m"));
    let restored = restore_content(&mut stripped, &rows(&batch)).unwrap();
    assert_eq!(restored.present, 1);
    assert_eq!(stripped, original);
}

#[test]
fn structured_values_and_events_are_restored_exactly() {
    let message = |text: &str| AnyValue {
        value: Some(any_value::Value::KvlistValue(KeyValueList {
            values: vec![
                string("role", "user"),
                string("content", text),
                KeyValue {
                    key: "n".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::IntValue(7)),
                    }),
                    ..KeyValue::default()
                },
            ],
        })),
    };
    let mut with_event = span(
        1,
        vec![KeyValue {
            key: "gen_ai.input.messages".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue {
                    values: vec![message("a"), message("b")],
                })),
            }),
            ..KeyValue::default()
        }],
    );
    with_event.events.push(Event {
        name: "gen_ai.user.message".into(),
        attributes: vec![string("content", "hello"), string("role", "user")],
        ..Event::default()
    });
    let original = request(vec![with_event]);
    let mut stripped = original.clone();
    let batch = extract(&mut stripped, &policy());
    assert_eq!(batch.refs.len(), 2);
    assert_eq!(batch.refs[1].key, "events[0].content");
    let event = &stripped.resource_spans[0].scope_spans[0].spans[0].events[0];
    assert!(is_reference(event.attributes[0].value.as_ref().unwrap()));
    assert_eq!(event.attributes[1], string("role", "user"));
    restore_content(&mut stripped, &rows(&batch)).unwrap();
    assert_eq!(stripped, original);
}

#[test]
fn a_resent_history_stores_each_message_once() {
    let mut history = Vec::new();
    let mut spans = Vec::new();
    for turn in 0..10u8 {
        history.push(format!(r#"{{"role":"user","content":"turn {turn}"}}"#));
        spans.push(span(
            turn + 1,
            vec![string(
                "gen_ai.input.messages",
                &format!("[{}]", history.join(",")),
            )],
        ));
    }
    let mut stripped = request(spans);
    let batch = extract(&mut stripped, &policy());
    assert_eq!(batch.blobs.len(), 10);
    assert_eq!(batch.refs.len(), 10);
}

#[test]
fn a_json_string_and_a_structured_value_share_their_digest() {
    let policy = policy();
    let text = AnyValue {
        value: Some(any_value::Value::StringValue(
            r#"{"b": 1, "a": ["x", true]}"#.into(),
        )),
    };
    let structured = AnyValue {
        value: Some(any_value::Value::KvlistValue(KeyValueList {
            values: vec![
                string("a", "placeholder"),
                KeyValue {
                    key: "b".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::IntValue(1)),
                    }),
                    ..KeyValue::default()
                },
            ],
        })),
    };
    let mut structured = structured;
    if let Some(any_value::Value::KvlistValue(list)) = structured.value.as_mut() {
        list.values[0].value = Some(AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(any_value::Value::StringValue("x".into())),
                    },
                    AnyValue {
                        value: Some(any_value::Value::BoolValue(true)),
                    },
                ],
            })),
        });
    }
    assert_eq!(policy.digest(&text), policy.digest(&structured));
    let other_key = ContentPolicy::with_defaults([4; 32]);
    assert_ne!(policy.digest(&text), other_key.digest(&text));
}

#[test]
fn capture_off_keeps_only_digests() {
    let policy = ContentPolicy::new(false, &[], [3; 32]).unwrap();
    let mut stripped = request(vec![span(1, vec![string("input.value", "secret plan")])]);
    let batch = extract(&mut stripped, &policy);
    assert!(batch.blobs.is_empty());
    assert_eq!(batch.refs[0].pieces, None);
    let attributes = &stripped.resource_spans[0].scope_spans[0].spans[0].attributes;
    assert_eq!(
        attributes[0],
        string("input.value", &reference_string(&batch.refs[0].digest))
    );
    restore_content(&mut stripped, &rows(&batch)).unwrap();
    let attributes = &stripped.resource_spans[0].scope_spans[0].spans[0].attributes;
    assert_eq!(
        attributes[0],
        string(
            "input.value",
            &format!("[NOT_CAPTURED:{}]", hex::encode(batch.refs[0].digest))
        )
    );
}

#[test]
fn redaction_runs_before_extraction_and_drop_removes_attributes() {
    let rules = vec![
        RedactionRuleConfig {
            name: "email".into(),
            keys: vec!["*".into()],
            detectors: vec!["email".into()],
            ..RedactionRuleConfig::default()
        },
        RedactionRuleConfig {
            name: "auth".into(),
            keys: vec!["http.request.header.*".into()],
            drop: true,
            ..RedactionRuleConfig::default()
        },
    ];
    let policy = ContentPolicy::new(true, &rules, [3; 32]).unwrap();
    let mut stripped = request(vec![span(
        1,
        vec![
            string("input.value", "write to bob@example.com"),
            string("http.request.header.authorization", "Bearer x"),
            string("user.note", "ping alice@example.org"),
        ],
    )]);
    let batch = extract(&mut stripped, &policy);
    assert_eq!(batch.blobs[0].1, "write to [REDACTED:email]");
    let attributes = &stripped.resource_spans[0].scope_spans[0].spans[0].attributes;
    assert_eq!(attributes.len(), 2);
    assert_eq!(attributes[1], string("user.note", "ping [REDACTED:email]"));
}

#[test]
fn the_default_rules_parse() {
    assert_eq!(policy().rules().len(), 1);
}
