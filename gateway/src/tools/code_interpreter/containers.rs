//! The container registry: `cntr_...` ids bound to an owner, a claim and an agent session.
//! Looked up by id and owner only: another owner's container is simply not there.
//!
//! Held in memory: a gateway restart forgets its containers (their claims then expire at the
//! pool manager by their TTL). Persisting them with the store comes with the containers API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use antwort_common::pool_api::Claim;

use super::sandbox::AgentClient;
use crate::tools::Owner;

/// One live container.
pub struct Container {
    pub id: String,
    pub owner: Owner,
    pub agent: AgentClient,
    /// The agent's session id: one interpreter, one workspace.
    pub session_id: String,
    /// Executions in one container run one at a time (one interpreter); parallel calls queue.
    pub exec: tokio::sync::Mutex<()>,
    state: Mutex<State>,
}

struct State {
    claim: Claim,
    last_used: Instant,
    /// Workspace path -> `cfile_...` id, for citations (and the containers files API).
    files: HashMap<String, String>,
}

impl Container {
    pub fn new(
        id: String,
        owner: Owner,
        claim: Claim,
        agent: AgentClient,
        session_id: String,
    ) -> Self {
        Container {
            id,
            owner,
            agent,
            session_id,
            exec: tokio::sync::Mutex::new(()),
            state: Mutex::new(State { claim, last_used: Instant::now(), files: HashMap::new() }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the map half-updated; go on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn touch(&self) {
        self.state().last_used = Instant::now();
    }

    pub fn idle_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.state().last_used)
    }

    pub fn claim(&self) -> Claim {
        self.state().claim.clone()
    }

    pub fn set_claim(&self, claim: Claim) {
        self.state().claim = claim;
    }

    /// The file id of a workspace path, made on first sight.
    pub fn file_id(&self, path: &str) -> String {
        self.state()
            .files
            .entry(path.to_string())
            .or_insert_with(|| crate::ids::new_id("cfile"))
            .clone()
    }

    pub fn forget_file(&self, path: &str) {
        self.state().files.remove(path);
    }
}

/// All live containers, by id.
#[derive(Default)]
pub struct Containers {
    by_id: Mutex<HashMap<String, Arc<Container>>>,
}

impl Containers {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Container>>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, container: Arc<Container>) {
        self.map().insert(container.id.clone(), container);
    }

    /// The owner's container `id`; `None` for unknown ids and other owners' containers alike.
    pub fn get(&self, owner: &Owner, id: &str) -> Option<Arc<Container>> {
        self.map().get(id).filter(|c| &c.owner == owner).cloned()
    }

    pub fn remove(&self, owner: &Owner, id: &str) -> Option<Arc<Container>> {
        let mut map = self.map();
        if map.get(id).is_some_and(|c| &c.owner == owner) { map.remove(id) } else { None }
    }

    /// The owner's containers (for the containers API), by id.
    pub fn list(&self, owner: &Owner) -> Vec<Arc<Container>> {
        let mut list: Vec<_> = self.map().values().filter(|c| &c.owner == owner).cloned().collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    /// Removes and returns the containers idle longer than `idle_timeout` and not running
    /// code right now.
    pub fn take_expired(&self, idle_timeout: Duration) -> Vec<Arc<Container>> {
        let now = Instant::now();
        let mut map = self.map();
        let expired: Vec<String> = map
            .values()
            .filter(|c| c.idle_for(now) >= idle_timeout && c.exec.try_lock().is_ok())
            .map(|c| c.id.clone())
            .collect();
        expired.iter().filter_map(|id| map.remove(id)).collect()
    }
}
