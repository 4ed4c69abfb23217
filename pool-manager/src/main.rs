//! `antwort-pool-manager`: parse the command line, then either print the CRD (`crd`) or run the
//! controller against the cluster from the kubeconfig (or in-cluster config) until SIGTERM/SIGINT.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use antwort_pool_manager::{ManagerConfig, crd};

/// Keeps pools of warm, hardened sandbox pods (SandboxPool custom resources) on Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "antwort-pool-manager", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Watch this namespace only (default: every namespace).
    #[arg(long, env = "ANTWORT_POOL_NAMESPACE")]
    namespace: Option<String>,
    /// Re-check every pool at least this often, in seconds.
    #[arg(long, default_value_t = 30)]
    resync_seconds: u64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the SandboxPool CRD manifest (YAML) and exit.
    Crd,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Crd) = cli.command {
        print!("{}", crd::crd_yaml());
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // One process-wide crypto provider (ring) for every TLS user, set before any is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = ManagerConfig {
        namespace: cli.namespace,
        resync: Duration::from_secs(cli.resync_seconds.max(1)),
        ..ManagerConfig::default()
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let result = runtime.block_on(async {
        let client = kube::Client::try_default()
            .await
            .map_err(|error| antwort_pool_manager::Error::ClientConfig(error.to_string()))?;
        antwort_pool_manager::run(client, config, antwort_common::shutdown::signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "pool manager failed");
            ExitCode::FAILURE
        }
    }
}
