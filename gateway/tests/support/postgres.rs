//! A real PostgreSQL for tests: one throwaway cluster per test binary (initdb + pg_ctl on a free
//! port in a temp dir, `fsync=off`), one fresh database per test. initdb refuses to run as root,
//! so as root the server runs as the `postgres` user (`runuser`). A watchdog shell stops the
//! cluster and removes its directory when the test process exits, however it exits.
//!
//! The binaries come from Debian's `postgresql-15` (scripts/apt-packages.txt), or `PG_BIN`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Cluster {
    pub port: u16,
    pub dir: PathBuf,
    pub bin: PathBuf,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

fn as_root() -> bool {
    nix_uid() == 0
}

fn nix_uid() -> u32 {
    // `id -u` keeps this file free of a libc dependency.
    let out = Command::new("id").arg("-u").output().expect("id runs");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(1)
}

/// Runs a PostgreSQL binary as the user that owns the cluster.
fn pg(bin: &Path, tool: &str) -> Command {
    if as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        command
    } else {
        Command::new(bin.join(tool))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The cluster of this test binary, started on first use.
#[expect(
    clippy::zombie_processes,
    reason = "the watchdog must outlive this process to stop the cluster after it"
)]
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let bin = std::env::var_os("PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
        assert!(
            bin.join("initdb").exists(),
            "PostgreSQL is not installed at {} (apt-get install postgresql-15, or set PG_BIN)",
            bin.display()
        );
        // Not a tempfile::TempDir: the watchdog removes it after the server stopped.
        let dir =
            std::env::temp_dir().join(format!("antwort-pg-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        if as_root() {
            let status =
                Command::new("chown").args(["-R", "postgres"]).arg(&dir).status().expect("chown");
            assert!(status.success(), "chown of the cluster dir failed");
        }
        let data = dir.join("data");
        let out = pg(&bin, "initdb")
            .args(["-D"])
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"])
            .output()
            .expect("initdb runs");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let cluster = Cluster { port, dir: dir.clone(), bin: bin.clone() };
        cluster.start();
        // The watchdog: when this process is gone, stop the server and remove its files.
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop}; rm -rf '{dir}'",
            pid = std::process::id(),
            stop = cluster.ctl_command("stop -m immediate"),
            dir = dir.display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("watchdog starts");
        cluster
    })
}

impl Cluster {
    fn ctl_command(&self, action: &str) -> String {
        let data = self.dir.join("data");
        let ctl = self.bin.join("pg_ctl");
        let base = format!("{} -D '{}' {action}", ctl.display(), data.display());
        if as_root() { format!("runuser -u postgres -- {base}") } else { base }
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            self.port,
            self.dir.display()
        );
        let out = pg(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("pg.log"))
            .args(["-w", "start", "-o", &options])
            .output()
            .expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server at once (`immediate`: like a crash of the database).
    pub fn stop(&self) {
        self.stop_with("immediate");
    }

    /// Stops the server with a `pg_ctl stop -m` mode: `fast` (disconnects every client, an
    /// orderly shutdown), `immediate` (a crash) or `smart`.
    pub fn stop_with(&self, mode: &str) {
        let out = pg(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "stop", "-m", mode])
            .output()
            .expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

/// A fresh, empty database on this binary's cluster; its URL.
pub async fn fresh_database() -> String {
    let cluster = cluster();
    let name = format!("test_{}", NEXT_DB.fetch_add(1, Ordering::SeqCst));
    let admin = sqlx::PgPool::connect(&cluster.url("postgres")).await.expect("connect to postgres");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("create database");
    admin.close().await;
    cluster.url(&name)
}
