#!/usr/bin/env bash
# Runs @frontdesk/client (clients/js) in headless Chromium against `frontdesk serve --dev`:
# an invalidation reaches the page after POST /v1/events, the stream resumes without
# loss after the instance restarts (Last-Event-ID, history in Redis), ensureProfile
# succeeds after two injected 503s and refuses a 401 with a typed error.
#
#   FRONTDESK_BIN=target/debug/frontdesk clients/js/test/run.sh
#
# Needs: a built `frontdesk` binary, node >= 20 with npm, Redis (FRONTDESK_TEST_REDIS_URL,
# default redis://127.0.0.1:56379, as scripts/testground.sh starts it). Installs, when
# missing: Debian's `chromium` (apt-get, as root) and the pinned playwright-core (npm),
# which drives that system browser; no browser is downloaded.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
FRONTDESK_BIN="${FRONTDESK_BIN:-$ROOT/target/debug/frontdesk}"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

die() { echo "js client checks: $*" >&2; exit 2; }
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
exec node "$HERE/browser.test.mjs"
