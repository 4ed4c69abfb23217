//! One sandbox pod: how it is rendered from its pool (hardened by construction), and how the
//! manager's [`Marks`] are stored on it. Everything the manager knows about a pod is in its labels,
//! annotations and status, so any replica, or a restarted manager, reads the same state back.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction, Pod,
    PodSecurityContext, PodSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use kube::ResourceExt;

use crate::crd::SandboxPool;
use crate::runtime::kube::KubeConfig;
use crate::runtime::{ClaimMarks, Lifecycle, Marks};

/// Names the pool a pod belongs to; the manager's pod watch and lists select on it.
pub const LABEL_POOL: &str = "antwort.dev/pool";
/// The sandbox's [`Lifecycle`]: `starting`, `ready`, `claimed` or `resetting`.
pub const LABEL_STATE: &str = "antwort.dev/state";
/// The id of the claim holding the pod (a label, so a claim is found with a selector).
pub const LABEL_CLAIM: &str = "antwort.dev/claim";
pub const LABEL_KIND: &str = "antwort.dev/kind";
/// `true`/`false`: NetworkPolicies select on it to allow or deny egress.
pub const LABEL_EGRESS: &str = "antwort.dev/egress";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER_NAME: &str = "antwort-pool-manager";
/// The pool generation a pod was rendered from, for rolling pools onto a new spec (later).
pub const ANNOTATION_POOL_GENERATION: &str = "antwort.dev/pool-generation";
pub const ANNOTATION_READY_AT_MS: &str = "antwort.dev/ready-at-ms";
pub const ANNOTATION_RESETTING_SINCE: &str = "antwort.dev/resetting-since";
pub const ANNOTATION_SESSION_KEY: &str = "antwort.dev/session-key";
pub const ANNOTATION_CLAIMED_AT_MS: &str = "antwort.dev/claimed-at-ms";
pub const ANNOTATION_CLAIM_EXPIRES_AT: &str = "antwort.dev/claim-expires-at";
pub const ANNOTATION_CLAIM_LAST_USED: &str = "antwort.dev/claim-last-used";

/// The uid and gid the sandbox runs as; the image must own nothing it needs to write.
pub const SANDBOX_UID: i64 = 65532;
pub const AGENT_PORT: i32 = 8443;
pub const ADMIN_PORT: i32 = 9090;
pub const WORKSPACE_PATH: &str = "/mnt/data";
/// The uid user code runs as in Python pods: the `sandbox` container's (the spawner's), distinct
/// from the agent's [`SANDBOX_UID`], which is also the group both share (fsGroup) for the
/// workspace and the spawner's socket.
pub const CODE_UID: i64 = 65533;
/// The spawner's socket (the agent's `sandbox.spawner`), in an emptyDir both containers mount.
pub const SPAWNER_DIR: &str = "/run/antwort";
pub const SPAWNER_SOCKET: &str = "/run/antwort/spawner.sock";
/// The agent container's fixed share of a Python pod (requests = limits). The pool's
/// `resources` go to the `sandbox` container, where user code runs; the agent only terminates
/// mTLS, relays JSON and output, and streams files to disk.
pub const AGENT_CPU: &str = "250m";
pub const AGENT_MEMORY: &str = "256Mi";

/// The label selector for the pods of `pool_name`.
pub fn pool_selector(pool_name: &str) -> String {
    format!("{LABEL_POOL}={pool_name},{LABEL_MANAGED_BY}={MANAGER_NAME}")
}

/// The pod's marks, read back from its labels and annotations.
pub fn marks(pod: &Pod) -> Marks {
    let labels = pod.labels();
    let annotations = pod.annotations();
    let number = |key: &str| annotations.get(key).and_then(|value| value.parse::<u64>().ok());
    let lifecycle = labels
        .get(LABEL_STATE)
        .and_then(|value| Lifecycle::parse(value))
        .unwrap_or(Lifecycle::Starting);
    let claim = labels.get(LABEL_CLAIM).map(|id| ClaimMarks {
        id: id.clone(),
        session_key: annotations.get(ANNOTATION_SESSION_KEY).cloned().unwrap_or_default(),
        claimed_at_ms: number(ANNOTATION_CLAIMED_AT_MS).unwrap_or(0),
        expires_at: number(ANNOTATION_CLAIM_EXPIRES_AT).unwrap_or(0),
        last_used: number(ANNOTATION_CLAIM_LAST_USED).unwrap_or(0),
    });
    Marks {
        lifecycle,
        ready_at: number(ANNOTATION_READY_AT_MS),
        resetting_since: number(ANNOTATION_RESETTING_SINCE),
        claim,
    }
}

/// A JSON merge patch writing `marks` (and removing what they leave out), conditional on
/// `resource_version`: the API server refuses it with 409 when the pod changed since.
pub fn marks_patch(marks: &Marks, resource_version: &str) -> serde_json::Value {
    let text = |value: Option<String>| value.map_or(serde_json::Value::Null, Into::into);
    let claim = marks.claim.as_ref();
    serde_json::json!({
        "metadata": {
            "resourceVersion": resource_version,
            "labels": {
                LABEL_STATE: marks.lifecycle.as_str(),
                LABEL_CLAIM: text(claim.map(|c| c.id.clone())),
            },
            "annotations": {
                ANNOTATION_READY_AT_MS: text(marks.ready_at.map(|v| v.to_string())),
                ANNOTATION_RESETTING_SINCE: text(marks.resetting_since.map(|v| v.to_string())),
                ANNOTATION_SESSION_KEY: text(claim.map(|c| c.session_key.clone())),
                ANNOTATION_CLAIMED_AT_MS: text(claim.map(|c| c.claimed_at_ms.to_string())),
                ANNOTATION_CLAIM_EXPIRES_AT: text(claim.map(|c| c.expires_at.to_string())),
                ANNOTATION_CLAIM_LAST_USED: text(claim.map(|c| c.last_used.to_string())),
            },
        }
    })
}

/// Whether the pod (or its only container) ended: a sandbox's container never restarts
/// (restartPolicy Never), so one that terminated has lost whatever state a caller relied on.
pub fn has_ended(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let phase = status.phase.as_deref().unwrap_or("Pending");
    if phase == "Failed" || phase == "Succeeded" {
        return Some(format!("pod phase {phase}"));
    }
    status.container_statuses.iter().flatten().find_map(|container| {
        let terminated = container.state.as_ref()?.terminated.as_ref()?;
        Some(format!("container {} exited with {}", container.name, terminated.exit_code))
    })
}

/// The pod's IP once it runs.
pub fn running_ip(pod: &Pod) -> Option<&str> {
    let status = pod.status.as_ref()?;
    (status.phase.as_deref() == Some("Running")).then_some(())?;
    status.pod_ip.as_deref().filter(|ip| !ip.is_empty())
}

/// Renders a new warm pod for `pool`: named `<pool>-<random>` by the API server, owned by the pool
/// (so deleting the pool deletes its pods, and pod events wake the pool's reconcile).
/// `extra_callers` (the manager itself, for warm-ups and resets) are allowed to call the agent on
/// top of the pool's `allowedCallers`. The pod runs as `config.service_account` (its SPIFFE ID
/// names it) and gets its SVID as `config.sandbox_identity` says, in the agent container only.
pub fn render(pool: &SandboxPool, extra_callers: &[String], config: &KubeConfig) -> Pod {
    let spec = &pool.spec;
    let pool_name = pool.name_any();
    let labels = BTreeMap::from([
        (LABEL_POOL.to_owned(), pool_name.clone()),
        (LABEL_STATE.to_owned(), Lifecycle::Starting.as_str().to_owned()),
        (LABEL_KIND.to_owned(), spec.kind.as_str().to_owned()),
        (LABEL_EGRESS.to_owned(), spec.egress.to_string()),
        (LABEL_MANAGED_BY.to_owned(), MANAGER_NAME.to_owned()),
    ]);
    let annotations = BTreeMap::from([(
        ANNOTATION_POOL_GENERATION.to_owned(),
        pool.metadata.generation.unwrap_or(0).to_string(),
    )]);
    let pool_limits = (spec.resources.cpu.as_str(), spec.resources.memory.as_str());
    // Python pods run user code in a second container (see `sandbox_container`).
    let runs_code = spec.kind == crate::crd::SandboxKind::Python;
    let identity = config.sandbox_identity.as_ref();
    let mut agent_env = agent_env(pool, extra_callers);
    agent_env.extend(identity.map(|identity| identity.agent_env()).unwrap_or_default());
    let mut agent_mounts =
        vec![volume_mount("workspace", WORKSPACE_PATH), volume_mount("tmp", "/tmp")];
    agent_mounts.extend(identity.map(|identity| identity.mount()));
    let mut volumes = vec![
        empty_dir("workspace", &spec.resources.workspace_size),
        empty_dir("tmp", &spec.resources.tmp_size),
    ];
    volumes.extend(identity.map(|identity| identity.volume(SANDBOX_UID)));
    let mut sandbox = None;
    if runs_code {
        agent_env.extend(spawner_env(false, spec.egress));
        agent_mounts.push(volume_mount("spawner", SPAWNER_DIR));
        volumes.push(empty_dir("spawner", "1Mi"));
        volumes.push(empty_dir("sandbox-tmp", &spec.resources.tmp_size));
        sandbox = Some(sandbox_container(&spec.image, pool_limits, spec.egress));
    }
    let agent_limits = if runs_code { (AGENT_CPU, AGENT_MEMORY) } else { pool_limits };
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
            service_account_name: Some(config.service_account.clone()),
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
                env: Some(agent_env),
                readiness_probe: Some(Probe {
                    http_get: Some(HTTPGetAction {
                        path: Some("/readyz".to_owned()),
                        port: IntOrString::String("admin".to_owned()),
                        ..HTTPGetAction::default()
                    }),
                    period_seconds: Some(2),
                    ..Probe::default()
                }),
                resources: Some(guaranteed(agent_limits)),
                security_context: Some(hardened(None)),
                volume_mounts: Some(agent_mounts),
                ..Container::default()
            }]
            .into_iter()
            .chain(sandbox)
            .collect(),
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// The `sandbox` container of a Python pod: the same image running `antwort-sandbox-agent
/// spawner` (the image's entrypoint plus the `spawner` argument) as [`CODE_UID`], in the group
/// [`SANDBOX_UID`]. It starts the interpreters the agent asks for over the socket in
/// [`SPAWNER_DIR`], so user code shares neither the agent's uid nor its identity volume (which
/// only the agent mounts), and it carries the pool's resources.
fn sandbox_container(image: &str, limits: (&str, &str), egress: bool) -> Container {
    Container {
        name: "sandbox".to_owned(),
        image: Some(image.to_owned()),
        args: Some(vec!["spawner".to_owned()]),
        env: Some(spawner_env(true, egress)),
        resources: Some(guaranteed(limits)),
        security_context: Some(hardened(Some(CODE_UID))),
        volume_mounts: Some(vec![
            volume_mount("workspace", WORKSPACE_PATH),
            volume_mount("sandbox-tmp", "/tmp"),
            volume_mount("spawner", SPAWNER_DIR),
        ]),
        ..Container::default()
    }
}

/// The spawner settings both containers of a Python pod agree on (sandbox-agent
/// `sandbox.spawner`, `sandbox.uid`/`gid`, `sandbox.network` from the pool's `egress`; the
/// spawner also checks `sandbox.agent_uid`). Without `network`, an `egress: true` pool's
/// NetworkPolicy would allow what the interpreter's confinement still denies.
fn spawner_env(for_spawner: bool, egress: bool) -> Vec<EnvVar> {
    let var = |name: &str, value: String| EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    };
    let mut env = vec![
        var("ANTWORT_SANDBOX__SPAWNER", SPAWNER_SOCKET.to_owned()),
        var("ANTWORT_SANDBOX__UID", CODE_UID.to_string()),
        var("ANTWORT_SANDBOX__GID", SANDBOX_UID.to_string()),
        var("ANTWORT_SANDBOX__NETWORK", egress.to_string()),
    ];
    if for_spawner {
        env.push(var("ANTWORT_SANDBOX__AGENT_UID", SANDBOX_UID.to_string()));
        env.push(var("ANTWORT_WORKSPACE__ROOT", WORKSPACE_PATH.to_owned()));
    }
    env
}

/// Requests equal limits: the pod is Guaranteed and cannot borrow from neighbours.
fn guaranteed((cpu, memory): (&str, &str)) -> ResourceRequirements {
    let limits = BTreeMap::from([
        ("cpu".to_owned(), Quantity(cpu.to_owned())),
        ("memory".to_owned(), Quantity(memory.to_owned())),
    ]);
    ResourceRequirements {
        requests: Some(limits.clone()),
        limits: Some(limits),
        ..ResourceRequirements::default()
    }
}

/// Every container: non-root, read-only root, no privilege escalation, no capabilities,
/// RuntimeDefault seccomp; `run_as_user` overrides the pod's uid.
fn hardened(run_as_user: Option<i64>) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user,
        run_as_group: run_as_user.map(|_| SANDBOX_UID),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), add: None }),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

/// The agent's configuration, as `ANTWORT_*` overrides (values are YAML scalars or flow lists).
fn agent_env(pool: &SandboxPool, extra_callers: &[String]) -> Vec<EnvVar> {
    let kind = pool.spec.kind;
    let mut callers = pool.spec.allowed_callers.clone();
    callers.extend(
        extra_callers.iter().filter(|id| !callers.contains(id)).cloned().collect::<Vec<_>>(),
    );
    let callers = serde_json::to_string(&callers).expect("a list of strings always serializes");
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
    use crate::sandbox_identity::{self, SandboxIdentity};

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

    fn config(identity: Option<SandboxIdentity>) -> KubeConfig {
        KubeConfig {
            service_account: "antwort-sandbox".to_owned(),
            sandbox_identity: identity,
            ..KubeConfig::default()
        }
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
        let pod = render(
            &pool(SandboxKind::FileSearch, true),
            &["spiffe://td/manager".to_owned()],
            &config(None),
        );
        let labels = pod.labels();
        assert_eq!(labels[LABEL_POOL], "p");
        assert_eq!(labels[LABEL_STATE], "starting");
        assert_eq!(labels[LABEL_KIND], "file-search");
        assert_eq!(labels[LABEL_EGRESS], "true");
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("p-"));
        let env = env(&pod);
        assert_eq!(env["ANTWORT_CAPABILITIES__FILE_SEARCH"], "true");
        assert_eq!(env["ANTWORT_CAPABILITIES__CODE"], "false");
        assert_eq!(
            env["ANTWORT_SERVER__ALLOWED_CALLERS"],
            r#"["spiffe://td/gateway","spiffe://td/manager"]"#
        );
        assert_eq!(env["ANTWORT_WORKSPACE__ROOT"], WORKSPACE_PATH);
    }

    /// Every mode mounts one identity volume into the agent container, and only there; the pod
    /// runs as the configured ServiceAccount (the last segment of its SPIFFE ID).
    #[test]
    fn identity_goes_to_the_agent_container_only() {
        for identity in [
            SandboxIdentity::Spire { socket_name: "spire-agent.sock".to_owned() },
            SandboxIdentity::Csi {},
            SandboxIdentity::Files { secret_name: "antwort-sandbox-svid".to_owned() },
        ] {
            let pod =
                render(&pool(SandboxKind::Python, false), &[], &config(Some(identity.clone())));
            let spec = pod.spec.as_ref().expect("spec");
            assert_eq!(spec.service_account_name.as_deref(), Some("antwort-sandbox"));
            assert_eq!(spec.automount_service_account_token, Some(false));
            let volumes: Vec<&Volume> = spec
                .volumes
                .iter()
                .flatten()
                .filter(|volume| volume.name == sandbox_identity::VOLUME)
                .collect();
            assert_eq!(volumes, [&identity.volume(SANDBOX_UID)], "{identity:?}");
            for container in &spec.containers {
                let mounted = container
                    .volume_mounts
                    .iter()
                    .flatten()
                    .filter(|mount| mount.name == sandbox_identity::VOLUME)
                    .count();
                let env_names: Vec<&str> =
                    container.env.iter().flatten().map(|var| var.name.as_str()).collect();
                let has_identity_env = env_names.contains(&"ANTWORT_IDENTITY__SOURCE");
                if container.name == "agent" {
                    assert_eq!(mounted, 1, "{identity:?}");
                    assert!(has_identity_env, "{env_names:?}");
                } else {
                    assert_eq!(mounted, 0, "{} must not see the identity", container.name);
                    assert!(!has_identity_env, "{}: {env_names:?}", container.name);
                }
            }
            let env = env(&pod);
            for var in identity.agent_env() {
                assert_eq!(env.get(&var.name), var.value.as_ref(), "{identity:?}");
            }
        }
        // Without an identity (only tests run so): no identity volume at all.
        let pod = render(&pool(SandboxKind::Python, false), &[], &config(None));
        let spec = pod.spec.expect("spec");
        assert!(spec.volumes.iter().flatten().all(|v| v.name != sandbox_identity::VOLUME));
    }

    #[test]
    fn python_pods_run_user_code_in_a_second_container_as_another_uid() {
        let pod = render(&pool(SandboxKind::Python, false), &[], &config(None));
        let spec = pod.spec.as_ref().expect("spec");
        let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["agent", "sandbox"]);
        let (agent, sandbox) = (&spec.containers[0], &spec.containers[1]);
        let pod_sc = spec.security_context.as_ref().expect("pod security context");
        assert_eq!((pod_sc.run_as_user, pod_sc.fs_group), (Some(SANDBOX_UID), Some(SANDBOX_UID)));
        let sc = sandbox.security_context.as_ref().expect("sandbox security context");
        assert_eq!((sc.run_as_user, sc.run_as_group), (Some(CODE_UID), Some(SANDBOX_UID)));
        assert_ne!(CODE_UID, SANDBOX_UID);
        for container in [agent, sandbox] {
            let sc = container.security_context.as_ref().expect("security context");
            assert_eq!(sc.run_as_non_root, Some(true), "{}", container.name);
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", container.name);
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", container.name);
            let caps = sc.capabilities.as_ref().expect("capabilities");
            assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
            assert!(caps.add.is_none());
            assert_eq!(
                sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
                Some("RuntimeDefault")
            );
            let mounts: Vec<&str> =
                container.volume_mounts.iter().flatten().map(|m| m.mount_path.as_str()).collect();
            assert!(
                mounts.contains(&WORKSPACE_PATH) && mounts.contains(&SPAWNER_DIR),
                "{mounts:?}"
            );
            assert!(mounts.contains(&"/tmp"), "{mounts:?}");
            let vars: BTreeMap<&str, &str> = container
                .env
                .iter()
                .flatten()
                .map(|v| (v.name.as_str(), v.value.as_deref().unwrap_or("")))
                .collect();
            assert_eq!(vars["ANTWORT_SANDBOX__SPAWNER"], SPAWNER_SOCKET);
            assert_eq!(vars["ANTWORT_SANDBOX__UID"], CODE_UID.to_string());
            assert_eq!(vars["ANTWORT_SANDBOX__GID"], SANDBOX_UID.to_string());
            assert_eq!(vars["ANTWORT_SANDBOX__NETWORK"], "false", "the pool has no egress");
        }
        // A pool with egress lets the interpreters use the network the NetworkPolicy allows.
        let open = render(&pool(SandboxKind::Python, true), &[], &config(None));
        for container in &open.spec.as_ref().expect("spec").containers {
            let network =
                container.env.iter().flatten().find(|v| v.name == "ANTWORT_SANDBOX__NETWORK");
            assert_eq!(
                network.and_then(|v| v.value.as_deref()),
                Some("true"),
                "{}",
                container.name
            );
        }
        // The same image, running the spawner; each container has its own /tmp.
        assert_eq!(sandbox.image, agent.image);
        assert_eq!(sandbox.args.as_deref(), Some(&["spawner".to_owned()][..]));
        let tmp = |c: &Container| {
            c.volume_mounts
                .iter()
                .flatten()
                .find(|m| m.mount_path == "/tmp")
                .map(|m| m.name.clone())
        };
        assert_ne!(tmp(agent), tmp(sandbox));
        // The pool's resources go where the code runs; the agent gets its fixed share.
        let limit = |c: &Container, what: &str| {
            c.resources.as_ref().and_then(|r| r.limits.as_ref()).map(|l| l[what].0.clone())
        };
        let resources = &pool(SandboxKind::Python, false).spec.resources;
        assert_eq!(limit(sandbox, "memory"), Some(resources.memory.clone()));
        assert_eq!(limit(sandbox, "cpu"), Some(resources.cpu.clone()));
        assert_eq!(limit(agent, "memory").as_deref(), Some(AGENT_MEMORY));
        assert_eq!(limit(agent, "cpu").as_deref(), Some(AGENT_CPU));

        // Search pods run no user code: the agent alone, with the pool's resources.
        let pod = render(&pool(SandboxKind::WebSearch, true), &[], &config(None));
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.containers.len(), 1);
        assert!(!env(&pod).contains_key("ANTWORT_SANDBOX__SPAWNER"));
        assert_eq!(limit(&spec.containers[0], "memory"), Some(resources.memory.clone()));
    }

    #[test]
    fn marks_round_trip_through_labels_and_annotations() {
        let mut pod = render(&pool(SandboxKind::Python, false), &[], &config(None));
        assert_eq!(marks(&pod), Marks::default());
        let written = Marks {
            lifecycle: Lifecycle::Claimed,
            ready_at: Some(1_700_000_000_123),
            resetting_since: None,
            claim: Some(ClaimMarks {
                id: "c0ffee".into(),
                session_key: "chain/with spaces".into(),
                claimed_at_ms: 1_700_000_000_456,
                expires_at: 1_700_000_600,
                last_used: 1_700_000_001,
            }),
        };
        // Apply the merge patch as the API server would (null removes a key).
        let patch = marks_patch(&written, "42");
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        let apply = |map: &mut Option<BTreeMap<String, String>>, values: &serde_json::Value| {
            let map = map.get_or_insert_default();
            for (key, value) in values.as_object().expect("an object") {
                match value.as_str() {
                    Some(text) => map.insert(key.clone(), text.to_owned()),
                    None => map.remove(key),
                };
            }
        };
        apply(&mut pod.metadata.labels, &patch["metadata"]["labels"]);
        apply(&mut pod.metadata.annotations, &patch["metadata"]["annotations"]);
        assert_eq!(marks(&pod), written);

        let released =
            Marks { lifecycle: Lifecycle::Resetting, resetting_since: Some(5), ..Marks::default() };
        let patch = marks_patch(&released, "43");
        apply(&mut pod.metadata.labels, &patch["metadata"]["labels"]);
        apply(&mut pod.metadata.annotations, &patch["metadata"]["annotations"]);
        assert_eq!(marks(&pod), released);
        assert!(!pod.labels().contains_key(LABEL_CLAIM));
    }
}
