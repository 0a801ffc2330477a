//! `sightline check-config`, `sightline retention run` (spans and content, each by its own
//! keep) and `sightline retention status`.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine::{ContentStats, Engine, ExpiryReport, TierStatus};

use crate::cli::{CheckConfigArgs, DurationArg, RetentionRunArgs, RetentionStatusArgs};
use crate::config_file::FileConfig;

/// `check-config FILE`: loads and checks the file, prints what it configures.
pub fn check_config(args: &CheckConfigArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let config = FileConfig::load(&args.file)?;
    if let Some(tls) = &config.tls {
        crate::tls::Tls::load(tls)?;
    }
    write!(out, "{}", config.summary())?;
    writeln!(out, "{}: OK", args.file.display())?;
    Ok(())
}

fn load(config: Option<&Path>) -> anyhow::Result<FileConfig> {
    Ok(match config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default_config()?,
    })
}

/// Opens the data directory for a retention command (no server may hold it).
fn open(data_dir: &Path, config: &FileConfig) -> anyhow::Result<Engine> {
    // Never create a store: a mistyped --data is an error, not an empty store.
    anyhow::ensure!(
        data_dir.join("sightline.redb").exists(),
        "{} is not a sightline data directory (no sightline.redb); pass --data DIR",
        data_dir.display()
    );
    let options = engine::Options::default()
        .with_background_sealing(false)
        .with_retention(config.retention.clone());
    Engine::open(data_dir, options).map_err(|error| match error {
        engine::Error::Locked { path } => anyhow::anyhow!(
            "data directory {} is in use by a running server; stop it first (its background retention pass runs every --retention-interval)",
            path.display()
        ),
        other => anyhow::Error::new(other).context("cannot open the data directory"),
    })
}

/// Now, in ns since the epoch.
pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX)
        })
}

/// Parses an RFC 3339 timestamp into ns since the epoch.
pub fn parse_timestamp(text: &str) -> anyhow::Result<i64> {
    arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(text).map_err(|_| {
        anyhow::anyhow!("{text:?} is not an RFC 3339 timestamp like 2027-06-01T00:00:00Z")
    })
}

/// Formats ns since the epoch as RFC 3339 (UTC, seconds).
pub fn format_timestamp(nanos: i64) -> String {
    arrow::temporal_conversions::timestamp_ns_to_datetime(nanos).map_or_else(
        || nanos.to_string(),
        |time| time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// Writes an expiry report.
pub fn write_report(report: &ExpiryReport, out: &mut impl Write) -> std::io::Result<()> {
    let verb = if report.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    for segment in &report.segments {
        let kept = if segment.rows_kept > 0 {
            format!(
                " ({} rows of promoted traces moved to their tier)",
                segment.rows_kept
            )
        } else {
            String::new()
        };
        writeln!(
            out,
            "{verb} segment {} tier={} day={} rows={} bytes={}{kept}",
            segment.id, segment.tier, segment.day, segment.rows, segment.bytes
        )?;
    }
    for refused in &report.refused {
        writeln!(out, "kept: {refused}")?;
    }
    writeln!(
        out,
        "as of {}: {verb} {} segment(s), {} rows, {} bytes{}",
        format_timestamp(report.as_of),
        report.segments.len(),
        report.rows(),
        report.bytes(),
        if report.refused.is_empty() {
            String::new()
        } else {
            format!(
                "; {} segment(s) kept (legal hold, or a tier this configuration does not define)",
                report.refused.len()
            )
        }
    )
}

/// `retention run`: seals what the WAL holds (unless dry run) and deletes expired segments,
/// on a stopped store or, with `--url`, through a running server's admin API.
pub async fn run(args: &RetentionRunArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let as_of = match &args.as_of {
        Some(text) => Some(parse_timestamp(text)?),
        None => None,
    };
    let operation = crate::maintenance::Operation::RetentionRun {
        as_of,
        dry_run: args.dry_run,
    };
    let outcome = match &args.url {
        Some(url) => crate::maintenance::remote(url, &operation).await?,
        None => {
            let config = load(args.config.as_deref())?;
            let engine = open(&args.data_dir, &config)?;
            let expiry =
                |as_of: i64| config.content_expiry_request(u64::try_from(as_of).unwrap_or(0));
            let outcome = crate::maintenance::run(&engine, &operation, &expiry)?;
            engine.close()?;
            outcome
        }
    };
    out.write_all(outcome.text.as_bytes())?;
    Ok(())
}

/// Writes the per-tier status table.
pub fn write_status(
    status: &[TierStatus],
    content: &ContentStats,
    out: &mut impl Write,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<12} {:>6} {:>10} {:>12} {:>10} {:>14} {:<21} {:<21}",
        "tier", "keep", "segments", "spans", "unsealed", "bytes", "oldest", "next_expiry"
    )?;
    let time = |value: Option<i64>| value.map_or_else(|| "-".to_owned(), format_timestamp);
    for tier in status {
        writeln!(
            out,
            "{:<12} {:>6} {:>10} {:>12} {:>10} {:>14} {:<21} {:<21}",
            tier.tier,
            if tier.configured {
                DurationArg(tier.keep).to_string()
            } else {
                "?".to_owned()
            },
            tier.segments,
            tier.spans,
            tier.unsealed,
            tier.bytes,
            time(tier.oldest),
            time(tier.next_expiry)
        )?;
    }
    for tier in status.iter().filter(|tier| !tier.configured) {
        writeln!(
            out,
            "note: tier {:?} holds stored data but is not in this configuration; retention \
             leaves it alone until run with the configuration that defines it",
            tier.tier
        )?;
    }
    writeln!(
        out,
        "content: {} message(s) ({} bytes), {} reference(s) ({} bytes; a reference keeps its \
         digest after its messages expire), oldest last referenced {}",
        content.messages,
        content.bytes,
        content.references,
        content.reference_bytes,
        time(
            content
                .oldest_seen
                .and_then(|seen| i64::try_from(seen).ok())
        )
    )?;
    Ok(())
}

/// `retention status`.
pub fn status(args: &RetentionStatusArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let config = load(args.config.as_deref())?;
    let engine = open(&args.data_dir, &config)?;
    let status = engine.retention_status()?;
    let content = engine.content_stats()?;
    write_status(&status, &content, out)?;
    engine.close_without_sealing();
    Ok(())
}

/// The background retention pass of a server: every `interval`, expire as of now.
pub async fn background(
    engine: std::sync::Arc<Engine>,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    if interval.is_zero() {
        return;
    }
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let engine = std::sync::Arc::clone(&engine);
        let result = tokio::task::spawn_blocking(move || engine.expire(now_ns(), false)).await;
        match result {
            Ok(Ok(report)) => {
                tracing::info!(
                    segments = report.segments.len(),
                    rows = report.rows(),
                    bytes = report.bytes(),
                    held = report.refused.len(),
                    "retention pass"
                );
            }
            Ok(Err(error)) => tracing::warn!(error = %error, "retention pass failed"),
            Err(error) => tracing::warn!(error = %error, "retention task failed"),
        }
    }
}
