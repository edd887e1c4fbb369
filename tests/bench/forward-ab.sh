#!/usr/bin/env bash
# Issue 19, A/B in one sitting: plain unary submissions spread round-robin over all three masters
# (`bench submit --api unary-any`, two in three forwarded by a follower) against two `triad dev`
# clusters of the same binary, side by side on loopback:
#   A: followers forward on their ForwardSubmits stream (the default);
#   B: followers forward each submission as its own unary call (TRIAD_FORWARD_UNARY=1, the path
#      before issue 19).
# Runs alternate A B A B ... at each concurrency, so both see the same machine. Prints one JSON
# line per run and the medians with the ratio A/B. Not part of CI.
#
# Env: CONCURRENCY (default "64 256"), RUNS (3), DURATION (10s), TRIAD, TLS (1; 0 = --insecure).
set -euo pipefail
cd "$(dirname "$0")/../.."

CONCURRENCY=${CONCURRENCY:-"64 256"}
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
BENCH_NAME=forward-ab
. tests/bench/common.sh

DEV_ARGS=()
[ "${TLS:-1}" = 1 ] || DEV_ARGS=(--insecure)
"$TRIAD" dev --executors 0 --base-port 7801 --data-dir "$WORK/a" "${DEV_ARGS[@]}" >"$WORK/a.log" 2>&1 &
PIDS+=($!)
TRIAD_FORWARD_UNARY=1 "$TRIAD" dev --executors 0 --base-port 7901 --data-dir "$WORK/b" "${DEV_ARGS[@]}" \
  >"$WORK/b.log" 2>&1 &
PIDS+=($!)
wait_until "cluster A" 60 grep -q "^export TRIAD_MASTERS" "$WORK/a.log"
wait_until "cluster B" 60 grep -q "^export TRIAD_MASTERS" "$WORK/b.log"

RESULTS=$WORK/results.jsonl
for c in $CONCURRENCY; do
  for r in $(seq "$RUNS"); do
    for side in a b; do
      (
        eval "$(grep '^export TRIAD_MASTERS' "$WORK/$side.log")"
        "$TRIAD" bench submit --api unary-any --concurrency "$c" --duration "$DURATION" -o json
      ) | jq -c --arg sys "$side" '{sys: $sys, c: (.extra.CONCURRENCY|tonumber), rate: .rate_per_sec, p50: .p50_ms, p99: .p99_ms, errors}' \
        | tee -a "$RESULTS"
    done
  done
done

echo
echo "medians of $RUNS runs of $DURATION ($(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-6s %-30s %-30s %s\n' CONC "A stream-forwarded (p50/p99)" "B call-per-submission" "A/B"
jq -s -r '
  def median: sort | .[(length/2|floor)];
  def fig($rs): [($rs|map(.rate)|median), ($rs|map(.p50)|median), ($rs|map(.p99)|median)];
  group_by(.c)[] as $g
  | [$g[0].c] + fig($g | map(select(.sys=="a"))) + fig($g | map(select(.sys=="b")))
  | @tsv' "$RESULTS" |
while IFS=$'\t' read -r c ar a50 a99 br b50 b99; do
  printf '%-6s %-30s %-30s %.2f\n' "$c" "$(printf '%.0f (%.1f/%.1f)' "$ar" "$a50" "$a99")" \
    "$(printf '%.0f (%.1f/%.1f)' "$br" "$b50" "$b99")" "$(awk -v a="$ar" -v b="$br" 'BEGIN { print a / b }')"
done
