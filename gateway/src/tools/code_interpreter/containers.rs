//! Containers (`cntr_...`): an owner's sandbox session, kept in the store so that any gateway
//! replica can serve a container another one created, plus this replica's live handles on them.
//!
//! The store holds the truth ([`StoredContainer`]: owner, expiry, status, and the claim id,
//! agent endpoint, agent SPIFFE ID, claim expiry and session id it takes to reach the sandbox).
//! [`Containers`] caches live [`Container`]s (the mTLS agent client, the execution lock); a
//! replica that has not seen a container rebuilds its agent client from the record. Every use
//! reads the record first, so a container deleted or expired elsewhere is gone here too.
//!
//! Expiry: a container expires `expires_after` (default: `idle_timeout`) after its last use. The
//! reaper of any replica marks it expired in the store (one replica wins), then deletes the
//! agent session and releases the claim; the record stays and reads `status: "expired"`.
//!
//! File ids are `cfile_` plus a hash of (container id, workspace path), so every replica and
//! every execution names a path the same way without coordinating. The store keeps one record
//! per file: uploads when they land, files written by code when the files are listed or looked
//! up (the agent's workspace listing is the truth of what exists).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use antwort_common::agent_api::FileInfo;
use antwort_common::pool_api::Claim;
use sha2::Digest as _;

use super::sandbox::{AgentClient, FileRefusal};
use super::{CodeInterpreter, Sandboxes};
use crate::error::Error;
use crate::openresponses::code_interpreter as wire;
use crate::store::{
    Access, ContainerStatus, ListPage, Page, SandboxRef, StoredContainer, StoredContainerFile,
};
use crate::tools::{ContainerBinding, Owner, ToolFailure};

/// Where the workspace appears inside the sandbox; container file paths are shown under it.
pub const WORKSPACE_ROOT: &str = "/mnt/data";

/// The id of the file at workspace `path` in container `container_id` (stable: the same path
/// always gets the same id).
pub fn container_file_id(container_id: &str, path: &str) -> String {
    let digest = sha2::Sha256::new()
        .chain_update(container_id.as_bytes())
        .chain_update([0u8])
        .chain_update(path.as_bytes())
        .finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("cfile_{hex}")
}

/// One live container on this replica.
pub struct Container {
    pub id: String,
    pub owner: Owner,
    pub agent: AgentClient,
    /// The agent's session id: one interpreter, one workspace.
    pub session_id: String,
    /// Unused this long, the container expires.
    pub idle: Duration,
    /// Executions in one container run one at a time (one interpreter); parallel calls queue.
    pub exec: tokio::sync::Mutex<()>,
    state: Mutex<State>,
}

struct State {
    claim: Claim,
    /// When `claim` was granted or last renewed (as far as this replica knows).
    claim_renewed: Instant,
    last_used: Instant,
}

impl Container {
    pub fn new(
        id: String,
        owner: Owner,
        claim: Claim,
        agent: AgentClient,
        session_id: String,
        idle: Duration,
    ) -> Self {
        Container {
            id,
            owner,
            agent,
            session_id,
            idle,
            exec: tokio::sync::Mutex::new(()),
            state: Mutex::new(State {
                claim,
                claim_renewed: Instant::now(),
                last_used: Instant::now(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-updated; go on.
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
        let mut state = self.state();
        state.claim = claim;
        state.claim_renewed = Instant::now();
    }

    /// How long ago the claim was granted or renewed.
    pub fn claim_age(&self) -> Duration {
        self.state().claim_renewed.elapsed()
    }

    /// The file id of a workspace path ([`container_file_id`]).
    pub fn file_id(&self, path: &str) -> String {
        container_file_id(&self.id, path)
    }

    /// A deleted file needs no bookkeeping here: its id is derived from its path, and the
    /// store's record goes at the next listing.
    pub fn forget_file(&self, _path: &str) {}

    /// Whether this replica is running code in it or used it within its expiry.
    fn busy_or_recent(&self) -> bool {
        self.exec.try_lock().is_err() || self.idle_for(Instant::now()) < self.idle
    }
}

/// This replica's live containers, by id.
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

    fn remove_id(&self, id: &str) -> Option<Arc<Container>> {
        self.map().remove(id)
    }

    fn get_id(&self, id: &str) -> Option<Arc<Container>> {
        self.map().get(id).cloned()
    }

    fn take_all(&self) -> Vec<Arc<Container>> {
        self.map().drain().map(|(_, c)| c).collect()
    }

    fn all(&self) -> Vec<Arc<Container>> {
        self.map().values().cloned().collect()
    }

    /// The owner's live containers on this replica, by id.
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
}

/// What a new container is asked to be (`POST /v1/containers`; `auto` containers get the
/// defaults).
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    /// Expires this long after its last use.
    pub idle: Duration,
    pub memory_limit: Option<String>,
}

/// A container file's bytes on their way from the agent: `bytes_stream` of this response.
pub struct FileDownload {
    pub file: StoredContainerFile,
    pub response: reqwest::Response,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn idle_ms(idle: Duration) -> i64 {
    idle.as_millis().min(i64::MAX as u128) as i64
}

fn store_failure(err: Error) -> ToolFailure {
    ToolFailure::SandboxUnavailable { reason: format!("container store: {err}") }
}

/// A tool failure met by the containers API, as the API's error.
fn api_error(failure: ToolFailure) -> Error {
    match failure {
        ToolFailure::ContainerNotFound { id } => Error::NotFound { object: "container", id },
        ToolFailure::ContainerExpired { id } => expired_error(&id),
        other => Error::SandboxUnavailable(other.message()),
    }
}

fn expired_error(id: &str) -> Error {
    Error::invalid_request(
        None,
        "container_expired",
        format!(
            "Container '{id}' has expired: it was idle past its expiry, so its sandbox and files \
             are gone. Create a new container."
        ),
    )
}

fn record_of(container: &Container, spec: &ContainerSpec, claim: &Claim) -> StoredContainer {
    StoredContainer {
        id: container.id.clone(),
        owner: container.owner.clone(),
        name: spec.name.clone(),
        created_at: crate::ids::unix_now(),
        status: ContainerStatus::Running,
        last_active_at: now_ms(),
        idle_ms: idle_ms(spec.idle),
        memory_limit: spec.memory_limit.clone(),
        sandbox: SandboxRef {
            claim_id: claim.claim_id.clone(),
            pool: claim.pool.clone(),
            agent_endpoint: claim.agent_endpoint.clone(),
            agent_spiffe_id: claim.agent_spiffe_id.clone(),
            claim_expires_at: claim.expires_at.min(i64::MAX as u64) as i64,
            session_id: container.session_id.clone(),
        },
    }
}

fn claim_of(record: &StoredContainer) -> Claim {
    Claim {
        claim_id: record.sandbox.claim_id.clone(),
        pool: record.sandbox.pool.clone(),
        agent_endpoint: record.sandbox.agent_endpoint.clone(),
        agent_spiffe_id: record.sandbox.agent_spiffe_id.clone(),
        expires_at: record.sandbox.claim_expires_at.max(0) as u64,
        reused: true,
    }
}

/// Whether a running record is idle past its expiry at `now` (unix ms).
fn past_expiry(record: &StoredContainer, now: i64) -> bool {
    record.status == ContainerStatus::Running
        && record.last_active_at.saturating_add(record.idle_ms) <= now
}

/// A workspace path as the API shows it.
pub fn api_path(path: &str) -> String {
    format!("{WORKSPACE_ROOT}/{path}")
}

// === impl CodeInterpreter: containers ===

impl CodeInterpreter {
    /// Whether `owner` has container `id` live on this replica (404 `container` otherwise);
    /// [`CodeInterpreter::validate_container`] asks the store.
    pub fn check_container(&self, owner: &Owner, id: &str) -> Result<(), Error> {
        match self.containers.get(owner, id) {
            Some(_) => Ok(()),
            None => Err(Error::NotFound { object: "container", id: id.to_string() }),
        }
    }

    /// For request validation: whether `owner` has container `id` (404 `container` otherwise,
    /// as for any object of another owner) and it can still run code (400
    /// `container_expired` otherwise). Any replica's container counts: this reads the store.
    pub async fn validate_container(&self, owner: &Owner, id: &str) -> Result<(), Error> {
        match self.container_record(&Access::owner(owner), id).await? {
            None => Err(Error::NotFound { object: "container", id: id.to_string() }),
            Some(record) if record.status != ContainerStatus::Running => Err(expired_error(id)),
            Some(_) => Ok(()),
        }
    }

    /// How long a claim is asked for: it outlives the container's expiry so the reaper, not the
    /// pool manager, ends an idle container.
    pub(super) fn claim_ttl_for(&self, idle: Duration) -> Duration {
        idle + Duration::from_secs(60)
    }

    /// The defaults of an `auto` container (and of an API one that names no expiry).
    pub fn default_spec(&self) -> ContainerSpec {
        ContainerSpec { name: "auto".into(), idle: self.limits.idle_timeout, memory_limit: None }
    }

    /// The pool a container asking for `memory_limit` is claimed from; `Err` says why none is
    /// (`tools.code_interpreter.pools_by_memory_limit` offers other sizes only).
    pub fn pool_for(&self, memory_limit: Option<&str>) -> Result<&str, String> {
        match &self.sandboxes {
            Sandboxes::Pool(client) => client.pool_for(memory_limit),
            Sandboxes::Static(claim) => Ok(&claim.pool),
        }
    }

    /// The container a call runs in. The engine calls this once before running a turn's calls
    /// in parallel, so they share one new `auto` container instead of making one each.
    pub async fn resolve_container(
        &self,
        owner: &Owner,
        binding: &ContainerBinding,
        memory_limit: Option<&str>,
    ) -> Result<Arc<Container>, ToolFailure> {
        let access = Access::owner(owner);
        match binding {
            ContainerBinding::Explicit(id) => self.open_container(&access, id).await,
            ContainerBinding::Auto { current } => {
                if let Some(id) = current {
                    match self.open_container(&access, id).await {
                        Ok(container) => match self.keep_claim(&container).await {
                            // The pool manager took its sandbox back (the gateway was away, or
                            // the pool's idle timeout is shorter than the renewals): `auto`
                            // goes on in a new container, as after an expiry.
                            Err(ToolFailure::ContainerNotFound { .. }) => {}
                            _ => return Ok(container),
                        },
                        // Gone or expired: `auto` makes a new one.
                        Err(ToolFailure::ContainerNotFound { .. })
                        | Err(ToolFailure::ContainerExpired { .. }) => {}
                        Err(other) => return Err(other),
                    }
                }
                let spec = ContainerSpec {
                    memory_limit: memory_limit.map(str::to_string),
                    ..self.default_spec()
                };
                self.create_container_with(owner, &spec).await.map(|(c, _)| c)
            }
        }
    }

    /// Claims a sandbox, opens a session and stores the new container.
    pub async fn create_container_with(
        &self,
        owner: &Owner,
        spec: &ContainerSpec,
    ) -> Result<(Arc<Container>, StoredContainer), ToolFailure> {
        let id = crate::ids::new_id(wire::CONTAINER_ID_PREFIX);
        let claim = match &self.sandboxes {
            Sandboxes::Pool(client) => {
                let pool = self
                    .pool_for(spec.memory_limit.as_deref())
                    .map_err(|reason| ToolFailure::InvalidArguments { reason })?;
                client.claim(pool, &id, self.claim_ttl_for(spec.idle)).await?
            }
            Sandboxes::Static(claim) => claim.clone(),
        };
        let opened = async {
            let agent = AgentClient::for_claim(
                self.source.clone(),
                &self.agents,
                &claim,
                self.limits.request_timeout,
            )?;
            let session = agent.create_session(&id).await?;
            Ok::<_, ToolFailure>((agent, session))
        }
        .await;
        let (agent, session) = match opened {
            Ok(opened) => opened,
            Err(failure) => {
                self.release_claim(&claim).await;
                return Err(failure);
            }
        };
        let container = Arc::new(Container::new(
            id,
            owner.clone(),
            claim.clone(),
            agent,
            session.id,
            spec.idle,
        ));
        let record = record_of(&container, spec, &claim);
        if let Err(err) = self.store.create_container(&record).await {
            self.end(&container).await;
            return Err(store_failure(err));
        }
        tracing::info!(container = %container.id, claim = %claim.claim_id, agent = %claim.agent_spiffe_id, "container created");
        self.containers.insert(container.clone());
        Ok((container, record))
    }

    /// A handle on a record's sandbox, built from what the record says (not cached).
    fn rebuild(&self, record: &StoredContainer) -> Result<Arc<Container>, ToolFailure> {
        let claim = claim_of(record);
        let agent = AgentClient::for_claim(
            self.source.clone(),
            &self.agents,
            &claim,
            self.limits.request_timeout,
        )?;
        Ok(Arc::new(Container::new(
            record.id.clone(),
            record.owner.clone(),
            claim,
            agent,
            record.sandbox.session_id.clone(),
            Duration::from_millis(record.idle_ms.max(0) as u64),
        )))
    }

    /// The live container of a running record: this replica's, or one rebuilt from the record
    /// (a container another replica created, or this one before a restart). A rebuilt one is
    /// checked first: when its agent no longer has the session (the sandbox was reset or
    /// replaced meanwhile), the container is expired, so `auto` makes a new one.
    async fn live(&self, record: &StoredContainer) -> Result<Arc<Container>, ToolFailure> {
        if let Some(container) = self.containers.get_id(&record.id) {
            return Ok(container);
        }
        let container = self.rebuild(record)?;
        if container.agent.session(&container.session_id).await?.is_none() {
            tracing::info!(container = %record.id, "the container's session is gone; expiring it");
            self.force_expire(&container).await;
            return Err(ToolFailure::ContainerExpired { id: record.id.clone() });
        }
        self.containers.insert(container.clone());
        Ok(container)
    }

    /// Marks a container expired whatever its activity (its sandbox is known to be gone) and
    /// releases its claim.
    pub(super) async fn force_expire(&self, container: &Container) {
        self.containers.remove_id(&container.id);
        match self.store.expire_container(&container.id, i64::MAX).await {
            Ok(true) => self.release_claim(&container.claim()).await,
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(container = %container.id, error = %err, "expiring a container failed")
            }
        }
    }

    /// The container record as it stands now: a running one idle past its expiry is expired on
    /// the spot (its sandbox ended), unless this replica is using it.
    pub async fn container_record(
        &self,
        access: &Access,
        id: &str,
    ) -> Result<Option<StoredContainer>, Error> {
        let Some(mut record) = self.store.get_container(access, id).await? else {
            // Gone (deleted elsewhere) for its owner; another caller's miss says nothing.
            if self.containers.get_id(id).is_some_and(|c| access.allows(&c.owner)) {
                self.containers.remove_id(id);
            }
            return Ok(None);
        };
        if past_expiry(&record, now_ms()) {
            let in_use = self.containers.get_id(id).is_some_and(|c| c.busy_or_recent());
            if !in_use {
                self.expire(&record).await?;
                record.status = ContainerStatus::Expired;
            }
        }
        if record.status != ContainerStatus::Running {
            self.containers.remove_id(id);
        }
        Ok(Some(record))
    }

    /// Opens a container for use (code, files): it must be running; its use is recorded.
    pub async fn open_container(
        &self,
        access: &Access,
        id: &str,
    ) -> Result<Arc<Container>, ToolFailure> {
        let record = self
            .container_record(access, id)
            .await
            .map_err(store_failure)?
            .ok_or_else(|| ToolFailure::ContainerNotFound { id: id.to_string() })?;
        self.use_record(&record).await
    }

    async fn use_record(&self, record: &StoredContainer) -> Result<Arc<Container>, ToolFailure> {
        if record.status != ContainerStatus::Running {
            return Err(ToolFailure::ContainerExpired { id: record.id.clone() });
        }
        let container = self.live(record).await?;
        container.touch();
        // File operations keep the claim alive too, not only executions.
        self.keep_claim(&container).await?;
        let claim_expires_at = container.claim().expires_at.min(i64::MAX as u64) as i64;
        match self.store.touch_container(&record.id, now_ms(), claim_expires_at).await {
            Ok(true) => Ok(container),
            // Expired or deleted by another replica a moment ago.
            Ok(false) => {
                self.containers.remove_id(&record.id);
                Err(ToolFailure::ContainerExpired { id: record.id.clone() })
            }
            Err(err) => Err(store_failure(err)),
        }
    }

    /// Expires a running record in the store; the replica that wins ends its sandbox.
    async fn expire(&self, record: &StoredContainer) -> Result<bool, Error> {
        if !self.store.expire_container(&record.id, now_ms()).await? {
            return Ok(false);
        }
        self.end_record(record).await;
        tracing::info!(container = %record.id, "container expired");
        Ok(true)
    }

    /// Ends the sandbox of a record (this replica's handle, or one built for the purpose).
    async fn end_record(&self, record: &StoredContainer) {
        let container = match self.containers.remove_id(&record.id) {
            Some(container) => Some(container),
            None => self.rebuild(record).ok(),
        };
        match container {
            Some(container) => {
                let _running = container.exec.lock().await;
                self.end(&container).await;
            }
            // No client can be built (its agent is no longer allowed): free the claim at least.
            None => self.release_claim(&claim_of(record)).await,
        }
    }

    pub(super) async fn release_claim(&self, claim: &Claim) {
        if let Sandboxes::Pool(pool) = &self.sandboxes
            && let Err(err) = pool.release(&claim.claim_id).await
        {
            tracing::warn!(claim = %claim.claim_id, error = %err, "claim release failed");
        }
    }

    /// Ends a container: deletes its session and releases its claim.
    async fn end(&self, container: &Container) {
        container.agent.delete_session(&container.session_id).await;
        self.release_claim(&container.claim()).await;
        tracing::info!(container = %container.id, "container ended");
    }

    /// Deletes container `id` (the containers API): the record and its files go, the session
    /// is deleted and the claim released. `false` when not found.
    pub async fn delete_container(&self, access: &Access, id: &str) -> Result<bool, Error> {
        let Some(record) = self.store.get_container(access, id).await? else {
            return Ok(false);
        };
        if !self.store.delete_container(access, id).await? {
            return Ok(false);
        }
        if record.status == ContainerStatus::Running {
            self.end_record(&record).await;
        } else {
            self.containers.remove_id(id);
        }
        Ok(true)
    }

    /// Ends every container idle past its expiry (on any replica: the store decides which one
    /// ends it) and drops this replica's handles on containers ended elsewhere; returns how
    /// many this call expired.
    pub async fn reap_expired(&self) -> usize {
        let now = now_ms();
        let mut reaped = 0;
        match self.store.idle_containers(now, 100).await {
            Ok(idle) => {
                for record in idle {
                    let local = self.containers.get_id(&record.id);
                    if let Some(container) = local.filter(|c| c.busy_or_recent()) {
                        // Used here since the store last heard of it (a long execution).
                        let claim = container.claim().expires_at.min(i64::MAX as u64) as i64;
                        let last = now - idle_ms(container.idle_for(Instant::now()));
                        let _ = self.store.touch_container(&record.id, last, claim).await;
                        continue;
                    }
                    match self.expire(&record).await {
                        Ok(true) => reaped += 1,
                        Ok(false) => {}
                        Err(err) => {
                            tracing::warn!(container = %record.id, error = %err, "expiring a container failed")
                        }
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "listing idle containers failed"),
        }
        for container in self.containers.all() {
            // Handles on containers another replica expired or deleted go.
            if !container.busy_or_recent() {
                let access = Access::owner(&container.owner);
                match self.store.get_container(&access, &container.id).await {
                    Ok(Some(record)) if record.status == ContainerStatus::Running => {}
                    Ok(_) => {
                        self.containers.remove_id(&container.id);
                        continue;
                    }
                    Err(_) => continue,
                }
            }
            // The rest are renewed while kept, running code or not: the pool's idle timeout
            // must not end a sandbox under a container that has not expired here.
            if let Err(failure) = self.keep_claim(&container).await {
                tracing::info!(container = %container.id, code = failure.code(), "keeping a claim failed");
            }
        }
        reaped
    }

    /// Reaps expired containers until `shutdown` resolves. Then, with an in-memory store (the
    /// containers die with this process), ends this replica's containers; with a shared store
    /// they live on for other replicas (or this one after a restart), and their claims run out
    /// at the pool manager unless used.
    pub async fn run_reaper(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let every = (self.limits.idle_timeout / 4)
            .min(self.limits.claim_renew / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(30));
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(every) => { self.reap_expired().await; }
            }
        }
        if self.store.engine() == "memory" {
            for container in self.containers.take_all() {
                self.end(&container).await;
            }
        }
    }

    // === the containers API ===

    /// `POST /v1/containers`.
    pub async fn api_create(
        &self,
        owner: &Owner,
        spec: &ContainerSpec,
    ) -> Result<StoredContainer, Error> {
        self.pool_for(spec.memory_limit.as_deref())
            .map_err(|message| Error::invalid_value("memory_limit", message))?;
        let (_, record) = self.create_container_with(owner, spec).await.map_err(api_error)?;
        Ok(record)
    }

    /// `GET /v1/containers/{id}`.
    pub async fn api_get(&self, access: &Access, id: &str) -> Result<StoredContainer, Error> {
        self.container_record(access, id)
            .await?
            .ok_or_else(|| Error::NotFound { object: "container", id: id.to_string() })
    }

    /// `GET /v1/containers` (`name`: only those so named): records as stored, those idle past
    /// their expiry shown expired.
    pub async fn api_list(
        &self,
        access: &Access,
        page: &Page,
        name: Option<&str>,
    ) -> Result<ListPage<StoredContainer>, Error> {
        let mut listed = self.store.list_containers(access, page, name).await?;
        let now = now_ms();
        for record in &mut listed.data {
            if past_expiry(record, now) {
                record.status = ContainerStatus::Expired;
            }
        }
        Ok(listed)
    }

    /// The running container `id` and its record, or the API's error.
    async fn api_open(
        &self,
        access: &Access,
        id: &str,
    ) -> Result<(Arc<Container>, StoredContainer), Error> {
        let record = self.api_get(access, id).await?;
        let container = self.use_record(&record).await.map_err(api_error)?;
        Ok((container, record))
    }

    /// `POST /v1/containers/{id}/files`: streams `body` into the workspace at `name` (a plain
    /// file name) and records it with source `user`. `body` yields the upload's chunks; the
    /// caller stops it past `max_upload_bytes` by ending it with an error.
    pub async fn api_upload(
        &self,
        access: &Access,
        id: &str,
        name: &str,
        body: reqwest::Body,
    ) -> Result<Result<StoredContainerFile, FileRefusal>, Error> {
        let (container, record) = self.api_open(access, id).await?;
        let info = match container
            .agent
            .upload_file(&container.session_id, name, body)
            .await
            .map_err(api_error)?
        {
            Ok(info) => info,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let file = self.record_file(&record, &info, "user", crate::ids::unix_now()).await?;
        Ok(Ok(file))
    }

    async fn record_file(
        &self,
        record: &StoredContainer,
        info: &FileInfo,
        source: &str,
        created_at: i64,
    ) -> Result<StoredContainerFile, Error> {
        self.store
            .put_container_file(&StoredContainerFile {
                id: container_file_id(&record.id, &info.path),
                container_id: record.id.clone(),
                owner: record.owner.clone(),
                path: info.path.clone(),
                bytes: info.size_bytes.min(i64::MAX as u64) as i64,
                created_at,
                source: source.to_string(),
            })
            .await
    }

    /// Brings the file records of a running container in line with its workspace: files the
    /// code wrote get records (source `assistant`), sizes are updated, records of files that
    /// are gone are dropped. An expired container keeps the records it had.
    async fn sync_files(&self, access: &Access, id: &str) -> Result<StoredContainer, Error> {
        let record = self.api_get(access, id).await?;
        if record.status != ContainerStatus::Running {
            return Ok(record);
        }
        let container = self.use_record(&record).await.map_err(api_error)?;
        let listing = container.agent.list_files(&container.session_id).await.map_err(api_error)?;
        let all = Page { limit: 100_000, after: None, before: None, order: Default::default() };
        let known = self.store.list_container_files(access, id, &all).await?.data;
        let by_path: HashMap<&str, &StoredContainerFile> =
            known.iter().map(|f| (f.path.as_str(), f)).collect();
        for info in &listing.files {
            match by_path.get(info.path.as_str()) {
                Some(file) if file.bytes as u64 == info.size_bytes => {}
                Some(file) => {
                    let source = file.source.clone();
                    self.record_file(&record, info, &source, file.created_at).await?;
                }
                None => {
                    let created_at = info.modified_at.min(i64::MAX as u64) as i64;
                    self.record_file(&record, info, "assistant", created_at).await?;
                }
            }
        }
        if !listing.truncated {
            for file in &known {
                if !listing.files.iter().any(|f| f.path == file.path) {
                    self.store.delete_container_file(access, id, &file.id).await?;
                }
            }
        }
        Ok(record)
    }

    /// `GET /v1/containers/{id}/files`.
    pub async fn api_list_files(
        &self,
        access: &Access,
        id: &str,
        page: &Page,
    ) -> Result<ListPage<StoredContainerFile>, Error> {
        self.sync_files(access, id).await?;
        self.store.list_container_files(access, id, page).await
    }

    /// `GET /v1/containers/{id}/files/{file_id}`: the record; a file the code wrote since the
    /// last listing is found through the workspace.
    pub async fn api_get_file(
        &self,
        access: &Access,
        id: &str,
        file_id: &str,
    ) -> Result<StoredContainerFile, Error> {
        if let Some(file) = self.store.get_container_file(access, id, file_id).await? {
            return Ok(file);
        }
        self.sync_files(access, id).await?;
        self.store
            .get_container_file(access, id, file_id)
            .await?
            .ok_or_else(|| Error::NotFound { object: "file", id: file_id.to_string() })
    }

    /// `GET /v1/containers/{id}/files/{file_id}/content`: the agent's download, to stream on.
    pub async fn api_download(
        &self,
        access: &Access,
        id: &str,
        file_id: &str,
    ) -> Result<FileDownload, Error> {
        let file = self.api_get_file(access, id, file_id).await?;
        let (container, _) = self.api_open(access, id).await?;
        match container.agent.download_file(&container.session_id, &file.path).await {
            Ok(Some(response)) => Ok(FileDownload { file, response }),
            Ok(None) => {
                // Deleted by code since it was recorded.
                self.store.delete_container_file(access, id, file_id).await?;
                Err(Error::NotFound { object: "file", id: file_id.to_string() })
            }
            Err(failure) => Err(api_error(failure)),
        }
    }

    /// `DELETE /v1/containers/{id}/files/{file_id}`: from the workspace and the store.
    pub async fn api_delete_file(
        &self,
        access: &Access,
        id: &str,
        file_id: &str,
    ) -> Result<(), Error> {
        let file = self.api_get_file(access, id, file_id).await?;
        let (container, _) = self.api_open(access, id).await?;
        container.agent.delete_file(&container.session_id, &file.path).await.map_err(api_error)?;
        self.store.delete_container_file(access, id, file_id).await?;
        Ok(())
    }
}
