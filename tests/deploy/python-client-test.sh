#!/usr/bin/env bash
# Deployment test (issue 5, "done" 4): the Python example in examples/python/, with stubs generated
# from proto/ alone, submits a job to a local 3-master cluster (`triad dev --executors 1`, TLS and
# tokens on), reads it back and lists jobs. It dials the master over TLS, verifying its certificate
# against the dev cluster's CA as master.triad, and presents the dev client token; without the
# token it is refused (UNAUTHENTICATED).
#
#   tests/deploy/python-client-test.sh
#
# Needs: python3 with venv (Debian: python3-venv), PyPI reachable (pip install -r
# examples/python/requirements.txt), and target/release/triad (cargo build --release).
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
triad="${TRIAD_BIN:-$repo/target/release/triad}"
t0=$SECONDS
log() { printf '[python-client-test %3ds] %s\n' "$((SECONDS - t0))" "$*"; }
fail() { echo "python-client-test: FAIL: $*" >&2; exit 1; }

[[ -x "$triad" ]] || fail "no triad binary at $triad (cargo build --release)"
command -v python3 >/dev/null || fail "python3 not found"

tmp="$(mktemp -d)"
dev_pid=""
cleanup() {
  local rc=$?
  if [[ -n "$dev_pid" ]] && kill -0 "$dev_pid" 2>/dev/null; then
    kill -INT "$dev_pid" 2>/dev/null || true
    # triad dev stops its children within ~10 s (5 s grace per group); give it 20.
    for _ in $(seq 1 100); do kill -0 "$dev_pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$dev_pid" 2>/dev/null; then
      echo "python-client-test: triad dev did not stop within 20 s; killing it" >&2
      kill -KILL "$dev_pid" 2>/dev/null || true
      rc=1
    fi
    wait "$dev_pid" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 ]]; then
    for f in "$tmp"/dev.out "$tmp"/dev/master*/master.log "$tmp"/dev/executor*/executor.log; do
      [[ -f "$f" ]] && { echo "--- tail of $f" >&2; tail -n 20 "$f" >&2; }
    done
  fi
  rm -rf "$tmp"
  if [[ $rc -eq 0 ]]; then
    log "passed in $((SECONDS - t0)) s"
    echo "python-client-test: 1 passed, 0 failed"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT; trap 'exit 143' TERM; trap 'exit 129' HUP   # so the EXIT trap runs

# --- venv with the example's requirements -------------------------------------------------------
log "creating a venv and installing examples/python/requirements.txt"
python3 -m venv "$tmp/venv" || fail "python3 -m venv failed (Debian: apt-get install python3-venv)"
timeout 300 "$tmp/venv/bin/pip" install --disable-pip-version-check -q -r "$repo/examples/python/requirements.txt" \
  || fail "pip install -r examples/python/requirements.txt failed"

# --- a local cluster on free ports ----------------------------------------------------------------
# triad dev uses base..base+2 for the masters and base+100 for its executor.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
base=""
for _ in $(seq 1 50); do
  b=$(( 20000 + RANDOM % 12000 ))   # below the ephemeral range (32768+)
  if ! port_busy "$b" && ! port_busy $((b + 1)) && ! port_busy $((b + 2)) && ! port_busy $((b + 100)); then
    base=$b; break
  fi
done
[[ -n "$base" ]] || fail "no free ports found for triad dev"

log "starting triad dev (3 masters, 1 executor) on 127.0.0.1:$base.."
"$triad" dev --executors 1 --data-dir "$tmp/dev" --base-port "$base" >"$tmp/dev.out" 2>&1 </dev/null &
dev_pid=$!
deadline=$((SECONDS + 60))
until grep -q '^export TRIAD_MASTERS=' "$tmp/dev.out"; do
  kill -0 "$dev_pid" 2>/dev/null || { dev_pid=""; fail "triad dev exited before it was ready"; }
  [[ $SECONDS -lt $deadline ]] || fail "triad dev printed no 'export TRIAD_MASTERS=' line within 60 s"
  sleep 0.2
done
# export TRIAD_MASTERS=a,b,c TRIAD_CA=DIR/tls/ca.pem TRIAD_TOKEN=$(cat DIR/tokens/admin.token)
export_line="$(grep '^export TRIAD_MASTERS=' "$tmp/dev.out")"
masters="$(sed -n 's/^export TRIAD_MASTERS=\([^ ]*\).*/\1/p' <<<"$export_line")"
ca="$(sed -n 's/.* TRIAD_CA=\([^ ]*\).*/\1/p' <<<"$export_line")"
admin_token_file="$(sed -n 's/.*TRIAD_TOKEN=$(cat \([^)]*\)).*/\1/p' <<<"$export_line")"
[[ -n "$masters" && -f "$ca" && -f "$admin_token_file" ]] \
  || fail "triad dev's export line names no masters, CA or token file (is TLS on?): $export_line"
# The client role is all the example needs (jobs); the dev cluster writes one token per role.
client_token_file="$(dirname "$admin_token_file")/client.token"
[[ -f "$client_token_file" ]] || fail "no client token at $client_token_file"
master2="$(cut -d, -f2 <<<"$masters")"
log "cluster ready: $masters (CA $ca)"

# The CLI below verifies the masters against the same CA and presents the same token.
export TRIAD_CA="$ca"
TRIAD_TOKEN="$(cat "$client_token_file")"
export TRIAD_TOKEN
unset TRIAD_INSECURE TRIAD_CERT TRIAD_KEY

# --- the example, against one master ----------------------------------------------------------------
# The token reaches the example through TRIAD_TOKEN (its --token default), not the command line.
out="$(cd "$tmp" && PYTHONDONTWRITEBYTECODE=1 timeout 120 "$tmp/venv/bin/python" "$repo/examples/python/triad_example.py" \
  --master "$master2" --ca "$ca" --gen-dir "$tmp/gen" --timeout 60 2>&1)" || fail "the example failed: $out"
printf '%s\n' "$out" | sed 's/^/  | /'
uuid='[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'
id="$(grep -oE "^submitted job $uuid" <<<"$out" | awk '{print $3}')" || true
[[ -n "$id" ]] || fail "the example printed no 'submitted job <id>' line"
grep -qx "job $id state succeeded (1/1 tasks succeeded, 0 failed)" <<<"$out" || fail "the example did not report job $id as succeeded"
grep -q "^listed [0-9]* job(s); $id is among them" <<<"$out" || fail "the example did not find job $id in ListJobs"
[[ -f "$tmp/gen/triad/v1/triad_pb2_grpc.py" ]] || fail "no stubs were generated under $tmp/gen"

# The CLI agrees with what the Python client saw.
state="$(timeout 30 "$triad" job get "$id" -o json --masters "$masters" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')" \
  || fail "triad job get $id failed"
[[ "$state" == succeeded ]] || fail "triad job get $id says $state, want succeeded"
logs="$(timeout 30 "$triad" job logs "$id" --masters "$masters")" || fail "triad job logs $id failed"
[[ "$logs" == "hello from python" ]] || fail "job $id printed '$logs', want 'hello from python'"
log "job $id: submitted, read back and listed by the Python client over TLS with a token; the CLI agrees"

# Without the token the same TLS connection is refused before any handler runs.
if out="$(cd "$tmp" && PYTHONDONTWRITEBYTECODE=1 TRIAD_TOKEN= timeout 60 "$tmp/venv/bin/python" "$repo/examples/python/triad_example.py" \
  --master "$master2" --ca "$ca" --gen-dir "$tmp/gen" --timeout 10 2>&1)"; then
  fail "the example without a token succeeded: $out"
fi
grep -q "^error: UNAUTHENTICATED: " <<<"$out" || fail "the example without a token failed, but not UNAUTHENTICATED: $out"
log "without a token: $out"
