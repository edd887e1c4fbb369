#!/usr/bin/env bash
# Soak (issue 14, SPEC "Retention"): does a cluster that runs real work for a long time stay
# flat? `tests/bench/soak.sh [MINUTES]` (default 30).
#
# Starts `triad dev` (3 masters, EXECUTORS executors) with a short retention, measures the
# maximum rate the cluster sustains end to end with real tasks (after a 5 s burst of `bench
# submit --run-tasks`, the rate at which the backlog runs down over 30 s), then runs `bench submit
# --run-tasks` at half that rate (or at --rate R) for MINUTES. Every SAMPLE_EVERY seconds it
# samples each master's RSS, data-dir size and jobs in state (the `triad_jobs` gauges of its
# /metrics), and each executor's work-dir size, into a CSV, and draws it with `triad bench plot`
# (an SVG). At the end it prints, for every column, its range after warm-up (the first third of
# the run) as a percentage around its mean, and the submission errors.
#
# Env: OUT (where the CSV and SVG go, default target/soak), SAMPLE_EVERY (5), EXECUTORS (2),
# WARMUP (minutes excluded from the summary; default a third of the run), WINDOW (300 s: peaks),
# BASE_PORT (7701), TRIAD_RETENTION_FINISHED_JOB_TTL (60s; the masters inherit it),
# TRIAD_EXECUTOR_OUTPUT_TTL (10m: the executors' backstop, the leader's DeleteOutput comes first),
# TRIAD (target/release/triad), KEEP=1 keeps the cluster's data and logs.
# Figures are only comparable side by side within one sitting on the same machine: run it under
# `flock /tmp/triad-bench.lock` on a shared one.
set -euo pipefail
cd "$(dirname "$0")/../.."

MINUTES=30
RATE=
while [ $# -gt 0 ]; do
  case $1 in
    --rate) RATE=$2; shift 2 ;;
    --rate=*) RATE=${1#--rate=}; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) MINUTES=$1; shift ;;
  esac
done
OUT=${OUT:-target/soak}
SAMPLE_EVERY=${SAMPLE_EVERY:-5}
EXECUTORS=${EXECUTORS:-2}
BASE=${BASE_PORT:-7701}
export TRIAD_RETENTION_FINISHED_JOB_TTL=${TRIAD_RETENTION_FINISHED_JOB_TTL:-60s}
export TRIAD_EXECUTOR_OUTPUT_TTL=${TRIAD_EXECUTOR_OUTPUT_TTL:-10m}
BENCH_NAME=soak
. tests/bench/common.sh
mkdir -p "$OUT"
CSV="$OUT/soak.csv"
SVG="$OUT/soak.svg"

"$TRIAD" dev --executors "$EXECUTORS" --base-port "$BASE" --data-dir "$WORK/triad" >"$WORK/dev.log" 2>&1 &
PIDS+=($!)
wait_until "triad dev's export line" 90 grep -q '^export TRIAD_MASTERS' "$WORK/dev.log"
eval "$(grep '^export TRIAD_MASTERS' "$WORK/dev.log")"
executors_alive() {
  [ "$("$TRIAD" executor list -o json | jq '[.[] | select(.state == "alive")] | length')" -ge "$EXECUTORS" ]
}
wait_until "$EXECUTORS executors" 60 executors_alive

status() { "$TRIAD" cluster status -o json 2>/dev/null || echo '{"masters": []}'; }
master_http() { echo "127.0.0.1:$((BASE + 50 + $1 - 1))"; }
# Master $1's /metrics: over HTTPS with the dev cluster's CA when TLS is on (the default).
metrics_of() {
  if [ -n "${TRIAD_CA:-}" ]; then
    curl -s --max-time 3 --cacert "$TRIAD_CA" "https://$(master_http "$1")/metrics"
  else
    curl -s --max-time 3 "http://$(master_http "$1")/metrics"
  fi
}
# Jobs in the state machine of master $1: the sum of its triad_jobs{state=...} gauges.
jobs_of() {
  metrics_of "$1" |
    awk '/^triad_jobs\{/ { n += $2 } END { if (NR) printf "%d", n }'
}
succeeded_on_leader() {
  local id
  id=$(status | jq '.leader_id')
  metrics_of "$id" |
    awk '/^triad_jobs\{state="succeeded"\}/ { printf "%d", $2 }'
}
unfinished_on_leader() {
  local id
  id=$(status | jq '.leader_id')
  metrics_of "$id" |
    awk '/^triad_jobs\{state="(pending|running)"\}/ { n += $2 } END { printf "%d", n }'
}
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
dir_bytes() { du -sb "$1" 2>/dev/null | awk '{ print $1 }'; }

if [ -z "$RATE" ]; then
  # The end-to-end maximum: a 5 s burst at full speed leaves a backlog; how fast the cluster
  # runs it down over the next 30 s (jobs succeeded per second) is the rate it sustains with
  # real tasks. Then the backlog drains before the soak starts.
  burst=$("$TRIAD" bench submit --run-tasks --duration 5s -o json)
  echo "measuring: $(jq '.ops' <<<"$burst") jobs submitted in 5 s ($(jq '.rate_per_sec | floor' <<<"$burst")/s)" >&2
  a=$(succeeded_on_leader)
  sleep 30
  b=$(succeeded_on_leader)
  max=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.1f", (b - a) / 30 }')
  RATE=$(awk -v m="$max" 'BEGIN { printf "%.1f", m / 2 }')
  echo "maximum end to end: $max jobs/s; soaking at $RATE jobs/s once the backlog has run" >&2
  # Drained when the leader holds no pending or running job (succeeded ones may already have been
  # collected by retention, so their count is no measure).
  drained() { [ "$(unfinished_on_leader)" = 0 ]; }
  wait_until "the burst's jobs to succeed" 900 drained
fi

cols="t_s"
for i in 1 2 3; do cols="$cols,m${i}_rss_mib"; done
for i in 1 2 3; do cols="$cols,m${i}_data_mib"; done
for i in 1 2 3; do cols="$cols,m${i}_jobs"; done
for i in $(seq 1 "$EXECUTORS"); do cols="$cols,e${i}_work_mib"; done
echo "$cols" >"$CSV"

"$TRIAD" bench submit --run-tasks --rate "$RATE" --duration "${MINUTES}m" -o json >"$WORK/submit.json" &
SUBMIT=$!
PIDS+=($SUBMIT)
start=$(date +%s)
while kill -0 "$SUBMIT" 2>/dev/null; do
  s=$(status)
  row="$(( $(date +%s) - start ))"
  for i in 1 2 3; do
    pid=$(jq -r ".masters[] | select(.id == $i) | .pid // empty" <<<"$s")
    rss=
    [ -n "$pid" ] && rss=$(awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status" 2>/dev/null || true)
    row="$row,$rss"
  done
  for i in 1 2 3; do row="$row,$(mib "$(dir_bytes "$WORK/triad/master$i/data")")"; done
  for i in 1 2 3; do row="$row,$(jobs_of "$i" || true)"; done
  for i in $(seq 1 "$EXECUTORS"); do row="$row,$(mib "$(dir_bytes "$WORK/triad/executor$i/attempts")")"; done
  echo "$row" >>"$CSV"
  sleep "$SAMPLE_EVERY"
done
wait "$SUBMIT" || { echo "bench submit failed" >&2; exit 1; }

"$TRIAD" bench plot "$CSV" "$SVG" >/dev/null
echo "samples: $CSV  plot: $SVG" >&2
jq -r '"submitted \(.ops) jobs at \(.rate_per_sec | floor)/s, errors \(.errors), p99 \(.p99_ms) ms"' "$WORK/submit.json"
# Every column's range after warm-up (WARMUP minutes, default the first third of the run),
# around its mean; and the same for its per-window peaks (WINDOW seconds, default 300), the
# measure of a sawtooth (a log that grows between snapshots and is purged after them).
awk -F, -v warm="${WARMUP:-}" -v minutes="$MINUTES" -v win="${WINDOW:-300}" '
  NR == 1 { for (i = 2; i <= NF; i++) name[i] = $i; next }
  { row[NR] = $0; n = NR; t[NR] = $1 + 0 }
  END {
    w = (warm == "" ? minutes * 60 / 3 : warm * 60)
    from = n + 1
    for (r = 2; r <= n; r++) if (t[r] >= w) { from = r; break }
    printf "after warm-up (%d s): %d samples\n", w, n - from + 1
    for (i = 2; i in name; i++) {
      lo = ""; hi = ""; sum = 0; k = 0
      for (r = from; r <= n; r++) {
        split(row[r], c, ","); if (c[i] == "") continue
        v = c[i] + 0; sum += v; k++
        if (lo == "" || v < lo) lo = v; if (hi == "" || v > hi) hi = v
      }
      if (k == 0) continue
      m = sum / k
      # Peaks: the maximum of each WINDOW-second window after warm-up, their mean and range.
      delete pk
      for (r = from; r <= n; r++) {
        split(row[r], c, ","); if (c[i] == "") continue
        wi = int((t[r] - w) / win); v = c[i] + 0
        if (!(wi in pk) || v > pk[wi]) pk[wi] = v
      }
      pl = ""; ph = ""; ps = 0; pn = 0
      for (wi in pk) { v = pk[wi]; ps += v; pn++; if (pl == "" || v < pl) pl = v; if (ph == "" || v > ph) ph = v }
      pm = pn ? ps / pn : 0
      printf "%-14s mean %10.1f  min %10.1f  max %10.1f  range %+.0f%% / %+.0f%%   peaks (%d windows) %+.0f%% / %+.0f%%\n", name[i], m, lo, hi, (m ? (lo - m) / m * 100 : 0), (m ? (hi - m) / m * 100 : 0), pn, (pm ? (pl - pm) / pm * 100 : 0), (pm ? (ph - pm) / pm * 100 : 0)
    }
  }' "$CSV"
