# Shared by the measurement scripts in tests/bench/ (sourced, not run): a scratch directory and
# background processes that are cleaned up however the script ends (KEEP=1 keeps the scratch
# directory, with every log), and bounded waits.

TRIAD=${TRIAD:-target/release/triad}
WORK=$(mktemp -d "/tmp/triad-${BENCH_NAME:-bench}.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $WORK (logs, data)" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT INT TERM
[ -x "$TRIAD" ] || cargo build --release --locked -p triad
command -v jq >/dev/null || { echo "needs jq (apt-get install jq)" >&2; exit 2; }

# wait_until WHAT SECONDS COMMAND...: runs COMMAND until it succeeds, failing after SECONDS.
wait_until() {
  local what=$1 deadline=$(( $(date +%s) + $2 ))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then echo "timed out waiting for $what" >&2; exit 1; fi
    sleep 0.1
  done
}
