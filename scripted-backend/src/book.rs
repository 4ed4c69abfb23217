//! Which turn answers a request: the FIFO queue first, then a `SCRIPT:` directive in the
//! messages, then the script for the model, then the fallback (echo unless replaced).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::error::{Error, Result};
use crate::request::ChatRequest;
use crate::script::{Script, ToolCall, Turn};

/// The turn chosen for one request.
pub(crate) struct Pick {
    pub turn: Arc<Turn>,
    /// The turn's failure applies to this attempt.
    pub failing: bool,
}

pub(crate) struct Book {
    queue: Mutex<VecDeque<Sequence>>,
    /// Length of `queue`, read without the lock on the hot path.
    queued: AtomicUsize,
    models: RwLock<HashMap<String, Arc<Sequence>>>,
    fallback: RwLock<Arc<Sequence>>,
    /// Extra names for `GET /v1/models`.
    model_names: RwLock<Vec<String>>,
    /// Attempts per (directive text, turn), for `fail_times` in directives.
    directive_attempts: Mutex<HashMap<(String, usize), u32>>,
}

/// A script being played: the turns and where the next request is.
struct Sequence {
    turns: Vec<Arc<Turn>>,
    /// `None` for a single turn that never fails partially: nothing to count, no lock.
    cursor: Option<Mutex<Cursor>>,
}

#[derive(Default)]
struct Cursor {
    turn: usize,
    attempts: u32,
}

/// Where a sequence stands after serving a request.
#[derive(PartialEq)]
enum After {
    More,
    Exhausted,
}

impl Book {
    pub fn new() -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            queued: AtomicUsize::new(0),
            models: RwLock::new(HashMap::new()),
            fallback: RwLock::new(Arc::new(Sequence::new(Script::echo()))),
            model_names: RwLock::new(Vec::new()),
            directive_attempts: Mutex::new(HashMap::new()),
        }
    }

    pub fn enqueue(&self, script: Script) {
        if script.turns.is_empty() {
            return;
        }
        let mut queue = lock(&self.queue);
        queue.push_back(Sequence::new(script));
        self.queued.store(queue.len(), Ordering::Release);
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    pub fn on_model(&self, model: String, script: Script) {
        let sequence = Arc::new(Sequence::new(script));
        self.models
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(model, sequence);
    }

    pub fn set_fallback(&self, script: Script) {
        *self.fallback.write().unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Arc::new(Sequence::new(script));
    }

    pub fn add_model_name(&self, name: String) {
        self.model_names.write().unwrap_or_else(|poisoned| poisoned.into_inner()).push(name);
    }

    /// Names for `GET /v1/models`: the scripted models and the extra names, sorted.
    pub fn model_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .models
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .keys()
            .cloned()
            .collect();
        names.extend(
            self.model_names
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .iter()
                .cloned(),
        );
        names.sort();
        names.dedup();
        names
    }

    pub fn pick(&self, request: &ChatRequest<'_>) -> Result<Pick> {
        if self.queued.load(Ordering::Acquire) > 0 {
            let mut queue = lock(&self.queue);
            if let Some(sequence) = queue.front() {
                let (pick, after) = sequence.next(false);
                if after == After::Exhausted {
                    queue.pop_front();
                    self.queued.store(queue.len(), Ordering::Release);
                }
                return Ok(pick);
            }
        }
        if let Some(directive) = request.directive() {
            return self.pick_directive(directive, request);
        }
        let model = self
            .models
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(request.model)
            .cloned();
        let sequence = match model {
            Some(sequence) => sequence,
            None => self.fallback.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone(),
        };
        let pick = sequence.next(true).0;
        if pick.turn.is_echo()
            && !pick.failing
            && let Some((name, arguments)) = request.default_tool_call()
        {
            let call = ToolCall { id: None, name, arguments };
            let turn = Turn { tool_calls: vec![call], ..(*pick.turn).clone() };
            return Ok(Pick { turn: Arc::new(turn), failing: false });
        }
        Ok(pick)
    }

    /// A directive is stateless except for `fail_times`: its turn is the number of assistant
    /// messages so far, so a conversation replayed through a gateway walks the turns.
    fn pick_directive(&self, directive: &str, request: &ChatRequest<'_>) -> Result<Pick> {
        let script = Script::from_json(directive)
            .map_err(|error| Error::BadRequest(format!("bad SCRIPT: directive: {error}")))?;
        let Some(last) = script.turns.len().checked_sub(1) else {
            return Err(Error::BadRequest("SCRIPT: directive has no turns".to_owned()));
        };
        let index = request.assistant_turns().min(last);
        let turn = script.turns.into_iter().nth(index).expect("index is at most the last turn");
        let failing = match (&turn.failure, turn.fail_times) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(_), Some(times)) => {
                let mut attempts = lock(&self.directive_attempts);
                let attempts = attempts.entry((directive.to_owned(), index)).or_default();
                *attempts = attempts.saturating_add(1);
                *attempts <= times
            }
        };
        Ok(Pick { turn: Arc::new(turn), failing })
    }
}

impl Sequence {
    fn new(script: Script) -> Self {
        let mut turns: Vec<Arc<Turn>> = script.turns.into_iter().map(Arc::new).collect();
        if turns.is_empty() {
            turns.push(Arc::new(Turn::default()));
        }
        let stateless = turns.len() == 1 && turns[0].fail_times.is_none();
        Self { turns, cursor: (!stateless).then(|| Mutex::new(Cursor::default())) }
    }

    /// The pick for the next request. A turn is used up by its successful reply (or by any
    /// reply when it always fails); `stay_on_last` keeps replaying the last turn (per-model
    /// scripts) instead of reporting the sequence exhausted (queue entries).
    fn next(&self, stay_on_last: bool) -> (Pick, After) {
        let Some(cursor) = &self.cursor else {
            let turn = self.turns[0].clone();
            let failing = turn.failure.is_some();
            return (Pick { turn, failing }, After::Exhausted);
        };
        let mut cursor = lock(cursor);
        let turn = self.turns[cursor.turn].clone();
        let failing = match (&turn.failure, turn.fail_times) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(_), Some(times)) => cursor.attempts < times,
        };
        cursor.attempts = cursor.attempts.saturating_add(1);
        let used_up = !failing || turn.fail_times.is_none();
        let is_last = cursor.turn + 1 == self.turns.len();
        let after = match (used_up, is_last) {
            (false, _) => After::More,
            (true, false) => {
                cursor.turn += 1;
                cursor.attempts = 0;
                After::More
            }
            (true, true) if stay_on_last => After::More,
            (true, true) => After::Exhausted,
        };
        (Pick { turn, failing }, after)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
