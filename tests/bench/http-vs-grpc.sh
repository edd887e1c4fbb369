#!/usr/bin/env bash
# HTTP/JSON submissions (`POST /v1/jobs`, one request per job, one HTTPS keep-alive connection per
# worker) beside gRPC unary `SubmitJob` (one call per job, HTTP/2), alternated on one `triad dev`
# cluster in one sitting, both against the leader. Run under the bench lock:
#
#   flock /tmp/triad-bench.lock tests/bench/http-vs-grpc.sh [target/release/triad]
#
# ROUNDS (2), CONCURRENCY (64), DURATION (10s), BASE_PORT (7501) override the defaults.
set -euo pipefail
bin=${1:-target/release/triad}
ROUNDS=${ROUNDS:-2} CONCURRENCY=${CONCURRENCY:-64} DURATION=${DURATION:-10s} BASE_PORT=${BASE_PORT:-7501}
dir=$(mktemp -d /tmp/triad-httpbench.XXXXXX)
dev=
cleanup() {
  [ -n "$dev" ] && kill -INT "$dev" 2>/dev/null && wait "$dev" 2>/dev/null
  rm -rf "$dir"
  return 0
}
trap cleanup EXIT INT TERM
unset TRIAD_CA TRIAD_TOKEN TRIAD_INSECURE
"$bin" dev --data-dir "$dir/dev" --base-port "$BASE_PORT" --executors 0 >"$dir/dev.out" 2>&1 &
dev=$!
deadline=$(($(date +%s) + 60))
until grep -q '^export TRIAD_MASTERS' "$dir/dev.out"; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "cluster not up in 60 s" >&2; cat "$dir/dev.out" >&2; exit 1; }
  kill -0 "$dev" 2>/dev/null || { echo "triad dev exited" >&2; cat "$dir/dev.out" >&2; exit 1; }
  sleep 0.1
done
eval "$(grep '^export TRIAD_MASTERS' "$dir/dev.out")"
leader=$("$bin" cluster status -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader_id"])')
http="https://127.0.0.1:$((BASE_PORT + 50 + leader - 1))"
echo "leader master$leader, HTTP API $http; c=$CONCURRENCY, $DURATION per run"
for r in $(seq 1 "$ROUNDS"); do
  for api in unary http; do
    echo "== round $r $api"
    "$bin" bench submit --api "$api" --http "$http" --concurrency "$CONCURRENCY" --duration "$DURATION" | grep -E "^submit"
  done
done
