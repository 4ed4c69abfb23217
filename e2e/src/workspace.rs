//! The workspace root and the binaries its crates build.

use std::path::{Path, PathBuf};

/// The repository root (the workspace's directory).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("e2e/ has a parent").to_path_buf()
}

/// A path relative to the repository root.
pub fn path(relative: &str) -> PathBuf {
    root().join(relative)
}

/// The workspace binary `name` of package `package` (see
/// [`antwort_common::test_support::workspace_binary`]: built once per test process, so never
/// stale; `ANTWORT_<NAME>_BIN` points at a prebuilt one).
pub fn binary(package: &str, name: &str) -> PathBuf {
    binary_with_features(package, name, &[])
}

/// [`binary`] for a binary that needs cargo features of its package (`required-features`).
pub fn binary_with_features(package: &str, name: &str, features: &[&str]) -> PathBuf {
    antwort_common::test_support::workspace_binary(package, name, features)
}
