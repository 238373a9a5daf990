#!/usr/bin/env bash
# Gateway benchmark (issue 11, "Benchmarks"): an authenticated proxied GET through
# Frontdesk vs nginx proxy_pass vs a direct call, and the same Frontdesk route with a
# Redis-backed rate limit. Everything on loopback, one run, rounds interleaved so that
# machine noise hits every target alike.
#
#   cargo build --release -p frontdesk
#   scripts/bench-gateway.sh                 # RUNS=3 DURATION=10 CONNS=64
#   RUNS=1 DURATION=5 scripts/bench-gateway.sh   # quick look
#   CHECK_ONLY=1 scripts/bench-gateway.sh        # start everything, check with curl, no load
#
# Needs: wrk, nginx (Debian package), redis-server, curl, jq.
# Processes (all on 127.0.0.1, ports overridable with PORT_BASE):
#   upstream  nginx, worker_processes 2, `return 200 "hello\n"`        :BASE+1
#   nginx     nginx, worker_processes 2, proxy_pass + upstream keepalive :BASE+2
#   emulator  frontdesk emulator (Clerk Backend API stand-in)          :BASE+90
#   fd        frontdesk serve, default config + one route auth=required, no Redis
#             edge :BASE+80, api :BASE+81
#   fdrl      frontdesk serve, same plus REDIS_URL and the route rate-limited
#             (key=user, limit 1e9 per 1 s: nothing refused)  edge :BASE+82, api :BASE+83
#   redis     redis-server, no persistence                             :BASE+79
# Frontdesk runs with its default configuration (log level info, access log on, JSON
# to stdout); stdout/stderr go to /dev/null, as does nginx's access log.
set -euo pipefail

RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
PORT_BASE=${PORT_BASE:-18000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FD=${FRONTDESK_BIN:-$ROOT/target/release/frontdesk}
WORK=$(mktemp -d /tmp/bench-gateway.XXXXXX)
OUT=${OUT:-$WORK/results.tsv}

UP=$((PORT_BASE + 1)); NGX=$((PORT_BASE + 2))
FD_EDGE=$((PORT_BASE + 80)); FD_API=$((PORT_BASE + 81))
FDRL_EDGE=$((PORT_BASE + 82)); FDRL_API=$((PORT_BASE + 83))
REDIS=$((PORT_BASE + 79)); EMU=$((PORT_BASE + 90))

for t in wrk nginx redis-server curl jq; do
  command -v "$t" >/dev/null || { echo "missing: $t" >&2; exit 1; }
done
[ -x "$FD" ] || { echo "missing $FD (cargo build --release -p frontdesk)" >&2; exit 1; }

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/up/nginx.pid" ] && kill "$(cat "$WORK/up/nginx.pid")" 2>/dev/null || true
  [ -f "$WORK/ngx/nginx.pid" ] && kill "$(cat "$WORK/ngx/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

wait_http() { # url
  for _ in $(seq 1 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "no answer from $1" >&2; exit 1
}

nginx_conf() { # dir port body
  mkdir -p "$1"
  cat >"$1/nginx.conf" <<EOF
worker_processes 2;
pid $1/nginx.pid;
error_log $1/error.log warn;
daemon on;
events { worker_connections 4096; }
http {
  access_log /dev/null;
  client_body_temp_path $1; proxy_temp_path $1; fastcgi_temp_path $1;
  uwsgi_temp_path $1; scgi_temp_path $1;
  keepalive_requests 1000000;
  $3
  server {
    listen 127.0.0.1:$2 reuseport;
    location / { $4 }
  }
}
EOF
}

# --- upstream: nginx answering a static 200 -------------------------------------
nginx_conf "$WORK/up" "$UP" "" 'default_type text/plain; return 200 "hello\n";'
nginx -c "$WORK/up/nginx.conf" -e "$WORK/up/error.log"
# --- nginx reverse proxy with upstream keep-alive ---------------------------------
nginx_conf "$WORK/ngx" "$NGX" "upstream app { server 127.0.0.1:$UP; keepalive 128; }" \
  'proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";'
nginx -c "$WORK/ngx/nginx.conf" -e "$WORK/ngx/error.log"

# --- redis ---------------------------------------------------------------------------
redis-server --port "$REDIS" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)

# --- Clerk emulator ------------------------------------------------------------------
"$FD" emulator --addr "127.0.0.1:$EMU" --users 10 >"$WORK/emulator.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$EMU/__emulator"
USER_ID=$(curl -s "http://127.0.0.1:$EMU/__emulator" | jq -r '.sample_user_ids[0]')
TOKEN=$(curl -s -X POST "http://127.0.0.1:$EMU/__emulator/sessions" \
  -H 'content-type: application/json' \
  -d "{\"user_id\":\"$USER_ID\",\"ttl_s\":86400}" | jq -r .jwt)
[ -n "$TOKEN" ] && [ "$TOKEN" != null ] || { echo "no session token" >&2; exit 1; }

# --- Frontdesk: two instances -------------------------------------------------------
cat >"$WORK/fd.toml" <<EOF
[[routes]]
path = "/*"
auth = "required"

[proxy]
upstream = "http://127.0.0.1:$UP"
EOF
cat >"$WORK/fdrl.toml" <<EOF
[[rate_limits]]
name = "bench"
key = "user"
limit = 1000000000
window_s = 1

[[routes]]
path = "/*"
auth = "required"
rate_limit = "bench"

[proxy]
upstream = "http://127.0.0.1:$UP"
EOF
export CLERK_API_URL="http://127.0.0.1:$EMU"
export CLERK_SECRET_KEY=sk_test_frontdesk_emulator   # the emulator's default key
(cd "$WORK" && FRONTDESK_EDGE_ADDR=127.0.0.1:$FD_EDGE FRONTDESK_API_ADDR=127.0.0.1:$FD_API \
  DATABASE_URL="sqlite://$WORK/fd.db" exec "$FD" --config "$WORK/fd.toml" serve \
  >/dev/null 2>"$WORK/fd.err") &
PIDS+=($!)
(cd "$WORK" && FRONTDESK_EDGE_ADDR=127.0.0.1:$FDRL_EDGE FRONTDESK_API_ADDR=127.0.0.1:$FDRL_API \
  DATABASE_URL="sqlite://$WORK/fdrl.db" REDIS_URL="redis://127.0.0.1:$REDIS" \
  exec "$FD" --config "$WORK/fdrl.toml" serve >/dev/null 2>"$WORK/fdrl.err") &
PIDS+=($!)

declare -A URL=(
  [direct]="http://127.0.0.1:$UP/hello"
  [nginx]="http://127.0.0.1:$NGX/hello"
  [frontdesk]="http://127.0.0.1:$FD_EDGE/hello"
  [frontdesk_rl]="http://127.0.0.1:$FDRL_EDGE/hello"
)
for k in "${!URL[@]}"; do
  wait_http "${URL[$k]}"
  code=$(curl -s -o "$WORK/check.$k" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "${URL[$k]}")
  [ "$code" = 200 ] || { echo "$k answered $code: $(cat "$WORK/check.$k")" >&2; cat "$WORK"/*.err >&2; exit 1; }
done
curl -s -D - -o /dev/null -H "Authorization: Bearer $TOKEN" "${URL[frontdesk_rl]}" | grep -i '^x-ratelimit' >&2 || true
echo "rate-limit backend: fd=$(curl -s "http://127.0.0.1:$FD_API/v1/stats" | jq -c .rate_limits.backend)" \
  "fdrl=$(curl -s "http://127.0.0.1:$FDRL_API/v1/stats" | jq -c .rate_limits.backend)" >&2
# Without a session Frontdesk must refuse (the route really is auth = required).
code=$(curl -s -o /dev/null -w '%{http_code}' "${URL[frontdesk]}")
[ "$code" = 401 ] || { echo "frontdesk without a token answered $code" >&2; exit 1; }
if [ -n "${CHECK_ONLY:-}" ]; then echo "set-up checked (CHECK_ONLY): every target answers 200"; exit 0; fi

to_us() { # wrk value like 812.00us 1.23ms 2.00s
  awk -v v="$1" 'BEGIN{ if (v ~ /us$/) { sub(/us$/,"",v); print v+0 }
    else if (v ~ /ms$/) { sub(/ms$/,"",v); print v*1000 }
    else if (v ~ /s$/)  { sub(/s$/,"",v);  print v*1000000 } }'
}

run() { # name conns threads round
  local name=$1 c=$2 t=$3 r=$4 out
  out=$(wrk -t"$t" -c"$c" -d"${DURATION}s" --latency \
    -H "Authorization: Bearer $TOKEN" "${URL[$name]}")
  local rps p50 p99 errs
  rps=$(awk '/^Requests\/sec/{print $2}' <<<"$out")
  p50=$(to_us "$(awk '$1=="50%"{print $2}' <<<"$out")")
  p99=$(to_us "$(awk '$1=="99%"{print $2}' <<<"$out")")
  errs=$(awk '/Non-2xx|Socket errors/{print}' <<<"$out" | tr '\n' ' ')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$c" "$r" "$rps" "$p50" "$p99" "$errs" | tee -a "$OUT"
}

echo "# $(date -u +%FT%TZ) nproc=$(nproc) load=$(cut -d' ' -f1-3 /proc/loadavg) runs=$RUNS duration=${DURATION}s conns=$CONNS threads=$THREADS" | tee "$OUT"
printf 'target\tconns\tround\treq_s\tp50_us\tp99_us\terrors\n' | tee -a "$OUT"
# Warm-up (token verification, context and connection pools).
for k in direct nginx frontdesk frontdesk_rl; do
  wrk -t1 -c4 -d2s -H "Authorization: Bearer $TOKEN" "${URL[$k]}" >/dev/null
done
for r in $(seq 1 "$RUNS"); do
  for k in direct nginx frontdesk frontdesk_rl; do run "$k" "$CONNS" "$THREADS" "$r"; done
  for k in direct nginx frontdesk; do run "$k" 1 1 "$r"; done
done
echo "# end $(date -u +%FT%TZ) load=$(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT"

# --- medians and ratios --------------------------------------------------------------
median() { sort -g | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
col() { # name conns column
  awk -F'\t' -v n="$1" -v c="$2" -v k="$3" '$1==n && $2==c {print $k}' "$OUT" | median
}
echo
echo "medians of $RUNS run(s):"
printf '%-14s %5s %10s %9s %9s\n' target conns req/s p50_us p99_us
for c in "$CONNS" 1; do
  for k in direct nginx frontdesk frontdesk_rl; do
    [ "$c" = 1 ] && [ "$k" = frontdesk_rl ] && continue
    printf '%-14s %5s %10s %9s %9s\n' "$k" "$c" "$(col "$k" "$c" 4)" "$(col "$k" "$c" 5)" "$(col "$k" "$c" 6)"
  done
done
awk -v f="$(col frontdesk "$CONNS" 4)" -v n="$(col nginx "$CONNS" 4)" -v rl="$(col frontdesk_rl "$CONNS" 4)" \
  -v d50="$(col direct 1 5)" -v d99="$(col direct 1 6)" -v f50="$(col frontdesk 1 5)" -v f99="$(col frontdesk 1 6)" \
  -v n50="$(col nginx 1 5)" -v n99="$(col nginx 1 6)" 'BEGIN{
  printf "frontdesk / nginx req/s:              %.2fx (goal >= 1.0)\n", f/n
  printf "frontdesk added over direct at -c1:   p50 %.0f us, p99 %.0f us (goal p99 < 100 us)\n", f50-d50, f99-d99
  printf "nginx added over direct at -c1:       p50 %.0f us, p99 %.0f us\n", n50-d50, n99-d99
  printf "with Redis rate limit / without:      %.2fx (goal >= 0.8)\n", rl/f }'
echo "raw results: $OUT"
