//! Leader election with a `coordination.k8s.io/v1` Lease (kube-runtime 5 has no helper): only the
//! leader reconciles (creates, warms, resets and deletes sandboxes); every replica serves claims.
//!
//! Each replica, every third of the lease duration: reads the Lease; takes it when it is free or
//! expired, or renews it when it holds it, always with a `replace` carrying the read
//! `resourceVersion`, so of two replicas racing for an expired Lease exactly one wins. A replica
//! stops acting as leader as soon as a renewal fails or its own lease would have run out.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// Who competes for which Lease.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica's name in `holderIdentity` (unique per replica).
    pub holder: String,
    pub duration: Duration,
}

/// Competes for the Lease until `shutdown`, publishing whether this replica leads on `leader`.
/// On shutdown a held Lease is given up (its holder cleared), so another replica takes over at
/// once instead of after the lease duration.
pub async fn run(
    client: Client,
    settings: LeaseSettings,
    leader: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) {
    let leases: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let period = (settings.duration / 3).max(Duration::from_millis(100));
    tokio::pin!(shutdown);
    loop {
        let attempt_started = tokio::time::Instant::now();
        let leading = match try_acquire_or_renew(&leases, &settings).await {
            Ok(leading) => leading,
            Err(error) => {
                tracing::warn!(%error, "lease: could not read or write the Lease");
                false
            }
        };
        if leader.send_replace(leading) != leading {
            tracing::info!(holder = %settings.holder, leading, "lease: leadership changed");
        }
        // Renew well inside the lease; a leader that cannot renew by then steps down.
        let next = attempt_started + period;
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep_until(next) => {}
        }
    }
    if leader.send_replace(false) {
        release(&leases, &settings).await;
    }
}

/// One round: `Ok(true)` when this replica holds the Lease afterwards.
async fn try_acquire_or_renew(leases: &Api<Lease>, settings: &LeaseSettings) -> kube::Result<bool> {
    let now = Timestamp::now();
    let duration_secs = i32::try_from(settings.duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let Some(current) = leases.get_opt(&settings.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(settings.name.clone()),
                namespace: Some(settings.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(settings.holder.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match leases.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            // Another replica created it first.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        };
    };
    let spec = current.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().filter(|holder| !holder.is_empty());
    let ours = holder.as_deref() == Some(settings.holder.as_str());
    let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(renewed), Some(seconds)) => {
            let until = renewed.0 + Duration::from_secs(u64::try_from(seconds.max(0)).unwrap_or(0));
            until < now
        }
        _ => true,
    };
    if !ours && holder.is_some() && !expired {
        return Ok(false);
    }
    let mut next = current.clone();
    let mut spec = spec;
    if !ours {
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        spec.holder_identity = Some(settings.holder.clone());
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(duration_secs);
    next.spec = Some(spec);
    // `replace` sends the resourceVersion we read: a concurrent writer makes this a 409.
    match leases.replace(&settings.name, &PostParams::default(), &next).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

/// Clears our holder so the next replica does not wait for the lease to run out.
async fn release(leases: &Api<Lease>, settings: &LeaseSettings) {
    let Ok(Some(mut current)) = leases.get_opt(&settings.name).await else { return };
    let spec = current.spec.get_or_insert_default();
    if spec.holder_identity.as_deref() != Some(settings.holder.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    match leases.replace(&settings.name, &PostParams::default(), &current).await {
        Ok(_) => tracing::info!(holder = %settings.holder, "lease: released"),
        Err(error) => tracing::warn!(%error, "lease: could not release"),
    }
}
