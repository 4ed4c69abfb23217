//! `antwort-scripted-backend`: serves the scripted Chat Completions backend on `--listen`,
//! scripted by `--script FILE` (JSON or YAML) and by `SCRIPT:` directives in messages.
//! Prints `listening on http://ADDR/v1` once bound; stops on SIGINT or SIGTERM.

#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use antwort_scripted_backend::{Options, ScriptFile, ScriptedBackend};
use clap::Parser;

/// A scripted OpenAI-compatible Chat Completions backend (deterministic; echo by default).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "SCRIPTED_BACKEND_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Script file (JSON, or YAML when it ends in .yaml/.yml): {model_names, models, queue, default}.
    #[arg(long, env = "SCRIPTED_BACKEND_SCRIPT")]
    script: Option<PathBuf>,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Requests kept in memory for inspection through the admin API (0 = none).
    #[arg(long, default_value_t = 10_000)]
    record_limit: usize,
    /// Serve the /_scripted/ control API: POST /_scripted/queue, PUT /_scripted/models/NAME,
    /// PUT /_scripted/default (a JSON script each), GET|DELETE /_scripted/requests,
    /// GET /_scripted/cancellations.
    #[arg(long)]
    admin: bool,
    /// Seconds a connection may take to send a request head (idle keep-alive included).
    #[arg(long, default_value_t = 30)]
    header_read_timeout_secs: u64,
}

/// Exit code for a bad script file (after clap's 2 for bad arguments).
const EXIT_CONFIG: u8 = 64;
const EXIT_BIND: u8 = 69;

fn main() -> ExitCode {
    let args = Args::parse();
    // Parse everything before binding anything.
    let script = match args.script.as_deref().map(ScriptFile::load).transpose() {
        Ok(script) => script,
        Err(error) => {
            eprintln!("antwort-scripted-backend: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    runtime.block_on(async move {
        let options = Options {
            max_body_bytes: args.max_body_bytes,
            record_limit: if args.admin { args.record_limit } else { 0 },
            admin: args.admin,
            header_read_timeout: std::time::Duration::from_secs(args.header_read_timeout_secs),
        };
        let backend = match ScriptedBackend::start_with(args.listen, options).await {
            Ok(backend) => backend,
            Err(error) => {
                eprintln!("antwort-scripted-backend: {error}");
                return ExitCode::from(EXIT_BIND);
            }
        };
        if let Some(script) = script {
            backend.load(script);
        }
        println!("listening on {}", backend.base_url());
        let _ = std::io::stdout().flush();
        backend.serve_until(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// SIGINT for a terminal, SIGTERM for process managers and test harnesses.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
