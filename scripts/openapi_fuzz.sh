#!/usr/bin/env bash
# Fuzzes a live Orderly against its own /openapi.json with schemathesis: every
# check (enabled in scripts/openapi_fuzz.toml, with its two narrow exemptions) (the server answers only documented statuses, headers and bodies;
# accepts what the schema allows and refuses what it does not; 405 carries
# Allow; ...) over the examples, coverage, fuzzing and stateful phases (the
# stateful phase follows the document's links: publish -> get job, claim ->
# ack/nack/extend). Any failure fails the run.
#
# Bounded for CI (2 cores): ORDERLY_FUZZ_EXAMPLES cases per operation and
# phase (default 40) and ORDERLY_FUZZ_SECONDS in all (default 120; long-polls
# in flight may overrun it by up to 30 s).
# ORDERLY_FUZZ_SEED makes a run reproducible (default 15; "random" for none).
# Uses REDIS_URL / MONGODB_URI when set (scripts/test.sh), else starts its own.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"
cd "$ROOT"

SCHEMATHESIS_VERSION="4.32.5"
ST_VENV="$LOCAL_DIR/schemathesis"

if ! "$ST_VENV/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  ensure_python
  log "installing schemathesis==$SCHEMATHESIS_VERSION into $ST_VENV"
  python3 -m venv "$ST_VENV"
  "$ST_VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

require_rust
log "cargo build --bin orderly"
cargo build --locked --bin orderly
start_services
start_orderly

# A registered user's token: the fuzzer acts as that user everywhere (the
# login/register operations are fuzzed too, with their own bodies).
TOKEN=$(python3 - "$ORDERLY_URL" <<'PY'
import json, sys, urllib.request, uuid

base = sys.argv[1]
creds = {"email": f"fuzz-{uuid.uuid4().hex}@example.com", "password": "correct horse battery"}

def post(path, body):
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)

post("/v1/auth/register", creds)
print(post("/v1/auth/login", creds)["access_token"])
PY
)

seed_args=()
if [ "${ORDERLY_FUZZ_SEED:-15}" != random ]; then
  seed_args=(--seed "${ORDERLY_FUZZ_SEED:-15}")
fi
log "schemathesis $SCHEMATHESIS_VERSION against $ORDERLY_URL"
# Long-polls (`wait_ms`) may take up to 30 s by design: 35 s is the limit.
# Run from RUN_DIR: schemathesis keeps a cache directory in its working dir.
cd "$RUN_DIR"
SCHEMATHESIS_HOOKS=openapi_fuzz_hooks PYTHONPATH="$ROOT/scripts" \
# One worker: with two, hypothesis describes strategies (ast.parse) from two
# threads at once, which CPython 3.11 can fail with "AST constructor recursion
# depth mismatch" (a flaky runtime error, not a finding).
"$ST_VENV/bin/st" --config-file "$ROOT/scripts/openapi_fuzz.toml" run "$ORDERLY_URL/openapi.json" \
  --phases examples,coverage,fuzzing,stateful \
  --header "Authorization: Bearer $TOKEN" \
  --max-examples "${ORDERLY_FUZZ_EXAMPLES:-40}" \
  --max-time "${ORDERLY_FUZZ_SECONDS:-120}" \
  --workers 1 \
  --max-response-time 35 \
  --request-timeout 40 \
  --report-dir "$RUN_DIR/schemathesis" \
  "${seed_args[@]}"
