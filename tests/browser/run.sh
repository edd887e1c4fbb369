#!/usr/bin/env bash
# The dashboard in a real browser (issue 18): starts a secure `triad dev` cluster on free ports,
# validates its OpenAPI document with openapi-spec-validator, then drives headless Chromium
# (Debian's chromium + chromium-driver, through Python selenium in a venv) through
# tests/browser/dashboard.py. Screenshots (and, on failure, the browser console log) go to
# target/browser-screenshots/.
#
# Needs: target/release/triad (cargo build --release), chromium, chromium-driver, python3-venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
bin="$root/target/release/triad"
shots="$root/target/browser-screenshots"
venv="$root/target/py-venv"
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v chromedriver >/dev/null || { echo "chromedriver missing: apt-get install chromium chromium-driver" >&2; exit 1; }

if ! "$venv/bin/python" -c 'import selenium, openapi_spec_validator' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'selenium>=4.20,<5' 'openapi-spec-validator>=0.7'
fi

work=$(mktemp -d /tmp/triad-browser.XXXXXX)
dev_pid=""
cleanup() {
  if [ -n "$dev_pid" ] && kill -0 "$dev_pid" 2>/dev/null; then
    kill -INT "$dev_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$dev_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$dev_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A base port whose whole block (masters, their HTTP, executors, theirs) is free: triad dev
# checks and refuses busy ports, so try a few random blocks.
for attempt in 1 2 3 4 5 6 7 8; do
  base=$(( 20000 + (RANDOM % 200) * 200 ))
  "$bin" dev --data-dir "$work/dev" --base-port "$base" >"$work/dev.out" 2>&1 &
  dev_pid=$!
  for _ in $(seq 1 600); do
    grep -q '^export TRIAD_MASTERS' "$work/dev.out" && break
    kill -0 "$dev_pid" 2>/dev/null || break
    sleep 0.1
  done
  grep -q '^export TRIAD_MASTERS' "$work/dev.out" && break
  wait "$dev_pid" 2>/dev/null || true
  dev_pid=""
  if ! grep -q 'in use\|not free' "$work/dev.out"; then cat "$work/dev.out" >&2; exit 1; fi
done
[ -n "$dev_pid" ] || { echo "no free port block for triad dev" >&2; cat "$work/dev.out" >&2; exit 1; }
cat "$work/dev.out"

export TRIAD_CA="$work/dev/tls/ca.pem"
export TRIAD_TOKEN_FILE="$work/dev/tokens/admin.token"
export TRIAD_HTTP_PORTS="$(( base + 50 )),$(( base + 51 )),$(( base + 52 ))"
export TRIAD_SCREENSHOTS="$shots"
mkdir -p "$shots"

# The OpenAPI document as a master serves it, checked by openapi-spec-validator.
curl -sS --fail --cacert "$TRIAD_CA" "https://127.0.0.1:$(( base + 50 ))/v1/openapi.json" -o "$work/openapi.json"
"$venv/bin/openapi-spec-validator" "$work/openapi.json"

"$venv/bin/python" "$root/tests/browser/dashboard.py"
