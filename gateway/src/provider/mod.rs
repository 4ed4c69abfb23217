//! PROVIDER: the boundary between the engine and model backends.
//!
//! A [`Provider`] takes a validated OpenResponses request and yields provider-neutral
//! [`ModelEvent`]s. Today's implementation speaks OpenAI Chat Completions ([`chat_completions`]),
//! which vLLM, LiteLLM and Ollama all serve; a Responses-API backend would be the second one.
//! [`Router`] picks the backend for a model name from config.

pub mod chat_completions;
pub mod chat_wire;
mod translate;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;

use crate::error::Result;
use crate::openresponses::request::CreateResponse;
use crate::openresponses::response::{LogProb, Usage};

/// What a model produced, independent of the backend's wire format.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelEvent {
    ReasoningDelta(String),
    TextDelta {
        text: String,
        logprobs: Vec<LogProb>,
    },
    RefusalDelta(String),
    /// A fragment of a tool call. The first fragment of a call carries its `id` and `name`.
    ToolCallDelta {
        index: u32,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    },
    Finish(FinishReason),
    Usage(Usage),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

impl FinishReason {
    pub fn from_wire(reason: &str) -> Self {
        match reason {
            "length" => Self::Length,
            "tool_calls" | "function_call" => Self::ToolCalls,
            "content_filter" => Self::ContentFilter,
            _ => Self::Stop,
        }
    }
}

/// Batches of events in the order the backend produced them. An `Err` ends the stream.
pub type ModelStream = Pin<Box<dyn Stream<Item = Result<Vec<ModelEvent>>> + Send>>;

/// A model backend.
pub trait Provider: Send + Sync {
    /// Sends `request` for `upstream_model` and resolves once the backend accepted it (its
    /// response headers arrived), after bounded retries. With `stream: false` the stream yields
    /// the whole answer as one batch.
    fn start<'a>(
        &'a self,
        request: &'a CreateResponse,
        upstream_model: &'a str,
        stream: bool,
    ) -> Pin<Box<dyn Future<Output = Result<ModelStream>> + Send + 'a>>;

    /// Whether the backend answers at all (for `/readyz`).
    fn check_ready(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;

    /// The backend's name in config, for logs and metrics.
    fn name(&self) -> &str;
}

/// Where requests for one model name go.
#[derive(Clone)]
pub struct Route {
    pub provider: Arc<dyn Provider>,
    pub upstream_model: String,
}

/// Model name -> backend, with an optional default backend for unlisted names.
#[derive(Clone, Default)]
pub struct Router {
    models: HashMap<String, Route>,
    /// Model names in config order, for `GET /v1/models`.
    listed: Vec<String>,
    default: Option<Arc<dyn Provider>>,
    providers: Vec<Arc<dyn Provider>>,
}

impl Router {
    pub fn new(default: Option<Arc<dyn Provider>>, providers: Vec<Arc<dyn Provider>>) -> Self {
        Self { models: HashMap::new(), listed: Vec::new(), default, providers }
    }

    pub fn add_model(&mut self, name: String, route: Route) {
        self.listed.push(name.clone());
        self.models.insert(name, route);
    }

    /// The route for `model`, or `None` when no backend serves it.
    pub fn route(&self, model: &str) -> Option<Route> {
        if let Some(route) = self.models.get(model) {
            return Some(route.clone());
        }
        self.default
            .as_ref()
            .map(|provider| Route { provider: provider.clone(), upstream_model: model.to_string() })
    }

    /// Configured model names, in config order.
    pub fn model_names(&self) -> &[String] {
        &self.listed
    }

    pub fn providers(&self) -> &[Arc<dyn Provider>] {
        &self.providers
    }
}
