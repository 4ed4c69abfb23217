//! The committed CRD manifest is the one generated from the Rust types.

use std::path::Path;

#[test]
fn committed_crd_matches_the_rust_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crd/sandboxpool.yaml");
    let committed = std::fs::read_to_string(&path).expect("read deploy/crd/sandboxpool.yaml");
    let generated = antwort_pool_manager::crd::crd_yaml();
    assert!(
        committed == generated,
        "deploy/crd/sandboxpool.yaml is stale: regenerate it with \
         `cargo run -p antwort-pool-manager -- crd > deploy/crd/sandboxpool.yaml`"
    );
}
