//! How a sandbox pod's agent gets its SPIFFE SVID (`runtime.sandbox_identity`): one volume, its
//! mount and the agent's `ANTWORT_IDENTITY__*` settings, rendered into the **agent container
//! only** (a container running user code never sees the key). The modes match the chart's
//! `spiffe.mode`:
//!
//! ```yaml
//! sandbox_identity: { mode: spire, socket_name: spire-agent.sock }  # SPIFFE CSI driver, Workload API
//! sandbox_identity: { mode: csi }                                   # cert-manager csi-driver-spiffe
//! sandbox_identity: { mode: files, secret_name: antwort-sandbox-svid }  # one Secret, development
//! ```
//!
//! The SVID's ID is the issuer's business (SPIRE's ClusterSPIFFEID, csi-driver-spiffe, whoever
//! filled the Secret); every mode here follows the Kubernetes convention
//! `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`, which is what the manager
//! expects an agent to present ([`crate::runtime::kube`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    CSIVolumeSource, EnvVar, SecretVolumeSource, Volume, VolumeMount,
};
use serde::{Deserialize, Serialize};

/// The volume's name in the pod.
pub const VOLUME: &str = "spiffe-identity";
/// Where the SPIFFE CSI driver's Workload API socket folder is mounted (`spire`).
pub const WORKLOAD_API_DIR: &str = "/spiffe-workload-api";
/// Where the SVID files (`tls.crt`, `tls.key`, `ca.crt`) are mounted (`csi`, `files`).
pub const SVID_DIR: &str = "/var/run/secrets/spiffe.io";
/// The SPIFFE CSI driver (SPIRE): mounts the Workload API socket.
pub const SPIFFE_CSI_DRIVER: &str = "csi.spiffe.io";
/// cert-manager's csi-driver-spiffe: writes the SVID as files, renewed in place.
pub const CERT_MANAGER_CSI_DRIVER: &str = "spiffe.csi.cert-manager.io";
/// Files are readable by owner and group (the pod's fsGroup, the agent's gid): 0440.
const SECRET_MODE: i32 = 0o440;

/// Where a sandbox agent's SVID comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum SandboxIdentity {
    /// SPIRE: the Workload API socket from the SPIFFE CSI driver (`csi.spiffe.io`).
    Spire {
        /// The socket's file name in the driver's folder.
        #[serde(default = "default_socket_name")]
        socket_name: String,
    },
    /// cert-manager csi-driver-spiffe (`spiffe.csi.cert-manager.io`) writes the SVID files.
    Csi {},
    /// A Secret with `tls.crt`, `tls.key` and `ca.crt` (the development CA's layout), shared by
    /// every sandbox of the namespace: for development only.
    Files { secret_name: String },
}

fn default_socket_name() -> String {
    "spire-agent.sock".to_owned()
}

impl SandboxIdentity {
    /// Every problem, named by its field under `prefix` (`runtime.sandbox_identity`).
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let bad_name = |name: &str| {
            name.is_empty() || name.contains('/') || name == "." || name == ".." || name.len() > 253
        };
        match self {
            SandboxIdentity::Spire { socket_name } if bad_name(socket_name) => {
                vec![format!("{prefix}.socket_name: {socket_name:?} must be a file name")]
            }
            SandboxIdentity::Files { secret_name } if bad_name(secret_name) => {
                vec![format!("{prefix}.secret_name: {secret_name:?} must be a Secret's name")]
            }
            _ => Vec::new(),
        }
    }

    /// The pod volume holding the identity; `fs_group` is the pod's fsGroup (the agent's gid),
    /// so the driver's files are readable by the agent and nobody else.
    pub fn volume(&self, fs_group: i64) -> Volume {
        let csi = |driver: &str, attributes: Option<BTreeMap<String, String>>| CSIVolumeSource {
            driver: driver.to_owned(),
            read_only: Some(true),
            volume_attributes: attributes,
            ..CSIVolumeSource::default()
        };
        let mut volume = Volume { name: VOLUME.to_owned(), ..Volume::default() };
        match self {
            SandboxIdentity::Spire { .. } => volume.csi = Some(csi(SPIFFE_CSI_DRIVER, None)),
            SandboxIdentity::Csi {} => {
                let attributes = BTreeMap::from([(
                    format!("{CERT_MANAGER_CSI_DRIVER}/fs-group"),
                    fs_group.to_string(),
                )]);
                volume.csi = Some(csi(CERT_MANAGER_CSI_DRIVER, Some(attributes)));
            }
            SandboxIdentity::Files { secret_name } => {
                volume.secret = Some(SecretVolumeSource {
                    secret_name: Some(secret_name.clone()),
                    default_mode: Some(SECRET_MODE),
                    ..SecretVolumeSource::default()
                })
            }
        }
        volume
    }

    /// The agent container's read-only mount of [`SandboxIdentity::volume`].
    pub fn mount(&self) -> VolumeMount {
        let path = match self {
            SandboxIdentity::Spire { .. } => WORKLOAD_API_DIR,
            SandboxIdentity::Csi {} | SandboxIdentity::Files { .. } => SVID_DIR,
        };
        VolumeMount {
            name: VOLUME.to_owned(),
            mount_path: path.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        }
    }

    /// The agent's `identity:` section as environment variables. With SPIRE the endpoint comes
    /// from the standard `SPIFFE_ENDPOINT_SOCKET` (the agent's default), so the section holds
    /// only its source.
    pub fn agent_env(&self) -> Vec<EnvVar> {
        let var = |name: &str, value: String| EnvVar {
            name: name.to_owned(),
            value: Some(value),
            value_from: None,
        };
        match self {
            SandboxIdentity::Spire { socket_name } => vec![
                var("SPIFFE_ENDPOINT_SOCKET", format!("unix://{WORKLOAD_API_DIR}/{socket_name}")),
                var("ANTWORT_IDENTITY__SOURCE", "workload_api".to_owned()),
            ],
            SandboxIdentity::Csi {} | SandboxIdentity::Files { .. } => vec![
                var("ANTWORT_IDENTITY__SOURCE", "files".to_owned()),
                var("ANTWORT_IDENTITY__DIR", SVID_DIR.to_owned()),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<SandboxIdentity, serde_yaml_ng::Error> {
        serde_yaml_ng::from_str(yaml)
    }

    #[test]
    fn modes_parse_with_defaults_and_refuse_unknown_fields() {
        assert_eq!(
            parse("mode: spire").expect("spire"),
            SandboxIdentity::Spire { socket_name: "spire-agent.sock".to_owned() }
        );
        assert_eq!(parse("mode: csi").expect("csi"), SandboxIdentity::Csi {});
        assert_eq!(
            parse("{mode: files, secret_name: s}").expect("files"),
            SandboxIdentity::Files { secret_name: "s".to_owned() }
        );
        for bad in [
            "mode: vault",
            "mode: files",
            "{mode: csi, secret_name: s}",
            "{mode: spire, socket: x}",
        ] {
            assert!(parse(bad).is_err(), "{bad} must be refused");
        }
        let problems = SandboxIdentity::Files { secret_name: String::new() }.problems("p");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("p.secret_name"), "{problems:?}");
        let problems = SandboxIdentity::Spire { socket_name: "a/b".to_owned() }.problems("p");
        assert!(problems[0].starts_with("p.socket_name"), "{problems:?}");
    }

    #[test]
    fn each_mode_renders_its_volume_mount_and_agent_env() {
        let spire = SandboxIdentity::Spire { socket_name: "agent.sock".to_owned() };
        let volume = spire.volume(65532);
        let csi = volume.csi.as_ref().expect("a CSI volume");
        assert_eq!((csi.driver.as_str(), csi.read_only), (SPIFFE_CSI_DRIVER, Some(true)));
        assert_eq!(csi.volume_attributes, None);
        assert_eq!(spire.mount().mount_path, WORKLOAD_API_DIR);
        let env: Vec<(String, String)> =
            spire.agent_env().into_iter().map(|v| (v.name, v.value.unwrap_or_default())).collect();
        assert_eq!(
            env,
            [
                (
                    "SPIFFE_ENDPOINT_SOCKET".to_owned(),
                    "unix:///spiffe-workload-api/agent.sock".to_owned()
                ),
                ("ANTWORT_IDENTITY__SOURCE".to_owned(), "workload_api".to_owned()),
            ]
        );

        let cert_manager = SandboxIdentity::Csi {};
        let volume = cert_manager.volume(65532);
        let csi = volume.csi.as_ref().expect("a CSI volume");
        assert_eq!(csi.driver, CERT_MANAGER_CSI_DRIVER);
        assert_eq!(
            csi.volume_attributes,
            Some(BTreeMap::from([(
                "spiffe.csi.cert-manager.io/fs-group".to_owned(),
                "65532".to_owned()
            )]))
        );
        assert_eq!(cert_manager.mount().mount_path, SVID_DIR);
        assert_eq!(cert_manager.mount().read_only, Some(true));

        let files = SandboxIdentity::Files { secret_name: "dev-svid".to_owned() };
        let secret = files.volume(65532).secret.expect("a Secret volume");
        assert_eq!(secret.secret_name.as_deref(), Some("dev-svid"));
        assert_eq!(secret.default_mode, Some(0o440));
        for mode in [cert_manager, files] {
            let env: Vec<(String, String)> = mode
                .agent_env()
                .into_iter()
                .map(|v| (v.name, v.value.unwrap_or_default()))
                .collect();
            assert_eq!(
                env,
                [
                    ("ANTWORT_IDENTITY__SOURCE".to_owned(), "files".to_owned()),
                    ("ANTWORT_IDENTITY__DIR".to_owned(), SVID_DIR.to_owned()),
                ]
            );
        }
    }
}
