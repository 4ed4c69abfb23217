//! The manager as a client of sandbox agents, over mTLS, authorizing each agent by its exact SPIFFE
//! ID: the warm-up execution that makes a sandbox ready, and the reset that returns a released
//! sandbox to the pool.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use antwort_common::agent_api::{
    CreateSessionRequest, ExecStatus, ExecuteRequest, ExecuteResult, FileList, SESSIONS_PATH,
    SessionInfo, SessionList,
};
use antwort_common::identity::{PeerPolicy, SharedSource, mtls_client_builder};
use reqwest::StatusCode;

use crate::crd::SandboxKind;
use crate::error::{Error, Result};

/// The code of the warm-up execution and what it must print.
const WARM_UP_CODE: &str = "print(1)";
const WARM_UP_OUTPUT: &str = "1\n";
/// More clients than this (one per agent SPIFFE ID) and the cache starts over.
const MAX_CACHED_CLIENTS: usize = 1024;

/// mTLS calls to agents.
pub struct AgentClient {
    source: SharedSource,
    /// Per call, connect to answer.
    timeout: Duration,
    /// One client per agent SPIFFE ID (each authorizes exactly that ID), kept for their
    /// connection pools.
    clients: Mutex<HashMap<String, reqwest::Client>>,
}

impl AgentClient {
    pub fn new(source: SharedSource, timeout: Duration) -> AgentClient {
        AgentClient { source, timeout, clients: Mutex::new(HashMap::new()) }
    }

    fn client(&self, spiffe_id: &str) -> Result<reqwest::Client> {
        let mut clients = self.clients.lock().expect("the client cache lock is never poisoned");
        if let Some(client) = clients.get(spiffe_id) {
            return Ok(client.clone());
        }
        if clients.len() >= MAX_CACHED_CLIENTS {
            clients.clear();
        }
        let client = mtls_client_builder(self.source.clone(), PeerPolicy::exact([spiffe_id])?)?
            .timeout(self.timeout)
            .build()
            .map_err(antwort_common::identity::Error::from)?;
        clients.insert(spiffe_id.to_owned(), client.clone());
        Ok(client)
    }

    /// Proves the agent works: for code sandboxes a real execution in a fresh session (whose
    /// workspace must be empty), otherwise its readiness over mTLS.
    pub async fn warm_up(&self, endpoint: &str, spiffe_id: &str, kind: SandboxKind) -> Result<()> {
        let client = self.client(spiffe_id)?;
        let fail = |message: String| Error::Agent { endpoint: endpoint.to_owned(), message };
        if kind != SandboxKind::Python {
            let response = client
                .get(format!("{endpoint}/readyz"))
                .send()
                .await
                .map_err(|e| fail(chain(&e)))?;
            return if response.status() == StatusCode::OK {
                Ok(())
            } else {
                Err(fail(format!("readyz answered {}", response.status())))
            };
        }
        let session: SessionInfo = expect_json(
            client
                .post(format!("{endpoint}{SESSIONS_PATH}"))
                .json(&CreateSessionRequest { label: Some("pool-manager-warm-up".to_owned()) })
                .send()
                .await,
            StatusCode::CREATED,
        )
        .await
        .map_err(|e| fail(format!("create session: {e}")))?;
        let session_url = format!("{endpoint}{SESSIONS_PATH}/{}", session.id);
        let checked = async {
            let files: FileList = expect_json(
                client.get(format!("{session_url}/files")).send().await,
                StatusCode::OK,
            )
            .await
            .map_err(|e| format!("list files: {e}"))?;
            if !files.files.is_empty() {
                return Err(format!("a fresh workspace holds {} files", files.files.len()));
            }
            let result: ExecuteResult = expect_json(
                client
                    .post(format!("{session_url}/execute"))
                    .json(&ExecuteRequest { code: WARM_UP_CODE.to_owned(), timeout_ms: None })
                    .send()
                    .await,
                StatusCode::OK,
            )
            .await
            .map_err(|e| format!("execute: {e}"))?;
            if result.status != ExecStatus::Ok || result.stdout != WARM_UP_OUTPUT {
                return Err(format!(
                    "warm-up printed {:?} with status {} (stderr {:?})",
                    result.stdout,
                    result.status.as_str(),
                    result.stderr
                ));
            }
            Ok(())
        }
        .await;
        let deleted = client.delete(&session_url).send().await;
        checked.map_err(fail)?;
        match deleted {
            Ok(response) if response.status() == StatusCode::NO_CONTENT => Ok(()),
            Ok(response) => Err(fail(format!("delete session answered {}", response.status()))),
            Err(error) => Err(fail(format!("delete session: {}", chain(&error)))),
        }
    }

    /// Deletes every session (and with it every workspace) a caller left, checks that none is
    /// left, then warms the agent up again (which checks that a new workspace is empty).
    pub async fn reset(&self, endpoint: &str, spiffe_id: &str, kind: SandboxKind) -> Result<()> {
        if kind == SandboxKind::Python {
            let client = self.client(spiffe_id)?;
            let fail = |message: String| Error::Agent { endpoint: endpoint.to_owned(), message };
            let list_url = format!("{endpoint}{SESSIONS_PATH}");
            let sessions: SessionList =
                expect_json(client.get(&list_url).send().await, StatusCode::OK)
                    .await
                    .map_err(|e| fail(format!("list sessions: {e}")))?;
            for session in sessions.sessions {
                let response = client
                    .delete(format!("{list_url}/{}", session.id))
                    .send()
                    .await
                    .map_err(|e| fail(format!("delete session: {}", chain(&e))))?;
                if !matches!(response.status(), StatusCode::NO_CONTENT | StatusCode::NOT_FOUND) {
                    return Err(fail(format!("delete session answered {}", response.status())));
                }
            }
            let left: SessionList = expect_json(client.get(&list_url).send().await, StatusCode::OK)
                .await
                .map_err(|e| fail(format!("list sessions: {e}")))?;
            if !left.sessions.is_empty() {
                return Err(fail(format!("{} sessions survived the reset", left.sessions.len())));
            }
        }
        self.warm_up(endpoint, spiffe_id, kind).await
    }
}

async fn expect_json<T: serde::de::DeserializeOwned>(
    sent: reqwest::Result<reqwest::Response>,
    status: StatusCode,
) -> std::result::Result<T, String> {
    let response = sent.map_err(|e| chain(&e))?;
    if response.status() != status {
        let got = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(format!("answered {got}: {}", body.chars().take(300).collect::<String>()));
    }
    response.json().await.map_err(|e| format!("bad JSON: {}", chain(&e)))
}

/// An error with its causes (reqwest hides the TLS or connect reason in the source chain).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
