#!/usr/bin/env bash
# Response-cache benchmark (issue 12, "Benchmarks"), two parts, one script run:
#
# 1. hit: a cache hit on an authenticated route (`auth = "required"`, the session
#    verified on every request) through Frontdesk vs Varnish serving the same object
#    from its cache, with the same route uncached through Frontdesk and the app called
#    directly for context. Rounds interleaved so machine noise hits every target alike.
# 2. zipf: upstream requests per 1,000 on a Zipf workload over 1,000 tenants x 10
#    resources with 1% mutations, through two Frontdesk instances sharing Redis, against
#    the compulsory minimum (computed from the same request sequence).
#
#   cargo build --release -p frontdesk
#   scripts/bench-respcache.sh                    # RUNS=3 DURATION=10 CONNS=64 ZIPF_N=30000
#   RUNS=1 DURATION=5 scripts/bench-respcache.sh  # quick look
#   CHECK_ONLY=1 scripts/bench-respcache.sh       # start everything, check with curl, no load
#
# Needs: wrk, nginx, varnish (Debian packages), redis-server, curl, jq, python3.
# Processes (all on 127.0.0.1, ports from PORT_BASE):
#   upstream  nginx, worker_processes 2, `return 200` of a small JSON object with
#             `Cache-Control: max-age=600`; access log to a file (the zipf count)  :BASE+1
#   varnish   varnishd, malloc 64 MB, VCL `vcl_recv { return (hash); }` (cache in
#             spite of the Authorization header), backend = upstream              :BASE+3
#   emulator  frontdesk emulator (Clerk Backend API stand-in)                     :BASE+90
#   fdc       frontdesk serve, route /* auth=required cache=bench (tenant = user,
#             ttl 3600 s), Redis for L2                                   edge :BASE+80
#   fd        frontdesk serve, the same route without cache, no Redis     edge :BASE+82
#   fdz1/2    frontdesk serve x2 sharing Redis: 10 routes /r0/* … /r9/*, each its own
#             policy (resource r0 … r9, tenant = header:X-Tenant, ttl 3600 s)  edge :BASE+84/86
#   redis     redis-server, no persistence                                      :BASE+79
set -euo pipefail

RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
ZIPF_N=${ZIPF_N:-30000}
PORT_BASE=${PORT_BASE:-18200}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FD=${FRONTDESK_BIN:-$ROOT/target/release/frontdesk}
WORK=$(mktemp -d /tmp/bench-respcache.XXXXXX)
chmod 755 "$WORK"
OUT=${OUT:-$WORK/results.tsv}

UP=$((PORT_BASE + 1)); VAR=$((PORT_BASE + 3))
FDC_EDGE=$((PORT_BASE + 80)); FDC_API=$((PORT_BASE + 81))
FD_EDGE=$((PORT_BASE + 82)); FD_API=$((PORT_BASE + 83))
Z1_EDGE=$((PORT_BASE + 84)); Z1_API=$((PORT_BASE + 85))
Z2_EDGE=$((PORT_BASE + 86)); Z2_API=$((PORT_BASE + 87))
REDIS=$((PORT_BASE + 79)); EMU=$((PORT_BASE + 90))

for t in wrk nginx varnishd redis-server curl jq python3; do
  command -v "$t" >/dev/null || { echo "missing: $t" >&2; exit 1; }
done
[ -x "$FD" ] || { echo "missing $FD (cargo build --release -p frontdesk)" >&2; exit 1; }

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/up/nginx.pid" ] && kill "$(cat "$WORK/up/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

wait_http() { # url
  for _ in $(seq 1 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "no answer from $1" >&2; exit 1
}

# --- upstream: nginx answering a small cacheable JSON object ----------------------------
mkdir -p "$WORK/up"
cat >"$WORK/up/nginx.conf" <<EOF
worker_processes 2;
pid $WORK/up/nginx.pid;
error_log $WORK/up/error.log warn;
daemon on;
events { worker_connections 4096; }
http {
  log_format m '\$request_method \$uri \$http_x_tenant';
  access_log $WORK/up/access.log m;
  client_body_temp_path $WORK/up; proxy_temp_path $WORK/up; fastcgi_temp_path $WORK/up;
  uwsgi_temp_path $WORK/up; scgi_temp_path $WORK/up;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$UP reuseport;
    location / {
      default_type application/json;
      add_header Cache-Control "max-age=600";
      return 200 '{"object":"invoice_list","data":[{"id":"inv_1","total":1200},{"id":"inv_2","total":80}]}\n';
    }
  }
}
EOF
nginx -c "$WORK/up/nginx.conf" -e "$WORK/up/error.log"

# --- varnish -----------------------------------------------------------------------------
cat >"$WORK/bench.vcl" <<EOF
vcl 4.1;
backend default { .host = "127.0.0.1"; .port = "$UP"; }
# The built-in VCL passes any request with Authorization; serve this object from the
# cache whoever asks (what Frontdesk does per tenant after verifying the session).
sub vcl_recv { return (hash); }
EOF
varnishd -F -a "127.0.0.1:$VAR" -f "$WORK/bench.vcl" -s malloc,64m -n "$WORK/varnish" \
  >"$WORK/varnish.log" 2>&1 &
PIDS+=($!)

# --- redis ---------------------------------------------------------------------------------
redis-server --port "$REDIS" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)

# --- Clerk emulator ------------------------------------------------------------------------
"$FD" emulator --addr "127.0.0.1:$EMU" --users 10 >"$WORK/emulator.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$EMU/__emulator"
USER_ID=$(curl -s "http://127.0.0.1:$EMU/__emulator" | jq -r '.sample_user_ids[0]')
TOKEN=$(curl -s -X POST "http://127.0.0.1:$EMU/__emulator/sessions" \
  -H 'content-type: application/json' \
  -d "{\"user_id\":\"$USER_ID\",\"ttl_s\":86400}" | jq -r .jwt)
[ -n "$TOKEN" ] && [ "$TOKEN" != null ] || { echo "no session token" >&2; exit 1; }

# --- Frontdesk instances ---------------------------------------------------------------------
cat >"$WORK/fdc.toml" <<EOF
[[cache_policies]]
name = "bench"
resource = "invoices"
tenant = "user"
ttl_s = 3600

[[routes]]
path = "/*"
auth = "required"
cache = "bench"

[proxy]
upstream = "http://127.0.0.1:$UP"
EOF
cat >"$WORK/fd.toml" <<EOF
[[routes]]
path = "/*"
auth = "required"

[proxy]
upstream = "http://127.0.0.1:$UP"
EOF
{
  for r in $(seq 0 9); do
    printf '[[cache_policies]]\nname = "r%s"\nresource = "r%s"\ntenant = "header:X-Tenant"\nttl_s = 3600\n\n' "$r" "$r"
  done
  for r in $(seq 0 9); do
    printf '[[routes]]\npath = "/r%s/*"\nauth = "public"\ncache = "r%s"\n\n' "$r" "$r"
  done
  printf '[proxy]\nupstream = "http://127.0.0.1:%s"\n' "$UP"
} >"$WORK/zipf.toml"

export CLERK_API_URL="http://127.0.0.1:$EMU"
export CLERK_SECRET_KEY=sk_test_frontdesk_emulator   # the emulator's default key
start_fd() { # name config edge api redis?
  (cd "$WORK" && exec env FRONTDESK_EDGE_ADDR=127.0.0.1:$3 FRONTDESK_API_ADDR=127.0.0.1:$4 \
    DATABASE_URL="sqlite://$WORK/$1.db" ${5:+REDIS_URL=$5} FRONTDESK_REDIS_PREFIX="bench:$1:" \
    "$FD" --config "$WORK/$2" serve >/dev/null 2>"$WORK/$1.err") &
  PIDS+=($!)
}
start_fd fdc fdc.toml "$FDC_EDGE" "$FDC_API" "redis://127.0.0.1:$REDIS"
start_fd fd fd.toml "$FD_EDGE" "$FD_API" ""
# The two zipf instances share one prefix: one fleet.
(cd "$WORK" && FRONTDESK_EDGE_ADDR=127.0.0.1:$Z1_EDGE FRONTDESK_API_ADDR=127.0.0.1:$Z1_API \
  DATABASE_URL="sqlite://$WORK/z1.db" REDIS_URL="redis://127.0.0.1:$REDIS" FRONTDESK_REDIS_PREFIX="bench:zipf:" \
  exec "$FD" --config "$WORK/zipf.toml" serve >/dev/null 2>"$WORK/z1.err") &
PIDS+=($!)
(cd "$WORK" && FRONTDESK_EDGE_ADDR=127.0.0.1:$Z2_EDGE FRONTDESK_API_ADDR=127.0.0.1:$Z2_API \
  DATABASE_URL="sqlite://$WORK/z2.db" REDIS_URL="redis://127.0.0.1:$REDIS" FRONTDESK_REDIS_PREFIX="bench:zipf:" \
  exec "$FD" --config "$WORK/zipf.toml" serve >/dev/null 2>"$WORK/z2.err") &
PIDS+=($!)

declare -A URL=(
  [direct]="http://127.0.0.1:$UP/api/invoices"
  [varnish]="http://127.0.0.1:$VAR/api/invoices"
  [frontdesk_cache]="http://127.0.0.1:$FDC_EDGE/api/invoices"
  [frontdesk_nocache]="http://127.0.0.1:$FD_EDGE/api/invoices"
)
for k in "${!URL[@]}"; do
  wait_http "${URL[$k]}"
  code=$(curl -s -o "$WORK/check.$k" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "${URL[$k]}")
  [ "$code" = 200 ] || { echo "$k answered $code: $(cat "$WORK/check.$k")" >&2; cat "$WORK"/*.err >&2; exit 1; }
done
# Both caches must really answer from their cache.
xc=$(curl -s -D - -o /dev/null -H "Authorization: Bearer $TOKEN" "${URL[frontdesk_cache]}" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache"{print $2}')
[ "$xc" = HIT ] || { echo "frontdesk_cache answered X-Cache: $xc" >&2; exit 1; }
vh=$(curl -s -D - -o /dev/null -H "Authorization: Bearer $TOKEN" "${URL[varnish]}" | tr -d '\r' | awk -F': ' 'tolower($1)=="age"{print $2}')
[ -n "$vh" ] || { echo "varnish answer has no Age header" >&2; exit 1; }
before=$(wc -l <"$WORK/up/access.log")
curl -s -o /dev/null -H "Authorization: Bearer $TOKEN" "${URL[varnish]}"
curl -s -o /dev/null -H "Authorization: Bearer $TOKEN" "${URL[frontdesk_cache]}"
[ "$(wc -l <"$WORK/up/access.log")" = "$before" ] || { echo "a cached target reached the upstream" >&2; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' "${URL[frontdesk_cache]}")
[ "$code" = 401 ] || { echo "frontdesk_cache without a token answered $code" >&2; exit 1; }
for z in "$Z1_EDGE" "$Z2_EDGE"; do wait_http "http://127.0.0.1:$z/r0/x"; done
if [ -n "${CHECK_ONLY:-}" ]; then echo "set-up checked (CHECK_ONLY): every target answers 200, both caches hit"; exit 0; fi

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
for k in direct varnish frontdesk_cache frontdesk_nocache; do
  wrk -t1 -c4 -d2s -H "Authorization: Bearer $TOKEN" "${URL[$k]}" >/dev/null
done
for r in $(seq 1 "$RUNS"); do
  for k in direct varnish frontdesk_cache frontdesk_nocache; do run "$k" "$CONNS" "$THREADS" "$r"; done
done
echo "# end $(date -u +%FT%TZ) load=$(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT"

median() { sort -g | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
col() { awk -F'\t' -v n="$1" -v c="$2" -v k="$3" '$1==n && $2==c {print $k}' "$OUT" | median; }
echo
echo "hit: medians of $RUNS run(s):"
printf '%-18s %5s %10s %9s %9s\n' target conns req/s p50_us p99_us
for k in direct varnish frontdesk_cache frontdesk_nocache; do
  printf '%-18s %5s %10s %9s %9s\n' "$k" "$CONNS" "$(col "$k" "$CONNS" 4)" "$(col "$k" "$CONNS" 5)" "$(col "$k" "$CONNS" 6)"
done
echo "per-round frontdesk_cache / varnish:"
for r in $(seq 1 "$RUNS"); do
  awk -F'\t' -v r="$r" -v c="$CONNS" '$3==r && $2==c {v[$1]=$4} END{ printf "  round %s: %.2fx\n", r, v["frontdesk_cache"]/v["varnish"] }' "$OUT"
done
awk -v f="$(col frontdesk_cache "$CONNS" 4)" -v v="$(col varnish "$CONNS" 4)" -v n="$(col frontdesk_nocache "$CONNS" 4)" 'BEGIN{
  printf "frontdesk cache hit / varnish hit req/s: %.2fx (goal >= 0.8)\n", f/v
  printf "frontdesk cache hit / frontdesk uncached: %.2fx\n", f/n }'

# --- zipf ----------------------------------------------------------------------------------
echo
echo "zipf: $ZIPF_N requests, 1,000 tenants x 10 resources, Zipf s=1.1, 1% mutations, 2 instances"
before=$(wc -l <"$WORK/up/access.log")
python3 - "$ZIPF_N" "$Z1_EDGE" "$Z2_EDGE" "$WORK/zipf.seq" <<'PY'
import http.client, random, sys, threading
n, p1, p2, seqfile = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
TENANTS, RESOURCES, S, MUT = 1000, 10, 1.1, 0.01
rng = random.Random(12)
keys = [(t, r) for t in range(TENANTS) for r in range(RESOURCES)]
rng.shuffle(keys)                      # rank -> (tenant, resource)
cum, acc = [], 0.0
for k in range(1, len(keys) + 1):
    acc += 1.0 / k ** S
    cum.append(acc)
seq = []
for _ in range(n):
    t, r = rng.choices(keys, cum_weights=cum)[0]
    seq.append(("POST" if rng.random() < MUT else "GET", t, r))
with open(seqfile, "w") as f:
    for m, t, r in seq:
        f.write(f"{m} {t} {r}\n")
# 8 clients, each on one instance in turn, each a keep-alive connection; the sequence
# is dealt round-robin, so it runs in about the order generated.
WORKERS = 8
errors = [0]
def worker(i):
    port = p1 if i % 2 == 0 else p2
    c = http.client.HTTPConnection("127.0.0.1", port)
    for j in range(i, n, WORKERS):
        m, t, r = seq[j]
        c.request(m, f"/r{r}/items", body=b"" if m == "POST" else None,
                  headers={"X-Tenant": f"tenant_{t}"})
        resp = c.getresponse(); resp.read()
        if resp.status != 200:
            errors[0] += 1
threads = [threading.Thread(target=worker, args=(i,)) for i in range(WORKERS)]
for th in threads: th.start()
for th in threads: th.join()
# The compulsory minimum: every mutation, plus one read per key at its first request
# and at its first request after each mutation of it.
valid, misses, muts = set(), 0, 0
for m, t, r in seq:
    if m == "POST":
        muts += 1
        valid.discard((t, r))
    elif (t, r) not in valid:
        misses += 1
        valid.add((t, r))
print(f"ZIPF requests={n} mutations={muts} distinct_keys={len({(t, r) for _, t, r in seq})} "
      f"compulsory_reads={misses} compulsory_total={muts + misses} errors={errors[0]}")
PY
after=$(wc -l <"$WORK/up/access.log")
gets=$(tail -n +"$((before + 1))" "$WORK/up/access.log" | awk '$1=="GET"' | wc -l)
posts=$(tail -n +"$((before + 1))" "$WORK/up/access.log" | awk '$1=="POST"' | wc -l)
echo "ZIPF upstream_total=$((after - before)) upstream_gets=$gets upstream_posts=$posts"
echo "(per 1,000 requests: divide by $ZIPF_N / 1000)"
echo "raw results: $OUT"
