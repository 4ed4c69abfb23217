//! What to do with a sandbox: classifies a [`Sandbox`] of a pool from its phase, marks and age,
//! and counts a pool's sandboxes by state. Pure functions; the reconcile loop acts on the result.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::crd::SandboxPoolSpec;
use crate::runtime::{Lifecycle, Phase, Sandbox};

/// Where a sandbox stands and what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxState {
    /// Not running yet.
    Pending,
    /// Running, not warmed up yet: the reconcile loop runs its warm-up.
    Warming,
    /// Warmed up, unclaimed: claimable.
    Ready,
    /// Held by a live claim.
    Claimed,
    /// Its claim expired or sat idle past the pool's idle timeout: recycle it.
    ClaimEnded,
    /// Released under the `reset` policy, waiting for (or in) its reset.
    Resetting,
    /// Crashed, or did not warm up (or reset) in time: delete it.
    Failed,
    /// Older than the pool's max lifetime and not under a live claim: delete it.
    Expired,
    /// Being deleted; still holds a slot under `maxPods`.
    Terminating,
}

/// Deadlines the classification applies.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// A sandbox must pass its first warm-up within this of its creation.
    pub warm_up: Duration,
    /// A released sandbox must be reset within this of its release.
    pub reset: Duration,
}

/// Classifies `sandbox` of a pool with `spec` at `now` (Unix seconds).
pub fn classify(
    spec: &SandboxPoolSpec,
    sandbox: &Sandbox,
    now: u64,
    deadlines: Deadlines,
) -> SandboxState {
    let running = match &sandbox.phase {
        Phase::Terminating => return SandboxState::Terminating,
        Phase::Failed(_) => return SandboxState::Failed,
        Phase::Pending => false,
        Phase::Running { .. } => true,
    };
    let age = now.saturating_sub(sandbox.created_at);
    let marks = &sandbox.marks;
    let claim_live = marks.lifecycle == Lifecycle::Claimed
        && marks.claim.as_ref().is_some_and(|claim| {
            claim.expires_at > now
                && now.saturating_sub(claim.last_used) < spec.idle_timeout_seconds
        });
    if age >= spec.max_lifetime_seconds {
        // Never killed under its user: a claimed sandbox past its lifetime serves its claim to
        // the end (expiry, idle timeout or release), then goes straight to deletion (no reset,
        // no second claim).
        return if claim_live { SandboxState::Claimed } else { SandboxState::Expired };
    }
    match marks.lifecycle {
        Lifecycle::Claimed if claim_live => SandboxState::Claimed,
        Lifecycle::Claimed => SandboxState::ClaimEnded,
        Lifecycle::Resetting => {
            let since = marks.resetting_since.unwrap_or(0);
            if now.saturating_sub(since) >= deadlines.reset.as_secs() {
                SandboxState::Failed
            } else {
                SandboxState::Resetting
            }
        }
        Lifecycle::Ready if running => SandboxState::Ready,
        // A ready-marked sandbox that is no longer running has lost its agent.
        Lifecycle::Ready => SandboxState::Failed,
        Lifecycle::Starting => {
            if age >= deadlines.warm_up.as_secs() {
                SandboxState::Failed
            } else if running {
                SandboxState::Warming
            } else {
                SandboxState::Pending
            }
        }
    }
}

/// Why the claim on `sandbox` ended on its own (`expired` or `idle`), or `None` while it is
/// live or there is none.
pub fn claim_end_reason(
    spec: &SandboxPoolSpec,
    sandbox: &Sandbox,
    now: u64,
) -> Option<&'static str> {
    let claim =
        sandbox.marks.claim.as_ref().filter(|_| sandbox.marks.lifecycle == Lifecycle::Claimed)?;
    if claim.expires_at <= now {
        Some("expired")
    } else if now.saturating_sub(claim.last_used) >= spec.idle_timeout_seconds {
        Some("idle")
    } else {
        None
    }
}

/// How many sandboxes of each state a pool has.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub ready: u32,
    pub claimed: u32,
    /// Pending, warming or resetting: on their way to ready.
    pub starting: u32,
    /// Failed, expired or with an ended claim: deleted (or recycled) in this pass.
    pub failed: u32,
    pub terminating: u32,
}

impl Counts {
    pub fn of(states: impl IntoIterator<Item = SandboxState>) -> Counts {
        let mut counts = Counts::default();
        for state in states {
            match state {
                SandboxState::Ready => counts.ready += 1,
                SandboxState::Claimed => counts.claimed += 1,
                SandboxState::Pending | SandboxState::Warming | SandboxState::Resetting => {
                    counts.starting += 1
                }
                SandboxState::ClaimEnded | SandboxState::Failed | SandboxState::Expired => {
                    counts.failed += 1
                }
                SandboxState::Terminating => counts.terminating += 1,
            }
        }
        counts
    }

    /// Sandboxes that hold a slot under `maxPods`: every one that still exists, including those
    /// being deleted, so a slow deletion can never let the pool overshoot.
    pub fn occupied(&self) -> u32 {
        self.ready + self.claimed + self.starting + self.failed + self.terminating
    }
}

/// Sandboxes to create: what `min_ready` (plus claims waiting right now) lacks, within what
/// `max_pods` leaves.
pub fn to_create(min_ready: u32, max_pods: u32, waiting: u32, counts: Counts) -> u32 {
    let warm = counts.ready + counts.starting;
    (min_ready + waiting).saturating_sub(warm).min(max_pods.saturating_sub(counts.occupied()))
}

/// Now, in Unix seconds.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Now, in Unix milliseconds.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{ClaimMarks, Marks};

    fn spec() -> SandboxPoolSpec {
        serde_json::from_value(serde_json::json!({
            "kind": "python", "image": "img", "minReady": 1, "maxPods": 2,
            "idleTimeoutSeconds": 100, "maxLifetimeSeconds": 1000,
        }))
        .expect("a spec")
    }

    const DEADLINES: Deadlines =
        Deadlines { warm_up: Duration::from_secs(60), reset: Duration::from_secs(30) };

    fn sandbox(phase: Phase, lifecycle: Lifecycle, created_at: u64) -> Sandbox {
        Sandbox {
            name: "s".into(),
            pool: "p".into(),
            version: "1".into(),
            created_at,
            phase,
            marks: Marks { lifecycle, ..Marks::default() },
        }
    }

    fn running() -> Phase {
        Phase::Running { endpoint: "https://127.0.0.1:1".into(), spiffe_id: "spiffe://td/a".into() }
    }

    #[test]
    fn classification_follows_phase_marks_and_age() {
        let (spec, now) = (spec(), 10_000);
        let check = |sandbox: &Sandbox| classify(&spec, sandbox, now, DEADLINES);
        assert_eq!(
            check(&sandbox(Phase::Pending, Lifecycle::Starting, now)),
            SandboxState::Pending
        );
        assert_eq!(check(&sandbox(running(), Lifecycle::Starting, now)), SandboxState::Warming);
        assert_eq!(check(&sandbox(running(), Lifecycle::Starting, now - 60)), SandboxState::Failed);
        assert_eq!(check(&sandbox(running(), Lifecycle::Ready, now)), SandboxState::Ready);
        assert_eq!(check(&sandbox(Phase::Pending, Lifecycle::Ready, now)), SandboxState::Failed);
        assert_eq!(check(&sandbox(running(), Lifecycle::Ready, now - 1000)), SandboxState::Expired);
        assert_eq!(
            check(&sandbox(Phase::Failed("exit 1".into()), Lifecycle::Ready, now)),
            SandboxState::Failed
        );
        assert_eq!(
            check(&sandbox(Phase::Terminating, Lifecycle::Claimed, now)),
            SandboxState::Terminating
        );

        let mut claimed = sandbox(running(), Lifecycle::Claimed, now - 10);
        let claim = |expires_at, last_used| ClaimMarks {
            id: "c".into(),
            session_key: "k".into(),
            claimed_at_ms: 0,
            expires_at,
            last_used,
        };
        claimed.marks.claim = Some(claim(now + 5, now - 5));
        assert_eq!(check(&claimed), SandboxState::Claimed);
        claimed.marks.claim = Some(claim(now, now - 5));
        assert_eq!(check(&claimed), SandboxState::ClaimEnded, "expired claim");
        claimed.marks.claim = Some(claim(now + 500, now - 100));
        assert_eq!(check(&claimed), SandboxState::ClaimEnded, "idle past the timeout");
        assert_eq!(claim_end_reason(&spec, &claimed, now), Some("idle"));
        claimed.marks.claim = Some(claim(now, now));
        assert_eq!(claim_end_reason(&spec, &claimed, now), Some("expired"));
        claimed.marks.claim = Some(claim(now + 5, now - 5));
        assert_eq!(claim_end_reason(&spec, &claimed, now), None, "live");

        // Past the max lifetime: a live claim keeps its sandbox until it ends; then (or without
        // a claim, or with a released one waiting for its reset) the sandbox is deleted.
        let mut old = sandbox(running(), Lifecycle::Claimed, now - 1000);
        old.marks.claim = Some(claim(now + 5, now - 5));
        assert_eq!(check(&old), SandboxState::Claimed, "not killed under its user");
        old.marks.claim = Some(claim(now, now - 5));
        assert_eq!(check(&old), SandboxState::Expired, "its claim expired");
        old.marks.claim = Some(claim(now + 500, now - 100));
        assert_eq!(check(&old), SandboxState::Expired, "its claim sat idle");
        let mut released = sandbox(running(), Lifecycle::Resetting, now - 1000);
        released.marks.resetting_since = Some(now);
        assert_eq!(check(&released), SandboxState::Expired, "not reset for another claim");

        let mut resetting = sandbox(running(), Lifecycle::Resetting, now - 10);
        resetting.marks.resetting_since = Some(now - 5);
        assert_eq!(check(&resetting), SandboxState::Resetting);
        resetting.marks.resetting_since = Some(now - 30);
        assert_eq!(check(&resetting), SandboxState::Failed, "reset took too long");
    }

    fn counts(ready: u32, claimed: u32, starting: u32, failed: u32, terminating: u32) -> Counts {
        Counts { ready, claimed, starting, failed, terminating }
    }

    #[test]
    fn creates_what_min_ready_and_waiting_claims_lack_within_max_pods() {
        assert_eq!(to_create(3, 10, 0, counts(0, 0, 0, 0, 0)), 3);
        assert_eq!(to_create(3, 10, 0, counts(1, 0, 1, 0, 0)), 1);
        assert_eq!(to_create(3, 10, 0, counts(2, 5, 1, 0, 0)), 0);
        assert_eq!(to_create(0, 10, 2, counts(0, 1, 1, 0, 0)), 1);
        assert_eq!(to_create(3, 4, 0, counts(0, 3, 0, 0, 0)), 1);
        assert_eq!(to_create(3, 4, 0, counts(0, 4, 0, 0, 0)), 0);
        // Sandboxes being deleted still hold their slot.
        assert_eq!(to_create(3, 4, 0, counts(0, 1, 0, 2, 1)), 0);
        assert_eq!(to_create(5, 2, 0, counts(0, 0, 0, 0, 0)), 2);
    }
}
