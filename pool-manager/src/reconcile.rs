//! The reconcile loop, run by the leader only: on every change (and at least every
//! `reconcile.interval_ms`) each pool's sandboxes are read fresh from the runtime (never from
//! memory, so a restarted manager adopts what is there) and one function per concern acts:
//! [`Manager::delete_unusable`] -> [`Manager::recycle_ended_claims`] -> [`Manager::start_warm_ups`]
//! -> [`Manager::create_missing`] -> [`Manager::publish_status`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::crd::{PoolCondition, SandboxPoolStatus};
use crate::error::Result;
use crate::manager::Manager;
use crate::runtime::{Lifecycle, Marks, Phase, Pool, Runtime, Sandbox};
use crate::state::{
    Counts, SandboxState, claim_end_reason, classify, now_millis, now_secs, to_create,
};

/// How long a sandbox whose agent failed its warm-up waits before the next attempt.
const WARM_UP_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Runs passes while this replica leads, until `shutdown`. Warm-ups and resets run as tasks owned
/// here (a slow agent never holds up the other pools); they are aborted on shutdown.
pub async fn run<R: Runtime>(manager: Arc<Manager<R>>, shutdown: impl Future<Output = ()>) {
    let mut changes = manager.pulse.subscribe();
    let mut leader = manager.leader.clone();
    let mut tasks = JoinSet::new();
    let interval = Duration::from_millis(manager.reconcile.interval_ms.max(10));
    tokio::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        changes.borrow_and_update();
        if *leader.borrow_and_update() {
            manager.pass(&mut tasks).await;
        }
        tokio::select! {
            () = &mut shutdown => break,
            _ = changes.changed() => {}
            _ = leader.changed() => {}
            () = tokio::time::sleep(interval) => {}
        }
    }
    tasks.shutdown().await;
    info!("reconcile loop stopped");
}

impl<R: Runtime> Manager<R> {
    /// One pass over every pool.
    pub async fn pass(self: &Arc<Self>, tasks: &mut JoinSet<()>) {
        let pools = match self.runtime.pools().await {
            Ok(pools) => pools,
            Err(error) => {
                self.metrics.failure(error.metric_label());
                warn!(%error, "reconcile: cannot list pools");
                return;
            }
        };
        for pool in pools {
            if let Err(error) = self.reconcile_pool(&pool, tasks).await {
                self.metrics.failure(error.metric_label());
                warn!(pool = %pool.name, %error, "reconcile failed; retrying on the next pass");
            }
        }
    }

    async fn reconcile_pool(self: &Arc<Self>, pool: &Pool, tasks: &mut JoinSet<()>) -> Result<()> {
        let problems = pool.spec.problems();
        if !problems.is_empty() {
            warn!(pool = %pool.name, ?problems, "invalid spec; leaving its sandboxes alone");
            let status = status_for(pool, Counts::default(), Some(&problems));
            return self.runtime.write_status(pool, status).await;
        }
        let sandboxes = self.runtime.sandboxes(pool).await?;
        let now = now_secs();
        let deadlines = self.reconcile.deadlines();
        let classified: Vec<(Sandbox, SandboxState)> = sandboxes
            .into_iter()
            .map(|sandbox| {
                let state = classify(&pool.spec, &sandbox, now, deadlines);
                (sandbox, state)
            })
            .collect();
        let counts = Counts::of(classified.iter().map(|(_, state)| *state));
        self.delete_unusable(pool, &classified, now).await?;
        self.recycle_ended_claims(pool, &classified, now).await?;
        self.start_warm_ups(pool, &classified, tasks);
        self.create_missing(pool, counts).await?;
        self.scale_down(pool, &classified, counts).await?;
        self.publish_status(pool, counts).await
    }

    /// Deletes failed and expired sandboxes; replacements follow once they are gone.
    async fn delete_unusable(
        &self,
        pool: &Pool,
        classified: &[(Sandbox, SandboxState)],
        now: u64,
    ) -> Result<()> {
        for (sandbox, state) in classified {
            let reason = match state {
                SandboxState::Failed => match &sandbox.phase {
                    Phase::Failed(_) => "crashed",
                    _ if sandbox.marks.lifecycle == Lifecycle::Resetting => "reset_timeout",
                    _ => "warm_up_timeout",
                },
                SandboxState::Expired => "max_lifetime",
                _ => continue,
            };
            info!(pool = %pool.name, sandbox = %sandbox.name, reason, "deleting unusable sandbox");
            self.metrics.failure(reason);
            self.runtime.delete(pool, sandbox).await?;
            // A sandbox past its lifetime whose claim just ended goes without a reset.
            if let Some(ended) = claim_end_reason(&pool.spec, sandbox, now) {
                self.metrics.claim_ended(&pool.name, ended);
            }
        }
        Ok(())
    }

    /// Claims that expired or sat idle end as if released.
    async fn recycle_ended_claims(
        &self,
        pool: &Pool,
        classified: &[(Sandbox, SandboxState)],
        now: u64,
    ) -> Result<()> {
        for (sandbox, state) in classified {
            if *state == SandboxState::ClaimEnded {
                let reason = claim_end_reason(&pool.spec, sandbox, now).unwrap_or("expired");
                info!(pool = %pool.name, sandbox = %sandbox.name, reason, "claim ended; reclaiming");
                if self.recycle(pool, sandbox).await? {
                    self.metrics.claim_ended(&pool.name, reason);
                }
            }
        }
        Ok(())
    }

    /// Starts the warm-up of each running, not yet warmed sandbox, and the reset of each released
    /// one, unless one is already in flight.
    fn start_warm_ups(
        self: &Arc<Self>,
        pool: &Pool,
        classified: &[(Sandbox, SandboxState)],
        tasks: &mut JoinSet<()>,
    ) {
        for (sandbox, state) in classified {
            let resetting = match state {
                SandboxState::Warming => false,
                SandboxState::Resetting if matches!(sandbox.phase, Phase::Running { .. }) => true,
                _ => continue,
            };
            if !self.warming.lock().expect("never poisoned").insert(sandbox.name.clone()) {
                continue;
            }
            let manager = self.clone();
            let (pool, sandbox) = (pool.clone(), sandbox.clone());
            tasks.spawn(async move {
                if !manager.warm_up(&pool, &sandbox, resetting).await {
                    // An agent that is not listening yet fails at once; without a pause every
                    // pass (each woken by the previous failure) would retry it in a tight loop.
                    tokio::time::sleep(WARM_UP_RETRY_PAUSE).await;
                }
                manager.warming.lock().expect("never poisoned").remove(&sandbox.name);
                manager.pulse.beat();
            });
        }
    }

    /// Warms up (or resets) one sandbox and marks it ready; `false` when the agent failed. A failed
    /// warm-up is retried on later passes until the warm-up deadline; a failed reset deletes the
    /// sandbox (it could not prove that nothing of the last caller is left).
    async fn warm_up(&self, pool: &Pool, sandbox: &Sandbox, resetting: bool) -> bool {
        let Phase::Running { endpoint, spiffe_id } = &sandbox.phase else { return true };
        let kind = pool.spec.kind;
        let result = if resetting {
            self.agents.reset(endpoint, spiffe_id, kind).await
        } else {
            self.agents.warm_up(endpoint, spiffe_id, kind).await
        };
        if let Err(error) = result {
            let reason = if resetting { "reset" } else { "warm_up" };
            self.metrics.failure(reason);
            warn!(pool = %pool.name, sandbox = %sandbox.name, %error, "{reason} failed");
            if resetting && let Err(error) = self.runtime.delete(pool, sandbox).await {
                warn!(sandbox = %sandbox.name, %error, "could not delete a sandbox that failed its reset");
            }
            return false;
        }
        let since_ms = match (resetting, sandbox.marks.resetting_since) {
            (true, Some(since)) => since * 1000,
            _ => sandbox.created_at * 1000,
        };
        let ready_at = now_millis();
        let marks = Marks {
            lifecycle: Lifecycle::Ready,
            ready_at: Some(ready_at),
            resetting_since: None,
            claim: None,
        };
        match self.mark_ready(pool, sandbox, &marks).await {
            Ok(true) => {
                let seconds = ready_at.saturating_sub(since_ms) as f64 / 1000.0;
                self.metrics.observe_start_to_ready(seconds);
                info!(pool = %pool.name, sandbox = %sandbox.name, resetting, seconds, "sandbox ready");
            }
            Ok(false) => {
                debug!(sandbox = %sandbox.name, "changed during its warm-up; next pass decides")
            }
            Err(error) => warn!(sandbox = %sandbox.name, %error, "could not mark a sandbox ready"),
        }
        true
    }

    /// Writes `marks` if the sandbox is still in the lifecycle it was warmed up in. Its version may
    /// have moved for unrelated reasons (a pod status update), so one fresh read is tried.
    async fn mark_ready(&self, pool: &Pool, sandbox: &Sandbox, marks: &Marks) -> Result<bool> {
        if self.runtime.update_marks(pool, sandbox, marks).await?.is_some() {
            return Ok(true);
        }
        let fresh = self.runtime.sandboxes(pool).await?;
        let Some(current) = fresh.iter().find(|s| s.name == sandbox.name) else { return Ok(false) };
        if current.marks != sandbox.marks || current.phase != sandbox.phase {
            return Ok(false);
        }
        Ok(self.runtime.update_marks(pool, current, marks).await?.is_some())
    }

    /// Creates what `minReady` and waiting claims lack, never more than `maxPods` allows.
    async fn create_missing(&self, pool: &Pool, counts: Counts) -> Result<()> {
        let waiting = self.waiting(&pool.name);
        let wanted = to_create(pool.spec.min_ready, pool.spec.max_pods, waiting, counts);
        if wanted == 0 {
            return Ok(());
        }
        info!(pool = %pool.name, wanted, waiting, ?counts, "creating sandboxes");
        for _ in 0..wanted {
            self.runtime.create(pool).await?;
        }
        Ok(())
    }

    /// Deletes ready sandboxes beyond `minReady` (after it was lowered). Each is first taken out
    /// of the ready set with a conditional update, so a claim racing for it either wins (and the
    /// sandbox stays) or never sees it.
    async fn scale_down(
        &self,
        pool: &Pool,
        classified: &[(Sandbox, SandboxState)],
        counts: Counts,
    ) -> Result<()> {
        let wanted = pool.spec.min_ready + self.waiting(&pool.name);
        let mut excess = (counts.ready + counts.starting).saturating_sub(wanted).min(counts.ready);
        for (sandbox, state) in classified {
            if excess == 0 {
                break;
            }
            if *state != SandboxState::Ready {
                continue;
            }
            let retired =
                Marks { lifecycle: Lifecycle::Starting, ready_at: None, ..sandbox.marks.clone() };
            if let Some(retired) = self.runtime.update_marks(pool, sandbox, &retired).await? {
                info!(pool = %pool.name, sandbox = %sandbox.name, "scaling down");
                self.runtime.delete(pool, &retired).await?;
                excess -= 1;
            }
        }
        Ok(())
    }

    async fn publish_status(&self, pool: &Pool, counts: Counts) -> Result<()> {
        self.metrics.set_pool(&pool.name, counts);
        self.runtime.write_status(pool, status_for(pool, counts, None)).await
    }
}

/// The status for `counts`, keeping each condition's transition time unless its status changed.
fn status_for(pool: &Pool, counts: Counts, problems: Option<&[String]>) -> SandboxPoolStatus {
    let previous = pool.previous_status().map(|status| status.conditions.as_slice()).unwrap_or(&[]);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
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
    let spec = &pool.spec;
    let conditions = match problems {
        Some(problems) => vec![
            condition("SpecValid", false, "InvalidSpec", problems.join("; ")),
            condition("Ready", false, "InvalidSpec", "the spec is invalid".to_owned()),
        ],
        None => {
            let filled = counts.ready >= spec.min_ready;
            let message = format!("{} of {} warm sandboxes ready", counts.ready, spec.min_ready);
            let (reason, message) = if filled {
                ("WarmPoolFilled", message)
            } else if counts.occupied() >= spec.max_pods {
                ("AtMaxPods", format!("{message}; maxPods {} reached", spec.max_pods))
            } else {
                ("Filling", message)
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
        observed_generation: pool
            .resource
            .as_ref()
            .and_then(|resource| resource.metadata.generation),
        conditions,
    }
}
