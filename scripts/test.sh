#!/usr/bin/env bash
# Runs every seatwatch test, after installing what the tests need:
#   - the tansu Kafka-protocol broker (crates.io), for the end-to-end tests;
#   - promtool (Debian's prometheus package), to check every /metrics output;
#   - docker-compose (Debian's), to validate docker-compose.yml;
#   - amtool (Debian's prometheus-alertmanager), to check the Alertmanager config;
#   - kubernetes-validate (PyPI; it ships the Kubernetes JSON schemas), to check the
#     Kubernetes manifests offline;
# then checks formatting and lints, and runs the whole test suite.
# Installs are skipped when the tools are already there, so later runs start at once.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

TANSU_VERSION=0.6.0
KUBERNETES_VALIDATE_VERSION=1.37.0
# Where kubernetes-validate goes when the system's Python refuses pip installs (PEP 668).
TOOLS_VENV="${XDG_CACHE_HOME:-$HOME/.cache}/seatwatch/venv"

step() { printf '\n==> %s\n' "$*"; }

install_tansu() {
  if command -v tansu >/dev/null 2>&1 && tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    return
  fi
  step "installing tansu $TANSU_VERSION (takes a while once; cached in ~/.cargo/bin)"
  # Its storage engines need these features; later releases need a newer rustc.
  cargo install --locked tansu --version "$TANSU_VERSION" --features dynostore,libsql
}

install_debian_tools() {
  local missing=()
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "warning: ${missing[*]} missing and cannot be installed here (needs root and apt-get);" \
         "tests that need them will say so" >&2
    return
  fi
  step "installing ${missing[*]} from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_kubernetes_validate() {
  [ -x "$TOOLS_VENV/bin/kubernetes-validate" ] && export PATH="$PATH:$TOOLS_VENV/bin"
  command -v kubernetes-validate >/dev/null 2>&1 && return
  if ! command -v python3 >/dev/null 2>&1; then
    echo "warning: kubernetes-validate missing and there is no python3 to install it with;" \
         "tests that need it will say so" >&2
    return
  fi
  step "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION from PyPI"
  if ! PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
           "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"; then
    if ! { python3 -m venv "$TOOLS_VENV" &&
           "$TOOLS_VENV/bin/pip" install --quiet --disable-pip-version-check \
             "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"; }; then
      echo "warning: could not install kubernetes-validate (Debian's python3-venv may be" \
           "missing); tests that need it will say so" >&2
      return
    fi
    export PATH="$PATH:$TOOLS_VENV/bin"
  fi
  # pyenv puts new commands on PATH through its shims, made here.
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
}

install_tansu
install_debian_tools
install_kubernetes_validate
export TANSU_BIN="$(command -v tansu)"
# Tests that use promtool, amtool, docker-compose or kubernetes-validate fail, rather than
# skip, when they are missing.
export REQUIRE_TEST_TOOLS=1

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
# The tests run on a build with the fault suite's fail points (`failpoints`), so that
# build is linted too.
cargo clippy --workspace --all-targets --features failpoints -- -D warnings

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --features failpoints --no-fail-fast
else
  cargo test --workspace --features failpoints --no-fail-fast
fi
