//! `antwort-sandbox-agent`: parse the command line, load and validate the config (exit 64 on any
//! problem, before anything binds), then serve until SIGTERM/SIGINT: the agent, or with the
//! `spawner` subcommand the spawner of the pod's `sandbox` container (same config file).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use antwort_sandbox_agent::spawner::server::Spawner;
use antwort_sandbox_agent::{Config, server};

/// The server inside every antwort sandbox image: code execution, files, file search, web search.
///
/// Configuration: a YAML file (--config) plus ANTWORT_* environment overrides, `__` between
/// levels (ANTWORT_LIMITS__MAX_SESSIONS=4, ANTWORT_SERVER__LISTEN=0.0.0.0:8443).
#[derive(Debug, Parser)]
#[command(name = "antwort-sandbox-agent", version)]
struct Cli {
    /// The YAML configuration file.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Load and validate the configuration, then exit.
    #[arg(long, global = true)]
    check: bool,
    #[command(subcommand)]
    mode: Option<Mode>,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Run the spawner (the pod's `sandbox` container): start interpreters for the agent as
    /// `sandbox.uid`, over the Unix socket `sandbox.spawner`, for the uid `sandbox.agent_uid` only.
    Spawner,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One process-wide crypto provider (ring) for every TLS user, set before any is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("antwort-sandbox-agent: {e}");
            return ExitCode::from(64);
        }
    };
    if let (Some(Mode::Spawner), Err(e)) = (&cli.mode, config.validate_spawner()) {
        eprintln!("antwort-sandbox-agent: {e}");
        return ExitCode::from(64);
    }
    if cli.check {
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("antwort-sandbox-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = async {
        antwort_common::shutdown::signal().await;
    };
    let result = match cli.mode {
        None => runtime.block_on(server::run(config, shutdown)),
        Some(Mode::Spawner) => runtime.block_on(async {
            let spawner = Spawner::bind(&config)?;
            spawner.serve(shutdown).await
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(antwort_sandbox_agent::Error::Config(e)) => {
            eprintln!("antwort-sandbox-agent: {e}");
            ExitCode::from(64)
        }
        Err(e) => {
            eprintln!("antwort-sandbox-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
