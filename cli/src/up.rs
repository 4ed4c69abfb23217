//! `antwort up`, in phases:
//! 1. check the settings and find the binaries (nothing started yet: exit 64 on a problem);
//! 2. lock and prepare the data folder, mint the SVIDs;
//! 3. start the backend (unless `ANTWORT_BACKEND_URL`), the pool manager (until its pool is
//!    warm), the gateway (until `/readyz`), each waited for before the next;
//! 4. print "ready" and where to point a client;
//! 5. supervise: a signal, or any component's death, ends the run (renewing SVIDs meanwhile);
//! 6. stop the components in reverse order (gateway first, so it drains before the sandboxes
//!    go), each with its process group; a second signal kills what is left at once.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

use crate::args::UpArgs;
use crate::binaries::{self, BinDir};
use crate::configs::{self, GatewaySettings, POOL, PoolManagerSettings};
use crate::data_dir::DataDir;
use crate::error::{Error, Result};
use crate::identity::{self, Identities};
use crate::probe;
use crate::process::{self, Component, Deadline, Exit};

/// How often a readiness check is repeated.
const POLL: Duration = Duration::from_millis(50);

pub async fn run(args: UpArgs) -> Result<()> {
    // 1. Settings and binaries.
    let problems = args.problems();
    if !problems.is_empty() {
        return Err(Error::Usage(problems.join("; ")));
    }
    let bin_dir = BinDir::resolve(args.bin_dir.as_deref())?;
    let binaries = Binaries {
        gateway: bin_dir.find(binaries::GATEWAY)?,
        pool_manager: bin_dir.find(binaries::POOL_MANAGER)?,
        sandbox_agent: bin_dir.find(binaries::SANDBOX_AGENT)?,
        scripted_backend: match args.backend_url() {
            Some(_) => None,
            None => Some(bin_dir.find(binaries::SCRIPTED_BACKEND)?),
        },
    };
    let mut signals = Signals::new()?;

    // 2. Data folder and identities.
    let data = DataDir::open(&args.data_dir)?;
    let pool_dir = data.fresh_pool_dir()?;
    let ids = identity::mint(&data.path.join("identity"), &args.trust_domain)?;

    // 3. Components, each ready before the next.
    let (exits_tx, mut exits) = mpsc::unbounded_channel();
    let mut stack = Stack { components: Vec::new() };
    let grace = Duration::from_secs(args.stop_timeout_secs);
    let start = Start { args: &args, binaries: &binaries, data: &data.path, pool_dir, ids: &ids };
    let started = tokio::select! {
        started = start.run(&mut stack, exits_tx) => started.map(Some),
        name = signals.recv() => {
            tracing::info!("{name} during start-up: stopping");
            Ok(None)
        }
    };
    let ready = match started {
        Ok(Some(ready)) => ready,
        Ok(None) => {
            stack.stop_all(grace, &mut signals).await;
            return Ok(());
        }
        Err(error) => {
            stack.stop_all(grace, &mut signals).await;
            return Err(error);
        }
    };

    // 4. Ready.
    ready.announce(&args, &ids);

    // 5. Supervise.
    let mut renew = tokio::time::interval_at(
        tokio::time::Instant::now() + identity::RENEW_EVERY,
        identity::RENEW_EVERY,
    );
    let died: Option<Exit> = loop {
        tokio::select! {
            name = signals.recv() => {
                tracing::info!("{name}: stopping antwort");
                break None;
            }
            Some(exit) = exits.recv() => break Some(exit),
            _ = renew.tick() => {
                if let Err(error) = ids.renew() {
                    tracing::warn!(%error, "could not renew the SVIDs");
                }
            }
        }
    };

    // 6. Stop, in reverse order.
    if let Some(exit) = &died {
        tracing::error!(
            "the {} (pid {}) exited unexpectedly ({}); stopping the rest",
            exit.component,
            exit.pid,
            crate::error::describe(&exit.status)
        );
    }
    stack.stop_all(grace, &mut signals).await;
    match died {
        None => {
            tracing::info!("antwort stopped; nothing left running");
            Ok(())
        }
        Some(exit) => {
            Err(Error::Exited { component: exit.component, pid: exit.pid, status: exit.status })
        }
    }
}

struct Binaries {
    gateway: PathBuf,
    pool_manager: PathBuf,
    sandbox_agent: PathBuf,
    /// `None` when the backend is external.
    scripted_backend: Option<PathBuf>,
}

/// The components started so far, in start order.
struct Stack {
    components: Vec<Component>,
}

impl Stack {
    /// Stops the components, the last started first. Another signal meanwhile cuts the grace
    /// short: whatever still runs is killed at once.
    async fn stop_all(&mut self, grace: Duration, signals: &mut Signals) {
        let mut grace = grace;
        while let Some(component) = self.components.last_mut() {
            tracing::info!(component = component.name, pid = component.pid, "stopping");
            tokio::select! {
                () = component.stop(grace) => {}
                name = signals.recv() => {
                    tracing::warn!("{name} again: killing what is left");
                    grace = Duration::ZERO;
                    continue;
                }
            }
            self.components.pop();
        }
    }

    /// The component added last (just pushed by the caller).
    fn last(&mut self) -> &mut Component {
        self.components.last_mut().expect("a component was just pushed")
    }
}

/// SIGINT (Ctrl-C), SIGTERM (a supervisor), SIGHUP (the terminal went away): all mean stop.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        let listen = |kind| {
            signal(kind).map_err(|source| Error::File {
                what: "cannot listen for signals",
                path: PathBuf::from("(signal handler)"),
                source,
            })
        };
        Ok(Signals {
            interrupt: listen(SignalKind::interrupt())?,
            terminate: listen(SignalKind::terminate())?,
            hangup: listen(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }
}

struct Start<'a> {
    args: &'a UpArgs,
    binaries: &'a Binaries,
    data: &'a Path,
    pool_dir: PathBuf,
    ids: &'a Identities,
}

/// What [`Start::run`] found out, for the announcement.
struct Ready {
    gateway: SocketAddr,
    gateway_pid: u32,
    backend_url: String,
    /// The scripted backend's pid when it stands in for a model.
    scripted_pid: Option<u32>,
    pool_manager_api: SocketAddr,
    pool_manager_admin: SocketAddr,
    pool_manager_pid: u32,
    store_url: String,
    auth_off: bool,
}

impl Start<'_> {
    async fn run(self, stack: &mut Stack, exits: mpsc::UnboundedSender<Exit>) -> Result<Ready> {
        let deadline = Deadline::after(self.args.ready_timeout_secs);

        // The model backend.
        let (backend_url, scripted_pid) = match (
            self.args.backend_url(),
            &self.binaries.scripted_backend,
        ) {
            (Some(url), _) => {
                tracing::info!(url, "model backend from ANTWORT_BACKEND_URL");
                (url.to_owned(), None)
            }
            (None, Some(program)) => {
                tracing::warn!(
                    "no ANTWORT_BACKEND_URL: starting antwort's SCRIPTED backend, a deterministic \
                     stand-in (it echoes and follows SCRIPT: directives), not a language model"
                );
                let mut command = self.command(program);
                command.args(["--listen", "127.0.0.1:0"]);
                stack.components.push(process::spawn("scripted backend", command, exits.clone())?);
                let backend = stack.last();
                let needle = "listening on ";
                let line = backend.wait_for(needle, deadline).await?;
                let url = word_after(&line, needle);
                backend.stop_reading();
                (url, Some(backend.pid))
            }
            (None, None) => unreachable!("the scripted backend is found when no URL is set"),
        };

        // The pool manager, until its pool is warm.
        let settings = PoolManagerSettings {
            work_dir: &self.pool_dir,
            agent_binary: &self.binaries.sandbox_agent,
            min_ready: self.args.pool_min_ready,
            max_pods: self.args.pool_max_pods,
            sandbox_uid_base: self.args.sandbox_uid_base,
        };
        let config = configs::write(
            self.data,
            "pool-manager.yaml",
            &configs::pool_manager(self.ids, &settings),
        )?;
        let mut command = self.command(&self.binaries.pool_manager);
        command.arg("--config").arg(&config);
        stack.components.push(process::spawn("pool manager", command, exits.clone())?);
        let manager = stack.last();
        let (mut api, mut admin) = (None, None);
        while api.is_none() || admin.is_none() {
            let line = manager.wait_for(" listening", deadline).await?;
            if line.contains("claim API (mTLS) listening") {
                api = field(&line, "addr");
            } else if line.contains("admin (HTTP) listening") {
                admin = field(&line, "addr");
            }
        }
        manager.stop_reading();
        let (api, admin) = (api.expect("loop ends with both"), admin.expect("loop ends with both"));
        let min_ready = self.args.pool_min_ready;
        poll(manager, deadline, || async move {
            probe::ok(admin, "/readyz").await?;
            let (_, metrics) = probe::get(admin, "/metrics").await?;
            let ready = probe::ready_sandboxes(&metrics, POOL).unwrap_or(0);
            if ready >= min_ready {
                Ok(())
            } else {
                Err(format!("pool {POOL}: {ready} of {min_ready} sandboxes warm"))
            }
        })
        .await?;
        tracing::info!(pool = POOL, warm = min_ready, "pool manager ready");
        let pool_manager_pid = manager.pid;

        // The gateway, until /readyz.
        let auth_off = !std::env::vars_os()
            .any(|(name, _)| name.to_string_lossy().starts_with("ANTWORT_AUTH__"));
        let store_url = match std::env::var("ANTWORT_STORE__URL") {
            Ok(url) if !url.is_empty() => url,
            _ => format!("sqlite://{}", self.data.join("antwort.db").display()),
        };
        let pool_manager_url = format!("https://{api}");
        let settings = GatewaySettings {
            listen: self.args.listen,
            backend_url: &backend_url,
            store_url: &store_url,
            pool_manager_url: &pool_manager_url,
            auth_off,
        };
        let config =
            configs::write(self.data, "gateway.yaml", &configs::gateway(self.ids, &settings))?;
        let mut command = Command::new(&self.binaries.gateway);
        // The gateway keeps the caller's ANTWORT_* settings (auth, store, limits, telemetry):
        // they override its config file, the flags below override them.
        command
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg(self.args.listen.to_string())
            .arg("--backend-url")
            .arg(&backend_url)
            .env("RUST_LOG", "info")
            .current_dir(self.data);
        stack.components.push(process::spawn("gateway", command, exits)?);
        let gateway = stack.last();
        let needle = "antwort-gateway listening on ";
        let line = gateway.wait_for(needle, deadline).await?;
        gateway.stop_reading();
        let addr: SocketAddr = word_after(&line, needle).parse().map_err(|_| Error::NotReady {
            component: "gateway",
            secs: deadline.secs,
            detail: format!("no address in {line:?}"),
        })?;
        poll(gateway, deadline, || probe::ok(addr, "/readyz")).await?;

        Ok(Ready {
            gateway: addr,
            gateway_pid: gateway.pid,
            backend_url,
            scripted_pid,
            pool_manager_api: api,
            pool_manager_admin: admin,
            pool_manager_pid,
            store_url,
            auth_off,
        })
    }

    /// `program` with none of the caller's `ANTWORT_*` settings (this component is configured
    /// by its file alone), info logs (start-up reads its "listening" lines), in the data folder.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        for (name, _) in std::env::vars_os() {
            let text = name.to_string_lossy();
            if text.starts_with("ANTWORT_") || text.starts_with("SCRIPTED_BACKEND_") {
                command.env_remove::<OsString>(name);
            }
        }
        command.env("RUST_LOG", "info").current_dir(self.data);
        command
    }
}

/// Repeats `check` until it passes; an error when the component dies or the deadline passes
/// (with the last reason it gave).
async fn poll<F, Fut>(component: &Component, deadline: Deadline, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    loop {
        if let Some(status) = component.exit_status() {
            return Err(Error::Exited { component: component.name, pid: component.pid, status });
        }
        let reason = match check().await {
            Ok(()) => return Ok(()),
            Err(reason) => reason,
        };
        if deadline.passed() {
            return Err(Error::NotReady {
                component: component.name,
                secs: deadline.secs,
                detail: reason,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

impl Ready {
    /// The ready block on stdout: its first line is what harnesses wait for.
    fn announce(&self, args: &UpArgs, ids: &Identities) {
        let base_url = format!("http://{}/v1", self.gateway);
        let backend = match self.scripted_pid {
            Some(pid) => format!(
                "SCRIPTED stand-in at {} (antwort-scripted-backend, pid {pid}): deterministic \
                 echo, not a language model; set ANTWORT_BACKEND_URL for a real one",
                self.backend_url
            ),
            None => format!("{} (from ANTWORT_BACKEND_URL)", self.backend_url),
        };
        let auth = if self.auth_off {
            "off (no ANTWORT_AUTH__* set; any client is served)"
        } else {
            "from ANTWORT_AUTH__*"
        };
        println!("antwort is ready: OPENAI_BASE_URL={base_url}");
        println!("  gateway        http://{} (pid {})", self.gateway, self.gateway_pid);
        println!("  authentication {auth}");
        println!("  model backend  {backend}");
        println!(
            "  pool manager   claim API https://{} (mTLS), admin http://{} (pid {}); pool {POOL}: \
             {} warm, at most {}",
            self.pool_manager_api,
            self.pool_manager_admin,
            self.pool_manager_pid,
            args.pool_min_ready,
            args.pool_max_pods
        );
        println!("  store          {}", self.store_url);
        println!(
            "  identity       development CA {} (trust domain {})",
            ids.ca_dir.display(),
            ids.trust_domain
        );
        println!(
            "Try: curl -s {base_url}/responses -H 'content-type: application/json' \
             -d '{{\"model\": \"any\", \"input\": \"Hello!\"}}'"
        );
        println!("Ctrl-C stops everything.");
        let _ = std::io::Write::flush(&mut std::io::stdout());
    }
}

/// The value of `key=` in a tracing text line (`addr=127.0.0.1:1234`).
fn field(line: &str, key: &str) -> Option<SocketAddr> {
    let value = line.split(&format!("{key}=")).nth(1)?.split_whitespace().next()?;
    value.trim_matches('"').parse().ok()
}

/// The word after `needle` in `line`.
fn word_after(line: &str, needle: &str) -> String {
    let rest = line.split_once(needle).map(|(_, rest)| rest).unwrap_or_default();
    rest.split_whitespace().next().unwrap_or_default().to_owned()
}
