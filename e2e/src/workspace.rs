//! The workspace root and the binaries its crates build.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The repository root (the workspace's directory).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("e2e/ has a parent").to_path_buf()
}

/// A path relative to the repository root.
pub fn path(relative: &str) -> PathBuf {
    root().join(relative)
}

/// The cargo profile directory the running test binary was built into (`target/debug`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps")
        .to_path_buf()
}

static BUILD: Mutex<()> = Mutex::new(());

/// What cargo sets for a crate's tests (The Cargo Book, "Environment variables Cargo sets for
/// crates"), by prefix.
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

/// The workspace binary `name` of package `package`, built by cargo when the test build did not
/// produce it already (`cargo nextest run --workspace` builds every binary).
pub fn binary(package: &str, name: &str) -> PathBuf {
    let path = profile_dir().join(name);
    let _guard = BUILD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if path.is_file() {
        return path;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .current_dir(root())
        .args(["build", "--quiet", "-p", package, "--bin", name])
        .env("CARGO_TARGET_DIR", profile_dir().parent().expect("target dir"));
    // What cargo sets for this test crate would leak into build scripts that rerun on it (ring
    // reruns on CARGO_PKG_*), rebuilding them for every other crate's build.
    for (var, _) in std::env::vars_os() {
        let Some(text) = var.to_str() else { continue };
        if SET_BY_CARGO_FOR_TESTS.iter().any(|prefix| text.starts_with(prefix)) {
            command.env_remove(&var);
        }
    }
    let status = command.status().expect("run cargo build");
    assert!(status.success(), "cargo build -p {package} --bin {name} failed");
    assert!(path.is_file(), "cargo built {name} but it is not at {}", path.display());
    path
}
