//! The reconcile loop against a real kube-apiserver (started by `scripts/kube-test-env.sh`), the
//! harness playing the kubelet.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use antwort_pool_manager::SandboxPool;
use antwort_pool_manager::crd::{PoolResources, RecyclePolicy, SandboxKind, SandboxPoolSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_pool_replaces_lost_pods_and_respects_max_pods() {
    let env = KubeEnv::start().await;
    env.pools().create(&PostParams::default(), &pool("py", 3, 4)).await.expect("create pool");
    let _manager = env.start_manager();

    // Filled to minReady, counted as starting until the "kubelet" marks them ready.
    eventually("3 pods created", || async { live_count(&env, "py").await == 3 }).await;
    never_more_than(&env, "py", 3, Duration::from_secs(2)).await;
    eventually("status shows 3 starting", || async { env.pool_status("py").await.starting == 3 })
        .await;
    env.mark_all_ready("py").await;
    eventually("status shows 3 ready and Ready=True", || async {
        let status = env.pool_status("py").await;
        status.ready == 3
            && status.starting == 0
            && status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
    })
    .await;

    // A pod deleted behind the manager's back is replaced by a new one.
    let before = names(&env.live_pods("py").await);
    let victim = before.iter().next().expect("a pod").clone();
    env.pods().delete(&victim, &DeleteParams::default()).await.expect("delete a pod");
    eventually("the deleted pod is replaced", || async {
        let now = names(&env.live_pods("py").await);
        now.len() == 3 && !now.contains(&victim)
    })
    .await;
    never_more_than(&env, "py", 3, Duration::from_secs(2)).await;

    // A pod that fails (as the kubelet reports it) is deleted and replaced.
    env.mark_all_ready("py").await;
    let failing = names(&env.live_pods("py").await).into_iter().next().expect("a pod");
    env.set_pod_status(&failing, serde_json::json!({ "phase": "Failed" })).await;
    eventually("the failed pod is replaced", || async {
        let now = names(&env.live_pods("py").await);
        now.len() == 3 && !now.contains(&failing)
    })
    .await;

    // Two pods claimed: minReady asks for 3 more warm ones, maxPods 4 allows only 1 more.
    env.mark_all_ready("py").await;
    for name in names(&env.live_pods("py").await).iter().take(2) {
        env.pods()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&serde_json::json!({
                    "metadata": { "labels": { "antwort.dev/state": "claimed" } }
                })),
            )
            .await
            .expect("label a pod claimed");
    }
    eventually("the pool grows to maxPods", || async { live_count(&env, "py").await == 4 }).await;
    never_more_than(&env, "py", 4, Duration::from_secs(3)).await;
    eventually("status shows 2 claimed and AtMaxPods", || async {
        let status = env.pool_status("py").await;
        status.claimed == 2
            && status.ready + status.starting == 2
            && status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "AtMaxPods")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_manager_adopts_its_pods_without_duplicates() {
    let env = KubeEnv::start().await;
    env.pools().create(&PostParams::default(), &pool("adopt", 2, 5)).await.expect("create pool");
    let manager = env.start_manager();
    eventually("2 pods created", || async { live_count(&env, "adopt").await == 2 }).await;
    env.mark_all_ready("adopt").await;
    eventually("status shows 2 ready", || async { env.pool_status("adopt").await.ready == 2 })
        .await;
    manager.stop().await;

    // While no manager runs, one pod disappears; the next manager must create exactly one.
    let before = names(&env.live_pods("adopt").await);
    let mut survivors = before.clone();
    let victim = survivors.pop_first().expect("a pod");
    env.pods().delete(&victim, &DeleteParams::default()).await.expect("delete a pod");
    eventually("the pod is gone", || async { live_count(&env, "adopt").await == 1 }).await;

    let _manager = env.start_manager();
    eventually("the pool is refilled", || async { live_count(&env, "adopt").await == 2 }).await;
    // Several resync periods (1 s each): no duplicates, and the surviving pod was adopted.
    never_more_than(&env, "adopt", 2, Duration::from_secs(3)).await;
    let after = names(&env.live_pods("adopt").await);
    assert!(survivors.is_subset(&after), "the surviving pods {survivors:?} were kept: {after:?}");
    env.mark_all_ready("adopt").await;
    eventually("status shows 2 ready again", || async {
        env.pool_status("adopt").await.ready == 2
    })
    .await;
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
    let _manager = env.start_manager();
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

    assert_eq!(spec.containers.len(), 1);
    let container = &spec.containers[0];
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
    assert_eq!(limits.get("cpu").map(|q| q.0.as_str()), Some("500m"));
    assert_eq!(limits.get("memory").map(|q| q.0.as_str()), Some("256Mi"));
    assert_eq!(resources.requests.as_ref(), Some(limits));

    let mounts: BTreeSet<(String, String)> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.clone(), m.mount_path.clone()))
        .collect();
    assert_eq!(
        mounts,
        BTreeSet::from([
            ("tmp".to_owned(), "/tmp".to_owned()),
            ("workspace".to_owned(), "/mnt/data".to_owned()),
        ])
    );
    for volume in spec.volumes.iter().flatten() {
        let empty_dir = volume.empty_dir.as_ref().expect("only emptyDir volumes");
        assert!(empty_dir.size_limit.is_some(), "{} has a size limit", volume.name);
    }
    assert_eq!(spec.volumes.iter().flatten().count(), 2);
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
}
