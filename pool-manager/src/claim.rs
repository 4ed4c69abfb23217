//! Claims: hand a ready sandbox to a caller, renew it, release it. Every step is a conditional
//! update of the sandbox's marks ([`Runtime::update_marks`]), so any replica can serve any claim
//! and two replicas never hand out the same sandbox. Nothing here lives only in memory.

use std::time::{Duration, Instant};

use antwort_common::pool_api::{Claim, ClaimRequest, PoolStatus};

use crate::crd::RecyclePolicy;
use crate::error::{Error, Result};
use crate::manager::Manager;
use crate::runtime::{ClaimMarks, Lifecycle, Marks, Phase, Pool, Runtime, Sandbox};
use crate::state::{Counts, SandboxState, classify, now_millis, now_secs};

/// How often a waiting claim looks again even without a change notice.
const WAIT_POLL: Duration = Duration::from_millis(250);
/// Conditional updates lost in a row before a renew or release gives up.
const MAX_CONFLICTS: usize = 8;

impl<R: Runtime> Manager<R> {
    /// `POST /v1/claims`.
    pub async fn claim(&self, request: ClaimRequest) -> Result<Claim> {
        let started = Instant::now();
        let result = self.claim_inner(request).await;
        let outcome = match &result {
            Ok(claim) if claim.reused => "reused",
            Ok(_) => "claimed",
            Err(error) => error.metric_label(),
        };
        self.metrics.observe_claim(outcome, started.elapsed().as_secs_f64());
        result
    }

    async fn claim_inner(&self, request: ClaimRequest) -> Result<Claim> {
        if request.session_key.is_empty()
            || request.session_key.len() > self.claims.max_session_key_bytes
        {
            return Err(Error::BadRequest(format!(
                "session_key: must be 1 to {} bytes",
                self.claims.max_session_key_bytes
            )));
        }
        let ttl = self.ttl(request.ttl_secs)?;
        let pool = self
            .runtime
            .pool(&request.pool)
            .await?
            .ok_or_else(|| Error::PoolNotFound(request.pool.clone()))?;
        let _session = self.lock_session(&pool.name, &request.session_key).await;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.claims.wait_ms);
        let mut changes = self.pulse.subscribe();
        let mut waiting = None;
        loop {
            let sandboxes = self.runtime.sandboxes(&pool).await?;
            let now = now_secs();
            if let Some(existing) = live_claim_of(&pool, &sandboxes, &request.session_key, now) {
                return to_claim(&pool, existing, true);
            }
            let deadlines = self.reconcile.deadlines();
            let states: Vec<SandboxState> =
                sandboxes.iter().map(|s| classify(&pool.spec, s, now, deadlines)).collect();
            let ready: Vec<&Sandbox> = sandboxes
                .iter()
                .zip(&states)
                .filter(|(_, state)| **state == SandboxState::Ready)
                .map(|(sandbox, _)| sandbox)
                .collect();
            // Replicas start at different places so they rarely race for one sandbox.
            let offset = usize::try_from(now_millis()).unwrap_or(0) % ready.len().max(1);
            for sandbox in ready.iter().cycle().skip(offset).take(ready.len()) {
                let marks = Marks {
                    lifecycle: Lifecycle::Claimed,
                    claim: Some(ClaimMarks {
                        id: uuid::Uuid::new_v4().simple().to_string(),
                        session_key: request.session_key.clone(),
                        claimed_at_ms: now_millis(),
                        expires_at: now + ttl,
                        last_used: now,
                    }),
                    ..sandbox.marks.clone()
                };
                if let Some(won) = self.runtime.update_marks(&pool, sandbox, &marks).await? {
                    self.pulse.beat();
                    return self.settle(&pool, won).await;
                }
            }
            if !ready.is_empty() {
                // Every ready sandbox went to someone else meanwhile: look again at once.
                continue;
            }
            let counts = Counts::of(states);
            if counts.starting == 0 && counts.occupied() >= pool.spec.max_pods {
                return Err(Error::PoolExhausted(pool.name.clone()));
            }
            if waiting.is_none() {
                waiting = Some(self.wait_for(&pool.name));
            }
            let wake = (tokio::time::Instant::now() + WAIT_POLL).min(deadline);
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep_until(wake) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::PoolStarting(pool.name.clone()));
            }
        }
    }

    /// After winning `won`: if another replica claimed a sandbox for the same session key at the
    /// same time, the earlier claim stands and ours goes back to the pool untouched.
    async fn settle(&self, pool: &Pool, won: Sandbox) -> Result<Claim> {
        let ours = won.marks.claim.clone().expect("a won sandbox carries its claim");
        let sandboxes = self.runtime.sandboxes(pool).await?;
        let earliest = sandboxes
            .iter()
            .filter(|sandbox| sandbox.marks.lifecycle == Lifecycle::Claimed)
            .filter_map(|sandbox| sandbox.marks.claim.as_ref().map(|claim| (sandbox, claim)))
            .filter(|(_, claim)| claim.session_key == ours.session_key)
            .min_by_key(|(_, claim)| (claim.claimed_at_ms, claim.id.clone()));
        match earliest {
            Some((winner, claim)) if claim.id != ours.id => {
                let back = Marks { lifecycle: Lifecycle::Ready, claim: None, ..won.marks.clone() };
                let current = sandboxes.iter().find(|s| s.name == won.name).unwrap_or(&won);
                if self.runtime.update_marks(pool, current, &back).await?.is_none() {
                    tracing::warn!(sandbox = %won.name, "a duplicate claim could not be returned; it expires on its own");
                }
                to_claim(pool, winner, true)
            }
            _ => to_claim(pool, &won, false),
        }
    }

    /// `POST /v1/claims/{id}/renew`.
    pub async fn renew(&self, claim_id: &str, ttl_secs: Option<u64>) -> Result<Claim> {
        let ttl = self.ttl(ttl_secs)?;
        for _ in 0..MAX_CONFLICTS {
            let (pool, sandbox) = self.live_claim(claim_id).await?;
            let now = now_secs();
            let mut marks = sandbox.marks.clone();
            if let Some(claim) = marks.claim.as_mut() {
                claim.expires_at = now + ttl;
                claim.last_used = now;
            }
            if let Some(renewed) = self.runtime.update_marks(&pool, &sandbox, &marks).await? {
                return to_claim(&pool, &renewed, true);
            }
        }
        Err(Error::Internal(format!("claim {claim_id}: too many concurrent updates")))
    }

    /// `DELETE /v1/claims/{id}`: destroy the sandbox or send it to reset, by the pool's policy.
    pub async fn release(&self, claim_id: &str) -> Result<()> {
        for _ in 0..MAX_CONFLICTS {
            let (pool, sandbox) = self.live_claim(claim_id).await?;
            if self.recycle(&pool, &sandbox).await? {
                self.metrics.claim_ended(&pool.name, "released");
                return Ok(());
            }
        }
        Err(Error::Internal(format!("claim {claim_id}: too many concurrent updates")))
    }

    /// Ends `sandbox`'s claim by `pool`'s recycle policy; `false` when it changed meanwhile.
    pub(crate) async fn recycle(&self, pool: &Pool, sandbox: &Sandbox) -> Result<bool> {
        let done = match pool.spec.recycle_policy {
            RecyclePolicy::Destroy => {
                self.runtime.delete(pool, sandbox).await?;
                true
            }
            RecyclePolicy::Reset => {
                let marks = Marks {
                    lifecycle: Lifecycle::Resetting,
                    ready_at: None,
                    resetting_since: Some(now_secs()),
                    claim: None,
                };
                self.runtime.update_marks(pool, sandbox, &marks).await?.is_some()
            }
        };
        if done {
            tracing::info!(pool = %pool.name, sandbox = %sandbox.name, policy = ?pool.spec.recycle_policy, "claim ended");
            self.pulse.beat();
        }
        Ok(done)
    }

    /// The pool and sandbox of a claim that is still live.
    async fn live_claim(&self, claim_id: &str) -> Result<(Pool, Sandbox)> {
        let not_found = || Error::ClaimNotFound(claim_id.to_owned());
        let (pool, sandbox) = self.runtime.find_claim(claim_id).await?.ok_or_else(not_found)?;
        let state = classify(&pool.spec, &sandbox, now_secs(), self.reconcile.deadlines());
        if state == SandboxState::Claimed { Ok((pool, sandbox)) } else { Err(not_found()) }
    }

    fn ttl(&self, requested: Option<u64>) -> Result<u64> {
        match requested {
            Some(0) => Err(Error::BadRequest("ttl_secs: must be at least 1".to_owned())),
            Some(ttl) => Ok(ttl.min(self.claims.max_ttl_secs)),
            None => Ok(self.claims.default_ttl_secs),
        }
    }

    /// `GET /v1/pools`: every pool counted live.
    pub async fn pool_statuses(&self) -> Result<Vec<PoolStatus>> {
        let mut statuses = Vec::new();
        let now = now_secs();
        for pool in self.runtime.pools().await? {
            let sandboxes = self.runtime.sandboxes(&pool).await?;
            let counts = Counts::of(
                sandboxes.iter().map(|s| classify(&pool.spec, s, now, self.reconcile.deadlines())),
            );
            statuses.push(PoolStatus {
                name: pool.name.clone(),
                kind: pool.spec.kind.as_str().to_owned(),
                min_ready: pool.spec.min_ready,
                max_pods: pool.spec.max_pods,
                ready: counts.ready,
                claimed: counts.claimed,
                starting: counts.starting,
                failed: counts.failed + counts.terminating,
            });
        }
        Ok(statuses)
    }
}

fn live_claim_of<'a>(
    pool: &Pool,
    sandboxes: &'a [Sandbox],
    session_key: &str,
    now: u64,
) -> Option<&'a Sandbox> {
    sandboxes
        .iter()
        .filter(|sandbox| {
            sandbox.marks.claim.as_ref().is_some_and(|c| c.session_key == session_key)
        })
        .filter(|sandbox| matches!(sandbox.phase, Phase::Running { .. }))
        .filter(|sandbox| {
            // Any deadline will do here: only the claim's own expiry and idleness matter.
            let deadlines =
                crate::state::Deadlines { warm_up: Duration::MAX, reset: Duration::MAX };
            classify(&pool.spec, sandbox, now, deadlines) == SandboxState::Claimed
        })
        .min_by_key(|sandbox| sandbox.marks.claim.as_ref().map(|c| (c.claimed_at_ms, c.id.clone())))
}

fn to_claim(pool: &Pool, sandbox: &Sandbox, reused: bool) -> Result<Claim> {
    let claim = sandbox.marks.claim.as_ref().ok_or_else(|| {
        Error::Internal(format!("sandbox {} is claimed without claim marks", sandbox.name))
    })?;
    let Phase::Running { endpoint, spiffe_id } = &sandbox.phase else {
        return Err(Error::Internal(format!("claimed sandbox {} is not running", sandbox.name)));
    };
    Ok(Claim {
        claim_id: claim.id.clone(),
        pool: pool.name.clone(),
        agent_endpoint: endpoint.clone(),
        agent_spiffe_id: spiffe_id.clone(),
        expires_at: claim.expires_at,
        reused,
    })
}
