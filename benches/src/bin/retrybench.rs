//! `retrybench`: how well `tool_calls` infers tool-call retries that carry no `agent.retry.*`
//! attributes, measured on a seeded corpus where every true retry is labelled.
//!
//! 1. Generate agent traces with model reissues of failed tool calls
//!    (`AgentTraceConfig::tool_reissue_percent`) and labels on them
//!    (`AgentTraceIter::label_reissues`), so every `execute_tool` span that is a retry carries
//!    `agent.retry.attempt > 0`: the framework's retries (same call id) and the model's reissues
//!    (new call id, same arguments). Ground truth: `agent.retry.attempt > 0`.
//! 2. Strip every `agent.retry.*` attribute from every span.
//! 3. Ingest the stripped requests into a fresh embedded store as `sightline serve` does
//!    (`ingest::prepare` with content capture on, then `write_batch`; no retention
//!    rules), seal, and read
//!    `SELECT trace_id, span_id, is_retry, retry_source, attempt FROM tool_calls`.
//! 4. Compare: recall = true retries found / true retries; false-positive rate = non-retries
//!    flagged / non-retries; false-discovery share = flagged but not retries / flagged.
//!
//! HTTP resends: a tool call with a child span carrying `http.request.resend_count > 0` is an
//! explicit retry of another kind (its HTTP client resent a request within one execution), and
//! stripping `agent.retry.*` leaves it explicit. It is not a tool-call retry in the ground
//! truth, and explicit takes precedence over inferred in `retry_source`. So the inference
//! verdict of a call is `retry_source = 'inferred'`, or, for such an explicit call, `attempt > 0`
//! (`attempt` is still inferred when the span has no `agent.retry.attempt`). Calls flagged only
//! because of an HTTP resend are counted apart (`http_resend_only`), and the figures as
//! `is_retry` shows them (HTTP resends counted as false positives) are printed too.
//!
//! ```sh
//! cargo run --release -p benches --bin retrybench -- --traces 5000 --seed 42 --reissue-percent 60
//! ```
//!
//! The last line of output is a JSON summary.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use serde_json::{Value, json};

/// Measure tool-call retry inference against labelled ground truth.
#[derive(Debug, Parser)]
struct Args {
    /// Traces (agent runs) to generate.
    #[arg(long, default_value_t = 5_000)]
    traces: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Percent of tool calls failed for good that the model issues again
    /// (`AgentTraceConfig::tool_reissue_percent`).
    #[arg(long, default_value_t = 60)]
    reissue_percent: u32,
    /// Sessions the traces are spread over.
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    /// Traces per export request.
    #[arg(long, default_value_t = 20)]
    traces_per_request: usize,
    /// Data directory (must not exist, or be empty; removed afterwards). Default: a fresh
    /// directory under the system temp directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Misses (false negatives and false positives) to list.
    #[arg(long, default_value_t = 10)]
    show: usize,
}

/// What the labelled corpus says about one `execute_tool` span.
#[derive(Debug, Clone)]
struct Truth {
    /// `agent.retry.attempt > 0`.
    retry: bool,
    /// `agent.retry.initiator` (`framework`, `model`), when labelled.
    initiator: Option<String>,
    /// A child span has `http.request.resend_count > 0`.
    http_resent: bool,
    tool: String,
    failed: bool,
}

/// One row of `tool_calls`.
#[derive(Debug, Clone)]
struct Verdict {
    is_retry: bool,
    retry_source: Option<String>,
    attempt: i64,
}

impl Verdict {
    /// Inference said retry (see the module docs on HTTP resends).
    fn inferred(&self) -> bool {
        match self.retry_source.as_deref() {
            Some("inferred") => true,
            Some("explicit") => self.attempt > 0,
            _ => false,
        }
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|pair| pair.key == key)
        .and_then(|pair| pair.value.as_ref())
        .and_then(|value| value.value.as_ref())
}

fn int_attribute(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key)? {
        any_value::Value::IntValue(value) => Some(*value),
        any_value::Value::StringValue(text) => text.trim().parse().ok(),
        _ => None,
    }
}

fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attribute(attributes, key)? {
        any_value::Value::StringValue(text) => Some(text),
        _ => None,
    }
}

fn spans_mut(resource_spans: &mut [ResourceSpans]) -> impl Iterator<Item = &mut Span> {
    resource_spans
        .iter_mut()
        .flat_map(|resource| resource.scope_spans.iter_mut())
        .flat_map(|scope| scope.spans.iter_mut())
}

/// Removes every `agent.retry.*` attribute of every span (and span event); returns how many.
fn strip_retry_attributes(resource_spans: &mut [ResourceSpans]) -> usize {
    let mut removed = 0;
    let mut strip = |attributes: &mut Vec<KeyValue>| {
        let before = attributes.len();
        attributes.retain(|pair| !pair.key.starts_with("agent.retry."));
        removed += before - attributes.len();
    };
    for span in spans_mut(resource_spans) {
        strip(&mut span.attributes);
        for event in &mut span.events {
            strip(&mut event.attributes);
        }
    }
    removed
}

/// The labelled corpus, stripped, as export requests, with the ground truth per tool span.
#[derive(Debug, Default)]
struct Corpus {
    requests: Vec<ExportTraceServiceRequest>,
    spans: usize,
    truth: HashMap<(String, String), Truth>,
    stripped_attributes: usize,
}

fn corpus(args: &Args) -> Corpus {
    let config = testdata::AgentTraceConfig {
        seed: args.seed,
        traces: args.traces,
        sessions: args.sessions,
        tool_reissue_percent: args.reissue_percent,
        ..testdata::AgentTraceConfig::default()
    };
    let mut corpus = Corpus::default();
    let mut pending: Vec<ResourceSpans> = Vec::new();
    let mut pending_traces = 0;
    for trace in testdata::agent_trace_iter(&config).label_reissues() {
        let mut resource_spans = trace.resource_spans;
        let trace_id = hex::encode(trace.trace_id);
        let resent: HashSet<Vec<u8>> = spans_mut(&mut resource_spans)
            .filter(|span| {
                int_attribute(&span.attributes, "http.request.resend_count")
                    .is_some_and(|count| count > 0)
            })
            .map(|span| span.parent_span_id.clone())
            .collect();
        for span in spans_mut(&mut resource_spans) {
            corpus.spans += 1;
            if string_attribute(&span.attributes, "gen_ai.operation.name") != Some("execute_tool") {
                continue;
            }
            let truth = Truth {
                retry: int_attribute(&span.attributes, "agent.retry.attempt")
                    .is_some_and(|attempt| attempt > 0),
                initiator: string_attribute(&span.attributes, "agent.retry.initiator")
                    .map(str::to_owned),
                http_resent: resent.contains(&span.span_id),
                tool: string_attribute(&span.attributes, "gen_ai.tool.name")
                    .unwrap_or_default()
                    .to_owned(),
                failed: span.status.as_ref().is_some_and(|status| status.code == 2),
            };
            corpus
                .truth
                .insert((trace_id.clone(), hex::encode(&span.span_id)), truth);
        }
        corpus.stripped_attributes += strip_retry_attributes(&mut resource_spans);
        for spans in resource_spans {
            testdata::merge_resource_spans(&mut pending, spans);
        }
        pending_traces += 1;
        if pending_traces == args.traces_per_request.max(1) {
            corpus.requests.push(ExportTraceServiceRequest {
                resource_spans: std::mem::take(&mut pending),
            });
            pending_traces = 0;
        }
    }
    if !pending.is_empty() {
        corpus.requests.push(ExportTraceServiceRequest {
            resource_spans: pending,
        });
    }
    corpus
}

/// Ingests like the server (`ingest::prepare`, content capture on, no rules), seals, and reads
/// `tool_calls`.
fn ingest_and_query(
    corpus: &Corpus,
    dir: &std::path::Path,
) -> anyhow::Result<HashMap<(String, String), Verdict>> {
    let engine = Arc::new(
        engine::Engine::open(dir, engine::Options::default())
            .with_context(|| format!("open {}", dir.display()))?,
    );
    let policy = ingest::ContentPolicy::new(true, &[], engine.content_digest_key()?)?;
    for request in &corpus.requests {
        let write = ingest::prepare(request.clone(), &policy, &engine::NoTierRules)?;
        if write.spans.num_rows() == 0 {
            continue;
        }
        engine.write_batch(write)?;
    }
    engine.seal()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let options = query::Options::default()
        .with_max_result_rows(usize::MAX)
        .with_memory_limit(4 << 30);
    let sql = query::SqlEngine::new(Arc::clone(&engine), options)?;
    let output = runtime.block_on(
        sql.execute("SELECT trace_id, span_id, is_retry, retry_source, attempt FROM tool_calls"),
    )?;
    let json = query::format::to_json(&output);
    let mut verdicts = HashMap::new();
    for row in json["rows"].as_array().into_iter().flatten() {
        let text = |index: usize| row[index].as_str().map(str::to_owned);
        let key = (text(0).unwrap_or_default(), text(1).unwrap_or_default());
        let verdict = Verdict {
            is_retry: row[2].as_bool().unwrap_or(false),
            retry_source: text(3),
            attempt: row[4].as_i64().unwrap_or(0),
        };
        anyhow::ensure!(
            verdicts.insert(key.clone(), verdict).is_none(),
            "tool_calls has span {key:?} twice"
        );
    }
    drop(sql);
    engine.close()?;
    Ok(verdicts)
}

/// The comparison of verdicts with the ground truth.
#[derive(Debug, Default)]
struct Score {
    tool_calls: usize,
    true_retries: usize,
    /// True retries by `agent.retry.initiator`.
    true_by_initiator: BTreeMap<String, usize>,
    found: usize,
    found_by_initiator: BTreeMap<String, usize>,
    non_retries: usize,
    false_positives: usize,
    /// Non-retries with an HTTP resend child (explicit by design, not counted above).
    http_resent_calls: usize,
    /// Calls `is_retry` flags only because of an HTTP resend.
    http_resend_only: usize,
    /// True retries with an HTTP resend child (explicit in `retry_source`; found by `attempt`).
    true_retries_http_resent: usize,
    /// `is_retry` as the view says it, against the ground truth.
    view_flagged: usize,
    view_true_positives: usize,
    /// `explicit` rows without an HTTP resend child: stripping missed something.
    unexplained_explicit: usize,
    missing_rows: usize,
    extra_rows: usize,
    false_negative_examples: Vec<String>,
    false_positive_examples: Vec<String>,
}

fn score(
    truth: &HashMap<(String, String), Truth>,
    verdicts: &HashMap<(String, String), Verdict>,
    show: usize,
) -> Score {
    let mut score = Score {
        extra_rows: verdicts
            .keys()
            .filter(|key| !truth.contains_key(*key))
            .count(),
        ..Score::default()
    };
    let mut keys: Vec<&(String, String)> = truth.keys().collect();
    keys.sort();
    for key in keys {
        let expected = &truth[key];
        let Some(verdict) = verdicts.get(key) else {
            score.missing_rows += 1;
            continue;
        };
        score.tool_calls += 1;
        let inferred = verdict.inferred();
        let initiator = expected
            .initiator
            .clone()
            .unwrap_or_else(|| "none".to_owned());
        if verdict.retry_source.as_deref() == Some("explicit") && !expected.http_resent {
            score.unexplained_explicit += 1;
        }
        if verdict.is_retry {
            score.view_flagged += 1;
            score.view_true_positives += usize::from(expected.retry);
        }
        let describe = || {
            format!(
                "trace {} span {} tool {} initiator {initiator} failed {} http_resent {} -> is_retry {} source {:?} attempt {}",
                key.0,
                key.1,
                expected.tool,
                expected.failed,
                expected.http_resent,
                verdict.is_retry,
                verdict.retry_source,
                verdict.attempt
            )
        };
        if expected.retry {
            score.true_retries += 1;
            score.true_retries_http_resent += usize::from(expected.http_resent);
            *score
                .true_by_initiator
                .entry(initiator.clone())
                .or_default() += 1;
            if inferred {
                score.found += 1;
                *score.found_by_initiator.entry(initiator).or_default() += 1;
            } else if score.false_negative_examples.len() < show {
                score.false_negative_examples.push(describe());
            }
        } else {
            score.non_retries += 1;
            if expected.http_resent {
                score.http_resent_calls += 1;
            }
            if verdict.is_retry && !inferred {
                score.http_resend_only += 1;
            }
            if inferred {
                score.false_positives += 1;
                if score.false_positive_examples.len() < show {
                    score.false_positive_examples.push(describe());
                }
            }
        }
    }
    score
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[allow(clippy::print_stdout)]
fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (dir, remove) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("retrybench-{}", std::process::id())),
            true,
        ),
    };
    if dir.exists() {
        anyhow::ensure!(
            std::fs::read_dir(&dir)?.next().is_none(),
            "{} is not empty",
            dir.display()
        );
    }
    let started = Instant::now();
    let corpus = corpus(&args);
    let generated = started.elapsed();
    let verdicts = ingest_and_query(&corpus, &dir);
    if remove {
        std::fs::remove_dir_all(&dir).ok();
    }
    let verdicts = verdicts?;
    let score = score(&corpus.truth, &verdicts, args.show);

    let recall = ratio(score.found, score.true_retries);
    let false_positive_rate = ratio(score.false_positives, score.non_retries);
    let flagged = score.found + score.false_positives;
    let false_discovery = ratio(score.false_positives, flagged);
    let view_false_positives = score.view_flagged - score.view_true_positives;
    println!(
        "corpus: {} traces (seed {}, reissue {}%), {} spans, {} tool calls, {} agent.retry.* attributes stripped; generated in {:.1} s, ingested and queried in {:.1} s",
        args.traces,
        args.seed,
        args.reissue_percent,
        corpus.spans,
        score.tool_calls,
        corpus.stripped_attributes,
        generated.as_secs_f64(),
        (started.elapsed() - generated).as_secs_f64()
    );
    println!(
        "ground truth: {} true retries ({}), {} non-retries",
        score.true_retries,
        score
            .true_by_initiator
            .iter()
            .map(|(initiator, count)| format!("{initiator} {count}"))
            .collect::<Vec<_>>()
            .join(", "),
        score.non_retries
    );
    println!(
        "inference: recall {}/{} = {:.4} ({}); false positives {}/{} non-retries = {:.4}, {}/{} flagged = {:.4}",
        score.found,
        score.true_retries,
        recall,
        score
            .found_by_initiator
            .iter()
            .map(|(initiator, count)| format!(
                "{initiator} {count}/{}",
                score.true_by_initiator.get(initiator).copied().unwrap_or(0)
            ))
            .collect::<Vec<_>>()
            .join(", "),
        score.false_positives,
        score.non_retries,
        false_positive_rate,
        score.false_positives,
        flagged,
        false_discovery
    );
    println!(
        "HTTP resends: {} non-retry calls have a resent HTTP child; {} are flagged explicit by is_retry only for that (not counted as inference false positives); {} true retries have one too (judged by attempt > 0). is_retry as shown: {} flagged, {} true, {} not tool-call retries = {:.4} of non-retries, {:.4} of flagged",
        score.http_resent_calls,
        score.http_resend_only,
        score.true_retries_http_resent,
        score.view_flagged,
        score.view_true_positives,
        view_false_positives,
        ratio(view_false_positives, score.non_retries),
        ratio(view_false_positives, score.view_flagged)
    );
    if score.missing_rows + score.extra_rows + score.unexplained_explicit > 0 {
        println!(
            "WARNING: {} tool spans missing from tool_calls, {} rows not in the corpus, {} explicit rows without an HTTP resend",
            score.missing_rows, score.extra_rows, score.unexplained_explicit
        );
    }
    for example in &score.false_negative_examples {
        println!("missed: {example}");
    }
    for example in &score.false_positive_examples {
        println!("false positive: {example}");
    }
    let summary: Value = json!({
        "traces": args.traces,
        "seed": args.seed,
        "reissue_percent": args.reissue_percent,
        "spans": corpus.spans,
        "tool_calls": score.tool_calls,
        "stripped_attributes": corpus.stripped_attributes,
        "true_retries": score.true_retries,
        "true_retries_by_initiator": score.true_by_initiator,
        "found": score.found,
        "found_by_initiator": score.found_by_initiator,
        "non_retries": score.non_retries,
        "false_positives": score.false_positives,
        "recall": recall,
        "false_positive_rate": false_positive_rate,
        "false_discovery_share": false_discovery,
        "http_resent_calls": score.http_resent_calls,
        "http_resend_only": score.http_resend_only,
        "true_retries_http_resent": score.true_retries_http_resent,
        "view_flagged": score.view_flagged,
        "view_false_positives": view_false_positives,
        "missing_rows": score.missing_rows,
        "extra_rows": score.extra_rows,
        "unexplained_explicit": score.unexplained_explicit,
    });
    println!("{summary}");
    Ok(())
}
