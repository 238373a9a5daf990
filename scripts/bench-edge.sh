#!/usr/bin/env bash
# Edge overhead benchmark (issue 14): what Frontdesk's edge costs per request against a
# hello-world axum server, measured from outside with wrk in one run, rounds
# interleaved so that machine noise hits every target alike. Builds nothing: it uses
# the release binaries.
#
#   cargo build --release -p frontdesk -p frontdesk-bench
#   scripts/bench-edge.sh                        # RUNS=3 DURATION=10 CONNS=32 (~4 min)
#   RUNS=1 DURATION=3 scripts/bench-edge.sh      # quick look (~30 s)
#   RECORD=1 scripts/bench-edge.sh               # also append the headline figures to
#                                                # bench-history.tsv (see BENCHMARKS.md)
#   PERF=1 scripts/bench-edge.sh                 # plus a perf flamegraph of /me (below)
#   CHECK_ONLY=1 scripts/bench-edge.sh           # start everything, check with curl, no load
#
# Needs: wrk and curl (and perf + inferno for PERF=1: `cargo install inferno`).
# Processes (all on 127.0.0.1, ports overridable with PORT_BASE):
#   hello   frontdesk-bench hello: axum, Tokio multi-thread, GET / -> 200 "hello"  :BASE+1
#   fd      frontdesk serve --dev, default configuration (log level info, access log
#           on, JSON lines to stderr -> /dev/null; LOGS=file keeps them)        edge :BASE+10, api :BASE+11, emulator :BASE+12
#   fdwarn  the same with FRONTDESK_LOG=warn (no access-log line)
#                                                   edge :BASE+20, api :BASE+21, emulator :BASE+22
# Both Frontdesk instances run in dev mode (embedded Clerk emulator, SQLite file in a
# temporary directory, no Redis); the session token for /_frontdesk/me is minted by
# each instance's emulator (POST /__emulator/sessions) and cached by a warm-up, so /me
# measures the cached path: token verification from cache, context from L1.
#
# Measured per round: req/s at CONNS connections (wrk -t1) for hello, healthz
# (/_frontdesk/healthz on fd), me (/_frontdesk/me on fd) and me_warn (on fdwarn); and
# p50/p99 at one connection (wrk -t1 -c1 --latency) for hello, healthz and me.
# "p99 added" = p99(me, 1 conn) - p99(hello, 1 conn).
#
# PERF=1: after the measured rounds, one more /me run at CONNS connections under
# `perf record -e cpu-clock --call-graph dwarf` on the fd process (not counted in the
# table), rendered with inferno to docs/flamegraphs/edge-<target>-<date>-<commit>.svg,
# and the top functions by self time printed. PERF_TARGETS="me healthz" profiles more
# than one target; PERF_FREQ (default 499 Hz), PERF_CALLGRAPH (default dwarf,16384).
# Symbols: release binaries keep their symbol table; for inlined frames and line
# numbers build `cargo build --profile profiling -p frontdesk` and run with
# FRONTDESK_BIN=target/profiling/frontdesk and PERF_SCRIPT_ARGS=--inline (slow).
set -euo pipefail

RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}
PORT_BASE=${PORT_BASE:-19000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FD=${FRONTDESK_BIN:-$ROOT/target/release/frontdesk}
BENCH=${BENCH_BIN:-$ROOT/target/release/frontdesk-bench}
WORK=$(mktemp -d /tmp/bench-edge.XXXXXX)
OUT=${OUT:-$WORK/results.tsv}
HISTORY=${HISTORY:-$ROOT/bench-history.tsv}
# The commit the figures are recorded under: HEAD, -dirty when tracked files differ
# (the history file and flamegraphs aside). Override with COMMIT=... when the binaries
# were built elsewhere.
if [ -z "${COMMIT:-}" ]; then
  COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$ROOT" diff --quiet HEAD -- . ':(exclude)bench-history.tsv' ':(exclude)docs/flamegraphs' \
    2>/dev/null || COMMIT="$COMMIT-dirty"
fi
PERF_TARGETS=${PERF_TARGETS:-me}
PERF_FREQ=${PERF_FREQ:-499}
PERF_CALLGRAPH=${PERF_CALLGRAPH:-dwarf,16384}

HELLO=$((PORT_BASE + 1))
FD_EDGE=$((PORT_BASE + 10)); FD_API=$((PORT_BASE + 11)); FD_EMU=$((PORT_BASE + 12))
FDW_EDGE=$((PORT_BASE + 20)); FDW_API=$((PORT_BASE + 21)); FDW_EMU=$((PORT_BASE + 22))

TOOLS="curl"; [ -n "${CHECK_ONLY:-}" ] || TOOLS="$TOOLS wrk"
for t in $TOOLS; do
  command -v "$t" >/dev/null || { echo "missing: $t" >&2; exit 1; }
done
if [ -n "${PERF:-}" ]; then
  for t in perf inferno-collapse-perf inferno-flamegraph; do
    command -v "$t" >/dev/null || { echo "missing: $t (PERF=1; cargo install inferno)" >&2; exit 1; }
  done
fi
FD=$(realpath -m "$FD"); BENCH=$(realpath -m "$BENCH")   # fd runs in its own directory
[ -x "$FD" ] || { echo "missing $FD (cargo build --release -p frontdesk)" >&2; exit 1; }
[ -x "$BENCH" ] || { echo "missing $BENCH (cargo build --release -p frontdesk-bench)" >&2; exit 1; }

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # A set-up check leaves nothing worth keeping (scripts/test runs one every time).
  [ -z "${CHECK_ONLY:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

wait_http() { # url
  for _ in $(seq 1 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "no answer from $1 (LOGS=file keeps Frontdesk's log in $WORK)" >&2
  cat "$WORK"/*.err >&2 2>/dev/null || true; exit 1
}

# --- hello-world ---------------------------------------------------------------------
"$BENCH" hello --addr "127.0.0.1:$HELLO" >/dev/null 2>"$WORK/hello.err" &
PIDS+=($!)

# --- Frontdesk in dev mode: default logging, and FRONTDESK_LOG=warn --------------------
# Frontdesk logs JSON to stderr: /dev/null by default (a file costs a write per line
# and grows by ~30 MB per second of load); LOGS=file keeps them in $WORK/<name>.err.
logfile() { if [ "${LOGS:-}" = file ]; then echo "$WORK/$1.err"; else echo /dev/null; fi; }
start_fd() { # name edge api emulator [VAR=value...]
  local name=$1 edge=$2 api=$3 emu=$4; shift 4
  mkdir -p "$WORK/$name"
  (cd "$WORK/$name" && exec env -u CLERK_SECRET_KEY -u CLERK_JWT_KEY -u DATABASE_URL \
    -u REDIS_URL -u FRONTDESK_LOG -u FRONTDESK_ACCESS_LOG -u FRONTDESK_LOG_FORMAT \
    FRONTDESK_EDGE_ADDR="127.0.0.1:$edge" FRONTDESK_API_ADDR="127.0.0.1:$api" \
    FRONTDESK_DEV__EMULATOR_ADDR="127.0.0.1:$emu" "$@" \
    "$FD" serve --dev >/dev/null 2>"$(logfile "$name")") &
  PIDS+=($!)
  eval "PID_$name=$!"
}
start_fd fd "$FD_EDGE" "$FD_API" "$FD_EMU"
start_fd fdwarn "$FDW_EDGE" "$FDW_API" "$FDW_EMU" FRONTDESK_LOG=warn

token() { # emulator port
  local user
  user=$(curl -s "http://127.0.0.1:$1/__emulator" | grep -o '"sample_user_ids":\["[^"]*"' | cut -d'"' -f4)
  curl -s -X POST "http://127.0.0.1:$1/__emulator/sessions" -H 'content-type: application/json' \
    -d "{\"user_id\":\"$user\",\"ttl_s\":86400}" | grep -o '"jwt":"[^"]*"' | cut -d'"' -f4
}
wait_http "http://127.0.0.1:$HELLO/"
wait_http "http://127.0.0.1:$FD_EDGE/_frontdesk/healthz"
wait_http "http://127.0.0.1:$FDW_EDGE/_frontdesk/healthz"
TOKEN_FD=$(token "$FD_EMU")
TOKEN_FDW=$(token "$FDW_EMU")
for t in "$TOKEN_FD" "$TOKEN_FDW"; do
  [ -n "$t" ] || { echo "no session token from the dev emulator" >&2; exit 1; }
done

declare -A URL=(
  [hello]="http://127.0.0.1:$HELLO/"
  [healthz]="http://127.0.0.1:$FD_EDGE/_frontdesk/healthz"
  [me]="http://127.0.0.1:$FD_EDGE/_frontdesk/me"
  [me_warn]="http://127.0.0.1:$FDW_EDGE/_frontdesk/me"
)
declare -A TOKEN=([hello]="" [healthz]="" [me]="$TOKEN_FD" [me_warn]="$TOKEN_FDW")
auth() { # name -> wrk/curl header arguments
  [ -n "${TOKEN[$1]}" ] && printf '%s\n' -H "Authorization: Bearer ${TOKEN[$1]}"
  return 0
}

for k in hello healthz me me_warn; do
  mapfile -t H < <(auth "$k")
  code=$(curl -s -o "$WORK/check.$k" -w '%{http_code}' "${H[@]}" "${URL[$k]}")
  [ "$code" = 200 ] || { echo "$k answered $code: $(cat "$WORK/check.$k")" >&2; exit 1; }
done
grep -qx hello "$WORK/check.hello" || { echo "hello answered: $(cat "$WORK/check.hello")" >&2; exit 1; }
# Without a session /me must refuse (it really verifies the token).
code=$(curl -s -o /dev/null -w '%{http_code}' "${URL[me]}")
[ "$code" = 401 ] || { echo "/me without a token answered $code" >&2; exit 1; }
if [ -n "${CHECK_ONLY:-}" ]; then
  echo "set-up checked (CHECK_ONLY): hello, healthz, me and me_warn answer 200; /me without a token 401"
  exit 0
fi

to_us() { # wrk value like 812.00us 1.23ms 2.00s
  awk -v v="$1" 'BEGIN{ if (v ~ /us$/) { sub(/us$/,"",v); print v+0 }
    else if (v ~ /ms$/) { sub(/ms$/,"",v); print v*1000 }
    else if (v ~ /s$/)  { sub(/s$/,"",v);  print v*1000000 } }'
}

run() { # name conns round
  local name=$1 c=$2 r=$3 out
  mapfile -t H < <(auth "$name")
  out=$(wrk -t"$THREADS" -c"$c" -d"${DURATION}s" --latency "${H[@]}" "${URL[$name]}")
  local rps p50 p99 errs
  rps=$(awk '/^Requests\/sec/{print $2}' <<<"$out")
  p50=$(to_us "$(awk '$1=="50%"{print $2}' <<<"$out")")
  p99=$(to_us "$(awk '$1=="99%"{print $2}' <<<"$out")")
  errs=$(awk '/Non-2xx|Socket errors/{print}' <<<"$out" | tr '\n' ' ')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$c" "$r" "$rps" "$p50" "$p99" "$errs" | tee -a "$OUT"
}

START=$(date -u +%FT%TZ)
echo "# $START commit=$COMMIT nproc=$(nproc) load=$(cut -d' ' -f1-3 /proc/loadavg) runs=$RUNS duration=${DURATION}s conns=$CONNS threads=$THREADS" | tee "$OUT"
printf 'target\tconns\tround\treq_s\tp50_us\tp99_us\terrors\n' | tee -a "$OUT"
# Warm-up: token verification and context caches, connection set-up.
for k in hello healthz me me_warn; do
  mapfile -t H < <(auth "$k")
  wrk -t1 -c4 -d2s "${H[@]}" "${URL[$k]}" >/dev/null
done
for r in $(seq 1 "$RUNS"); do
  for k in hello healthz me me_warn; do run "$k" "$CONNS" "$r"; done
  for k in hello healthz me; do run "$k" 1 "$r"; done
done
echo "# end $(date -u +%FT%TZ) load=$(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT"

# --- medians and ratios ----------------------------------------------------------------
median() { sort -g | awk '{a[NR]=$1} END{ if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
col() { # name conns column
  awk -F'\t' -v n="$1" -v c="$2" -v k="$3" '$1==n && $2==c {print $k}' "$OUT" | median
}
rounds() { # a b conns column: per-round a/b (or a-b with "-"), " / "-joined, and their median
  awk -F'\t' -v a="$1" -v b="$2" -v c="$3" -v k="$4" -v op="${5:-/}" '
    $2==c && $1==a {x[$3]=$k} $2==c && $1==b {y[$3]=$k}
    END { s=""; for (r=1; r in x; r++) { v = (op=="/") ? x[r]/y[r] : x[r]-y[r];
      s = s (s=="" ? "" : " / ") sprintf(op=="/" ? "%.2f" : "%.0f", v) } print s }' "$OUT"
}
echo
echo "medians of $RUNS round(s), ${DURATION} s each:"
printf '%-8s %5s %10s %8s %9s %9s\n' target conns req/s "÷hello" p50_us p99_us
HELLO_RPS=$(col hello "$CONNS" 4)
for c in "$CONNS" 1; do
  for k in hello healthz me me_warn; do
    [ "$c" = 1 ] && [ "$k" = me_warn ] && continue
    rps=$(col "$k" "$c" 4)
    ratio=$(awk -v a="$rps" -v b="$(col hello "$c" 4)" 'BEGIN{printf "%.2f", a/b}')
    printf '%-8s %5s %10.0f %8s %9s %9s\n' "$k" "$c" "$rps" "$ratio" "$(col "$k" "$c" 5)" "$(col "$k" "$c" 6)"
  done
done
HZ=$(awk -v a="$(col healthz "$CONNS" 4)" -v b="$HELLO_RPS" 'BEGIN{printf "%.3f", a/b}')
ME=$(awk -v a="$(col me "$CONNS" 4)" -v b="$HELLO_RPS" 'BEGIN{printf "%.3f", a/b}')
MEW=$(awk -v a="$(col me_warn "$CONNS" 4)" -v b="$HELLO_RPS" 'BEGIN{printf "%.3f", a/b}')
LOGR=$(awk -v a="$(col me "$CONNS" 4)" -v b="$(col me_warn "$CONNS" 4)" 'BEGIN{printf "%.3f", a/b}')
P50A=$(awk -v a="$(col me 1 5)" -v b="$(col hello 1 5)" 'BEGIN{printf "%.0f", a-b}')
P99A=$(awk -v a="$(col me 1 6)" -v b="$(col hello 1 6)" 'BEGIN{printf "%.0f", a-b}')
HP99A=$(awk -v a="$(col healthz 1 6)" -v b="$(col hello 1 6)" 'BEGIN{printf "%.0f", a-b}')
echo
printf 'healthz ÷ hello req/s:              %s  rounds %s  (goal >= 0.9)\n' "$HZ" "$(rounds healthz hello "$CONNS" 4)"
printf '/me ÷ hello, default logging:       %s  rounds %s  (goal >= 0.8)\n' "$ME" "$(rounds me hello "$CONNS" 4)"
printf '/me ÷ hello, FRONTDESK_LOG=warn:    %s  rounds %s\n' "$MEW" "$(rounds me_warn hello "$CONNS" 4)"
printf '/me default ÷ /me warn (log cost):  %s  rounds %s  (goal >= 0.95)\n' "$LOGR" "$(rounds me me_warn "$CONNS" 4)"
printf '/me added over hello at -c1:        p50 %s us, p99 %s us  p99 rounds %s  (goal p99 < 100 us)\n' \
  "$P50A" "$P99A" "$(rounds me hello 1 6 -)"
printf 'healthz added over hello at -c1:    p99 %s us\n' "$HP99A"
echo "raw results: $OUT"

if [ -n "${RECORD:-}" ]; then
  SRC="bench-edge.sh RUNS=$RUNS DURATION=$DURATION CONNS=$CONNS"
  [ -f "$HISTORY" ] || printf 'figure\tdate\tcommit\tvalue\tsource\n' >"$HISTORY"
  while read -r fig val; do
    printf '%s\t%s\t%s\t%s\t%s\n' "$fig" "${START%:*}Z" "$COMMIT" "$val" "$SRC" >>"$HISTORY"
  done <<EOF
edge.hello_rps $(printf '%.0f' "$HELLO_RPS")
edge.healthz_per_hello $HZ
edge.me_per_hello $ME
edge.me_warn_per_hello $MEW
edge.me_log_default_per_warn $LOGR
edge.me_added_p50_1conn_us $P50A
edge.me_added_p99_1conn_us $P99A
EOF
  echo "appended 7 figures to $HISTORY (scripts/bench-history.sh renders the table)"
fi

# --- perf flamegraph -------------------------------------------------------------------
if [ -n "${PERF:-}" ]; then
  mkdir -p "$ROOT/docs/flamegraphs"
  STAMP=$(date -u +%Y%m%dT%H%M)
  for k in $PERF_TARGETS; do
    pid=$PID_fd; [ "$k" = me_warn ] && pid=$PID_fdwarn
    [ "$k" = hello ] && { echo "PERF: hello is not a Frontdesk process; skipped" >&2; continue; }
    mapfile -t H < <(auth "$k")
    wrk -t"$THREADS" -c"$CONNS" -d"$((DURATION + 2))s" "${H[@]}" "${URL[$k]}" >"$WORK/perf.$k.wrk" &
    wrkpid=$!
    sleep 1
    perf record -q -e cpu-clock -F "$PERF_FREQ" --call-graph "$PERF_CALLGRAPH" -p "$pid" \
      -o "$WORK/perf.$k.data" -- sleep "$DURATION" 2>"$WORK/perf.$k.err" || {
      echo "perf record failed: $(cat "$WORK/perf.$k.err")" >&2; exit 1; }
    wait "$wrkpid" || true
    svg="$ROOT/docs/flamegraphs/edge-$k-$STAMP-$COMMIT.svg"
    # --no-inline: resolving inlined frames runs addr2line per address (minutes).
    perf script ${PERF_SCRIPT_ARGS:---no-inline} -i "$WORK/perf.$k.data" 2>/dev/null \
      | inferno-collapse-perf >"$WORK/perf.$k.folded"
    inferno-flamegraph --title "frontdesk $k, wrk -c$CONNS, $COMMIT, $STAMP (cpu-clock ${PERF_FREQ} Hz)" \
      <"$WORK/perf.$k.folded" >"$svg"
    echo
    echo "flamegraph: $svg  (wrk during perf: $(awk '/^Requests\/sec/{print $2}' "$WORK/perf.$k.wrk") req/s)"
    echo "top 20 functions by self time ($k):"
    awk '{n=$NF; $NF=""; sub(/ $/,""); k=split($0,f,";"); self[f[k]]+=n; tot+=n}
      END{for (s in self) printf "%6.2f%%  %s\n", 100*self[s]/tot, s}' "$WORK/perf.$k.folded" \
      | sort -rn | head -20
    echo "inclusive shares ($k; BENCHMARKS.md, 'Where the time goes'):"
    for pat in '^<?tracing' 'tracing_subscriber::fmt::format::json|format_event' 'tcp_sendmsg' \
      '^(malloc|_int_malloc|_int_free|cfree|malloc_consolidate)$' 'Auth::authenticate' \
      'serde_json' '^<?metrics' 'moka' 'uuid|Uuid'; do
      awk -v pat="$pat" '{n=$NF; $NF=""; sub(/ $/,""); k=split($0,f,";"); hit=0
        for (i=1;i<=k;i++) if (f[i] ~ pat) { hit=1; break }
        tot+=n; if (hit) s+=n } END { printf "%6.2f%%  %s\n", 100*s/tot, pat }' "$WORK/perf.$k.folded"
    done
  done
fi
