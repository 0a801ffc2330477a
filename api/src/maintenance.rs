//! Maintenance operations (`verify`, `hold`, `erase`, `compact`, `retention run`) on an open
//! engine: the
//! one implementation behind both the CLI on a stopped store and the admin API of a running
//! server (`POST /api/v1/admin/<operation>`, admin scope), so their answers are the same text.
//!
//! Invariant: an operation's outcome is `ok` only when it did what was asked (verify found no
//! problem; the hold, erasure or expiry took effect); the CLI exits non-zero otherwise.

use std::fmt::Write as _;

use anyhow::bail;
use engine::{Engine, HoldTarget};
use serde::{Deserialize, Serialize};

/// One maintenance operation, as the admin API receives it (JSON) and the CLI builds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "snake_case", deny_unknown_fields)]
pub enum Operation {
    /// Check the tamper-evident chain against the catalog and every segment file.
    Verify,
    /// Place or release a legal hold on a session or a tier; list holds when neither is given.
    Hold {
        /// The session to hold.
        #[serde(default)]
        session: Option<String>,
        /// The tier to hold.
        #[serde(default)]
        tier: Option<String>,
        /// Release instead of placing.
        #[serde(default)]
        release: bool,
    },
    /// Erase a session's spans and content in every tier.
    Erase {
        /// The session.
        session: String,
    },
    /// Compact every day of every tier that is not one session-ordered run yet.
    Compact,
    /// Seal, then delete what is past its tier's keep at `as_of` (ns; now when absent).
    RetentionRun {
        /// The moment ages count to, ns since the epoch.
        #[serde(default)]
        as_of: Option<i64>,
        /// Report what would be deleted; change nothing.
        #[serde(default)]
        dry_run: bool,
    },
}

/// What an operation did: the text a person reads, and whether it succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// True when the operation did what was asked.
    pub ok: bool,
    /// The report, as the CLI prints it.
    pub text: String,
}

/// Runs `operation` on `engine` (blocking). `content_expiry` gives the content retention
/// request at a moment (ns), from the configuration in force.
pub fn run(
    engine: &Engine,
    operation: &Operation,
    content_expiry: &dyn Fn(i64) -> engine::ContentExpiryRequest,
) -> anyhow::Result<Outcome> {
    match operation {
        Operation::Verify => {
            let report = engine.verify()?;
            Ok(Outcome {
                ok: report.is_ok(),
                text: report.to_string(),
            })
        }
        Operation::Hold {
            session,
            tier,
            release,
        } => hold(engine, session.as_deref(), tier.as_deref(), *release),
        Operation::Erase { session } => erase(engine, session),
        Operation::Compact => compact(engine),
        Operation::RetentionRun { as_of, dry_run } => {
            let as_of = as_of.unwrap_or_else(crate::retention_command::now_ns);
            retention_run(engine, as_of, *dry_run, content_expiry)
        }
    }
}

fn hold(
    engine: &Engine,
    session: Option<&str>,
    tier: Option<&str>,
    release: bool,
) -> anyhow::Result<Outcome> {
    let target = match (session, tier) {
        (Some(_), Some(_)) => bail!("give --session or --tier, not both"),
        (Some(session), None) => Some(HoldTarget::Session(session.to_owned())),
        (None, Some(tier)) => Some(HoldTarget::Tier(tier.to_owned())),
        (None, None) if release => bail!("--release needs --session ID or --tier NAME"),
        (None, None) => None,
    };
    let text = match target {
        Some(target) if release => {
            if engine.release(&target)? {
                format!("released the legal hold on {target}\n")
            } else {
                format!("{target} was not under legal hold\n")
            }
        }
        Some(target) => {
            let placed = engine.hold(&target)?;
            let hold = engine
                .holds()?
                .into_iter()
                .find(|hold| hold.target == target);
            let verb = if placed { "placed" } else { "already in force" };
            match hold {
                Some(hold) => format!("legal hold {verb}: {hold}\n"),
                None => bail!("the legal hold on {target} was not recorded"),
            }
        }
        None => {
            let holds = engine.holds()?;
            if holds.is_empty() {
                "no legal holds\n".to_owned()
            } else {
                holds.iter().map(|hold| format!("{hold}\n")).collect()
            }
        }
    };
    Ok(Outcome { ok: true, text })
}

fn erase(engine: &Engine, session: &str) -> anyhow::Result<Outcome> {
    let report = match engine.erase_session(session) {
        Ok(report) => report,
        Err(error @ engine::Error::Held { .. }) => {
            return Ok(Outcome {
                ok: false,
                text: format!(
                    "{error}; nothing was erased. Release it first with: sightline hold \
                     --release --session {session}\n"
                ),
            });
        }
        Err(error) => return Err(anyhow::Error::new(error).context("erase failed")),
    };
    let mut text = String::new();
    if report.rows == 0 {
        let _ = writeln!(text, "session {session} has no spans; nothing erased");
        return Ok(Outcome { ok: true, text });
    }
    for (old, new) in &report.segments {
        let new = if new.is_empty() {
            "nothing left".to_owned()
        } else {
            new.iter()
                .map(|id| format!("segment {id}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(text, "rewrote segment {old} -> {new}");
    }
    let _ = writeln!(
        text,
        "erased session {}: {} spans and {} log records in {} traces from {} segment(s); recorded in the chain (see sightline verify)",
        report.session_id,
        report.rows - report.log_rows,
        report.log_rows,
        report.traces.len(),
        report.segments.len()
    );
    Ok(Outcome { ok: true, text })
}

fn retention_run(
    engine: &Engine,
    as_of: i64,
    dry_run: bool,
    content_expiry: &dyn Fn(i64) -> engine::ContentExpiryRequest,
) -> anyhow::Result<Outcome> {
    let mut out = Vec::new();
    if !dry_run {
        engine.seal().map_err(|error| {
            anyhow::Error::new(error).context("sealing before the retention run")
        })?;
    } else if engine.stats().memtable_rows > 0 {
        std::io::Write::write_fmt(
            &mut out,
            format_args!(
                "note: {} unsealed rows are not considered by a dry run\n",
                engine.stats().memtable_rows
            ),
        )?;
    }
    let report = engine.expire(as_of, dry_run)?;
    crate::retention_command::write_report(&report, &mut out)?;
    // Content by its own keep, as the server's content pass does.
    let request = content_expiry(as_of).with_dry_run(dry_run);
    let content = engine
        .expire_content_with(&request)
        .map_err(|error| anyhow::Error::new(error).context("expiring content"))?;
    std::io::Write::write_fmt(
        &mut out,
        format_args!(
            "content: {} {} message(s), {} bytes\n",
            if dry_run { "would delete" } else { "deleted" },
            content.messages,
            content.bytes
        ),
    )?;
    Ok(Outcome {
        ok: true,
        text: String::from_utf8_lossy(&out).into_owned(),
    })
}

/// Sends `operation` to the admin API of the server at `url` (with `SIGHTLINE_TOKEN`).
pub async fn remote(url: &str, operation: &Operation) -> anyhow::Result<Outcome> {
    let endpoint = format!("{}/api/v1/admin", url.trim_end_matches('/'));
    let response = crate::remote::post_json(
        &crate::remote::client()?,
        &endpoint,
        operation,
        crate::remote::token().as_deref(),
    )
    .await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let message = body["error"].as_str().unwrap_or("no message");
        bail!("{endpoint} answered {status}: {message}");
    }
    Ok(serde_json::from_value(body)?)
}

/// Seals, then compacts; the text lists each day compacted. Not ok when a day failed.
fn compact(engine: &Engine) -> anyhow::Result<Outcome> {
    engine.seal()?;
    let report = engine.compact()?;
    let mut text = String::new();
    for group in &report.groups {
        let _ = writeln!(
            text,
            "compacted {} {}: {} segments ({} rows, {} bytes) into {} ({} bytes)",
            group.tier,
            group.day,
            group.inputs.len(),
            group.rows,
            group.bytes_before,
            group.outputs.len(),
            group.bytes_after
        );
    }
    for failure in &report.failed {
        let _ = writeln!(text, "failed: {failure}");
    }
    if report.abandoned > 0 {
        let _ = writeln!(
            text,
            "{} day(s) changed while compacted and were left as they were; run it again",
            report.abandoned
        );
    }
    if report.groups.is_empty() && report.failed.is_empty() && report.abandoned == 0 {
        text.push_str("nothing to compact: every day's segments are in session order already\n");
    }
    Ok(Outcome {
        ok: report.failed.is_empty(),
        text,
    })
}
