//! The Kubernetes runtime: pools are `SandboxPool` resources, sandboxes are the hardened pods they
//! own ([`crate::pod`]), marks are pod labels and annotations written with merge patches that
//! carry the pod's `resourceVersion` (the API server's optimistic concurrency makes a claim atomic
//! across replicas).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};

use super::{Marks, Phase, Pool, Pulse, Runtime, Sandbox};
use crate::crd::{SandboxPool, SandboxPoolStatus};
use crate::error::{Error, Result};
use crate::pod;
use crate::sandbox_identity::SandboxIdentity;

/// One RBAC rule (a Role's `rules` entry) the manager needs in `runtime.namespace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RbacRule {
    #[serde(serialize_with = "one_item_list")]
    pub api_groups: &'static str,
    #[serde(serialize_with = "one_item_list")]
    pub resources: &'static str,
    pub verbs: &'static [&'static str],
}

fn one_item_list<S: serde::Serializer>(item: &&str, serializer: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&[*item], serializer)
}

/// Everything the manager does to the API, and nothing more (printed by
/// `antwort-pool-manager rbac`; the chart's Role must equal it): pods are listed and watched,
/// created, marked with merge patches and deleted ([`KubeRuntime`]); the leader Lease is read,
/// created and replaced ([`crate::leader`]); pools are read and watched, their status patched.
pub const RBAC_RULES: &[RbacRule] = &[
    RbacRule {
        api_groups: "",
        resources: "pods",
        verbs: &["list", "watch", "create", "patch", "delete"],
    },
    RbacRule {
        api_groups: "coordination.k8s.io",
        resources: "leases",
        verbs: &["get", "create", "update"],
    },
    RbacRule {
        api_groups: "antwort.dev",
        resources: "sandboxpools",
        verbs: &["get", "list", "watch"],
    },
    RbacRule { api_groups: "antwort.dev", resources: "sandboxpools/status", verbs: &["patch"] },
];

/// [`RBAC_RULES`] as YAML, in a Role's `rules` shape.
pub fn rbac_yaml() -> String {
    serde_yaml_ng::to_string(RBAC_RULES).expect("static rules serialize")
}

/// The `runtime:` config section when `kind: kubernetes`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeConfig {
    /// The namespace of the pools, their pods and the leader Lease.
    pub namespace: String,
    /// The port the agents' mTLS API listens on in every pod.
    pub agent_port: u16,
    /// Agents present `spiffe://<trust_domain>/ns/<namespace>/sa/<pod's service account>`.
    pub trust_domain: String,
    /// The ServiceAccount sandbox pods run as (its token is never mounted): the last segment of
    /// their SPIFFE ID, so give them one of their own.
    pub service_account: String,
    /// How sandbox pods get their SVID (`spire`, `csi` or `files`); required.
    pub sandbox_identity: Option<SandboxIdentity>,
    /// The Lease replicas elect their leader with.
    pub lease_name: String,
    /// How long a leader's Lease lasts without renewal, in seconds.
    pub lease_duration_secs: u64,
}

impl Default for KubeConfig {
    fn default() -> Self {
        KubeConfig {
            namespace: "default".to_owned(),
            agent_port: u16::try_from(pod::AGENT_PORT).unwrap_or(8443),
            trust_domain: "antwort.local".to_owned(),
            service_account: "default".to_owned(),
            sandbox_identity: None,
            lease_name: "antwort-pool-manager".to_owned(),
            lease_duration_secs: 15,
        }
    }
}

/// Pods in one namespace of a cluster.
#[derive(Clone)]
pub struct KubeRuntime {
    client: Client,
    config: KubeConfig,
    /// SPIFFE IDs added to every pod's allowed callers: this manager, for warm-ups and resets.
    manager_ids: Vec<String>,
}

impl KubeRuntime {
    /// Checks that the CRD is queryable, then serves pools of `config.namespace`.
    pub async fn connect(
        client: Client,
        config: KubeConfig,
        manager_ids: Vec<String>,
    ) -> Result<KubeRuntime> {
        let runtime = KubeRuntime { client, config, manager_ids };
        runtime
            .pools_api()
            .list(&ListParams::default().limit(1))
            .await
            .map_err(Error::CrdNotInstalled)?;
        Ok(runtime)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn config(&self) -> &KubeConfig {
        &self.config
    }

    fn pools_api(&self) -> Api<SandboxPool> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn to_pool(resource: SandboxPool) -> Pool {
        Pool {
            name: resource.name_any(),
            spec: resource.spec.clone(),
            resource: Some(Arc::new(resource)),
        }
    }

    fn to_sandbox(&self, pool: &str, pod: &Pod) -> Sandbox {
        let phase = if pod.metadata.deletion_timestamp.is_some() {
            Phase::Terminating
        } else if let Some(reason) = pod::has_ended(pod) {
            Phase::Failed(reason)
        } else if let Some(ip) = pod::running_ip(pod) {
            let account = pod
                .spec
                .as_ref()
                .and_then(|spec| spec.service_account_name.as_deref())
                .unwrap_or("default");
            let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_owned() };
            Phase::Running {
                endpoint: format!("https://{host}:{}", self.config.agent_port),
                spiffe_id: format!(
                    "spiffe://{}/ns/{}/sa/{account}",
                    self.config.trust_domain, self.config.namespace
                ),
            }
        } else {
            Phase::Pending
        };
        let created_at = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|time| u64::try_from(time.0.as_second()).unwrap_or(0))
            .unwrap_or(0);
        Sandbox {
            name: pod.name_any(),
            pool: pool.to_owned(),
            version: pod.resource_version().unwrap_or_default(),
            created_at,
            phase,
            marks: pod::marks(pod),
        }
    }
}

fn owned_by(pod: &Pod, pool: &Pool) -> bool {
    let Some(uid) = pool.resource.as_ref().and_then(|resource| resource.uid()) else {
        return false;
    };
    pod.owner_references().iter().any(|owner| owner.controller == Some(true) && owner.uid == uid)
}

fn not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

impl Runtime for KubeRuntime {
    async fn pools(&self) -> Result<Vec<Pool>> {
        let list = self.pools_api().list(&ListParams::default()).await?;
        Ok(list.items.into_iter().map(KubeRuntime::to_pool).collect())
    }

    async fn pool(&self, name: &str) -> Result<Option<Pool>> {
        Ok(self.pools_api().get_opt(name).await?.map(KubeRuntime::to_pool))
    }

    async fn sandboxes(&self, pool: &Pool) -> Result<Vec<Sandbox>> {
        let selector = pod::pool_selector(&pool.name);
        let list = self.pods_api().list(&ListParams::default().labels(&selector)).await?;
        Ok(list
            .items
            .iter()
            // Only pods this pool controls: a same-named pool recreated after deletion gets a
            // new uid, and its predecessor's pods are being garbage-collected.
            .filter(|pod| owned_by(pod, pool))
            .map(|pod| self.to_sandbox(&pool.name, pod))
            .collect())
    }

    async fn find_claim(&self, claim_id: &str) -> Result<Option<(Pool, Sandbox)>> {
        // Claim ids are hex; anything else cannot be a label value we wrote.
        if claim_id.is_empty() || !claim_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Ok(None);
        }
        let selector = format!(
            "{}={claim_id},{}={}",
            pod::LABEL_CLAIM,
            pod::LABEL_MANAGED_BY,
            pod::MANAGER_NAME
        );
        let list = self.pods_api().list(&ListParams::default().labels(&selector)).await?;
        for found in list.items {
            let Some(pool_name) = found.labels().get(pod::LABEL_POOL).cloned() else { continue };
            if let Some(pool) = self.pool(&pool_name).await?
                && owned_by(&found, &pool)
            {
                let sandbox = self.to_sandbox(&pool.name, &found);
                return Ok(Some((pool, sandbox)));
            }
        }
        Ok(None)
    }

    async fn create(&self, pool: &Pool) -> Result<()> {
        let resource = pool.resource.as_ref().ok_or_else(|| {
            Error::Config(format!("pool {} has no SandboxPool resource", pool.name))
        })?;
        let rendered = pod::render(resource, &self.manager_ids, &self.config);
        self.pods_api().create(&PostParams::default(), &rendered).await?;
        Ok(())
    }

    async fn delete(&self, _pool: &Pool, sandbox: &Sandbox) -> Result<()> {
        match self.pods_api().delete(&sandbox.name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(error) if not_found(&error) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    async fn update_marks(
        &self,
        pool: &Pool,
        sandbox: &Sandbox,
        marks: &Marks,
    ) -> Result<Option<Sandbox>> {
        let patch = pod::marks_patch(marks, &sandbox.version);
        match self
            .pods_api()
            .patch(&sandbox.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(updated) => Ok(Some(self.to_sandbox(&pool.name, &updated))),
            // 409: the resourceVersion moved on (another replica won); 404: the pod is gone.
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    async fn write_status(&self, pool: &Pool, status: SandboxPoolStatus) -> Result<()> {
        // Skip unchanged statuses: a status write is itself a pool event.
        if pool.previous_status() == Some(&status) {
            return Ok(());
        }
        let patch = serde_json::json!({ "status": status });
        match self
            .pools_api()
            .patch_status(&pool.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if not_found(&error) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    async fn watch(&self, pulse: Pulse) {
        let managed = watcher::Config::default().labels(&format!(
            "{}={}",
            pod::LABEL_MANAGED_BY,
            pod::MANAGER_NAME
        ));
        let pods = watcher::watcher(self.pods_api(), managed).default_backoff().map(|_| ());
        let pools = watcher::watcher(self.pools_api(), watcher::Config::default())
            .default_backoff()
            .map(|_| ());
        let mut events = std::pin::pin!(futures::stream::select(pods, pools));
        while events.next().await.is_some() {
            pulse.beat();
        }
    }

    async fn shutdown(&self) {}
}
