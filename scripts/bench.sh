#!/usr/bin/env bash
# Runs the benchmark: builds release binaries, starts Redis (AOF everysec) and a
# MongoDB-protocol server, starts Orderly (release, RUST_LOG=warn), and drives
# it with examples/bench.rs, which also measures this machine's ceilings in the
# same run. Results: the printed table and target/bench/results.json.
# Extra arguments go to the bench (e.g. --seconds 10, --soak-seconds 600,
# --only push1).
#
# --cluster: the same rows on a local Redis Cluster (3 masters, or
# --shards N, with --replicas R replicas each) with two Orderly processes
# sharing it; every row's cost then lists each shard's Redis commands and
# script time per job. --wait N sets redis.wait_replicas (each publish waits
# until N replicas have it).
#
# PROFILE_DIR=dir: also record `perf` profiles of Orderly and redis-server for
# the whole bench run (PERF_ARGS, default "-F 999 -g") and write their
# `perf report --no-children` summaries to dir/{orderly,redis}.txt.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"
cd "$ROOT"
require_rust
ensure_redis_installed

CLUSTER=""
SHARDS=3
REPLICAS=0
WAIT_REPLICAS=0
BENCH_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cluster) CLUSTER=1 ;;
    --shards) SHARDS=$2; shift ;;
    --replicas) REPLICAS=$2; shift ;;
    --wait) WAIT_REPLICAS=$2; shift ;;
    *) BENCH_ARGS+=("$1") ;;
  esac
  shift
done
start_services
if [ -n "$CLUSTER" ]; then
  start_cluster "$SHARDS" "$REPLICAS"
fi

# Profiling needs symbols: the `profiling` profile is release plus line tables.
BUILD_PROFILE=release
if [ -n "${PROFILE_DIR:-}" ]; then BUILD_PROFILE=profiling; fi
log "building $BUILD_PROFILE binaries"
cargo build --profile "$BUILD_PROFILE" --locked --bin orderly --example bench

PREFIX="bench-$(date +%s)"
DATABASE="bench_$(date +%s)"
# start_bench_orderly: one release Orderly on a free port; appends its URL
# and pid to URLS / PIDS.
URLS=()
PIDS=()
start_bench_orderly() {
  local port; port=$(free_port)
  ORDERLY_ENV=dev \
  ORDERLY__SERVER__PORT="$port" \
  ORDERLY__REDIS__URL="$REDIS_URL" \
  ORDERLY__REDIS__CLUSTER_NODES="${CLUSTER:+$REDIS_CLUSTER_NODES}" \
  ORDERLY__REDIS__KEY_PREFIX="$PREFIX" \
  ORDERLY__REDIS__WAIT_REPLICAS="$WAIT_REPLICAS" \
  ORDERLY__MONGODB__URI="$MONGODB_URI" \
  ORDERLY__MONGODB__DATABASE="$DATABASE" \
  ORDERLY__AUTH__BCRYPT_COST=4 \
  ORDERLY__WORKER__CONCURRENCY=64 \
  RUST_LOG=warn \
    "./target/$BUILD_PROFILE/orderly" &
  SERVICE_PIDS+=($!)
  PIDS+=($!)
  URLS+=("http://127.0.0.1:$port")
  until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; do sleep 0.2; done
}
start_bench_orderly
ORDERLY_PID=${PIDS[0]}
REDIS_PORTS="${REDIS_URL##*:}"
REDIS_PORTS="${REDIS_PORTS%%/*}"
if [ -n "$CLUSTER" ]; then
  start_bench_orderly
  # The masters' ports, from the cluster's own view.
  first="${REDIS_CLUSTER_NODES%%,*}"
  first="${first##*:}"
  REDIS_PORTS=$(redis-cli -p "$first" cluster nodes | awk '$3 ~ /master/ {split($2, a, "[:@]"); print a[2]}' | paste -sd,)
fi
REDIS_PORT="${REDIS_PORTS%%,*}"

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
"./target/$BUILD_PROFILE/examples/bench" --url "$(IFS=,; echo "${URLS[*]}")" \
  --redis-port "$REDIS_PORTS" --pid "$(IFS=,; echo "${PIDS[*]}")" "${BENCH_ARGS[@]}" || status=$?

# The publish row and its ceiling again, driven by Debian's `wrk` (C, event
# loop, one thread): a generator much cheaper per request than the Rust one,
# so the row measures Orderly. Its CPU is recorded: a row only counts as met
# when the generator was not saturated. Runs unless `--only` names other rows.
only=""
for ((i = 0; i < ${#BENCH_ARGS[@]}; i++)); do
  if [ "${BENCH_ARGS[$i]}" = "--only" ]; then only="${BENCH_ARGS[$((i + 1))]:-}"; fi
done
if [ -z "$only" ] || [[ ",$only," == *,wrk,* ]]; then
  command -v wrk >/dev/null || apt_install wrk
  base="${URLS[0]}"
  email="wrk-$(date +%s%N)@bench.example"
  curl -sf -X POST "$base/v1/auth/register" -H 'Content-Type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"bench-password-1\"}" >/dev/null
  TOKEN=$(curl -sf -X POST "$base/v1/auth/login" -H 'Content-Type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"bench-password-1\"}" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
  curl -sf -X PUT "$base/v1/queues/bench-wrk" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -d '{"delivery":{"mode":"pull"}}' >/dev/null
  seconds=${WRK_SECONDS:-5}
  # wrk_run NAME ARGS...: runs wrk on one thread, prints its req/s and the
  # share of one core it used (user+sys over wall time, from /proc).
  wrk_run() {
    local name=$1; shift
    local out="target/bench/wrk-$name.txt"
    mkdir -p target/bench
    local ticks; ticks=$(getconf CLK_TCK)
    local start; start=$(date +%s%N)
    TOKEN="$TOKEN" wrk -t1 -c64 -d"${seconds}s" --latency "$@" >"$out" 2>&1 &
    local pid=$!
    local cpu=0
    while kill -0 "$pid" 2>/dev/null; do
      if [ -r "/proc/$pid/stat" ]; then
        cpu=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo "$cpu")
      fi
      sleep 0.2
    done
    wait "$pid" || true
    local wall_ms=$(( ($(date +%s%N) - start) / 1000000 ))
    local rps; rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    local core; core=$(awk -v t="$cpu" -v hz="$ticks" -v ms="$wall_ms" 'BEGIN {printf "%.2f", (t / hz) / (ms / 1000)}')
    echo "$name $rps $core"
  }
  # Orderly's peak resident memory during the two wrk rows alone: writing 5
  # to clear_refs resets the process's VmHWM to its current resident memory.
  { echo 5 >"/proc/$ORDERLY_PID/clear_refs"; } 2>/dev/null || true
  read -r _ trivial_rps trivial_cpu < <(wrk_run trivial "$base/healthz")
  jobs_before=$(curl -sf "$base/v1/queues/bench-wrk" -H "Authorization: Bearer $TOKEN" | sed -n 's/.*"waiting":\([0-9]*\).*/\1/p')
  read -r _ publish_rps publish_cpu < <(wrk_run publish -s scripts/wrk_publish.lua "$base/v1/queues/bench-wrk/jobs")
  summary=$(grep '^wrk-summary' target/bench/wrk-publish.txt || true)
  requests=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$summary")
  bad=$(sed -n 's/.*errors_status=\([0-9]*\).*/\1/p' <<<"$summary")
  p50=$(sed -n 's/.*p50_us=\([0-9]*\).*/\1/p' <<<"$summary")
  p99=$(sed -n 's/.*p99_us=\([0-9]*\).*/\1/p' <<<"$summary")
  jobs_after=$(curl -sf "$base/v1/queues/bench-wrk" -H "Authorization: Bearer $TOKEN" | sed -n 's/.*"waiting":\([0-9]*\).*/\1/p')
  accepted=$(( ${jobs_after:-0} - ${jobs_before:-0} ))
  ratio=$(awk -v a="$publish_rps" -v b="$trivial_rps" 'BEGIN {printf "%.2f", a / b}')
  echo
  echo "wrk (one thread, 64 connections, ${seconds}s): generator CPU is the share of one core it used"
  printf '%-44s %12s %8s %10s %10s %14s\n' figure value unit target ratio generator_cpu
  printf '%-44s %12s %8s %10s %10s %14s\n' "trivial endpoint (/healthz), wrk" "$trivial_rps" "req/s" "-" "-" "$trivial_cpu"
  printf '%-44s %12s %8s %10s %10s %14s\n' "publish, 1 job/request, wrk" "$publish_rps" "jobs/s" "30000" "$ratio" "$publish_cpu"
  echo "  latency p50 ${p50:-?} µs, p99 ${p99:-?} µs; requests ${requests:-?}, non-2xx ${bad:-?}; jobs enqueued $accepted"
  wrk_peak_kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$ORDERLY_PID/status" 2>/dev/null || echo 0)
  echo "  Orderly's peak resident memory during the wrk rows: $(awk -v k="${wrk_peak_kb:-0}" 'BEGIN {printf "%.1f", k / 1024}') MB (target 100)"
  # Requests still in flight when wrk stops are not counted by it but may be
  # enqueued: at most one per connection.
  if [ "${bad:-1}" != "0" ] || [ "$accepted" -lt "${requests:-0}" ] || [ "$accepted" -gt $(( ${requests:-0} + 64 )) ]; then
    echo "  WARNING: wrk publishes and enqueued jobs do not match"
    status=1
  fi
fi

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
