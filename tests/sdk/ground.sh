# Sourced by run.sh and cold_storm.sh: the Frontdesk Clerk emulator and `frontdesk
# serve` in front of it, each on a free port, in a temporary $WORK that is removed (and
# both processes stopped) on exit. The caller sets FRONTDESK_BIN, SECRET_KEY and die()
# first.

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

# start_emulator USERS: starts the emulator with USERS seeded users and sets URL from
# its announcement line.
start_emulator() {
  "$FRONTDESK_BIN" emulator --addr 127.0.0.1:0 --users "$1" --secret-key "$SECRET_KEY" \
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
}

# start_proxy [NAME=VALUE…]: starts `frontdesk serve` in front of $URL (SQLite in
# $WORK, no Redis, port-0 listeners, JSON logs in $WORK/proxy.log) with the given extra
# environment, and sets API (host:port of the api listener) from its ready line.
start_proxy() {
  env -u REDIS_URL -u CLERK_JWT_KEY -u CLERK_AUTHORIZED_PARTIES -u CLERK_WEBHOOK_SIGNING_SECRET -u FRONTDESK_DEV \
    -u FRONTDESK_BIN -u FRONTDESK_TEST_DATABASE_URL -u FRONTDESK_TEST_REDIS_URL \
    CLERK_SECRET_KEY="$SECRET_KEY" CLERK_API_URL="$URL" DATABASE_URL="sqlite://$WORK/fd.db" \
    FRONTDESK_EDGE_ADDR=127.0.0.1:0 FRONTDESK_API_ADDR=127.0.0.1:0 FRONTDESK_LOG_FORMAT=json \
    "$@" "$FRONTDESK_BIN" serve >"$WORK/proxy.stdout" 2>"$WORK/proxy.log" &
  PROXY_PID=$!
  API=""
  for _ in $(seq 1 600); do
    API="$(sed -n 's/^frontdesk ready: edge http:\/\/[^ ]*  api http:\/\/\([^ ]*\)$/\1/p' "$WORK/proxy.stdout" | head -n1)"
    [ -n "$API" ] && break
    kill -0 "$PROXY_PID" 2>/dev/null || { cat "$WORK/proxy.log" >&2; die "frontdesk serve exited before it was ready"; }
    sleep 0.1
  done
  [ -n "$API" ] || { cat "$WORK/proxy.log" >&2; die "frontdesk serve was not ready within 60 s"; }
}
