//! Tool-call retry inference against labelled ground truth: runs the `retrybench` binary on a
//! small seeded corpus (every true retry labelled with `agent.retry.attempt`, then every
//! `agent.retry.*` attribute stripped before ingest) and checks the correctness bounds of issue
//! 10: recall >= 95%, false positives <= 2%. These are bounds on counts, not timings.

use std::process::Command;

use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

fn retrybench(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let output = Command::new(env!("CARGO_BIN_EXE_retrybench"))
        .args(args)
        .arg("--dir")
        .arg(&data)
        .output()
        .expect("run retrybench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "retrybench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|error| panic!("last line is not JSON ({error}):\n{stdout}"))
}

fn count(summary: &serde_json::Value, key: &str) -> u64 {
    summary[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing: {summary}"))
}

fn share(summary: &serde_json::Value, key: &str) -> f64 {
    summary[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing: {summary}"))
}

#[test]
fn retry_inference_finds_unlabelled_retries_with_few_false_positives() {
    for seed in ["42", "7"] {
        let summary = retrybench(&["--traces", "300", "--seed", seed, "--reissue-percent", "60"]);
        // The corpus is non-trivial: framework retries and model reissues both occur.
        assert!(count(&summary, "true_retries") >= 20, "{summary}");
        assert!(
            summary["true_retries_by_initiator"]["model"].as_u64() >= Some(5),
            "{summary}"
        );
        assert!(
            summary["true_retries_by_initiator"]["framework"].as_u64() >= Some(5),
            "{summary}"
        );
        assert!(count(&summary, "non_retries") >= 500, "{summary}");
        assert!(count(&summary, "stripped_attributes") > 0, "{summary}");
        // Every tool span is one row of tool_calls, and nothing explicit is left but HTTP
        // resends.
        assert_eq!(count(&summary, "missing_rows"), 0, "{summary}");
        assert_eq!(count(&summary, "extra_rows"), 0, "{summary}");
        assert_eq!(count(&summary, "unexplained_explicit"), 0, "{summary}");
        // The bounds.
        assert!(share(&summary, "recall") >= 0.95, "{summary}");
        assert!(share(&summary, "false_positive_rate") <= 0.02, "{summary}");
        assert!(
            share(&summary, "false_discovery_share") <= 0.02,
            "{summary}"
        );
    }
}

fn without_retry_attributes(mut resource_spans: Vec<ResourceSpans>) -> Vec<ResourceSpans> {
    for span in resource_spans
        .iter_mut()
        .flat_map(|resource| resource.scope_spans.iter_mut())
        .flat_map(|scope| scope.spans.iter_mut())
    {
        span.attributes
            .retain(|pair| !pair.key.starts_with("agent.retry."));
    }
    resource_spans
}

fn int(attributes: &[KeyValue], key: &str) -> Option<i64> {
    attributes
        .iter()
        .find(|pair| pair.key == key)
        .and_then(|pair| pair.value.as_ref()?.value.as_ref())
        .and_then(|value| match value {
            any_value::Value::IntValue(value) => Some(*value),
            _ => None,
        })
}

/// The labels add attributes and nothing else: stripped of `agent.retry.*`, labelled traces are
/// the unlabelled ones; and labelling marks more calls as retries than the framework does.
#[test]
fn labelled_reissues_only_add_retry_attributes() {
    let config = testdata::AgentTraceConfig {
        traces: 200,
        seed: 11,
        tool_reissue_percent: 60,
        ..Default::default()
    };
    let retries = |traces: &[testdata::AgentTrace]| -> usize {
        traces
            .iter()
            .flat_map(|trace| &trace.resource_spans)
            .flat_map(|resource| &resource.scope_spans)
            .flat_map(|scope| &scope.spans)
            .filter(|span| int(&span.attributes, "agent.retry.attempt").is_some_and(|a| a > 0))
            .count()
    };
    let plain: Vec<_> = testdata::agent_trace_iter(&config).collect();
    let labelled: Vec<_> = testdata::agent_trace_iter(&config)
        .label_reissues()
        .collect();
    assert!(
        retries(&labelled) > retries(&plain),
        "{} labelled vs {} plain retries",
        retries(&labelled),
        retries(&plain)
    );
    assert_eq!(plain.len(), labelled.len());
    for (plain, labelled) in plain.into_iter().zip(labelled) {
        assert_eq!(plain.trace_id, labelled.trace_id);
        assert_eq!(plain.spans, labelled.spans);
        assert_eq!(
            without_retry_attributes(plain.resource_spans),
            without_retry_attributes(labelled.resource_spans)
        );
    }
    // Without reissues there is nothing to label.
    let config = testdata::AgentTraceConfig {
        traces: 50,
        ..Default::default()
    };
    let plain: Vec<_> = testdata::agent_trace_iter(&config).collect();
    let labelled: Vec<_> = testdata::agent_trace_iter(&config)
        .label_reissues()
        .collect();
    assert_eq!(plain, labelled);
}
