//! The `sightline` binary.

use std::io::IsTerminal as _;

use api::cli::{Cli, Command, LogFormat, RetentionCommand};
use api::config::ServerConfig;
use clap::Parser as _;
use tracing_subscriber::EnvFilter;

/// jemalloc, purging freed pages in background threads: under overload, glibc's per-thread
/// arenas kept gigabytes of freed export buffers resident (`benches/BENCHMARKS.md`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // `trace` draws for a person reading the terminal: store lifecycle lines would be noise.
    let default_filter = match cli.command {
        Command::Trace(_) => "warn",
        _ => "info",
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
        LogFormat::Json => {
            tracing_subscriber::fmt()
                .json()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
            // A panic (a bug, answered 500) is one JSON line too, not plain text and a
            // backtrace that log shippers cannot parse.
            std::panic::set_hook(Box::new(|info| {
                let thread = std::thread::current();
                tracing::error!(
                    thread = thread.name().unwrap_or("unnamed"),
                    panic = %info,
                    "panic"
                );
            }));
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(error = %error, "cannot start the async runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => match ServerConfig::from_args(&args) {
                Ok(config) => serve(config).await,
                Err(error) => Err(anyhow::Error::new(error)),
            },
            Command::CheckConfig(args) => {
                api::retention_command::check_config(&args, &mut std::io::stdout().lock())
            }
            Command::Retention(RetentionCommand::Run(args)) => {
                api::retention_command::run(&args, &mut std::io::stdout().lock()).await
            }
            Command::Retention(RetentionCommand::Status(args)) => {
                api::retention_command::status(&args, &mut std::io::stdout().lock())
            }
            Command::Sql(args) => api::sql_command::run(&args, &mut std::io::stdout().lock()).await,
            Command::Trace(args) => {
                let stdout = std::io::stdout();
                let is_terminal = stdout.is_terminal();
                api::trace_command::run(&args, &mut stdout.lock(), is_terminal).await
            }
            Command::Verify(args) => {
                api::compliance_command::verify(&args, &mut std::io::stdout().lock()).await
            }
            Command::Erase(args) => {
                api::compliance_command::erase(&args, &mut std::io::stdout().lock()).await
            }
            Command::Hold(args) => {
                api::compliance_command::hold(&args, &mut std::io::stdout().lock()).await
            }
            Command::Compact(args) => {
                api::compliance_command::compact(&args, &mut std::io::stdout().lock()).await
            }
            Command::Export(args) => {
                api::export_command::run(&args, &mut std::io::stdout().lock()).await
            }
            Command::Token(args) => api::auth::token_command(&args, &mut std::io::stdout().lock()),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {error:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    // In-flight HTTP requests end within their timeout; allow that plus a margin.
    let grace = config.http_timeout + api::server::SHUTDOWN_GRACE;
    let server = api::start(config).await?;
    let token = server.shutdown_token();
    tokio::spawn(async move {
        api::server::shutdown_signal().await;
        token.cancel();
    });
    let token = server.shutdown_token();
    let waiting = server.wait();
    tokio::pin!(waiting);
    tokio::select! {
        result = &mut waiting => result,
        () = async {
            token.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            anyhow::bail!("in-flight requests did not finish within {grace:?} of shutdown; acknowledged spans are safe in the write-ahead log")
        }
    }
}
