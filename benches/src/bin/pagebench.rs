//! `pagebench`: how long each view of the web page takes to show its data, in headless
//! Chromium (`testdata::browser`) against a running server.
//!
//! Each view is opened `--repeat` times as a fresh page load; the figure is the page's own
//! `data-ready-ms` (navigation start to the data rendered: HTML, script, the view's queries,
//! drawing). One click figure too: a span's attributes on the run view. The views use the
//! store's newest run, its session and a tool and agent it has.
//!
//! ```sh
//! sightline serve --data /tmp/pb --retention-interval 0s &
//! loadgen --target grpc --traces 40000 --sessions 1000     # about 1M spans
//! pagebench --url http://127.0.0.1:7070 --repeat 7
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use clap::Parser;
use serde_json::Value;
use testdata::browser::Browser;

/// Time the web page's views against a running server.
#[derive(Debug, Parser)]
struct Args {
    /// The server's API address.
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    url: String,
    /// Loads of each view (the median is reported).
    #[arg(long, default_value_t = 7)]
    repeat: usize,
    /// Token for a server with tokens (query scope).
    #[arg(long, env = "SIGHTLINE_TOKEN")]
    token: Option<String>,
}

async fn sql(args: &Args, client: &reqwest::Client, text: &str) -> anyhow::Result<Vec<Value>> {
    let mut request = client
        .post(format!("{}/api/v1/sql", args.url))
        .json(&serde_json::json!({ "sql": text }));
    if let Some(token) = &args.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        return Err(anyhow!("{text}: {status} {body}"));
    }
    Ok(body["rows"].as_array().cloned().unwrap_or_default())
}

fn text(value: &Value) -> anyhow::Result<String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("expected text, got {value}"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn ready_ms(browser: &mut Browser, view: &str) -> anyhow::Result<f64> {
    let value = browser
        .wait_for(
            &format!(
                "document.body.dataset.ready === '{view}' && Number(document.body.dataset.readyMs)"
            ),
            Duration::from_secs(120),
        )
        .await
        .map_err(|error| anyhow!(error))?;
    let failed = browser
        .eval("!!document.querySelector('main p.error, main div.error')")
        .await
        .map_err(|error| anyhow!(error))?;
    if failed == Value::Bool(true) {
        let shown = browser
            .eval("document.querySelector('main p.error, main div.error').innerText")
            .await
            .map_err(|error| anyhow!(error))?;
        return Err(anyhow!("the {view} view shows an error: {shown}"));
    }
    value.as_f64().context("data-ready-ms is not a number")
}

#[tokio::main]
#[allow(clippy::print_stdout)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::new();
    let spans = sql(&args, &client, "SELECT count(*) FROM spans").await?;
    let run = sql(
        &args,
        &client,
        "SELECT trace_id, session_id, agent_name FROM agent_runs ORDER BY start_time DESC LIMIT 1",
    )
    .await?;
    let run = run.first().context("the store has no agent run")?;
    let (trace, session, agent) = (text(&run[0])?, text(&run[1])?, text(&run[2])?);
    let tool = text(
        &sql(
            &args,
            &client,
            &format!("SELECT tool_name FROM tool_calls WHERE trace_id = '{trace}' LIMIT 1"),
        )
        .await?
        .first()
        .context("the run has no tool call")?[0],
    )?;
    let span = text(
        &sql(
            &args,
            &client,
            &format!(
                "SELECT span_id FROM spans WHERE trace_id = '{trace}' AND tool_name IS NOT NULL LIMIT 1"
            ),
        )
        .await?[0][0],
    )?;
    let views = [
        (
            "sessions, all time",
            "/sessions?range=all".to_owned(),
            "sessions",
        ),
        (
            "sessions, last 7 days",
            "/sessions?range=7d".to_owned(),
            "sessions",
        ),
        (
            "runs, all time",
            "/sessions?range=all&view=runs".to_owned(),
            "sessions",
        ),
        (
            "runs of one agent, tool and verdict deny",
            format!("/sessions?range=all&view=runs&agent={agent}&tool={tool}&verdict=deny"),
            "sessions",
        ),
        (
            "runs of one session",
            format!("/sessions?range=all&view=runs&session={session}"),
            "sessions",
        ),
        ("one run", format!("/runs/{trace}"), "run"),
        (
            "monitoring, all time",
            "/monitoring?range=all".to_owned(),
            "monitoring",
        ),
        (
            "monitoring, last 7 days",
            "/monitoring?range=7d".to_owned(),
            "monitoring",
        ),
    ];
    let mut browser = Browser::launch(1400, 1000)
        .await
        .map_err(|error| anyhow!(error))?;
    if let Some(token) = &args.token {
        browser
            .goto(&format!("{}/healthz", args.url))
            .await
            .map_err(|error| anyhow!(error))?;
        browser
            .eval(&format!(
                "localStorage.setItem('sightline.token', {token:?})"
            ))
            .await
            .map_err(|error| anyhow!(error))?;
    }
    println!(
        "store: {} spans; median of {} loads, ms from navigation start to the data shown",
        spans[0][0], args.repeat
    );
    println!("| view | median ms | min | max |");
    println!("|---|---|---|---|");
    for (name, path, view) in &views {
        let mut times = Vec::new();
        for _ in 0..args.repeat {
            browser
                .goto(&format!("{}{path}", args.url))
                .await
                .map_err(|error| anyhow!(error))?;
            times.push(ready_ms(&mut browser, view).await?);
        }
        let (min, max) = (
            times.iter().copied().fold(f64::MAX, f64::min),
            times.iter().copied().fold(0.0, f64::max),
        );
        println!("| {name} | {:.0} | {min:.0} | {max:.0} |", median(times));
    }
    // One click: a span's attributes (the trace's OTLP record, fetched on the first click).
    let mut clicks = Vec::new();
    for _ in 0..args.repeat {
        browser
            .goto(&format!("{}/runs/{trace}", args.url))
            .await
            .map_err(|error| anyhow!(error))?;
        ready_ms(&mut browser, "run").await?;
        let started = Instant::now();
        browser
            .eval(&format!(
                "document.querySelector('.wf-row[data-span=\"{span}\"]').click()"
            ))
            .await
            .map_err(|error| anyhow!(error))?;
        browser
            .wait_for(
                &format!(
                    "document.querySelector('.span-details[data-span=\"{span}\"][data-loaded=yes]')"
                ),
                Duration::from_secs(60),
            )
            .await
            .map_err(|error| anyhow!(error))?;
        clicks.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "| click a span: its attributes shown | {:.0} | | |",
        median(clicks)
    );
    Ok(())
}
