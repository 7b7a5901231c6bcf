#!/usr/bin/env bash
# Runs the benchmark: builds release binaries, starts Redis (AOF everysec) and a
# MongoDB-protocol server, starts Orderly (release, RUST_LOG=warn), and drives
# it with examples/bench.rs, which also measures this machine's ceilings in the
# same run. Results: the printed table and target/bench/results.json.
# Extra arguments go to the bench (e.g. --seconds 10, --soak-seconds 600,
# --only push1).
#
# PROFILE_DIR=dir: also record `perf` profiles of Orderly and redis-server for
# the whole bench run (PERF_ARGS, default "-F 999 -g") and write their
# `perf report --no-children` summaries to dir/{orderly,redis}.txt.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"
cd "$ROOT"
require_rust
ensure_redis_installed
start_services

# Profiling needs symbols: the `profiling` profile is release plus line tables.
BUILD_PROFILE=release
if [ -n "${PROFILE_DIR:-}" ]; then BUILD_PROFILE=profiling; fi
log "building $BUILD_PROFILE binaries"
cargo build --profile "$BUILD_PROFILE" --locked --bin orderly --example bench

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
  "./target/$BUILD_PROFILE/orderly" &
ORDERLY_PID=$!
SERVICE_PIDS+=("$ORDERLY_PID")
until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; do sleep 0.2; done

REDIS_PORT="${REDIS_URL##*:}"
REDIS_PORT="${REDIS_PORT%%/*}"

PERF_PIDS=()
if [ -n "${PROFILE_DIR:-}" ]; then
  mkdir -p "$PROFILE_DIR"
  REDIS_PID=$(redis-cli -p "$REDIS_PORT" INFO server | tr -d '\r' | sed -n 's/^process_id://p')
  for target in "orderly:$ORDERLY_PID" "redis:$REDIS_PID"; do
    # shellcheck disable=SC2086
    perf record ${PERF_ARGS:--F 999 -g} -p "${target#*:}" -o "$PROFILE_DIR/${target%%:*}.data" \
      2>"$PROFILE_DIR/${target%%:*}.record.log" &
    PERF_PIDS+=($!)
  done
fi

status=0
"./target/$BUILD_PROFILE/examples/bench" --url "http://127.0.0.1:$PORT" --redis-port "$REDIS_PORT" \
  --pid "$ORDERLY_PID" "$@" || status=$?

if [ -n "${PROFILE_DIR:-}" ]; then
  for pid in "${PERF_PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${PERF_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  for name in orderly redis; do
    perf report -i "$PROFILE_DIR/$name.data" --no-children --stdio --percent-limit 0.7 \
      -g none --sort dso,sym 2>/dev/null | grep -v '^$' >"$PROFILE_DIR/$name.txt" || true
  done
  log "profiles: $PROFILE_DIR/{orderly,redis}.txt"
fi
exit "$status"
