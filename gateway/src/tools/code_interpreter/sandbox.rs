//! The two mTLS peers of an execution: the pool manager (claim, renew, release) and the claimed
//! sandbox's agent (sessions, execute, interrupt). Every failure here is a [`ToolFailure`]:
//! the executor hands it to the model as it is.

use std::time::Duration;

use antwort_common::agent_api::{
    CreateSessionRequest, EVENT_ERROR, EVENT_RESULT, EVENT_STDERR, EVENT_STDOUT, ExecuteRequest,
    ExecuteResult, FileInfo, FileList, OutputChunk, SESSIONS_PATH, SessionInfo, SessionState,
};
use antwort_common::error::ErrorEnvelope;
use antwort_common::identity::{PeerPolicy, SharedSource, SpiffeId, mtls_client_builder};
use antwort_common::pool_api::{CLAIMS_PATH, Claim, ClaimRequest, RenewRequest, codes};

use crate::tools::ToolFailure;

fn unavailable(what: &str, err: impl std::fmt::Display) -> ToolFailure {
    ToolFailure::SandboxUnavailable { reason: format!("{what}: {err}") }
}

/// reqwest hides the TLS cause a few levels down; the whole chain says e.g. that the peer's
/// SPIFFE ID was refused.
fn chain(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn error_of(response: reqwest::Response) -> (u16, Option<u64>, String, String) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let body = response.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorEnvelope>(&body) {
        Ok(envelope) => (status, retry_after, envelope.error.code, envelope.error.message),
        Err(_) => (status, retry_after, String::new(), body.chars().take(200).collect()),
    }
}

/// A refusal by the agent as the failure the model reads: `what: <status> <code>: <message>`.
async fn refused(what: &str, response: reqwest::Response) -> ToolFailure {
    let (status, _, code, message) = error_of(response).await;
    unavailable(what, format!("{status} {code}: {message}"))
}

// === pool manager ===

/// The claim API client: talks only to a server presenting the pool manager's SPIFFE ID.
#[derive(Clone)]
pub struct PoolClient {
    client: reqwest::Client,
    base: String,
    /// The pool claims come from unless a memory_limit picks another.
    pool: String,
    /// `tools.code_interpreter.pools_by_memory_limit`.
    pools_by_memory_limit: std::collections::BTreeMap<String, String>,
}

impl PoolClient {
    pub fn new(
        source: SharedSource,
        url: &str,
        spiffe_id: &str,
        pool: &str,
        timeout: Duration,
    ) -> Result<Self, String> {
        let policy = PeerPolicy::exact([spiffe_id]).map_err(|e| e.to_string())?;
        let client = mtls_client_builder(source, policy)
            .map_err(|e| e.to_string())?
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(PoolClient {
            client,
            base: url.trim_end_matches('/').to_string(),
            pool: pool.into(),
            pools_by_memory_limit: Default::default(),
        })
    }

    /// Claims for a container asking for a memory_limit come from the pool mapped to it.
    pub fn with_pools_by_memory_limit(
        mut self,
        pools: std::collections::BTreeMap<String, String>,
    ) -> Self {
        self.pools_by_memory_limit = pools;
        self
    }

    /// The pool a container asking for `memory_limit` is claimed from; `Err` says why none is.
    /// Without a mapping the one pool serves every memory_limit.
    pub fn pool_for(&self, memory_limit: Option<&str>) -> Result<&str, String> {
        match memory_limit {
            Some(limit) if !self.pools_by_memory_limit.is_empty() => {
                self.pools_by_memory_limit.get(limit).map(String::as_str).ok_or_else(|| {
                    let offered: Vec<&str> =
                        self.pools_by_memory_limit.keys().map(String::as_str).collect();
                    format!(
                        "memory_limit '{limit}' is not offered here; offered: {}.",
                        offered.join(", ")
                    )
                })
            }
            _ => Ok(&self.pool),
        }
    }

    /// Claims a sandbox for `session_key` (the container id: claiming again while the claim
    /// lives returns the same sandbox).
    pub async fn claim(
        &self,
        pool: &str,
        session_key: &str,
        ttl: Duration,
    ) -> Result<Claim, ToolFailure> {
        let request = ClaimRequest {
            pool: pool.to_string(),
            session_key: session_key.into(),
            ttl_secs: Some(ttl.as_secs().max(1)),
        };
        let response = self
            .client
            .post(format!("{}{CLAIMS_PATH}", self.base))
            .json(&request)
            .send()
            .await
            .map_err(|e| unavailable("pool manager unreachable", chain(&e)))?;
        if response.status().is_success() {
            return response.json().await.map_err(|e| unavailable("pool manager answer", e));
        }
        let (status, retry_after, code, message) = error_of(response).await;
        Err(match code.as_str() {
            codes::POOL_EXHAUSTED | codes::POOL_STARTING => {
                ToolFailure::PoolExhausted { retry_after_secs: retry_after.unwrap_or(5) }
            }
            _ => unavailable("claim refused", format!("{status} {code}: {message}")),
        })
    }

    /// Extends a claim; `Ok(None)` when the manager no longer knows it.
    pub async fn renew(&self, claim_id: &str, ttl: Duration) -> Result<Option<Claim>, ToolFailure> {
        let response = self
            .client
            .post(format!("{}{CLAIMS_PATH}/{claim_id}/renew", self.base))
            .json(&RenewRequest { ttl_secs: Some(ttl.as_secs().max(1)) })
            .send()
            .await
            .map_err(|e| unavailable("pool manager unreachable", chain(&e)))?;
        if response.status().is_success() {
            return response.json().await.map(Some).map_err(|e| unavailable("renew answer", e));
        }
        let (status, _, code, message) = error_of(response).await;
        if code == codes::CLAIM_NOT_FOUND {
            return Ok(None);
        }
        Err(unavailable("renew refused", format!("{status} {code}: {message}")))
    }

    /// Gives the sandbox back. A claim the manager no longer knows is already released.
    pub async fn release(&self, claim_id: &str) -> Result<(), String> {
        let response = self
            .client
            .delete(format!("{}{CLAIMS_PATH}/{claim_id}", self.base))
            .send()
            .await
            .map_err(|e| chain(&e))?;
        if response.status().is_success() || response.status() == 404 {
            Ok(())
        } else {
            let (status, _, code, message) = error_of(response).await;
            Err(format!("{status} {code}: {message}"))
        }
    }
}

// === agent ===

/// A client for one claimed agent: it accepts only the SPIFFE ID the claim named.
#[derive(Clone)]
pub struct AgentClient {
    client: reqwest::Client,
    base: String,
    request_timeout: Duration,
}

impl AgentClient {
    /// Refuses a claim whose agent ID is not one the config allows (a pool manager must not be
    /// able to send the gateway's traffic anywhere it likes).
    pub fn for_claim(
        source: SharedSource,
        allowed_agents: &PeerPolicy,
        claim: &Claim,
        request_timeout: Duration,
    ) -> Result<Self, ToolFailure> {
        let id = SpiffeId::new(&claim.agent_spiffe_id)
            .map_err(|e| unavailable("the claim's agent SPIFFE ID is invalid", e))?;
        if !allowed_agents.allows(&id) {
            return Err(unavailable(
                "refused",
                format!("agent SPIFFE ID {id} is not allowed by agent_spiffe_ids"),
            ));
        }
        let policy = PeerPolicy::exact([claim.agent_spiffe_id.as_str()])
            .map_err(|e| unavailable("agent policy", e))?;
        // No client-wide timeout: executions set their own, longer one.
        let client = mtls_client_builder(source, policy)
            .map_err(|e| unavailable("agent client", e))?
            .connect_timeout(request_timeout)
            .build()
            .map_err(|e| unavailable("agent client", e))?;
        Ok(AgentClient {
            client,
            base: claim.agent_endpoint.trim_end_matches('/').to_string(),
            request_timeout,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{SESSIONS_PATH}{path}", self.base)
    }

    pub async fn create_session(&self, label: &str) -> Result<SessionInfo, ToolFailure> {
        let response = self
            .client
            .post(self.url(""))
            .json(&CreateSessionRequest { label: Some(label.into()) })
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(|e| unavailable("agent unreachable", chain(&e)))?;
        if response.status().is_success() {
            return response.json().await.map_err(|e| unavailable("agent answer", e));
        }
        Err(refused("session refused", response).await)
    }

    /// `None` when the agent no longer has the session (restarted agent, reaped session).
    pub async fn session(&self, id: &str) -> Result<Option<SessionInfo>, ToolFailure> {
        let response = self
            .client
            .get(self.url(&format!("/{id}")))
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(|e| unavailable("agent unreachable", chain(&e)))?;
        if response.status() == 404 {
            return Ok(None);
        }
        if response.status().is_success() {
            return response.json().await.map(Some).map_err(|e| unavailable("agent answer", e));
        }
        Err(refused("session lookup", response).await)
    }

    /// Brings a dead interpreter back (state is lost).
    pub async fn restart_if_dead(&self, id: &str) -> Result<(), ToolFailure> {
        if let Some(info) = self.session(id).await?
            && info.state == SessionState::Dead
        {
            let response = self
                .client
                .post(self.url(&format!("/{id}/restart")))
                .timeout(self.request_timeout)
                .send()
                .await
                .map_err(|e| unavailable("agent unreachable", chain(&e)))?;
            if !response.status().is_success() {
                return Err(refused("restart", response).await);
            }
        }
        Ok(())
    }

    /// Runs `code`; the agent enforces `timeout` and answers 200 whatever the code did.
    pub async fn execute(
        &self,
        session: &str,
        code: &str,
        timeout: Duration,
    ) -> Result<ExecuteResult, ToolFailure> {
        let response = self.start_execution(session, "execute", code, timeout).await?;
        response.json().await.map_err(|e| unavailable("agent answer", e))
    }

    /// Like [`AgentClient::execute`], but hands each piece of stdout/stderr to `on_output`
    /// (`"stdout"` or `"stderr"`, text) while the code runs. The agent sends only output it
    /// keeps, so the pieces never exceed its output limit.
    pub async fn execute_streaming(
        &self,
        session: &str,
        code: &str,
        timeout: Duration,
        mut on_output: impl FnMut(&'static str, String) + Send,
    ) -> Result<ExecuteResult, ToolFailure> {
        use eventsource_stream::Eventsource;
        use futures::StreamExt;

        let response = self.start_execution(session, "execute/stream", code, timeout).await?;
        let mut events = response.bytes_stream().eventsource();
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| unavailable("agent stream", e))?;
            match event.event.as_str() {
                EVENT_STDOUT | EVENT_STDERR => {
                    let stream = if event.event == EVENT_STDOUT { "stdout" } else { "stderr" };
                    let chunk: OutputChunk = serde_json::from_str(&event.data)
                        .map_err(|e| unavailable("agent stream", e))?;
                    on_output(stream, chunk.text);
                }
                EVENT_RESULT => {
                    return serde_json::from_str(&event.data)
                        .map_err(|e| unavailable("agent answer", e));
                }
                EVENT_ERROR => {
                    let (code, message) = match serde_json::from_str::<ErrorEnvelope>(&event.data) {
                        Ok(envelope) => (envelope.error.code, envelope.error.message),
                        Err(_) => (String::new(), event.data.chars().take(200).collect()),
                    };
                    return Err(unavailable("execution failed", format!("{code}: {message}")));
                }
                // Comments and unknown events (a newer agent) carry nothing for us.
                _ => {}
            }
        }
        Err(unavailable("agent stream", "ended without a result"))
    }

    /// Posts an execution to `route` (`execute` or `execute/stream`) and returns the accepted
    /// response. An execution abandoned a moment ago (its response was cancelled) may still be
    /// winding down after its interrupt: the agent says `session_busy`, so try again shortly,
    /// for at most the request timeout.
    async fn start_execution(
        &self,
        session: &str,
        route: &str,
        code: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, ToolFailure> {
        let timeout_ms = timeout.as_millis().min(u64::MAX as u128) as u64;
        let busy_until = tokio::time::Instant::now() + self.request_timeout;
        let mut pause = Duration::from_millis(10);
        loop {
            let response = self
                .client
                .post(self.url(&format!("/{session}/{route}")))
                .json(&ExecuteRequest { code: code.into(), timeout_ms: Some(timeout_ms) })
                // The agent stops the code at `timeout`, then needs a moment to interrupt or
                // kill it.
                .timeout(timeout + self.request_timeout)
                .send()
                .await
                .map_err(|e| unavailable("agent unreachable", chain(&e)))?;
            if response.status().is_success() {
                return Ok(response);
            }
            let (status, _, code, message) = error_of(response).await;
            if code == "session_busy" && tokio::time::Instant::now() + pause < busy_until {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
                continue;
            }
            return Err(unavailable("execution refused", format!("{status} {code}: {message}")));
        }
    }

    /// Stops a running execution (best effort: the session may already be idle).
    pub async fn interrupt(&self, session: &str) {
        let sent = self
            .client
            .post(self.url(&format!("/{session}/interrupt")))
            .timeout(self.request_timeout)
            .send()
            .await;
        if let Err(err) = sent {
            tracing::warn!(session, error = %chain(&err), "interrupt failed");
        }
    }

    pub async fn delete_session(&self, session: &str) {
        let sent = self
            .client
            .delete(self.url(&format!("/{session}")))
            .timeout(self.request_timeout)
            .send()
            .await;
        if let Err(err) = sent {
            tracing::debug!(session, error = %chain(&err), "session delete failed");
        }
    }
}

/// Sends `/interrupt` when dropped while armed: a dropped execute future (client gone,
/// response cancelled) must not leave the code running in the sandbox.
pub struct InterruptOnDrop {
    pub agent: AgentClient,
    pub session: String,
    pub armed: bool,
}

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let agent = self.agent.clone();
            let session = std::mem::take(&mut self.session);
            // Detached on purpose: the caller is gone, and the interrupt is bounded by the
            // agent client's request timeout.
            runtime.spawn(async move { agent.interrupt(&session).await });
        }
    }
}

// === agent: workspace files (the containers API) ===

/// The agent refused a file operation: its status and envelope, for the caller to map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRefusal {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl AgentClient {
    fn file_url(&self, session: &str, path: &str) -> String {
        // The agent takes the workspace path as the rest of the URL; each segment is encoded.
        let encoded: Vec<String> = path.split('/').map(percent_encode_segment).collect();
        self.url(&format!("/{session}/files/{}", encoded.join("/")))
    }

    /// The session's workspace files (regular files, recursively).
    pub async fn list_files(&self, session: &str) -> Result<FileList, ToolFailure> {
        let response = self
            .client
            .get(self.url(&format!("/{session}/files")))
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(|e| unavailable("agent unreachable", chain(&e)))?;
        if response.status().is_success() {
            return response.json().await.map_err(|e| unavailable("agent answer", e));
        }
        Err(refused("file list refused", response).await)
    }

    /// Streams `body` into the workspace at `path` (the agent installs it only when complete).
    /// No overall timeout: a large upload takes as long as the client sends; connecting is
    /// bounded by the request timeout.
    pub async fn upload_file(
        &self,
        session: &str,
        path: &str,
        body: reqwest::Body,
    ) -> Result<Result<FileInfo, FileRefusal>, ToolFailure> {
        let response = self
            .client
            .put(self.file_url(session, path))
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| unavailable("agent upload", chain(&e)))?;
        if response.status().is_success() {
            return response.json().await.map(Ok).map_err(|e| unavailable("agent answer", e));
        }
        let (status, _, code, message) = error_of(response).await;
        Ok(Err(FileRefusal { status, code, message }))
    }

    /// Starts a download of `path`: the response whose body streams the bytes. `Ok(None)`: no
    /// such file.
    pub async fn download_file(
        &self,
        session: &str,
        path: &str,
    ) -> Result<Option<reqwest::Response>, ToolFailure> {
        let response = self
            .client
            .get(self.file_url(session, path))
            .send()
            .await
            .map_err(|e| unavailable("agent download", chain(&e)))?;
        if response.status() == 404 {
            return Ok(None);
        }
        if response.status().is_success() {
            return Ok(Some(response));
        }
        Err(refused("download refused", response).await)
    }

    /// Deletes `path` from the workspace; `false` when it was not there.
    pub async fn delete_file(&self, session: &str, path: &str) -> Result<bool, ToolFailure> {
        let response = self
            .client
            .delete(self.file_url(session, path))
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(|e| unavailable("agent unreachable", chain(&e)))?;
        if response.status() == 404 {
            return Ok(false);
        }
        if response.status().is_success() {
            return Ok(true);
        }
        Err(refused("file delete refused", response).await)
    }
}

/// Percent-encodes one path segment (everything but unreserved characters).
fn percent_encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
