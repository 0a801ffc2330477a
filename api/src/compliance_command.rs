//! `sightline verify` and `sightline hold`: tamper evidence and legal holds on a data directory.
//!
//! Both work on a stopped store: verify reads the catalog and hashes every segment file without
//! opening an engine (so it also runs when a segment file is missing), and holds are written
//! through an engine opened here. A directory held by a running server is refused with a
//! message saying to stop it.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use engine::{Engine, HoldTarget};

use crate::cli::{EraseArgs, HoldArgs, VerifyArgs};

/// The message for a data directory a server holds.
fn in_use(path: &Path, what: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "data directory {} is in use by a running sightline server; stop the server to {what}",
        path.display()
    )
}

fn require_store(dir: &Path) -> anyhow::Result<()> {
    if !dir.join("sightline.redb").exists() {
        bail!(
            "{} is not a sightline data directory (no sightline.redb); pass --data DIR",
            dir.display()
        );
    }
    Ok(())
}

/// Runs `sightline verify`: prints the report (with the chain head hash to keep elsewhere) and
/// fails when it found problems.
pub async fn verify(args: &VerifyArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    require_store(&args.data_dir)?;
    let dir = args.data_dir.clone();
    let report = match tokio::task::spawn_blocking(move || engine::verify_data_dir(&dir)).await? {
        Ok(report) => report,
        Err(engine::Error::Locked { path }) => return Err(in_use(&path, "verify it")),
        Err(error) => return Err(anyhow::Error::new(error).context("cannot verify the store")),
    };
    write!(out, "{report}")?;
    out.flush()?;
    if !report.is_ok() {
        bail!(
            "verification failed: {} problem(s) in {}",
            report.problems.len(),
            args.data_dir.display()
        );
    }
    Ok(())
}

/// Opens the store in `dir` for a maintenance command (no background sealing).
pub(crate) async fn open_store(dir: &Path, what: &str) -> anyhow::Result<std::sync::Arc<Engine>> {
    require_store(dir)?;
    let opening: PathBuf = dir.to_path_buf();
    let options = engine::Options::default().with_background_sealing(false);
    match tokio::task::spawn_blocking(move || Engine::open(&opening, options)).await? {
        Ok(engine) => Ok(std::sync::Arc::new(engine)),
        Err(engine::Error::Locked { path }) => Err(in_use(&path, what)),
        Err(error) => Err(anyhow::Error::new(error).context("cannot open the data directory")),
    }
}

/// Runs `sightline hold`: places or releases one hold, or lists them.
pub async fn hold(args: &HoldArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let target = match (&args.session, &args.tier) {
        (Some(session), _) => Some(HoldTarget::Session(session.clone())),
        (None, Some(tier)) => Some(HoldTarget::Tier(tier.clone())),
        (None, None) if args.release => bail!("--release needs --session ID or --tier NAME"),
        (None, None) => None,
    };
    let engine = open_store(&args.data_dir, "change holds").await?;
    let release = args.release;
    let worker = std::sync::Arc::clone(&engine);
    let message = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let text = match target {
            Some(target) if release => {
                if worker.release(&target)? {
                    format!("released the legal hold on {target}\n")
                } else {
                    format!("{target} was not under legal hold\n")
                }
            }
            Some(target) => {
                let placed = worker.hold(&target)?;
                let hold = worker
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
                let holds = worker.holds()?;
                if holds.is_empty() {
                    "no legal holds\n".to_owned()
                } else {
                    holds.iter().map(|hold| format!("{hold}\n")).collect()
                }
            }
        };
        worker.close_without_sealing();
        Ok(text)
    })
    .await
    .context("hold task failed")??;
    drop(engine);
    out.write_all(message.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Runs `sightline erase --session ID`: removes the session's spans and content across tiers,
/// rewriting only the segments that hold it, and records the erasure in the chain.
pub async fn erase(args: &EraseArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    require_store(&args.data_dir)?;
    let config = match &args.config {
        Some(path) => crate::config_file::FileConfig::load(path)?,
        None => crate::config_file::FileConfig::default_config()?,
    };
    let opening: PathBuf = args.data_dir.clone();
    let options = engine::Options::default()
        .with_background_sealing(false)
        .with_retention(config.retention);
    let engine = match tokio::task::spawn_blocking(move || Engine::open(&opening, options)).await? {
        Ok(engine) => engine,
        Err(engine::Error::Locked { path }) => return Err(in_use(&path, "erase a session")),
        Err(error) => {
            return Err(anyhow::Error::new(error).context("cannot open the data directory"));
        }
    };
    let session = args.session.clone();
    let result = tokio::task::spawn_blocking(move || {
        let result = engine.erase_session(&session);
        let closed = engine.close();
        (result, closed)
    })
    .await
    .context("erase task failed")?;
    let report = match result {
        (Ok(report), closed) => {
            closed?;
            report
        }
        (Err(error @ engine::Error::Held { .. }), _) => bail!(
            "{error}; nothing was erased. Release it first with: sightline hold --release --session {}",
            args.session
        ),
        (Err(error), _) => return Err(anyhow::Error::new(error).context("erase failed")),
    };
    if report.rows == 0 {
        writeln!(out, "session {} has no spans; nothing erased", args.session)?;
        return Ok(());
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
        writeln!(out, "rewrote segment {old} -> {new}")?;
    }
    writeln!(
        out,
        "erased session {}: {} spans in {} traces from {} segment(s); recorded in the chain (see sightline verify)",
        report.session_id,
        report.rows,
        report.traces.len(),
        report.segments.len()
    )?;
    Ok(())
}
