//! Rendering (helm template, kubectl kustomize) and offline validation of what renders.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::manifests;
use crate::tools;
use crate::workspace;

/// The Kubernetes release rendered manifests are validated against offline.
pub const KUBERNETES_VERSION: &str = "1.35.0";
/// Release name and namespace the tests render the chart as.
pub const RELEASE: &str = "antwort";
pub const NAMESPACE: &str = "antwort";

pub fn chart_dir() -> PathBuf {
    workspace::path("charts/antwort")
}

/// A value file of the chart's CI set (`charts/antwort/ci/<name>-values.yaml`).
pub fn ci_values(name: &str) -> PathBuf {
    let path = chart_dir().join("ci").join(format!("{name}-values.yaml"));
    assert!(path.is_file(), "no value set {}", path.display());
    path
}

/// API versions a full-featured cluster serves beyond Kubernetes itself (OpenShift Routes,
/// SPIRE's ClusterSPIFFEID), for renders that should include everything the chart can produce.
pub const EXTRA_API_VERSIONS: [&str; 2] =
    ["route.openshift.io/v1/Route", "spire.spiffe.io/v1alpha1/ClusterSPIFFEID"];

/// `helm template` of the chart with `args` appended; `Err(stderr)` when helm refuses.
pub fn try_template(args: &[&str]) -> Result<String, String> {
    let out = tools::output(
        Command::new(tools::helm())
            .args(["template", RELEASE])
            .arg(chart_dir())
            .args(["--namespace", NAMESPACE])
            .args(args),
    );
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("helm output is UTF-8"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `helm template` that must succeed.
pub fn template(args: &[&str]) -> String {
    try_template(args).unwrap_or_else(|stderr| panic!("helm template {args:?} failed:\n{stderr}"))
}

/// `kubectl kustomize` of a directory relative to the repository root.
pub fn kustomize(dir: &str) -> String {
    tools::stdout(Command::new(tools::kubectl()).arg("kustomize").arg(workspace::path(dir)))
}

/// The SandboxPool CRD as shipped with the chart.
pub fn crd() -> Value {
    let text = std::fs::read_to_string(chart_dir().join("crds/sandboxpool.yaml"))
        .expect("read charts/antwort/crds/sandboxpool.yaml");
    manifests::parse(&text).remove(0)
}

/// Kinds kubernetes-validate does not know, with the schema the tests check them against.
fn custom_schema(kind: &str) -> Option<Value> {
    match kind {
        "SandboxPool" => {
            let crd = crd();
            let mut schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
            // The API server prunes unknown fields silently; here they are errors.
            close_objects(&mut schema["properties"]["spec"]);
            Some(schema)
        }
        "ClusterSPIFFEID" => Some(read_schema("clusterspiffeid.json")),
        "Route" => Some(read_schema("route.json")),
        _ => None,
    }
}

fn read_schema(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas").join(file);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("read a schema"))
        .expect("schemas are JSON")
}

/// Adds `additionalProperties: false` to every object schema that lists its properties.
fn close_objects(schema: &mut Value) {
    if let Some(map) = schema.as_object_mut() {
        if map.contains_key("properties") && !map.contains_key("additionalProperties") {
            map.insert("additionalProperties".into(), Value::Bool(false));
        }
        for value in map.values_mut() {
            close_objects(value);
        }
    } else if let Some(items) = schema.as_array_mut() {
        items.iter_mut().for_each(close_objects);
    }
}

/// Validates every document of `yaml` offline: built-in kinds with kubernetes-validate (strict,
/// against [`KUBERNETES_VERSION`]), the others against [`custom_schema`]. Returns the problems.
pub fn validate_offline(yaml: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let docs = manifests::parse(yaml);
    assert!(!docs.is_empty(), "nothing to validate");
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().expect("a temp file");
    std::fs::write(file.path(), yaml).expect("write the manifests");
    let out = tools::output(
        Command::new(tools::kubernetes_validate())
            .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
            .arg(file.path()),
    );
    let report =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    for line in report.lines().filter(|line| !line.trim().is_empty()) {
        let unknown_kind = line
            .split("Couldn't find schema for kind ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next());
        match unknown_kind {
            Some(kind) if custom_schema(kind).is_some() => {}
            _ => problems.push(line.to_owned()),
        }
    }
    if !out.status.success() && problems.is_empty() {
        problems.push(format!("kubernetes-validate failed ({}) without a message", out.status));
    }
    for doc in &docs {
        let Some(schema) = custom_schema(manifests::kind(doc)) else { continue };
        let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
        for error in validator.iter_errors(doc) {
            problems.push(format!(
                "{}: {} at {}",
                manifests::id(doc),
                error,
                error.instance_path()
            ));
        }
    }
    problems
}

/// Panics listing every problem [`validate_offline`] finds.
pub fn assert_valid_offline(what: &str, yaml: &str) {
    let problems = validate_offline(yaml);
    assert!(problems.is_empty(), "{what} does not validate:\n{}", problems.join("\n"));
}

/// The pool manager's own config loader (`antwort-pool-manager --check`) run with exactly the
/// environment the Deployment `antwort-pool-manager` in `docs` gives its container (literal values
/// as rendered; `valueFrom` ones get a placeholder). `Err` with its output when it refuses the
/// config or ignores one of the `ANTWORT_*` variables (a key the manager does not have).
pub fn check_pool_manager_config(docs: &[Value]) -> Result<(), String> {
    let deployment = manifests::get(docs, "Deployment", "antwort-pool-manager");
    let spec = manifests::pod_spec(deployment).expect("a pod spec");
    let container = &spec["containers"][0];
    let mut command = std::process::Command::new(workspace::binary(
        "antwort-pool-manager",
        "antwort-pool-manager",
    ));
    command.env_clear();
    for arg in container["args"].as_array().into_iter().flatten() {
        command.arg(arg.as_str().expect("args are strings"));
    }
    command.arg("--check");
    for (name, value) in manifests::env(container) {
        command.env(&name, value.unwrap_or_else(|| format!("from-{name}")));
    }
    let out = tools::output(&mut command);
    let report =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() && !report.contains("is ignored") {
        Ok(())
    } else {
        Err(format!("antwort-pool-manager --check ({}):\n{report}", out.status))
    }
}

/// The RBAC rules the pool manager says it needs (`antwort-pool-manager rbac`).
pub fn pool_manager_rbac() -> Value {
    let yaml = tools::stdout(
        std::process::Command::new(workspace::binary(
            "antwort-pool-manager",
            "antwort-pool-manager",
        ))
        .arg("rbac"),
    );
    manifests::parse(&yaml).remove(0)
}
