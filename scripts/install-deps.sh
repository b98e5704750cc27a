#!/usr/bin/env bash
# Installs what Jank builds, runs and tests with, on Debian 12 with Swift 6.3 and CPython.
# Idempotent: what is already present is not fetched again.
#   system: pkg-config + libsystemd-dev (CSystemd), systemd (systemd-analyze verify of
#           deploy/), procps (pgrep in tests), wrk and curl (HTTP bench,
#           README examples), Go and go-plugin 1.0.1
#           (plugins/hello-world-go and the go-plugin interop tests, built offline)
#   python: openapi-spec-validator and schemathesis (the OpenAPI document's tests)
set -euo pipefail

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

packages=(pkg-config libsystemd-dev systemd procps wrk curl
  golang-go golang-github-hashicorp-go-plugin-dev golang-google-grpc-dev golang-goprotobuf-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
command -v python3 >/dev/null || missing+=(python3 python3-pip)
if [ ${#missing[@]} -gt 0 ]; then
  if [ -n "$sudo" ] && ! command -v sudo >/dev/null; then
    echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python_packages=(schemathesis==4.32.5 openapi-spec-validator==0.9.0)
if ! python3 -c "import schemathesis, openapi_spec_validator" 2>/dev/null; then
  echo "install-deps: installing ${python_packages[*]}"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-pip >/dev/null
  fi
  # Debian's own python refuses system-wide pip installs unless told otherwise.
  python3 -m pip install --quiet --disable-pip-version-check "${python_packages[@]}" 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "${python_packages[@]}"
fi
