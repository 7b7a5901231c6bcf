#!/usr/bin/env bash
# Runs the whole test suite: formatting and lint checks, unit tests, and the
# integration tests against a real Redis and a real MongoDB-protocol server
# that this script installs (if missing) and starts on free loopback ports.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"
cd "$ROOT"
require_rust
start_services

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
log "cargo test"
cargo test --locked --all-targets -- "$@"
