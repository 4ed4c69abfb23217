#!/usr/bin/env bash
# Starts antwort on this machine: the gateway on ANTWORT_LISTEN (default 127.0.0.1:8080) in front
# of the model backend at ANTWORT_BACKEND_URL (vLLM, Ollama, LiteLLM: an OpenAI-compatible base
# URL ending in /v1). Without ANTWORT_BACKEND_URL, antwort's scripted backend stands in for the
# model (it echoes; it is not a language model). Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

listen="${ANTWORT_LISTEN:-127.0.0.1:8080}"
cargo build --release --locked -p antwort-gateway -p antwort-scripted-backend --bins

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

backend_url="${ANTWORT_BACKEND_URL:-}"
if [ -z "$backend_url" ]; then
  backend_port="${ANTWORT_SCRIPTED_BACKEND_PORT:-8000}"
  target/release/antwort-scripted-backend --listen "127.0.0.1:${backend_port}" &
  pids+=("$!")
  backend_url="http://127.0.0.1:${backend_port}/v1"
  echo "antwort: no ANTWORT_BACKEND_URL set; using the SCRIPTED backend at ${backend_url} (an echo stand-in, not a model)"
else
  echo "antwort: model backend ${backend_url}"
fi

# The gateway refuses to start without authentication unless told it is a development setup.
if ! env | grep -q '^ANTWORT_AUTH__'; then
  export ANTWORT_AUTH__MODE=none
  echo "antwort: authentication is OFF (auth.mode: none, for local development); set ANTWORT_AUTH__API_KEYS or ANTWORT_AUTH__OIDC to require it"
fi

echo "antwort: responses are stored in ${ANTWORT_STORE__URL:-sqlite://antwort-data/antwort.db} (set ANTWORT_STORE__URL for PostgreSQL)"
target/release/antwort-gateway --listen "$listen" --backend-url "$backend_url" &
pids+=("$!")
echo "antwort: point OpenAI clients at http://${listen}/v1 (e.g. OPENAI_BASE_URL=http://${listen}/v1); Ctrl-C stops"
wait -n "${pids[@]}"
