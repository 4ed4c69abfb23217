//! One workspace binary as a child process of a test (e.g. a scripted backend started beside
//! `antwort up`): its output lines kept and searchable, killed on drop. The whole stack runs
//! through [`crate::antwort_up`].

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a process may take to come up (a cold debug build of a binary is done before).
const STARTUP: Duration = Duration::from_secs(60);

/// A child process whose stdout and stderr lines are kept (for failure messages) and offered
/// to [`Service::wait_for`]. Killed on drop.
pub struct Service {
    name: &'static str,
    child: Child,
    lines: Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Service {
    pub fn spawn(name: &'static str, command: &mut Command) -> Service {
        command.stdout(Stdio::piped()).stderr(Stdio::piped()).env("NO_COLOR", "1");
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let (tx, lines) = channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stdout: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("piped stdout"));
        let stderr: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("piped stderr"));
        for stream in [stdout, stderr] {
            let (tx, log) = (tx.clone(), Arc::clone(&log));
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log.lock().unwrap_or_else(|p| p.into_inner()).push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        Service { name, child, lines, log }
    }

    /// Waits for the next line containing `needle` and returns it; panics with the log when
    /// the process exits or stays silent too long.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + STARTUP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!(
                            "{} exited ({status}) before `{needle}`:\n{}",
                            self.name,
                            self.log()
                        );
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{} did not log `{needle}` within {STARTUP:?}:\n{}",
                        self.name,
                        self.log()
                    );
                }
            }
        }
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
