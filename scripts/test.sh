#!/usr/bin/env bash
# Runs every seatwatch test, after installing what the tests need:
#   - the tansu Kafka-protocol broker (crates.io), for the end-to-end tests;
#   - promtool (Debian's prometheus package), to check every /metrics output;
#   - docker-compose (Debian's), to validate docker-compose.yml;
# then checks formatting and lints, and runs the whole test suite.
# Installs are skipped when the tools are already there, so later runs start at once.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

TANSU_VERSION=0.6.0

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

install_tansu
install_debian_tools
export TANSU_BIN="$(command -v tansu)"
# Tests that use promtool or docker-compose fail, rather than skip, when they are missing.
export SEATWATCH_STRICT_TOOLS=1

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
