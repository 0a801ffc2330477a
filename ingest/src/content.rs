//! Content governance at ingest: redaction, then extraction of content attributes into the
//! content store ([`extract`]), and the way back ([`restore_content`]). See `docs/content.md`.
//!
//! [`extract`] rewrites the request in place, before [`crate::to_span_batch`], so neither the
//! WAL nor a segment ever holds a redacted secret or an extracted value. Each content attribute
//! keeps its key on the span; its value becomes the reference string
//! `sightline-content:v1:<64 hex>`, the HMAC-SHA256 (store key) of the value's canonical JSON.
//!
//! Forms of a stored value ([`engine::ContentRef::form`]):
//! - [`FORM_STRING`]: a string attribute; the text is the string, byte for byte. A string that is
//!   a JSON array is split into its elements' exact text (one blob each) and the text between
//!   them (literal pieces), so a history resent every turn stores each message once.
//! - [`FORM_ANY_VALUE`]: any other `AnyValue`, stored as its OTLP/JSON encoding (exact types);
//!   an `arrayValue` is split into its elements the same way.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use engine::{ContentBatch, ContentHash, ContentPiece, ContentRef, ContentRow, ContentValue};
use engine::{SpanId, TraceId};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::redact::{RedactionRule, RedactionRuleConfig, redact_attributes};

/// Prefix of the reference value left on the span.
pub const CONTENT_REF_PREFIX: &str = "sightline-content:v1:";
/// Form of a string attribute value.
pub const FORM_STRING: u8 = 0;
/// Form of a structured (non-string) attribute value.
pub const FORM_ANY_VALUE: u8 = 1;

/// What happens to content at ingest.
#[derive(Debug, Clone)]
pub struct ContentPolicy {
    capture: bool,
    rules: Vec<RedactionRule>,
    digest_key: [u8; 32],
    /// Canonical JSON of blobs seen lately, shared by the policy's clones.
    canonical: Arc<CanonicalCache>,
}

impl ContentPolicy {
    /// A policy from plain values: whether content is captured (off = only digests are kept),
    /// the redaction rules (checked; an error names the bad rule) and the store's digest key.
    pub fn new(
        capture: bool,
        rules: &[RedactionRuleConfig],
        digest_key: [u8; 32],
    ) -> Result<ContentPolicy> {
        let rules = rules
            .iter()
            .map(RedactionRule::new)
            .collect::<Result<Vec<_>>>()?;
        Ok(ContentPolicy {
            capture,
            rules,
            digest_key,
            canonical: Arc::default(),
        })
    }

    /// The default rules: `email` (detector `email`) on every key.
    pub fn default_rules() -> Vec<RedactionRuleConfig> {
        vec![RedactionRuleConfig {
            name: "email".into(),
            keys: vec!["*".into()],
            detectors: vec!["email".into()],
            regexes: Vec::new(),
            drop: false,
        }]
    }

    /// Capture on, the default rules, and `digest_key`.
    pub fn with_defaults(digest_key: [u8; 32]) -> ContentPolicy {
        // The default rules are constants that parse (covered by a unit test).
        ContentPolicy::new(true, &ContentPolicy::default_rules(), digest_key).unwrap_or(
            ContentPolicy {
                capture: true,
                rules: Vec::new(),
                digest_key,
                canonical: Arc::default(),
            },
        )
    }

    /// True when content is captured.
    pub fn capture(&self) -> bool {
        self.capture
    }

    /// The checked redaction rules.
    pub fn rules(&self) -> &[RedactionRule] {
        &self.rules
    }

    /// The keyed digest of a value: HMAC-SHA256 over its canonical JSON.
    pub fn digest(&self, value: &AnyValue) -> ContentHash {
        let mut canonical = String::new();
        match &value.value {
            Some(any_value::Value::StringValue(text)) => canonical_string(text, &mut canonical),
            _ => write_canonical(&any_value_json(value), &mut canonical),
        }
        hmac_sha256(&self.digest_key, &[canonical.as_bytes()])
    }

    /// [`Self::digest`] of a string value `text` that [`split`] cut into `pieces` (each blob
    /// with its SHA-256), computed from the canonical JSON of each blob, which is kept between
    /// requests: a history re-sent every turn is parsed and canonicalized once per message, not
    /// once per turn. The same digest as [`Self::digest`] (a unit test compares them).
    fn digest_of_split(&self, text: &str, pieces: &[(Piece, Option<ContentHash>)]) -> ContentHash {
        let whole = || self.digest(&string_value(text));
        // The element path parses each element alone; serde_json's nesting limit counts from
        // the outermost value, so deep values take the whole-value path, which decides alike.
        if max_json_depth(text) >= MAX_ELEMENT_DEPTH {
            return whole();
        }
        let mut parts: Vec<Arc<str>> = Vec::with_capacity(pieces.len());
        match pieces {
            [(Piece::Blob(blob), Some(hash))] => {
                parts.push(self.canonical.get_or_insert(*hash, true, || {
                    let mut out = String::new();
                    canonical_string(blob, &mut out);
                    out
                }));
            }
            [(Piece::Literal(_), None), rest @ ..] if !rest.is_empty() => {
                let mut first = true;
                for (piece, hash) in rest {
                    let (Piece::Blob(element), Some(hash)) = (piece, hash) else {
                        continue;
                    };
                    let canonical = self.canonical.get_or_insert(*hash, false, || {
                        let mut out = String::new();
                        match serde_json::from_str::<Value>(element) {
                            Ok(value) => write_canonical(&value, &mut out),
                            Err(_) => out.clear(),
                        }
                        out
                    });
                    if canonical.is_empty() {
                        return whole();
                    }
                    parts.push(Arc::from(if first { "[" } else { "," }));
                    parts.push(canonical);
                    first = false;
                }
                parts.push(Arc::from("]"));
            }
            _ => return whole(),
        }
        let slices: Vec<&[u8]> = parts.iter().map(|part| part.as_bytes()).collect();
        hmac_sha256(&self.digest_key, &slices)
    }
}

/// Nesting depth at which [`ContentPolicy::digest_of_split`] leaves the element path.
const MAX_ELEMENT_DEPTH: usize = 100;

/// Deepest nesting of `[` and `{` in `text`, outside JSON strings (a byte scan).
fn max_json_depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &byte in text.as_bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn string_value(text: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(text.to_owned())),
    }
}

/// Canonical JSON of blob texts, by SHA-256 of the text and whether the text was a whole value
/// or an array element (a whole value that is not JSON is canonicalized as a JSON string). Bounded:
/// emptied when it holds more than [`CanonicalCache::MAX_BYTES`] of text.
#[derive(Debug, Default)]
struct CanonicalCache {
    entries: Mutex<CanonicalEntries>,
}

/// Canonical forms by (blob hash, whole value), and the bytes they hold.
type CanonicalEntries = (HashMap<(ContentHash, bool), Arc<str>>, usize);

impl CanonicalCache {
    const MAX_BYTES: usize = 16 << 20;

    fn get_or_insert(
        &self,
        hash: ContentHash,
        whole: bool,
        make: impl FnOnce() -> String,
    ) -> Arc<str> {
        if let Some(found) = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .get(&(hash, whole))
        {
            return Arc::clone(found);
        }
        let made: Arc<str> = Arc::from(make());
        let mut guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (map, bytes) = &mut *guard;
        if *bytes + made.len() > Self::MAX_BYTES {
            map.clear();
            *bytes = 0;
        }
        if map.insert((hash, whole), Arc::clone(&made)).is_none() {
            *bytes += made.len() + 64;
        }
        made
    }
}

/// Keys whose values are content (`docs/content.md`; conventions section 6 "Content table").
const CONTENT_KEYS: &[&str] = &[
    "gen_ai.system_instructions",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.tool.definitions",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "gen_ai.retrieval.query.text",
    "gen_ai.retrieval.documents",
    "gen_ai.memory.query.text",
    "gen_ai.memory.records",
    "gen_ai.prompt",
    "gen_ai.completion",
    "gen_ai.evaluation.explanation",
    "gen_ai.agent.description",
    "gen_ai.tool.description",
    "input.value",
    "output.value",
    "llm.prompts",
    "llm.choices",
    "llm.tools",
    "llm.prompt_template.variables",
    "tool.parameters",
    "tool_call.function.arguments",
    "traceloop.entity.input",
    "traceloop.entity.output",
    "langfuse.observation.input",
    "langfuse.observation.output",
    "langfuse.trace.input",
    "langfuse.trace.output",
    "ai.prompt",
    "ai.toolCall.args",
    "ai.toolCall.result",
    "document.content",
    "exception.stacktrace",
    "mlflow.spanInputs",
    "mlflow.spanOutputs",
];

/// Key prefixes whose keys are content, except those ending in a [`NOT_CONTENT_SUFFIXES`] part.
const CONTENT_PREFIXES: &[&str] = &[
    "gen_ai.prompt.variable.",
    "llm.input_messages.",
    "llm.output_messages.",
    "llm.prompts.",
    "llm.choices.",
    "llm.tools.",
    "ai.prompt.",
    "ai.response.text",
    "ai.response.object",
    "ai.response.toolCalls",
    "ai.response.reasoning",
    "embedding.embeddings.",
    "retrieval.documents.",
];

/// Indexed flattenings (`gen_ai.prompt.{i}.*`, `gen_ai.completion.{i}.*`).
const INDEXED_PREFIXES: &[&str] = &["gen_ai.prompt.", "gen_ai.completion."];

/// Last key parts that are metadata rather than content (roles, ids, finish reasons).
const NOT_CONTENT_SUFFIXES: &[&str] = &[
    "role",
    "finish_reason",
    "tool_call_id",
    "id",
    "name",
    "type",
    "score",
    "mime_type",
];

/// Event names whose `content`/`message`/`tool_calls`/`body` attributes are content.
const CONTENT_EVENT_KEYS: &[&str] = &["content", "message", "tool_calls", "body"];

/// True when attribute `key` holds content (section 6 of the conventions).
pub fn is_content_key(key: &str) -> bool {
    if CONTENT_KEYS.contains(&key) {
        return true;
    }
    let last = key.rsplit('.').next().unwrap_or(key);
    let metadata = NOT_CONTENT_SUFFIXES.contains(&last);
    if CONTENT_PREFIXES
        .iter()
        .any(|prefix| key.starts_with(prefix))
    {
        return !metadata;
    }
    for prefix in INDEXED_PREFIXES {
        if let Some(rest) = key.strip_prefix(prefix)
            && rest.split('.').next().is_some_and(|index| {
                !index.is_empty() && index.bytes().all(|byte| byte.is_ascii_digit())
            })
        {
            return !metadata;
        }
    }
    key.ends_with(".document.content")
}

fn is_content_event(name: &str) -> bool {
    (name.starts_with("gen_ai.") && name.ends_with(".message"))
        || matches!(
            name,
            "gen_ai.choice"
                | "gen_ai.client.inference.operation.details"
                | "gen_ai.content.prompt"
                | "gen_ai.content.completion"
        )
}

/// Redacts and extracts the content of `request` in place; returns what goes to the content
/// store (with `stored_unix_nanos` left 0 for the caller to set). Spans whose ids are malformed
/// are left alone: [`crate::to_span_batch`] rejects the request anyway.
///
/// The finish reasons inside the replaced `gen_ai.output.messages` are not kept: use
/// [`crate::prepare`], which maps the request with them, to store a request.
pub fn extract(request: &mut ExportTraceServiceRequest, policy: &ContentPolicy) -> ContentBatch {
    extract_with_finish_reasons(request, policy).0
}

/// [`extract`], and the finish reasons of the output messages it replaced.
pub(crate) fn extract_with_finish_reasons(
    request: &mut ExportTraceServiceRequest,
    policy: &ContentPolicy,
) -> (ContentBatch, ExtractedFinishReasons) {
    let mut finish_reasons = ExtractedFinishReasons::new();
    let mut out = ContentBatch::default();
    let mut seen_blobs: HashMap<ContentHash, ()> = HashMap::new();
    let rules = policy.rules();
    for resource_spans in &mut request.resource_spans {
        if let Some(resource) = resource_spans.resource.as_mut() {
            redact_attributes(rules, &mut resource.attributes);
        }
        for scope_spans in &mut resource_spans.scope_spans {
            if let Some(scope) = scope_spans.scope.as_mut() {
                redact_attributes(rules, &mut scope.attributes);
            }
            for span in &mut scope_spans.spans {
                redact_attributes(rules, &mut span.attributes);
                for event in &mut span.events {
                    redact_attributes(rules, &mut event.attributes);
                }
                for link in &mut span.links {
                    redact_attributes(rules, &mut link.attributes);
                }
                let (Ok(trace), Ok(span_id)) = (
                    <[u8; 16]>::try_from(span.trace_id.as_slice()),
                    <[u8; 8]>::try_from(span.span_id.as_slice()),
                ) else {
                    continue;
                };
                let mut extractor = SpanExtractor {
                    policy,
                    trace_id: TraceId(trace),
                    span_id: SpanId(span_id),
                    out: &mut out,
                    seen_blobs: &mut seen_blobs,
                    used_keys: HashMap::new(),
                    finish_reasons: &mut finish_reasons,
                };
                for pair in &mut span.attributes {
                    if is_content_key(&pair.key) {
                        let key = pair.key.clone();
                        extractor.extract(key, pair);
                    }
                }
                for (index, event) in span.events.iter_mut().enumerate() {
                    let content_event = is_content_event(&event.name);
                    for pair in &mut event.attributes {
                        if is_content_key(&pair.key)
                            || (content_event && CONTENT_EVENT_KEYS.contains(&pair.key.as_str()))
                        {
                            let key = format!("events[{index}].{}", pair.key);
                            extractor.extract(key, pair);
                        }
                    }
                }
            }
        }
    }
    (out, finish_reasons)
}

/// Redacts and extracts the content of a logs request in place, as [`extract`] does for
/// spans. Content keys are `logs.<time>.<event name>.<attribute>` (and `….body` for the body
/// of a content event: the deprecated `gen_ai.*.message` and `gen_ai.choice` events hold their
/// message there) on the record's (trace, span), all-zero ids for a record without them.
pub(crate) fn extract_logs(
    request: &mut ExportLogsServiceRequest,
    policy: &ContentPolicy,
) -> ContentBatch {
    let mut finish_reasons = ExtractedFinishReasons::new();
    let mut out = ContentBatch::default();
    let mut seen_blobs: HashMap<ContentHash, ()> = HashMap::new();
    let rules = policy.rules();
    for resource_logs in &mut request.resource_logs {
        if let Some(resource) = resource_logs.resource.as_mut() {
            redact_attributes(rules, &mut resource.attributes);
        }
        for scope_logs in &mut resource_logs.scope_logs {
            if let Some(scope) = scope_logs.scope.as_mut() {
                redact_attributes(rules, &mut scope.attributes);
            }
            for record in &mut scope_logs.log_records {
                redact_attributes(rules, &mut record.attributes);
                let mut body = vec![KeyValue {
                    key: "body".to_owned(),
                    value: record.body.take(),
                    ..KeyValue::default()
                }];
                redact_attributes(rules, &mut body);
                let name = crate::logs::event_name(record)
                    .unwrap_or_default()
                    .to_owned();
                let prefix = log_content_prefix(record.time_unix_nano, &name);
                let content_event = is_content_event(&name);
                let mut extractor = SpanExtractor {
                    policy,
                    trace_id: crate::logs::record_trace(record),
                    span_id: crate::logs::record_span(record),
                    out: &mut out,
                    seen_blobs: &mut seen_blobs,
                    used_keys: HashMap::new(),
                    finish_reasons: &mut finish_reasons,
                };
                for pair in &mut record.attributes {
                    if is_content_key(&pair.key)
                        || (content_event && CONTENT_EVENT_KEYS.contains(&pair.key.as_str()))
                    {
                        let key = format!("{prefix}{}", pair.key);
                        extractor.extract(key, pair);
                    }
                }
                if content_event {
                    extractor.extract(format!("{prefix}body"), &mut body[0]);
                }
                record.body = body.pop().and_then(|pair| pair.value);
            }
        }
    }
    out
}

/// The prefix of a log record's content keys.
fn log_content_prefix(time_unix_nano: u64, event_name: &str) -> String {
    format!("logs.{time_unix_nano}.{event_name}.")
}

/// Content rows of each span, by key.
type RowsBySpan<'r> = HashMap<(TraceId, SpanId), HashMap<&'r str, Vec<&'r ContentRow>>>;

fn rows_by_span(rows: &[ContentRow]) -> RowsBySpan<'_> {
    let mut by_span = RowsBySpan::new();
    for row in rows {
        by_span
            .entry((row.trace_id, row.span_id))
            .or_default()
            .entry(row.key.as_str())
            .or_default()
            .push(row);
    }
    by_span
}

/// Puts content back into rebuilt log records, as [`restore_content`] does for spans.
pub fn restore_log_content(
    request: &mut ExportLogsServiceRequest,
    rows: &[ContentRow],
) -> Result<RestoredContent> {
    let by_span = rows_by_span(rows);
    let mut restored = RestoredContent::default();
    for resource_logs in &mut request.resource_logs {
        for scope_logs in &mut resource_logs.scope_logs {
            for record in &mut scope_logs.log_records {
                let key = (
                    crate::logs::record_trace(record),
                    crate::logs::record_span(record),
                );
                let Some(rows) = by_span.get(&key) else {
                    continue;
                };
                let name = crate::logs::event_name(record)
                    .unwrap_or_default()
                    .to_owned();
                let prefix = log_content_prefix(record.time_unix_nano, &name);
                let mut used: HashMap<String, usize> = HashMap::new();
                for pair in &mut record.attributes {
                    let key = format!("{prefix}{}", pair.key);
                    restore_pair(pair, key, rows, &mut used, &mut restored)?;
                }
                let mut body = KeyValue {
                    key: "body".to_owned(),
                    value: record.body.take(),
                    ..KeyValue::default()
                };
                restore_pair(
                    &mut body,
                    format!("{prefix}body"),
                    rows,
                    &mut used,
                    &mut restored,
                )?;
                record.body = body.value;
            }
        }
    }
    Ok(restored)
}

struct SpanExtractor<'a> {
    policy: &'a ContentPolicy,
    trace_id: TraceId,
    span_id: SpanId,
    out: &'a mut ContentBatch,
    seen_blobs: &'a mut HashMap<ContentHash, ()>,
    used_keys: HashMap<String, usize>,
    finish_reasons: &'a mut ExtractedFinishReasons,
}

impl SpanExtractor<'_> {
    fn extract(&mut self, key: String, pair: &mut KeyValue) {
        let Some(value) = pair.value.as_ref() else {
            return;
        };
        if value.value.is_none() || is_reference(value) {
            return;
        }
        // Duplicate keys on one span get `#2`, `#3`, ... in the order they appear.
        let count = self.used_keys.entry(key.clone()).or_insert(0);
        *count += 1;
        let key = if *count == 1 {
            key
        } else {
            format!("{key}#{count}")
        };
        // Read before the value goes, whether or not content is captured. Only the span's
        // first `gen_ai.output.messages` (events are `events[i].…`, later ones `…#2`), the one
        // the agent columns read.
        let finish_reasons = value
            .value
            .as_ref()
            .filter(|_| key == OUTPUT_MESSAGES)
            .and_then(crate::normalize::output_message_finish_reasons)
            .map(|reasons| reasons.into_iter().map(Cow::into_owned).collect::<Vec<_>>());
        let (digest, form, pieces) = if self.policy.capture() {
            let (form, pieces) = split_hashed(value);
            let digest = match &value.value {
                Some(any_value::Value::StringValue(text)) => {
                    self.policy.digest_of_split(text, &pieces)
                }
                _ => self.policy.digest(value),
            };
            let pieces = pieces
                .into_iter()
                .map(|piece| match piece {
                    (Piece::Blob(text), Some(hash)) => {
                        if self.seen_blobs.insert(hash, ()).is_none() {
                            self.out.blobs.push((hash, text));
                        }
                        ContentPiece::Blob(hash)
                    }
                    (Piece::Blob(text) | Piece::Literal(text), _) => ContentPiece::Literal(text),
                })
                .collect();
            (digest, form, Some(pieces))
        } else {
            let form = match value.value {
                Some(any_value::Value::StringValue(_)) => FORM_STRING,
                _ => FORM_ANY_VALUE,
            };
            (self.policy.digest(value), form, None)
        };
        self.out.refs.push(ContentRef {
            trace_id: self.trace_id,
            span_id: self.span_id,
            key,
            digest,
            form,
            pieces,
            tier: None,
        });
        let reference = reference_string(&digest);
        if let Some(finish_reasons) = finish_reasons {
            self.finish_reasons
                .insert(reference.clone(), finish_reasons);
        }
        pair.value = Some(AnyValue {
            value: Some(any_value::Value::StringValue(reference)),
        });
    }
}

/// The reference value left on the span for a value with `digest`.
pub fn reference_string(digest: &ContentHash) -> String {
    format!("{CONTENT_REF_PREFIX}{}", hex::encode(digest))
}

fn is_reference(value: &AnyValue) -> bool {
    matches!(&value.value, Some(any_value::Value::StringValue(text)) if is_reference_text(text))
}

/// True when `text` has the shape of a content reference.
pub(crate) fn is_reference_text(text: &str) -> bool {
    text.len() == CONTENT_REF_PREFIX.len() + 64 && text.starts_with(CONTENT_REF_PREFIX)
}

/// The span attribute whose metadata the agent columns still need after extraction.
const OUTPUT_MESSAGES: &str = "gen_ai.output.messages";

/// Finish reasons [`extract`] read from the `gen_ai.output.messages` values it replaced, keyed
/// by the reference left in their place. Finish reasons are metadata, not content, but the
/// official instrumentation's streaming chat spans carry them only inside the output messages;
/// mapping ([`crate::prepare`]) reads them here once the messages are gone. A reference is the
/// keyed digest of the exact value, so an entry can only ever describe that value.
pub(crate) type ExtractedFinishReasons = HashMap<String, Vec<String>>;

enum Piece {
    Literal(String),
    Blob(String),
}

/// [`split`], with each blob's SHA-256 (literals have none).
fn split_hashed(value: &AnyValue) -> (u8, Vec<(Piece, Option<ContentHash>)>) {
    let (form, pieces) = split(value);
    let pieces = pieces
        .into_iter()
        .map(|piece| match piece {
            Piece::Blob(text) => {
                let hash: ContentHash = Sha256::digest(text.as_bytes()).into();
                (Piece::Blob(text), Some(hash))
            }
            literal => (literal, None),
        })
        .collect();
    (form, pieces)
}

/// Splits a value into literal and blob pieces whose concatenation is the stored text.
fn split(value: &AnyValue) -> (u8, Vec<Piece>) {
    match &value.value {
        Some(any_value::Value::StringValue(text)) => (FORM_STRING, split_json_array(text)),
        Some(any_value::Value::ArrayValue(array)) if !array.values.is_empty() => {
            let mut pieces = vec![Piece::Literal("{\"arrayValue\":{\"values\":[".into())];
            for (index, element) in array.values.iter().enumerate() {
                if index > 0 {
                    pieces.push(Piece::Literal(",".into()));
                }
                pieces.push(Piece::Blob(
                    crate::json_encode::any_value(element).to_string(),
                ));
            }
            pieces.push(Piece::Literal("]}}".into()));
            (FORM_ANY_VALUE, pieces)
        }
        _ => (
            FORM_ANY_VALUE,
            vec![Piece::Blob(
                crate::json_encode::any_value(value).to_string(),
            )],
        ),
    }
}

/// A JSON array string becomes literal gaps and one blob per element's exact text; anything
/// else is one blob.
fn split_json_array(text: &str) -> Vec<Piece> {
    let whole = || vec![Piece::Blob(text.to_owned())];
    if !text.trim_start().starts_with('[') {
        return whole();
    }
    let Ok(elements) = serde_json::from_str::<Vec<&RawValue>>(text) else {
        return whole();
    };
    if elements.is_empty() {
        return whole();
    }
    let base = text.as_ptr() as usize;
    let mut pieces = Vec::with_capacity(elements.len() * 2 + 1);
    let mut last = 0;
    for element in elements {
        let raw = element.get();
        // Each element borrows from `text` (serde_json's RawValue), so its offset is in range.
        let start = (raw.as_ptr() as usize).wrapping_sub(base);
        let end = start + raw.len();
        if start < last || end > text.len() || text.get(start..end) != Some(raw) {
            return whole();
        }
        pieces.push(Piece::Literal(text[last..start].to_owned()));
        pieces.push(Piece::Blob(raw.to_owned()));
        last = end;
    }
    pieces.push(Piece::Literal(text[last..].to_owned()));
    pieces
}

/// What [`restore_content`] put back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoredContent {
    /// Values put back as they were.
    pub present: usize,
    /// Values whose content expired (now `[EXPIRED:<digest>]`).
    pub expired: usize,
    /// Values that were never captured (now `[NOT_CAPTURED:<digest>]`).
    pub not_captured: usize,
}

/// Puts content back into a rebuilt request: every reference attribute named by a row gets its
/// original value (exactly), or `[EXPIRED:<hex digest>]` / `[NOT_CAPTURED:<hex digest>]`.
pub fn restore_content(
    request: &mut ExportTraceServiceRequest,
    rows: &[ContentRow],
) -> Result<RestoredContent> {
    // A span sent twice with a changed value has a row per value: each copy takes the one its
    // own reference names (by digest).
    let by_span = rows_by_span(rows);
    let mut restored = RestoredContent::default();
    for resource_spans in &mut request.resource_spans {
        for scope_spans in &mut resource_spans.scope_spans {
            for span in &mut scope_spans.spans {
                let (Ok(trace), Ok(span_id)) = (
                    <[u8; 16]>::try_from(span.trace_id.as_slice()),
                    <[u8; 8]>::try_from(span.span_id.as_slice()),
                ) else {
                    continue;
                };
                let Some(rows) = by_span.get(&(TraceId(trace), SpanId(span_id))) else {
                    continue;
                };
                let mut used: HashMap<String, usize> = HashMap::new();
                for pair in &mut span.attributes {
                    let key = pair.key.clone();
                    restore_pair(pair, key, rows, &mut used, &mut restored)?;
                }
                for (index, event) in span.events.iter_mut().enumerate() {
                    for pair in &mut event.attributes {
                        let key = format!("events[{index}].{}", pair.key);
                        restore_pair(pair, key, rows, &mut used, &mut restored)?;
                    }
                }
            }
        }
    }
    Ok(restored)
}

fn restore_pair(
    pair: &mut KeyValue,
    key: String,
    rows: &HashMap<&str, Vec<&ContentRow>>,
    used: &mut HashMap<String, usize>,
    restored: &mut RestoredContent,
) -> Result<()> {
    if !pair.value.as_ref().is_some_and(is_reference) {
        return Ok(());
    }
    let count = used.entry(key.clone()).or_insert(0);
    *count += 1;
    let key = if *count == 1 {
        key
    } else {
        format!("{key}#{count}")
    };
    let digest = match &pair.value {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(text)),
        }) => text
            .strip_prefix(CONTENT_REF_PREFIX)
            .and_then(|digest| hex::decode(digest).ok()),
        _ => None,
    };
    let Some(candidates) = rows.get(key.as_str()) else {
        return Ok(());
    };
    let Some(row) = candidates
        .iter()
        .find(|row| digest.as_deref() == Some(row.digest.as_slice()))
        .or_else(|| candidates.last())
    else {
        return Ok(());
    };
    let value = match &row.value {
        ContentValue::Present(text) => {
            restored.present += 1;
            match row.form {
                FORM_STRING => any_value::Value::StringValue(text.clone()),
                FORM_ANY_VALUE => {
                    let json: Value =
                        serde_json::from_str(text).map_err(|error| Error::CorruptContent {
                            key: key.clone(),
                            detail: error.to_string(),
                        })?;
                    let decoded = crate::json_decode::decode_any_value(&json).map_err(|error| {
                        Error::CorruptContent {
                            key: key.clone(),
                            detail: error.to_string(),
                        }
                    })?;
                    match decoded.value {
                        Some(value) => value,
                        None => return Ok(()),
                    }
                }
                other => {
                    return Err(Error::CorruptContent {
                        key,
                        detail: format!("unknown form {other}"),
                    });
                }
            }
        }
        ContentValue::Expired { digest } => {
            restored.expired += 1;
            any_value::Value::StringValue(format!("[EXPIRED:{}]", hex::encode(digest)))
        }
        ContentValue::NotCaptured { digest } => {
            restored.not_captured += 1;
            any_value::Value::StringValue(format!("[NOT_CAPTURED:{}]", hex::encode(digest)))
        }
    };
    pair.value = Some(AnyValue { value: Some(value) });
    Ok(())
}

/// A string's canonical JSON: the canonical form of the JSON it holds, or the JSON string.
fn canonical_string(text: &str, out: &mut String) {
    let trimmed = text.trim_start();
    if (trimmed.starts_with('[') || trimmed.starts_with('{'))
        && let Ok(value) = serde_json::from_str::<Value>(text)
    {
        write_canonical(&value, out);
        return;
    }
    write_canonical(&Value::String(text.to_owned()), out);
}

/// Plain JSON of an `AnyValue` (strings, numbers, booleans, arrays, objects; bytes as base64).
fn any_value_json(value: &AnyValue) -> Value {
    use any_value::Value as V;
    match &value.value {
        None => Value::Null,
        Some(V::StringValue(text)) => Value::String(text.clone()),
        Some(V::BoolValue(flag)) => Value::Bool(*flag),
        Some(V::IntValue(number)) => Value::from(*number),
        Some(V::DoubleValue(number)) => serde_json::Number::from_f64(*number)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(number.to_string())),
        Some(V::ArrayValue(array)) => {
            Value::Array(array.values.iter().map(any_value_json).collect())
        }
        Some(V::KvlistValue(list)) => Value::Object(
            list.values
                .iter()
                .map(|pair| {
                    (
                        pair.key.clone(),
                        pair.value
                            .as_ref()
                            .map(any_value_json)
                            .unwrap_or(Value::Null),
                    )
                })
                .collect(),
        ),
        Some(V::BytesValue(bytes)) => {
            use base64::Engine as _;
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        Some(V::StringValueStrindex(index)) => Value::from(*index),
    }
}

/// Compact JSON with object keys sorted (whatever map order serde_json was built with).
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// HMAC-SHA256 (RFC 2104) with a 32-byte key.
fn hmac_sha256(key: &[u8; 32], message: &[&[u8]]) -> ContentHash {
    const BLOCK: usize = 64;
    let mut inner_pad = [0x36u8; BLOCK];
    let mut outer_pad = [0x5cu8; BLOCK];
    for (index, byte) in key.iter().enumerate() {
        inner_pad[index] ^= byte;
        outer_pad[index] ^= byte;
    }
    let mut inner = Sha256::new().chain_update(inner_pad);
    for part in message {
        inner.update(part);
    }
    let inner = inner.finalize();
    Sha256::new()
        .chain_update(outer_pad)
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests;
