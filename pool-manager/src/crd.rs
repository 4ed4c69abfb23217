//! The `SandboxPool` custom resource (`antwort.dev/v1alpha1`): what an operator declares (spec) and
//! what the manager reports back (status). The CRD manifest under `deploy/crd/` is generated from
//! these types by [`crd_yaml`]; a test keeps the committed file equal to it.

use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A pool of warm sandbox pods of one kind and image.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "antwort.dev",
    version = "v1alpha1",
    kind = "SandboxPool",
    plural = "sandboxpools",
    shortname = "sbp",
    namespaced,
    status = "SandboxPoolStatus",
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.kind"}"#,
    printcolumn = r#"{"name":"Min-Ready","type":"integer","jsonPath":".spec.minReady"}"#,
    printcolumn = r#"{"name":"Max","type":"integer","jsonPath":".spec.maxPods"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"Claimed","type":"integer","jsonPath":".status.claimed"}"#,
    printcolumn = r#"{"name":"Starting","type":"integer","jsonPath":".status.starting"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.failed"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxPoolSpec {
    /// What the pods in this pool serve.
    pub kind: SandboxKind,
    /// The sandbox image (it runs `antwort-sandbox-agent`).
    pub image: String,
    /// Warm pods kept ready to be claimed.
    pub min_ready: u32,
    /// Upper bound on the pool's pods, warm, starting and claimed together.
    pub max_pods: u32,
    /// Per-pod resources; requests equal limits so a sandbox cannot starve its neighbours.
    #[serde(default)]
    pub resources: PoolResources,
    /// RuntimeClass for the pods, e.g. `gvisor`. Unset: the cluster's default runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    /// A claim not renewed for this long ends as if released: by the recycle
    /// policy, destroyed or reset.
    #[serde(default = "default_idle_timeout_seconds")]
    pub idle_timeout_seconds: u64,
    /// A pod older than this is destroyed and replaced (within `maxPods`). A claimed pod is
    /// never destroyed under its user: it serves its claim to the end (release, expiry or idle
    /// timeout) and is then destroyed, whatever the recycle policy.
    #[serde(default = "default_max_lifetime_seconds")]
    pub max_lifetime_seconds: u64,
    /// What happens to a pod when its claim ends.
    #[serde(default)]
    pub recycle_policy: RecyclePolicy,
    /// Whether code in the pods may open network connections beyond the cluster.
    #[serde(default)]
    pub egress: bool,
    /// SPIFFE IDs (`spiffe://trust-domain/path`) allowed to call the pods' agents.
    #[serde(default)]
    pub allowed_callers: Vec<String>,
}

/// What a pool's pods serve.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxKind {
    /// General-purpose Python code execution.
    Python,
    FileSearch,
    WebSearch,
}

impl SandboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxKind::Python => "python",
            SandboxKind::FileSearch => "file-search",
            SandboxKind::WebSearch => "web-search",
        }
    }
}

/// What happens to a pod when its claim ends.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecyclePolicy {
    /// Delete the pod; nothing of one caller's session can reach the next (the default).
    #[default]
    Destroy,
    /// Reset the agent's sessions and workspace and return the pod to the warm set.
    Reset,
}

/// Per-pod resources as Kubernetes quantities.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolResources {
    #[serde(default = "default_cpu")]
    pub cpu: String,
    #[serde(default = "default_memory")]
    pub memory: String,
    /// Size limit of the `/mnt/data` workspace (an emptyDir).
    #[serde(default = "default_workspace_size")]
    pub workspace_size: String,
    /// Size limit of `/tmp` (an emptyDir).
    #[serde(default = "default_tmp_size")]
    pub tmp_size: String,
}

impl Default for PoolResources {
    fn default() -> Self {
        PoolResources {
            cpu: default_cpu(),
            memory: default_memory(),
            workspace_size: default_workspace_size(),
            tmp_size: default_tmp_size(),
        }
    }
}

impl PoolResources {
    /// `memory` in bytes (a Kubernetes quantity: `512Mi`, `2Gi`, `1G`, `1.5Gi`, `1073741824`);
    /// `None` when it is not one. The local runtime gives each session this much.
    pub fn memory_bytes(&self) -> Option<u64> {
        let text = self.memory.trim();
        let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
        let (number, suffix) = text.split_at(split);
        let factor: f64 = match suffix {
            "" => 1.0,
            "Ki" => 1024.0,
            "Mi" => 1024f64.powi(2),
            "Gi" => 1024f64.powi(3),
            "Ti" => 1024f64.powi(4),
            "k" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "T" => 1e12,
            _ => return None,
        };
        let value: f64 = number.parse().ok()?;
        let bytes = (value * factor).round();
        (bytes >= 1.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
    }
}

fn default_cpu() -> String {
    "1".to_owned()
}
fn default_memory() -> String {
    "512Mi".to_owned()
}
fn default_workspace_size() -> String {
    "1Gi".to_owned()
}
fn default_tmp_size() -> String {
    "64Mi".to_owned()
}
fn default_idle_timeout_seconds() -> u64 {
    600
}
fn default_max_lifetime_seconds() -> u64 {
    3600
}

/// What the manager last saw of the pool; written only through the status subresource.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxPoolStatus {
    /// Warm pods that passed their warm-up and wait for a claim.
    pub ready: u32,
    /// Pods handed out to a caller.
    pub claimed: u32,
    /// Pods created but not ready yet.
    pub starting: u32,
    /// Pods found failed (or expired) in the last pass; they are deleted and replaced.
    pub failed: u32,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<PoolCondition>,
}

/// A Kubernetes-style condition (`Ready`, `SpecValid`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolCondition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    /// RFC 3339; changes only when `status` changes.
    pub last_transition_time: String,
}

/// The CRD manifest as committed under `deploy/crd/sandboxpool.yaml`.
pub fn crd_yaml() -> String {
    let body = serde_yaml_ng::to_string(&SandboxPool::crd()).expect("a CRD always serializes");
    format!(
        "# Generated by `antwort-pool-manager crd` from pool-manager/src/crd.rs; do not edit.\n{body}"
    )
}

impl SandboxPoolSpec {
    /// What the schema cannot say; every problem, each naming its field. Empty: the spec is usable.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.image.trim().is_empty() {
            problems.push("spec.image: must not be empty".to_owned());
        }
        if self.max_pods == 0 {
            problems.push("spec.maxPods: must be at least 1".to_owned());
        }
        if self.min_ready > self.max_pods {
            problems.push(format!(
                "spec.minReady: {} exceeds spec.maxPods {}",
                self.min_ready, self.max_pods
            ));
        }
        if self.max_lifetime_seconds == 0 {
            problems.push("spec.maxLifetimeSeconds: must be at least 1".to_owned());
        }
        if self.idle_timeout_seconds == 0 {
            problems.push("spec.idleTimeoutSeconds: must be at least 1".to_owned());
        }
        if self.resources.memory_bytes().is_none() {
            problems.push(format!(
                "spec.resources.memory: {:?} is not a memory quantity (e.g. 512Mi, 2Gi)",
                self.resources.memory
            ));
        }
        for (index, caller) in self.allowed_callers.iter().enumerate() {
            // The same parser the agents use, so a pool never hands them an ID they refuse.
            if antwort_common::identity::SpiffeId::new(caller).is_err() {
                problems.push(format!(
                    "spec.allowedCallers[{index}]: {caller:?} is not a SPIFFE ID (spiffe://trust-domain/path)"
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(min_ready: u32, max_pods: u32, callers: &[&str]) -> SandboxPoolSpec {
        serde_json::from_value(serde_json::json!({
            "kind": "python",
            "image": "img",
            "minReady": min_ready,
            "maxPods": max_pods,
            "allowedCallers": callers,
        }))
        .expect("a spec")
    }

    #[test]
    fn problems_name_each_bad_field() {
        assert!(spec(2, 3, &["spiffe://td/gateway"]).problems().is_empty());
        let problems = spec(4, 2, &["spiffe://td/gateway", "gateway"]).problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("spec.minReady"));
        assert!(problems[1].starts_with("spec.allowedCallers[1]"));
        assert_eq!(spec(0, 0, &[]).problems(), vec!["spec.maxPods: must be at least 1"]);
    }

    #[test]
    fn memory_quantities_in_bytes() {
        let bytes = |memory: &str| {
            PoolResources { memory: memory.to_owned(), ..PoolResources::default() }.memory_bytes()
        };
        assert_eq!(bytes("512Mi"), Some(512 << 20));
        assert_eq!(bytes("2Gi"), Some(2 << 30));
        assert_eq!(bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("1048576"), Some(1 << 20));
        for bad in ["", "lots", "5 gigs", "Gi", "0", "-1Gi"] {
            assert_eq!(bytes(bad), None, "{bad:?}");
        }
        let mut bad = spec(1, 1, &[]);
        bad.resources.memory = "lots".into();
        assert_eq!(
            bad.problems(),
            vec!["spec.resources.memory: \"lots\" is not a memory quantity (e.g. 512Mi, 2Gi)"]
        );
    }

    #[test]
    fn defaults_fill_what_the_operator_left_out() {
        let spec = spec(1, 1, &[]);
        assert_eq!(spec.recycle_policy, RecyclePolicy::Destroy);
        assert!(!spec.egress);
        assert_eq!(spec.resources, PoolResources::default());
        assert_eq!(spec.max_lifetime_seconds, 3600);
    }
}
