//! External tools, installed by `scripts/install-test-tools.sh` (which `scripts/test.sh` runs)
//! into `$ANTWORT_TOOLS_CACHE` (default `/var/cache/antwort/tools-2`). Each can be overridden by
//! an environment variable naming the executable. A missing tool panics with how to install it:
//! these tests never skip.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Keep in step with RECIPE in scripts/install-test-tools.sh.
const DEFAULT_CACHE: &str = "/var/cache/antwort/tools-2";

fn find(name: &str, env_var: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env_var) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{env_var}={} does not name a file", path.display());
        return path;
    }
    let cache = std::env::var("ANTWORT_TOOLS_CACHE").unwrap_or_else(|_| DEFAULT_CACHE.to_owned());
    let path = PathBuf::from(cache).join("bin").join(name);
    assert!(
        path.exists(),
        "{name} is not installed at {}: run scripts/install-test-tools.sh (scripts/test.sh does), \
         or point {env_var} at an executable",
        path.display()
    );
    path
}

pub fn helm() -> PathBuf {
    find("helm", "ANTWORT_HELM")
}

/// kubectl 1.35 from the same wheel as helm (for kustomize and applying to the test apiserver).
pub fn kubectl() -> PathBuf {
    find("kubectl", "ANTWORT_KUBECTL")
}

pub fn kubernetes_validate() -> PathBuf {
    find("kubernetes-validate", "ANTWORT_KUBERNETES_VALIDATE")
}

pub fn hadolint() -> PathBuf {
    find("hadolint", "ANTWORT_HADOLINT")
}

/// A Python interpreter that imports the official OpenAI SDK (`openai`, pinned in the script).
pub fn openai_python() -> PathBuf {
    find("openai-python", "ANTWORT_OPENAI_PYTHON")
}

/// Runs `command`, returning its output; panics only if it cannot be started.
pub fn output(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"))
}

/// Runs `command` and returns its stdout; panics with stdout and stderr when it fails.
pub fn stdout(command: &mut Command) -> String {
    let out = output(command);
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tool output is UTF-8")
}
