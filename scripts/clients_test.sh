#!/usr/bin/env bash
# Runs the Python, TypeScript and Rust client libraries' tests (clients/)
# against one live Orderly built from this tree, on throw-away Redis and
# MongoDB-protocol servers. Fails if any suite fails. Installs what it needs:
# pytest and mypy into the git-ignored .local/clients-venv, the TypeScript compiler
# into clients/typescript/node_modules (npm ci), nodejs/npm from apt if missing.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"
cd "$ROOT"
require_rust
ensure_python
command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm

CLIENTS_VENV="$LOCAL_DIR/clients-venv"
if [ ! -x "$CLIENTS_VENV/bin/pytest" ] || [ ! -x "$CLIENTS_VENV/bin/mypy" ]; then
  log "installing pytest and mypy into $CLIENTS_VENV"
  python3 -m venv "$CLIENTS_VENV"
  "$CLIENTS_VENV/bin/pip" install -q --disable-pip-version-check "pytest>=8,<9" "mypy>=1.10,<2"
fi
log "npm ci (clients/typescript)"
(cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error)

log "cargo build --bin orderly"
cargo build --locked --bin orderly
start_services
start_orderly

failed=()
log "Python client tests"
(cd clients/python && "$CLIENTS_VENV/bin/mypy" --strict --python-version 3.9 orderly_client &&
  "$CLIENTS_VENV/bin/python" -m pytest -q) || failed+=(python)
log "TypeScript client tests"
(cd clients/typescript && npm test --silent) || failed+=(typescript)
log "Rust client tests"
# `--test live` from the workspace root: the same feature set as the root
# `cargo test`, so nothing is compiled twice.
cargo test --locked --test live || failed+=(rust)

if [ ${#failed[@]} -gt 0 ]; then
  die "client tests failed: ${failed[*]}"
fi
log "client tests passed"
