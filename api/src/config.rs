//! Turns command-line arguments into the libraries' option structs (libraries never see clap).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{QueryArgs, ServeArgs, StorageArgs};

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
}

impl ServerConfig {
    /// Defaults for a server in `data_dir` listening on loopback with OS-assigned ports
    /// (what tests use).
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        ServerConfig {
            data_dir: data_dir.into(),
            otlp_grpc_addr: any,
            otlp_http_addr: any,
            api_addr: any,
            max_request_bytes: 64 << 20,
            max_inflight_bytes: 512 << 20,
            http_timeout: Duration::from_secs(120),
            engine: engine::Options::default(),
            query: query::Options::default(),
        }
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

impl From<&ServeArgs> for ServerConfig {
    fn from(args: &ServeArgs) -> Self {
        ServerConfig {
            data_dir: args.storage.data_dir.clone(),
            otlp_grpc_addr: args.otlp.otlp_grpc_addr,
            otlp_http_addr: args.otlp.otlp_http_addr,
            api_addr: args.api.api_addr,
            max_request_bytes: args.otlp.max_request_bytes.as_usize(),
            max_inflight_bytes: args.otlp.max_inflight_bytes.as_usize(),
            http_timeout: args.api.http_timeout.0,
            engine: engine_options(&args.storage),
            query: query_options(&args.query),
        }
    }
}
