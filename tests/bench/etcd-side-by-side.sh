#!/usr/bin/env bash
# triad vs etcd, side by side, in one sitting on one machine (BENCHMARKS.md, issue "Make it fast").
#
# Three etcd 3.4 members (Debian's etcd-server) on loopback, then three triad masters
# (`triad dev --executors 0`) on loopback, each driven by the same closed-loop harness:
# `triad bench etcd-put` (durable puts to the etcd leader) and `triad bench submit` (durable
# submissions to the triad leader), at each concurrency in CONCURRENCY, RUNS times, DURATION each.
# triad runs three ways: `--api unary-any` (one SubmitJob call per submission, spread
# round-robin over all three masters with no leader hint followed, as a generic gRPC client does;
# two in three are forwarded by a follower), `--api unary` (one SubmitJob call per submission to
# the leader) and `--api stream` (the workers pipeline their submissions on one SubmitJobs
# stream). etcd runs two ways: puts spread round-robin over its three members (the reference of
# "triad unary, any master", issue 19) and puts to its leader only.
# Prints one JSON line per run and a table of medians. Not part of CI (it takes minutes).
#
# Both run with TLS by default (TLS=1): etcd with client and peer certificates
# (--client-cert-auth, --peer-client-cert-auth) made by `triad tls`, triad as `triad dev` makes
# it (mutual TLS between masters, the admin token over TLS from the bench). TLS=0 runs both in
# plaintext (`triad dev --insecure`).
#
# Env: CONCURRENCY (default "16 64 256"), RUNS (3), DURATION (10s), TRIAD (target/release/triad),
# TLS (1).
set -euo pipefail
cd "$(dirname "$0")/../.."

CONCURRENCY=${CONCURRENCY:-"16 64 256"}
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
need() { command -v "$1" >/dev/null 2>&1; }
if ! need etcd || ! need etcdctl || ! need jq; then
  echo "installing etcd-server, etcd-client and jq from Debian" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server etcd-client jq >/dev/null
fi
BENCH_NAME=etcd-bench
. tests/bench/common.sh

# ---- etcd -------------------------------------------------------------------------------------
TLS=${TLS:-1}
ETCD_TLS=() ETCDCTL_TLS=() BENCH_TLS=() S=http
if [ "$TLS" = 1 ]; then
  S=https
  "$TRIAD" tls ca create --dir "$WORK/tls" >/dev/null
  for i in 1 2 3; do
    "$TRIAD" tls cert create --dir "$WORK/tls" --role master --name "etcd$i" --host 127.0.0.1 >/dev/null
  done
  "$TRIAD" tls cert create --dir "$WORK/tls" --role admin --name bench >/dev/null
  "$TRIAD" tls cert create --dir "$WORK/tls" --role master --name etcdctl --host 127.0.0.1 >/dev/null
  ETCDCTL_TLS=(--cacert "$WORK/tls/ca.pem" --cert "$WORK/tls/master-etcdctl.pem" --key "$WORK/tls/master-etcdctl.key")
  BENCH_TLS=(--etcd-ca "$WORK/tls/ca.pem" --etcd-cert "$WORK/tls/master-etcdctl.pem" --etcd-key "$WORK/tls/master-etcdctl.key")
fi
CLUSTER="e1=$S://127.0.0.1:23801,e2=$S://127.0.0.1:23802,e3=$S://127.0.0.1:23803"
ENDPOINTS="$S://127.0.0.1:23791,$S://127.0.0.1:23792,$S://127.0.0.1:23793"
for i in 1 2 3; do
  if [ "$TLS" = 1 ]; then
    c="$WORK/tls/master-etcd$i.pem" k="$WORK/tls/master-etcd$i.key" ca="$WORK/tls/ca.pem"
    ETCD_TLS=(--cert-file "$c" --key-file "$k" --trusted-ca-file "$ca" --client-cert-auth
      --peer-cert-file "$c" --peer-key-file "$k" --peer-trusted-ca-file "$ca" --peer-client-cert-auth)
  fi
  etcd --name "e$i" --data-dir "$WORK/etcd$i" "${ETCD_TLS[@]}" \
    --listen-client-urls "$S://127.0.0.1:2379$i" --advertise-client-urls "$S://127.0.0.1:2379$i" \
    --listen-peer-urls "$S://127.0.0.1:2380$i" --initial-advertise-peer-urls "$S://127.0.0.1:2380$i" \
    --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token triad-bench \
    --log-level error >"$WORK/etcd$i.log" 2>&1 &
  PIDS+=($!)
done
export ETCDCTL_API=3
wait_until "etcd health" 60 etcdctl "${ETCDCTL_TLS[@]}" --endpoints="$ENDPOINTS" endpoint health
ETCD_LEADER=$(etcdctl "${ETCDCTL_TLS[@]}" --endpoints="$ENDPOINTS" endpoint status -w json \
  | jq -r '.[] | select(.Status.header.member_id == .Status.leader) | .Endpoint' | sed 's|^https*://||')
echo "etcd $(etcd --version | head -1 | awk '{print $3}'): leader at $ETCD_LEADER" >&2

ETCD_ALL=$(echo "$ENDPOINTS" | sed 's|https*://||g')
RESULTS=$WORK/results.jsonl
for c in $CONCURRENCY; do
  for r in $(seq "$RUNS"); do
    for mode in any leader; do
      ep=$ETCD_ALL sys=etcd
      [ "$mode" = leader ] && ep=$ETCD_LEADER sys=etcd-leader
      "$TRIAD" bench etcd-put --endpoint "$ep" "${BENCH_TLS[@]}" --concurrency "$c" --duration "$DURATION" -o json \
        | jq -c --arg sys "$sys" '{sys: $sys, c: (.extra.CONCURRENCY|tonumber), rate: .rate_per_sec, p50: .p50_ms, p99: .p99_ms, errors}' \
        | tee -a "$RESULTS"
    done
  done
done
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=()

# ---- triad ------------------------------------------------------------------------------------
DEV_ARGS=()
[ "$TLS" = 1 ] || DEV_ARGS=(--insecure)
"$TRIAD" dev --executors 0 --base-port 7801 --data-dir "$WORK/triad" "${DEV_ARGS[@]}" >"$WORK/triad-dev.log" 2>&1 &
PIDS+=($!)
wait_until "a triad leader" 60 grep -q "^export TRIAD_MASTERS" "$WORK/triad-dev.log"
eval "$(grep '^export TRIAD_MASTERS' "$WORK/triad-dev.log")"
for c in $CONCURRENCY; do
  for r in $(seq "$RUNS"); do
    for api in unary-any unary stream; do
      "$TRIAD" bench submit --api "$api" --concurrency "$c" --duration "$DURATION" -o json \
        | jq -c --arg sys "triad-$api" '{sys: $sys, c: (.extra.CONCURRENCY|tonumber), rate: .rate_per_sec, p50: .p50_ms, p99: .p99_ms, errors}' \
        | tee -a "$RESULTS"
    done
  done
done

# ---- medians ----------------------------------------------------------------------------------
echo
echo "medians of $RUNS runs of $DURATION, TLS=$TLS ($(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-6s %-22s %-22s %-22s %-22s %-22s %s\n' CONC "etcd any (p50/p99 ms)" "etcd leader" \
  "triad unary any master" "triad unary leader" "triad stream" "any/etcd leader/etcd stream/etcd"
jq -s -r '
  def median: sort | .[(length/2|floor)];
  def fig($rs): [($rs|map(.rate)|median), ($rs|map(.p50)|median), ($rs|map(.p99)|median)];
  group_by(.c)[] as $g
  | [$g[0].c]
    + fig($g | map(select(.sys=="etcd")))
    + fig($g | map(select(.sys=="etcd-leader")))
    + fig($g | map(select(.sys=="triad-unary-any")))
    + fig($g | map(select(.sys=="triad-unary")))
    + fig($g | map(select(.sys=="triad-stream")))
  | @tsv' "$RESULTS" |
while IFS=$'\t' read -r c er e50 e99 lr l50 l99 ar a50 a99 ur u50 u99 sr s50 s99; do
  f() { printf '%.0f (%.1f/%.1f)' "$1" "$2" "$3"; }
  printf '%-6s %-22s %-22s %-22s %-22s %-22s %.2f %.2f %.2f\n' "$c" "$(f "$er" "$e50" "$e99")" \
    "$(f "$lr" "$l50" "$l99")" "$(f "$ar" "$a50" "$a99")" "$(f "$ur" "$u50" "$u99")" \
    "$(f "$sr" "$s50" "$s99")" \
    "$(awk -v a="$ar" -v b="$er" 'BEGIN { print a / b }')" \
    "$(awk -v a="$ur" -v b="$er" 'BEGIN { print a / b }')" \
    "$(awk -v a="$sr" -v b="$er" 'BEGIN { print a / b }')"
done
