//! `sightline sql`: one query against a data directory (embedded) or a running server (--url).

use std::sync::Arc;

use anyhow::{Context as _, bail};
use engine::Engine;

use crate::cli::{OutputFormat, SqlArgs};
use crate::config::query_options;

/// Runs the query and writes the result to `out`.
pub async fn run(args: &SqlArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let bytes = match &args.url {
        Some(url) => remote(url, args).await?,
        None => embedded(args).await?,
    };
    out.write_all(&bytes)?;
    out.flush()?;
    Ok(())
}

async fn embedded(args: &SqlArgs) -> anyhow::Result<Vec<u8>> {
    let dir = args.data_dir.clone();
    if !dir.join("sightline.redb").exists() {
        bail!(
            "{} is not a sightline data directory (no sightline.redb); pass --data DIR or --url",
            dir.display()
        );
    }
    let options = engine::Options::default().with_background_sealing(false);
    let opened = tokio::task::spawn_blocking(move || Engine::open(&dir, options)).await?;
    let engine = match opened {
        Ok(engine) => Arc::new(engine),
        Err(engine::Error::Locked { path }) => bail!(
            "data directory {} is in use by a running sightline server; query the server instead, e.g. --url http://127.0.0.1:7070",
            path.display()
        ),
        Err(error) => {
            return Err(anyhow::Error::new(error).context("cannot open the data directory"));
        }
    };
    let sql = query::SqlEngine::new(Arc::clone(&engine), query_options(&args.query))?;
    let result = sql.execute(&args.sql).await;
    drop(sql);
    let closing = Arc::clone(&engine);
    tokio::task::spawn_blocking(move || closing.close_without_sealing()).await?;
    let output = result?;
    Ok(match args.format {
        OutputFormat::Table => {
            let mut text = query::format::to_table(&output)?;
            text.push('\n');
            text.into_bytes()
        }
        OutputFormat::Csv => query::format::to_csv(&output)?,
        OutputFormat::Json => {
            let mut bytes = serde_json::to_vec(&query::format::to_json(&output))?;
            bytes.push(b'\n');
            bytes
        }
    })
}

async fn remote(url: &str, args: &SqlArgs) -> anyhow::Result<Vec<u8>> {
    let format = match args.format {
        OutputFormat::Table => "arrow",
        OutputFormat::Csv => "csv",
        OutputFormat::Json => "json",
    };
    let endpoint = format!("{}/api/v1/sql", url.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&endpoint)
        .json(&serde_json::json!({ "sql": args.sql, "format": format }))
        .send()
        .await
        .with_context(|| format!("cannot reach {endpoint}"))?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|value| {
                value
                    .get("error")
                    .and_then(|error| error.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("query failed ({status}): {message}");
    }
    Ok(match args.format {
        OutputFormat::Table => {
            let reader =
                arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)?;
            let schema = reader.schema();
            let batches = reader.collect::<Result<Vec<_>, _>>()?;
            let output = query::QueryOutput::new(schema, batches);
            let mut text = query::format::to_table(&output)?;
            text.push('\n');
            text.into_bytes()
        }
        OutputFormat::Csv => body.to_vec(),
        OutputFormat::Json => {
            let mut bytes = body.to_vec();
            if bytes.last() != Some(&b'\n') {
                bytes.push(b'\n');
            }
            bytes
        }
    })
}
