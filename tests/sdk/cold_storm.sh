#!/usr/bin/env bash
# The SDK cold storm (BENCHMARKS.md, "Adaptive batching"): starts the Clerk emulator
# and `frontdesk serve` in front of it (SQLite, no Redis, Clerk's limit lifted so the
# limiter is not what is measured), then runs js/cold_storm.mjs: STORM_N (300)
# concurrent @clerk/backend getUser calls for distinct cold users through the proxy,
# STORM_ROUNDS (5) times, printing the list calls the emulator saw. Not part of the
# test command.
#
#   FRONTDESK_BIN=target/release/frontdesk tests/sdk/cold_storm.sh
#
# Needs node >= 20.9 with npm (installs the pinned @clerk/backend the first time).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
FRONTDESK_BIN="${FRONTDESK_BIN:-$ROOT/target/release/frontdesk}"
SECRET_KEY="sk_test_frontdesk_cold_storm"
N="${STORM_N:-300}"
ROUNDS="${STORM_ROUNDS:-5}"

die() { echo "cold storm: $*" >&2; exit 2; }
[ -x "$FRONTDESK_BIN" ] || die "no frontdesk binary at $FRONTDESK_BIN"
command -v node >/dev/null || die "node is required"
if [ ! -f "$HERE/js/node_modules/@clerk/backend/package.json" ]; then
  (cd "$HERE/js" && npm ci --no-audit --no-fund --loglevel=error)
fi

. "$HERE/ground.sh"
start_emulator "$((N * ROUNDS + 100))"
start_proxy FRONTDESK_UPSTREAM__RATE_LIMIT_REQUESTS=1000000

cd "$HERE/js"
FRONTDESK_EMULATOR_URL="$URL" FRONTDESK_PROXY_URL="http://$API/clerk" CLERK_SECRET_KEY="$SECRET_KEY" \
  STORM_N="$N" STORM_ROUNDS="$ROUNDS" node cold_storm.mjs
