//! `antwort up` (the `antwort` CLI, `cli/`) as a real child process: the whole one-machine
//! stack started by one command, in a temporary data folder. Its stdout "ready" block gives
//! the gateway's address and the components' pids; [`leftovers`] finds any process of the
//! stack still running afterwards.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::workspace;

/// How long `antwort up` may take to report ready (binaries are built before it starts).
const STARTUP: Duration = Duration::from_secs(120);
/// The last line of the ready block.
const READY_END: &str = "Ctrl-C stops everything.";

/// What the ready block says.
#[derive(Debug, Clone)]
pub struct Ready {
    /// `http://ADDR/v1`.
    pub base_url: String,
    /// `127.0.0.1:PORT` of the gateway.
    pub addr: String,
    pub gateway_pid: u32,
    /// `127.0.0.1:PORT` of the pool manager's claim API (mTLS).
    pub pool_manager_api: String,
    /// `http://127.0.0.1:PORT` of the pool manager's admin listener (`/metrics`).
    pub pool_manager_admin: String,
    pub pool_manager_pid: u32,
    /// The scripted backend's pid when `antwort up` started one.
    pub scripted_backend_pid: Option<u32>,
    /// The whole block.
    pub text: String,
}

/// A running `antwort up`. Dropping it SIGKILLs `antwort` (its components then stop on their
/// own: they get SIGTERM when their parent dies).
pub struct AntwortUp {
    child: Child,
    lines: Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
    pub data_dir: PathBuf,
}

/// The binaries `antwort up` runs, built (once per test process) into one folder, which is
/// returned: `antwort` finds the others next to itself.
pub fn binaries() -> (PathBuf, PathBuf) {
    let antwort = workspace::binary("antwort", "antwort");
    let dir = antwort.parent().expect("a binary has a folder").to_path_buf();
    for name in [
        "antwort-gateway",
        "antwort-pool-manager",
        "antwort-sandbox-agent",
        "antwort-scripted-backend",
    ] {
        let path = workspace::binary(name, name);
        assert_eq!(path.parent(), Some(dir.as_path()), "{name} is not beside antwort");
    }
    (antwort, dir)
}

impl AntwortUp {
    /// Starts `antwort up ARGS` with data folder `data_dir` and the extra environment `env`
    /// (`ANTWORT_*` variables of the caller are removed first, so only `env` configures it).
    pub fn spawn(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> AntwortUp {
        let (antwort, _) = binaries();
        let mut command = Command::new(antwort);
        command.arg("up").args(args).arg("--data-dir").arg(data_dir);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ANTWORT_") {
                command.env_remove(name);
            }
        }
        command.envs(env.iter().copied()).env("NO_COLOR", "1");
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("start antwort up");
        let (tx, lines) = channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stdout: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("piped stdout"));
        let stderr: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("piped stderr"));
        for (stream, is_stdout) in [(stdout, true), (stderr, false)] {
            let (tx, log) = (tx.clone(), Arc::clone(&log));
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log.lock().unwrap_or_else(|p| p.into_inner()).push(line.clone());
                    if is_stdout {
                        let _ = tx.send(line);
                    }
                }
            });
        }
        AntwortUp { child, lines, log, data_dir: data_dir.to_path_buf() }
    }

    /// Waits for the ready block on stdout; panics with the log if `antwort` exits first or
    /// takes too long.
    pub fn wait_ready(&mut self) -> Ready {
        let deadline = Instant::now() + STARTUP;
        let mut block: Vec<String> = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    let done = line == READY_END;
                    if line.starts_with("antwort is ready: ") || !block.is_empty() {
                        block.push(line);
                    }
                    if done && !block.is_empty() {
                        return parse_ready(&block.join("\n"));
                    }
                }
                Err(_) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!("antwort up exited ({status}) before ready:\n{}", self.log());
                    }
                    assert!(
                        Instant::now() < deadline,
                        "antwort up not ready within {STARTUP:?}:\n{}",
                        self.log()
                    );
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to `antwort`.
    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("a pid fits i32"));
        kill(pid, signal).expect("signal antwort");
    }

    /// Waits for `antwort` to exit, at most `within`; panics with the log otherwise.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for antwort") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "antwort up still running {within:?} later:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything `antwort up` printed so far (its components' lines included).
    pub fn log(&self) -> String {
        // The reader threads may still be draining the pipes just after an exit.
        std::thread::sleep(Duration::from_millis(50));
        self.log.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
    }
}

impl Drop for AntwortUp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_ready(text: &str) -> Ready {
    let base_url = text
        .lines()
        .next()
        .and_then(|line| line.split("OPENAI_BASE_URL=").nth(1))
        .expect("the first line names OPENAI_BASE_URL")
        .trim()
        .to_owned();
    let addr = base_url
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix("/v1"))
        .unwrap_or_else(|| panic!("base URL {base_url}"))
        .to_owned();
    let pid_on = |prefix: &str| -> Option<u32> {
        let line = text.lines().find(|line| line.trim_start().starts_with(prefix))?;
        line.split("pid ").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    // `pool manager   claim API https://ADDR (mTLS), admin http://ADDR (pid N); ...`
    let word_after = |marker: &str| -> String {
        let at = text.find(marker).unwrap_or_else(|| panic!("no `{marker}` in {text}"));
        text[at + marker.len()..].split([' ', ',']).next().expect("a word").to_owned()
    };
    Ready {
        gateway_pid: pid_on("gateway").expect("gateway pid"),
        pool_manager_api: word_after("claim API https://"),
        pool_manager_admin: word_after("admin "),
        pool_manager_pid: pid_on("pool manager").expect("pool manager pid"),
        scripted_backend_pid: pid_on("model backend"),
        base_url,
        addr,
        text: text.to_owned(),
    }
}

/// Warm sandboxes of `pool`, from the pool manager's `/metrics` at `admin` (`None` when it
/// does not answer).
pub async fn ready_sandboxes(client: &reqwest::Client, admin: &str, pool: &str) -> Option<u32> {
    let metrics = client.get(format!("{admin}/metrics")).send().await.ok()?.text().await.ok()?;
    let pool = format!("pool=\"{pool}\"");
    metrics
        .lines()
        .filter(|line| line.starts_with("antwort_pool_sandboxes{"))
        .find(|line| line.contains(&pool) && line.contains("state=\"ready\""))
        .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value as u32)
}

/// Live processes (zombies excluded) that belong to a stack whose data folder is `dir`: their
/// command line or working folder lies in `dir`, or their pid is in `pids`. Each as
/// `pid: command line`.
pub fn leftovers(dir: &Path, pids: &[u32]) -> Vec<String> {
    let dir_text = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let proc_dir = entry.path();
        let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) else { continue };
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
        if state == Some("Z") {
            continue;
        }
        let cmdline = std::fs::read(proc_dir.join("cmdline"))
            .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
            .unwrap_or_default();
        let cwd = std::fs::read_link(proc_dir.join("cwd")).unwrap_or_default();
        if pids.contains(&pid) || cmdline.contains(&dir_text) || cwd.starts_with(dir) {
            found.push(format!("{pid}: {}", cmdline.chars().take(200).collect::<String>()));
        }
    }
    found
}

/// Waits until [`leftovers`] is empty, at most `within`; the leftovers otherwise.
pub fn wait_no_leftovers(dir: &Path, pids: &[u32], within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let left = leftovers(dir, pids);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
