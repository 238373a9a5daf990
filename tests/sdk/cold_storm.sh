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

WORK="$(mktemp -d)"
EMU_PID=""
PROXY_PID=""
stop() { # stops one of our background processes, by its id
  if [ -n "$1" ]; then kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; fi
}
cleanup() {
  stop "$PROXY_PID"
  stop "$EMU_PID"
  rm -rf "$WORK"
}
trap cleanup EXIT

"$FRONTDESK_BIN" emulator --addr 127.0.0.1:0 --users "$((N * ROUNDS + 100))" --secret-key "$SECRET_KEY" \
  >"$WORK/stdout" 2>"$WORK/stderr" &
EMU_PID=$!
URL=""
for _ in $(seq 1 300); do
  URL="$(sed -n 's/^frontdesk emulator listening on \(http:\/\/[^ ]*\)$/\1/p' "$WORK/stdout" | head -n1)"
  [ -n "$URL" ] && break
  kill -0 "$EMU_PID" 2>/dev/null || { cat "$WORK/stderr" >&2; die "the emulator exited before listening"; }
  sleep 0.1
done
[ -n "$URL" ] || die "the emulator did not announce its URL within 30 s"

env -u REDIS_URL -u CLERK_JWT_KEY -u CLERK_AUTHORIZED_PARTIES -u CLERK_WEBHOOK_SIGNING_SECRET -u FRONTDESK_DEV \
  -u FRONTDESK_BIN -u FRONTDESK_TEST_DATABASE_URL -u FRONTDESK_TEST_REDIS_URL \
  CLERK_SECRET_KEY="$SECRET_KEY" CLERK_API_URL="$URL" DATABASE_URL="sqlite://$WORK/fd.db" \
  FRONTDESK_EDGE_ADDR=127.0.0.1:0 FRONTDESK_API_ADDR=127.0.0.1:0 FRONTDESK_LOG_FORMAT=json \
  FRONTDESK_UPSTREAM__RATE_LIMIT_REQUESTS=1000000 \
  "$FRONTDESK_BIN" serve >"$WORK/proxy.stdout" 2>"$WORK/proxy.log" &
PROXY_PID=$!
API=""
for _ in $(seq 1 600); do
  API="$(sed -n 's/^frontdesk ready: edge http:\/\/[^ ]*  api http:\/\/\([^ ]*\)$/\1/p' "$WORK/proxy.stdout" | head -n1)"
  [ -n "$API" ] && break
  kill -0 "$PROXY_PID" 2>/dev/null || { cat "$WORK/proxy.log" >&2; die "frontdesk serve exited before it was ready"; }
  sleep 0.1
done
[ -n "$API" ] || die "frontdesk serve was not ready within 60 s"

cd "$HERE/js"
FRONTDESK_EMULATOR_URL="$URL" FRONTDESK_PROXY_URL="http://$API/clerk" CLERK_SECRET_KEY="$SECRET_KEY" \
  STORM_N="$N" STORM_ROUNDS="$ROUNDS" node cold_storm.mjs
