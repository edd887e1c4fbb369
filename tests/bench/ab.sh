#!/usr/bin/env bash
# A/B in one sitting: the same benchmarks on two (or more) builds, alternated, each on a fresh
# `triad dev` cluster: `bench e2e --count 300` (on the empty cluster), then `bench submit -c 256`
# with the stream API and with unary calls. Figures are only comparable within one run of this.
#
#   tests/bench/ab.sh before=/path/to/old/triad after=target/release/triad   # ROUNDS=2 by default
#   tests/bench/ab.sh tls=target/release/triad plain=target/release/triad,--insecure
#
# A spec is LABEL=BINARY[,EXTRA-DEV-ARG...]; the client takes whatever `triad dev`'s export line
# gives (TRIAD_CA and the admin token with TLS, TRIAD_INSECURE without).
set -euo pipefail
ROUNDS=${ROUNDS:-2}
BASE_PORT=${BASE_PORT:-7401}
[ $# -ge 1 ] || { echo "usage: $0 LABEL=BINARY..." >&2; exit 2; }
dev=
dir=
cleanup() {
  [ -n "$dev" ] && kill -INT "$dev" 2>/dev/null && wait "$dev" 2>/dev/null
  [ -n "$dir" ] && rm -rf "$dir"
  return 0
}
trap cleanup EXIT INT TERM
for r in $(seq 1 "$ROUNDS"); do
  for spec in "$@"; do
    label=${spec%%=*} rest=${spec#*=}
    IFS=, read -r -a parts <<<"$rest"
    bin=${parts[0]} extra=("${parts[@]:1}")
    dir=$(mktemp -d /tmp/triad-ab.XXXXXX)
    unset TRIAD_CA TRIAD_TOKEN TRIAD_INSECURE
    "$bin" dev --data-dir "$dir/dev" --base-port "$BASE_PORT" "${extra[@]}" >"$dir/dev.out" 2>&1 &
    dev=$!
    deadline=$(($(date +%s) + 60))
    until grep -q '^export TRIAD_MASTERS' "$dir/dev.out"; do
      [ "$(date +%s)" -lt "$deadline" ] || { echo "$label: cluster not up in 60 s" >&2; cat "$dir/dev.out" >&2; exit 1; }
      kill -0 "$dev" 2>/dev/null || { echo "$label: triad dev exited" >&2; cat "$dir/dev.out" >&2; tail -n 5 "$dir"/dev/*/*.log >&2; exit 1; }
      sleep 0.1
    done
    eval "$(grep '^export TRIAD_MASTERS' "$dir/dev.out")"
    echo "== round $r $label"
    "$bin" bench e2e --count 300 | grep -E '^e2e'
    "$bin" bench submit --concurrency 256 --duration 10s | grep -E '^submit' | sed 's/^/stream /'
    "$bin" bench submit --concurrency 256 --duration 10s --api unary | grep -E '^submit' | sed 's/^/unary  /'
    cleanup
    dev= dir=
  done
done
