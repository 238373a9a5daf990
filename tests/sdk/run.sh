#!/usr/bin/env bash
# Runs Clerk's official SDKs (@clerk/backend for Node, clerk-backend-api for Python)
# against the Frontdesk Clerk emulator, to prove its wire shapes are what they parse,
# and then against the Frontdesk Backend API proxy (`frontdesk serve`, api listener,
# `/clerk/v1/…`) in front of that emulator, to prove the drop-in promise: the app only
# changes `apiUrl`, and gets the same objects with far fewer calls to Clerk.
#
#   FRONTDESK_BIN=target/debug/frontdesk tests/sdk/run.sh
#
# Needs: a built `frontdesk` binary (FRONTDESK_BIN, default target/debug/frontdesk),
# node >= 20.9 with npm, python3 >= 3.9 with venv. Network access the first time, to
# install the pinned SDK versions (tests/sdk/js/package-lock.json, python/requirements.txt).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
FRONTDESK_BIN="${FRONTDESK_BIN:-$ROOT/target/debug/frontdesk}"
SECRET_KEY="sk_test_frontdesk_sdk_checks"

die() { echo "sdk checks: $*" >&2; exit 2; }
[ -x "$FRONTDESK_BIN" ] || die "no frontdesk binary at $FRONTDESK_BIN (build it: cargo build -p frontdesk)"
command -v node >/dev/null || die "node is required"
command -v npm >/dev/null || die "npm is required"
command -v python3 >/dev/null || die "python3 is required"

# 1. Install the pinned SDKs (skipped when already installed at the pinned versions).
if [ ! -f "$HERE/js/node_modules/@clerk/backend/package.json" ] \
  || [ "$HERE/js/package-lock.json" -nt "$HERE/js/node_modules/.package-lock.json" ]; then
  (cd "$HERE/js" && npm ci --no-audit --no-fund --loglevel=error)
fi
if [ ! -x "$HERE/.venv/bin/python" ]; then
  python3 -m venv "$HERE/.venv"
fi
PY_PIN="$(sed -n 's/^clerk-backend-api==//p' "$HERE/python/requirements.txt")"
if ! "$HERE/.venv/bin/pip" show clerk-backend-api 2>/dev/null | grep -qx "Version: $PY_PIN"; then
  "$HERE/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$HERE/python/requirements.txt"
fi

# 2. Start the emulator on a free port and read the URL from its announcement line.
. "$HERE/ground.sh"
start_emulator 50
echo "emulator at $URL"

# 3. Start Frontdesk in front of it (SQLite in $WORK, no Redis, port-0 listeners) and
#    read the api listener from its ready line.
start_proxy
PROXY_URL="http://$API/clerk"
echo "proxy at $PROXY_URL"

export FRONTDESK_EMULATOR_URL="$URL" FRONTDESK_PROXY_URL="$PROXY_URL" CLERK_SECRET_KEY="$SECRET_KEY"
PASS=0
FAIL=0
tally() { # adds the "# pass N" / "# fail N" lines of a TAP log to the totals
  local p f
  p="$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$1" | tail -n1)"
  f="$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$1" | tail -n1)"
  PASS=$((PASS + ${p:-0}))
  FAIL=$((FAIL + ${f:-1}))
}
RCS=0
run_suite() { # run_suite NAME COMMAND…: runs one TAP-printing suite into $WORK/NAME.tap,
  local name="$1" rc            # tallies it and counts a non-zero exit in RCS
  shift
  set +e
  "$@" >"$WORK/$name.tap" 2>&1
  rc=$?
  set -e
  tally "$WORK/$name.tap"
  if [ "$rc" -ne 0 ]; then RCS=$((RCS + 1)); fi
  return 0
}
node_suite() { (cd "$HERE/js" && node --test --test-reporter=tap "$1"); }
show_node() { # the top-level results of a node:test TAP log, and the failures in full
  grep -E '^(not )?ok |^# (pass|fail)' "$WORK/$1.tap" | grep -v '^    ' || true
  if grep -q '^not ok' "$WORK/$1.tap" || ! grep -q '^# pass' "$WORK/$1.tap"; then
    sed -n '/^not ok/,/^ok/p' "$WORK/$1.tap" | head -n 120
    grep -q '^# pass' "$WORK/$1.tap" || tail -n 40 "$WORK/$1.tap"
  fi
}

# 4. The suites, one after the other (they share the emulator and its counters).
#    Node: @clerk/backend, against the emulator, then through the proxy.
NODE_VERSION="$(node -p 'require("'"$HERE"'/js/node_modules/@clerk/backend/package.json").version')"
echo "--- @clerk/backend $NODE_VERSION -> emulator"
run_suite node node_suite sdk.test.mjs
show_node node
echo "--- @clerk/backend $NODE_VERSION -> frontdesk proxy"
run_suite node-proxy node_suite proxy.test.mjs
show_node node-proxy
#    Python: clerk-backend-api, against the emulator, then through the proxy.
PY_VERSION="$("$HERE/.venv/bin/pip" show clerk-backend-api 2>/dev/null | sed -n 's/^Version: //p')"
echo "--- clerk-backend-api $PY_VERSION -> emulator"
run_suite python "$HERE/.venv/bin/python" "$HERE/python/check_sdk.py" emulator
cat "$WORK/python.tap"
echo "--- clerk-backend-api $PY_VERSION -> frontdesk proxy"
run_suite python-proxy "$HERE/.venv/bin/python" "$HERE/python/check_sdk.py" proxy
cat "$WORK/python-proxy.tap"
# A suite that exited non-zero counts as failed even if its log said otherwise.
[ "$RCS" -eq 0 ] || [ "$FAIL" -gt 0 ] || FAIL=$((FAIL + 1))
if [ "$FAIL" -gt 0 ]; then
  echo "--- frontdesk proxy warnings and errors"
  grep -E '"level":"(WARN|ERROR)"' "$WORK/proxy.log" | tail -n 40 || true
fi

# 5. Verdict.
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
