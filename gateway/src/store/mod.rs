//! STORE: what the gateway keeps. Responses (with their input and output items, their stream
//! events and, for background mode, their queue state), conversations (with their items) and
//! code interpreter containers (with their sandbox's whereabouts and their files).
//!
//! One boundary, [`Store`], three engines:
//! - [`memory::MemoryStore`]: a process-local map (tests; per-connection caches);
//! - [`sql::SqlStore`] on SQLite: the embedded default, one file on one machine;
//! - [`sql::SqlStore`] on PostgreSQL: production and many gateway replicas.
//!
//! Every stored object is owned by a `(tenant, owner)` pair ([`Owner`]); every read, list, update
//! and delete takes an [`Access`] and sees nothing outside it. Another user's object is simply
//! "not found": methods answer `None`/`false`, never an error that tells it exists.
//!
//! Objects travel as their wire JSON ([`serde_json::Value`]): the store never looks inside a
//! Response or an item beyond the few columns it indexes (ids, status, links).
//!
//! Failures: an unreachable database is [`Error::StoreUnavailable`] (503; the pool reconnects on
//! its own), anything else [`Error::Internal`].

pub mod memory;
pub mod sql;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::openresponses::response::ResponseStatus;

/// Who owns a stored object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub tenant: String,
    pub user: String,
}

/// Whose objects an operation may see: one user's, or (admin) every user's of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub tenant: String,
    /// `None`: the whole tenant.
    pub user: Option<String>,
}

impl Owner {
    pub fn of(principal: &Principal) -> Self {
        Self { tenant: principal.tenant.clone(), user: principal.user.clone() }
    }
}

impl Access {
    /// A principal sees its own objects; with the admin scope, its whole tenant.
    pub fn of(principal: &Principal) -> Self {
        Self {
            tenant: principal.tenant.clone(),
            user: (!principal.scopes.admin).then(|| principal.user.clone()),
        }
    }

    /// Exactly the objects of `owner` (what a background worker acting for it sees).
    pub fn owner(owner: &Owner) -> Self {
        Self { tenant: owner.tenant.clone(), user: Some(owner.user.clone()) }
    }

    pub fn allows(&self, owner: &Owner) -> bool {
        self.tenant == owner.tenant && self.user.as_ref().is_none_or(|u| *u == owner.user)
    }
}

/// A response to write with [`Store::save_response`].
#[derive(Debug, Clone)]
pub struct NewResponse {
    pub id: String,
    pub owner: Owner,
    pub created_at: i64,
    pub status: ResponseStatus,
    pub previous_response_id: Option<String>,
    pub conversation_id: Option<String>,
    /// The Response object as it goes on the wire; its `output` array is stored item by item too.
    pub response: Value,
    /// The response's own input items (each with an `id`), in order.
    pub input: Vec<Value>,
    /// The create request (JSON body) of a background response, for the worker that runs it.
    pub request: Option<Value>,
}

/// A response as stored.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub id: String,
    pub owner: Owner,
    pub created_at: i64,
    pub status: ResponseStatus,
    pub previous_response_id: Option<String>,
    pub conversation_id: Option<String>,
    /// The Response object as last written, with `status` set from the status column (a claim
    /// moves a response to `in_progress` without rewriting the object).
    pub response: Value,
    pub cancel_requested: bool,
}

/// A queued response a worker has claimed (see [`Store::claim_queued`]).
#[derive(Debug, Clone)]
pub struct Claim {
    pub id: String,
    pub owner: Owner,
    /// The create request stored with the response.
    pub request: Value,
    /// How many times the response has been claimed, this claim included.
    pub attempts: u32,
    /// Unix milliseconds; the claim is lost unless [`Store::heartbeat`] extends it before then.
    pub lease_expires_at: i64,
}

/// An `in_progress` response whose worker stopped renewing its lease (see
/// [`Store::expired_leases`]).
#[derive(Debug, Clone)]
pub struct ExpiredLease {
    pub id: String,
    pub owner: Owner,
    pub worker: String,
    pub attempts: u32,
}

/// One stored stream event of a response.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub sequence_number: u64,
    /// The event as sent (with its `type` and `sequence_number`).
    pub event: Value,
}

/// A conversation (`{id, object: "conversation", created_at, metadata}` on the wire).
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub id: String,
    pub owner: Owner,
    pub created_at: i64,
    pub metadata: Map<String, Value>,
}

/// A code interpreter container (`cntr_...`) as stored: its API fields and how to reach its
/// sandbox, so any gateway replica can serve a container another one created.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredContainer {
    pub id: String,
    pub owner: Owner,
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
    pub status: ContainerStatus,
    /// Unix milliseconds of the last use (an execution, a file operation).
    pub last_active_at: i64,
    /// How long after `last_active_at` the container expires, in milliseconds.
    pub idle_ms: i64,
    /// As the client asked for it (`1g`, `4g`, ...); the pool decides the real limit.
    pub memory_limit: Option<String>,
    pub sandbox: SandboxRef,
}

/// Where a container's sandbox is: the pool manager's claim and the agent session on it.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxRef {
    pub claim_id: String,
    pub pool: String,
    pub agent_endpoint: String,
    pub agent_spiffe_id: String,
    /// Unix seconds at which the pool manager frees the claim unless it is renewed.
    pub claim_expires_at: i64,
    pub session_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerStatus {
    Running,
    /// Idle past its expiry: the claim is released, the workspace gone; the record stays.
    Expired,
}

impl ContainerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "running" => Ok(Self::Running),
            "expired" => Ok(Self::Expired),
            other => Err(Error::Internal(format!("stored container status `{other}` is unknown"))),
        }
    }
}

/// A file in a container's workspace (`cfile_...`).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredContainerFile {
    pub id: String,
    pub container_id: String,
    pub owner: Owner,
    /// Relative to the workspace, `/`-separated.
    pub path: String,
    pub bytes: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// `user` (uploaded) or `assistant` (written by code).
    pub source: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

/// Which slice of a list to return: up to `limit` objects in `order`, starting after the object
/// `after` and stopping before the object `before` (both ids, as in OpenAI's list endpoints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub limit: usize,
    pub after: Option<String>,
    pub before: Option<String>,
    pub order: Order,
}

impl Default for Page {
    fn default() -> Self {
        Self { limit: 20, after: None, before: None, order: Order::Desc }
    }
}

/// One page of a list; `has_more` says whether objects follow the last one in this order.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage<T> {
    pub data: Vec<T>,
    pub has_more: bool,
}

/// The storage boundary. Every method is a single atomic step on the database.
///
/// Conventions: `access` limits what a call can see (another owner's object is `None`/`false`,
/// exactly as if it did not exist); ids are the objects' wire ids; JSON is the wire form.
pub trait Store: Send + Sync + 'static {
    /// Which engine this is (`memory`, `sqlite`, `postgres`), for logs and metrics.
    fn engine(&self) -> &'static str;

    /// Whether the database answers (`/readyz`).
    fn check_ready(&self) -> BoxFuture<'_, Result<()>>;

    // === responses ===

    /// Writes a response with its input items and the items of its `output`, replacing any
    /// stored response with the same id and owner. When `conversation_id` is set, the turn joins
    /// that conversation whole (input items, then output items) once the status is terminal
    /// (`completed`, `incomplete`, `failed`, `cancelled`), here or through
    /// [`Store::update_response`]; a `queued` or `in_progress` save adds nothing to it yet. A
    /// `queued` response is what [`Store::claim_queued`] hands out; `request` must then be set.
    fn save_response<'a>(&'a self, response: &'a NewResponse) -> BoxFuture<'a, Result<()>>;

    /// Replaces the Response object and status of a stored response (a worker's progress, or its
    /// end). Output items are rewritten from `response.output`; a terminal status releases the
    /// lease and appends the stored input, then the output, to the response's conversation
    /// (items already in it are skipped). Returns `false` when no such response is visible to
    /// `access`.
    fn update_response<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
        status: ResponseStatus,
        response: &'a Value,
    ) -> BoxFuture<'a, Result<bool>>;

    fn get_response<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredResponse>>>;

    /// Deletes a response with its items and events. `false`: not found.
    fn delete_response<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Responses visible to `access`, ordered by id (creation time).
    fn list_responses<'a>(
        &'a self,
        access: &'a Access,
        page: &'a Page,
    ) -> BoxFuture<'a, Result<ListPage<StoredResponse>>>;

    /// A response's own input items, paged by item id. `None`: no such response.
    fn list_input_items<'a>(
        &'a self,
        access: &'a Access,
        response_id: &'a str,
        page: &'a Page,
    ) -> BoxFuture<'a, Result<Option<ListPage<Value>>>>;

    /// A response's input items then its output items, in order: what the model saw and said in
    /// that turn. `None`: no such response.
    fn response_items<'a>(
        &'a self,
        access: &'a Access,
        response_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<Value>>>>;

    /// Stored items (of responses, then of conversations) with these ids, for `item_reference`.
    /// Ids not found are left out; an id stored twice answers once.
    fn find_items<'a>(
        &'a self,
        access: &'a Access,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Value>>>;

    // === background queue ===

    /// Atomically takes the oldest `queued` response: it becomes `in_progress`, leased to
    /// `worker` until now + `lease`, and its attempt count goes up. Several gateway replicas may
    /// call this at once; each response goes to exactly one of them. `None`: nothing queued.
    fn claim_queued<'a>(
        &'a self,
        worker: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Option<Claim>>>;

    /// Extends `worker`'s lease on response `id` to now + `lease`. `false`: the response is no
    /// longer leased to this worker (finished, requeued, deleted) and the worker should stop.
    fn heartbeat<'a>(
        &'a self,
        id: &'a str,
        worker: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Up to `limit` `in_progress` responses whose lease ran out (their worker crashed or hung),
    /// oldest lease first. The caller decides: [`Store::requeue`] or fail them with
    /// [`Store::update_response`].
    fn expired_leases(&self, limit: usize) -> BoxFuture<'_, Result<Vec<ExpiredLease>>>;

    /// Puts response `id` back in the queue if it is still `in_progress`, leased to `worker`,
    /// and that lease has expired. `false`: someone else got there first.
    fn requeue<'a>(&'a self, id: &'a str, worker: &'a str) -> BoxFuture<'a, Result<bool>>;

    // === stream events ===

    /// Appends events of response `id` (owned by `owner`). Re-appending a sequence number that
    /// is already stored is ignored, so a retried write is harmless.
    fn append_events<'a>(
        &'a self,
        owner: &'a Owner,
        response_id: &'a str,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<()>>;

    /// Up to `limit` events of response `id` with a sequence number above `after` (all when
    /// `None`), in order. Empty when the response is not visible to `access`.
    fn events_after<'a>(
        &'a self,
        access: &'a Access,
        response_id: &'a str,
        after: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredEvent>>>;

    // === cancellation ===

    /// Marks response `id` as to be cancelled and returns it as stored. Its worker sees the mark
    /// through [`Store::cancel_requested`]. `None`: not found.
    fn request_cancel<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredResponse>>>;

    /// Whether a cancel was requested for response `id` (a worker's poll; `false` when gone).
    fn cancel_requested<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>>;

    // === conversations ===

    /// Creates a conversation holding `items` (each with an `id`), in order.
    fn create_conversation<'a>(
        &'a self,
        conversation: &'a Conversation,
        items: &'a [Value],
    ) -> BoxFuture<'a, Result<()>>;

    fn get_conversation<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Conversation>>>;

    /// Replaces a conversation's metadata. `None`: not found.
    fn update_conversation<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
        metadata: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Result<Option<Conversation>>>;

    /// Deletes a conversation and its items (responses that used it stay). `false`: not found.
    fn delete_conversation<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Appends items (each with an `id`) to a conversation; an item id already in it is skipped.
    /// `false`: no such conversation.
    fn append_conversation_items<'a>(
        &'a self,
        access: &'a Access,
        conversation_id: &'a str,
        items: &'a [Value],
    ) -> BoxFuture<'a, Result<bool>>;

    /// A conversation's items in the order they were added, paged by item id. `None`: no such
    /// conversation.
    fn list_conversation_items<'a>(
        &'a self,
        access: &'a Access,
        conversation_id: &'a str,
        page: &'a Page,
    ) -> BoxFuture<'a, Result<Option<ListPage<Value>>>>;

    fn get_conversation_item<'a>(
        &'a self,
        access: &'a Access,
        conversation_id: &'a str,
        item_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>>>;

    /// `false`: no such conversation or item.
    fn delete_conversation_item<'a>(
        &'a self,
        access: &'a Access,
        conversation_id: &'a str,
        item_id: &'a str,
    ) -> BoxFuture<'a, Result<bool>>;

    // === containers ===

    fn create_container<'a>(&'a self, container: &'a StoredContainer) -> BoxFuture<'a, Result<()>>;

    fn get_container<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredContainer>>>;

    /// Containers visible to `access` (only those named `name`, when given), ordered by id
    /// (creation time).
    fn list_containers<'a>(
        &'a self,
        access: &'a Access,
        page: &'a Page,
        name: Option<&'a str>,
    ) -> BoxFuture<'a, Result<ListPage<StoredContainer>>>;

    /// Records the use of running container `id`: `last_active_at` (unix ms; never moved back)
    /// and its claim's expiry. `false`: no such running container.
    fn touch_container<'a>(
        &'a self,
        id: &'a str,
        last_active_at: i64,
        claim_expires_at: i64,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Up to `limit` running containers (of every owner) idle past their own expiry at `now`
    /// (unix ms), least recently active first: candidates for [`Store::expire_container`].
    fn idle_containers(
        &self,
        now: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredContainer>>>;

    /// Marks container `id` expired if it is running and idle past its expiry at `now` (unix
    /// ms; `i64::MAX` expires it whatever its activity, when its sandbox is known to be gone).
    /// `true`: this call expired it, so the caller ends its sandbox (replicas racing for the
    /// same container: exactly one wins).
    fn expire_container<'a>(&'a self, id: &'a str, now: i64) -> BoxFuture<'a, Result<bool>>;

    /// Deletes a container with its file records. `false`: not found.
    fn delete_container<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool>>;

    /// Writes a file record; a record with the same id keeps its `created_at` and takes the new
    /// `bytes` and `source`. Returns the record as stored.
    fn put_container_file<'a>(
        &'a self,
        file: &'a StoredContainerFile,
    ) -> BoxFuture<'a, Result<StoredContainerFile>>;

    /// A container's files in the order they were first recorded, paged by file id.
    fn list_container_files<'a>(
        &'a self,
        access: &'a Access,
        container_id: &'a str,
        page: &'a Page,
    ) -> BoxFuture<'a, Result<ListPage<StoredContainerFile>>>;

    fn get_container_file<'a>(
        &'a self,
        access: &'a Access,
        container_id: &'a str,
        file_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredContainerFile>>>;

    /// `false`: no such file in that container.
    fn delete_container_file<'a>(
        &'a self,
        access: &'a Access,
        container_id: &'a str,
        file_id: &'a str,
    ) -> BoxFuture<'a, Result<bool>>;
}

/// Storage settings (`store:` in the config file).
#[derive(Debug, Clone, PartialEq)]
pub struct StoreSettings {
    /// `memory`, `sqlite://PATH` (`sqlite:///abs/path`) or `postgres://...`.
    pub url: String,
    pub max_connections: u32,
    /// How long a request waits for a database connection before it gets a 503.
    pub acquire_timeout: Duration,
}

/// Opens the configured store and brings its schema up to date (migrations run here).
pub async fn open(settings: &StoreSettings) -> Result<Arc<dyn Store>> {
    if settings.url == "memory" {
        return Ok(Arc::new(memory::MemoryStore::new()));
    }
    let store = sql::SqlStore::connect(settings).await?;
    store.migrate().await?;
    Ok(Arc::new(store))
}

/// Whether a status ends a response's life (its output is final).
pub fn is_terminal(status: ResponseStatus) -> bool {
    matches!(
        status,
        ResponseStatus::Completed
            | ResponseStatus::Incomplete
            | ResponseStatus::Failed
            | ResponseStatus::Cancelled
    )
}

impl ResponseStatus {
    /// The status as the API and the `status` column spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Incomplete => "incomplete",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "queued" => Self::Queued,
            "in_progress" => Self::InProgress,
            "completed" => Self::Completed,
            "incomplete" => Self::Incomplete,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            other => return Err(Error::Internal(format!("stored status `{other}` is unknown"))),
        })
    }
}

/// The output items of a Response object.
fn output_items(response: &Value) -> &[Value] {
    response.get("output").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn item_id(item: &Value) -> &str {
    item.get("id").and_then(Value::as_str).unwrap_or("")
}

/// Unix milliseconds, the unit of leases.
fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Cuts a list fetched with one extra element down to `limit` and says whether more follow.
fn page_of<T>(mut data: Vec<T>, limit: usize) -> ListPage<T> {
    let has_more = data.len() > limit;
    data.truncate(limit);
    ListPage { data, has_more }
}
