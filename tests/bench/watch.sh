#!/usr/bin/env bash
# Cron firing lag and event delivery lag (issue 17): `tests/bench/watch.sh`.
#
# Starts `triad dev` (3 masters, 1 executor) on BASE_PORT and runs, one after the other:
#   1. `bench cron` idle for DURATION (scheduled time -> the firing seen on the event stream);
#   2. `bench cron` while `bench submit` runs beside it for the same time (load);
#   3. `bench events` at RATE submissions/s (submission acknowledged -> its creation event);
#   4. `bench cron` with the leader SIGKILLed a third of the way in (its max is the firing that
#      waited for the failover), on a fresh cluster: steps 2-3 leave a few hundred thousand
#      never-placed jobs pending, and a failover with that backlog is tests/bench/churn.sh's
#      question, not this one's.
# Env: DURATION (30s), RATE (10000), BASE_PORT (7801), TRIAD (target/release/triad), KEEP=1.
# Figures are comparable only side by side within one sitting: on a shared machine run it under
# `flock /tmp/triad-bench.lock`.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-30s}
RATE=${RATE:-10000}
BASE=${BASE_PORT:-7801}
BENCH_NAME=watch
. tests/bench/common.sh

# start_cluster DIR: a fresh `triad dev` with its data in $WORK/DIR; its pid in $DEV.
start_cluster() {
  "$TRIAD" dev --executors 1 --base-port "$BASE" --data-dir "$WORK/$1" >"$WORK/$1.log" 2>&1 &
  DEV=$!
  PIDS+=($DEV)
  wait_until "triad dev's export line" 90 grep -q '^export TRIAD_MASTERS' "$WORK/$1.log"
  eval "$(grep '^export TRIAD_MASTERS' "$WORK/$1.log")"
  wait_until "a leader" 30 sh -c "\"$TRIAD\" cluster status -o json | jq -e '.leader_id > 0'"
}
start_cluster triad

echo "== 1. cron firing lag, idle ($DURATION)"
"$TRIAD" bench cron --duration "$DURATION"

echo "== 2. cron firing lag beside bench submit --concurrency 64 ($DURATION)"
"$TRIAD" bench submit --concurrency 64 --duration "$DURATION" >"$WORK/submit.txt" &
load=$!
"$TRIAD" bench cron --duration "$DURATION"
wait "$load"
head -1 "$WORK/submit.txt"

echo "== 3. event delivery lag at $RATE submissions/s ($DURATION)"
"$TRIAD" bench events --rate "$RATE" --concurrency 256 --duration "$DURATION"

echo "== 4. cron firing lag with the leader SIGKILLed a third of the way in ($DURATION), fresh cluster"
kill "$DEV"
wait "$DEV" || true
start_cluster triad2
secs=$(awk -v d="${DURATION%s}" 'BEGIN { printf "%d", d / 3 }')
(
  sleep "$secs"
  leader=$("$TRIAD" cluster status -o json | jq -r '.leader_id')
  pid=$("$TRIAD" cluster status -o json | jq ".masters[] | select(.id == $leader) | .pid")
  echo "   killing master $leader (pid $pid)" >&2
  kill -9 "$pid"
) &
killer=$!
"$TRIAD" bench cron --duration "$DURATION"
wait "$killer"

