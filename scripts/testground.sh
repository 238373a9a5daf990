# shellcheck shell=bash
# The test ground: a private Postgres cluster and a private Redis server on loopback,
# started when they are not already running, for the integration tests.
#
# Source it (`. scripts/testground.sh && testground_up`); it exports
#   FRONTDESK_TEST_DATABASE_URL  admin URL of the Postgres server (tests create their own databases)
#   FRONTDESK_TEST_REDIS_URL     URL of the Redis server (tests use their own key prefixes)
#   FRONTDESK_TEST_REDIS_SERVER  path of redis-server (fault tests start private ones)
# Set the first two yourself to use servers you already run.

TESTGROUND_DIR="${TESTGROUND_DIR:-/tmp/frontdesk-testground}"
TESTGROUND_PG_PORT="${TESTGROUND_PG_PORT:-55432}"
TESTGROUND_REDIS_PORT="${TESTGROUND_REDIS_PORT:-56379}"

tg_log() { printf 'testground: %s\n' "$*" >&2; }

tg_need_packages() {
    local missing=()
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        tg_log "installing ${missing[*]} (Debian packages)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        tg_log "missing: ${missing[*]}. Install them, e.g.: sudo apt-get install -y ${missing[*]}"
        tg_log "or point FRONTDESK_TEST_DATABASE_URL and FRONTDESK_TEST_REDIS_URL at servers you run."
        return 1
    fi
}

tg_pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

# Runs a command as the postgres user when we are root (Postgres refuses to run as root).
tg_as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

tg_postgres_up() {
    if [ -n "${FRONTDESK_TEST_DATABASE_URL:-}" ]; then return 0; fi
    local bin data sock
    bin="$(tg_pg_bin)"
    data="$TESTGROUND_DIR/pg"
    sock="$TESTGROUND_DIR/pgsock"
    export FRONTDESK_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:${TESTGROUND_PG_PORT}/postgres"
    if "$bin/pg_isready" -q -h 127.0.0.1 -p "$TESTGROUND_PG_PORT"; then return 0; fi
    mkdir -p "$TESTGROUND_DIR" "$sock"
    if [ "$(id -u)" = 0 ]; then chown postgres "$TESTGROUND_DIR" "$sock"; chmod 755 "$TESTGROUND_DIR"; fi
    if [ ! -f "$data/PG_VERSION" ]; then
        tg_log "initialising a Postgres cluster in $data"
        tg_as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >/dev/null
    fi
    tg_log "starting Postgres on 127.0.0.1:$TESTGROUND_PG_PORT"
    # fsync off: the test ground's data is disposable, and tests should be fast.
    tg_as_pg "$bin/pg_ctl" -D "$data" -l "$TESTGROUND_DIR/pg.log" -w -t 60 \
        -o "-p $TESTGROUND_PG_PORT -k $sock -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400" \
        start >/dev/null
}

tg_redis_up() {
    export FRONTDESK_TEST_REDIS_SERVER="$(command -v redis-server)"
    if [ -n "${FRONTDESK_TEST_REDIS_URL:-}" ]; then return 0; fi
    export FRONTDESK_TEST_REDIS_URL="redis://127.0.0.1:${TESTGROUND_REDIS_PORT}"
    if redis-cli -p "$TESTGROUND_REDIS_PORT" ping >/dev/null 2>&1; then return 0; fi
    mkdir -p "$TESTGROUND_DIR/redis"
    tg_log "starting Redis on 127.0.0.1:$TESTGROUND_REDIS_PORT"
    redis-server --bind 127.0.0.1 --port "$TESTGROUND_REDIS_PORT" --daemonize yes \
        --save '' --appendonly no --dir "$TESTGROUND_DIR/redis" \
        --pidfile "$TESTGROUND_DIR/redis.pid" --logfile "$TESTGROUND_DIR/redis.log"
    for _ in $(seq 50); do
        redis-cli -p "$TESTGROUND_REDIS_PORT" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    tg_log "Redis did not start; see $TESTGROUND_DIR/redis.log"
    return 1
}

# Drops databases left behind by earlier test runs (tests name theirs fdtest_*).
tg_postgres_sweep() {
    psql "$FRONTDESK_TEST_DATABASE_URL" -Atqc \
        "SELECT datname FROM pg_database WHERE datname LIKE 'fdtest\_%'" 2>/dev/null |
        while read -r db; do
            psql "$FRONTDESK_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
        done
}

testground_up() {
    if [ -z "${FRONTDESK_TEST_DATABASE_URL:-}" ] || [ -z "${FRONTDESK_TEST_REDIS_URL:-}" ]; then
        tg_need_packages || return 1
    fi
    tg_postgres_up || { tg_log "Postgres did not start; see $TESTGROUND_DIR/pg.log"; return 1; }
    tg_redis_up || return 1
    tg_postgres_sweep
    tg_log "Postgres $FRONTDESK_TEST_DATABASE_URL, Redis $FRONTDESK_TEST_REDIS_URL"
}
