//! The reconcile loop: a kube-rs `Controller` over `SandboxPool`s and the pods they own. Each pass
//! reads the pool's pods from the API server (never from memory, so a restarted manager adopts
//! what is there), deletes the unusable ones, creates what `minReady` asks within `maxPods`, and
//! writes the counts to the pool's status subresource. One function per concern, called in that
//! order by [`reconcile`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tracing::{debug, info, warn};

use crate::crd::{PoolCondition, SandboxPool, SandboxPoolStatus};
use crate::error::{Error, Result};
use crate::pod::{self, PodState};

/// Where the manager looks for pools and how often it re-checks a quiet pool.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Watch pools (and pods) in this namespace only; `None`: every namespace.
    pub namespace: Option<String>,
    /// A pool is re-reconciled at least this often even without events (expiry, lost events).
    pub resync: Duration,
    /// Delay before retrying a pool whose reconcile failed.
    pub retry: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            namespace: None,
            resync: Duration::from_secs(30),
            retry: Duration::from_secs(5),
        }
    }
}

struct Context {
    client: Client,
    config: ManagerConfig,
}

/// Runs the controller until `shutdown` completes. Fails early when the CRD is not installed.
pub async fn run(
    client: Client,
    config: ManagerConfig,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    let (pools, pods): (Api<SandboxPool>, Api<Pod>) = match &config.namespace {
        Some(namespace) => {
            (Api::namespaced(client.clone(), namespace), Api::namespaced(client.clone(), namespace))
        }
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    pools.list(&ListParams::default().limit(1)).await.map_err(Error::CrdNotInstalled)?;
    info!(namespace = ?config.namespace, "watching SandboxPools");
    let managed_pods = watcher::Config::default().labels(&format!(
        "{}={}",
        pod::LABEL_MANAGED_BY,
        pod::MANAGER_NAME
    ));
    let context = Arc::new(Context { client, config });
    Controller::new(pools, watcher::Config::default())
        .owns(pods, managed_pods)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((pool, _)) => debug!(pool = %pool.name, "reconciled"),
                Err(error) => warn!(%error, "reconcile failed"),
            }
        })
        .await;
    info!("controller stopped");
    Ok(())
}

fn error_policy(pool: Arc<SandboxPool>, error: &Error, context: Arc<Context>) -> Action {
    warn!(pool = %pool.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(context.config.retry)
}

/// How many pods of each state a pool has, as counted in one pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub ready: u32,
    pub claimed: u32,
    pub starting: u32,
    /// Failed or expired: deleted in this pass.
    pub failed: u32,
    pub terminating: u32,
}

impl Counts {
    /// Pods that hold a slot under `maxPods`: every pod that still exists, including those being
    /// deleted, so a slow deletion can never let the pool overshoot.
    pub fn occupied(&self) -> u32 {
        self.ready + self.claimed + self.starting + self.failed + self.terminating
    }
}

/// Warm pods to create this pass: what `min_ready` lacks, within what `max_pods` leaves.
pub fn pods_to_create(min_ready: u32, max_pods: u32, counts: Counts) -> u32 {
    let warm = counts.ready + counts.starting;
    min_ready.saturating_sub(warm).min(max_pods.saturating_sub(counts.occupied()))
}

async fn reconcile(pool: Arc<SandboxPool>, context: Arc<Context>) -> Result<Action> {
    let namespace = pool.namespace().unwrap_or_else(|| "default".to_owned());
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let pools: Api<SandboxPool> = Api::namespaced(context.client.clone(), &namespace);

    let problems = pool.spec.problems();
    if !problems.is_empty() {
        warn!(pool = %pool.name_any(), ?problems, "invalid spec; leaving its pods alone");
        let status = status_for(&pool, Counts::default(), Some(&problems));
        write_status(&pools, &pool, status).await?;
        return Ok(Action::requeue(context.config.resync));
    }

    let classified = classify_pods(&pods, &pool).await?;
    let mut counts = Counts::default();
    for (_, state) in &classified {
        match state {
            PodState::Ready => counts.ready += 1,
            PodState::Claimed => counts.claimed += 1,
            PodState::Starting => counts.starting += 1,
            PodState::Failed | PodState::Expired => counts.failed += 1,
            PodState::Terminating => counts.terminating += 1,
        }
    }
    delete_unusable(&pods, &pool, &classified).await?;
    create_missing(&pods, &pool, counts).await?;
    write_status(&pools, &pool, status_for(&pool, counts, None)).await?;
    Ok(Action::requeue(context.config.resync))
}

/// Lists the pool's pods from the API server (not a cache: two passes must never both see a pod
/// missing) and classifies each.
async fn classify_pods(pods: &Api<Pod>, pool: &SandboxPool) -> Result<Vec<(Pod, PodState)>> {
    let selector = pod::pool_selector(&pool.name_any());
    let list = pods.list(&ListParams::default().labels(&selector)).await?;
    let now = Timestamp::now();
    Ok(list
        .items
        .into_iter()
        // Only pods this pool controls: a same-named pool recreated after deletion gets a new uid.
        .filter(|pod| owned_by(pod, pool))
        .map(|pod| {
            let state = pod::classify(pool, &pod, now);
            (pod, state)
        })
        .collect())
}

fn owned_by(pod: &Pod, pool: &SandboxPool) -> bool {
    let Some(uid) = pool.uid() else { return false };
    pod.owner_references().iter().any(|owner| owner.controller == Some(true) && owner.uid == uid)
}

/// Deletes failed and expired pods; their replacements are created once they are gone.
async fn delete_unusable(
    pods: &Api<Pod>,
    pool: &SandboxPool,
    classified: &[(Pod, PodState)],
) -> Result<()> {
    for (pod, state) in classified {
        if !matches!(state, PodState::Failed | PodState::Expired) {
            continue;
        }
        let name = pod.name_any();
        info!(pool = %pool.name_any(), pod = %name, ?state, "deleting unusable pod");
        match pods.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            // Already gone: someone else did our work.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// Creates the warm pods `minReady` lacks, never more than `maxPods` allows.
async fn create_missing(pods: &Api<Pod>, pool: &SandboxPool, counts: Counts) -> Result<()> {
    let wanted = pods_to_create(pool.spec.min_ready, pool.spec.max_pods, counts);
    if wanted == 0 {
        return Ok(());
    }
    info!(pool = %pool.name_any(), wanted, ?counts, "creating warm pods");
    let rendered = pod::render(pool);
    for _ in 0..wanted {
        pods.create(&PostParams::default(), &rendered).await?;
    }
    Ok(())
}

/// The status for `counts`, keeping each condition's transition time unless its status changed.
fn status_for(
    pool: &SandboxPool,
    counts: Counts,
    problems: Option<&[String]>,
) -> SandboxPoolStatus {
    let previous = pool.status.as_ref().map(|status| status.conditions.as_slice()).unwrap_or(&[]);
    let now = Timestamp::now().to_string();
    let condition = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" }.to_owned();
        let last_transition_time = previous
            .iter()
            .find(|old| old.type_ == type_ && old.status == status)
            .map(|old| old.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        PoolCondition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message,
            last_transition_time,
        }
    };
    let conditions = match problems {
        Some(problems) => vec![
            condition("SpecValid", false, "InvalidSpec", problems.join("; ")),
            condition("Ready", false, "InvalidSpec", "the spec is invalid".to_owned()),
        ],
        None => {
            let filled = counts.ready >= pool.spec.min_ready;
            let (reason, message) = if filled {
                (
                    "WarmPoolFilled",
                    format!("{} of {} warm pods ready", counts.ready, pool.spec.min_ready),
                )
            } else if counts.occupied() >= pool.spec.max_pods {
                (
                    "AtMaxPods",
                    format!(
                        "{} of {} warm pods ready; maxPods {} reached",
                        counts.ready, pool.spec.min_ready, pool.spec.max_pods
                    ),
                )
            } else {
                ("Filling", format!("{} of {} warm pods ready", counts.ready, pool.spec.min_ready))
            };
            vec![
                // Never an empty message: the 1.20 apiserver turns "" into null in a merge patch
                // and then rejects it against the schema.
                condition("SpecValid", true, "Valid", "the spec is valid".to_owned()),
                condition("Ready", filled, reason, message),
            ]
        }
    };
    SandboxPoolStatus {
        ready: counts.ready,
        claimed: counts.claimed,
        starting: counts.starting,
        failed: counts.failed,
        observed_generation: pool.metadata.generation,
        conditions,
    }
}

/// Writes `status` through the status subresource, skipping the write when nothing changed (a
/// status write is itself a pool event and would wake this reconcile again).
async fn write_status(
    pools: &Api<SandboxPool>,
    pool: &SandboxPool,
    status: SandboxPoolStatus,
) -> Result<()> {
    if pool.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let patch = serde_json::json!({ "status": status });
    pools.patch_status(&pool.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(ready: u32, claimed: u32, starting: u32, failed: u32, terminating: u32) -> Counts {
        Counts { ready, claimed, starting, failed, terminating }
    }

    #[test]
    fn creates_what_min_ready_lacks() {
        assert_eq!(pods_to_create(3, 10, counts(0, 0, 0, 0, 0)), 3);
        assert_eq!(pods_to_create(3, 10, counts(1, 0, 1, 0, 0)), 1);
        assert_eq!(pods_to_create(3, 10, counts(2, 5, 1, 0, 0)), 0);
    }

    #[test]
    fn never_exceeds_max_pods() {
        assert_eq!(pods_to_create(3, 4, counts(0, 3, 0, 0, 0)), 1);
        assert_eq!(pods_to_create(3, 4, counts(0, 4, 0, 0, 0)), 0);
        // Pods being deleted still hold their slot.
        assert_eq!(pods_to_create(3, 4, counts(0, 1, 0, 2, 1)), 0);
        assert_eq!(pods_to_create(5, 2, counts(0, 0, 0, 0, 0)), 2);
    }
}
