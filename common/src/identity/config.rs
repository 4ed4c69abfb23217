//! [`IdentityConfig`]: the `identity:` section every binary's config file shares.

use std::sync::Arc;

use serde::Deserialize;

use super::error::Result;
use super::files::{FileSource, FilesConfig};
use super::source::SharedSource;
use super::workload::{WorkloadApiConfig, WorkloadApiSource};

/// Where this workload's SVID comes from.
///
/// ```yaml
/// identity:
///   source: workload_api              # SPIRE
///   endpoint: unix:///run/spire/agent-sockets/spire-agent.sock   # default: $SPIFFE_ENDPOINT_SOCKET
/// ---
/// identity:
///   source: files                     # cert-manager csi-driver-spiffe, or the dev CA
///   dir: /var/run/secrets/spiffe.io   # tls.crt, tls.key, ca.crt unless `cert`/`key`/`bundle` say otherwise
///   poll_interval_ms: 1000
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum IdentityConfig {
    /// The SPIFFE Workload API.
    WorkloadApi(WorkloadApiConfig),
    /// PEM files on disk.
    Files(FilesConfig),
}

impl IdentityConfig {
    /// Validates the config and starts the source; it becomes ready when the first SVID arrives
    /// (check [`super::IdentitySource::is_ready`] or await [`super::wait_ready`]). Must be called
    /// within a tokio runtime.
    pub fn start(&self) -> Result<SharedSource> {
        Ok(match self {
            Self::WorkloadApi(config) => WorkloadApiSource::start(config.clone())? as SharedSource,
            Self::Files(config) => FileSource::start(config.clone())? as Arc<_>,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_sources() {
        let files: IdentityConfig =
            serde_json::from_str(r#"{"source": "files", "dir": "/certs", "bundle": "bundle.pem"}"#)
                .expect("valid files config");
        let IdentityConfig::Files(files) = files else { panic!("not files: {files:?}") };
        assert_eq!(files.paths()[2], std::path::Path::new("/certs/bundle.pem"));
        assert_eq!(files.paths()[0], std::path::Path::new("/certs/tls.crt"));

        let api: IdentityConfig =
            serde_json::from_str(r#"{"source": "workload_api", "endpoint": "unix:///run/a.sock"}"#)
                .expect("valid workload API config");
        assert_eq!(api, IdentityConfig::WorkloadApi(WorkloadApiConfig::at("unix:///run/a.sock")));
    }

    #[test]
    fn rejects_unknown_fields_and_sources() {
        for json in [
            r#"{"source": "files", "dri": "/certs"}"#,
            r#"{"source": "spire"}"#,
            r#"{"source": "workload_api", "socket": "x"}"#,
        ] {
            assert!(serde_json::from_str::<IdentityConfig>(json).is_err(), "{json}");
        }
    }

    #[tokio::test]
    async fn start_rejects_a_bad_endpoint() {
        let config = IdentityConfig::WorkloadApi(WorkloadApiConfig::at("http://nope"));
        let error = config.start().expect_err("http is not a Workload API scheme").to_string();
        assert!(error.contains("workload_api.endpoint"), "{error}");
    }
}
