#!/usr/bin/env bash
# Deployment test (issue 5, "done" 1): builds the image, makes the cluster's credentials
# (cluster-config/docker/credentials.sh: a CA, a certificate per master and executor, an admin and a
# client token) in a temporary directory, brings up cluster-config/docker-compose.yml (3 masters +
# 2 executors, mutual TLS on every hop), sees a call without a token refused, submits a job through
# each master in turn, kills the leader's container, sees a new leader and a job that spans the kill
# finish `succeeded`, restarts the killed master and sees it rejoin, then tears everything down
# (also on failure). The host CLI verifies the masters against the test's CA and presents the
# client token; `triad job logs` inside the network presents it too.
#
#   tests/deploy/compose-test.sh
#
# Needs: docker (daemon running), docker-compose, jq, curl, busybox (busybox-static), cargo; run as
# a user that may use docker. The masters are reached from the host through ports published on
# 127.0.0.1: gRPC at the first free base of 27101.. (TRIAD_TEST_PORT_BASE), HTTP at base+100.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
compose_file="$repo/cluster-config/docker-compose.yml"
project="triaddeploytest"
export TRIAD_IMAGE="${TRIAD_IMAGE:-triad:latest}"
triad="$repo/target/release/triad"
t0=$SECONDS
passed=0

log() { printf '[compose-test %3ds] %s\n' "$((SECONDS - t0))" "$*"; }
fail() { echo "compose-test: FAIL: $*" >&2; exit 1; }
ok() { passed=$((passed + 1)); log "ok: $*"; }

for tool in docker docker-compose jq curl flock; do
  command -v "$tool" >/dev/null || fail "$tool not found"
done
docker info >/dev/null 2>&1 || fail "cannot reach the docker daemon (is it running, may this user use it?)"

dc() { timeout 180 docker-compose -p "$project" -f "$compose_file" "$@"; }

compose_up=0
creds=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [[ $compose_up == 1 ]]; then
    if [[ $rc -ne 0 ]]; then
      echo "compose-test: failed (exit $rc); last log lines of every container:" >&2
      dc logs --no-color --tail=40 >&2 2>&1 || true
    fi
    log "tearing down"
    dc down -v --remove-orphans >/dev/null 2>&1 || echo "compose-test: warning: docker-compose down failed" >&2
  fi
  [[ -n "$creds" ]] && rm -rf "$creds"
  if [[ $rc -eq 0 ]]; then
    log "all checks passed in $((SECONDS - t0)) s"
    echo "compose-test: $passed passed, 0 failed"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT; trap 'exit 143' TERM; trap 'exit 129' HUP   # so the EXIT trap runs

# One run at a time on this machine: the compose network's subnet is fixed.
exec 9>"${TMPDIR:-/tmp}/triad-compose-test.lock"
flock -w 600 9 || fail "another compose-test still holds ${TMPDIR:-/tmp}/triad-compose-test.lock after 600 s"

# --- host ports for the three masters: gRPC at base..base+2, HTTP at base+100..base+102 -------------
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ports_free() { local p; for p in "$1" $(($1 + 1)) $(($1 + 2)) $(($1 + 100)) $(($1 + 101)) $(($1 + 102)); do
  ! port_busy "$p" || return 1; done; }
base="${TRIAD_TEST_PORT_BASE:-27101}"
for _ in $(seq 1 50); do ports_free "$base" && break; base=$((base + 10)); done
ports_free "$base" || fail "no free host ports found near ${TRIAD_TEST_PORT_BASE:-27101}"
export TRIAD_HOST_IP=127.0.0.1
for i in 1 2 3; do
  export "TRIAD_HOST_PORT$i=$((base + i - 1))" "TRIAD_HOST_HTTP_PORT$i=$((base + 99 + i))"
done
addr() { echo "127.0.0.1:$((base + $1 - 1))"; }         # host address of master N's gRPC port
http() { echo "http://127.0.0.1:$((base + 99 + $1))"; }  # and of its HTTP port
all_masters="$(addr 1),$(addr 2),$(addr 3)"

# --- image ----------------------------------------------------------------------------------------
log "building the image $TRIAD_IMAGE"
"$repo/cluster-config/docker/build.sh" || fail "cluster-config/docker/build.sh failed"
[[ -x "$triad" ]] || fail "no host binary at $triad"

# --- credentials, made for this run only --------------------------------------------------------
creds="$(mktemp -d "${TMPDIR:-/tmp}/triad-compose-creds.XXXXXX")"
chmod 755 "$creds"   # the containers' user (uid 10001) must reach $creds/etc
log "making a CA, certificates and tokens in $creds"
TRIAD_BIN="$triad" "$repo/cluster-config/docker/credentials.sh" "$creds/cluster" >/dev/null \
  || fail "cluster-config/docker/credentials.sh failed"
export TRIAD_CREDENTIALS="$creds/cluster"                          # read by docker-compose.yml
export TRIAD_CA="$TRIAD_CREDENTIALS/etc/tls/ca.pem"                # the host CLI verifies the masters
TRIAD_TOKEN="$(cat "$TRIAD_CREDENTIALS/tokens/client.token")"      # and presents the client token
export TRIAD_TOKEN
unset TRIAD_INSECURE TRIAD_CERT TRIAD_KEY

# A leftover of an interrupted run would hold the fixed subnet.
dc down -v --remove-orphans >/dev/null 2>&1 || true
compose_up=1

log "docker-compose up (masters on $all_masters)"
dc up -d || fail "docker-compose up failed (is 172.28.0.0/24 used by another docker network?)"

# --- helpers --------------------------------------------------------------------------------------
status_json() { timeout 10 "$triad" cluster status -o json --masters "$1" 2>/dev/null; }

# wait_for DESCRIPTION SECONDS COMMAND...: runs COMMAND every 0.2 s until it succeeds or time runs out.
wait_for() {
  local what="$1" secs="$2"; shift 2
  local deadline=$((SECONDS + secs))
  until "$@"; do
    [[ $SECONDS -lt $deadline ]] || fail "timed out after ${secs}s waiting for $what"
    sleep 0.2
  done
}

leader_id=0; leader_term=0
# Sets leader_id/leader_term from the cluster status gathered by master(s) $1; succeeds when it
# names a leader whose term is above $2 (default 0) and which is not master $3 (default none).
have_leader() {
  local s; s="$(status_json "$1")" || return 1
  local id term
  id="$(jq -r '.leader_id' <<<"$s")"; [[ "$id" != 0 && "$id" != null ]] || return 1
  term="$(jq -r --argjson id "$id" '.masters[] | select(.id == $id) | .term' <<<"$s")"
  [[ "$term" -gt "${2:-0}" && "$id" != "${3:-0}" ]] || return 1
  leader_id=$id; leader_term=$term
}
alive_executors() {
  local n
  n="$(timeout 10 "$triad" executor list -o json --masters "$all_masters" 2>/dev/null | jq '[.[] | select(.state == "alive")] | length')" || return 1
  [[ "$n" -ge 2 ]]
}
job_field() { timeout 30 "$triad" job get "$2" -o json --masters "$1" | jq -r ".$3"; }
job_running() { [[ "$(job_field "$1" "$2" state 2>/dev/null)" == running ]]; }
all_reachable() {
  local s; s="$(status_json "$1")" || return 1
  [[ "$(jq '[.masters[] | select(.reachable and (.role == "leader" or .role == "follower"))] | length' <<<"$s")" == 3 ]] || return 1
  # and the restarted master has caught up with the leader's applied index
  [[ "$(jq '[.masters[].applied_index] | unique | length' <<<"$s")" == 1 ]]
}

# --- 1. a leader, and both executors --------------------------------------------------------------
wait_for "a leader" 60 have_leader "$(addr 1)"
ok "leader elected: master$leader_id (term $leader_term)"

# TLS with no token (and no client certificate) is refused before any handler runs.
if out="$(TRIAD_TOKEN= timeout 10 "$triad" job list --masters "$(addr 1)" 2>&1)"; then
  fail "job list without a token succeeded: $out"
fi
grep -q "(Unauthenticated)" <<<"$out" || fail "job list without a token failed, but not UNAUTHENTICATED: $out"
ok "a call without a token is refused: $(tail -n1 <<<"$out")"
wait_for "two alive executors" 60 alive_executors
ok "two executors registered"

# The HTTP endpoints are published too: every /status names the leader, and only the leader's
# /metrics says it leads.
for i in 1 2 3; do
  st="$(curl -fsS --max-time 10 "$(http "$i")/status")" || fail "GET $(http "$i")/status failed"
  [[ "$(jq -r .leader_id <<<"$st")" == "$leader_id" ]] || fail "/status of master$i names leader $(jq -r .leader_id <<<"$st"), want $leader_id"
  want=0; [[ $i == "$leader_id" ]] && want=1
  metrics="$(curl -fsS --max-time 10 "$(http "$i")/metrics")" || fail "GET $(http "$i")/metrics failed"
  grep -qx "triad_raft_is_leader $want" <<<"$metrics" || fail "/metrics of master$i does not say triad_raft_is_leader $want"
done
ok "/status and /metrics answer on every master's published HTTP port"

# --- 2. a job through each master in turn -----------------------------------------------------------
for i in 1 2 3; do
  out="$(timeout 60 "$triad" job submit --wait --masters "$(addr "$i")" -- echo "hello via master$i")" \
    || fail "job submitted through master$i did not succeed: ${out:-no output}"
  id="$(tail -n1 <<<"$out")"
  state="$(job_field "$(addr "$i")" "$id" state)"
  [[ "$state" == succeeded ]] || fail "job $id through master$i is $state, want succeeded"
  # Its output, read from the executor inside the compose network.
  logs="$(dc exec -T -e TRIAD_TOKEN "master$i" triad job logs "$id")" || fail "triad job logs $id inside master$i failed"
  [[ "$logs" == "hello via master$i" ]] || fail "job $id printed '$logs', want 'hello via master$i'"
  ok "job $id through master$i succeeded and printed its line"
done

# --- 3. kill the leader while a job runs ---------------------------------------------------------------
wait_for "the current leader" 30 have_leader "$all_masters"
old_leader=$leader_id; old_term=$leader_term
survivor=$(( old_leader % 3 + 1 ))                    # any master but the leader
survivors="$(for i in 1 2 3; do [[ $i == "$old_leader" ]] || printf '%s,' "$(addr "$i")"; done)"
survivors="${survivors%,}"

# The container first: docker-compose itself can take seconds to start on a loaded machine, and
# the long job must still be running when the kill lands.
container="$(dc ps -q "master$old_leader")"
[[ -n "$container" ]] || fail "no container for master$old_leader"

long_id="$(timeout 30 "$triad" job submit --masters "$(addr "$survivor")" --shell -- 'sleep 6; echo spanned the failover')" \
  || fail "submitting the long job failed"
wait_for "the long job to start running" 30 job_running "$(addr "$survivor")" "$long_id"
kill_ms=$(( $(date +%s%N) / 1000000 ))
docker kill "$container" >/dev/null || fail "docker kill of master$old_leader failed"
log "killed the leader's container (master$old_leader, term $old_term)"

wait_for "a new leader after the kill" 30 have_leader "$(addr "$survivor")" "$old_term" "$old_leader"
failover_ms=$(( $(date +%s%N) / 1000000 - kill_ms ))
# (an upper bound: a status call that asks the dead master's address can itself take seconds)
ok "new leader: master$leader_id (term $leader_term), seen within ${failover_ms} ms of the kill"

timeout 90 "$triad" job wait "$long_id" --masters "$survivors" >/dev/null \
  || fail "job $long_id, running when the leader was killed, did not succeed: $(job_field "$survivors" "$long_id" state 2>&1)"
finished="$(job_field "$survivors" "$long_id" finished_at_ms)"
[[ "$finished" -gt "$kill_ms" ]] || fail "job $long_id finished before the kill ($finished <= $kill_ms): it did not span the failover"
ok "job $long_id spanned the leader kill and succeeded"

out="$(timeout 60 "$triad" job submit --wait --masters "$survivors" -- echo after the failover)" \
  || fail "a job submitted after the failover did not succeed: ${out:-no output}"
ok "job $(tail -n1 <<<"$out") submitted after the failover succeeded"

# --- 4. the killed master comes back and catches up -------------------------------------------------------
docker start "$container" >/dev/null || fail "docker start of master$old_leader failed"
wait_for "master$old_leader to rejoin and catch up" 60 all_reachable "$(addr "$old_leader")"
ok "master$old_leader restarted from its volume and caught up"

