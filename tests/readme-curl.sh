#!/usr/bin/env bash
# The README's HTTP API examples, run as written (issue 18): starts `triad dev` on its default
# ports (under flock /tmp/triad-dev.lock, so runs of it serialise), pastes its `export` line, and
# runs the sh block that follows the marker `<!-- tests/readme-curl.sh runs the next sh block -->`
# in README.md line by line in one bash. Each `curl` answer's HTTP status is checked: the status
# named at the start of the line's comment (`# 409 ...`), else 2xx; a `--max-time` stream that
# runs out is fine. It also checks that the block has an example of every path of the OpenAPI
# document the master serves.
#
# Needs: target/release/triad (cargo build --release), curl, jq, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
if [ -z "${TRIAD_DEV_LOCKED:-}" ]; then
  TRIAD_DEV_LOCKED=1 exec flock /tmp/triad-dev.lock "$0" "$@"
fi
bin="$root/target/release/triad"
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }

work=$(mktemp -d /tmp/triad-readme.XXXXXX)
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

# The block, and the script that runs it: each line as written, after setting what its answer
# must be.
python3 - "$root/README.md" "$work" <<'PY'
import re, sys, pathlib
readme, work = pathlib.Path(sys.argv[1]).read_text(), pathlib.Path(sys.argv[2])
marker = "<!-- tests/readme-curl.sh runs the next sh block -->"
after = readme[readme.index(marker) + len(marker):]
m = re.search(r"```sh\n(.*?)```", after, re.S)
block = m.group(1)
(work / "block.sh").write_text(block)
out = []
for n, line in enumerate(block.splitlines(), 1):
    want = re.search(r"#\s+([1-5][0-9][0-9])\b", line)
    out.append(f"EXPECT={want.group(1) if want else '2xx'} LINE={n}")
    out.append(line)
(work / "run.sh").write_text("\n".join(out) + "\n")
PY

# curl as the block calls it, checked: the body to stdout (for `$(...)` and pipes), the verdict
# to stderr.
cat >"$work/prelude.sh" <<'SH'
set -euo pipefail
curl() {
  local body code rc=0
  body=$(mktemp)
  code=$(command curl -sS -o "$body" -w '%{http_code}' "$@") || rc=$?
  cat "$body"
  rm -f "$body"
  local timed_out=0
  if [ "$rc" = 28 ] && printf '%s\n' "$@" | grep -qx -- '--max-time'; then timed_out=1; fi
  if [ "$rc" != 0 ] && [ "$timed_out" = 0 ]; then
    echo "README line $LINE: curl failed ($rc)" >&2; return 1
  fi
  case "$EXPECT" in
    2xx) [[ "$code" == 2?? ]] ;;
    *) [ "$code" = "$EXPECT" ] ;;
  esac || { echo "README line $LINE: HTTP $code, want $EXPECT" >&2; return 1; }
  echo "  [README line $LINE: HTTP $code]" >&2
}
SH

cd "$work"
"$bin" dev >"$work/dev.out" 2>&1 &
dev_pid=$!
for _ in $(seq 1 600); do
  grep -q '^export TRIAD_MASTERS' "$work/dev.out" && break
  kill -0 "$dev_pid" 2>/dev/null || { cat "$work/dev.out" >&2; exit 1; }
  sleep 0.1
done
line=$(grep '^export TRIAD_MASTERS' "$work/dev.out") || { cat "$work/dev.out" >&2; exit 1; }
eval "$line"

echo "running README.md's HTTP examples against triad dev (pid $dev_pid):"
# Bounded: a line that waits (the block's `until` loop) cannot hang the run.
timeout 180 bash -c "source '$work/prelude.sh'; source '$work/run.sh'"
echo "every line of the block ran; each curl answered as its comment says"

# An example for every path the API documents.
command curl -sS --fail --cacert "$TRIAD_CA" https://127.0.0.1:7151/v1/openapi.json -o "$work/openapi.json"
python3 - "$work/openapi.json" "$work/block.sh" <<'PY'
import json, re, sys
doc, block = json.load(open(sys.argv[1])), open(sys.argv[2]).read()
missing = []
for path, ops in doc["paths"].items():
    pat = re.escape(path)
    pat = re.sub(r"\\\{[a-z_]+\\\}", r"[^/?\" ]+", pat)
    lines = [l for l in block.splitlines() if re.search(r"/v1" + pat[len("/v1"):] + r"(?=[?\" ]|$)", l)]
    for method in ops:
        m = method.upper()
        def has(l):
            if m == "GET": return "-X " not in l and " -d " not in l
            if m == "POST": return "-X POST" in l or " -d " in l
            return f"-X {m}" in l
        if not any(has(l) for l in lines):
            missing.append(f"{m} {path}")
if missing:
    sys.exit("README.md has no curl example for: " + ", ".join(missing))
print(f"every documented endpoint ({sum(len(o) for o in doc['paths'].values())}) has a README example")
PY
echo "README curl examples passed"
