//! The Kubernetes runtime against a real kube-apiserver (started by `scripts/kube-test-env.sh`),
//! the harness playing the kubelet with real agent processes: claims, warm-up, release (destroy
//! and reset), replacement, two replicas with one leader, adoption after the leader stops.

mod common;

use antwort_common::identity::dev_ca::DevCa;
use antwort_common::identity::{FilesConfig, IdentityConfig};
use antwort_pool_manager::Config;
use antwort_pool_manager::config::RuntimeConfig;
use antwort_pool_manager::runtime::kube::KubeConfig;
use antwort_pool_manager::sandbox_identity::SandboxIdentity;
use common::stack;

use std::collections::BTreeSet;
use std::time::Duration;

use antwort_pool_manager::SandboxPool;
use antwort_pool_manager::crd::{PoolResources, RecyclePolicy, SandboxKind, SandboxPoolSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::ResourceExt;
use kube::api::{DeleteParams, PostParams};

use common::{KubeEnv, eventually};

fn pool(name: &str, min_ready: u32, max_pods: u32) -> SandboxPool {
    SandboxPool::new(
        name,
        SandboxPoolSpec {
            kind: SandboxKind::Python,
            image: "registry.example/antwort-sandbox:test".to_owned(),
            min_ready,
            max_pods,
            resources: PoolResources {
                cpu: "500m".to_owned(),
                memory: "256Mi".to_owned(),
                ..PoolResources::default()
            },
            runtime_class_name: None,
            idle_timeout_seconds: 600,
            max_lifetime_seconds: 3600,
            recycle_policy: RecyclePolicy::Destroy,
            egress: false,
            allowed_callers: vec!["spiffe://antwort.test/gateway".to_owned()],
        },
    )
}

fn names(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter().map(ResourceExt::name_any).collect()
}

async fn live_count(env: &KubeEnv, pool: &str) -> usize {
    env.live_pods(pool).await.len()
}

/// Waits `for_how_long`, checking all along that the pool never has more than `max` pods.
async fn never_more_than(env: &KubeEnv, pool: &str, max: usize, for_how_long: Duration) {
    let until = tokio::time::Instant::now() + for_how_long;
    while tokio::time::Instant::now() < until {
        let count = live_count(env, pool).await;
        assert!(count <= max, "pool {pool} has {count} pods, more than {max}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The test CA, a manager identity from it, and a free port every agent of this test uses (each
/// on its own loopback address).
struct Cluster {
    env: KubeEnv,
    clients: stack::Clients,
    _kubelet: common::kubelet::Kubelet,
    manager_svid: tempfile::TempDir,
    agent_port: u16,
}

async fn cluster() -> Cluster {
    let env = KubeEnv::start().await;
    let ca = DevCa::new(stack::TRUST_DOMAIN).expect("a CA");
    let manager_svid = tempfile::tempdir().expect("a folder");
    ca.write_svid(stack::MANAGER_ID, manager_svid.path()).expect("the manager's SVID");
    let agent_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let kubelet =
        common::kubelet::start(env.pods(), &ca, stack::TRUST_DOMAIN, common::NAMESPACE, agent_port);
    Cluster { env, clients: stack::Clients { ca }, _kubelet: kubelet, manager_svid, agent_port }
}

impl Cluster {
    async fn manager(&self) -> stack::ManagerProcess {
        let mut config = Config::default();
        config.server.allowed_callers = vec![stack::GATEWAY_ID.to_owned()];
        config.identity =
            Some(IdentityConfig::Files(FilesConfig::in_dir(self.manager_svid.path())));
        config.claims.wait_ms = 20_000;
        config.reconcile.interval_ms = 300;
        config.runtime = RuntimeConfig::Kubernetes(KubeConfig {
            namespace: common::NAMESPACE.to_owned(),
            agent_port: self.agent_port,
            trust_domain: stack::TRUST_DOMAIN.to_owned(),
            service_account: "default".to_owned(),
            // The harness playing the kubelet mints each pod's SVID itself.
            sandbox_identity: Some(SandboxIdentity::Files {
                secret_name: "sandbox-svid".to_owned(),
            }),
            lease_name: "antwort-pool-manager".to_owned(),
            lease_duration_secs: 3,
        });
        stack::ManagerProcess::start(config, Some(self.env.client.clone())).await
    }

    fn api(&self, manager: &stack::ManagerProcess) -> stack::Api {
        stack::Api { base: manager.api.clone(), client: self.clients.gateway(stack::MANAGER_ID) }
    }
}

fn gateway_pool(name: &str, min_ready: u32, max_pods: u32, policy: RecyclePolicy) -> SandboxPool {
    let mut declared = pool(name, min_ready, max_pods);
    declared.spec.recycle_policy = policy;
    declared.spec.allowed_callers = vec![stack::GATEWAY_ID.to_owned()];
    declared
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_claims_warm_up_execute_release_and_reset() {
    let cluster = cluster().await;
    let env = &cluster.env;
    for declared in [
        gateway_pool("py", 2, 3, RecyclePolicy::Destroy),
        gateway_pool("reuse", 1, 1, RecyclePolicy::Reset),
        gateway_pool("small", 2, 2, RecyclePolicy::Destroy),
    ] {
        env.pools().create(&PostParams::default(), &declared).await.expect("create pool");
    }
    let manager = cluster.manager().await;
    let api = cluster.api(&manager);
    stack::claim_execute_release_destroy(&api, &cluster.clients, "py", 2).await;
    stack::release_resets_and_returns(&api, &cluster.clients, "reuse").await;
    stack::drained_pool_answers_429(&api, "small", 2).await;
    stack::expired_claim_is_reclaimed(&api, &cluster.clients, "py", 2).await;
    stack::bad_requests_get_the_envelope(&api).await;
    stack::only_the_gateway_gets_in(&api, &cluster.clients).await;

    // The claim is a mark on the pod in the cluster, and the status subresource tells operators.
    let claim = api.claim_ok("py", "marked").await;
    let pods = env.live_pods("py").await;
    let marked: Vec<&Pod> = pods
        .iter()
        .filter(|pod| pod.labels().get("antwort.dev/claim") == Some(&claim.claim_id))
        .collect();
    assert_eq!(marked.len(), 1, "exactly one pod carries the claim");
    assert_eq!(marked[0].labels()["antwort.dev/state"], "claimed");
    assert_eq!(marked[0].annotations()["antwort.dev/session-key"], "marked");
    eventually("status shows 1 claimed", || async { env.pool_status("py").await.claimed == 1 })
        .await;
    // A pod deleted behind the manager's back is replaced.
    let victim = pods
        .iter()
        .find(|pod| pod.labels().get("antwort.dev/state").map(String::as_str) == Some("ready"))
        .expect("a ready pod")
        .name_any();
    env.pods().delete(&victim, &DeleteParams::default()).await.expect("delete a pod");
    eventually("the deleted pod is replaced and warmed up", || async {
        let now = names(&env.live_pods("py").await);
        now.len() == 3 && !now.contains(&victim) && env.pool_status("py").await.ready == 2
    })
    .await;
    never_more_than(env, "py", 3, Duration::from_secs(2)).await;
    manager.stop().await;
}

/// Idle claims are reclaimed (renewed ones are not), and pods past `maxLifetimeSeconds` are
/// replaced without the pool ever holding more than `maxPods`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_idle_claims_reclaimed_and_old_pods_replaced_within_max_pods() {
    let cluster = cluster().await;
    let env = &cluster.env;
    let mut idle = gateway_pool("idle", 2, 3, RecyclePolicy::Destroy);
    idle.spec.idle_timeout_seconds = 4;
    let mut aging = gateway_pool("aging", 2, 2, RecyclePolicy::Destroy);
    aging.spec.max_lifetime_seconds = 6;
    for declared in [idle, aging] {
        env.pools().create(&PostParams::default(), &declared).await.expect("create pool");
    }
    let manager = cluster.manager().await;
    let api = cluster.api(&manager);
    stack::idle_claim_is_reclaimed_renewed_one_is_not(&api, &cluster.clients, "idle", 2, 4).await;

    api.wait_ready("aging", 2).await;
    let first = names(&env.live_pods("aging").await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = names(&env.live_pods("aging").await);
        assert!(now.len() <= 2, "more than maxPods pods: {now:?}");
        let status = env.pool_status("aging").await;
        if now.is_disjoint(&first) && now.len() == 2 && status.ready == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pods past their lifetime were not replaced: {first:?} -> {now:?}, {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    manager.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leader_no_pod_handed_out_twice_and_restart_adopts() {
    let cluster = cluster().await;
    let env = &cluster.env;
    env.pools()
        .create(&PostParams::default(), &gateway_pool("ha", 4, 4, RecyclePolicy::Destroy))
        .await
        .expect("create pool");
    let first = cluster.manager().await;
    let second = cluster.manager().await;
    let (api_a, api_b) = (cluster.api(&first), cluster.api(&second));
    api_a.wait_ready("ha", 4).await;
    let leaders = [first.is_leader().await, second.is_leader().await];
    assert_eq!(
        leaders.iter().filter(|leads| **leads).count(),
        1,
        "exactly one leader: {leaders:?}"
    );
    never_more_than(env, "ha", 4, Duration::from_secs(2)).await;

    // Eight claims at once through both replicas: four win distinct pods, four are refused.
    let answers = futures::future::join_all((0..8).map(|n| {
        let api = if n % 2 == 0 { &api_a } else { &api_b };
        async move { api.claim("ha", &format!("race-{n}")).await }
    }))
    .await;
    let mut claims = Vec::new();
    for answer in answers {
        match answer.status().as_u16() {
            200 => claims
                .push(answer.json::<antwort_common::pool_api::Claim>().await.expect("a Claim")),
            429 => {}
            other => panic!("unexpected answer {other}: {:?}", answer.text().await),
        }
    }
    let endpoints: BTreeSet<String> = claims.iter().map(|c| c.agent_endpoint.clone()).collect();
    assert_eq!(claims.len(), 4, "{claims:?}");
    assert_eq!(endpoints.len(), 4, "no pod handed out twice: {claims:?}");

    // The leader goes away: the other replica takes over, adopts the pods, creates no duplicates,
    // and the claims (state in the cluster) are still renewable through it.
    let (leader, follower, follower_api) =
        if first.is_leader().await { (first, second, api_b) } else { (second, first, api_a) };
    leader.stop().await;
    eventually("the follower leads", || async { follower.is_leader().await }).await;
    never_more_than(env, "ha", 4, Duration::from_secs(3)).await;
    for claim in &claims {
        assert_eq!(follower_api.renew(&claim.claim_id).await.status(), 200);
    }
    for claim in &claims {
        assert_eq!(follower_api.release(&claim.claim_id).await, 204);
    }
    follower_api.wait_ready("ha", 4).await;
    never_more_than(env, "ha", 4, Duration::from_secs(2)).await;

    // A restart (the only replica stops, a new one starts) adopts the pods as they are: no pod
    // created or deleted, and a claim made before the restart is still served after it.
    let held = follower_api.claim_ok("ha", "across-restart").await;
    let pods_before = names(&env.live_pods("ha").await);
    follower.stop().await;
    let restarted = cluster.manager().await;
    let api = cluster.api(&restarted);
    eventually("the restarted manager leads", || async { restarted.is_leader().await }).await;
    never_more_than(env, "ha", 4, Duration::from_secs(2)).await;
    assert_eq!(names(&env.live_pods("ha").await), pods_before, "adopted: none created or deleted");
    let status = api.pool("ha").await;
    assert_eq!((status.ready, status.claimed, status.starting), (3, 1, 0), "{status:?}");
    let again = api.claim_ok("ha", "across-restart").await;
    assert_eq!((again.claim_id.as_str(), again.reused), (held.claim_id.as_str(), true));
    assert_eq!(api.renew(&held.claim_id).await.status(), 200);
    let (_, result) = stack::execute(&cluster.clients, &held, "print('adopted')").await;
    assert_eq!(result.stdout, "adopted\n", "{result:?}");
    assert_eq!(api.release(&held.claim_id).await, 204);
    api.wait_ready("ha", 4).await;
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_stored_in_the_cluster_are_hardened() {
    let env = KubeEnv::start().await;
    // The RuntimeClass admission plugin rejects pods naming a RuntimeClass that does not exist.
    let runtime_classes: kube::Api<RuntimeClass> = kube::Api::all(env.client.clone());
    let gvisor: RuntimeClass = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "gvisor" },
        "handler": "runsc",
    }))
    .expect("a RuntimeClass");
    runtime_classes
        .create(&PostParams::default(), &gvisor)
        .await
        .expect("create RuntimeClass gvisor");
    let mut declared = pool("hard", 1, 1);
    declared.spec.runtime_class_name = Some("gvisor".to_owned());
    env.pools().create(&PostParams::default(), &declared).await.expect("create pool");
    let cluster_ca = DevCa::new(stack::TRUST_DOMAIN).expect("a CA");
    let svid = tempfile::tempdir().expect("a folder");
    cluster_ca.write_svid(stack::MANAGER_ID, svid.path()).expect("an SVID");
    let mut config = Config::default();
    config.server.allowed_callers = vec![stack::GATEWAY_ID.to_owned()];
    config.identity = Some(IdentityConfig::Files(FilesConfig::in_dir(svid.path())));
    // Sandboxes run as a ServiceAccount of their own, their SVID from SPIRE's CSI driver.
    let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
        kube::Api::namespaced(env.client.clone(), common::NAMESPACE);
    let account: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "antwort-sandbox" },
            "automountServiceAccountToken": false,
        }))
        .expect("a ServiceAccount");
    accounts.create(&PostParams::default(), &account).await.expect("create the ServiceAccount");
    let identity = SandboxIdentity::Spire { socket_name: "spire-agent.sock".to_owned() };
    config.runtime = RuntimeConfig::Kubernetes(KubeConfig {
        service_account: "antwort-sandbox".to_owned(),
        sandbox_identity: Some(identity.clone()),
        ..KubeConfig::default()
    });
    let _manager = stack::ManagerProcess::start(config, Some(env.client.clone())).await;
    eventually("1 pod created", || async { live_count(&env, "hard").await == 1 }).await;
    // Read back from the API server: what the cluster stored, defaults included.
    let pod = env.live_pods("hard").await.remove(0);
    let stored = env.pods().get(&pod.name_any()).await.expect("get the pod");
    let owner = &stored.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("SandboxPool", "hard"));
    assert_eq!(owner.controller, Some(true));

    let spec = stored.spec.expect("a pod spec");
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    let pod_security = spec.security_context.expect("a pod security context");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert!(pod_security.run_as_user.is_some_and(|uid| uid != 0));
    assert_eq!(pod_security.seccomp_profile.map(|p| p.type_).as_deref(), Some("RuntimeDefault"));

    // A Python pod: the agent, and the `sandbox` container where user code runs (the spawner,
    // as a uid of its own) with the pool's resources; the agent has a fixed share.
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["agent", "sandbox"]);
    let expected_limits = [("agent", "250m", "256Mi"), ("sandbox", "500m", "256Mi")];
    for (container, (name, cpu, memory)) in spec.containers.iter().zip(expected_limits) {
        assert_eq!(container.name, name);
        let security = container.security_context.as_ref().expect("a container security context");
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.privileged, Some(false));
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(
            security.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_owned()])
        );
        assert_eq!(security.capabilities.as_ref().and_then(|c| c.add.clone()), None);
        let resources = container.resources.as_ref().expect("resources");
        let limits = resources.limits.as_ref().expect("limits");
        assert_eq!(limits.get("cpu").map(|q| q.0.as_str()), Some(cpu), "{name}");
        assert_eq!(limits.get("memory").map(|q| q.0.as_str()), Some(memory), "{name}");
        assert_eq!(resources.requests.as_ref(), Some(limits));
    }
    let user_code = spec.containers[1].security_context.as_ref().and_then(|s| s.run_as_user);
    assert!(user_code.is_some_and(|uid| uid != 0 && Some(uid) != pod_security.run_as_user));
    let mounts = |container: &k8s_openapi::api::core::v1::Container| {
        container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.clone(), m.mount_path.clone()))
            .collect::<BTreeSet<(String, String)>>()
    };
    assert_eq!(
        mounts(&spec.containers[1]),
        BTreeSet::from([
            ("sandbox-tmp".to_owned(), "/tmp".to_owned()),
            ("workspace".to_owned(), "/mnt/data".to_owned()),
            ("spawner".to_owned(), "/run/antwort".to_owned()),
        ]),
        "the identity is the agent's alone"
    );
    let container = &spec.containers[0];
    assert_eq!(
        mounts(container),
        BTreeSet::from([
            ("tmp".to_owned(), "/tmp".to_owned()),
            ("workspace".to_owned(), "/mnt/data".to_owned()),
            ("spawner".to_owned(), "/run/antwort".to_owned()),
            ("spiffe-identity".to_owned(), "/spiffe-workload-api".to_owned()),
        ])
    );
    for volume in spec.volumes.iter().flatten() {
        if volume.name == "spiffe-identity" {
            // Read-only, from the SPIFFE CSI driver: the agent's Workload API socket.
            let csi = volume.csi.as_ref().expect("a CSI volume");
            assert_eq!((csi.driver.as_str(), csi.read_only), ("csi.spiffe.io", Some(true)));
            continue;
        }
        let empty_dir = volume.empty_dir.as_ref().expect("only emptyDir volumes");
        assert!(empty_dir.size_limit.is_some(), "{} has a size limit", volume.name);
    }
    assert_eq!(spec.volumes.iter().flatten().count(), 5);
    let env: Vec<(String, Option<String>)> =
        container.env.iter().flatten().map(|v| (v.name.clone(), v.value.clone())).collect();
    for var in identity.agent_env() {
        assert!(env.contains(&(var.name.clone(), var.value.clone())), "{var:?} in {env:?}");
    }
    assert_eq!(spec.service_account_name.as_deref(), Some("antwort-sandbox"));
}

/// The pod every identity mode renders is one the API server accepts (server-side dry-run: full
/// validation and admission, nothing stored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sandbox_identity_mode_renders_a_pod_the_apiserver_accepts() {
    let env = KubeEnv::start().await;
    let declared = env
        .pools()
        .create(&PostParams::default(), &pool("modes", 1, 1))
        .await
        .expect("create pool");
    for identity in [
        SandboxIdentity::Spire { socket_name: "spire-agent.sock".to_owned() },
        SandboxIdentity::Csi {},
        SandboxIdentity::Files { secret_name: "antwort-sandbox-svid".to_owned() },
    ] {
        let config =
            KubeConfig { sandbox_identity: Some(identity.clone()), ..KubeConfig::default() };
        let rendered =
            antwort_pool_manager::pod::render(&declared, &[stack::MANAGER_ID.to_owned()], &config);
        let params = PostParams { dry_run: true, ..PostParams::default() };
        let stored = env.pods().create(&params, &rendered).await.unwrap_or_else(|error| {
            panic!("{identity:?}: the API server refuses the pod: {error}")
        });
        let spec = stored.spec.expect("a pod spec");
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|volume| volume.name == "spiffe-identity")
            .expect("the identity volume");
        assert_eq!(volume, &identity.volume(antwort_pool_manager::pod::SANDBOX_UID));
    }
    assert!(env.live_pods("modes").await.is_empty(), "a dry run stores nothing");
}
