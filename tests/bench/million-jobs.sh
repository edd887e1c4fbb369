#!/usr/bin/env bash
# SPEC "1,000,000 jobs in state": master RSS <= 2 GiB; restart or snapshot install <= 30 s.
#
# Starts `triad dev --executors 0`, fills it with JOBS jobs through `triad bench submit` (jobs
# that never run), then reports each master's RSS, the time a SIGKILLed follower takes from
# restart to having applied everything, and the time a wiped follower takes from `cluster
# add-master` (the documented replacement procedure) to having applied everything. Not part of CI
# (it takes minutes). Env: JOBS (default 1000000), TRIAD (target/release/triad).
set -euo pipefail
cd "$(dirname "$0")/../.."

JOBS=${JOBS:-1000000}
BENCH_NAME=million
. tests/bench/common.sh

# `cluster status` exits non-zero while a master is down, but still prints every master.
status() { "$TRIAD" cluster status -o json 2>/dev/null || true; }
now() { date +%s.%N; }
status_holds() { status | jq -e "$1"; }
# Waits (bounded by $2 seconds) until the jq filter $1 holds on `cluster status`.
wait_status() { wait_until "$1" "$2" status_holds "$1"; }

"$TRIAD" dev --executors 0 --base-port 7901 --data-dir "$WORK/triad" >"$WORK/dev.log" 2>&1 &
PIDS+=($!)
wait_until "triad dev's export line" 60 grep -q '^export TRIAD_MASTERS' "$WORK/dev.log"
eval "$(grep '^export TRIAD_MASTERS' "$WORK/dev.log")"
wait_status '.leader_id != 0' 60

t0=$(now)
while :; do
  n=$(status | jq '[.masters[] | select(.role == "leader") | .jobs][0] // 0')
  [ "$n" -ge "$JOBS" ] && break
  echo "jobs: $n of $JOBS" >&2
  "$TRIAD" bench submit --concurrency 64 --duration 20s -o json | jq -c '{rate: .rate_per_sec, p99: .p99_ms, errors}' >&2
done
fill=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }')
echo "filled: $n jobs in ${fill} s" >&2

rss() { awk '/VmRSS/ { r = $2 } /VmHWM/ { h = $2 } END { printf "%.0f MiB (peak %.0f MiB)", r / 1024, h / 1024 }' "/proc/$1/status"; }
status | jq -r '.masters[] | "\(.id) \(.pid) \(.role) term=\(.term) applied=\(.applied_index) snapshot=\(.snapshot_index) jobs=\(.jobs)"' |
while read -r id pid role rest; do echo "master$id ($role): RSS $(rss "$pid"), $rest"; done

# The leader's applied index, once there is a leader (membership changes move it around).
leader_applied() {
  wait_status '[.masters[] | select(.role == "leader")] | length == 1' 60
  status | jq '[.masters[] | select(.role == "leader") | .applied_index][0]'
}
# A stable cluster before each measurement: a leader and every master reachable.
stable() { wait_status '.leader_id != 0 and ([.masters[] | select(.reachable)] | length == 3)' 120; }

# A follower, SIGKILLed and restarted on its data: restart -> applied everything.
stable
F=$(status | jq -r '[.masters[] | select(.role == "follower")][0].id')
FPID=$(status | jq -r ".masters[] | select(.id == $F) | .pid")
CFG="$WORK/triad/master$F/master.toml"
kill -9 "$FPID"
target=$(leader_applied)
t0=$(now)
"$TRIAD" master --config "$CFG" >>"$WORK/triad/master$F/restart.log" 2>&1 &
PIDS+=($!)
wait_status "[.masters[] | select(.id == $F and .applied_index >= $target)] | length == 1" 120
echo "restart: master$F applied index $target after $(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }') s; RSS $(rss "${PIDS[-1]}")"

# The same follower with its disk gone, replaced by the documented procedure.
stable
kill -9 "${PIDS[-1]}"; unset 'PIDS[-1]'
ADDR=$(status | jq -r ".masters[] | select(.id == $F) | .addr")
"$TRIAD" cluster remove-master "$F"
rm -rf "$WORK/triad/master$F/data"
TRIAD_MASTER_BOOTSTRAP=false "$TRIAD" master --config "$CFG" >>"$WORK/triad/master$F/replace.log" 2>&1 &
PIDS+=($!)
target=$(leader_applied)
t0=$(now)
"$TRIAD" cluster add-master "$F" "$ADDR"
wait_status "[.masters[] | select(.id == $F and .applied_index >= $target)] | length == 1" 180
echo "replace (wiped disk): master$F applied index $target after $(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }') s from add-master; RSS $(rss "${PIDS[-1]}")"
status | jq -r ".masters[] | select(.id == $F) | \"  snapshot index \(.snapshot_index), purged \(.purged_index), jobs \(.jobs)\""
