//! One sandbox pod: how it is rendered from its pool (hardened by construction) and how a pod found
//! in the cluster is classified. Everything the manager knows about a pod is in its labels,
//! annotations and status, so a restarted manager reads the same state back.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction, Pod,
    PodSecurityContext, PodSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::ResourceExt;

use crate::crd::SandboxPool;

/// Names the pool a pod belongs to; the manager's pod watch and lists select on it.
pub const LABEL_POOL: &str = "antwort.dev/pool";
/// `warm` until claimed, then `claimed` (set by the claim API, later).
pub const LABEL_STATE: &str = "antwort.dev/state";
pub const LABEL_KIND: &str = "antwort.dev/kind";
/// `true`/`false`: NetworkPolicies select on it to allow or deny egress.
pub const LABEL_EGRESS: &str = "antwort.dev/egress";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER_NAME: &str = "antwort-pool-manager";
pub const STATE_WARM: &str = "warm";
pub const STATE_CLAIMED: &str = "claimed";
/// The pool generation a pod was rendered from, for rolling pools onto a new spec (later).
pub const ANNOTATION_POOL_GENERATION: &str = "antwort.dev/pool-generation";

/// The uid and gid the sandbox runs as; the image must own nothing it needs to write.
pub const SANDBOX_UID: i64 = 65532;
pub const AGENT_PORT: i32 = 8443;
pub const ADMIN_PORT: i32 = 9090;
pub const WORKSPACE_PATH: &str = "/mnt/data";

/// Where a pod stands, as seen in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    /// Warm and passed its warm-up: can be claimed.
    Ready,
    /// Handed out to a caller.
    Claimed,
    /// Created, not ready yet.
    Starting,
    /// Crashed, finished, or otherwise unusable: to be deleted and replaced.
    Failed,
    /// Older than the pool's max lifetime: to be deleted and replaced.
    Expired,
    /// Being deleted; still occupies a slot under `maxPods` until it is gone.
    Terminating,
}

/// The label selector for the pods of `pool_name`.
pub fn pool_selector(pool_name: &str) -> String {
    format!("{LABEL_POOL}={pool_name},{LABEL_MANAGED_BY}={MANAGER_NAME}")
}

/// Classifies `pod` of `pool` at `now`.
pub fn classify(pool: &SandboxPool, pod: &Pod, now: Timestamp) -> PodState {
    if pod.metadata.deletion_timestamp.is_some() {
        return PodState::Terminating;
    }
    let phase = pod.status.as_ref().and_then(|status| status.phase.as_deref()).unwrap_or("Pending");
    if phase == "Failed" || phase == "Succeeded" || any_container_terminated(pod) {
        return PodState::Failed;
    }
    if let Some(created) = &pod.metadata.creation_timestamp {
        let age = now.duration_since(created.0);
        if age.as_secs() >= 0 && age.as_secs().unsigned_abs() >= pool.spec.max_lifetime_seconds {
            return PodState::Expired;
        }
    }
    if pod.labels().get(LABEL_STATE).map(String::as_str) == Some(STATE_CLAIMED) {
        return PodState::Claimed;
    }
    if phase == "Running" && condition_true(pod, "Ready") && warmup_passed(pod) {
        PodState::Ready
    } else {
        PodState::Starting
    }
}

/// The warm-up check hook: a pod counts as ready only once its agent answered a real warm-up
/// execution over mTLS. Until that call exists, the kubelet's (or the test harness's) `Ready`
/// condition is all there is, and this accepts every pod that reached it.
pub fn warmup_passed(_pod: &Pod) -> bool {
    true
}

fn condition_true(pod: &Pod, type_: &str) -> bool {
    pod.status.as_ref().and_then(|status| status.conditions.as_ref()).is_some_and(|conditions| {
        conditions.iter().any(|condition| condition.type_ == type_ && condition.status == "True")
    })
}

/// A sandbox's container never restarts (restartPolicy Never): one that terminated has lost
/// whatever state a caller relied on.
fn any_container_terminated(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|status| status.container_statuses.as_ref()).is_some_and(
        |statuses| {
            statuses
                .iter()
                .any(|status| status.state.as_ref().is_some_and(|state| state.terminated.is_some()))
        },
    )
}

/// Renders a new warm pod for `pool`: named `<pool>-<random>` by the API server, owned by the pool
/// (so deleting the pool deletes its pods, and pod events wake the pool's reconcile).
pub fn render(pool: &SandboxPool) -> Pod {
    let spec = &pool.spec;
    let pool_name = pool.name_any();
    let labels = BTreeMap::from([
        (LABEL_POOL.to_owned(), pool_name.clone()),
        (LABEL_STATE.to_owned(), STATE_WARM.to_owned()),
        (LABEL_KIND.to_owned(), spec.kind.as_str().to_owned()),
        (LABEL_EGRESS.to_owned(), spec.egress.to_string()),
        (LABEL_MANAGED_BY.to_owned(), MANAGER_NAME.to_owned()),
    ]);
    let annotations = BTreeMap::from([(
        ANNOTATION_POOL_GENERATION.to_owned(),
        pool.metadata.generation.unwrap_or(0).to_string(),
    )]);
    let limits = BTreeMap::from([
        ("cpu".to_owned(), Quantity(spec.resources.cpu.clone())),
        ("memory".to_owned(), Quantity(spec.resources.memory.clone())),
    ]);
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{pool_name}-")),
            namespace: pool.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: pool.controller_owner_ref(&()).map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            restart_policy: Some("Never".to_owned()),
            runtime_class_name: spec.runtime_class_name.clone(),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(SANDBOX_UID),
                run_as_group: Some(SANDBOX_UID),
                fs_group: Some(SANDBOX_UID),
                seccomp_profile: Some(runtime_default_seccomp()),
                ..PodSecurityContext::default()
            }),
            containers: vec![Container {
                name: "agent".to_owned(),
                image: Some(spec.image.clone()),
                ports: Some(vec![
                    container_port("agent", AGENT_PORT),
                    container_port("admin", ADMIN_PORT),
                ]),
                env: Some(agent_env(pool)),
                readiness_probe: Some(Probe {
                    http_get: Some(HTTPGetAction {
                        path: Some("/readyz".to_owned()),
                        port: IntOrString::String("admin".to_owned()),
                        ..HTTPGetAction::default()
                    }),
                    period_seconds: Some(2),
                    ..Probe::default()
                }),
                // Requests equal limits: the pod is Guaranteed and cannot borrow from neighbours.
                resources: Some(ResourceRequirements {
                    requests: Some(limits.clone()),
                    limits: Some(limits),
                    ..ResourceRequirements::default()
                }),
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    privileged: Some(false),
                    read_only_root_filesystem: Some(true),
                    run_as_non_root: Some(true),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".to_owned()]),
                        add: None,
                    }),
                    seccomp_profile: Some(runtime_default_seccomp()),
                    ..SecurityContext::default()
                }),
                volume_mounts: Some(vec![
                    volume_mount("workspace", WORKSPACE_PATH),
                    volume_mount("tmp", "/tmp"),
                ]),
                ..Container::default()
            }],
            volumes: Some(vec![
                empty_dir("workspace", &spec.resources.workspace_size),
                empty_dir("tmp", &spec.resources.tmp_size),
            ]),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// The agent's configuration, as `ANTWORT_*` overrides (values are YAML scalars or flow lists).
fn agent_env(pool: &SandboxPool) -> Vec<EnvVar> {
    let kind = pool.spec.kind;
    let callers = serde_json::to_string(&pool.spec.allowed_callers)
        .expect("a list of strings always serializes");
    let var = |name: &str, value: String| EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    };
    vec![
        var("ANTWORT_SERVER__LISTEN", format!("0.0.0.0:{AGENT_PORT}")),
        var("ANTWORT_SERVER__ADMIN_LISTEN", format!("0.0.0.0:{ADMIN_PORT}")),
        var("ANTWORT_SERVER__ALLOWED_CALLERS", callers),
        var("ANTWORT_CAPABILITIES__CODE", (kind == crate::crd::SandboxKind::Python).to_string()),
        var(
            "ANTWORT_CAPABILITIES__FILE_SEARCH",
            (kind == crate::crd::SandboxKind::FileSearch).to_string(),
        ),
        var(
            "ANTWORT_CAPABILITIES__WEB_SEARCH",
            (kind == crate::crd::SandboxKind::WebSearch).to_string(),
        ),
        var("ANTWORT_WORKSPACE__ROOT", WORKSPACE_PATH.to_owned()),
    ]
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile { type_: "RuntimeDefault".to_owned(), localhost_profile: None }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn volume_mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount { name: name.to_owned(), mount_path: path.to_owned(), ..VolumeMount::default() }
}

fn empty_dir(name: &str, size_limit: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: None,
            size_limit: Some(Quantity(size_limit.to_owned())),
        }),
        ..Volume::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{SandboxKind, SandboxPoolSpec};

    fn pool(kind: SandboxKind, egress: bool) -> SandboxPool {
        let spec: SandboxPoolSpec = serde_json::from_value(serde_json::json!({
            "kind": kind,
            "image": "img",
            "minReady": 1,
            "maxPods": 2,
            "egress": egress,
            "allowedCallers": ["spiffe://td/gateway"],
        }))
        .expect("a minimal spec with defaults");
        SandboxPool::new("p", spec)
    }

    fn env(pod: &Pod) -> BTreeMap<String, String> {
        pod.spec.as_ref().expect("spec").containers[0]
            .env
            .iter()
            .flatten()
            .map(|var| (var.name.clone(), var.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn pod_carries_pool_labels_and_agent_config() {
        let pod = render(&pool(SandboxKind::FileSearch, true));
        let labels = pod.labels();
        assert_eq!(labels[LABEL_POOL], "p");
        assert_eq!(labels[LABEL_STATE], STATE_WARM);
        assert_eq!(labels[LABEL_KIND], "file-search");
        assert_eq!(labels[LABEL_EGRESS], "true");
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("p-"));
        let env = env(&pod);
        assert_eq!(env["ANTWORT_CAPABILITIES__FILE_SEARCH"], "true");
        assert_eq!(env["ANTWORT_CAPABILITIES__CODE"], "false");
        assert_eq!(env["ANTWORT_SERVER__ALLOWED_CALLERS"], r#"["spiffe://td/gateway"]"#);
        assert_eq!(env["ANTWORT_WORKSPACE__ROOT"], WORKSPACE_PATH);
    }

    #[test]
    fn classification_follows_phase_labels_and_age() {
        let pool = pool(SandboxKind::Python, false);
        let now = Timestamp::now();
        let mut pod = render(&pool);
        assert_eq!(classify(&pool, &pod, now), PodState::Starting);

        pod.status = Some(
            serde_json::from_value(serde_json::json!({
                "phase": "Running",
                "conditions": [{ "type": "Ready", "status": "True" }],
            }))
            .expect("status"),
        );
        assert_eq!(classify(&pool, &pod, now), PodState::Ready);

        pod.metadata
            .labels
            .get_or_insert_default()
            .insert(LABEL_STATE.to_owned(), STATE_CLAIMED.to_owned());
        assert_eq!(classify(&pool, &pod, now), PodState::Claimed);

        pod.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                now - std::time::Duration::from_secs(pool.spec.max_lifetime_seconds + 1),
            ));
        assert_eq!(classify(&pool, &pod, now), PodState::Expired);

        pod.metadata.creation_timestamp = None;
        pod.status.as_mut().expect("status").phase = Some("Failed".to_owned());
        assert_eq!(classify(&pool, &pod, now), PodState::Failed);
    }
}
