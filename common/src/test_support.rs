//! For tests (feature `test-support`): the workspace's binaries, built on demand.
//!
//! A test that runs another binary of the workspace (the gateway's tests run the sandbox agent,
//! the e2e tests run all of them) asks [`workspace_binary`]. It runs `cargo build` for it once
//! per test process, which is a no-op when `cargo nextest run --workspace` already built it and
//! never hands out a stale binary when only a `-p` subset was built.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// What cargo sets for a crate's tests (The Cargo Book, "Environment variables Cargo sets for
/// crates"), by prefix. Passed on to `cargo build` they would reach build scripts that rerun
/// when such a variable changes (ring's), rebuilding half the graph on every test binary.
const SET_BY_CARGO_FOR_TESTS: &[&str] = &[
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);

/// The variable that points a test at a prebuilt `name` instead:
/// `antwort-sandbox-agent` -> `ANTWORT_SANDBOX_AGENT_BIN`.
pub fn override_variable(name: &str) -> String {
    format!("{}_BIN", name.to_ascii_uppercase().replace('-', "_"))
}

/// The path of binary `name` of workspace package `package` (built with `features`), in the
/// target folder and profile of the running test binary; the override variable
/// ([`override_variable`]) wins when set.
pub fn workspace_binary(package: &str, name: &str, features: &[&str]) -> PathBuf {
    workspace_binary_in(package, name, features, None)
}

/// [`workspace_binary`] built in cargo profile folder `profile` (`debug`, `release`) instead of
/// the running binary's: a benchmark (release) that runs a dev build of a helper binary rather
/// than building its whole dependency tree again in release.
pub fn workspace_binary_in(
    package: &str,
    name: &str,
    features: &[&str],
    profile: Option<&str>,
) -> PathBuf {
    if let Some(path) = std::env::var_os(override_variable(name)) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{}={} is not a file", override_variable(name), path.display());
        return path;
    }
    let mut built = BUILT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // <target>/<profile>/deps/<test>-<hash>; benches and examples sit one level up too.
    let own_profile_dir =
        exe.parent().and_then(Path::parent).expect("test binaries live in <target>/<profile>/deps");
    let target_dir = own_profile_dir.parent().expect("a target folder");
    let profile_dir = match profile {
        Some(profile) => target_dir.join(profile),
        None => own_profile_dir.to_path_buf(),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .args(["build", "-p", package, "--bin", name])
        .args(features.iter().flat_map(|feature| ["--features", feature]))
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null());
    if profile_dir.file_name().and_then(|n| n.to_str()) == Some("release") {
        command.arg("--release");
    }
    for (variable, _) in std::env::vars_os() {
        if variable
            .to_str()
            .is_some_and(|v| SET_BY_CARGO_FOR_TESTS.iter().any(|p| v.starts_with(p)))
        {
            command.env_remove(&variable);
        }
    }
    let status = command.status().expect("run cargo build");
    assert!(status.success(), "cargo build -p {package} --bin {name} failed");
    let path = profile_dir.join(name);
    assert!(path.is_file(), "cargo built {name} but it is not at {}", path.display());
    built.insert(name.to_string(), path.clone());
    path
}
