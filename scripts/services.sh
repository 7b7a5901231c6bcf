# shellcheck shell=bash
# Sourced by run.sh, test.sh and bench.sh: installs (if missing) and starts a
# throw-away local Redis and MongoDB-protocol server on free loopback ports, and
# stops them when the calling script exits.
#
# Honours REDIS_URL / MONGODB_URI: when set, that server is used instead and
# nothing is started for it. Exports REDIS_URL and MONGODB_URI for the caller.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL_DIR="$ROOT/.local"            # git-ignored: venv, data dirs, logs
VENV="$LOCAL_DIR/venv"
TOOLS_VENV="$LOCAL_DIR/tools"        # test-only Python tools, apart from the server's venv
OPENAPI_VALIDATOR_VERSION="0.7.2"
SECANTUS_VERSION="0.7.0b3"

log() { printf '\033[1m[orderly]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi
}

APT_UPDATED=""
apt_install() {
  command -v apt-get >/dev/null || die "apt-get not found; install $* yourself"
  if [ -z "$APT_UPDATED" ]; then
    log "apt-get update"
    as_root apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

require_rust() {
  command -v cargo >/dev/null || die "cargo (Rust >= 1.88) is required; see README 'Requirements'"
}

ensure_redis_installed() {
  command -v redis-server >/dev/null || apt_install redis-server redis-tools
  command -v redis-cli >/dev/null || apt_install redis-tools
}

ensure_python() {
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_install python3 python3-venv python3-pip
  fi
}

ensure_secantus_installed() {
  if [ ! -x "$VENV/bin/secantusd-py" ]; then
    ensure_python
    log "installing secantusdb==$SECANTUS_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "secantusdb==$SECANTUS_VERSION"
  fi
}

ensure_openapi_validator() {
  if [ ! -x "$TOOLS_VENV/bin/openapi-spec-validator" ]; then
    ensure_python
    log "installing openapi-spec-validator==$OPENAPI_VALIDATOR_VERSION into $TOOLS_VENV"
    python3 -m venv "$TOOLS_VENV"
    "$TOOLS_VENV/bin/pip" install -q --disable-pip-version-check \
      "openapi-spec-validator==$OPENAPI_VALIDATOR_VERSION"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for_port PORT SECONDS NAME LOGFILE
wait_for_port() {
  local port=$1 deadline=$((SECONDS + $2)) name=$3 logfile=$4
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 20 "$logfile" >&2 || true
      die "$name did not start on port $port"
    fi
    sleep 0.2
  done
}

SERVICE_PIDS=()
RUN_DIR=""
stop_services() {
  local pid
  for pid in "${SERVICE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${SERVICE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -n "$RUN_DIR" ] && rm -rf "$RUN_DIR"
}

# start_redis: a redis-server with AOF (appendfsync everysec) in a throw-away dir.
start_redis() {
  if [ -n "${REDIS_URL:-}" ]; then log "using Redis at $REDIS_URL"; return; fi
  ensure_redis_installed
  local port; port=$(free_port)
  mkdir -p "$RUN_DIR/redis"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$RUN_DIR/redis" \
    --appendonly yes --appendfsync everysec --save "" \
    --maxclients 10000 --logfile "$RUN_DIR/redis.log" --daemonize no &
  SERVICE_PIDS+=($!)
  wait_for_port "$port" 20 redis-server "$RUN_DIR/redis.log"
  export REDIS_URL="redis://127.0.0.1:$port"
  log "redis-server on $REDIS_URL"
}

# start_mongo: a SecantusDB (MongoDB wire protocol) server in a throw-away dir.
start_mongo() {
  if [ -n "${MONGODB_URI:-}" ]; then log "using MongoDB at $MONGODB_URI"; return; fi
  ensure_secantus_installed
  local port; port=$(free_port)
  mkdir -p "$RUN_DIR/mongo"
  # Run from the data dir so no stray secantusd.toml is auto-discovered.
  (cd "$RUN_DIR/mongo" && exec "$VENV/bin/secantusd-py" --host 127.0.0.1 --port "$port" \
    --storage-path "$RUN_DIR/mongo/data" --log-level WARNING >"$RUN_DIR/mongo.log" 2>&1) &
  SERVICE_PIDS+=($!)
  wait_for_port "$port" 60 secantusd "$RUN_DIR/mongo.log"
  export MONGODB_URI="mongodb://127.0.0.1:$port"
  log "MongoDB-protocol server on $MONGODB_URI"
}

start_services() {
  mkdir -p "$LOCAL_DIR"
  RUN_DIR="$(mktemp -d "$LOCAL_DIR/run.XXXXXX")"
  trap stop_services EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  start_redis
  start_mongo
}

# start_orderly [BINARY]: runs an already built Orderly (default
# target/debug/orderly, ORDERLY_ENV=test) on a free loopback port against
# REDIS_URL / MONGODB_URI with a fresh key prefix and database, waits until
# /readyz answers 200, and exports ORDERLY_URL. Stopped with the services.
# Used by the suites that drive a live Orderly from outside (browser, clients,
# OpenAPI fuzzing). Extra ORDERLY__… variables in the environment pass through.
start_orderly() {
  local binary=${1:-"$ROOT/target/debug/orderly"} port unique
  [ -x "$binary" ] || die "$binary is not built"
  port=$(free_port)
  unique="$(date +%s%N)$RANDOM"
  ORDERLY_ENV="${ORDERLY_ENV:-test}" \
    ORDERLY__SERVER__HOST=127.0.0.1 ORDERLY__SERVER__PORT="$port" \
    ORDERLY__REDIS__URL="$REDIS_URL" ORDERLY__REDIS__KEY_PREFIX="ext-$unique" \
    ORDERLY__MONGODB__URI="$MONGODB_URI" ORDERLY__MONGODB__DATABASE="orderly_ext_$unique" \
    RUST_LOG="${RUST_LOG:-warn}" \
    "$binary" >"$RUN_DIR/orderly-$port.log" 2>&1 &
  SERVICE_PIDS+=($!)
  export ORDERLY_URL="http://127.0.0.1:$port"
  local deadline=$((SECONDS + 60))
  until python3 -c "import urllib.request,sys; urllib.request.urlopen('$ORDERLY_URL/readyz', timeout=2)" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 "$RUN_DIR/orderly-$port.log" >&2 || true
      die "orderly did not become ready on $ORDERLY_URL"
    fi
    sleep 0.2
  done
  log "orderly on $ORDERLY_URL (log: $RUN_DIR/orderly-$port.log)"
}

# free_cluster_port: a free loopback port P <= 55535 whose cluster bus port
# P + 10000 is free too.
free_cluster_port() {
  python3 - <<'PY'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
for _ in range(2000):
    p = random.randint(20000, 55535)
    if free(p) and free(p + 10000):
        print(p); break
else:
    raise SystemExit("no free port pair for a cluster node")
PY
}

# start_cluster [MASTERS] [REPLICAS_PER_MASTER]: a local Redis Cluster from
# Debian's redis-server (AOF everysec, like start_redis) on free loopback
# ports; waits for cluster_state:ok and exports REDIS_CLUSTER_NODES
# (comma-separated redis:// URLs). Stopped with the other services.
# Honours an existing REDIS_CLUSTER_NODES (nothing is started then).
start_cluster() {
  if [ -n "${REDIS_CLUSTER_NODES:-}" ]; then log "using Redis Cluster at $REDIS_CLUSTER_NODES"; return; fi
  ensure_redis_installed
  local masters=${1:-3} replicas=${2:-0} n port nodes=() urls=()
  for ((n = 0; n < masters * (1 + replicas); n++)); do
    port=$(free_cluster_port)
    mkdir -p "$RUN_DIR/cluster/$port"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$RUN_DIR/cluster/$port" \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
      --appendonly yes --appendfsync everysec --save "" --maxclients 10000 \
      --logfile "$RUN_DIR/cluster/$port.log" --daemonize no &
    SERVICE_PIDS+=($!)
    wait_for_port "$port" 20 "redis-server (cluster node)" "$RUN_DIR/cluster/$port.log"
    nodes+=("127.0.0.1:$port")
    urls+=("redis://127.0.0.1:$port")
  done
  if [ "${#nodes[@]}" -eq 1 ]; then
    # redis-cli --cluster create wants 3 masters; one node takes every slot.
    redis-cli -p "${nodes[0]##*:}" cluster addslotsrange 0 16383 >"$RUN_DIR/cluster/create.log"
  else
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas "$replicas" --cluster-yes \
      >"$RUN_DIR/cluster/create.log" 2>&1 || { cat "$RUN_DIR/cluster/create.log" >&2; die "redis-cli --cluster create failed"; }
  fi
  local deadline=$((SECONDS + 30)) node
  for node in "${nodes[@]}"; do
    until redis-cli -h 127.0.0.1 -p "${node##*:}" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; do
      [ "$SECONDS" -lt "$deadline" ] || die "cluster did not reach cluster_state:ok"
      sleep 0.2
    done
  done
  REDIS_CLUSTER_NODES=$(IFS=,; echo "${urls[*]}")
  export REDIS_CLUSTER_NODES
  log "redis cluster ($masters masters, $replicas replica(s) each) on $REDIS_CLUSTER_NODES"
}
