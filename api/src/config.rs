//! Turns command-line arguments into the libraries' option structs (libraries never see clap).

use std::collections::BTreeMap;
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
    /// Jaeger v2 remote-storage gRPC listen address.
    pub jaeger_addr: SocketAddr,
    /// PostgreSQL wire protocol listen address.
    pub pg_addr: SocketAddr,
    /// Whether `POST /purge` (delete everything) is served on the API address.
    pub enable_purge: bool,
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
    /// How long captured content is kept (`[content] keep`), unless its span's tier has its
    /// own `content_keep`.
    pub content_keep: Duration,
    /// `content_keep` of the tiers that set one.
    pub tier_content_keep: BTreeMap<String, Duration>,
    /// API tokens (none: everything allowed, loopback only).
    pub tokens: std::sync::Arc<crate::auth::Tokens>,
    /// The certificate and key every listener serves TLS with (none: plain TCP).
    pub tls: Option<crate::tls::TlsFiles>,
    /// Allow listening beyond loopback without tokens and TLS.
    pub insecure: bool,
    /// Host names the HTTP listeners answer to besides loopback names and IP addresses.
    pub allowed_hosts: Vec<String>,
    /// Origins allowed to call the HTTP listeners from a browser, besides their own.
    pub allowed_origins: Vec<String>,
    /// `[lake]`: ship sealed data there (none: no lake).
    pub lake: Option<crate::config_file::LakeSettings>,
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
            jaeger_addr: any,
            pg_addr: any,
            enable_purge: false,
            max_request_bytes: 64 << 20,
            max_inflight_bytes: 512 << 20,
            http_timeout: Duration::from_secs(120),
            engine: engine::Options::default().with_retention(file.retention),
            query: query::Options::default(),
            rules: file.rules,
            retention_interval: Duration::from_secs(3600),
            content: file.content,
            content_keep: file.content_keep,
            tier_content_keep: file.tier_content_keep,
            tokens: std::sync::Arc::new(file.tokens),
            tls: None,
            insecure: false,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            lake: None,
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
            jaeger_addr: args.jaeger.jaeger_addr,
            pg_addr: args.pg.pg_addr,
            enable_purge: args.api.enable_purge,
            max_request_bytes: args.otlp.max_request_bytes.as_usize(),
            max_inflight_bytes: args.otlp.max_inflight_bytes.as_usize(),
            http_timeout: args.api.http_timeout.0,
            engine: engine_options(&args.storage).with_retention(file.retention),
            query: query_options(&args.query, &args.storage.data_dir),
            rules: file.rules,
            retention_interval: args.retention_interval.0,
            content: file.content,
            content_keep: file.content_keep,
            tier_content_keep: file.tier_content_keep,
            tokens: std::sync::Arc::new(file.tokens),
            tls: tls_files(args, file.tls),
            insecure: args.insecure,
            allowed_hosts: args.allowed_host.clone(),
            allowed_origins: args.allowed_origin.clone(),
            lake: file.lake,
        })
    }
}

/// The TLS files: `--tls-cert` and `--tls-key` (clap takes both or neither) over the file's
/// `[tls]`.
fn tls_files(args: &ServeArgs, file: Option<crate::tls::TlsFiles>) -> Option<crate::tls::TlsFiles> {
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => file,
    }
}

impl ServerConfig {
    /// What a content retention pass at `now_unix_nanos` removes
    /// ([`crate::config_file::content_expiry_request`]).
    pub fn content_expiry_request(&self, now_unix_nanos: u64) -> engine::ContentExpiryRequest {
        crate::config_file::content_expiry_request(
            &self.engine.retention,
            self.content_keep,
            &self.tier_content_keep,
            now_unix_nanos,
        )
    }
}

/// Engine options from the storage flags.
pub fn engine_options(args: &StorageArgs) -> engine::Options {
    engine::Options::default()
        .with_seal_max_bytes(args.seal_max_bytes.as_usize())
        .with_seal_max_age(args.seal_max_age.0)
        .with_compaction_quiet(Some(args.compaction_quiet.0).filter(|quiet| !quiet.is_zero()))
        .with_max_memtable_bytes(args.max_memtable_bytes.as_usize())
        .with_index_cache_bytes(args.index_cache.as_usize())
}

/// The directory of a data directory where queries spill.
pub const QUERY_SPILL_DIR: &str = "query-spill";

/// Query options from the query flags, spilling into `data_dir`'s [`QUERY_SPILL_DIR`].
pub fn query_options(args: &QueryArgs, data_dir: &std::path::Path) -> query::Options {
    query::Options::default()
        .with_memory_limit(args.query_memory_limit.as_usize())
        .with_spill(
            data_dir.join(QUERY_SPILL_DIR),
            args.query_spill_limit.as_usize() as u64,
        )
        .with_timeout(args.query_timeout.0)
        .with_max_result_rows(args.query_max_rows)
        .with_max_result_bytes(args.query_max_result_bytes.as_usize())
        .with_max_concurrent(args.query_max_concurrent)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000_000_000;

    #[test]
    fn content_expiry_uses_each_tiers_content_keep() {
        let mut config = ServerConfig::ephemeral("/nonexistent");
        let now = 100 * DAY;
        // No per-tier keeps: one cutoff, `[content] keep` (7d) ago.
        let request = config.content_expiry_request(now);
        assert_eq!(request.cutoff_unix_nanos, 93 * DAY);
        assert!(request.tier_cutoffs.is_empty());

        config.tier_content_keep =
            BTreeMap::from([("decision".to_owned(), Duration::from_secs(30 * 86_400))]);
        let request = config.content_expiry_request(now);
        assert_eq!(request.cutoff_unix_nanos, 93 * DAY);
        assert_eq!(
            request.tier_cutoffs,
            BTreeMap::from([("decision".to_owned(), 70 * DAY)])
        );

        // The default tier's own content_keep applies to references without a tier name.
        config
            .tier_content_keep
            .insert("standard".to_owned(), Duration::from_secs(2 * 86_400));
        let request = config.content_expiry_request(now);
        assert_eq!(request.cutoff_unix_nanos, 98 * DAY);
        assert_eq!(request.tier_cutoffs["standard"], 98 * DAY);
    }
}
