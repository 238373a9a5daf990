#!/usr/bin/env bash
# Renders the benchmark history (bench-history.tsv: figure, date, commit, value, source;
# appended to by `RECORD=1 scripts/bench-edge.sh` and `frontdesk-bench --history`) as
# the Markdown table in BENCHMARKS.md, "History": per figure its first, previous and
# current value, each with date and commit. Figures in order of first appearance;
# PATTERN (an awk regex on the figure name) keeps only some.
#
#   scripts/bench-history.sh                       # all figures
#   PATTERN='^edge\.' scripts/bench-history.sh     # only bench-edge.sh's
set -euo pipefail
FILE=${1:-$(cd "$(dirname "$0")/.." && pwd)/bench-history.tsv}
[ -f "$FILE" ] || { echo "no history file: $FILE" >&2; exit 1; }
awk -F'\t' -v pat="${PATTERN:-.}" '
  NR == 1 || $1 !~ pat { next }
  {
    if (!($1 in n)) { order[++figs] = $1; first[$1] = cell() }
    n[$1]++; prev[$1] = cur[$1]; cur[$1] = cell()
  }
  function cell() { return sprintf("%s (%s, %s)", $4, substr($2, 1, 10), $3) }
  END {
    print "| figure | first | previous | current |"
    print "|---|---|---|---|"
    for (i = 1; i <= figs; i++) {
      f = order[i]
      p = (n[f] >= 2) ? prev[f] : "–"
      c = cur[f]
      printf "| `%s` | %s | %s | %s |\n", f, first[f], p, c
    }
  }' "$FILE"
