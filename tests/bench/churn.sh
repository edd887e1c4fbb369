#!/usr/bin/env bash
# Leader churn with a large backlog (issue 17's finding): `tests/bench/churn.sh`.
#
# Starts `triad dev` (3 masters, 1 executor) on BASE_PORT (8801), fills it with FILL seconds (60)
# of `bench submit --concurrency 64` (jobs that are never placed: a few hundred thousand pending),
# then SIGKILLs the leader and submits one placeable job at once (`triad job submit -- true`).
# Prints the terms before and after, and every campaign and leadership change in the masters'
# logs: one election is a clean failover; more mean the new leader was deposed again.
# Env: FILL, BASE_PORT, TRIAD (target/release/triad), KEEP=1 keeps the logs and data.
set -euo pipefail
cd "$(dirname "$0")/../.."
FILL=${FILL:-60}
BASE=${BASE_PORT:-8801}
BENCH_NAME=churn
. tests/bench/common.sh

"$TRIAD" dev --executors 1 --base-port "$BASE" --data-dir "$WORK/triad" >"$WORK/dev.log" 2>&1 &
PIDS+=($!)
wait_until "triad dev's export line" 90 grep -q '^export TRIAD_MASTERS' "$WORK/dev.log"
eval "$(grep '^export TRIAD_MASTERS' "$WORK/dev.log")"
terms() {
  "$TRIAD" cluster status -o json 2>/dev/null |
    jq -c '{leader: .leader_id, term: ([.masters[].term] | max), jobs: ([.masters[].jobs] | max)}'
}
"$TRIAD" bench submit --concurrency 64 --duration "${FILL}s" -o json | jq -c '{ops, rate_per_sec, errors}'
echo "filled: $(terms)"
leader=$("$TRIAD" cluster status -o json | jq '.leader_id')
pid=$("$TRIAD" cluster status -o json | jq ".masters[] | select(.id == $leader) | .pid")
kill -9 "$pid"
echo "killed master$leader at $(date -u +%H:%M:%S.%N)"
t0=$(date +%s%N)
submitted() { "$TRIAD" job submit -- true; }
wait_until "a submission after the kill" 30 submitted
echo "first write after the kill: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
# Settle: 10 s for any further elections to show.
end=$(( $(date +%s) + 10 )); while [ "$(date +%s)" -lt "$end" ]; do sleep 1; done
echo "after: $(terms)"
for i in 1 2 3; do
  grep -h "leader duties starting\|campaigning" "$WORK/triad/master$i/master.log" |
    awk -v m="master$i" '{ print $1, m, $NF }'
done | sort | tail -n 20
