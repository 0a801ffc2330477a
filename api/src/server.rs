//! Startup and shutdown of `sightline serve`: open the engine (recovery), bind the four
//! listeners (OTLP/gRPC, OTLP/HTTP, HTTP API, Jaeger remote storage, PostgreSQL wire protocol), serve until cancelled, then drain requests, seal and close the engine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::listener::Listening;
use crate::tls::Protocol;
use anyhow::Context as _;
use engine::Engine;
use query::SqlEngine;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tracing::{info, warn};

use crate::auth::{self, GrpcAuthLayer, HttpGuard};
use crate::config::ServerConfig;
use crate::http_api;
use crate::jaeger::JaegerStorage;
use crate::otlp;
use crate::otlp_grpc::{OtlpLogsServer, OtlpTraceServer};

/// Shared state of every handler.
#[derive(Debug)]
pub struct AppState {
    /// The storage engine.
    pub engine: Arc<Engine>,
    /// SQL over the engine.
    pub sql: SqlEngine,
    /// Limits in-flight ingest bytes; exports past it get 429 / RESOURCE_EXHAUSTED.
    pub ingest_budget: Arc<Semaphore>,
    /// Largest accepted request body, compressed and decompressed.
    pub max_request_bytes: usize,
    /// Retention rules placing each ingested span in a tier.
    pub rules: query::RuleSet,
    /// Redaction and content extraction applied to every export before it is written.
    pub content: ingest::ContentPolicy,
    /// Counters served at `GET /metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The configuration the server runs with (retention and content keeps for maintenance).
    pub config: Arc<ServerConfig>,
}

/// The content policy from the configuration file's `[content]` section and the store's digest
/// key. Fails naming a bad redaction rule.
pub fn content_policy(
    section: &crate::config_file::ContentSection,
    digest_key: [u8; 32],
) -> anyhow::Result<ingest::ContentPolicy> {
    let rules: Vec<ingest::RedactionRuleConfig> = section
        .redaction
        .iter()
        .map(|rule| ingest::RedactionRuleConfig {
            name: rule.name.clone(),
            keys: rule.keys.clone(),
            detectors: rule.detectors.clone(),
            regexes: rule.regexes.clone(),
            drop: rule.drop,
        })
        .collect();
    ingest::ContentPolicy::new(section.capture, &rules, digest_key)
        .context("invalid [content] configuration")
}

/// A started server: its bound addresses and a handle to stop it.
#[derive(Debug)]
pub struct RunningServer {
    /// Bound OTLP/gRPC address.
    pub otlp_grpc_addr: SocketAddr,
    /// Bound OTLP/HTTP address.
    pub otlp_http_addr: SocketAddr,
    /// Bound HTTP API address.
    pub api_addr: SocketAddr,
    /// Bound Jaeger remote-storage gRPC address.
    pub jaeger_addr: SocketAddr,
    /// Bound PostgreSQL wire protocol address.
    pub pg_addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    engine: Arc<Engine>,
}

impl RunningServer {
    /// The server's engine (for tests and maintenance running beside the server).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, finishes in-flight requests, seals and closes the store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the server stopped (after its token was cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task failed")?
    }
}

/// Concurrent OTLP/gRPC exports one connection may have in flight.
const MAX_CONCURRENT_EXPORTS_PER_CONNECTION: usize = 32;

/// Concurrent OTLP/gRPC exports over all connections. tonic reads a message whole before the
/// handler can budget it; beyond this many, streams wait unread (HTTP/2 flow control holds
/// their bodies at the client), so many clients with large exports do not all sit in memory.
const MAX_CONCURRENT_GRPC_EXPORTS: usize = 16;

/// File in the data directory holding the running server's API address (`http://host:port`),
/// written once it listens and removed when it stops; the CLI names it when it finds the
/// directory in use.
pub(crate) const API_ADDR_FILE: &str = "api.addr";

/// The API address of the server running on `data_dir`, as it recorded it.
pub(crate) fn running_api_url(data_dir: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join(API_ADDR_FILE)).ok()?;
    let url = text.trim();
    url.starts_with("http://").then(|| url.to_owned())
}

/// Bytes per permit of the ingest budget semaphore.
pub(crate) const BUDGET_UNIT: usize = 1024;

/// Opens the store and starts all listeners. Returns once every listener is bound and recovery
/// is done, so `/healthz` answers 200 from then on.
pub async fn start(config: ServerConfig) -> anyhow::Result<RunningServer> {
    // Before the store is opened (recovery can take a while): refuse an unprotected exposure.
    check_exposure(&config)?;
    // Unreadable certificates fail here too, before recovery.
    let tls = config.tls.as_ref().map(crate::tls::Tls::load).transpose()?;
    anyhow::ensure!(
        config.max_inflight_bytes >= config.max_request_bytes,
        "--max-inflight-bytes ({}) must be at least --max-request-bytes ({}), or the largest exports could never be admitted",
        config.max_inflight_bytes,
        config.max_request_bytes
    );
    // A lake URL that cannot be used fails here, before recovery.
    let lake_target = match &config.lake {
        Some(lake) => Some((
            crate::lake_shipper::Lake::open_with(&lake.url, &lake.options)?,
            lake,
        )),
        None => None,
    };
    let data_dir = config.data_dir.clone();
    let engine_options = config.engine.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::open(&data_dir, engine_options))
        .await
        .context("engine open task failed")?
        .map_err(|error| match error {
            engine::Error::Locked { path } => anyhow::anyhow!(
                "data directory {} is in use by another sightline process",
                path.display()
            ),
            other => anyhow::Error::new(other).context("cannot open the data directory"),
        })?;
    let engine = Arc::new(engine);
    let lake = match lake_target {
        Some((opened, settings)) => Some((
            opened,
            crate::lake_shipper::node_name(&config.data_dir, settings.node.as_deref())?,
            settings.interval,
            settings.content,
        )),
        None => None,
    };
    let sql = SqlEngine::new(Arc::clone(&engine), config.query.clone())
        .context("cannot set up the SQL engine")?;
    let key_engine = Arc::clone(&engine);
    let digest_key = tokio::task::spawn_blocking(move || key_engine.content_digest_key())
        .await
        .context("content key task failed")?
        .context("cannot read the content digest key")?;
    let content = content_policy(&config.content, digest_key)?;
    let budget_permits = (config.max_inflight_bytes / BUDGET_UNIT).clamp(1, Semaphore::MAX_PERMITS);
    let state = Arc::new(AppState {
        engine: Arc::clone(&engine),
        sql,
        ingest_budget: Arc::new(Semaphore::new(budget_permits)),
        max_request_bytes: config.max_request_bytes,
        rules: config.rules.clone(),
        content,
        metrics: Arc::new(crate::metrics::Metrics::default()),
        config: Arc::new(config.clone()),
    });

    let tls = tls.as_ref();
    let grpc_listener =
        Listening::bind(config.otlp_grpc_addr, "OTLP/gRPC", tls, Protocol::Grpc).await?;
    let http_listener =
        Listening::bind(config.otlp_http_addr, "OTLP/HTTP", tls, Protocol::Http1).await?;
    let api_listener = Listening::bind(config.api_addr, "HTTP API", tls, Protocol::Http1).await?;
    let jaeger_listener = Listening::bind(
        config.jaeger_addr,
        "Jaeger remote storage (gRPC)",
        tls,
        Protocol::Grpc,
    )
    .await?;
    let otlp_grpc_addr = grpc_listener.local_addr()?;
    let otlp_http_addr = http_listener.local_addr()?;
    let api_addr = api_listener.local_addr()?;
    let jaeger_addr = jaeger_listener.local_addr()?;
    let pg_listener = tokio::net::TcpListener::bind(config.pg_addr)
        .await
        .with_context(|| format!("cannot listen for PostgreSQL clients on {}", config.pg_addr))?;
    let pg_addr = pg_listener.local_addr()?;
    let pg_tls = tls
        .map(|tls| tls.acceptor(Protocol::Postgres))
        .transpose()?;

    let shutdown = CancellationToken::new();
    let (grpc_traces, grpc_logs) = otlp_grpc_service(&state, &config);
    let grpc_token = shutdown.clone();
    let grpc_tokens = Arc::clone(&config.tokens);
    let jaeger_tokens = Arc::clone(&config.tokens);
    let grpc_metrics = Arc::clone(&state.metrics);
    let jaeger_metrics = Arc::clone(&state.metrics);
    let guard = Arc::new(HttpGuard {
        tokens: Arc::clone(&config.tokens),
        allowed_hosts: config.allowed_hosts.clone(),
        allowed_origins: config.allowed_origins.clone(),
        metrics: Arc::clone(&state.metrics),
    });
    let grpc = tokio::spawn(async move {
        // A message is read whole before the handler budgets it: bound concurrent streams.
        let router = tonic::transport::Server::builder()
            .concurrency_limit_per_connection(MAX_CONCURRENT_EXPORTS_PER_CONNECTION)
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                MAX_CONCURRENT_GRPC_EXPORTS,
            ))
            .layer(GrpcAuthLayer::new(grpc_tokens, grpc_metrics))
            .add_service(grpc_traces)
            .add_service(grpc_logs);
        router
            .serve_with_incoming_shutdown(
                grpc_listener.into_incoming(),
                grpc_token.cancelled_owned(),
            )
            .await
            .context("OTLP/gRPC server failed")
    });
    let (trace_reader, dependency_reader, capabilities) =
        JaegerStorage::new(Arc::clone(&state)).services();
    let (jaeger_otlp, jaeger_logs) = otlp_grpc_service(&state, &config);
    let jaeger_token = shutdown.clone();
    let jaeger = tokio::spawn(async move {
        let router = tonic::transport::Server::builder()
            .concurrency_limit_per_connection(MAX_CONCURRENT_EXPORTS_PER_CONNECTION)
            .layer(GrpcAuthLayer::new(jaeger_tokens, jaeger_metrics))
            .add_service(
                trace_reader
                    .accept_compressed(CompressionEncoding::Gzip)
                    .send_compressed(CompressionEncoding::Gzip),
            )
            .add_service(dependency_reader)
            .add_service(capabilities)
            .add_service(jaeger_otlp)
            .add_service(jaeger_logs);
        router
            .serve_with_incoming_shutdown(
                jaeger_listener.into_incoming(),
                jaeger_token.cancelled_owned(),
            )
            .await
            .context("Jaeger remote-storage gRPC server failed")
    });
    let http_router = otlp::http_router(Arc::clone(&state))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&guard),
            auth::http_middleware,
        ))
        .layer(auth::cors(&config.allowed_origins));
    let http_token = shutdown.clone();
    let http = tokio::spawn(async move {
        axum::serve(http_listener, http_router)
            .with_graceful_shutdown(http_token.cancelled_owned())
            .await
            .context("OTLP/HTTP server failed")
    });
    let api_router = http_api::router(Arc::clone(&state), config.http_timeout, config.enable_purge)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&guard),
            auth::http_middleware,
        ))
        .layer(auth::cors(&config.allowed_origins));
    let api_token = shutdown.clone();
    let api = tokio::spawn(async move {
        axum::serve(api_listener, api_router)
            .with_graceful_shutdown(api_token.cancelled_owned())
            .await
            .context("HTTP API server failed")
    });
    let pg = tokio::spawn(crate::pg::serve(
        pg_listener,
        Arc::clone(&state),
        Arc::clone(&config.tokens),
        pg_tls,
        shutdown.clone(),
    ));
    tokio::spawn(crate::retention_command::background(
        Arc::clone(&engine),
        config.retention_interval,
        shutdown.clone(),
    ));
    tokio::spawn(content_expiry(
        Arc::clone(&engine),
        config.retention_interval,
        config.clone(),
        shutdown.clone(),
    ));
    // The shipper stops after the listeners, with a last pass over the final seal.
    let lake_stop = CancellationToken::new();
    let lake_task = lake.map(|(opened, node, interval, content)| {
        info!(lake = %opened, node, interval = ?interval, "shipping sealed data to the lake");
        tokio::spawn(crate::lake_shipper::run(
            Arc::clone(&engine),
            opened,
            node,
            interval,
            content,
            Arc::clone(&state.metrics),
            lake_stop.clone(),
        ))
    });
    // Where this server answers, for a CLI that finds the data directory locked to point at.
    let api_addr_file = config.data_dir.join(API_ADDR_FILE);
    let scheme = if tls.is_some() { "https" } else { "http" };
    if let Err(error) = std::fs::write(&api_addr_file, format!("{scheme}://{api_addr}\n")) {
        warn!(file = %api_addr_file.display(), error = %error, "could not record the API address");
    }
    info!(
        otlp_grpc = %otlp_grpc_addr,
        otlp_http = %otlp_http_addr,
        api = %api_addr,
        jaeger = %jaeger_addr,
        pg = %pg_addr,
        tls = tls.is_some(),
        purge = config.enable_purge,
        data = %config.data_dir.display(),
        "sightline listening"
    );

    let running_engine = Arc::clone(&engine);
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        let mut results = Vec::new();
        let mut servers = tokio::task::JoinSet::new();
        for (name, handle) in [
            ("otlp-grpc", grpc),
            ("otlp-http", http),
            ("api", api),
            ("jaeger", jaeger),
            ("pg", pg),
        ] {
            servers.spawn(async move { (name, handle.await) });
        }
        while let Some(joined) = servers.join_next().await {
            // Whichever listener stops first, with an error or not, takes the others down too.
            token.cancel();
            let (name, result) = match joined {
                Ok(pair) => pair,
                Err(error) => {
                    results.push(anyhow::Error::new(error).context("server watcher failed"));
                    continue;
                }
            };
            match result {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    warn!(server = name, error = %format!("{error:#}"), "server stopped with an error");
                    results.push(error);
                }
                Err(error) => {
                    results
                        .push(anyhow::Error::new(error).context(format!("{name} task panicked")));
                }
            }
        }
        drop(state);
        if let Some(lake_task) = lake_task {
            info!("listeners stopped; sealing and shipping to the lake a last time");
            let sealing = Arc::clone(&engine);
            if let Err(error) = tokio::task::spawn_blocking(move || sealing.seal())
                .await
                .context("seal task failed")
                .and_then(|sealed| sealed.context("sealing before the last lake pass failed"))
            {
                warn!(error = %format!("{error:#}"), "the last lake pass ships what was sealed before");
            }
            lake_stop.cancel();
            if let Err(error) = lake_task.await {
                warn!(error = %error, "lake shipping task failed");
            }
        }
        info!("listeners stopped; sealing and closing the store");
        let close_engine = Arc::clone(&engine);
        tokio::task::spawn_blocking(move || close_engine.close())
            .await
            .context("engine close task failed")?
            .context("closing the store failed")?;
        let _ = std::fs::remove_file(&api_addr_file);
        info!("store closed");
        match results.into_iter().next() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    });

    Ok(RunningServer {
        otlp_grpc_addr,
        otlp_http_addr,
        api_addr,
        jaeger_addr,
        pg_addr,
        shutdown,
        task,
        engine: running_engine,
    })
}

/// Content retention, independent of the span skeleton: every `interval`, removes content last
/// referenced longer ago than its tier's content keep
/// ([`ServerConfig::content_expiry_request`]; references keep their digests).
async fn content_expiry(
    engine: Arc<Engine>,
    interval: Duration,
    config: ServerConfig,
    shutdown: CancellationToken,
) {
    if interval.is_zero() {
        return;
    }
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let request = config.content_expiry_request(crate::otlp::now_unix_nanos());
        let engine = Arc::clone(&engine);
        match tokio::task::spawn_blocking(move || engine.expire_content_with(&request)).await {
            Ok(Ok(expiry)) => info!(
                messages = expiry.messages,
                bytes = expiry.bytes,
                "content retention pass"
            ),
            Ok(Err(error)) => warn!(error = %error, "content retention pass failed"),
            Err(error) => warn!(error = %error, "content retention task failed"),
        }
    }
}

/// Refuses to listen beyond loopback unprotected: without `--insecure`, every listener must
/// be on a loopback address unless both tokens and TLS are configured.
fn check_exposure(config: &ServerConfig) -> anyhow::Result<()> {
    let exposed: Vec<String> = [
        ("--otlp-grpc-addr", config.otlp_grpc_addr),
        ("--otlp-http-addr", config.otlp_http_addr),
        ("--api-addr", config.api_addr),
        ("--jaeger-addr", config.jaeger_addr),
        ("--pg-addr", config.pg_addr),
    ]
    .into_iter()
    .filter(|(_, addr)| !addr.ip().is_loopback())
    .map(|(flag, addr)| format!("{flag} {addr}"))
    .collect();
    if config.tokens.is_empty() {
        info!("no API tokens configured: every request is allowed");
    }
    if exposed.is_empty() {
        if config.tokens.is_empty() {
            info!("listeners stay on loopback until tokens and TLS are configured");
        }
        return Ok(());
    }
    let missing = match (config.tokens.is_empty(), config.tls.is_none()) {
        (false, false) => return Ok(()),
        (true, true) => "API tokens ([[auth.tokens]] in the configuration file) and TLS",
        (true, false) => "API tokens ([[auth.tokens]] in the configuration file)",
        (false, true) => "TLS ([tls] in the configuration file, or --tls-cert and --tls-key)",
    };
    if config.insecure {
        warn!(
            listeners = %exposed.join(", "),
            "--insecure: listening beyond loopback without {missing}"
        );
        return Ok(());
    }
    anyhow::bail!(
        "refusing to listen beyond loopback ({}) without {missing}; pass --insecure to do it anyway",
        exposed.join(", ")
    )
}

/// The OTLP `TraceService` and `LogsService` as served on the OTLP/gRPC and the Jaeger
/// addresses.
fn otlp_grpc_service(
    state: &Arc<AppState>,
    config: &ServerConfig,
) -> (OtlpTraceServer, OtlpLogsServer) {
    (
        OtlpTraceServer::new(Arc::clone(state), config.max_request_bytes),
        OtlpLogsServer::new(Arc::clone(state), config.max_request_bytes),
    )
}

/// Resolves when SIGTERM or ctrl-c arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("ctrl-c received, shutting down"),
        () = terminate => info!("SIGTERM received, shutting down"),
    }
}

/// How long graceful shutdown waits, beyond the HTTP request timeout, for in-flight requests
/// before giving up (acknowledged spans are safe in the WAL either way).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
