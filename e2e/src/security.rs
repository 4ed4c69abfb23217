//! The hardening every pod antwort ships must carry. [`pod_problems`] lists what a pod spec
//! lacks, one line per problem naming the container and field, so a test can assert the list is
//! empty and show all of it when not.

use serde_json::Value;

/// What is required beyond the common rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodRole {
    /// Gateway: never talks to the Kubernetes API.
    NoApiAccess,
    /// Pool manager: needs its token.
    ApiClient,
    /// Sandbox pods: untrusted code; no token, no service links.
    Sandbox,
}

/// Problems of `spec` (a PodSpec) named `what` in messages.
pub fn pod_problems(what: &str, spec: &Value, role: PodRole) -> Vec<String> {
    let mut problems = Vec::new();
    let mut need = |ok: bool, message: String| {
        if !ok {
            problems.push(format!("{what}: {message}"));
        }
    };
    let pod_sc = &spec["securityContext"];
    need(pod_sc["runAsNonRoot"] == true, "securityContext.runAsNonRoot must be true".into());
    if let Some(uid) = pod_sc["runAsUser"].as_i64() {
        need(uid != 0, "securityContext.runAsUser must not be 0".into());
    }
    let pod_seccomp = pod_sc["seccompProfile"]["type"].as_str();
    if role != PodRole::ApiClient {
        need(
            spec["automountServiceAccountToken"] == false,
            "automountServiceAccountToken must be false".into(),
        );
    }
    if role == PodRole::Sandbox {
        need(spec["enableServiceLinks"] == false, "enableServiceLinks must be false".into());
        need(spec["hostNetwork"] != true, "hostNetwork must not be set".into());
    }
    need(
        spec["hostPID"] != true && spec["hostIPC"] != true,
        "hostPID/hostIPC must not be set".into(),
    );
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|key| spec[*key].as_array().into_iter().flatten())
        .collect();
    need(!containers.is_empty(), "has no containers".into());
    for container in containers {
        let name = container["name"].as_str().unwrap_or("?");
        let sc = &container["securityContext"];
        let mut need_c = |ok: bool, message: &str| {
            if !ok {
                problems.push(format!("{what} container {name}: {message}"));
            }
        };
        need_c(
            sc["runAsNonRoot"] == true || pod_sc["runAsNonRoot"] == true,
            "runAsNonRoot must be true (container or pod)",
        );
        need_c(sc["runAsUser"].as_i64() != Some(0), "runAsUser must not be 0");
        need_c(sc["readOnlyRootFilesystem"] == true, "readOnlyRootFilesystem must be true");
        need_c(sc["allowPrivilegeEscalation"] == false, "allowPrivilegeEscalation must be false");
        need_c(sc["privileged"] != true, "privileged must not be true");
        let drops_all = sc["capabilities"]["drop"]
            .as_array()
            .is_some_and(|drop| drop.iter().any(|cap| cap == "ALL"));
        need_c(drops_all, "capabilities.drop must contain ALL");
        need_c(
            sc["capabilities"]["add"].as_array().is_none_or(Vec::is_empty),
            "capabilities.add must be empty",
        );
        let seccomp = sc["seccompProfile"]["type"].as_str().or(pod_seccomp);
        need_c(
            matches!(seccomp, Some("RuntimeDefault" | "Localhost")),
            "seccompProfile must be RuntimeDefault or Localhost (container or pod)",
        );
        for resource in ["cpu", "memory"] {
            need_c(
                container["resources"]["limits"][resource].is_string()
                    || container["resources"]["limits"][resource].is_number(),
                &format!("resources.limits.{resource} must be set"),
            );
        }
        let image = container["image"].as_str().unwrap_or("");
        need_c(
            !image.is_empty() && !image.ends_with(":latest") && image.contains(':'),
            "image must carry an explicit tag or digest (not latest)",
        );
    }
    problems
}
