//! Command line: `sightline serve`, `sql`, `trace`, `verify` and `hold`. Every flag has an env
//! var and a default shown in `--help`; `config` turns them into the libraries' option structs.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Sightline: an embedded trace store and SQL engine for AI-agent traces.
#[derive(Debug, Parser)]
#[command(name = "sightline", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log lines on stderr as text or as one JSON object per line (for log shippers).
    #[arg(long, global = true, env = "SIGHTLINE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: timestamp, level, target, message and fields.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
// Parsed once per process: the size of the serve variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the server: OTLP ingest over gRPC and HTTP, the SQL and trace HTTP API.
    Serve(ServeArgs),
    /// Run one SQL query against a data directory (no server needed) or a running server.
    Sql(SqlArgs),
    /// Draw one trace as a span tree in the terminal, or list the runs of a session.
    Trace(TraceArgs),
    /// Check a configuration file; exits 0 when it is valid and prints what it configures.
    CheckConfig(CheckConfigArgs),
    /// Delete data past its tier's age now (`run`), or show what each tier holds (`status`).
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Check the tamper-evident segment chain against the catalog and every segment file;
    /// exits 0 only when nothing was altered, removed or reordered.
    Verify(VerifyArgs),
    /// Erase a session: its spans and content in every tier, rewriting only the segments that
    /// hold it; the erasure is recorded in the tamper-evident chain.
    Erase(EraseArgs),
    /// Place, release or list legal holds (a held session cannot be erased, a held tier or
    /// session cannot expire).
    Hold(HoldArgs),
    /// Compact now: rewrite each day's segments of a tier in session order (what a server
    /// does in the background once a day is quiet), so a session is read from one segment.
    Compact(CompactArgs),
    /// Ship the store's sealed data to the lake now (what a server with `[lake]` does as it
    /// seals): spans, agent tables and sessions as Parquet, with expiry and erasure applied.
    Export(ExportArgs),
    /// Make a new API token: prints the token (give it to the client) and the
    /// `[[auth.tokens]]` entry (its SHA-256) to put in the configuration file.
    Token(TokenArgs),
}

/// `sightline token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Who will hold it (written into the entry; logged, never secret).
    #[arg(long)]
    pub name: String,
    /// What it may do: ingest, query, content, admin (repeat or comma-separate).
    #[arg(long, value_delimiter = ',', required = true)]
    pub scopes: Vec<crate::auth::Scope>,
}

/// `sightline serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file: retention tiers and rules, content settings (TOML; see the README).
    /// Without it the README's example configuration applies.
    #[arg(long, env = "SIGHTLINE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How often expired data is deleted in the background (0s: never).
    #[arg(long, env = "SIGHTLINE_RETENTION_INTERVAL", default_value = "1h")]
    pub retention_interval: DurationArg,
    /// Allow listening on a non-loopback address without tokens and TLS (anyone who reaches
    /// the port can then read and write everything).
    #[arg(long, env = "SIGHTLINE_INSECURE")]
    pub insecure: bool,
    /// PEM certificate chain every listener serves TLS with (overrides `[tls] cert`).
    #[arg(
        long,
        env = "SIGHTLINE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert` (overrides `[tls] key`).
    #[arg(
        long,
        env = "SIGHTLINE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// A host name the HTTP listeners answer to, besides localhost and IP addresses (repeat
    /// for several). Requests naming another host get 403 (DNS rebinding).
    #[arg(long, value_name = "HOST")]
    pub allowed_host: Vec<String>,
    /// An origin (`https://grafana.example:3000`) whose browser pages may call the HTTP
    /// listeners (repeat for several); other sites get 403.
    #[arg(long, value_name = "ORIGIN")]
    pub allowed_origin: Vec<String>,
    /// Storage settings.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// OTLP receiver settings.
    #[command(flatten)]
    pub otlp: OtlpArgs,
    /// HTTP API settings.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Jaeger v2 remote storage settings.
    #[command(flatten)]
    pub jaeger: JaegerArgs,
    /// PostgreSQL wire protocol settings.
    #[command(flatten)]
    pub pg: PgArgs,
    /// Query limits.
    #[command(flatten)]
    pub query: QueryArgs,
}

/// Where and how data is stored.
#[derive(Debug, Args, Clone)]
pub struct StorageArgs {
    /// Data directory (created if missing).
    #[arg(
        long = "data",
        env = "SIGHTLINE_DATA",
        default_value = "./sightline-data"
    )]
    pub data_dir: PathBuf,
    /// Seal the in-memory table into a columnar segment when it reaches this size.
    #[arg(long, env = "SIGHTLINE_SEAL_MAX_BYTES", default_value = "256MiB")]
    pub seal_max_bytes: ByteSize,
    /// Seal the in-memory table when its oldest span is this old.
    #[arg(long, env = "SIGHTLINE_SEAL_MAX_AGE", default_value = "5m")]
    pub seal_max_age: DurationArg,
    /// Compact a day's segments of one tier into session order once none of its spans reached
    /// a sealed segment for this long, looked at every 30 s (a session is then read from one
    /// segment, not one per seal); 0s turns background compaction off.
    #[arg(long, env = "SIGHTLINE_COMPACTION_QUIET", default_value = "5m")]
    pub compaction_quiet: DurationArg,
    /// Refuse ingest (429 / RESOURCE_EXHAUSTED) when unsealed data exceeds this size.
    #[arg(long, env = "SIGHTLINE_MAX_MEMTABLE_BYTES", default_value = "1GiB")]
    pub max_memtable_bytes: ByteSize,
    /// Memory for caching pages of the index database (sightline.redb: indexes, trace keys,
    /// content); the operating system's page cache holds the rest.
    #[arg(long, env = "SIGHTLINE_INDEX_CACHE", default_value = "64MiB")]
    pub index_cache: ByteSize,
}

/// OTLP receivers.
#[derive(Debug, Args, Clone)]
pub struct OtlpArgs {
    /// OTLP/gRPC listen address.
    #[arg(
        long,
        env = "SIGHTLINE_OTLP_GRPC_ADDR",
        default_value = "127.0.0.1:4317"
    )]
    pub otlp_grpc_addr: SocketAddr,
    /// OTLP/HTTP listen address (POST /v1/traces).
    #[arg(
        long,
        env = "SIGHTLINE_OTLP_HTTP_ADDR",
        default_value = "127.0.0.1:4318"
    )]
    pub otlp_http_addr: SocketAddr,
    /// Largest accepted export request, compressed and decompressed (larger gets 413).
    #[arg(long, env = "SIGHTLINE_MAX_REQUEST_BYTES", default_value = "64MiB")]
    pub max_request_bytes: ByteSize,
    /// Request bytes being decoded and written at once before new exports get 429.
    #[arg(long, env = "SIGHTLINE_MAX_INFLIGHT_BYTES", default_value = "512MiB")]
    pub max_inflight_bytes: ByteSize,
}

/// The HTTP API (health, SQL, traces).
#[derive(Debug, Args, Clone)]
pub struct ApiArgs {
    /// HTTP API listen address.
    #[arg(long, env = "SIGHTLINE_API_ADDR", default_value = "127.0.0.1:7070")]
    pub api_addr: SocketAddr,
    /// Time limit for one HTTP request (queries have their own timeout).
    #[arg(long, env = "SIGHTLINE_HTTP_TIMEOUT", default_value = "120s")]
    pub http_timeout: DurationArg,
    /// Serve `POST /purge`, which deletes ALL stored data (for test suites such as Jaeger's
    /// end-to-end tests; never turn it on for data you want to keep).
    #[arg(long, env = "SIGHTLINE_ENABLE_PURGE")]
    pub enable_purge: bool,
}

/// The Jaeger v2 remote-storage gRPC server (`grpc` storage backend of Jaeger v2).
#[derive(Debug, Args, Clone)]
pub struct JaegerArgs {
    /// Listen address of the Jaeger remote-storage gRPC server (TraceReader, DependencyReader,
    /// Capabilities and the OTLP TraceService for writes, on one server).
    #[arg(long, env = "SIGHTLINE_JAEGER_ADDR", default_value = "127.0.0.1:17271")]
    pub jaeger_addr: SocketAddr,
}

/// The PostgreSQL wire protocol listener (psql, Grafana, drivers).
#[derive(Debug, Args, Clone)]
pub struct PgArgs {
    /// PostgreSQL wire protocol listen address (5433, not 5432: a local PostgreSQL keeps its
    /// port).
    #[arg(long, env = "SIGHTLINE_PG_ADDR", default_value = "127.0.0.1:5433")]
    pub pg_addr: SocketAddr,
}

/// Limits applied to every SQL query.
#[derive(Debug, Args, Clone)]
pub struct QueryArgs {
    /// Memory a query may use before it fails.
    #[arg(long, env = "SIGHTLINE_QUERY_MEMORY_LIMIT", default_value = "1GiB")]
    pub query_memory_limit: ByteSize,
    /// Time a query may run (formatting an HTTP result included) before it fails.
    #[arg(long, env = "SIGHTLINE_QUERY_TIMEOUT", default_value = "60s")]
    pub query_timeout: DurationArg,
    /// Most rows a query may return.
    #[arg(long, env = "SIGHTLINE_QUERY_MAX_ROWS", default_value_t = 1_000_000)]
    pub query_max_rows: usize,
    /// Most bytes a query's result may take, in memory and as a response.
    #[arg(
        long,
        env = "SIGHTLINE_QUERY_MAX_RESULT_BYTES",
        default_value = "256MiB"
    )]
    pub query_max_result_bytes: ByteSize,
    /// Queries that run at once; more wait for a slot within their timeout.
    #[arg(long, env = "SIGHTLINE_QUERY_MAX_CONCURRENT", default_value_t = 4)]
    pub query_max_concurrent: usize,
    /// Disk that queries outgrowing their memory may use together for temporary files, in
    /// `<data dir>/query-spill` (0 turns spilling off: such queries fail instead).
    #[arg(long, env = "SIGHTLINE_QUERY_SPILL_LIMIT", default_value = "10GiB")]
    pub query_spill_limit: ByteSize,
}

/// `sightline sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// Data directory to query directly (no server may be running on it).
    #[arg(
        long = "data",
        env = "SIGHTLINE_DATA",
        default_value = "./sightline-data",
        conflicts_with = "url"
    )]
    pub data_dir: PathBuf,
    /// Query a running server instead, e.g. http://127.0.0.1:7070 (with the token in
    /// `SIGHTLINE_TOKEN` when the server has tokens).
    #[arg(long, env = "SIGHTLINE_URL")]
    pub url: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Query limits (embedded mode).
    #[command(flatten)]
    pub query: QueryArgs,
    /// The SQL query.
    pub sql: String,
}

/// `sightline check-config`.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The configuration file.
    pub file: PathBuf,
}

/// `sightline retention ...`.
#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Delete every segment past its tier's age (as of now, or `--as-of`).
    Run(RetentionRunArgs),
    /// Per tier: spans, bytes, oldest row, next expiry; and the content store.
    Status(RetentionStatusArgs),
}

/// `sightline retention run`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    sightline retention run --dry-run\n  \
    sightline retention run --as-of 2027-06-01T00:00:00Z --dry-run   (what would be gone then)")]
pub struct RetentionRunArgs {
    /// Run it on the server at this URL (its admin API; the token in `SIGHTLINE_TOKEN` needs
    /// the admin scope) instead of on a stopped store's data directory.
    #[arg(long, env = "SIGHTLINE_URL", conflicts_with = "data_dir")]
    pub url: Option<String>,
    /// Data directory (no server may be running on it).
    #[arg(
        long = "data",
        env = "SIGHTLINE_DATA",
        default_value = "./sightline-data"
    )]
    pub data_dir: PathBuf,
    /// Measure ages as of this time (RFC 3339) instead of now.
    #[arg(long, value_name = "TIMESTAMP")]
    pub as_of: Option<String>,
    /// Report what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Configuration file with the tiers (default: the built-in configuration).
    #[arg(long, env = "SIGHTLINE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `sightline retention status`.
#[derive(Debug, Args)]
pub struct RetentionStatusArgs {
    /// Data directory (no server may be running on it).
    #[arg(
        long = "data",
        env = "SIGHTLINE_DATA",
        default_value = "./sightline-data"
    )]
    pub data_dir: PathBuf,
    /// Configuration file with the tiers (default: the built-in configuration).
    #[arg(long, env = "SIGHTLINE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `sightline verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Run it on the server at this URL (its admin API; the token in `SIGHTLINE_TOKEN` needs
    /// the admin scope) instead of on a stopped store's data directory.
    #[arg(long, env = "SIGHTLINE_URL", conflicts_with = "data_dir")]
    pub url: Option<String>,
    /// Data directory to verify (no server may be running on it).
    #[arg(
        long = "data",
        env = "SIGHTLINE_DATA",
        default_value = "./sightline-data"
    )]
    pub data_dir: PathBuf,
}

/// `sightline erase`.
#[derive(Debug, Args)]
pub struct EraseArgs {
    /// Run it on the server at this URL (its admin API; the token in `SIGHTLINE_TOKEN` needs
    /// the admin scope) instead of on a stopped store's data directory.
    #[arg(long, env = "SIGHTLINE_URL", conflicts_with = "data_dir")]
    pub url: Option<String>,
    /// The session to erase.
    #[arg(long, value_name = "SESSION_ID")]
    pub session: String,
    /// Data directory (no server may be running on it).
    #[arg(
        long = "data",
        env = "SIGHTLINE_DATA",
        default_value = "./sightline-data"
    )]
    pub data_dir: PathBuf,
    /// Configuration file with the tiers (default: the built-in configuration).
    #[arg(long, env = "SIGHTLINE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `sightline compact`.
#[derive(Debug, Args)]
pub struct CompactArgs {
    /// Run it on the server at this URL (its admin API; the token in `SIGHTLINE_TOKEN` needs
    /// the admin scope) instead of on a stopped store's data directory.
    #[arg(long, env = "SIGHTLINE_URL", conflicts_with = "data_dir")]
    pub url: Option<String>,
    /// Data directory to compact (no server may be running on it).
    #[arg(
        long = "data",
        env = "SIGHTLINE_DATA",
        default_value = "./sightline-data"
    )]
    pub data_dir: PathBuf,
    /// Configuration file with the tiers (default: the built-in configuration).
    #[arg(long, env = "SIGHTLINE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `sightline export`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    sightline export --lake ./lake\n  \
    sightline export --lake s3://traces/lake --node eu-1   (AWS_* variables as for any S3 client)\n  \
    sightline export --config sightline.toml               (its [lake] section)")]
pub struct ExportArgs {
    /// The lake: a directory, file:///dir, s3://bucket/prefix, gs://bucket/prefix or
    /// az://container/prefix (default: `[lake] url` of the configuration file).
    #[arg(long, env = "SIGHTLINE_LAKE", value_name = "URL")]
    pub lake: Option<String>,
    /// This store's name in the lake (default: `[lake] node`, else a name kept in the data
    /// directory).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Data directory (no server may be running on it: a server with `[lake]` ships by itself).
    #[arg(
        long = "data",
        env = "SIGHTLINE_DATA",
        default_value = "./sightline-data"
    )]
    pub data_dir: PathBuf,
    /// Configuration file with the tiers and `[lake]` (default: the built-in configuration).
    #[arg(long, env = "SIGHTLINE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `sightline hold`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    sightline hold --session sess_0123\n  \
    sightline hold --tier decision\n  \
    sightline hold --release --session sess_0123\n  \
    sightline hold            (lists the holds in force)")]
pub struct HoldArgs {
    /// Run it on the server at this URL (its admin API; the token in `SIGHTLINE_TOKEN` needs
    /// the admin scope) instead of on a stopped store's data directory.
    #[arg(long, env = "SIGHTLINE_URL", conflicts_with = "data_dir")]
    pub url: Option<String>,
    /// Hold (or with --release, release) this session.
    #[arg(long, value_name = "SESSION_ID", conflicts_with = "tier")]
    pub session: Option<String>,
    /// Hold (or with --release, release) this retention tier.
    #[arg(long, value_name = "TIER")]
    pub tier: Option<String>,
    /// Release the hold instead of placing it.
    #[arg(long)]
    pub release: bool,
    /// Data directory (no server may be running on it).
    #[arg(
        long = "data",
        env = "SIGHTLINE_DATA",
        default_value = "./sightline-data"
    )]
    pub data_dir: PathBuf,
}

/// Output formats of `sightline sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// `{"columns": [...], "rows": [...]}`.
    Json,
}

/// `sightline trace`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    sightline trace 4bf92f3577b34da6a3ce929d0e0e4736 --url http://127.0.0.1:7070\n  \
    sightline trace --session sess_0123 --data ./sightline-data")]
pub struct TraceArgs {
    /// The trace to draw: 32 hex characters.
    #[arg(required_unless_present = "session", conflicts_with = "session")]
    pub trace_id: Option<String>,
    /// List the runs of this session (one line each, oldest first) instead of drawing a trace.
    #[arg(long, value_name = "SESSION_ID")]
    pub session: Option<String>,
    /// Data directory to read directly (no server may be running on it).
    #[arg(
        long = "data",
        env = "SIGHTLINE_DATA",
        default_value = "./sightline-data",
        conflicts_with = "url"
    )]
    pub data_dir: PathBuf,
    /// Read from a running server instead, e.g. http://127.0.0.1:7070.
    #[arg(long, env = "SIGHTLINE_URL")]
    pub url: Option<String>,
    /// Colors: auto = when standard output is a terminal and NO_COLOR is not set.
    #[arg(long, env = "SIGHTLINE_COLOR", value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Query limits (embedded mode).
    #[command(flatten)]
    pub query: QueryArgs,
}

/// When `sightline trace` colors its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// When standard output is a terminal and `NO_COLOR` is unset or empty.
    Auto,
    /// Always (e.g. into `less -R`).
    Always,
    /// Never.
    Never,
}

/// Splits `64MiB` into `(64, "MiB")`; `None` when it does not start with a number.
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    number.parse().ok().map(|number| (number, unit))
}

/// A byte size: `1048576`, `64KiB`, `64MiB`, `1GiB` (also KB/MB/GB as powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// As usize, saturating.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (number, unit) =
            number_and_unit(text).ok_or_else(|| format!("{text:?} is not a size like 64MiB"))?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" | "k" => 1 << 10,
            "mib" | "m" => 1 << 20,
            "gib" | "g" => 1 << 30,
            "tib" | "t" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} (use B, KiB, MiB, GiB)"
                ));
            }
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        for (size, unit) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// A duration: `250ms`, `30s`, `5m`, `2h`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationArg(pub Duration);

impl FromStr for DurationArg {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (number, unit) =
            number_and_unit(text).ok_or_else(|| format!("{text:?} is not a duration like 30s"))?;
        let duration = match unit {
            "ms" => Duration::from_millis(number),
            "s" | "" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            "d" => Duration::from_secs(number.saturating_mul(86_400)),
            other => {
                return Err(format!(
                    "unknown duration unit {other:?} (use ms, s, m, h, d)"
                ));
            }
        };
        Ok(DurationArg(duration))
    }
}

impl fmt::Display for DurationArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The largest unit that divides it evenly: 400d, 14d, 5m, 90s, 250ms.
        let millis = self.0.as_millis();
        if !millis.is_multiple_of(1000) {
            return write!(f, "{millis}ms");
        }
        let seconds = millis / 1000;
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
            if seconds > 0 && seconds.is_multiple_of(size) {
                return write!(f, "{}{unit}", seconds / size);
            }
        }
        write!(f, "{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_and_durations_parse_with_units() {
        assert_eq!("64MiB".parse::<ByteSize>(), Ok(ByteSize(64 << 20)));
        assert_eq!("1gib".parse::<ByteSize>(), Ok(ByteSize(1 << 30)));
        assert_eq!("1000".parse::<ByteSize>(), Ok(ByteSize(1000)));
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
        assert_eq!(
            "250ms".parse::<DurationArg>(),
            Ok(DurationArg(Duration::from_millis(250)))
        );
        assert_eq!(
            "5m".parse::<DurationArg>(),
            Ok(DurationArg(Duration::from_secs(300)))
        );
        assert!("5 fortnights".parse::<DurationArg>().is_err());
    }

    #[test]
    fn serve_defaults_are_the_documented_ones() {
        let cli = Cli::try_parse_from(["sightline", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        assert_eq!(args.otlp.otlp_grpc_addr.to_string(), "127.0.0.1:4317");
        assert_eq!(args.otlp.otlp_http_addr.to_string(), "127.0.0.1:4318");
        assert_eq!(args.api.api_addr.to_string(), "127.0.0.1:7070");
        assert_eq!(args.storage.data_dir, PathBuf::from("./sightline-data"));
        assert_eq!(args.otlp.max_request_bytes, ByteSize(64 << 20));
        // Joins past the memory limit spill inside the data directory, 10 GiB at most.
        let query = crate::config::query_options(&args.query, &args.storage.data_dir);
        assert_eq!(
            query.spill_dir,
            Some(PathBuf::from("./sightline-data").join("query-spill"))
        );
        assert_eq!(query.spill_limit, 10 << 30);
        let cli = Cli::try_parse_from(["sightline", "serve", "--query-spill-limit", "0"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        assert_eq!(args.query.query_spill_limit, ByteSize(0));
    }

    #[test]
    fn trace_takes_a_trace_id_or_a_session_but_not_both() {
        let cli = Cli::try_parse_from(["sightline", "trace", "ab", "--url", "http://x"]).unwrap();
        let Command::Trace(args) = cli.command else {
            panic!("expected trace");
        };
        assert_eq!(args.trace_id.as_deref(), Some("ab"));
        assert_eq!(args.color, ColorChoice::Auto);
        let cli =
            Cli::try_parse_from(["sightline", "trace", "--session", "s1", "--color", "never"])
                .unwrap();
        let Command::Trace(args) = cli.command else {
            panic!("expected trace");
        };
        assert_eq!(args.session.as_deref(), Some("s1"));
        assert_eq!(args.color, ColorChoice::Never);
        assert!(Cli::try_parse_from(["sightline", "trace"]).is_err());
        assert!(Cli::try_parse_from(["sightline", "trace", "ab", "--session", "s1"]).is_err());
        assert!(
            Cli::try_parse_from(["sightline", "trace", "ab", "--data", "d", "--url", "u"]).is_err()
        );
    }
}
