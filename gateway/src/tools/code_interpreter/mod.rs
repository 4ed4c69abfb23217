//! The sandbox-backed code interpreter: the `python` tool the model calls.
//!
//! # Layout
//! One call flows top to bottom:
//! - [`containers`]: resolve the call's `cntr_...` container for its owner (`auto`: the
//!   response chain's, else a new one), serialize executions per container.
//! - [`sandbox`]: a new container claims a sandbox from the pool manager ([`sandbox::PoolClient`],
//!   mTLS to the manager's SPIFFE ID, the container id as `session_key`) and opens a session on
//!   its agent ([`sandbox::AgentClient`], mTLS to exactly the SPIFFE ID the claim named, which
//!   must also match `agent_spiffe_ids`); the code runs there.
//! - [`output`]: the agent's `ExecuteResult` becomes `logs`/`image` outputs, files written,
//!   the model's text and a typed failure.
//! - [`config`]: the `tools.code_interpreter` section.
//!
//! Containers are records in the store, so any gateway replica can use one another replica
//! created ([`containers`]); they also back the containers API (`api::containers`). Containers
//! idle past their expiry (`idle_timeout` unless the API set one) are reaped
//! ([`CodeInterpreter::run_reaper`]): the agent session is deleted and the claim released.

pub mod config;
pub mod containers;
pub mod output;
pub mod sandbox;

use std::sync::Arc;

use antwort_common::agent_api::ExecStatus;
use antwort_common::identity::{PeerPolicy, SharedSource};
use antwort_common::pool_api::Claim;

use self::config::{CodeInterpreterConfig, Limits};
use self::containers::{Container, Containers};
use self::sandbox::{InterruptOnDrop, PoolClient};
use crate::error::Error;
use crate::openresponses::code_interpreter::{
    self as wire, CallOutput, CallStatus, CodeInterpreterCall, Naming,
};
use crate::tools::{
    BoxFuture, ContainerBinding, ToolCall, ToolContext, ToolExecutor, ToolFailure, ToolItem,
    ToolOutcome, ToolProgress,
};

/// Where sandboxes come from.
enum Sandboxes {
    /// Production: claims from the pool manager.
    Pool(PoolClient),
    /// One agent given directly, for running without a pool manager (tests of the agent path,
    /// a developer's single agent). Every container gets its own session on it.
    Static(Claim),
}

/// The code interpreter executor. Cheap to share (`Arc`); the reaper runs on its own task.
pub struct CodeInterpreter {
    source: SharedSource,
    sandboxes: Sandboxes,
    agents: PeerPolicy,
    limits: Limits,
    naming: Naming,
    /// Whether streamed responses get live output events (`stream_output`).
    stream_output: bool,
    containers: Containers,
    /// Where containers and their files are recorded (see [`containers`]).
    store: Arc<dyn crate::store::Store>,
}

impl CodeInterpreter {
    /// From config: starts the identity source and the pool manager client.
    pub fn from_config(config: &CodeInterpreterConfig) -> Result<Self, Error> {
        config.validate().map_err(Error::Internal)?;
        let source = config
            .identity
            .start()
            .map_err(|e| Error::Internal(format!("`tools.code_interpreter.identity`: {e}")))?;
        let limits = config.limits();
        let agents = config.agent_spiffe_ids.clone();
        if let Some(agent) = &config.agent {
            let claim = Claim {
                claim_id: "static".into(),
                pool: config.pool.clone(),
                agent_endpoint: agent.url.clone(),
                agent_spiffe_id: agent.spiffe_id.clone(),
                expires_at: u64::MAX,
                reused: false,
            };
            return Ok(Self::with_static_agent(source, claim, agents, limits, config.naming)
                .with_stream_output(config.stream_output));
        }
        let pool_manager = config.pool_manager.as_ref().ok_or_else(|| {
            Error::Internal("`tools.code_interpreter`: no pool_manager or agent".into())
        })?;
        let pool = PoolClient::new(
            source.clone(),
            &pool_manager.url,
            &pool_manager.spiffe_id,
            &config.pool,
            limits.request_timeout,
        )
        .map_err(|e| Error::Internal(format!("`tools.code_interpreter.pool_manager`: {e}")))?
        .with_pools_by_memory_limit(config.pools_by_memory_limit.clone());
        Ok(Self::with_pool(source, pool, agents, limits, config.naming)
            .with_stream_output(config.stream_output))
    }

    /// Claims through `pool`.
    pub fn with_pool(
        source: SharedSource,
        pool: PoolClient,
        agents: PeerPolicy,
        limits: Limits,
        naming: Naming,
    ) -> Self {
        CodeInterpreter {
            source,
            sandboxes: Sandboxes::Pool(pool),
            agents,
            limits,
            naming,
            stream_output: false,
            containers: Containers::default(),
            store: Arc::new(crate::store::memory::MemoryStore::new()),
        }
    }

    /// Uses the one agent `claim` names, without a pool manager.
    pub fn with_static_agent(
        source: SharedSource,
        claim: Claim,
        agents: PeerPolicy,
        limits: Limits,
        naming: Naming,
    ) -> Self {
        CodeInterpreter {
            source,
            sandboxes: Sandboxes::Static(claim),
            agents,
            limits,
            naming,
            stream_output: false,
            containers: Containers::default(),
            store: Arc::new(crate::store::memory::MemoryStore::new()),
        }
    }

    /// Streams live output of running code to streamed responses that include outputs.
    pub fn with_stream_output(mut self, on: bool) -> Self {
        self.stream_output = on;
        self
    }

    /// Records containers in `store` (shared with other gateway replicas) instead of a
    /// private in-memory one.
    pub fn with_store(mut self, store: Arc<dyn crate::store::Store>) -> Self {
        self.store = store;
        self
    }

    pub fn naming(&self) -> Naming {
        self.naming
    }

    pub fn stream_output(&self) -> bool {
        self.stream_output
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn containers(&self) -> &Containers {
        &self.containers
    }

    /// Renews a pooled claim when it was last renewed `claim_renew` ago or more (on use, and
    /// from the reaper while the container is kept).
    async fn keep_claim(&self, container: &Container) -> Result<(), ToolFailure> {
        let Sandboxes::Pool(pool) = &self.sandboxes else { return Ok(()) };
        let claim = container.claim();
        let now = crate::ids::unix_now().max(0) as u64;
        // Due by age, or early when the claim would lapse before the next due renewal (the
        // pool manager may grant less than asked).
        let lapses_soon =
            claim.expires_at.saturating_sub(now) <= 2 * self.limits.claim_renew.as_secs();
        if container.claim_age() < self.limits.claim_renew && !lapses_soon {
            return Ok(());
        }
        match pool.renew(&claim.claim_id, self.claim_ttl_for(container.idle)).await? {
            Some(renewed) => {
                container.set_claim(renewed);
                Ok(())
            }
            None => {
                // The pool manager took the sandbox back: the container is over.
                self.force_expire(container).await;
                Err(ToolFailure::ContainerNotFound { id: container.id.clone() })
            }
        }
    }

    /// Runs `code` for the context's owner and container. Every path ends in an outcome.
    pub async fn run_code(&self, ctx: &ToolContext, code: String, item_id: &str) -> ToolOutcome {
        let container = match self
            .resolve_container(&ctx.owner, &ctx.container, ctx.memory_limit.as_deref())
            .await
        {
            Ok(container) => container,
            Err(failure) => {
                let container_id = match &ctx.container {
                    ContainerBinding::Explicit(id) => id.clone(),
                    ContainerBinding::Auto { current } => current.clone().unwrap_or_default(),
                };
                return self.failed(item_id, code, container_id, failure);
            }
        };
        let _running = tokio::select! {
            guard = container.exec.lock() => guard,
            () = ctx.cancel.cancelled() => {
                return self.failed(item_id, code, container.id.clone(), ToolFailure::Cancelled);
            }
        };
        container.touch();
        if let Err(failure) = self.keep_claim(&container).await {
            return self.failed(item_id, code, container.id.clone(), failure);
        }
        let mut interrupt = InterruptOnDrop {
            agent: container.agent.clone(),
            session: container.session_id.clone(),
            armed: true,
        };
        let execution = async {
            match &ctx.progress {
                Some(progress) => {
                    let on_output = |stream: &'static str, text: String| {
                        let piece = ToolProgress { item_id: item_id.to_string(), stream, text };
                        // The receiver goes away only with the response itself.
                        let _ = progress.send(piece);
                    };
                    container
                        .agent
                        .execute_streaming(
                            &container.session_id,
                            &code,
                            self.limits.exec_timeout,
                            on_output,
                        )
                        .await
                }
                None => {
                    container
                        .agent
                        .execute(&container.session_id, &code, self.limits.exec_timeout)
                        .await
                }
            }
        };
        let executed = tokio::select! {
            result = execution => result,
            () = ctx.cancel.cancelled() => {
                interrupt.armed = false;
                container.agent.interrupt(&container.session_id).await;
                container.touch();
                return self.failed(item_id, code, container.id.clone(), ToolFailure::Cancelled);
            }
        };
        interrupt.armed = false;
        container.touch();
        let result = match executed {
            Ok(result) => result,
            Err(failure) => return self.failed(item_id, code, container.id.clone(), failure),
        };
        let status = result.status;
        let mapped = output::map_result(result, &self.limits, &container);
        if matches!(status, ExecStatus::Killed | ExecStatus::OutOfMemory | ExecStatus::Timeout)
            && let Err(failure) = container.agent.restart_if_dead(&container.session_id).await
        {
            tracing::warn!(container = %container.id, ?failure, "could not restart a dead session");
        }
        ToolOutcome {
            output_for_model: mapped.model_text,
            item: ToolItem::CodeInterpreter(CodeInterpreterCall {
                id: item_id.to_string(),
                status: mapped.status,
                code,
                container_id: container.id.clone(),
                outputs: mapped.outputs,
            }),
            files: mapped.files,
            failure: mapped.failure,
            container_id: Some(container.id.clone()),
        }
    }

    fn failed(
        &self,
        item_id: &str,
        code: String,
        container_id: String,
        failure: ToolFailure,
    ) -> ToolOutcome {
        // Ran partly (cancelled mid-way) is incomplete; never ran is failed.
        let status = match failure {
            ToolFailure::Cancelled => CallStatus::Incomplete,
            _ => CallStatus::Failed,
        };
        tracing::info!(code = failure.code(), container = %container_id, "code_interpreter call failed");
        let note = output::failure_note(&failure);
        ToolOutcome {
            item: ToolItem::CodeInterpreter(CodeInterpreterCall {
                id: item_id.to_string(),
                status,
                code,
                container_id: container_id.clone(),
                outputs: vec![CallOutput::Logs { logs: note.clone() }],
            }),
            output_for_model: note,
            files: Vec::new(),
            failure: Some(failure),
            container_id: (!container_id.is_empty()).then_some(container_id),
        }
    }
}

impl ToolExecutor for CodeInterpreter {
    fn name(&self) -> &'static str {
        wire::PYTHON_TOOL_NAME
    }

    fn definition(&self) -> (&'static str, serde_json::Value) {
        let (_, description, schema) = wire::python_tool();
        (description, schema)
    }

    fn execute<'a>(
        &'a self,
        ctx: &'a ToolContext,
        call: &'a ToolCall,
        item_id: &'a str,
    ) -> BoxFuture<'a, ToolOutcome> {
        Box::pin(async move {
            match wire::code_from_arguments(&call.arguments) {
                Ok(code) => self.run_code(ctx, code, item_id).await,
                Err(reason) => {
                    let container_id = match &ctx.container {
                        ContainerBinding::Explicit(id) => id.clone(),
                        ContainerBinding::Auto { current } => current.clone().unwrap_or_default(),
                    };
                    self.failed(
                        item_id,
                        call.arguments.clone(),
                        container_id,
                        ToolFailure::InvalidArguments { reason },
                    )
                }
            }
        })
    }
}
