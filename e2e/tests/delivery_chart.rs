//! The Helm chart (charts/antwort): lint, render over several value sets, validate every rendered
//! manifest offline, check the hardening of every pod spec (including the sandbox pods the pool
//! manager renders from the chart's SandboxPools), and the schema and template refusing bad
//! values with a message that names them.

use std::collections::BTreeMap;
use std::process::Command;

use antwort_e2e::chart::{self, EXTRA_API_VERSIONS};
use antwort_e2e::manifests::{self, get, of_kind, pod_spec};
use antwort_e2e::security::{PodRole, pod_problems};
use antwort_e2e::{tools, workspace};
use serde_json::{Value, json};

/// `--api-versions` arguments for a cluster with OpenShift Routes and SPIRE.
fn full_cluster() -> Vec<String> {
    EXTRA_API_VERSIONS
        .iter()
        .flat_map(|api| ["--api-versions".to_owned(), (*api).to_owned()])
        .collect()
}

fn render(values: Option<&str>, extra: &[&str]) -> (String, Vec<Value>) {
    let mut args: Vec<String> = full_cluster();
    let file;
    if let Some(name) = values {
        file = chart::ci_values(name);
        args.push("-f".into());
        args.push(file.display().to_string());
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let yaml = chart::template(&args);
    let docs = manifests::parse(&yaml);
    (yaml, docs)
}

/// Every value set the tests render: defaults plus charts/antwort/ci/*-values.yaml.
fn value_sets() -> Vec<Option<String>> {
    let mut sets = vec![None];
    let mut names: Vec<String> = std::fs::read_dir(chart::chart_dir().join("ci"))
        .expect("charts/antwort/ci")
        .map(|entry| entry.expect("a directory entry").file_name().to_string_lossy().into_owned())
        .filter_map(|file| file.strip_suffix("-values.yaml").map(str::to_owned))
        .collect();
    names.sort();
    assert!(names.len() >= 5, "expected the ci value sets, found {names:?}");
    sets.extend(names.into_iter().map(Some));
    sets
}

fn role_of(doc: &Value) -> PodRole {
    match doc["metadata"]["labels"]["app.kubernetes.io/component"].as_str() {
        Some("pool-manager") => PodRole::ApiClient,
        _ => PodRole::NoApiAccess,
    }
}

/// Every pod spec in `docs` is hardened. (The sandbox pods the pool manager creates from the
/// chart's pools are checked in delivery_cluster, as the cluster stores them.)
fn assert_hardened(what: &str, docs: &[Value]) {
    let mut problems = Vec::new();
    let mut checked = 0;
    for doc in docs {
        if let Some(spec) = pod_spec(doc) {
            problems.extend(pod_problems(&manifests::id(doc), spec, role_of(doc)));
            checked += 1;
        }
    }
    assert!(checked >= 2, "{what}: only {checked} pod specs rendered");
    assert!(problems.is_empty(), "{what}: pod specs lack hardening:\n{}", problems.join("\n"));
}

#[test]
fn helm_lint_passes_for_every_value_set() {
    for set in value_sets() {
        let mut command = Command::new(tools::helm());
        command.args(["lint", "--strict"]).arg(chart::chart_dir());
        if let Some(name) = &set {
            command.arg("-f").arg(chart::ci_values(name));
        }
        let out = tools::stdout(&mut command);
        assert!(out.contains("0 chart(s) failed"), "helm lint {set:?}:\n{out}");
    }
}

#[test]
fn chart_crd_is_the_generated_crd() {
    let generated = std::fs::read_to_string(workspace::path("deploy/crd/sandboxpool.yaml"))
        .expect("read deploy/crd/sandboxpool.yaml");
    let shipped = std::fs::read_to_string(workspace::path("charts/antwort/crds/sandboxpool.yaml"))
        .expect("read charts/antwort/crds/sandboxpool.yaml");
    assert!(
        generated == shipped,
        "charts/antwort/crds/sandboxpool.yaml differs from the generated deploy/crd/sandboxpool.yaml: \
         cp deploy/crd/sandboxpool.yaml charts/antwort/crds/sandboxpool.yaml"
    );
}

#[test]
fn every_value_set_renders_valid_hardened_manifests() {
    for set in value_sets() {
        let what = format!("value set {}", set.as_deref().unwrap_or("defaults"));
        let (yaml, docs) = render(set.as_deref(), &[]);
        chart::assert_valid_offline(&what, &yaml);
        assert_hardened(&what, &docs);
        // Every object is namespaced where it should be: the release or the sandbox namespace.
        for doc in &docs {
            let namespace = manifests::namespace(doc);
            let cluster_scoped = matches!(manifests::kind(doc), "Namespace" | "ClusterSPIFFEID");
            assert!(
                cluster_scoped || namespace == "antwort" || namespace == "antwort-sandboxes",
                "{what}: {} in namespace {namespace:?}",
                manifests::id(doc)
            );
        }
    }
}

#[test]
fn default_install_with_min_ready_is_complete() {
    let (yaml, docs) = render(None, &["--set", "pools[0].minReady=5"]);
    chart::assert_valid_offline("the default install", &yaml);
    for (kind, name) in [
        ("Namespace", "antwort-sandboxes"),
        ("Deployment", "antwort-gateway"),
        ("Deployment", "antwort-pool-manager"),
        ("Service", "antwort-gateway"),
        ("ConfigMap", "antwort-gateway"),
        ("ServiceAccount", "antwort-gateway"),
        ("ServiceAccount", "antwort-pool-manager"),
        ("ServiceAccount", "antwort-sandbox"),
        ("Role", "antwort-pool-manager"),
        ("RoleBinding", "antwort-pool-manager"),
        ("NetworkPolicy", "default-deny"),
        ("NetworkPolicy", "agents-from-antwort"),
        ("PersistentVolumeClaim", "antwort-gateway-data"),
        ("ClusterSPIFFEID", "antwort-antwort"),
        ("ClusterSPIFFEID", "antwort-antwort-sandboxes"),
    ] {
        get(&docs, kind, name);
    }
    let pools = of_kind(&docs, "SandboxPool");
    assert_eq!(pools.len(), 1, "one pool by default");
    let spec = &pools[0]["spec"];
    assert_eq!(manifests::name(pools[0]), "python");
    assert_eq!(spec["kind"], "python");
    assert_eq!(spec["minReady"], 5);
    assert_eq!(spec["maxPods"], 20, "maxPods defaults to 4 x minReady");
    assert_eq!(spec["image"], "ghcr.io/antwort-dev/antwort-sandbox-python:0.1.0");
    assert_eq!(spec["egress"], false);
    assert_eq!(
        spec["allowedCallers"],
        serde_json::json!([
            "spiffe://cluster.local/ns/antwort/sa/antwort-gateway",
            "spiffe://cluster.local/ns/antwort/sa/antwort-pool-manager"
        ])
    );
    // No egress policy for a pool without egress; the gateway is one replica, so no PDB or HPA.
    assert!(
        of_kind(&docs, "NetworkPolicy")
            .iter()
            .all(|np| !manifests::name(np).starts_with("egress-"))
    );
    assert!(of_kind(&docs, "PodDisruptionBudget").is_empty());
    assert!(of_kind(&docs, "HorizontalPodAutoscaler").is_empty());
    // The pool manager watches the sandbox namespace, where its Role is.
    let manager = pod_spec(get(&docs, "Deployment", "antwort-pool-manager")).expect("a pod spec");
    let env = manifests::env(&manager["containers"][0]);
    assert!(
        env.contains(&(
            "ANTWORT_RUNTIME__NAMESPACE".to_owned(),
            Some("antwort-sandboxes".to_owned())
        )),
        "{env:?}"
    );
    // The sandboxes' own account, without a token, in their namespace.
    let account = get(&docs, "ServiceAccount", "antwort-sandbox");
    assert_eq!(account["metadata"]["namespace"], "antwort-sandboxes");
    assert_eq!(account["automountServiceAccountToken"], false);
    assert!(
        env.contains(&(
            "ANTWORT_SERVER__ALLOWED_CALLERS".to_owned(),
            Some(r#"["spiffe://cluster.local/ns/antwort/sa/antwort-gateway"]"#.to_owned())
        )),
        "{env:?}"
    );
    assert_eq!(
        get(&docs, "Role", "antwort-pool-manager")["metadata"]["namespace"],
        "antwort-sandboxes"
    );
}

#[test]
fn three_gvisor_pools_render_as_asked() {
    let (_, docs) = render(Some("three-pools-gvisor"), &[]);
    let pools: BTreeMap<&str, &Value> = of_kind(&docs, "SandboxPool")
        .into_iter()
        .map(|p| (manifests::name(p), &p["spec"]))
        .collect();
    assert_eq!(pools.keys().copied().collect::<Vec<_>>(), ["files", "python", "web"]);
    for spec in pools.values() {
        assert_eq!(spec["runtimeClassName"], "gvisor");
    }
    assert_eq!(pools["python"]["resources"]["memory"], "2Gi");
    assert_eq!(pools["python"]["idleTimeoutSeconds"], 900);
    assert_eq!(pools["files"]["kind"], "file-search");
    assert_eq!(pools["files"]["maxPods"], 8);
    assert_eq!(pools["files"]["image"], "ghcr.io/antwort-dev/antwort-sandbox-file-search:0.1.0");
    assert_eq!(pools["web"]["egress"], true);
    // The gateway's code_interpreter claims from the python pool and ends unused containers a
    // minute before the pool would reclaim them (its idle clock runs from the last renewal).
    let code = &gateway_config(&docs)["tools"]["code_interpreter"];
    assert_eq!(
        (code["pool"].as_str(), code["idle_timeout_secs"].as_u64()),
        (Some("python"), Some(840))
    );
    // Egress only for the pool that allows it, and not to cluster or metadata addresses.
    let egress: Vec<&str> = of_kind(&docs, "NetworkPolicy")
        .into_iter()
        .map(manifests::name)
        .filter(|name| name.starts_with("egress-"))
        .collect();
    assert_eq!(egress, ["egress-web"]);
    let policy = get(&docs, "NetworkPolicy", "egress-web");
    assert_eq!(policy["spec"]["podSelector"]["matchLabels"]["antwort.dev/pool"], "web");
    let except = &policy["spec"]["egress"][1]["to"][0]["ipBlock"]["except"];
    assert!(
        except.as_array().expect("except").iter().any(|cidr| cidr == "10.0.0.0/8"),
        "{policy:#}"
    );
}

/// Python pools of several sizes: the gateway maps code_interpreter's `memory_limit` to them;
/// the SandboxPools themselves stay within their CRD.
#[test]
fn memory_limits_map_to_python_pools() {
    let (_, docs) = render(Some("memory-limit-pools"), &[]);
    let code = &gateway_config(&docs)["tools"]["code_interpreter"];
    assert_eq!(code["pool"], "python", "{code:#}");
    assert_eq!(
        code["pools_by_memory_limit"],
        json!({"1g": "python", "4g": "python-4g"}),
        "{code:#}"
    );
    for pool in of_kind(&docs, "SandboxPool") {
        assert!(pool["spec"].get("memoryLimit").is_none(), "{pool:#}");
    }
    let big = of_kind(&docs, "SandboxPool")
        .into_iter()
        .find(|p| manifests::name(p) == "python-4g")
        .expect("the 4g pool");
    assert_eq!(big["spec"]["resources"]["memory"], "4Gi");
    // Without memoryLimit on any pool, the gateway config has no mapping (one pool serves all).
    let (_, docs) = render(None, &[]);
    assert!(
        gateway_config(&docs)["tools"]["code_interpreter"].get("pools_by_memory_limit").is_none()
    );
}

#[test]
fn sandbox_namespace_denies_by_default_and_admits_only_antwort() {
    let (_, docs) = render(None, &[]);
    let deny = get(&docs, "NetworkPolicy", "default-deny");
    assert_eq!(deny["spec"]["podSelector"], serde_json::json!({}));
    assert_eq!(deny["spec"]["policyTypes"], serde_json::json!(["Ingress", "Egress"]));
    assert!(deny["spec"].get("ingress").is_none() && deny["spec"].get("egress").is_none());
    let admit = get(&docs, "NetworkPolicy", "agents-from-antwort");
    let from = admit["spec"]["ingress"][0]["from"].as_array().expect("from");
    let components: Vec<&str> = from
        .iter()
        .map(|peer| {
            peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"].as_str().unwrap_or("")
        })
        .collect();
    assert_eq!(components, ["gateway", "pool-manager"]);
    for peer in from {
        assert_eq!(
            peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "antwort"
        );
    }
    let namespace = get(&docs, "Namespace", "antwort-sandboxes");
    assert_eq!(namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted");
}

#[test]
fn each_spiffe_mode_plumbs_identity() {
    // spire: the Workload API socket from the SPIFFE CSI driver, ClusterSPIFFEIDs where served.
    let (_, docs) = render(None, &[]);
    for deployment in ["antwort-gateway", "antwort-pool-manager"] {
        let spec = pod_spec(get(&docs, "Deployment", deployment)).expect("pod spec");
        assert!(spec.to_string().contains(r#""driver":"csi.spiffe.io""#), "{deployment}: {spec:#}");
    }
    let spec = pod_spec(get(&docs, "Deployment", "antwort-pool-manager")).expect("pod spec");
    let env = manifests::env(&spec["containers"][0]);
    assert!(
        env.contains(&("ANTWORT_IDENTITY__SOURCE".into(), Some("workload_api".into()))),
        "{env:?}"
    );
    assert_eq!(
        gateway_config(&docs)["tools"]["code_interpreter"]["identity"],
        serde_json::json!({
            "source": "workload_api",
            "endpoint": "unix:///spiffe-workload-api/spire-agent.sock"
        })
    );
    assert_eq!(
        sandbox_identity_env(&docs),
        [("MODE", "spire"), ("SOCKET_NAME", "spire-agent.sock")].map(|(k, v)| (k.into(), v.into()))
    );
    let without_spire = manifests::parse(&chart::template(&[]));
    assert!(
        of_kind(&without_spire, "ClusterSPIFFEID").is_empty(),
        "gated on the ClusterSPIFFEID API"
    );

    // csi: cert-manager csi-driver-spiffe files, and the right to request them.
    let (_, docs) = render(Some("spiffe-csi"), &[]);
    let spec = pod_spec(get(&docs, "Deployment", "antwort-gateway")).expect("pod spec");
    assert!(spec.to_string().contains(r#""driver":"spiffe.csi.cert-manager.io""#), "{spec:#}");
    let mount = spec["containers"][0]["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|mount| mount["name"] == "spiffe-svid")
        .expect("the SVID is mounted");
    assert_eq!(
        gateway_config(&docs)["tools"]["code_interpreter"]["identity"],
        serde_json::json!({ "source": "files", "dir": mount["mountPath"] })
    );
    assert_eq!(sandbox_identity_env(&docs), [("MODE".to_owned(), "csi".to_owned())]);
    assert_eq!(
        of_kind(&docs, "Role").len(),
        3,
        "pool manager + certificaterequests in two namespaces"
    );
    assert!(of_kind(&docs, "ClusterSPIFFEID").is_empty());
    let pools = of_kind(&docs, "SandboxPool");
    assert!(
        pools[0]["spec"]["allowedCallers"][0]
            .as_str()
            .expect("caller")
            .starts_with("spiffe://example.org/")
    );

    // files: one Secret per component.
    let (_, docs) = render(Some("spiffe-files"), &[]);
    let volumes = |name: &str| {
        pod_spec(get(&docs, "Deployment", name)).expect("pod spec")["volumes"].to_string()
    };
    assert!(volumes("antwort-gateway").contains(r#""secretName":"gw-svid""#));
    assert!(
        volumes("antwort-pool-manager").contains(r#""secretName":"antwort-pool-manager-svid""#)
    );
    assert_eq!(
        sandbox_identity_env(&docs),
        [("MODE", "files"), ("SECRET_NAME", "antwort-sandbox-svid")]
            .map(|(k, v)| (k.into(), v.into()))
    );
}

/// The gateway's config file.
fn gateway_config(docs: &[Value]) -> Value {
    serde_yaml_ng::from_str(
        get(docs, "ConfigMap", "antwort-gateway")["data"]["gateway.yaml"]
            .as_str()
            .expect("gateway.yaml"),
    )
    .expect("the gateway config is YAML")
}

/// The pool manager's `runtime.sandbox_identity` as the chart sets it (`ANTWORT_RUNTIME__
/// SANDBOX_IDENTITY__*`, prefix stripped).
fn sandbox_identity_env(docs: &[Value]) -> Vec<(String, String)> {
    let spec = pod_spec(get(docs, "Deployment", "antwort-pool-manager")).expect("pod spec");
    manifests::env(&spec["containers"][0])
        .into_iter()
        .filter_map(|(name, value)| {
            let key = name.strip_prefix("ANTWORT_RUNTIME__SANDBOX_IDENTITY__")?;
            Some((key.to_owned(), value.expect("a literal value")))
        })
        .collect()
}

/// The pool manager's own config loader accepts what the chart renders for it, for every value
/// set (every spiffe mode among them), and ignores none of the variables the chart sets.
#[test]
fn pool_manager_accepts_the_rendered_config() {
    for set in value_sets() {
        let (_, docs) = render(set.as_deref(), &[]);
        if let Err(report) = chart::check_pool_manager_config(&docs) {
            panic!("value set {set:?}: {report}");
        }
    }
    // And the check is a real one: a misspelt key or a bad mode is refused.
    let (_, docs) = render(
        None,
        &[
            "--set",
            "poolManager.extraEnv[0].name=ANTWORT_RUNTIME__LEASE_NAM",
            "--set",
            "poolManager.extraEnv[0].value=x",
        ],
    );
    let report = chart::check_pool_manager_config(&docs).expect_err("an unknown key");
    assert!(report.contains("lease_nam"), "{report}");
    let (_, docs) = render(
        None,
        &[
            "--set",
            "poolManager.extraEnv[0].name=ANTWORT_POOL_NAMESPACE",
            "--set",
            "poolManager.extraEnv[0].value=x",
        ],
    );
    let report = chart::check_pool_manager_config(&docs).expect_err("an ignored variable");
    assert!(report.contains("ANTWORT_POOL_NAMESPACE is ignored"), "{report}");
}

/// The Role the chart gives the pool manager is exactly what the manager says it needs
/// (`antwort-pool-manager rbac`), in the namespace it works in (pods, pools and its Lease).
#[test]
fn pool_manager_role_is_what_the_manager_uses() {
    let (_, docs) = render(None, &[]);
    let role = get(&docs, "Role", "antwort-pool-manager");
    assert_eq!(role["rules"], chart::pool_manager_rbac(), "the chart's Role drifted from the code");
    let spec = pod_spec(get(&docs, "Deployment", "antwort-pool-manager")).expect("pod spec");
    let env: BTreeMap<String, Option<String>> =
        manifests::env(&spec["containers"][0]).into_iter().collect();
    // Pods, pools and the leader Lease all live in runtime.namespace: the Role's namespace.
    assert_eq!(
        env["ANTWORT_RUNTIME__NAMESPACE"].as_deref(),
        role["metadata"]["namespace"].as_str()
    );
    assert_eq!(env["ANTWORT_RUNTIME__LEASE_NAME"].as_deref(), Some("antwort-pool-manager"));
    let binding = get(&docs, "RoleBinding", "antwort-pool-manager");
    assert_eq!(binding["metadata"]["namespace"], role["metadata"]["namespace"]);
    assert_eq!(binding["subjects"][0]["name"], spec["serviceAccountName"]);
    // Ports and probes as the manager serves them (config.rs defaults, api.rs admin routes).
    let container = &spec["containers"][0];
    let ports: BTreeMap<&str, u64> = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| (p["name"].as_str().expect("name"), p["containerPort"].as_u64().expect("port")))
        .collect();
    assert_eq!(ports, BTreeMap::from([("claims", 8443), ("admin", 9090)]));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "admin");
}

/// Every agent presents one SPIFFE ID, and all parties agree on it for every spiffe mode: the
/// gateway accepts exactly it (`agent_spiffe_ids`), the pool manager expects it (trust domain,
/// sandbox namespace and the ServiceAccount it runs the pods as), and the mode's issuer gives it
/// to the pods (SPIRE's ClusterSPIFFEID template, csi-driver-spiffe's requester account).
#[test]
fn sandbox_spiffe_id_agrees_across_gateway_pool_manager_and_issuer() {
    for set in [None, Some("spiffe-csi"), Some("spiffe-files")] {
        let (_, docs) = render(set, &[]);
        let gateway = gateway_config(&docs);
        let code = &gateway["tools"]["code_interpreter"];
        let accepted = code["agent_spiffe_ids"].as_array().expect("agent_spiffe_ids");
        assert_eq!(accepted.len(), 1, "{set:?}: {code:#}");
        let id = accepted[0]["id"].as_str().expect("an exact ID");

        let spec = pod_spec(get(&docs, "Deployment", "antwort-pool-manager")).expect("pod spec");
        let env: BTreeMap<String, Option<String>> =
            manifests::env(&spec["containers"][0]).into_iter().collect();
        let literal = |name: &str| env[name].clone().expect("a literal value");
        let (trust_domain, namespace, account) = (
            literal("ANTWORT_RUNTIME__TRUST_DOMAIN"),
            literal("ANTWORT_RUNTIME__NAMESPACE"),
            literal("ANTWORT_RUNTIME__SERVICE_ACCOUNT"),
        );
        let expected = format!("spiffe://{trust_domain}/ns/{namespace}/sa/{account}");
        assert_eq!(id, expected, "{set:?}: the gateway and the pool manager disagree");
        let sa = get(&docs, "ServiceAccount", &account);
        assert_eq!(manifests::namespace(sa), namespace, "{set:?}");
        // The gateway claims from the pool manager the chart deploys, as the ID it presents.
        assert_eq!(code["pool"], "python");
        assert_eq!(
            code["pool_manager"]["spiffe_id"].as_str(),
            Some(format!("spiffe://{trust_domain}/ns/antwort/sa/antwort-pool-manager").as_str())
        );
        assert_eq!(code["pool_manager"]["url"], "https://antwort-pool-manager.antwort.svc:8443");

        match set {
            None => {
                let issuer = get(&docs, "ClusterSPIFFEID", &format!("antwort-{namespace}"));
                let template = issuer["spec"]["spiffeIDTemplate"].as_str().expect("template");
                let issued = template
                    .replace("{{ .TrustDomain }}", &trust_domain)
                    .replace("{{ .PodMeta.Namespace }}", &namespace)
                    .replace("{{ .PodSpec.ServiceAccountName }}", &account);
                assert_eq!(issued, expected, "SPIRE issues another ID: {template}");
                assert_eq!(
                    issuer["spec"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
                    namespace.as_str()
                );
                // The label pool-manager/src/pod.rs puts on every sandbox pod.
                assert_eq!(
                    issuer["spec"]["podSelector"]["matchLabels"],
                    serde_json::json!({ "app.kubernetes.io/managed-by": "antwort-pool-manager" })
                );
            }
            Some("spiffe-csi") => {
                // csi-driver-spiffe requests the SVID as the pod's account, which must be allowed.
                let bindings = of_kind(&docs, "RoleBinding");
                let binding = bindings
                    .iter()
                    .find(|b| {
                        manifests::namespace(b) == namespace
                            && b["roleRef"]["name"] == "antwort-spiffe-svid"
                    })
                    .expect("the sandbox namespace's certificaterequests binding");
                assert_eq!(binding["subjects"][0]["name"].as_str(), Some(account.as_str()));
                assert_eq!(trust_domain, "example.org");
            }
            _ => {}
        }
    }
}

#[test]
fn openshift_gets_a_route_and_scc_assigned_uids() {
    let (_, docs) = render(Some("openshift"), &[]);
    let route = get(&docs, "Route", "antwort-gateway");
    assert_eq!(route["spec"]["host"], "antwort.apps.example.com");
    assert_eq!(route["spec"]["to"]["name"], "antwort-gateway");
    for deployment in of_kind(&docs, "Deployment") {
        let security = &pod_spec(deployment).expect("pod spec")["securityContext"];
        assert!(
            security.get("runAsUser").is_none() && security.get("fsGroup").is_none(),
            "{security:#}"
        );
    }
    let namespace = get(&docs, "Namespace", "antwort-sandboxes");
    assert_eq!(namespace["metadata"]["annotations"]["openshift.io/sa.scc.uid-range"], "65532/1");
    // Without the Route API (plain Kubernetes) the Route is skipped, not rendered.
    let plain = manifests::parse(&chart::template(&[
        "-f",
        &chart::ci_values("openshift").display().to_string(),
    ]));
    assert!(of_kind(&plain, "Route").is_empty());
}

#[test]
fn production_values_wire_postgres_auth_autoscaling_and_budget() {
    let (_, docs) = render(Some("production"), &[]);
    let deployment = get(&docs, "Deployment", "antwort-gateway");
    assert!(deployment["spec"].get("replicas").is_none(), "the HPA owns the replica count");
    let spec = pod_spec(deployment).expect("pod spec");
    let env = spec["containers"][0]["env"].as_array().expect("env");
    let secret_of = |name: &str| {
        env.iter()
            .find(|var| var["name"] == name)
            .map(|var| var["valueFrom"]["secretKeyRef"]["name"].clone())
            .unwrap_or_else(|| panic!("no {name} in {env:#?}"))
    };
    assert_eq!(secret_of("ANTWORT_STORE__URL"), "antwort-postgres");
    let config: Value = serde_yaml_ng::from_str(
        get(&docs, "ConfigMap", "antwort-gateway")["data"]["gateway.yaml"]
            .as_str()
            .expect("gateway.yaml"),
    )
    .expect("the gateway config is YAML");
    assert_eq!(config["auth"]["api_keys_file"], "/var/run/secrets/antwort/api-keys/api-keys.yaml");
    assert_eq!(config["auth"]["oidc"][0]["issuer"], "https://login.example.com/realms/antwort");
    assert_eq!(config["auth"]["oidc"][0]["audience"], serde_json::json!(["antwort"]));
    assert!(spec["volumes"].to_string().contains(r#""secretName":"antwort-api-keys""#), "{spec:#}");
    assert!(
        of_kind(&docs, "Secret").is_empty(),
        "the operator's key Secret is used, none generated"
    );
    assert_eq!(secret_of("ANTWORT_BACKEND_KEY_VLLM"), "vllm-key");
    assert!(of_kind(&docs, "PersistentVolumeClaim").is_empty());
    let pdb = get(&docs, "PodDisruptionBudget", "antwort-gateway");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    let hpa = get(&docs, "HorizontalPodAutoscaler", "antwort-gateway");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["minReplicas"], 3);
    get(&docs, "Ingress", "antwort-gateway");
}

/// The gateway's own config check accepts what the chart renders for it.
#[test]
fn gateway_accepts_the_rendered_config() {
    let gateway = workspace::binary("antwort-gateway", "antwort-gateway");
    for set in [
        None,
        Some("production"),
        Some("three-pools-gvisor"),
        Some("spiffe-files"),
        Some("spiffe-csi"),
    ] {
        let (_, docs) = render(set, &[]);
        let config = get(&docs, "ConfigMap", "antwort-gateway")["data"]["gateway.yaml"]
            .as_str()
            .expect("gateway.yaml")
            .to_owned();
        let dir = tempfile::tempdir().expect("a temp dir");
        // The API keys file the chart mounts: the generated Secret's, or an operator's list.
        let keys = match of_kind(&docs, "Secret").first() {
            Some(secret) => {
                decode_base64(secret["data"]["api-keys.yaml"].as_str().expect("api-keys.yaml"))
            }
            None => "- sk-operator-key-0123456789\n".to_owned(),
        };
        let keys_file = dir.path().join("api-keys.yaml");
        std::fs::write(&keys_file, keys).expect("write the keys");
        let config = config.replace(
            "/var/run/secrets/antwort/api-keys/api-keys.yaml",
            &keys_file.display().to_string(),
        );
        let file = dir.path().join("gateway.yaml");
        std::fs::write(&file, &config).expect("write the config");
        let spec = pod_spec(get(&docs, "Deployment", "antwort-gateway")).expect("pod spec");
        let container = &spec["containers"][0];
        let args: Vec<&str> = container["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("arg"))
            .collect();
        assert_eq!(args, ["--config", "/etc/antwort/gateway.yaml"]);
        let mut command = Command::new(&gateway);
        command.env_clear().arg("--config").arg(&file).arg("--check-config");
        // Literal values as rendered; values from Secrets as an operator would fill them.
        for var in container["env"].as_array().expect("env") {
            let name = var["name"].as_str().expect("name");
            let value = match var["value"].as_str() {
                Some(value) => value.to_owned(),
                None => match name {
                    "ANTWORT_STORE__URL" => {
                        "postgres://antwort:secret@postgres:5432/antwort".to_owned()
                    }
                    _ => "a-backend-api-key".to_owned(),
                },
            };
            command.env(name, value);
        }
        let out = tools::output(&mut command);
        assert!(
            out.status.success(),
            "antwort-gateway --check-config refuses the chart's config for {set:?}:\n{}{}\n--- config:\n{config}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A Secret's `data` value.
fn decode_base64(text: &str) -> String {
    use base64::Engine as _;
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(text).expect("Secret data is base64");
    String::from_utf8(bytes).expect("UTF-8")
}

/// The schema (and, where JSON Schema cannot say it, the templates) refuse bad values with a
/// message naming the value.
#[test]
fn bad_values_are_refused_with_a_clear_message() {
    let cases: [(&[&str], &[&str]); 15] = [
        (&["--set", "auth.apiKeys.generate=false"], &["nothing authenticates"]),
        (&["--set", "auth.oidc.issuer=https://id.example.com"], &["/auth/oidc/audience"]),
        (&["--set", "gatway.replicas=2"], &["gatway"]),
        (&["--set", "pools[0].minRedy=5"], &["minRedy"]),
        (&["--set", "pools[0].minReady=-1"], &["/pools/0/minReady", "minimum"]),
        (
            &["--set", "pools[0].minReady=2", "--set-string", "pools[0].resources.memory=5 gigs"],
            &["/pools/0/resources/memory", "5 gigs"],
        ),
        (
            &["--set", "gateway.resources.limits.memory=lots"],
            &["/gateway/resources/limits/memory", "lots"],
        ),
        (
            &["--set", "pools[0].minReady=1", "--set", "pools[0].kind=ruby"],
            &["/pools/0/kind", "one of"],
        ),
        (&["--set", "spiffe.mode=vault"], &["/spiffe/mode", "one of"]),
        (
            &["--set", "pools[0].minReady=9", "--set", "pools[0].maxPods=3"],
            &["minReady 9 exceeds maxPods 3"],
        ),
        (&["--set", "gateway.replicas=3"], &["database.existingSecret"]),
        (
            &["--set", "pools[0].minReady=1", "--set", "pools[1].minReady=1"],
            &["pools[1].name", "\"python\" is used by another pool"],
        ),
        (
            &["--set", "pools[0].minReady=1", "--set", "pools[0].memoryLimit=3g"],
            &["/pools/0/memoryLimit", "one of"],
        ),
        (
            &[
                "--set",
                "pools[0].minReady=1",
                "--set",
                "pools[0].kind=web-search",
                "--set",
                "pools[0].memoryLimit=4g",
            ],
            &["memoryLimit is for python pools"],
        ),
        (
            &[
                "--set",
                "pools[0].minReady=1",
                "--set",
                "pools[0].memoryLimit=1g",
                "--set",
                "pools[1].name=other",
                "--set",
                "pools[1].minReady=1",
                "--set",
                "pools[1].memoryLimit=1g",
            ],
            &["memoryLimit 1g is served by another pool already"],
        ),
    ];
    for (args, needles) in cases {
        let error =
            chart::try_template(args).expect_err(&format!("helm template {args:?} must fail"));
        for needle in needles {
            assert!(error.contains(needle), "helm template {args:?}: no `{needle}` in:\n{error}");
        }
    }
    // And the good neighbours of those values pass.
    chart::template(&[
        "--set",
        "pools[0].minReady=9",
        "--set",
        "pools[0].maxPods=9",
        "--set-string",
        "pools[0].resources.memory=1.5Gi",
    ]);
}
