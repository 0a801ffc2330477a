//! Turns command-line arguments into the libraries' option structs (libraries never see clap).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{QueryArgs, ServeArgs, StorageArgs};
use crate::config_file::{ConfigError, FileConfig};

/// Everything `server::start` needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// OTLP/gRPC listen address (port 0 picks a free port).
    pub otlp_grpc_addr: SocketAddr,
    /// OTLP/HTTP listen address.
    pub otlp_http_addr: SocketAddr,
    /// HTTP API listen address.
    pub api_addr: SocketAddr,
    /// Largest accepted export body (compressed and decompressed).
    pub max_request_bytes: usize,
    /// In-flight ingest bytes before exports get 429.
    pub max_inflight_bytes: usize,
    /// Per-request HTTP timeout.
    pub http_timeout: Duration,
    /// Engine settings.
    pub engine: engine::Options,
    /// Query settings.
    pub query: query::Options,
    /// Retention rules placing ingested spans in tiers (the tiers are in `engine`).
    pub rules: query::RuleSet,
    /// How often the background retention pass runs (zero: never).
    pub retention_interval: Duration,
    /// The configuration file's content settings.
    pub content: crate::config_file::ContentSection,
    /// How long captured content is kept.
    pub content_keep: Duration,
}

impl ServerConfig {
    /// Defaults for a server in `data_dir` listening on loopback with OS-assigned ports
    /// (what tests use).
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let file = FileConfig::default_config()
            .unwrap_or_else(|error| unreachable!("the built-in configuration is valid: {error}"));
        ServerConfig {
            data_dir: data_dir.into(),
            otlp_grpc_addr: any,
            otlp_http_addr: any,
            api_addr: any,
            max_request_bytes: 64 << 20,
            max_inflight_bytes: 512 << 20,
            http_timeout: Duration::from_secs(120),
            engine: engine::Options::default().with_retention(file.retention),
            query: query::Options::default(),
            rules: file.rules,
            retention_interval: Duration::from_secs(3600),
            content: file.content,
            content_keep: file.content_keep,
        }
    }

    /// The configuration `sightline serve` runs with: its flags, and the `--config` file (or the
    /// built-in default).
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default_config()?,
        };
        Ok(ServerConfig {
            data_dir: args.storage.data_dir.clone(),
            otlp_grpc_addr: args.otlp.otlp_grpc_addr,
            otlp_http_addr: args.otlp.otlp_http_addr,
            api_addr: args.api.api_addr,
            max_request_bytes: args.otlp.max_request_bytes.as_usize(),
            max_inflight_bytes: args.otlp.max_inflight_bytes.as_usize(),
            http_timeout: args.api.http_timeout.0,
            engine: engine_options(&args.storage).with_retention(file.retention),
            query: query_options(&args.query),
            rules: file.rules,
            retention_interval: args.retention_interval.0,
            content: file.content,
            content_keep: file.content_keep,
        })
    }
}

/// Engine options from the storage flags.
pub fn engine_options(args: &StorageArgs) -> engine::Options {
    engine::Options::default()
        .with_seal_max_bytes(args.seal_max_bytes.as_usize())
        .with_seal_max_age(args.seal_max_age.0)
        .with_max_memtable_bytes(args.max_memtable_bytes.as_usize())
}

/// Query options from the query flags.
pub fn query_options(args: &QueryArgs) -> query::Options {
    query::Options::default()
        .with_memory_limit(args.query_memory_limit.as_usize())
        .with_timeout(args.query_timeout.0)
        .with_max_result_rows(args.query_max_rows)
}
