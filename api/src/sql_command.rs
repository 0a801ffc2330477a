//! `sightline sql`: one query against a data directory (embedded) or a running server (--url).
//!
//! `SqlTarget` is where the query runs; `sightline trace` uses it too, so both commands open a
//! data directory, refuse one held by a server and talk to a server the same way.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use engine::Engine;

use crate::cli::{OutputFormat, QueryArgs, SqlArgs};
use crate::config::query_options;

/// Runs the query and writes the result to `out`.
pub async fn run(args: &SqlArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let target = SqlTarget::connect(&args.data_dir, args.url.as_deref(), &args.query).await?;
    let result = target.formatted(&args.sql, args.format).await;
    target.close().await?;
    out.write_all(&result?)?;
    out.flush()?;
    Ok(())
}

/// Where SQL runs: an engine opened on a data directory in this process, or a running server.
pub(crate) enum SqlTarget {
    /// A data directory opened here; [`SqlTarget::close`] closes it without sealing.
    Embedded {
        data_dir: PathBuf,
        engine: Arc<Engine>,
        sql: Box<query::SqlEngine>,
    },
    /// `POST {url}/api/v1/sql`, with `SIGHTLINE_TOKEN` as the bearer token when set.
    Remote {
        url: String,
        client: reqwest::Client,
        token: Option<String>,
    },
}

impl fmt::Debug for SqlTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SqlTarget({self})")
    }
}

/// Where the data is, for messages: the data directory or the server URL.
impl fmt::Display for SqlTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlTarget::Embedded { data_dir, .. } => write!(f, "{}", data_dir.display()),
            SqlTarget::Remote { url, .. } => f.write_str(url),
        }
    }
}

impl SqlTarget {
    /// The server at `url` when given, else the data directory `data_dir` opened here (which
    /// fails, pointing at `--url`, while a server holds it).
    pub(crate) async fn connect(
        data_dir: &Path,
        url: Option<&str>,
        limits: &QueryArgs,
    ) -> anyhow::Result<SqlTarget> {
        if let Some(url) = url {
            return Ok(SqlTarget::Remote {
                url: url.trim_end_matches('/').to_owned(),
                client: crate::remote::client()?,
                token: crate::remote::token(),
            });
        }
        let dir = data_dir.to_path_buf();
        if !dir.join("sightline.redb").exists() {
            bail!(
                "{} is not a sightline data directory (no sightline.redb); pass --data DIR or --url",
                dir.display()
            );
        }
        let options = engine::Options::default().with_background_sealing(false);
        let opening = dir.clone();
        let opened = tokio::task::spawn_blocking(move || Engine::open(&opening, options)).await?;
        let engine = match opened {
            Ok(engine) => Arc::new(engine),
            Err(engine::Error::Locked { path }) => bail!(
                "data directory {} is in use by a running sightline server; query the server instead: --url {}",
                path.display(),
                crate::server::running_api_url(&path)
                    .unwrap_or_else(|| "http://127.0.0.1:7070".to_owned())
            ),
            Err(error) => {
                return Err(anyhow::Error::new(error).context("cannot open the data directory"));
            }
        };
        let sql = match query::SqlEngine::new(Arc::clone(&engine), query_options(limits, &dir)) {
            Ok(sql) => sql,
            Err(error) => {
                tokio::task::spawn_blocking(move || engine.close_without_sealing()).await?;
                return Err(error.into());
            }
        };
        Ok(SqlTarget::Embedded {
            data_dir: dir,
            engine,
            sql: Box::new(sql),
        })
    }

    /// Runs `sql` and returns the result rendered in `format` (a table, CSV or JSON, each
    /// ending in a newline).
    pub(crate) async fn formatted(
        &self,
        sql: &str,
        format: OutputFormat,
    ) -> anyhow::Result<Vec<u8>> {
        match self {
            SqlTarget::Embedded { sql: engine, .. } => {
                let output = engine.execute(sql).await?;
                Ok(match format {
                    OutputFormat::Table => table_text(&output)?,
                    OutputFormat::Csv => query::format::to_csv(&output, usize::MAX)?,
                    OutputFormat::Json => {
                        let mut bytes = serde_json::to_vec(&query::format::to_json(&output))?;
                        bytes.push(b'\n');
                        bytes
                    }
                })
            }
            SqlTarget::Remote { .. } => {
                let wire = match format {
                    OutputFormat::Table => "arrow",
                    OutputFormat::Csv => "csv",
                    OutputFormat::Json => "json",
                };
                let body = self.post(sql, wire).await?;
                Ok(match format {
                    OutputFormat::Table => {
                        let reader = arrow::ipc::reader::StreamReader::try_new(
                            std::io::Cursor::new(body),
                            None,
                        )?;
                        let schema = reader.schema();
                        let batches = reader.collect::<Result<Vec<_>, _>>()?;
                        table_text(&query::QueryOutput::new(schema, batches))?
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
        }
    }

    /// Runs `sql` and returns `{"columns": [...], "rows": [...]}` as `query::format::to_json`
    /// renders it, in both modes.
    pub(crate) async fn json(&self, sql: &str) -> anyhow::Result<serde_json::Value> {
        match self {
            SqlTarget::Embedded { sql: engine, .. } => {
                Ok(query::format::to_json(&engine.execute(sql).await?))
            }
            SqlTarget::Remote { url, .. } => {
                let body = self.post(sql, "json").await?;
                serde_json::from_slice(&body)
                    .with_context(|| format!("{url} answered a SQL query with invalid JSON"))
            }
        }
    }

    /// Closes an embedded engine (without sealing: a read-only visit leaves the store as it
    /// was). Nothing to do for a server.
    pub(crate) async fn close(self) -> anyhow::Result<()> {
        if let SqlTarget::Embedded { engine, sql, .. } = self {
            // The session holds engine references; drop it first so the engine is closed whole.
            drop(sql);
            tokio::task::spawn_blocking(move || engine.close_without_sealing()).await?;
        }
        Ok(())
    }

    async fn post(&self, sql: &str, format: &str) -> anyhow::Result<bytes::Bytes> {
        let SqlTarget::Remote { url, client, token } = self else {
            bail!("not a remote target");
        };
        let endpoint = format!("{url}/api/v1/sql");
        let response = crate::remote::post_json(
            client,
            &endpoint,
            &serde_json::json!({ "sql": sql, "format": format }),
            token.as_deref(),
        )
        .await?;
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
        Ok(body)
    }
}

fn table_text(output: &query::QueryOutput) -> anyhow::Result<Vec<u8>> {
    let mut text = query::format::to_table(output)?;
    text.push('\n');
    Ok(text.into_bytes())
}
