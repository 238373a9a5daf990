#!/usr/bin/env bash
# Runs Clerk's official SDKs (@clerk/backend for Node, clerk-backend-api for Python)
# against the Frontdesk Clerk emulator, to prove its wire shapes are what they parse.
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
WORK="$(mktemp -d)"
EMU_PID=""
cleanup() {
  if [ -n "$EMU_PID" ]; then kill "$EMU_PID" 2>/dev/null || true; wait "$EMU_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
"$FRONTDESK_BIN" emulator --addr 127.0.0.1:0 --users 50 --secret-key "$SECRET_KEY" \
  >"$WORK/stdout" 2>"$WORK/stderr" &
EMU_PID=$!
URL=""
for _ in $(seq 1 300); do
  URL="$(sed -n 's/^frontdesk emulator listening on \(http:\/\/[^ ]*\)$/\1/p' "$WORK/stdout" | head -n1)"
  [ -n "$URL" ] && break
  kill -0 "$EMU_PID" 2>/dev/null || { cat "$WORK/stderr" >&2; die "the emulator exited before listening"; }
  sleep 0.1
done
[ -n "$URL" ] || { cat "$WORK/stderr" >&2; die "the emulator did not announce its URL within 30 s"; }
echo "emulator at $URL"

export FRONTDESK_EMULATOR_URL="$URL" CLERK_SECRET_KEY="$SECRET_KEY"
PASS=0
FAIL=0
tally() { # adds the "# pass N" / "# fail N" lines of a TAP log to the totals
  local p f
  p="$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$1" | tail -n1)"
  f="$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$1" | tail -n1)"
  PASS=$((PASS + ${p:-0}))
  FAIL=$((FAIL + ${f:-1}))
}

# 3. Node: @clerk/backend.
echo "--- @clerk/backend $(node -p 'require("'"$HERE"'/js/node_modules/@clerk/backend/package.json").version')"
set +e
(cd "$HERE/js" && node --test --test-reporter=tap sdk.test.mjs) >"$WORK/node.tap" 2>&1
NODE_RC=$?
# 4. Python: clerk-backend-api.
"$HERE/.venv/bin/python" "$HERE/python/check_sdk.py" >"$WORK/python.tap" 2>&1
PY_RC=$?
set -e
grep -E '^(not )?ok |^# (pass|fail)' "$WORK/node.tap" | grep -v '^    ' || true
[ "$NODE_RC" -eq 0 ] || sed -n '/^not ok/,/^ok/p' "$WORK/node.tap" | head -n 80
echo "--- clerk-backend-api $("$HERE/.venv/bin/pip" show clerk-backend-api 2>/dev/null | sed -n 's/^Version: //p')"
cat "$WORK/python.tap"
tally "$WORK/node.tap"
tally "$WORK/python.tap"
[ "$NODE_RC" -eq 0 ] || [ "$FAIL" -gt 0 ] || FAIL=$((FAIL + 1))
[ "$PY_RC" -eq 0 ] || [ "$FAIL" -gt 0 ] || FAIL=$((FAIL + 1))

# 5. Verdict.
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
