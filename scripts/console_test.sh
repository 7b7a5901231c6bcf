#!/usr/bin/env bash
# Browser test of the console (/console): Debian's headless Chromium driven by
# Python Selenium (tests/console/console_test.py) against a live Orderly that
# this script builds and starts. Installs what it needs (chromium and
# chromium-driver with apt, selenium into the git-ignored .local/browser venv),
# takes the screenshots (into the throw-away run dir; CONSOLE_SCREENSHOTS=docs/console
# refreshes the committed ones) and stops everything it started.
# Uses REDIS_URL / MONGODB_URI when set (scripts/test.sh sets them).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"
cd "$ROOT"
require_rust

BROWSER_VENV="$LOCAL_DIR/browser"
SELENIUM_VERSION="4.27.1"

ensure_browser() {
  [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || apt_install chromium chromium-driver
  if ! "$BROWSER_VENV/bin/python" -c "import selenium" 2>/dev/null; then
    ensure_python
    log "installing selenium==$SELENIUM_VERSION into $BROWSER_VENV"
    python3 -m venv "$BROWSER_VENV"
    "$BROWSER_VENV/bin/pip" install -q --disable-pip-version-check "selenium==$SELENIUM_VERSION"
  fi
}

ensure_browser
log "cargo build --bin orderly"
cargo build --locked --bin orderly
start_services
# A secret of this run, so the test can mint an expired token that Orderly would
# otherwise have issued.
ORDERLY__AUTH__JWT_SECRET="console-test-$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
export ORDERLY__AUTH__JWT_SECRET
start_orderly

# A fresh browser profile; any Chromium still using it when the test ends
# (it should not be) is stopped with the services.
PROFILE_DIR="$(mktemp -d "$RUN_DIR/chromium.XXXXXX")"
stop_browser() {
  local pids
  pids=$(pgrep -f -- "--user-data-dir=$PROFILE_DIR" || true)
  if [ -n "$pids" ]; then
    log "stopping leftover Chromium processes: $pids"
    # shellcheck disable=SC2086
    kill $pids 2>/dev/null || true
  fi
  stop_services
}
trap stop_browser EXIT

log "console browser test against $ORDERLY_URL"
TZ=UTC CONSOLE_PROFILE_DIR="$PROFILE_DIR" CONSOLE_JWT_SECRET="$ORDERLY__AUTH__JWT_SECRET" CONSOLE_SCREENSHOTS="${CONSOLE_SCREENSHOTS:-$RUN_DIR/console-screenshots}" \
  "$BROWSER_VENV/bin/python" tests/console/console_test.py </dev/null
