#!/usr/bin/env bash
# A real kube-apiserver + etcd for tests, on loopback, without systemd, Docker or a kubelet.
#
#   scripts/kube-test-env.sh build       build kube-apiserver once from Debian's `kubernetes`
#                                        source package (1.20.2) and cache it; no-op when cached
#   scripts/kube-test-env.sh start DIR   start etcd + kube-apiserver on free loopback ports, with
#                                        state, logs, PIDs and DIR/kubeconfig under DIR; returns
#                                        once /readyz answers ok
#   scripts/kube-test-env.sh stop DIR    stop what `start DIR` started (by PID) and wait for it
#
# Cache: $ANTWORT_K8S_CACHE (default /var/cache/antwort/k8s-1.20.2); the binary is
# $CACHE/bin/kube-apiserver. Needs root (or sudo) only to apt-get install missing packages.
# The kubeconfig holds a static admin token (system:masters) and skips TLS verification: it is a
# throwaway test cluster on 127.0.0.1.
set -euo pipefail

K8S_VERSION=1.20.2
CACHE="${ANTWORT_K8S_CACHE:-/var/cache/antwort/k8s-${K8S_VERSION}}"
APISERVER="$CACHE/bin/kube-apiserver"
# Bump when the build recipe changes: a cached binary from an older recipe is rebuilt.
RECIPE=2
STAMP="$CACHE/bin/recipe"
TOKEN="antwort-test-admin-token"

log() { echo "kube-test-env: $*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs the Debian packages given that are not installed yet.
apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

ensure_deb_src() {
  if grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ || grep -qs '^deb-src ' /etc/apt/sources.list; then
    return
  fi
  log "adding a deb-src entry for bookworm"
  as_root tee /etc/apt/sources.list.d/antwort-deb-src.sources >/dev/null <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  as_root apt-get update -qq
}

runtime_packages() {
  apt_install etcd-server etcd-client openssl curl python3
}

cmd_build() {
  runtime_packages
  if [ -x "$APISERVER" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$RECIPE" ]; then
    return
  fi
  apt_install golang-go dpkg-dev rsync jq make golang-github-modern-go-reflect2-dev
  ensure_deb_src
  as_root mkdir -p "$CACHE"
  local scratch
  scratch="$(mktemp -d "${TMPDIR:-/tmp}/antwort-k8s-build.XXXXXX")"
  BUILD_SCRATCH="$scratch" # global: the EXIT trap may run after this function's locals are gone
  # The source tree and Go caches are big (~2 GB): keep them only for the build.
  trap 'rm -rf "$BUILD_SCRATCH"' EXIT
  log "building kube-apiserver $K8S_VERSION from Debian source in $scratch (about 8 minutes)"
  (
    cd "$scratch"
    apt-get source -qq kubernetes >/dev/null
    src="$(find . -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)"
    [ -n "$src" ] || die "apt-get source kubernetes produced no tree"
    cd "$src"
    # The vendored reflect2 1.0.1 panics under go >= 1.18 (nil pointer in Type2 while decoding any
    # JSON map, i.e. every create); Debian's 1.0.2 fixes it.
    rm -rf vendor/github.com/modern-go/reflect2
    cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
    # GOPATH mode, as debian/rules does: `go build -mod=vendor` fails under Debian's go1.19.
    mkdir -p .go/src/k8s.io
    ln -sfn ../../.. .go/src/k8s.io/kubernetes
    mkdir -p "$scratch/home"
    env GOPATH="$PWD/.go" CGO_ENABLED=0 GOPROXY=off HOME="$scratch/home" \
      make WHAT=cmd/kube-apiserver >"$scratch/build.log" 2>&1 ||
      { tail -n 40 "$scratch/build.log" >&2; die "make WHAT=cmd/kube-apiserver failed"; }
    built="$(find _output -type f -name kube-apiserver -perm -u+x | head -n1)"
    [ -n "$built" ] || die "no kube-apiserver binary under _output"
    as_root mkdir -p "$CACHE/bin"
    as_root install -m 0755 "$built" "$APISERVER.tmp"
    as_root mv "$APISERVER.tmp" "$APISERVER"
    echo "$RECIPE" | as_root tee "$STAMP" >/dev/null
  )
  rm -rf "$scratch"
  trap - EXIT
  log "cached $APISERVER"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits until $1 (a command string) succeeds, at most $2 seconds, or dies with $3.
wait_for() {
  local deadline=$((SECONDS + $2))
  until eval "$1" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "$3"
    sleep 0.2
  done
}

cmd_start() {
  local dir="$1"
  [ -x "$APISERVER" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$RECIPE" ] ||
    die "$APISERVER missing or stale: run '$0 build' first"
  command -v etcd >/dev/null || die "etcd missing: run '$0 build' first"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  START_DIR="$dir"
  [ ! -e "$dir/apiserver.pid" ] || die "$dir already holds a running environment (stop it first)"
  local etcd_port etcd_peer api_port
  etcd_port="$(free_port)"
  etcd_peer="$(free_port)"
  api_port="$(free_port)"

  # On failure after this point, stop whatever already started.
  trap 'cmd_stop "$START_DIR" >/dev/null 2>&1 || true' EXIT

  etcd --name test --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "test=http://127.0.0.1:$etcd_peer" \
    --unsafe-no-fsync >"$dir/etcd.log" 2>&1 </dev/null &
  echo $! >"$dir/etcd.pid"
  wait_for "curl -fsS http://127.0.0.1:$etcd_port/health" 30 "etcd did not become healthy (see $dir/etcd.log)"

  mkdir -p "$dir/certs"
  openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
  openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
  echo "$TOKEN,admin,admin,system:masters" >"$dir/tokens.csv"

  "$APISERVER" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
    --secure-port="$api_port" --cert-dir "$dir/certs" \
    --token-auth-file "$dir/tokens.csv" \
    --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file "$dir/sa.pub" \
    --service-account-signing-key-file "$dir/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 \
    >"$dir/apiserver.log" 2>&1 </dev/null &
  echo $! >"$dir/apiserver.pid"

  cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://127.0.0.1:$api_port
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: $TOKEN
contexts:
- name: test
  context:
    cluster: test
    user: admin
    namespace: default
current-context: test
EOF
  wait_for "curl -fsSk -H 'Authorization: Bearer $TOKEN' https://127.0.0.1:$api_port/readyz" 90 \
    "kube-apiserver not ready (see $dir/apiserver.log)"
  # No kube-controller-manager runs, so nothing creates the default ServiceAccount.
  wait_for "curl -fsSk -H 'Authorization: Bearer $TOKEN' https://127.0.0.1:$api_port/api/v1/namespaces/default" 30 \
    "namespace default never appeared"
  local code
  code="$(curl -sSk -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' \
    -d '{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"default"}}' \
    "https://127.0.0.1:$api_port/api/v1/namespaces/default/serviceaccounts")"
  case "$code" in
    201 | 409) ;;
    *) die "creating the default ServiceAccount answered HTTP $code" ;;
  esac
  trap - EXIT
  echo "https://127.0.0.1:$api_port" >"$dir/server"
  log "ready: KUBECONFIG=$dir/kubeconfig"
}

# Sends SIGTERM to the PID in file $1, waits up to 10 s, then SIGKILL.
stop_pidfile() {
  local file="$1" pid i
  [ -f "$file" ] || return 0
  pid="$(cat "$file")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

cmd_stop() {
  local dir="$1"
  stop_pidfile "$dir/apiserver.pid"
  stop_pidfile "$dir/etcd.pid"
}

case "${1:-}" in
  build) cmd_build ;;
  start) [ $# -eq 2 ] || die "usage: $0 start DIR"; cmd_start "$2" ;;
  stop) [ $# -eq 2 ] || die "usage: $0 stop DIR"; cmd_stop "$2" ;;
  *) die "usage: $0 build | start DIR | stop DIR" ;;
esac
