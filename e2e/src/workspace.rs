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

/// The workspace binary `name` of package `package`, built by cargo when the test build did not
/// produce it already (`cargo nextest run --workspace` builds every binary).
pub fn binary(package: &str, name: &str) -> PathBuf {
    binary_with_features(package, name, &[])
}

/// [`binary`] for a binary that needs cargo features of its package (`required-features`).
pub fn binary_with_features(package: &str, name: &str, features: &[&str]) -> PathBuf {
    let path = profile_dir().join(name);
    let _guard = BUILD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if path.is_file() {
        return path;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .current_dir(root())
        .args(["build", "--quiet", "-p", package, "--bin", name])
        .args(features.iter().flat_map(|feature| ["--features", feature]))
        .env("CARGO_TARGET_DIR", profile_dir().parent().expect("target dir"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p {package} --bin {name} failed");
    assert!(path.is_file(), "cargo built {name} but it is not at {}", path.display());
    path
}
