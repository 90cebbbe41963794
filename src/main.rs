//! The `token-broker` binary: parses flags, loads config and keys, serves until SIGTERM.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use token_broker::{
    broker::{Broker, MasterKeySource},
    clock::{self, TEST_CLOCK_ENV},
    config::{Config, MASTER_KEY_ENV},
    server, telemetry,
};

#[derive(Parser)]
#[command(
    name = "token-broker",
    version,
    about = "gRPC broker for short-lived, down-scoped credentials"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (embedded defaults: 127.0.0.1:50051, ./data, ./policies).
    Serve {
        /// TOML config file; `TOKEN_BROKER_*` variables and these flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on, e.g. 127.0.0.1:50051 (port 0 picks a free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Directory for the database and generated keys.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Directory with schema.cedarschema and *.cedar policies.
        #[arg(long)]
        policies: Option<PathBuf>,
    },
    /// Moved: the load generator is now its own binary, `token-broker-load`.
    #[command(disable_help_flag = true)]
    Load {
        /// Whatever was typed after `load`, accepted so that every old command line gets the hint.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
}

/// mimalloc instead of glibc's malloc: per-request allocation (h2 frames, Cedar values,
/// protobuf) was ~30 % of a mint's CPU under glibc (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
            policies,
        } => {
            let mut cfg = match Config::load(config.as_deref(), std::env::vars()) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            if let Some(v) = listen {
                cfg.listen = v;
            }
            if let Some(v) = data_dir {
                cfg.data_dir = v;
            }
            if let Some(v) = policies {
                cfg.policies = v;
            }
            let master_env = std::env::var(MASTER_KEY_ENV).ok();
            let test_clock = std::env::var(TEST_CLOCK_ENV).ok();
            telemetry::init(cfg.log_format == "json");
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return fail(&e),
            };
            match runtime.block_on(serve(cfg, master_env, test_clock)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e.as_ref()),
            }
        }
        Command::Load { args: _ } => {
            // Not exec'd: the old spelling fails loudly, so scripts get fixed.
            eprintln!(
                "token-broker: `load` moved to its own binary: run `token-broker-load` with the \
                 same flags (from a checkout: `cargo run --release --bin token-broker-load -- …`)"
            );
            ExitCode::from(2)
        }
    }
}

async fn serve(
    cfg: Config,
    master_env: Option<String>,
    test_clock: Option<String>,
) -> Result<(), Box<dyn std::error::Error>> {
    let master = match master_env {
        Some(text) => MasterKeySource::Base64(text),
        None => MasterKeySource::File,
    };
    let listen = cfg.listen;
    // Everything the broker creates (sled's files, snapshots, key files) is the broker's
    // alone: 0600 files in a 0700 data dir, whatever umask the service manager left.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    // The system clock, unless a debug build is given a test clock (see `clock::from_env`).
    let broker = Broker::open_with_clock(cfg, master, clock::from_env(test_clock)).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on `{listen}`: {e}"))?;
    server::run(broker, listener, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down");
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("token-broker: {error}");
    ExitCode::FAILURE
}
