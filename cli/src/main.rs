//! `antwort`: the operator CLI. `antwort up` runs the whole platform on this machine as local
//! processes — the development CA minting every component's SVID, `antwort-pool-manager` on its
//! local runtime with a warm `python` pool, `antwort-gateway` with the embedded store and
//! `code_interpreter` wired to the pool manager over mTLS, and a model backend (the one at
//! `ANTWORT_BACKEND_URL`, or else `antwort-scripted-backend`, announced as a stand-in) — waits
//! until each is ready, prints where to point a client, and stops everything on Ctrl-C/SIGTERM.
//!
//! # Layout
//! Data flows down the list on `antwort up`:
//! - [`args`]: the command line (clap), every flag with its `ANTWORT_*` variable.
//! - [`binaries`]: finds the other binaries next to this executable (or in `--bin-dir`).
//! - [`data_dir`]: the data folder: created, locked against a second `antwort up`, made clean.
//! - [`identity`]: the development CA and the SVIDs of the gateway and the pool manager.
//! - [`configs`]: the pool manager's and the gateway's YAML, written into the data folder.
//! - [`process`]: a component as a child process in its own process group that dies with us
//!   (`PR_SET_PDEATHSIG`), its log lines forwarded and searchable, stopped group and all. The
//!   only `unsafe` of the crate (the `pre_exec` hook) lives here.
//! - [`probe`]: plain-HTTP readiness checks (`/readyz`, the pool's warm count in `/metrics`).
//! - [`up`]: the sequence: backend -> pool manager (pool warm) -> gateway -> "ready", then
//!   supervise until a signal or a component's death, then stop in reverse order.
//! - [`error`]: the crate's one error type and its exit codes.
//!
//! Architecture invariant: the CLI never links another binary's crate; it starts them as
//! processes and talks to them only through their config files, flags and HTTP endpoints.

#![deny(unsafe_code)]

mod args;
mod binaries;
mod configs;
mod data_dir;
mod error;
mod identity;
mod probe;
mod process;
mod up;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // One thread: a child's PR_SET_PDEATHSIG fires when the *thread* that spawned it exits, so
    // every child is spawned from this thread, which lives as long as the process.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("antwort: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Up(up_args) => runtime.block_on(up::run(up_args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("antwort: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
