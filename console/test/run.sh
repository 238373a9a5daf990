#!/usr/bin/env bash
# Drives the operator console (GET /console on the api listener) in headless Chromium
# against `frontdesk serve --dev`: the page loads with no console errors, a figure
# changes after traffic, a dead letter is replayed from its button, a user is found by
# email and evicted, and screenshots (laptop and phone widths) are written to
# console/test/out/ (git-ignored).
#
#   FRONTDESK_BIN=target/debug/frontdesk console/test/run.sh
#
# Needs: a built `frontdesk` binary, node >= 20 with npm, Redis (FRONTDESK_TEST_REDIS_URL,
# default redis://127.0.0.1:56379). Installs, when missing: Debian's `chromium` (apt-get,
# as root) and the pinned playwright-core (npm), which drives that system browser; no
# browser is downloaded.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
FRONTDESK_BIN="${FRONTDESK_BIN:-$ROOT/target/debug/frontdesk}"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

die() { echo "console checks: $*" >&2; exit 2; }
[ -x "$FRONTDESK_BIN" ] || die "no frontdesk binary at $FRONTDESK_BIN (build it: cargo build -p frontdesk)"
command -v node >/dev/null || die "node is required"
command -v npm >/dev/null || die "npm is required"

if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }
  fi
  [ -x "$CHROMIUM" ] || die "no Chromium at $CHROMIUM (apt-get install -y chromium, or set CHROMIUM)"
fi
if [ ! -f "$HERE/node_modules/playwright-core/package.json" ] \
  || [ "$HERE/package-lock.json" -nt "$HERE/node_modules/.package-lock.json" ]; then
  (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)
fi

export FRONTDESK_BIN CHROMIUM
export REDIS_URL="${FRONTDESK_TEST_REDIS_URL:-redis://127.0.0.1:56379}"
export OUT_DIR="${CONSOLE_OUT_DIR:-$HERE/out}"
exec node "$HERE/console.test.mjs"
