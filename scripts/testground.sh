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

# --- TLS and a pooler -----------------------------------------------------------------
# A throwaway CA, a second Postgres cluster with ssl=on, a TLS-only Redis and PgBouncer
# (transaction mode, TLS on both sides) in front of that Postgres: what managed services
# (Neon, Upstash) look like. Each server listens on 127.0.0.1 and 127.0.0.2; the
# certificate names only localhost and 127.0.0.1, so connecting to 127.0.0.2 is the
# host-name-mismatch case. Exports
#   FRONTDESK_TEST_TLS_CA          the CA certificate (PEM) that signed the servers'
#   FRONTDESK_TEST_PG_TLS_URL      admin URL of the TLS Postgres (sslmode=verify-full)
#   FRONTDESK_TEST_PGBOUNCER_URL   the same server through PgBouncer (pgbouncer=true)
#   FRONTDESK_TEST_REDIS_TLS_URL   rediss:// URL of the TLS Redis
TESTGROUND_PG_TLS_PORT="${TESTGROUND_PG_TLS_PORT:-55433}"
TESTGROUND_PGBOUNCER_PORT="${TESTGROUND_PGBOUNCER_PORT:-56432}"
TESTGROUND_REDIS_TLS_PORT="${TESTGROUND_REDIS_TLS_PORT:-56380}"

tg_tls_need_packages() {
    local missing=()
    command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        tg_log "installing ${missing[*]} (Debian packages)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        tg_log "missing: ${missing[*]}. Install them, e.g.: sudo apt-get install -y ${missing[*]}"
        return 1
    fi
}

# The CA and one server certificate (SAN localhost, 127.0.0.1), made once.
tg_tls_certs() {
    local dir="$TESTGROUND_DIR/tls"
    export FRONTDESK_TEST_TLS_CA="$dir/ca.crt"
    [ -f "$dir/server.crt" ] && [ -f "$dir/ca.crt" ] && return 0
    mkdir -p "$dir"
    tg_log "making a throwaway CA and server certificate in $dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=frontdesk test CA" \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null || return 1
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null || return 1
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >"$dir/server.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 3650 -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null || return 1
    chmod 600 "$dir/server.key" "$dir/ca.key"
    chmod 755 "$dir"
    # Postgres and PgBouncer run as postgres and read the key themselves.
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir/server.key" "$dir/server.crt"; fi
}

tg_postgres_tls_up() {
    local bin data port="$TESTGROUND_PG_TLS_PORT" dir="$TESTGROUND_DIR/tls"
    export FRONTDESK_TEST_PG_TLS_URL="postgres://postgres@localhost:${port}/postgres?sslmode=verify-full&sslrootcert=$dir/ca.crt"
    bin="$(tg_pg_bin)"
    data="$TESTGROUND_DIR/pg-tls"
    if "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then return 0; fi
    mkdir -p "$TESTGROUND_DIR/pgsock-tls"
    if [ "$(id -u)" = 0 ]; then chown postgres "$TESTGROUND_DIR" "$TESTGROUND_DIR/pgsock-tls"; fi
    if [ ! -f "$data/PG_VERSION" ]; then
        tg_log "initialising a TLS Postgres cluster in $data"
        tg_as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >/dev/null || return 1
        # TCP connections must use TLS; the local socket (admin) stays open.
        printf 'local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all 127.0.0.2/32 trust\n' \
            | tg_as_pg tee "$data/pg_hba.conf" >/dev/null
    fi
    tg_log "starting TLS Postgres on 127.0.0.1:$port"
    tg_as_pg "$bin/pg_ctl" -D "$data" -l "$TESTGROUND_DIR/pg-tls.log" -w -t 60 \
        -o "-p $port -k $TESTGROUND_DIR/pgsock-tls -c listen_addresses=127.0.0.1,127.0.0.2 -c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
        start >/dev/null
}

tg_pgbouncer_up() {
    local port="$TESTGROUND_PGBOUNCER_PORT" dir="$TESTGROUND_DIR/pgbouncer" tls="$TESTGROUND_DIR/tls"
    export FRONTDESK_TEST_PGBOUNCER_URL="postgres://postgres@localhost:${port}/postgres?sslmode=verify-full&sslrootcert=$tls/ca.crt&pgbouncer=true"
    if "$(tg_pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$port"; then return 0; fi
    mkdir -p "$dir"
    printf '"postgres" ""\n' >"$dir/userlist.txt"
    # Transaction pooling as Neon's pooled endpoint runs it; every database name maps
    # to the same-named database on the TLS Postgres.
    cat >"$dir/pgbouncer.ini" <<INI
[databases]
* = host=localhost port=$TESTGROUND_PG_TLS_PORT
[pgbouncer]
listen_addr = 127.0.0.1,127.0.0.2
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
ignore_startup_parameters = extra_float_digits
max_client_conn = 1000
default_pool_size = 20
client_tls_sslmode = require
client_tls_cert_file = $tls/server.crt
client_tls_key_file = $tls/server.key
server_tls_sslmode = verify-full
server_tls_ca_file = $tls/ca.crt
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
    if [ "$(id -u)" = 0 ]; then chown -R postgres "$dir"; fi
    tg_log "starting PgBouncer (transaction mode) on 127.0.0.1:$port"
    local exe
    exe="$(command -v pgbouncer || echo /usr/sbin/pgbouncer)"
    tg_as_pg "$exe" -d "$dir/pgbouncer.ini" || return 1
    for _ in $(seq 50); do
        "$(tg_pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$port" && return 0
        sleep 0.1
    done
    tg_log "PgBouncer did not start; see $dir/pgbouncer.log"
    return 1
}

tg_redis_tls_up() {
    local port="$TESTGROUND_REDIS_TLS_PORT" tls="$TESTGROUND_DIR/tls"
    export FRONTDESK_TEST_REDIS_TLS_URL="rediss://localhost:${port}"
    if redis-cli --tls --cacert "$tls/ca.crt" -h localhost -p "$port" ping >/dev/null 2>&1; then return 0; fi
    mkdir -p "$TESTGROUND_DIR/redis-tls"
    tg_log "starting TLS Redis on 127.0.0.1:$port"
    redis-server --bind 127.0.0.1 127.0.0.2 --port 0 --tls-port "$port" \
        --tls-cert-file "$tls/server.crt" --tls-key-file "$tls/server.key" \
        --tls-ca-cert-file "$tls/ca.crt" --tls-auth-clients no --daemonize yes \
        --save '' --appendonly no --dir "$TESTGROUND_DIR/redis-tls" \
        --pidfile "$TESTGROUND_DIR/redis-tls.pid" --logfile "$TESTGROUND_DIR/redis-tls.log"
    for _ in $(seq 50); do
        redis-cli --tls --cacert "$tls/ca.crt" -h localhost -p "$port" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    tg_log "TLS Redis did not start; see $TESTGROUND_DIR/redis-tls.log"
    return 1
}

# Starts the TLS servers and the pooler unless their URLs are already set.
testground_tls_up() {
    if [ -n "${FRONTDESK_TEST_PG_TLS_URL:-}" ] && [ -n "${FRONTDESK_TEST_PGBOUNCER_URL:-}" ] \
        && [ -n "${FRONTDESK_TEST_REDIS_TLS_URL:-}" ] && [ -n "${FRONTDESK_TEST_TLS_CA:-}" ]; then
        return 0
    fi
    tg_tls_need_packages || return 1
    tg_tls_certs || { tg_log "cannot make test certificates"; return 1; }
    tg_postgres_tls_up || { tg_log "TLS Postgres did not start; see $TESTGROUND_DIR/pg-tls.log"; return 1; }
    tg_pgbouncer_up || return 1
    tg_redis_tls_up || return 1
    FRONTDESK_TEST_DATABASE_URL="$FRONTDESK_TEST_PG_TLS_URL" tg_postgres_sweep
    tg_log "TLS Postgres $FRONTDESK_TEST_PG_TLS_URL, PgBouncer $FRONTDESK_TEST_PGBOUNCER_URL, TLS Redis $FRONTDESK_TEST_REDIS_TLS_URL"
}
