//! [`Manager`]: what every part of a running manager shares (the runtime, settings, agent
//! client, metrics, leadership), plus the little in-memory bookkeeping that is only ever an
//! optimisation: which claims wait (so the leader creates for them), which sandboxes are being
//! warmed up, and per-session-key locks against duplicate claims from one replica.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::agent::AgentClient;
use crate::metrics::Metrics;
use crate::runtime::{Pulse, Runtime};
use crate::state::Deadlines;

/// The `claims:` config section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClaimSettings {
    /// How long a claim waits for a starting sandbox before 503, in milliseconds.
    pub wait_ms: u64,
    /// A claim's lifetime when the request names none, in seconds.
    pub default_ttl_secs: u64,
    /// The longest lifetime a claim or renew may ask for, in seconds (longer is capped).
    pub max_ttl_secs: u64,
    /// `Retry-After` of 429 and 503 answers, in seconds.
    pub retry_after_secs: u64,
    /// Longest `session_key`, in bytes.
    pub max_session_key_bytes: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
}

impl Default for ClaimSettings {
    fn default() -> Self {
        ClaimSettings {
            wait_ms: 10_000,
            default_ttl_secs: 600,
            max_ttl_secs: 3600,
            retry_after_secs: 2,
            max_session_key_bytes: 256,
            max_body_bytes: 16 * 1024,
        }
    }
}

/// The `reconcile:` config section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcileSettings {
    /// A pass runs at least this often (and at once on every change), in milliseconds.
    pub interval_ms: u64,
    /// A new sandbox must pass its warm-up within this of its creation, in milliseconds.
    pub warm_up_deadline_ms: u64,
    /// A released sandbox must be reset within this, in milliseconds.
    pub reset_deadline_ms: u64,
    /// Each call to an agent (warm-up, reset), in milliseconds.
    pub agent_timeout_ms: u64,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        ReconcileSettings {
            interval_ms: 2_000,
            warm_up_deadline_ms: 180_000,
            reset_deadline_ms: 60_000,
            agent_timeout_ms: 30_000,
        }
    }
}

impl ReconcileSettings {
    pub fn deadlines(&self) -> Deadlines {
        Deadlines {
            warm_up: Duration::from_millis(self.warm_up_deadline_ms),
            reset: Duration::from_millis(self.reset_deadline_ms),
        }
    }
}

/// Shared by the claim API, the reconcile loop and the admin routes.
pub struct Manager<R: Runtime> {
    pub runtime: R,
    pub claims: ClaimSettings,
    pub reconcile: ReconcileSettings,
    pub agents: AgentClient,
    pub metrics: Metrics,
    /// Beaten on every change (runtime events, claims, releases).
    pub pulse: Pulse,
    /// Whether this replica reconciles.
    pub leader: watch::Receiver<bool>,
    /// Claims waiting for a sandbox, by pool: the leader creates sandboxes for them too.
    waiting: Mutex<HashMap<String, u32>>,
    /// Sandboxes whose warm-up or reset is running in this process.
    pub(crate) warming: Mutex<HashSet<String>>,
    /// One claim at a time per (pool, session key) in this replica.
    session_locks: SessionLocks,
}

impl<R: Runtime> Manager<R> {
    pub fn new(
        runtime: R,
        claims: ClaimSettings,
        reconcile: ReconcileSettings,
        agents: AgentClient,
        leader: watch::Receiver<bool>,
    ) -> Manager<R> {
        Manager {
            runtime,
            claims,
            reconcile,
            agents,
            metrics: Metrics::new(),
            pulse: Pulse::new(),
            leader,
            waiting: Mutex::new(HashMap::new()),
            warming: Mutex::new(HashSet::new()),
            session_locks: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Claims waiting for `pool` right now.
    pub fn waiting(&self, pool: &str) -> u32 {
        self.waiting.lock().expect("never poisoned").get(pool).copied().unwrap_or(0)
    }

    /// Counts a waiting claim until the guard drops.
    pub(crate) fn wait_for(&self, pool: &str) -> WaitingGuard<'_> {
        *self.waiting.lock().expect("never poisoned").entry(pool.to_owned()).or_insert(0) += 1;
        self.pulse.beat();
        WaitingGuard { waiting: &self.waiting, pool: pool.to_owned() }
    }

    /// The lock of one (pool, session key); dropped from the table when its last user is done.
    pub(crate) async fn lock_session(&self, pool: &str, key: &str) -> SessionGuard<'_> {
        let lock = self
            .session_locks
            .lock()
            .expect("never poisoned")
            .entry((pool.to_owned(), key.to_owned()))
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        SessionGuard {
            locks: &self.session_locks,
            key: (pool.to_owned(), key.to_owned()),
            _guard: guard,
            lock,
        }
    }
}

/// One async lock per (pool, session key) in use.
type SessionLocks = Mutex<HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>>;

pub(crate) struct WaitingGuard<'a> {
    waiting: &'a Mutex<HashMap<String, u32>>,
    pool: String,
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        let mut waiting = self.waiting.lock().expect("never poisoned");
        if let Some(count) = waiting.get_mut(&self.pool) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                waiting.remove(&self.pool);
            }
        }
    }
}

pub(crate) struct SessionGuard<'a> {
    locks: &'a SessionLocks,
    key: (String, String),
    _guard: tokio::sync::OwnedMutexGuard<()>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        let mut locks = self.locks.lock().expect("never poisoned");
        // The table, this guard and our clone: nobody else waits for this key.
        if Arc::strong_count(&self.lock) <= 3 {
            locks.remove(&self.key);
        }
    }
}
