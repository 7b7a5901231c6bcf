#!/usr/bin/env bash
# Runs the whole test suite: formatting and lint checks, unit tests, and the
# integration tests against a real Redis and a real MongoDB-protocol server
# that this script installs (if missing) and starts on free loopback ports.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"
cd "$ROOT"
require_rust
start_services
# Some tests start (and stop) a Redis and a MongoDB-protocol server of their own.
ensure_redis_installed
ensure_secantus_installed
export ORDERLY_TEST_MONGOD="$VENV/bin/secantusd-py"
# The OpenAPI tests validate the served document with openapi-spec-validator.
ensure_openapi_validator
export ORDERLY_TEST_OPENAPI_PYTHON="$TOOLS_VENV/bin/python"
# Crash tests signal the orderly binary with the kill(1) program (procps).
[ -x /usr/bin/kill ] || [ -x /bin/kill ] || apt_install procps

log "docker-compose config -q"
command -v docker-compose >/dev/null || apt_install docker-compose
if [ ! -f deploy/orderly.env ]; then
  cp deploy/orderly.env.example deploy/orderly.env
  trap 'rm -f deploy/orderly.env; stop_services' EXIT
fi
docker-compose -f docker-compose.yml config -q

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
log "cargo test"
cargo test --locked --all-targets -- "$@"
[ "$#" -gt 0 ] || "$ROOT/scripts/openapi_fuzz.sh" # schemathesis vs a live Orderly (full runs only)
