#!/usr/bin/env bash
# Runs every test of antwort on a fresh machine: installs what the tests need (Debian packages
# listed in scripts/apt-packages.txt), then formatting, lints, doc tests and the test suite.
# The last line printed is the test runner's own summary.
set -euo pipefail
cd "$(dirname "$0")/.."
# Incremental caches would double the build directory for a one-shot run.
export CARGO_INCREMENTAL=0

scripts/install-test-deps.sh
scripts/kube-test-env.sh build  # pool-manager tests start a real kube-apiserver (built once, cached)
scripts/install-test-tools.sh >/dev/null  # e2e tests: helm, kubectl, kubernetes-validate, hadolint, openai-python (OpenAI SDK)

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== doc tests"
cargo test --workspace --doc --locked --quiet
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
