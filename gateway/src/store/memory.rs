//! The in-memory engine: everything in one map behind a mutex. For tests and for data that must
//! not outlive the process (a WebSocket connection's `store: false` chain). The mutex is std's:
//! no `.await` happens while it is held.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::{
    Access, Claim, ContainerStatus, Conversation, ExpiredLease, ListPage, NewResponse, Order,
    Owner, Page, Store, StoredContainer, StoredContainerFile, StoredEvent, StoredResponse,
    is_terminal, item_id, now_millis, output_items, page_of,
};
use crate::error::Result;
use crate::openresponses::response::ResponseStatus;

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// By id; ids are time-ordered, so this is creation order.
    responses: BTreeMap<String, ResponseEntry>,
    /// Ids of responses that were queued (a superset of those still `queued`; others are
    /// dropped when met), so workers polling for work do not scan every stored response.
    queued: std::collections::BTreeSet<String>,
    conversations: BTreeMap<String, ConversationEntry>,
    /// By id (creation order).
    containers: BTreeMap<String, StoredContainer>,
    /// By container id, each list in the order the files were first recorded.
    container_files: BTreeMap<String, Vec<StoredContainerFile>>,
}

struct ResponseEntry {
    stored: StoredResponse,
    input: Vec<Value>,
    request: Option<Value>,
    worker: Option<String>,
    lease_expires_at: Option<i64>,
    attempts: u32,
    events: BTreeMap<u64, Value>,
}

struct ConversationEntry {
    conversation: Conversation,
    items: Vec<Value>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut state)
    }
}

impl State {
    fn response(&self, access: &Access, id: &str) -> Option<&ResponseEntry> {
        self.responses.get(id).filter(|e| access.allows(&e.stored.owner))
    }

    fn response_mut(&mut self, access: &Access, id: &str) -> Option<&mut ResponseEntry> {
        self.responses.get_mut(id).filter(|e| access.allows(&e.stored.owner))
    }

    fn conversation_mut(&mut self, access: &Access, id: &str) -> Option<&mut ConversationEntry> {
        self.conversations.get_mut(id).filter(|c| access.allows(&c.conversation.owner))
    }

    fn append_to_conversation(&mut self, conversation_id: &str, items: &[Value]) {
        if let Some(entry) = self.conversations.get_mut(conversation_id) {
            append_new(&mut entry.items, items);
        }
    }
}

fn append_new(list: &mut Vec<Value>, items: &[Value]) {
    for item in items {
        if !list.iter().any(|existing| item_id(existing) == item_id(item)) {
            list.push(item.clone());
        }
    }
}

/// Pages through `items` (in ascending order) by their ids; an `after`/`before` id that is not
/// in the list gives an empty page, as the SQL engines do.
fn page_by_position(items: &[Value], page: &Page) -> ListPage<Value> {
    page_by_key(items, |item| item_id(item), page)
}

/// [`page_by_position`] for any objects whose id `key` gives.
fn page_by_key<T: Clone>(items: &[T], key: impl Fn(&T) -> &str, page: &Page) -> ListPage<T> {
    let position = |id: &str| items.iter().position(|i| key(i) == id);
    let mut low = 0usize; // inclusive, ascending indices
    let mut high = items.len(); // exclusive
    let (after_bound, before_bound) = match page.order {
        Order::Asc => (&page.after, &page.before),
        Order::Desc => (&page.before, &page.after),
    };
    if let Some(id) = after_bound {
        match position(id) {
            Some(p) => low = p + 1,
            None => return ListPage { data: Vec::new(), has_more: false },
        }
    }
    if let Some(id) = before_bound {
        match position(id) {
            Some(p) => high = p,
            None => return ListPage { data: Vec::new(), has_more: false },
        }
    }
    let slice = if low < high { &items[low..high] } else { &[][..] };
    let data: Vec<T> = match page.order {
        Order::Asc => slice.iter().take(page.limit + 1).cloned().collect(),
        Order::Desc => slice.iter().rev().take(page.limit + 1).cloned().collect(),
    };
    page_of(data, page.limit)
}

fn idle_past_expiry(container: &StoredContainer, now: i64) -> bool {
    container.status == ContainerStatus::Running
        && container.last_active_at.saturating_add(container.idle_ms) <= now
}

fn stored_view(entry: &ResponseEntry) -> StoredResponse {
    let mut stored = entry.stored.clone();
    if let Some(object) = stored.response.as_object_mut() {
        object.insert("status".into(), Value::from(stored.status.as_str()));
    }
    stored
}

impl Store for MemoryStore {
    fn engine(&self) -> &'static str {
        "memory"
    }

    fn check_ready(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn save_response<'a>(&'a self, response: &'a NewResponse) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.with(|state| {
                let first_save = !state.responses.contains_key(&response.id);
                if !first_save
                    && state
                        .responses
                        .get(&response.id)
                        .is_some_and(|e| e.stored.owner != response.owner)
                {
                    // Never overwrite someone else's object; ids are random, so this is a bug.
                    return Err(crate::error::Error::Internal(format!(
                        "response {} exists with another owner",
                        response.id
                    )));
                }
                let events =
                    state.responses.remove(&response.id).map(|e| e.events).unwrap_or_default();
                state.responses.insert(
                    response.id.clone(),
                    ResponseEntry {
                        stored: StoredResponse {
                            id: response.id.clone(),
                            owner: response.owner.clone(),
                            created_at: response.created_at,
                            status: response.status,
                            previous_response_id: response.previous_response_id.clone(),
                            conversation_id: response.conversation_id.clone(),
                            response: response.response.clone(),
                            cancel_requested: false,
                        },
                        input: response.input.clone(),
                        request: response.request.clone(),
                        worker: None,
                        lease_expires_at: None,
                        attempts: 0,
                        events,
                    },
                );
                if response.status == ResponseStatus::Queued {
                    state.queued.insert(response.id.clone());
                }
                if let Some(conversation) = &response.conversation_id
                    && is_terminal(response.status)
                {
                    state.append_to_conversation(conversation, &response.input);
                    state.append_to_conversation(conversation, output_items(&response.response));
                }
                Ok(())
            })
        })
    }

    fn update_response<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
        status: ResponseStatus,
        response: &'a Value,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            Ok(self.with(|state| {
                let Some(entry) = state.response_mut(access, id) else {
                    return false;
                };
                entry.stored.status = status;
                entry.stored.response = response.clone();
                let conversation = entry.stored.conversation_id.clone();
                if is_terminal(status) {
                    entry.worker = None;
                    entry.lease_expires_at = None;
                    if let Some(conversation) = conversation {
                        let input = entry.input.clone();
                        state.append_to_conversation(&conversation, &input);
                        state.append_to_conversation(&conversation, output_items(response));
                    }
                }
                if status == ResponseStatus::Queued {
                    state.queued.insert(id.to_string());
                }
                true
            }))
        })
    }

    fn get_response<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredResponse>>> {
        Box::pin(async move { Ok(self.with(|state| state.response(access, id).map(stored_view))) })
    }

    fn delete_response<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            Ok(self.with(|state| {
                state.response(access, id).is_some() && state.responses.remove(id).is_some()
            }))
        })
    }

    fn list_responses<'a>(
        &'a self,
        access: &'a Access,
        page: &'a Page,
    ) -> BoxFuture<'a, Result<ListPage<StoredResponse>>> {
        Box::pin(async move {
            Ok(self.with(|state| {
                let (low, high) = match page.order {
                    Order::Asc => (&page.after, &page.before),
                    Order::Desc => (&page.before, &page.after),
                };
                let visible = state.responses.values().filter(|e| {
                    access.allows(&e.stored.owner)
                        && low.as_ref().is_none_or(|l| e.stored.id > *l)
                        && high.as_ref().is_none_or(|h| e.stored.id < *h)
                });
                let data: Vec<StoredResponse> = match page.order {
                    Order::Asc => visible.take(page.limit + 1).map(stored_view).collect(),
                    Order::Desc => visible.rev().take(page.limit + 1).map(stored_view).collect(),
                };
                page_of(data, page.limit)
            }))
        })
    }

    fn list_input_items<'a>(
        &'a self,
        access: &'a Access,
        response_id: &'a str,
        page: &'a Page,
    ) -> BoxFuture<'a, Result<Option<ListPage<Value>>>> {
        Box::pin(async move {
            Ok(self.with(|state| {
                state.response(access, response_id).map(|e| page_by_position(&e.input, page))
            }))
        })
    }

    fn response_items<'a>(
        &'a self,
        access: &'a Access,
        response_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<Value>>>> {
        Box::pin(async move {
            Ok(self.with(|state| {
                state.response(access, response_id).map(|e| {
                    let mut items = e.input.clone();
                    items.extend(output_items(&e.stored.response).iter().cloned());
                    items
                })
            }))
        })
    }

    fn find_items<'a>(
        &'a self,
        access: &'a Access,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Value>>> {
        Box::pin(async move {
            Ok(self.with(|state| {
                let mut found: Vec<Value> = Vec::new();
                let responses = state.responses.values().filter(|e| access.allows(&e.stored.owner));
                let response_items = responses
                    .flat_map(|e| e.input.iter().chain(output_items(&e.stored.response).iter()));
                let conversations =
                    state.conversations.values().filter(|c| access.allows(&c.conversation.owner));
                let conversation_items = conversations.flat_map(|c| c.items.iter());
                for item in response_items.chain(conversation_items) {
                    let id = item_id(item);
                    if ids.iter().any(|wanted| wanted == id)
                        && !found.iter().any(|f| item_id(f) == id)
                    {
                        found.push(item.clone());
                    }
                }
                found
            }))
        })
    }

    fn claim_queued<'a>(
        &'a self,
        worker: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Option<Claim>>> {
        Box::pin(async move {
            Ok(self.with(|state| {
                let entry = loop {
                    let id = state.queued.pop_first()?;
                    if let Some(entry) = state.responses.get_mut(&id)
                        && entry.stored.status == ResponseStatus::Queued
                    {
                        break entry;
                    }
                };
                let lease_expires_at = now_millis() + lease.as_millis() as i64;
                entry.stored.status = ResponseStatus::InProgress;
                entry.worker = Some(worker.to_string());
                entry.lease_expires_at = Some(lease_expires_at);
                entry.attempts += 1;
                Some(Claim {
                    id: entry.stored.id.clone(),
                    owner: entry.stored.owner.clone(),
                    request: entry.request.clone().unwrap_or(Value::Null),
                    attempts: entry.attempts,
                    lease_expires_at,
                })
            }))
        })
    }

    fn heartbeat<'a>(
        &'a self,
        id: &'a str,
        worker: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            Ok(self.with(|state| match state.responses.get_mut(id) {
                Some(e)
                    if e.stored.status == ResponseStatus::InProgress
                        && e.worker.as_deref() == Some(worker) =>
                {
                    e.lease_expires_at = Some(now_millis() + lease.as_millis() as i64);
                    true
                }
                _ => false,
            }))
        })
    }

    fn expired_leases(&self, limit: usize) -> BoxFuture<'_, Result<Vec<ExpiredLease>>> {
        Box::pin(async move {
            let now = now_millis();
            Ok(self.with(|state| {
                let mut expired: Vec<(i64, ExpiredLease)> = state
                    .responses
                    .values()
                    .filter(|e| e.stored.status == ResponseStatus::InProgress)
                    .filter_map(|e| {
                        let until = e.lease_expires_at.filter(|t| *t < now)?;
                        Some((
                            until,
                            ExpiredLease {
                                id: e.stored.id.clone(),
                                owner: e.stored.owner.clone(),
                                worker: e.worker.clone()?,
                                attempts: e.attempts,
                            },
                        ))
                    })
                    .collect();
                expired.sort_by_key(|(until, _)| *until);
                expired.into_iter().take(limit).map(|(_, e)| e).collect()
            }))
        })
    }

    fn requeue<'a>(&'a self, id: &'a str, worker: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let now = now_millis();
            Ok(self.with(|state| match state.responses.get_mut(id) {
                Some(e)
                    if e.stored.status == ResponseStatus::InProgress
                        && e.worker.as_deref() == Some(worker)
                        && e.lease_expires_at.is_some_and(|t| t < now) =>
                {
                    e.stored.status = ResponseStatus::Queued;
                    e.worker = None;
                    e.lease_expires_at = None;
                    state.queued.insert(id.to_string());
                    true
                }
                _ => false,
            }))
        })
    }

    fn append_events<'a>(
        &'a self,
        owner: &'a Owner,
        response_id: &'a str,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.with(|state| {
                if let Some(entry) = state.response_mut(&Access::owner(owner), response_id) {
                    for event in events {
                        entry
                            .events
                            .entry(event.sequence_number)
                            .or_insert_with(|| event.event.clone());
                    }
                }
            });
            Ok(())
        })
    }

    fn events_after<'a>(
        &'a self,
        access: &'a Access,
        response_id: &'a str,
        after: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredEvent>>> {
        Box::pin(async move {
            Ok(self.with(|state| {
                let Some(entry) = state.response(access, response_id) else {
                    return Vec::new();
                };
                let from = after.map_or(0, |a| a.saturating_add(1));
                entry
                    .events
                    .range(from..)
                    .take(limit)
                    .map(|(n, e)| StoredEvent { sequence_number: *n, event: e.clone() })
                    .collect()
            }))
        })
    }

    fn request_cancel<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredResponse>>> {
        Box::pin(async move {
            Ok(self.with(|state| {
                let entry = state.response_mut(access, id)?;
                entry.stored.cancel_requested = true;
                Some(stored_view(entry))
            }))
        })
    }

    fn cancel_requested<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            Ok(self
                .with(|state| state.responses.get(id).is_some_and(|e| e.stored.cancel_requested)))
        })
    }

    fn create_conversation<'a>(
        &'a self,
        conversation: &'a Conversation,
        items: &'a [Value],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.with(|state| {
                let mut list = Vec::new();
                append_new(&mut list, items);
                state.conversations.insert(
                    conversation.id.clone(),
                    ConversationEntry { conversation: conversation.clone(), items: list },
                );
            });
            Ok(())
        })
    }

    fn get_conversation<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Conversation>>> {
        Box::pin(async move {
            Ok(self
                .with(|state| state.conversation_mut(access, id).map(|c| c.conversation.clone())))
        })
    }

    fn update_conversation<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
        metadata: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Result<Option<Conversation>>> {
        Box::pin(async move {
            Ok(self.with(|state| {
                let entry = state.conversation_mut(access, id)?;
                entry.conversation.metadata = metadata.clone();
                Some(entry.conversation.clone())
            }))
        })
    }

    fn delete_conversation<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            Ok(self.with(|state| {
                state.conversation_mut(access, id).is_some()
                    && state.conversations.remove(id).is_some()
            }))
        })
    }

    fn append_conversation_items<'a>(
        &'a self,
        access: &'a Access,
        conversation_id: &'a str,
        items: &'a [Value],
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            Ok(self.with(|state| match state.conversation_mut(access, conversation_id) {
                Some(entry) => {
                    append_new(&mut entry.items, items);
                    true
                }
                None => false,
            }))
        })
    }

    fn list_conversation_items<'a>(
        &'a self,
        access: &'a Access,
        conversation_id: &'a str,
        page: &'a Page,
    ) -> BoxFuture<'a, Result<Option<ListPage<Value>>>> {
        Box::pin(async move {
            Ok(self.with(|state| {
                state
                    .conversation_mut(access, conversation_id)
                    .map(|entry| page_by_position(&entry.items, page))
            }))
        })
    }

    fn get_conversation_item<'a>(
        &'a self,
        access: &'a Access,
        conversation_id: &'a str,
        item_id_wanted: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>>> {
        Box::pin(async move {
            Ok(self.with(|state| {
                let entry = state.conversation_mut(access, conversation_id)?;
                entry.items.iter().find(|i| item_id(i) == item_id_wanted).cloned()
            }))
        })
    }

    fn delete_conversation_item<'a>(
        &'a self,
        access: &'a Access,
        conversation_id: &'a str,
        item_id_wanted: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            Ok(self.with(|state| {
                let Some(entry) = state.conversation_mut(access, conversation_id) else {
                    return false;
                };
                let before = entry.items.len();
                entry.items.retain(|i| item_id(i) != item_id_wanted);
                entry.items.len() != before
            }))
        })
    }

    // === containers ===

    fn create_container<'a>(&'a self, container: &'a StoredContainer) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.with(|state| state.containers.insert(container.id.clone(), container.clone()));
            Ok(())
        })
    }

    fn get_container<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredContainer>>> {
        Box::pin(async move {
            Ok(self.with(|state| {
                state.containers.get(id).filter(|c| access.allows(&c.owner)).cloned()
            }))
        })
    }

    fn list_containers<'a>(
        &'a self,
        access: &'a Access,
        page: &'a Page,
        name: Option<&'a str>,
    ) -> BoxFuture<'a, Result<ListPage<StoredContainer>>> {
        Box::pin(async move {
            Ok(self.with(|state| {
                let visible: Vec<StoredContainer> = state
                    .containers
                    .values()
                    .filter(|c| access.allows(&c.owner) && name.is_none_or(|n| c.name == n))
                    .cloned()
                    .collect();
                page_by_key(&visible, |c| c.id.as_str(), page)
            }))
        })
    }

    fn touch_container<'a>(
        &'a self,
        id: &'a str,
        last_active_at: i64,
        claim_expires_at: i64,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            Ok(self.with(|state| match state.containers.get_mut(id) {
                Some(c) if c.status == ContainerStatus::Running => {
                    c.last_active_at = c.last_active_at.max(last_active_at);
                    c.sandbox.claim_expires_at = claim_expires_at;
                    true
                }
                _ => false,
            }))
        })
    }

    fn idle_containers(
        &self,
        now: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredContainer>>> {
        Box::pin(async move {
            Ok(self.with(|state| {
                let mut idle: Vec<StoredContainer> = state
                    .containers
                    .values()
                    .filter(|c| idle_past_expiry(c, now))
                    .cloned()
                    .collect();
                idle.sort_by_key(|c| c.last_active_at);
                idle.truncate(limit);
                idle
            }))
        })
    }

    fn expire_container<'a>(&'a self, id: &'a str, now: i64) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            Ok(self.with(|state| match state.containers.get_mut(id) {
                Some(c) if idle_past_expiry(c, now) => {
                    c.status = ContainerStatus::Expired;
                    true
                }
                _ => false,
            }))
        })
    }

    fn delete_container<'a>(
        &'a self,
        access: &'a Access,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            Ok(self.with(|state| {
                if !state.containers.get(id).is_some_and(|c| access.allows(&c.owner)) {
                    return false;
                }
                state.container_files.remove(id);
                state.containers.remove(id).is_some()
            }))
        })
    }

    fn put_container_file<'a>(
        &'a self,
        file: &'a StoredContainerFile,
    ) -> BoxFuture<'a, Result<StoredContainerFile>> {
        Box::pin(async move {
            Ok(self.with(|state| {
                let files = state.container_files.entry(file.container_id.clone()).or_default();
                match files.iter_mut().find(|f| f.id == file.id) {
                    Some(existing) => {
                        existing.bytes = file.bytes;
                        existing.source = file.source.clone();
                        existing.clone()
                    }
                    None => {
                        files.push(file.clone());
                        file.clone()
                    }
                }
            }))
        })
    }

    fn list_container_files<'a>(
        &'a self,
        access: &'a Access,
        container_id: &'a str,
        page: &'a Page,
    ) -> BoxFuture<'a, Result<ListPage<StoredContainerFile>>> {
        Box::pin(async move {
            Ok(self.with(|state| {
                let visible: Vec<StoredContainerFile> = state
                    .container_files
                    .get(container_id)
                    .map(|files| {
                        files.iter().filter(|f| access.allows(&f.owner)).cloned().collect()
                    })
                    .unwrap_or_default();
                page_by_key(&visible, |f| f.id.as_str(), page)
            }))
        })
    }

    fn get_container_file<'a>(
        &'a self,
        access: &'a Access,
        container_id: &'a str,
        file_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredContainerFile>>> {
        Box::pin(async move {
            Ok(self.with(|state| {
                state
                    .container_files
                    .get(container_id)?
                    .iter()
                    .find(|f| f.id == file_id && access.allows(&f.owner))
                    .cloned()
            }))
        })
    }

    fn delete_container_file<'a>(
        &'a self,
        access: &'a Access,
        container_id: &'a str,
        file_id: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            Ok(self.with(|state| {
                let Some(files) = state.container_files.get_mut(container_id) else {
                    return false;
                };
                let before = files.len();
                files.retain(|f| !(f.id == file_id && access.allows(&f.owner)));
                files.len() != before
            }))
        })
    }
}
