//! `antwort-gateway`: parse the command line and config, start telemetry, bind, serve, drain.

use std::path::PathBuf;
use std::process::ExitCode;

use antwort_gateway::config::RawConfig;
use clap::Parser;

/// antwort's OpenResponses gateway.
///
/// Configuration comes from --config FILE (YAML), then ANTWORT_* environment variables
/// (ANTWORT_LISTEN, ANTWORT_BACKEND_URL, ANTWORT_LIMITS__MAX_BODY_BYTES, ...), then these flags.
#[derive(Parser, Debug)]
#[command(name = "antwort-gateway", version)]
struct Cli {
    /// YAML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// OpenAI-compatible base URL serving every model not configured otherwise.
    #[arg(long, value_name = "URL")]
    backend_url: Option<String>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Print the SHA-256 of an API key read from stdin, for `auth.api_keys[].sha256`.
    HashKey,
    /// Apply the database migrations of the configured store (`store.url`) and exit.
    Migrate,
}

/// Exit code for a configuration that does not load (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::HashKey) = cli.command {
        return hash_key();
    }
    let mut raw: RawConfig =
        match antwort_common::config::load(cli.config.as_deref(), std::env::vars()) {
            Ok(raw) => raw,
            Err(err) => {
                eprintln!("antwort-gateway: {err}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
    if let Some(listen) = cli.listen {
        raw.listen = listen;
    }
    if let Some(url) = cli.backend_url {
        raw.backend_url = Some(url);
    }
    let config = match raw.validate() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("antwort-gateway: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.check_config {
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("antwort-gateway: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let _telemetry = match antwort_common::telemetry::init("antwort-gateway", &config.telemetry) {
            Ok(guard) => guard,
            Err(err) => {
                eprintln!("antwort-gateway: {err}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        // The store first: migrations run here, and a database that cannot be reached at start
        // is a clear startup error rather than 503s later.
        let store = match antwort_gateway::open_store(&config).await {
            Ok(store) => store,
            Err(err) => {
                tracing::error!(%err, "cannot open the store");
                return ExitCode::FAILURE;
            }
        };
        if let Some(Command::Migrate) = cli.command {
            tracing::info!(engine = store.engine(), "migrations applied");
            println!("migrations applied ({})", store.engine());
            return ExitCode::SUCCESS;
        }
        let app = match antwort_gateway::build_app(&config, store) {
            Ok(app) => app,
            Err(err) => {
                tracing::error!(%err, "cannot build the gateway");
                return ExitCode::FAILURE;
            }
        };
        let listener = match tokio::net::TcpListener::bind(config.listen).await {
            Ok(l) => l,
            Err(err) => {
                tracing::error!(%err, addr = %config.listen, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(%addr, backends = config.backends.len(), models = config.models.len(), "antwort-gateway listening on {addr}");
        match antwort_gateway::serve_app(listener, app, antwort_common::shutdown::signal(), config.shutdown_grace_period).await {
            Ok(()) => {
                tracing::info!("antwort-gateway stopped");
                ExitCode::SUCCESS
            }
            Err(err) => {
                tracing::error!(%err, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// Reads one key from stdin (surrounding whitespace dropped, as the gateway does with presented
/// keys) and prints its hex SHA-256. The key never appears on the command line or in the output.
fn hash_key() -> ExitCode {
    let mut key = String::new();
    if let Err(err) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut key) {
        eprintln!("antwort-gateway hash-key: cannot read stdin: {err}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let key = key.trim();
    if key.chars().count() < antwort_gateway::auth::config::MIN_KEY_CHARS {
        eprintln!(
            "antwort-gateway hash-key: the key on stdin must be at least {} characters",
            antwort_gateway::auth::config::MIN_KEY_CHARS
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    println!(
        "{}",
        antwort_gateway::auth::config::to_hex(&antwort_gateway::auth::config::hash_key(key))
    );
    ExitCode::SUCCESS
}
