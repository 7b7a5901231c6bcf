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
log "cargo test (one Redis)"
cargo test --locked --all-targets -- --skip cluster:: "$@"

# The same push, pull, job, batch-ack, crash, schedule and ingress-limit
# scenarios again with every Orderly on a local 3-master Redis Cluster, plus
# the cluster-only tests (spread over the masters, a failover on a 6-node
# cluster of the test's own).
log "cargo test (Redis Cluster)"
start_cluster 3 0
ORDERLY_TEST_CLUSTER_NODES="$REDIS_CLUSTER_NODES" \
  cargo test --locked -p orderly --test api -- push:: pull:: jobs:: batch_ack:: crash:: lanes:: flow:: cluster:: schedules:: limits:: "$@"
if [ $# -eq 0 ] || [[ " $* " == *console* ]]; then "$ROOT/scripts/console_test.sh"; fi  # the console in headless Chromium
if [ $# -eq 0 ] || [[ " $* " == *clients* ]]; then bash "$ROOT/scripts/clients_test.sh"; fi  # the Python, TypeScript and Rust clients against a live Orderly
[ "$#" -gt 0 ] || "$ROOT/scripts/openapi_fuzz.sh" # schemathesis vs a live Orderly (full runs only)
