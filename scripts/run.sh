#!/usr/bin/env bash
# Runs Orderly locally (ORDERLY_ENV=dev; debug build, --release for an
# optimised one) with its own Redis and MongoDB-protocol server; --cluster
# runs it on a local 3-master Redis Cluster instead of one Redis. Ctrl-C stops
# everything. Set REDIS_URL / REDIS_CLUSTER_NODES / MONGODB_URI to use yours.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"
cd "$ROOT"
require_rust
# The debug profile builds in about half the time of a release build, which is
# what a first run needs; --release builds the optimised binary.
PROFILE=debug
CLUSTER=""
for arg in "$@"; do
  case "$arg" in
    --release) PROFILE=release ;;
    --cluster) CLUSTER=1 ;;
    *) die "unknown option $arg (use --release and/or --cluster)" ;;
  esac
done
start_services
if [ -n "$CLUSTER" ]; then
  start_cluster 3 0
  export ORDERLY__REDIS__CLUSTER_NODES="$REDIS_CLUSTER_NODES"
fi
log "building orderly ($PROFILE)"
if [ "$PROFILE" = release ]; then
  cargo build --release --locked --bin orderly
else
  cargo build --locked --bin orderly
fi

export ORDERLY_ENV="${ORDERLY_ENV:-dev}"
export ORDERLY__REDIS__URL="$REDIS_URL"
export ORDERLY__MONGODB__URI="$MONGODB_URI"
export ORDERLY__SERVER__PORT="${ORDERLY__SERVER__PORT:-8080}"
export RUST_LOG="${RUST_LOG:-info}"
URL="http://127.0.0.1:$ORDERLY__SERVER__PORT"

cat >&2 <<MSG

  Orderly is starting on $URL  (Ctrl-C to stop)

  Try it:
    curl -s -X POST $URL/v1/auth/register -H 'Content-Type: application/json' \\
         -d '{"email":"ann@example.com","password":"correct horse"}'
    TOKEN=\$(curl -s -X POST $URL/v1/auth/login -H 'Content-Type: application/json' \\
         -d '{"email":"ann@example.com","password":"correct horse"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
    curl -s $URL/v1/auth/me -H "Authorization: Bearer \$TOKEN"

MSG
"./target/$PROFILE/orderly" &
ORDERLY_PID=$!
SERVICE_PIDS+=("$ORDERLY_PID")
wait "$ORDERLY_PID"
