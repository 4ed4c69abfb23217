//! The command line. Every `antwort up` flag also reads an `ANTWORT_*` variable, so a harness
//! can configure it through the environment alone.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// antwort's operator CLI.
#[derive(Debug, Parser)]
#[command(name = "antwort", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole platform on this machine until Ctrl-C or SIGTERM: the development CA, the
    /// pool manager with warm local Python sandboxes, the gateway (embedded SQLite store) and a
    /// model backend (ANTWORT_BACKEND_URL, or else antwort's scripted stand-in).
    ///
    /// Prints `antwort is ready: OPENAI_BASE_URL=http://ADDR/v1` on stdout once everything is
    /// ready. A second Ctrl-C during the stop kills what is left. Exits 0 after a signal-initiated stop, 1 when a component fails or dies (the others
    /// are stopped first), 64 for bad settings. Without ANTWORT_AUTH__* settings the gateway
    /// runs without user authentication; any other ANTWORT_* variable still configures the
    /// gateway (e.g. ANTWORT_STORE__URL=postgres://...).
    Up(UpArgs),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Address of the gateway's OpenAI-compatible API; port 0 picks a free port (the address
    /// is printed).
    #[arg(long, env = "ANTWORT_LISTEN", default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// OpenAI-compatible base URL of the model backend (vLLM, Ollama, LiteLLM), e.g.
    /// http://localhost:8000/v1. Unset: antwort-scripted-backend is started as a stand-in.
    #[arg(long, env = "ANTWORT_BACKEND_URL", value_name = "URL")]
    pub backend_url: Option<String>,
    /// Folder for the store (SQLite), the development CA and the sandboxes' folders.
    #[arg(long, env = "ANTWORT_DATA_DIR", default_value = "antwort-data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Warm Python sandboxes the pool keeps ready for claims.
    #[arg(long, env = "ANTWORT_POOL_MIN_READY", default_value_t = 2, value_name = "N")]
    pub pool_min_ready: u32,
    /// Most sandboxes of the pool at once (ready, claimed and starting).
    #[arg(long, env = "ANTWORT_POOL_MAX_PODS", default_value_t = 8, value_name = "N")]
    pub pool_max_pods: u32,
    /// Trust domain of the development CA and of every SPIFFE ID it mints.
    #[arg(long, env = "ANTWORT_TRUST_DOMAIN", default_value = "antwort.local")]
    pub trust_domain: String,
    /// When run as root, sandbox n runs user code as uid/gid BASE + n.
    #[arg(long, env = "ANTWORT_SANDBOX_UID_BASE", default_value_t = 40_000, value_name = "BASE")]
    pub sandbox_uid_base: u32,
    /// Folder holding antwort-gateway, antwort-pool-manager, antwort-sandbox-agent and
    /// antwort-scripted-backend. Default: the folder of this executable.
    #[arg(long, env = "ANTWORT_BIN_DIR", value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// How long start-up may take in all (every component ready, the pool warm), in seconds.
    #[arg(long, env = "ANTWORT_READY_TIMEOUT_SECS", default_value_t = 120, value_name = "SECS")]
    pub ready_timeout_secs: u64,
    /// How long each component may take to stop after SIGTERM before it is killed, in seconds
    /// (above the gateway's own drain period, 30 s by default).
    #[arg(long, env = "ANTWORT_STOP_TIMEOUT_SECS", default_value_t = 45, value_name = "SECS")]
    pub stop_timeout_secs: u64,
}

impl UpArgs {
    /// Problems clap cannot see, each naming its flag.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.pool_max_pods == 0 {
            problems.push("--pool-max-pods: must be at least 1".to_owned());
        }
        if self.pool_min_ready > self.pool_max_pods {
            problems.push(format!(
                "--pool-min-ready ({}) exceeds --pool-max-pods ({})",
                self.pool_min_ready, self.pool_max_pods
            ));
        }
        if let Some(url) = self.backend_url()
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problems.push(format!(
                "--backend-url / ANTWORT_BACKEND_URL: {url:?} is not an http(s):// URL"
            ));
        }
        if self.ready_timeout_secs == 0 || self.stop_timeout_secs == 0 {
            problems.push("--ready-timeout-secs and --stop-timeout-secs: at least 1".to_owned());
        }
        problems
    }

    /// The configured backend; an empty value counts as unset.
    pub fn backend_url(&self) -> Option<&str> {
        self.backend_url.as_deref().map(str::trim).filter(|url| !url.is_empty())
    }
}
