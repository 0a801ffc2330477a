//! `sightline export`: ships a stopped store's sealed data to its lake now, the same way a
//! server with `[lake]` does in the background ([`crate::lake_shipper`]): it seals what the
//! write-ahead log still holds, then commits every chain entry the lake lacks, so running it
//! again ships nothing twice.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use engine::Engine;

use crate::cli::ExportArgs;
use crate::config_file::FileConfig;
use crate::lake_shipper::{Lake, Shipper, node_name};

/// Runs `sightline export` and prints what it shipped.
pub async fn run(args: &ExportArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default_config()?,
    };
    let no_options = std::collections::BTreeMap::new();
    let (url, options) = match (&args.lake, &config.lake) {
        (Some(url), Some(lake)) => (url.clone(), &lake.options),
        (Some(url), None) => (url.clone(), &no_options),
        (None, Some(lake)) => (lake.url.clone(), &lake.options),
        (None, None) => bail!(
            "no lake to export to: pass --lake URL (a directory or s3://bucket/prefix), or set [lake] url in the --config file"
        ),
    };
    let lake = Lake::open_with(&url, options)?;
    if !args.data_dir.join("sightline.redb").exists() {
        bail!(
            "{} is not a sightline data directory (no sightline.redb); pass --data DIR",
            args.data_dir.display()
        );
    }
    let opening = args.data_dir.clone();
    let options = engine::Options::default()
        .with_background_sealing(false)
        .with_retention(config.retention);
    let engine = match tokio::task::spawn_blocking(move || Engine::open(&opening, options)).await? {
        Ok(engine) => Arc::new(engine),
        Err(engine::Error::Locked { path }) => bail!(
            "data directory {} is in use by a running sightline server; stop it first (a server with a [lake] section ships by itself as it seals, and once more when it stops)",
            path.display()
        ),
        Err(error) => {
            return Err(anyhow::Error::new(error).context("cannot open the data directory"));
        }
    };
    let configured = args
        .node
        .clone()
        .or_else(|| config.lake.as_ref().and_then(|lake| lake.node.clone()));
    // Without a [lake] section here, content goes as this node shipped it so far.
    let content = config.lake.as_ref().map(|lake| lake.content);
    let result = ship(
        &engine,
        lake,
        &args.data_dir,
        configured.as_deref(),
        content,
        out,
    )
    .await;
    let closing = Arc::clone(&engine);
    tokio::task::spawn_blocking(move || closing.close())
        .await?
        .context("closing the data directory")?;
    result
}

async fn ship(
    engine: &Arc<Engine>,
    lake: Lake,
    data_dir: &std::path::Path,
    node: Option<&str>,
    content: Option<bool>,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let node = node_name(data_dir, node)?;
    let sealing = Arc::clone(engine);
    tokio::task::spawn_blocking(move || sealing.seal())
        .await?
        .context("sealing before the export")?;
    let url = lake.to_string();
    let hint = lake.hint();
    let mut shipper = Shipper::open(Arc::clone(engine), lake, &node, content)
        .await
        .with_context(|| format!("cannot open the lake at {url}{hint}"))?;
    let report = shipper
        .ship()
        .await
        .with_context(|| format!("shipping to the lake at {url} stopped{hint}"))?;
    writeln!(
        out,
        "exported to {url} as node {node}: {} chain entries, {} hold changes, {} files ({} bytes, {} span rows), {} files deleted; the store's chain is in the lake up to entry {} (lake version {})",
        report.entries,
        report.holds,
        report.files,
        report.bytes,
        report.span_rows,
        report.deleted,
        report.chain_seq,
        report.version
    )?;
    out.flush()?;
    Ok(())
}
