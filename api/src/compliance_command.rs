//! `sightline verify` and `sightline hold`: tamper evidence and legal holds on a data directory.
//!
//! Both work on a stopped store: verify reads the catalog and hashes every segment file without
//! opening an engine (so it also runs when a segment file is missing), and holds are written
//! through an engine opened here. A directory held by a running server is refused with a
//! message saying to stop it.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use engine::Engine;

use crate::maintenance::Operation;

use crate::cli::{CompactArgs, EraseArgs, HoldArgs, VerifyArgs};

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
    if let Some(url) = &args.url {
        return finish(
            crate::maintenance::remote(url, &Operation::Verify).await?,
            out,
            VERIFY_FAILED,
        );
    }
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
    let operation = Operation::Hold {
        session: args.session.clone(),
        tier: args.tier.clone(),
        release: args.release,
    };
    if let Some(url) = &args.url {
        return finish(
            crate::maintenance::remote(url, &operation).await?,
            out,
            "hold failed",
        );
    }
    if args.release && args.session.is_none() && args.tier.is_none() {
        bail!("--release needs --session ID or --tier NAME");
    }
    let engine = open_store(&args.data_dir, "change holds").await?;
    let worker = std::sync::Arc::clone(&engine);
    let outcome = tokio::task::spawn_blocking(move || {
        let outcome = crate::maintenance::run(&worker, &operation, &no_content_expiry);
        worker.close_without_sealing();
        outcome
    })
    .await
    .context("hold task failed")??;
    drop(engine);
    finish(outcome, out, "hold failed")
}

/// Prints an outcome's text; when it did not succeed, fails with `what` (a verify report is
/// printed first, other refusals are the error's text).
fn finish(
    outcome: crate::maintenance::Outcome,
    out: &mut impl std::io::Write,
    what: &str,
) -> anyhow::Result<()> {
    if outcome.ok || what == VERIFY_FAILED {
        out.write_all(outcome.text.as_bytes())?;
        out.flush()?;
    }
    if !outcome.ok {
        if what == VERIFY_FAILED {
            bail!("{what}");
        }
        bail!("{}", outcome.text.trim_end());
    }
    Ok(())
}

const VERIFY_FAILED: &str = "verification failed";

/// Operations that never expire content have no content keep to ask for.
fn no_content_expiry(_as_of: i64) -> engine::ContentExpiryRequest {
    engine::ContentExpiryRequest::default()
}

/// Runs `operation` on the stopped store in `data_dir`, opened with the tiers of `config`
/// (the built-in configuration when absent), closes it, and prints the outcome; `doing` names
/// the operation in the in-use message ("erase a session"), `failed` in the failure.
async fn run_on_stopped_store(
    data_dir: &Path,
    config: Option<&Path>,
    operation: Operation,
    doing: &str,
    failed: &str,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    require_store(data_dir)?;
    let config = match config {
        Some(path) => crate::config_file::FileConfig::load(path)?,
        None => crate::config_file::FileConfig::default_config()?,
    };
    let opening: PathBuf = data_dir.to_path_buf();
    let options = engine::Options::default()
        .with_background_sealing(false)
        .with_retention(config.retention);
    let engine = match tokio::task::spawn_blocking(move || Engine::open(&opening, options)).await? {
        Ok(engine) => engine,
        Err(engine::Error::Locked { path }) => return Err(in_use(&path, doing)),
        Err(error) => {
            return Err(anyhow::Error::new(error).context("cannot open the data directory"));
        }
    };
    let (outcome, closed) = tokio::task::spawn_blocking(move || {
        let outcome = crate::maintenance::run(&engine, &operation, &no_content_expiry);
        let closed = engine.close();
        (outcome, closed)
    })
    .await
    .with_context(|| format!("{failed}: the task stopped"))?;
    let outcome = outcome?;
    if outcome.ok {
        closed?;
    }
    finish(outcome, out, failed)
}

/// Runs `sightline erase --session ID`: removes the session's spans and content across tiers,
/// rewriting only the segments that hold it, and records the erasure in the chain.
pub async fn erase(args: &EraseArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let operation = Operation::Erase {
        session: args.session.clone(),
    };
    if let Some(url) = &args.url {
        return finish(
            crate::maintenance::remote(url, &operation).await?,
            out,
            "erase failed",
        );
    }
    run_on_stopped_store(
        &args.data_dir,
        args.config.as_deref(),
        operation,
        "erase a session",
        "erase failed",
        out,
    )
    .await
}

/// Runs `sightline compact`: each day of each tier rewritten in session order (what a server
/// does in the background once a day is quiet); prints what it did.
pub async fn compact(args: &CompactArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    if let Some(url) = &args.url {
        return finish(
            crate::maintenance::remote(url, &Operation::Compact).await?,
            out,
            "compaction failed",
        );
    }
    run_on_stopped_store(
        &args.data_dir,
        args.config.as_deref(),
        Operation::Compact,
        "compact it",
        "compaction failed",
        out,
    )
    .await
}
