//! The boundary between where SVIDs come from and who uses them: an [`IdentitySource`] publishes
//! [`Identity`] snapshots on a `tokio::sync::watch`; the TLS layer reads the latest one at every
//! handshake, so rotation needs no restart and no rebuilt configuration.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::error::{Error, Result};
use super::material::Identity;

/// A live supply of workload identity: the SPIFFE Workload API ([`super::WorkloadApiSource`]) or
/// PEM files on disk ([`super::FileSource`]).
///
/// `None` means no SVID has arrived yet: handshakes fail closed and `/readyz` should say not
/// ready. Once an identity is published, later failures to refresh keep the last good one (a
/// peer will refuse it once it expires).
pub trait IdentitySource: Send + Sync + fmt::Debug + 'static {
    /// Subscribes to identity updates; the receiver's current value is the latest identity.
    fn subscribe(&self) -> watch::Receiver<Option<Arc<Identity>>>;

    /// The latest identity, if any has arrived.
    fn current(&self) -> Option<Arc<Identity>> {
        self.subscribe().borrow().clone()
    }

    /// Whether an SVID has arrived: what a binary's `/readyz` checks.
    fn is_ready(&self) -> bool {
        self.subscribe().borrow().is_some()
    }
}

/// A shared, type-erased source: what the TLS, server and client helpers take.
pub type SharedSource = Arc<dyn IdentitySource>;

/// Waits until `source` has an SVID, for at most `timeout`.
pub async fn wait_ready(source: &dyn IdentitySource, timeout: Duration) -> Result<Arc<Identity>> {
    let mut updates = source.subscribe();
    let waited = tokio::time::timeout(timeout, updates.wait_for(Option::is_some)).await;
    match waited {
        Ok(Ok(identity)) => Ok(identity.clone().expect("wait_for checked it is Some")),
        // The sender lives as long as the source does; a closed channel means the source's task
        // ended, which is as good as never getting an SVID.
        Ok(Err(_)) | Err(_) => Err(Error::NotReady(timeout)),
    }
}

/// The writing half both sources share.
#[derive(Debug)]
pub(crate) struct Publisher {
    tx: watch::Sender<Option<Arc<Identity>>>,
}

impl Publisher {
    pub(crate) fn new() -> Self {
        Self { tx: watch::Sender::new(None) }
    }

    pub(crate) fn publish(&self, identity: Identity) {
        tracing::info!(spiffe_id = %identity.spiffe_id(), "identity updated");
        self.tx.send_replace(Some(Arc::new(identity)));
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Arc<Identity>>> {
        self.tx.subscribe()
    }
}

/// An identity set by the program itself: for tests, and for callers that obtain SVIDs some
/// other way. [`StaticSource::set`] is a rotation.
#[derive(Debug)]
pub struct StaticSource {
    publisher: Publisher,
}

impl StaticSource {
    /// A source that is ready at once with `identity`.
    pub fn new(identity: Identity) -> Arc<Self> {
        let source = Arc::new(Self { publisher: Publisher::new() });
        source.set(identity);
        source
    }

    /// Replaces the identity; the next handshake uses it.
    pub fn set(&self, identity: Identity) {
        self.publisher.publish(identity);
    }
}

impl IdentitySource for StaticSource {
    fn subscribe(&self) -> watch::Receiver<Option<Arc<Identity>>> {
        self.publisher.subscribe()
    }
}
