#!/usr/bin/env bash
# Starts the whole antwort platform on this machine: builds the release binaries, then runs
# `antwort up` (the development CA, the pool manager with warm Python sandboxes, the gateway with
# its embedded store, and the model backend at ANTWORT_BACKEND_URL — or antwort's scripted
# stand-in when it is unset). Arguments go to `antwort up` (e.g. --listen 127.0.0.1:9000; see
# `target/release/antwort up --help` and README.md). Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked \
  -p antwort -p antwort-gateway -p antwort-pool-manager -p antwort-sandbox-agent \
  -p antwort-scripted-backend --bins
exec target/release/antwort up "$@"
