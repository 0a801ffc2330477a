//! `contentbench`: bytes per span with content, naive vs deduplicated, for a seeded corpus of
//! agent runs that resend their whole history every turn.
//!
//! Each run is one trace: an `invoke_agent` root and one `chat` span per turn whose
//! `gen_ai.input.messages` holds the history so far (system prompt, then alternating user,
//! assistant and tool messages) and whose `gen_ai.output.messages` holds the turn's answer. The
//! same requests are stored twice, each time in a fresh data directory, and sealed:
//!
//! - **naive**: content kept inline in the span rows (no extraction, what a store without a
//!   content store does);
//! - **deduplicated**: `ingest::extract` first (no redaction rules, so only extraction costs),
//!   then `Engine::write_batch` (`ingest::prepare`), as `sightline serve` does.
//!
//! ```sh
//! cargo run --release -p benches --bin contentbench -- --runs 200 --seed 42
//! ```

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde_json::json;

/// Store a seeded history-resending corpus naive and deduplicated, and compare bytes per span.
#[derive(Debug, Parser)]
struct Args {
    /// Agent runs (one trace each).
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Fewest turns per run.
    #[arg(long, default_value_t = 10)]
    min_turns: usize,
    /// Most turns per run.
    #[arg(long, default_value_t = 30)]
    max_turns: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Directory for the two data directories (`naive/`, `dedup/`; emptied first).
    #[arg(long, default_value = "/tmp/contentbench")]
    dir: std::path::PathBuf,
}

/// SplitMix64: small, seeded, and the same on every platform.
#[derive(Debug)]
struct Prng(u64);

impl Prng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    fn between(&mut self, low: usize, high: usize) -> usize {
        low + (self.next_u64() % (high - low + 1) as u64) as usize
    }
}

/// Text of roughly `bytes` bytes drawn from a fixed vocabulary (so zstd sees text-like entropy,
/// not random bytes and not one repeated phrase).
fn prose(rng: &mut Prng, vocabulary: &[String], bytes: usize) -> String {
    let mut text = String::with_capacity(bytes + 16);
    while text.len() < bytes {
        if !text.is_empty() {
            text.push(if rng.next_u64().is_multiple_of(12) {
                '.'
            } else {
                ' '
            });
            if text.ends_with('.') {
                text.push(' ');
            }
        }
        // Zipf-like: low indexes are much more frequent, as in natural text.
        let rank = (rng.next_u64() % vocabulary.len() as u64) as usize;
        let rank = rank * (rng.next_u64() % vocabulary.len() as u64) as usize / vocabulary.len();
        text.push_str(&vocabulary[rank]);
    }
    text
}

fn vocabulary(rng: &mut Prng) -> Vec<String> {
    const SYLLABLES: &[&str] = &[
        "ta", "re", "con", "fig", "ser", "vi", "ce", "da", "ta", "ba", "se", "lo", "ad", "in",
        "dex", "quer", "y", "ro", "ute", "han", "dle", "er", "ror", "file", "path", "mod", "ule",
        "test", "build", "run", "ca", "che", "to", "ken", "user", "ap", "i", "re", "sult",
    ];
    (0..3000)
        .map(|_| {
            let syllables = 1 + rng.next_u64() % 4;
            (0..syllables)
                .map(|_| SYLLABLES[(rng.next_u64() % SYLLABLES.len() as u64) as usize])
                .collect()
        })
        .collect()
}

fn string_attribute(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..KeyValue::default()
    }
}

fn int_attribute(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..KeyValue::default()
    }
}

/// Counts of the generated corpus.
#[derive(Debug, Default)]
struct Corpus {
    requests: Vec<ExportTraceServiceRequest>,
    spans: u64,
    chat_spans: u64,
    /// Messages as sent (every occurrence in every input and output attribute).
    messages_sent: u64,
    /// Distinct messages (each system prompt, user, assistant and tool message once).
    messages_distinct: u64,
    /// UTF-8 bytes of every content attribute value.
    content_bytes: u64,
    /// UTF-8 bytes of the distinct messages.
    distinct_bytes: u64,
}

/// One request per run: the run's root span and its chat spans.
fn corpus(args: &Args) -> Corpus {
    let mut rng = Prng(args.seed);
    let vocabulary = vocabulary(&mut rng);
    let mut corpus = Corpus::default();
    let start = 1_767_225_600_000_000_000u64; // 2026-01-01
    for run in 0..args.runs {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
        trace_id[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
        let root_id = rng.next_u64().to_be_bytes();
        let run_start = start + run as u64 * 60_000_000_000;
        let turns = rng.between(args.min_turns, args.max_turns);
        // A few system prompts shared by all runs, as a fleet of agents would have.
        let system_variant = rng.next_u64() % 4;
        let mut system_rng = Prng(args.seed ^ system_variant.wrapping_mul(0x51ed_270b));
        let system = json!({"role": "system", "parts": [{"type": "text",
            "content": prose(&mut system_rng, &vocabulary, 1500)}]});
        let mut history = vec![system.to_string()];
        corpus.messages_distinct += 1;
        if run < 4 {
            corpus.distinct_bytes += history[0].len() as u64;
        }
        let mut spans = Vec::with_capacity(turns + 1);
        let mut time = run_start;
        for turn in 0..turns {
            // Each turn adds a user message, or the result of the previous turn's tool call.
            let incoming = if turn == 0 || rng.next_u64().is_multiple_of(2) {
                let size = rng.between(200, 2000);
                json!({"role": "user", "parts": [{"type": "text",
                    "content": prose(&mut rng, &vocabulary, size)}]})
            } else {
                let size = rng.between(200, 2000);
                json!({"role": "tool", "parts": [{"type": "tool_call_response",
                    "id": format!("call_{run}_{turn}"),
                    "response": prose(&mut rng, &vocabulary, size)}]})
            };
            history.push(incoming.to_string());
            corpus.messages_distinct += 1;
            corpus.distinct_bytes += history[history.len() - 1].len() as u64;
            let input = format!("[{}]", history.join(","));
            let answer_size = rng.between(200, 2000);
            let answer = if rng.next_u64().is_multiple_of(3) {
                json!({"role": "assistant", "parts": [
                    {"type": "text", "content": prose(&mut rng, &vocabulary, answer_size / 2)},
                    {"type": "tool_call", "id": format!("call_{run}_{}", turn + 1),
                     "name": "search", "arguments": {"query": prose(&mut rng, &vocabulary, answer_size / 2)}}
                ], "finish_reason": "tool_call"})
            } else {
                json!({"role": "assistant", "parts": [{"type": "text",
                    "content": prose(&mut rng, &vocabulary, answer_size)}],
                    "finish_reason": "stop"})
            }
            .to_string();
            corpus.messages_distinct += 1;
            corpus.distinct_bytes += answer.len() as u64;
            corpus.messages_sent += history.len() as u64 + 1;
            let output = format!("[{answer}]");
            corpus.content_bytes += (input.len() + output.len()) as u64;
            let duration = 500_000_000 + rng.next_u64() % 5_000_000_000;
            let input_tokens = (input.len() / 4) as i64;
            let output_tokens = (output.len() / 4) as i64;
            spans.push(Span {
                trace_id: trace_id.to_vec(),
                span_id: rng.next_u64().to_be_bytes().to_vec(),
                parent_span_id: root_id.to_vec(),
                name: "chat gpt-4o".to_owned(),
                kind: 3,
                start_time_unix_nano: time,
                end_time_unix_nano: time + duration,
                attributes: vec![
                    string_attribute("gen_ai.operation.name", "chat".to_owned()),
                    string_attribute("gen_ai.request.model", "gpt-4o".to_owned()),
                    int_attribute("gen_ai.usage.input_tokens", input_tokens),
                    int_attribute("gen_ai.usage.output_tokens", output_tokens),
                    string_attribute("gen_ai.input.messages", input),
                    string_attribute("gen_ai.output.messages", output),
                ],
                ..Span::default()
            });
            time += duration + 1_000_000;
            history.push(answer);
        }
        spans.push(Span {
            trace_id: trace_id.to_vec(),
            span_id: root_id.to_vec(),
            name: "invoke_agent support".to_owned(),
            kind: 1,
            start_time_unix_nano: run_start,
            end_time_unix_nano: time,
            attributes: vec![
                string_attribute("gen_ai.operation.name", "invoke_agent".to_owned()),
                string_attribute("gen_ai.agent.name", "support".to_owned()),
                string_attribute("gen_ai.conversation.id", format!("conv-{run}")),
            ],
            ..Span::default()
        });
        corpus.spans += spans.len() as u64;
        corpus.chat_spans += turns as u64;
        corpus.requests.push(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string_attribute("service.name", "agent".to_owned())],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        });
    }
    // The system prompts are shared: count each variant once.
    corpus.messages_distinct -= args.runs as u64;
    corpus.messages_distinct += 4.min(args.runs as u64);
    corpus
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0)
}

/// What one store of the corpus took.
#[derive(Debug, Default)]
struct Stored {
    segment_bytes: u64,
    segment_rows: u64,
    content_bytes: u64,
    reference_bytes: u64,
    messages: u64,
    references: u64,
    redb_bytes: u64,
    /// Every file of the data directory after close.
    dir_bytes: u64,
    seconds: f64,
}

/// Bytes of every file under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                total += file_size(&path);
            }
        }
    }
    total
}

fn store(corpus: &Corpus, dir: &Path, deduplicate: bool) -> anyhow::Result<Stored> {
    let engine = engine::Engine::open(dir, engine::Options::default())
        .with_context(|| format!("open {}", dir.display()))?;
    let policy = ingest::ContentPolicy::new(true, &[], engine.content_digest_key()?)?;
    let mut stored = Stored::default();
    let started = Instant::now();
    for request in &corpus.requests {
        if deduplicate {
            // As the server stores a request: one pipeline call, one write (spans and content
            // in one transaction).
            engine.write_batch(ingest::prepare(
                request.clone(),
                &policy,
                &engine::NoTierRules,
            )?)?;
        } else {
            engine.write(ingest::to_span_batch(request)?.batch)?;
        }
    }
    engine.seal()?;
    stored.seconds = started.elapsed().as_secs_f64();
    let stats = engine.stats();
    stored.segment_bytes = stats.segment_bytes;
    stored.segment_rows = stats.segment_rows;
    let content = engine.content_stats()?;
    stored.content_bytes = content.bytes;
    stored.messages = content.messages;
    stored.references = content.references;
    // Encoded (uncompressed) size of the references; they are stored in the span rows, so
    // the segment bytes include them compressed.
    stored.reference_bytes = content.reference_bytes;
    engine.close()?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "redb") {
            stored.redb_bytes += file_size(&path);
        }
    }
    stored.dir_bytes = dir_size(dir);
    Ok(stored)
}

#[allow(clippy::print_stdout)]
fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.min_turns >= 1 && args.min_turns <= args.max_turns,
        "--min-turns must be at least 1 and at most --max-turns"
    );
    let root = &args.dir;
    for store in ["naive", "dedup"] {
        let path = root.join(store);
        if path.exists() {
            std::fs::remove_dir_all(&path).with_context(|| format!("empty {}", path.display()))?;
        }
    }
    let corpus = corpus(&args);
    println!(
        "corpus: {} runs, {} spans ({} chat), {} messages sent, {} distinct ({:.1} MB), {:.1} MB of content attributes ({:.0} B per chat span)",
        args.runs,
        corpus.spans,
        corpus.chat_spans,
        corpus.messages_sent,
        corpus.messages_distinct,
        corpus.distinct_bytes as f64 / 1e6,
        corpus.content_bytes as f64 / 1e6,
        corpus.content_bytes as f64 / corpus.chat_spans.max(1) as f64
    );
    let naive = store(&corpus, &root.join("naive"), false)?;
    let dedup = store(&corpus, &root.join("dedup"), true)?;
    anyhow::ensure!(
        naive.segment_rows == corpus.spans && dedup.segment_rows == corpus.spans,
        "stored {} and {} rows of {} spans",
        naive.segment_rows,
        dedup.segment_rows,
        corpus.spans
    );
    let spans = corpus.spans as f64;
    let naive_total = naive.segment_bytes;
    let dedup_total = dedup.dir_bytes;
    println!(
        "naive:        segments {} B = {:.1} B/span; redb file {} B; stored in {:.2} s",
        naive.segment_bytes,
        naive.segment_bytes as f64 / spans,
        naive.redb_bytes,
        naive.seconds
    );
    println!(
        "deduplicated: segments {} B = {:.1} B/span (references included, {} B = {:.1} B/span before compression); content segments {} B = {:.1} B/span; redb file {} B; whole directory {} B; stored in {:.2} s",
        dedup.segment_bytes,
        dedup.segment_bytes as f64 / spans,
        dedup.reference_bytes,
        dedup.reference_bytes as f64 / spans,
        dedup.content_bytes,
        dedup.content_bytes as f64 / spans,
        dedup.redb_bytes,
        dedup.dir_bytes,
        dedup.seconds
    );
    println!(
        "messages: {} sent, {} stored, {} references",
        corpus.messages_sent, dedup.messages, dedup.references
    );
    println!(
        "bytes per span: naive segments (zstd Parquet, content inline) {:.1}, deduplicated whole data directory {:.1}: {:.2}x the naive Parquet",
        naive_total as f64 / spans,
        dedup_total as f64 / spans,
        dedup_total as f64 / naive_total.max(1) as f64
    );
    println!(
        "{{\"runs\":{},\"spans\":{},\"chat_spans\":{},\"content_bytes\":{},\"messages_sent\":{},\"messages_stored\":{},\"references\":{},\"naive_segment_bytes\":{},\"naive_redb_bytes\":{},\"dedup_segment_bytes\":{},\"dedup_content_bytes\":{},\"dedup_reference_bytes\":{},\"dedup_redb_bytes\":{},\"dedup_dir_bytes\":{},\"naive_bytes_per_span\":{:.1},\"dedup_bytes_per_span\":{:.1},\"dir_to_parquet\":{:.2}}}",
        args.runs,
        corpus.spans,
        corpus.chat_spans,
        corpus.content_bytes,
        corpus.messages_sent,
        dedup.messages,
        dedup.references,
        naive.segment_bytes,
        naive.redb_bytes,
        dedup.segment_bytes,
        dedup.content_bytes,
        dedup.reference_bytes,
        dedup.redb_bytes,
        dedup.dir_bytes,
        naive_total as f64 / spans,
        dedup_total as f64 / spans,
        dedup_total as f64 / naive_total.max(1) as f64
    );
    Ok(())
}
