//! The crate's one error type. Every variant names what failed and which component; `main`
//! prints it once and exits with [`Error::exit_code`].

use std::path::PathBuf;
use std::process::ExitStatus;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag, an environment variable or a missing binary: nothing was started.
    #[error("{0}")]
    Usage(String),
    #[error("{what} {}: {source}", path.display())]
    File { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("development CA: {0}")]
    Identity(#[from] antwort_common::identity::Error),
    #[error("cannot start the {component} ({}): {source}", program.display())]
    Spawn { component: &'static str, program: PathBuf, source: std::io::Error },
    /// A component ended on its own (crashed, killed, or refused its config).
    #[error("the {component} (pid {pid}) exited unexpectedly: {}", describe(status))]
    Exited { component: &'static str, pid: u32, status: Option<ExitStatus> },
    #[error("the {component} was not ready within {secs} s: {detail}")]
    NotReady { component: &'static str, secs: u64, detail: String },
}

impl Error {
    /// 64 (EX_USAGE) when nothing could be started, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 64,
            _ => 1,
        }
    }
}

/// `exit status 3`, `killed by signal 9 (SIGKILL)`, or that it could not be told.
pub fn describe(status: &Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match status {
        None => "its exit status is unknown".to_owned(),
        Some(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(signal)) => {
                let name = nix::sys::signal::Signal::try_from(signal)
                    .map(|s| s.as_str())
                    .unwrap_or("unknown signal");
                format!("killed by signal {signal} ({name})")
            }
            (None, None) => status.to_string(),
        },
    }
}
