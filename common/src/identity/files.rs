//! [`FileSource`]: SVID, key and bundle as PEM files on disk (cert-manager's csi-driver-spiffe,
//! spiffe-helper, or the development CA), re-read on an interval so rotation needs no restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::error::{Error, Result};
use super::material::Identity;
use super::source::{IdentitySource, Publisher};

/// Where the PEM files are. Relative file names are resolved against `dir`.
///
/// The defaults are cert-manager's layout (`tls.crt`, `tls.key`, `ca.crt`), which the
/// development CA writes too; spiffe-helper's is `svid.pem`, `svid_key.pem`, `bundle.pem`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// The folder the files live in (the CSI volume's mount point).
    #[serde(default)]
    pub dir: PathBuf,
    /// Our SVID certificate chain, leaf first.
    #[serde(default = "default_cert")]
    pub cert: PathBuf,
    /// The SVID's private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(default = "default_key")]
    pub key: PathBuf,
    /// The CA certificates of our trust domain.
    #[serde(default = "default_bundle")]
    pub bundle: PathBuf,
    /// How often the files are re-read, in milliseconds. Reading three small files is cheap, and
    /// comparing content (not mtimes) catches every kind of replacement, including atomic
    /// symlink swaps and writes within one mtime tick.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
}

fn default_cert() -> PathBuf {
    "tls.crt".into()
}
fn default_key() -> PathBuf {
    "tls.key".into()
}
fn default_bundle() -> PathBuf {
    "ca.crt".into()
}
fn default_poll_interval_ms() -> u64 {
    1000
}

impl FilesConfig {
    /// cert-manager's layout (`tls.crt`, `tls.key`, `ca.crt`) in `dir`; also what the
    /// development CA writes.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            cert: default_cert(),
            key: default_key(),
            bundle: default_bundle(),
            poll_interval_ms: default_poll_interval_ms(),
        }
    }

    /// spiffe-helper's layout (`svid.pem`, `svid_key.pem`, `bundle.pem`) in `dir`.
    pub fn spiffe_helper_layout(dir: impl Into<PathBuf>) -> Self {
        Self {
            cert: "svid.pem".into(),
            key: "svid_key.pem".into(),
            bundle: "bundle.pem".into(),
            ..Self::in_dir(dir)
        }
    }

    /// Sets the re-read interval.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// The certificate, key and bundle paths, resolved against `dir`.
    pub fn paths(&self) -> [PathBuf; 3] {
        [self.dir.join(&self.cert), self.dir.join(&self.key), self.dir.join(&self.bundle)]
    }

    fn validate(&self) -> Result<()> {
        if self.poll_interval_ms == 0 {
            return Err(Error::Config("files.poll_interval_ms must be greater than 0".into()));
        }
        for (name, path) in [("cert", &self.cert), ("key", &self.key), ("bundle", &self.bundle)] {
            if path.as_os_str().is_empty() {
                return Err(Error::Config(format!("files.{name} must not be empty")));
            }
        }
        Ok(())
    }
}

/// An identity read from PEM files, re-read every `poll_interval_ms`.
///
/// A set of files that fails to load (missing, half-written, key not matching) is logged and
/// skipped; the last good identity stays in use until a good set appears.
#[derive(Debug)]
pub struct FileSource {
    publisher: Publisher,
    /// Stops the polling task when the last user of the source goes away.
    _stop: DropGuard,
}

impl FileSource {
    /// Loads the files once right away (so a source with good files is ready on return) and
    /// starts re-reading them in the background. Missing or bad files are not an error here: the
    /// source stays not-ready until they appear. Must be called within a tokio runtime.
    pub fn start(config: FilesConfig) -> Result<Arc<Self>> {
        config.validate()?;
        let publisher = Publisher::new();
        let mut poller = Poller { config, last_seen: None };
        if let Some(identity) = poller.poll_blocking() {
            publisher.publish(identity);
        }
        let stop = CancellationToken::new();
        let source = Arc::new(Self { publisher, _stop: stop.clone().drop_guard() });
        let weak = Arc::downgrade(&source);
        // Detached on purpose: the task holds only a weak reference and ends when the source is
        // dropped (the drop guard cancels it).
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_millis(poller.config.poll_interval_ms));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Some(identity) = poller.poll().await {
                    match weak.upgrade() {
                        Some(source) => source.publisher.publish(identity),
                        None => return,
                    }
                }
            }
        });
        Ok(source)
    }
}

impl IdentitySource for FileSource {
    fn subscribe(&self) -> watch::Receiver<Option<Arc<Identity>>> {
        self.publisher.subscribe()
    }
}

struct Poller {
    config: FilesConfig,
    /// The bytes of the last set we tried, good or bad: unchanged files are neither parsed nor
    /// logged again.
    last_seen: Option<[Vec<u8>; 3]>,
}

impl Poller {
    fn poll_blocking(&mut self) -> Option<Identity> {
        let read = self.config.paths().map(|p| std::fs::read(&p).map_err(|e| (p, e)));
        self.consider(read)
    }

    async fn poll(&mut self) -> Option<Identity> {
        let [cert, key, bundle] = self.config.paths();
        let read = [read(cert).await, read(key).await, read(bundle).await];
        self.consider(read)
    }

    fn consider(
        &mut self,
        read: [std::result::Result<Vec<u8>, (PathBuf, std::io::Error)>; 3],
    ) -> Option<Identity> {
        let [cert, key, bundle] = read;
        let contents = match (cert, key, bundle) {
            (Ok(cert), Ok(key), Ok(bundle)) => [cert, key, bundle],
            (Err((path, source)), _, _)
            | (_, Err((path, source)), _)
            | (_, _, Err((path, source))) => {
                let error = Error::File { path, source };
                // A missing file is the normal state before cert-manager's first write; say it
                // once per change, not every tick.
                if self.last_seen.take().is_some() {
                    tracing::warn!(%error, "identity files unreadable; keeping the last identity");
                } else {
                    tracing::debug!(%error, "identity files not readable yet");
                }
                return None;
            }
        };
        if self.last_seen.as_ref() == Some(&contents) {
            return None;
        }
        let [cert, key, bundle] = &contents;
        let loaded = Identity::from_pem(cert, key, bundle);
        self.last_seen = Some(contents);
        match loaded {
            Ok(identity) => Some(identity),
            Err(error) => {
                tracing::warn!(%error, dir = %self.config.dir.display(), "identity files rejected; keeping the last identity");
                None
            }
        }
    }
}

async fn read(path: PathBuf) -> std::result::Result<Vec<u8>, (PathBuf, std::io::Error)> {
    tokio::fs::read(&path).await.map_err(|e| (path, e))
}

/// Writes `contents` to `path` atomically (temp file + rename in the same folder), so a reader
/// never sees half a file. `mode` is the Unix permission (0o600 for keys). Used by the
/// development CA.
#[cfg(feature = "dev-ca")]
pub(crate) fn write_atomic(
    path: &std::path::Path,
    contents: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let dir = path.parent().unwrap_or_else(|| std::path::Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
