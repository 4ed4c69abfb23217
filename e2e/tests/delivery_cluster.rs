//! The chart and the overlays against a real kube-apiserver (1.20, from
//! `scripts/kube-test-env.sh`): server-side dry-run of everything they render, then a real
//! `helm install` with the workspace's pool manager, run as the chart's ServiceAccount with the
//! chart's arguments and environment, filling the pools the values ask for while the test plays
//! the kubelet (`kubelet/`: a real `antwort-sandbox-agent` per pod, so every pod counts as ready
//! only after the manager's warm-up execution over mTLS).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use antwort_common::identity::dev_ca::DevCa;
use antwort_e2e::chart::{self, NAMESPACE, RELEASE};
use antwort_e2e::kube_env::{KubeEnv, eventually};
use antwort_e2e::manifests::{self, get, pod_spec};
use antwort_e2e::security::{PodRole, pod_problems};
use antwort_e2e::{tools, workspace};
use serde_json::Value;

mod kubelet;
use kubelet::Kubelet;

fn json(command: &mut Command) -> Value {
    serde_json::from_str(&tools::stdout(command)).expect("kubectl -o json prints JSON")
}

/// Applies `docs` for real (`kubectl apply`).
fn apply(env: &KubeEnv, docs: &[&Value]) {
    if docs.is_empty() {
        return;
    }
    let list = serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": docs });
    let mut child = env
        .kubectl()
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl apply");
    child.stdin.take().expect("stdin").write_all(list.to_string().as_bytes()).expect("write");
    let out = child.wait_with_output().expect("kubectl apply");
    assert!(
        out.status.success(),
        "kubectl apply failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Server-side dry-run apply of `docs`; returns kubectl's report.
fn dry_run(env: &KubeEnv, what: &str, docs: &[&Value]) -> String {
    let file = env.dir().join("dry-run.json");
    let list = serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": docs });
    std::fs::write(&file, list.to_string()).expect("write the manifests");
    let out = tools::output(
        env.kubectl().args(["apply", "--server-side", "--dry-run=server", "-f"]).arg(&file),
    );
    let report =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what}: server-side dry-run failed:\n{report}");
    assert_eq!(
        report.matches("(server dry run)").count(),
        docs.len(),
        "{what}: not every object was dry-run applied:\n{report}"
    );
    report
}

fn install_crd(env: &KubeEnv) {
    tools::stdout(
        env.kubectl().arg("apply").arg("-f").arg(chart::chart_dir().join("crds/sandboxpool.yaml")),
    );
    eventually(
        "the SandboxPool API to be served",
        Duration::from_secs(30),
        || {
            tools::output(env.kubectl().args(["get", "sandboxpools", "-A"]))
                .status
                .success()
                .then_some(())
        },
        || {
            String::from_utf8_lossy(&tools::output(env.kubectl().args(["get", "crd"])).stderr)
                .into_owned()
        },
    );
}

#[test]
fn chart_and_overlays_pass_server_side_dry_run() {
    let env = KubeEnv::start();
    install_crd(&env);
    tools::stdout(env.kubectl().args(["create", "namespace", NAMESPACE]));
    let served: BTreeSet<String> =
        tools::stdout(env.kubectl().arg("api-versions")).lines().map(str::to_owned).collect();

    // The chart, rendered by helm with the server's capabilities: what 1.20 lacks is gated away
    // (policy/v1 and autoscaling/v2 fall back, ClusterSPIFFEID and Route are skipped).
    let sets = [
        None,
        Some("production"),
        Some("three-pools-gvisor"),
        Some("spiffe-csi"),
        Some("spiffe-files"),
        Some("openshift"),
    ];
    for (index, set) in sets.into_iter().enumerate() {
        let what = format!("chart with {}", set.unwrap_or("defaults"));
        // A sandbox namespace per render: helm refuses to adopt one it did not create.
        let sandbox_ns = format!("sandboxes-{index}");
        let mut command = env.helm();
        command
            .args(["template", RELEASE])
            .arg(chart::chart_dir())
            .args(["--namespace", NAMESPACE, "--dry-run=server", "--set"])
            .arg(format!("sandbox.namespace={sandbox_ns}"));
        if let Some(set) = set {
            command.arg("-f").arg(chart::ci_values(set));
        }
        let docs = manifests::parse(&tools::stdout(&mut command));
        for doc in &docs {
            let api = doc["apiVersion"].as_str().expect("apiVersion");
            assert!(
                served.contains(api),
                "{what}: {} uses {api}, which the cluster does not serve",
                manifests::id(doc)
            );
        }
        if set == Some("production") {
            assert_eq!(
                get(&docs, "PodDisruptionBudget", "antwort-gateway")["apiVersion"],
                "policy/v1beta1"
            );
            assert_eq!(
                get(&docs, "HorizontalPodAutoscaler", "antwort-gateway")["apiVersion"],
                "autoscaling/v2beta2"
            );
        }
        let (namespaces, rest): (Vec<&Value>, Vec<&Value>) =
            docs.iter().partition(|doc| manifests::kind(doc) == "Namespace");
        apply(&env, &namespaces);
        dry_run(&env, &what, &rest);
    }

    // The overlays are plain manifests: objects of APIs 1.20 lacks are validated offline only
    // (delivery_kustomize), and must be exactly these.
    let expected_skips: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
        ("deploy/overlays/dev", vec![]),
        ("deploy/overlays/openshift", vec!["Route/antwort-gateway"]),
        (
            "deploy/overlays/production",
            vec![
                "ClusterSPIFFEID/antwort",
                "ClusterSPIFFEID/antwort-sandboxes",
                "HorizontalPodAutoscaler/antwort-gateway",
                "PodDisruptionBudget/antwort-gateway",
            ],
        ),
    ]);
    for (dir, expected) in expected_skips {
        let docs = manifests::parse(&chart::kustomize(dir));
        let (namespaces, rest): (Vec<&Value>, Vec<&Value>) =
            docs.iter().partition(|doc| manifests::kind(doc) == "Namespace");
        apply(&env, &namespaces);
        let (applicable, skipped): (Vec<&Value>, Vec<&Value>) = rest
            .into_iter()
            .partition(|doc| served.contains(doc["apiVersion"].as_str().unwrap_or("")));
        let mut skipped: Vec<String> = skipped.into_iter().map(manifests::id).collect();
        skipped.sort();
        assert_eq!(skipped, expected, "{dir}: objects of APIs the 1.20 apiserver lacks");
        dry_run(&env, dir, &applicable);
    }
}

/// The pool manager as a child process, killed when dropped.
struct Manager {
    child: Child,
    log: std::path::PathBuf,
}

impl Manager {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A kubeconfig authenticating as the chart's pool-manager ServiceAccount.
fn service_account_kubeconfig(env: &KubeEnv, namespace: &str, account: &str) -> std::path::PathBuf {
    let token = tools::stdout(env.kubectl().args([
        "create",
        "token",
        account,
        "-n",
        namespace,
        "--duration=1h",
    ]));
    let server = std::fs::read_to_string(env.dir().join("server")).expect("the server URL");
    let path = env.dir().join(format!("{account}.kubeconfig"));
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{ "name": "test", "cluster": { "server": server.trim(), "insecure-skip-tls-verify": true } }],
        "users": [{ "name": account, "user": { "token": token.trim() } }],
        "contexts": [{ "name": "test", "context": { "cluster": "test", "user": account, "namespace": namespace } }],
        "current-context": "test",
    });
    std::fs::write(&path, config.to_string()).expect("write the kubeconfig");
    path
}

/// Waits until every pool reports `ready` equal to its minReady (which takes a warm-up execution
/// over mTLS against each pod's agent), playing the kubelet meanwhile.
fn wait_for_pools(
    env: &KubeEnv,
    namespace: &str,
    expected: &BTreeMap<&str, u64>,
    manager: &Manager,
    kubelet: &mut Kubelet,
) {
    eventually(
        &format!("pools {expected:?} to be filled"),
        Duration::from_secs(90),
        || {
            kubelet.sync(env);
            let pools =
                json(env.kubectl().args(["get", "sandboxpools", "-n", namespace, "-o", "json"]));
            let ready: BTreeMap<String, u64> = pools["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|pool| {
                    (
                        manifests::name(pool).to_owned(),
                        pool["status"]["ready"].as_u64().unwrap_or(0),
                    )
                })
                .collect();
            let pods = json(env.kubectl().args(["get", "pods", "-n", namespace, "-o", "json"]));
            let mut per_pool: BTreeMap<String, u64> = BTreeMap::new();
            for pod in pods["items"].as_array().expect("items") {
                if pod["metadata"]["deletionTimestamp"].is_null() {
                    let pool =
                        pod["metadata"]["labels"]["antwort.dev/pool"].as_str().unwrap_or("?");
                    *per_pool.entry(pool.to_owned()).or_default() += 1;
                }
            }
            expected
                .iter()
                .all(|(pool, want)| {
                    ready.get(*pool) == Some(want) && per_pool.get(*pool) == Some(want)
                })
                .then_some(())
        },
        || {
            let pools = tools::output(env.kubectl().args([
                "get",
                "sandboxpools,pods",
                "-n",
                namespace,
                "-o",
                "wide",
            ]));
            format!(
                "{}\n--- pool manager log:\n{}",
                String::from_utf8_lossy(&pools.stdout),
                manager.log()
            )
        },
    );
}

#[test]
fn helm_install_then_the_pool_manager_fills_the_pools() {
    let env = KubeEnv::start();
    let values = env.dir().join("values.yaml");
    std::fs::write(
        &values,
        "spiffe: { mode: files }\n\
         pools:\n\
         \x20 - { name: python, kind: python, minReady: 2, maxPods: 4 }\n\
         \x20 - { name: web, kind: web-search, minReady: 1, maxPods: 2, egress: true }\n",
    )
    .expect("write values");
    let chart_dir = chart::chart_dir();
    tools::stdout(
        env.helm()
            .args(["install", RELEASE])
            .arg(&chart_dir)
            .args(["--namespace", NAMESPACE, "--create-namespace", "-f"])
            .arg(&values),
    );
    let sandbox_ns = "antwort-sandboxes";
    // No kube-controller-manager runs here, so nothing creates the namespace's default
    // ServiceAccount, which the sandbox pods use.
    tools::stdout(env.kubectl().args(["create", "serviceaccount", "default", "-n", sandbox_ns]));

    // The pool manager as the chart runs it: its arguments and literal environment, with the
    // chart's ServiceAccount (so the chart's RBAC is what lets it work). Only what the pod gets
    // from its node is replaced: the SVID mounted where the chart points the identity (here a
    // dev-CA SVID for the chart's SPIFFE ID), and loopback listeners on ports the OS picks.
    let manifest = manifests::parse(&tools::stdout(
        env.helm().args(["get", "manifest", RELEASE, "-n", NAMESPACE]),
    ));
    let deployment = get(&manifest, "Deployment", "antwort-pool-manager");
    let spec = pod_spec(deployment).expect("pod spec");
    let container = &spec["containers"][0];
    let account = spec["serviceAccountName"].as_str().expect("serviceAccountName");
    let chart_env: BTreeMap<String, Option<String>> =
        manifests::env(container).into_iter().collect();
    let literal = |name: &str| {
        chart_env
            .get(name)
            .cloned()
            .flatten()
            .unwrap_or_else(|| panic!("the chart sets {name} for the pool manager"))
    };
    assert_eq!(literal("ANTWORT_IDENTITY__SOURCE"), "files");
    let svid_mount = container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|mount| mount["name"] == "spiffe-svid")
        .expect("the SVID volume is mounted");
    assert_eq!(
        svid_mount["mountPath"].as_str(),
        Some(literal("ANTWORT_IDENTITY__DIR").as_str()),
        "the identity is read where the SVID is mounted"
    );
    let trust_domain = literal("ANTWORT_RUNTIME__TRUST_DOMAIN");
    assert_eq!(literal("ANTWORT_RUNTIME__NAMESPACE"), sandbox_ns);
    let ca = DevCa::new(&trust_domain).expect("a development CA");
    let svid_dir = env.dir().join("pool-manager-svid");
    ca.write_svid(&format!("spiffe://{trust_domain}/ns/{NAMESPACE}/sa/{account}"), &svid_dir)
        .expect("the pool manager's SVID");
    // Agents listen on their own loopback addresses, all on this port (the pods' agent port).
    let agent_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    // Declared before the manager: dropped after it, so nothing recreates what it stops.
    let mut kubelet = Kubelet::new(sandbox_ns, ca, agent_port);

    let kubeconfig = service_account_kubeconfig(&env, NAMESPACE, account);
    let log = env.dir().join("pool-manager.log");
    let mut command =
        Command::new(workspace::binary("antwort-pool-manager", "antwort-pool-manager"));
    command.env_clear().env("KUBECONFIG", &kubeconfig).env("RUST_LOG", "info");
    for arg in container["args"].as_array().into_iter().flatten() {
        command.arg(arg.as_str().expect("arg"));
    }
    for (name, value) in &chart_env {
        command.env(name, value.clone().unwrap_or_else(|| "antwort-pool-manager-0".to_owned()));
    }
    command
        .env("ANTWORT_IDENTITY__DIR", &svid_dir)
        .env("ANTWORT_SERVER__LISTEN", "127.0.0.1:0")
        .env("ANTWORT_SERVER__ADMIN_LISTEN", "127.0.0.1:0")
        .env("ANTWORT_RUNTIME__AGENT_PORT", agent_port.to_string());
    let log_file = std::fs::File::create(&log).expect("the log file");
    command.stdout(log_file.try_clone().expect("log")).stderr(log_file);
    let manager = Manager { child: command.spawn().expect("start antwort-pool-manager"), log };

    wait_for_pools(
        &env,
        sandbox_ns,
        &BTreeMap::from([("python", 2), ("web", 1)]),
        &manager,
        &mut kubelet,
    );
    assert_eq!(kubelet.running(), 3, "one agent per live pod");
    // Python pods are two processes, the agent and the spawner that runs user code, each under
    // its container's uid (the warm-up execution each agent needed to turn ready went through
    // its spawner); search pods are the agent alone.
    if kubelet.runs_pod_uids() {
        for (pod, processes) in kubelet.process_uids() {
            let processes: Vec<(&str, u32)> =
                processes.iter().map(|(name, uid)| (name.as_str(), *uid)).collect();
            if pod.starts_with("python-") {
                assert_eq!(processes, [("agent", 65532), ("sandbox", 65533)], "{pod}");
            } else {
                assert_eq!(processes.len(), 1, "{pod}: {processes:?}");
            }
        }
    }

    // Every pod the manager created is hardened, and carries what the pool asked for.
    let pods = json(env.kubectl().args(["get", "pods", "-n", sandbox_ns, "-o", "json"]));
    for pod in pods["items"].as_array().expect("items") {
        let problems = pod_problems(&manifests::id(pod), &pod["spec"], PodRole::Sandbox);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        let pool = pod["metadata"]["labels"]["antwort.dev/pool"].as_str().expect("pool label");
        let egress = pod["metadata"]["labels"]["antwort.dev/egress"].as_str();
        assert_eq!(egress, Some(if pool == "web" { "true" } else { "false" }));
    }

    // Raising minReady with helm upgrade grows the pool.
    tools::stdout(
        env.helm()
            .args(["upgrade", RELEASE])
            .arg(&chart_dir)
            .args(["--namespace", NAMESPACE, "-f"])
            .arg(&values)
            .args(["--set", "pools[0].minReady=3"]),
    );
    wait_for_pools(
        &env,
        sandbox_ns,
        &BTreeMap::from([("python", 3), ("web", 1)]),
        &manager,
        &mut kubelet,
    );

    // The ServiceAccount may do what the manager needs in the sandbox namespace, nothing else.
    let subject = format!("system:serviceaccount:{NAMESPACE}:{account}");
    let can = |verb: &str, resource: &str, namespace: &str| {
        let out = tools::output(
            env.kubectl()
                .args(["auth", "can-i", verb, resource, "-n", namespace, "--as", &subject]),
        );
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    assert!(
        can("create", "pods", sandbox_ns) && can("watch", "sandboxpools.antwort.dev", sandbox_ns)
    );
    assert!(can("update", "leases.coordination.k8s.io", sandbox_ns));
    assert!(!can("list", "pods", NAMESPACE), "no pods outside the sandbox namespace");
    assert!(!can("get", "secrets", sandbox_ns), "no secrets");
    assert!(!can("create", "deployments.apps", sandbox_ns), "no workloads but pods");
    assert!(!can("create", "sandboxpools.antwort.dev", sandbox_ns), "pools are the operator's");
    assert!(!can("list", "nodes", "default"), "nothing cluster-wide");
    drop(manager);
    drop(kubelet);
}
