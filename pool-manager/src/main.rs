//! `antwort-pool-manager`: parse the command line, then either print the CRD (`crd`) or the RBAC
//! rules it needs (`rbac`), or load and validate the config (exit 64 on any problem, before
//! anything binds; `--check` stops there) and serve until SIGTERM/SIGINT.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use antwort_pool_manager::{Config, crd, server};

/// Keeps pools of warm, hardened sandboxes (on Kubernetes, or as local agent processes) and
/// hands them out through an mTLS claim API.
///
/// Configuration: a YAML file (--config) plus ANTWORT_* environment overrides, `__` between
/// levels (ANTWORT_CLAIMS__WAIT_MS=5000).
#[derive(Debug, Parser)]
#[command(name = "antwort-pool-manager", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The YAML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Load and validate the configuration, then exit.
    #[arg(long, alias = "check-config")]
    check: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the SandboxPool CRD manifest (YAML) and exit.
    Crd,
    /// Print the RBAC rules the manager needs in its namespace (a Role's `rules`, YAML) and exit.
    Rbac,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) => {
            print!("{}", crd::crd_yaml());
            return ExitCode::SUCCESS;
        }
        Some(Command::Rbac) => {
            print!("{}", antwort_pool_manager::runtime::kube::rbac_yaml());
            return ExitCode::SUCCESS;
        }
        None => {}
    }
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // One process-wide crypto provider (ring) for every TLS user, set before any is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    for name in Config::ignored_env(std::env::vars()) {
        eprintln!("antwort-pool-manager: warning: {name} is ignored (no such config section)");
    }
    let config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("antwort-pool-manager: {error}");
            return ExitCode::from(64);
        }
    };
    if cli.check {
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("antwort-pool-manager: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let listeners = server::Listeners::bind(&config).await?;
        server::run(config, None, listeners, antwort_common::shutdown::signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(antwort_pool_manager::Error::Config(error)) => {
            eprintln!("antwort-pool-manager: {error}");
            ExitCode::from(64)
        }
        Err(error) => {
            eprintln!("antwort-pool-manager: {error}");
            ExitCode::FAILURE
        }
    }
}
