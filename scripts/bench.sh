#!/usr/bin/env bash
# Runs the benchmark: builds release binaries, starts Redis (AOF everysec) and a
# MongoDB-protocol server, starts Orderly (release, RUST_LOG=warn), and drives
# it with examples/bench.rs, which also measures this machine's ceilings in the
# same run. Results: the printed table and target/bench/results.json.
# Extra arguments go to the bench (e.g. --seconds 10, --soak-seconds 600).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"
cd "$ROOT"
require_rust
ensure_redis_installed
start_services

log "building release binaries"
cargo build --release --locked --bin orderly --example bench

PORT=$(free_port)
ORDERLY_ENV=dev \
ORDERLY__SERVER__PORT="$PORT" \
ORDERLY__REDIS__URL="$REDIS_URL" \
ORDERLY__REDIS__KEY_PREFIX="bench-$(date +%s)" \
ORDERLY__MONGODB__URI="$MONGODB_URI" \
ORDERLY__MONGODB__DATABASE="bench_$(date +%s)" \
ORDERLY__AUTH__BCRYPT_COST=4 \
ORDERLY__WORKER__CONCURRENCY=64 \
RUST_LOG=warn \
  ./target/release/orderly &
ORDERLY_PID=$!
SERVICE_PIDS+=("$ORDERLY_PID")
until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; do sleep 0.2; done

REDIS_PORT="${REDIS_URL##*:}"
REDIS_PORT="${REDIS_PORT%%/*}"
./target/release/examples/bench --url "http://127.0.0.1:$PORT" --redis-port "$REDIS_PORT" \
  --pid "$ORDERLY_PID" "$@"
