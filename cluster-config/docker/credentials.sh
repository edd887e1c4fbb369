#!/usr/bin/env bash
# Makes the credentials of the compose cluster (cluster-config/docker-compose.yml): a cluster CA,
# a certificate per master and executor, an admin and a client bearer token, and the configs that
# name them.
#
#   cluster-config/docker/credentials.sh [DIR]     # default: cluster-config/docker/credentials
#
# DIR (which must not hold credentials yet) receives
#   ca/        mode 0700: ca.pem and ca.key (the CA's key: keep it offline, it signs
#              certificates), and every certificate made with them
#   tokens/    mode 0700: admin.token, client.token (mode 0600): the secrets a CLI presents
#              (TRIAD_TOKEN); only their SHA-256 is in the configs
#   etc/       mounted read-only at /etc/triad in every container (docker-compose.yml reads it
#              from $TRIAD_CREDENTIALS/etc, default ./docker/credentials/etc):
#              master.toml     docker/master.toml plus the tokens' [[auth.tokens]] entries
#              executor.toml   [tls] and the same [[auth.tokens]] (for `triad job logs`)
#              tls/ca.pem, tls/master-master{1,2,3}.{pem,key}, tls/executor-executor{1,2}.{pem,key}
#              (keys mode 0600, owned by the image's user, uid 10001; no CA key in here)
# Certificate names: masterN.master.triad and master.triad (what clients verify a master by),
# executorN.executor.triad (executorN is then the executor's id), plus the container's host name
# and network address (and 127.0.0.1 / localhost for the masters, whose ports are published) for
# tools that check the real host.
#
# Environment:
#   TRIAD_BIN    the triad binary to run (default target/release/triad, else `triad` on PATH)
#   TRIAD_IMAGE  image used to hand the keys to uid 10001 when not run as root (default
#                triad:latest; build it first with docker/build.sh)
#   TRIAD_UID    the uid the containers run as (default 10001, as docker/build.sh makes it)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:-$here/credentials}"
uid="${TRIAD_UID:-10001}"
image="${TRIAD_IMAGE:-triad:latest}"

die() { echo "credentials.sh: $*" >&2; exit 1; }

triad="${TRIAD_BIN:-}"
if [[ -z "$triad" ]]; then
  if [[ -x "$repo/target/release/triad" ]]; then triad="$repo/target/release/triad"
  else triad="$(command -v triad || true)"; fi
fi
[[ -n "$triad" && -x "$triad" ]] || die "no triad binary: cargo build --release, or set TRIAD_BIN"

[[ -e "$out/ca/ca.pem" || -e "$out/etc/master.toml" ]] \
  && die "$out already holds credentials: remove it (or choose another directory) to make new ones"

install -d -m 700 "$out/ca" "$out/tokens"
install -d -m 755 "$out/etc" "$out/etc/tls"
out="$(cd "$out" && pwd)"   # absolute, for the bind mount below
ca="$out/ca"

"$triad" tls ca create --dir "$ca" >/dev/null
for i in 1 2 3; do
  "$triad" tls cert create --dir "$ca" --role master --name "master$i" \
    --host "master$i" --host "172.28.0.1$i" --host localhost --host 127.0.0.1 >/dev/null
done
for i in 1 2; do
  "$triad" tls cert create --dir "$ca" --role executor --name "executor$i" \
    --host "executor$i" --host "172.28.0.2$i" >/dev/null
done

# Tokens: the secret to tokens/, its [[auth.tokens]] entry (name, role, sha256) to auth.toml.
auth="$(mktemp)"
trap 'rm -f "$auth" "$auth.err"' EXIT
for role in admin client; do
  "$triad" token create --role "$role" --name "$role" --out "$out/tokens/$role.token" \
    >>"$auth" 2>"$auth.err" || die "triad token create failed: $(cat "$auth.err")"
  echo >>"$auth"
done

cp "$here/master.toml" "$out/etc/master.toml"
cat "$auth" >>"$out/etc/master.toml"
cat >"$out/etc/executor.toml" <<EOF
# The compose executors' config (made by cluster-config/docker/credentials.sh). Everything else is
# set by flags and TRIAD_MASTERS in docker-compose.yml; cluster-config/executor.toml documents
# every option.

# The cluster CA and this executor's certificate: TRIAD_EXECUTOR_TLS_CERT / _KEY set them per
# container. The name in the certificate (executor1, executor2) is the executor's id.
[tls]
ca = "/etc/triad/tls/ca.pem"
cert = "/etc/triad/tls/executor-executor1.pem"
key = "/etc/triad/tls/executor-executor1.key"

# Tokens the worker API accepts for ReadOutput (triad job logs): the same as the masters'.
[auth]
EOF
cat "$auth" >>"$out/etc/executor.toml"
chmod 644 "$out/etc/master.toml" "$out/etc/executor.toml"

install -m 644 "$ca/ca.pem" "$out/etc/tls/ca.pem"
keys=()
for f in "$ca"/master-*.pem "$ca"/executor-*.pem; do
  base="$(basename "$f" .pem)"
  install -m 644 "$f" "$out/etc/tls/$base.pem"
  install -m 600 "$ca/$base.key" "$out/etc/tls/$base.key"
  keys+=("$base.key")
done

# The keys belong to the containers' user, which must read them (mode 0600 keeps them from
# everyone else on the host).
if [[ $(id -u) == 0 ]]; then
  (cd "$out/etc/tls" && chown "$uid:$uid" "${keys[@]}")
elif command -v docker >/dev/null && docker image inspect "$image" >/dev/null 2>&1; then
  docker run --rm --user 0:0 --entrypoint /bin/busybox -v "$out/etc/tls:/tls" "$image" \
    sh -c "cd /tls && chown $uid:$uid ${keys[*]}" \
    || die "could not hand the keys in $out/etc/tls to uid $uid through $image"
else
  die "the keys in $out/etc/tls must belong to uid $uid: run as root, or build $image first (docker/build.sh)"
fi

echo "credentials for the compose cluster in $out:"
echo "  containers: $out/etc (mounted at /etc/triad)"
echo "  CA:         $ca/ca.pem (key $ca/ca.key: keep it safe)"
echo "  tokens:     $out/tokens/admin.token, $out/tokens/client.token"
echo "export TRIAD_CA=$out/etc/tls/ca.pem TRIAD_TOKEN=\$(cat $out/tokens/admin.token)"
