#!/usr/bin/env bash
# Builds the triad container image locally, with no base image and no registry:
#
#   cluster-config/docker/build.sh            # -> image triad:latest
#
# It builds the release binary (cargo build --release), then assembles a root filesystem in a
# temporary folder holding
#   /usr/local/bin/triad            the binary (debug info stripped)
#   the shared libraries ldd lists, the dynamic loader
#   /bin/busybox + applets          /bin/sh, echo, sleep, cat, ... so jobs (and --shell jobs) run
#   /etc/passwd, group, nsswitch    user "triad" (uid/gid 10001), which the image runs as
#   /tmp (1777), /var/lib/triad     the data / work directory (owned by triad)
# and turns it into an image with `docker import`.
#
# Environment:
#   TRIAD_IMAGE    image name (default triad:latest)
#   TRIAD_BIN      use this binary instead of building target/release/triad
#   TRIAD_BUSYBOX  busybox binary to use (default: `command -v busybox`; Debian: busybox-static)
#
# Needs: docker, ldd, GNU tar, a busybox binary (apt-get install busybox-static), and cargo
# unless TRIAD_BIN is set.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
image="${TRIAD_IMAGE:-triad:latest}"
uid=10001

die() { echo "build.sh: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker not found"
command -v ldd >/dev/null || die "ldd not found (libc-bin)"

if [[ -n "${TRIAD_BIN:-}" ]]; then
  bin="$TRIAD_BIN"
else
  command -v cargo >/dev/null || die "cargo not found: install Rust or set TRIAD_BIN to a built triad binary"
  (cd "$repo" && cargo build --release --bin triad)
  bin="$repo/target/release/triad"
fi
[[ -x "$bin" ]] || die "no executable triad binary at $bin"

busybox="${TRIAD_BUSYBOX:-$(command -v busybox || true)}"
[[ -n "$busybox" && -x "$busybox" ]] || die "busybox not found: apt-get install busybox-static (or set TRIAD_BUSYBOX)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root"/{usr/local/bin,bin,etc,tmp,root,var/lib/triad}
chmod 1777 "$root/tmp"
chmod 700 "$root/root"

# Copies the shared libraries (and the loader) an executable links to their own paths in the rootfs.
copy_libs() {
  local exe="$1" line path
  # A static executable makes ldd print "not a dynamic executable" and fail: nothing to copy.
  ldd "$exe" >"$work/ldd.txt" 2>&1 || return 0
  while read -r line; do
    case "$line" in
      *"=> /"*) path="${line#*=> }"; path="${path%% (*}" ;;   # libc.so.6 => /lib/.../libc.so.6 (0x..)
      /*) path="${line%% (*}" ;;                             # /lib64/ld-linux-x86-64.so.2 (0x..)
      *) continue ;;                                         # linux-vdso.so.1, statically linked
    esac
    [[ -e "$path" ]] || die "ldd names $path for $exe but it does not exist"
    mkdir -p "$root$(dirname "$path")"
    cp -L "$path" "$root$path"
  done <"$work/ldd.txt"
}

cp "$bin" "$root/usr/local/bin/triad"
if command -v strip >/dev/null; then
  strip --strip-debug "$root/usr/local/bin/triad"
fi
chmod 755 "$root/usr/local/bin/triad"
copy_libs "$bin"

cp "$busybox" "$root/bin/busybox"
chmod 755 "$root/bin/busybox"
copy_libs "$busybox"
applets="sh ash echo printf sleep cat ls env true false test [ date head tail wc grep sed awk cut tr
  sort uniq tee mkdir rm cp mv ln touch pwd id hostname ps kill seq expr basename dirname uname
  nproc timeout xargs find du df yes"
have="$("$root/bin/busybox" --list)"
for a in $applets; do
  grep -qxF -- "$a" <<<"$have" || die "$busybox has no applet $a"
  ln -s busybox "$root/bin/$a"
done

cat >"$root/etc/passwd" <<EOF
root:x:0:0:root:/root:/bin/sh
triad:x:$uid:$uid:triad:/var/lib/triad:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<EOF
root:x:0:
triad:x:$uid:
nogroup:x:65534:
EOF
cat >"$root/etc/nsswitch.conf" <<EOF
passwd: files
group:  files
hosts:  files dns
EOF

# Everything owned by root except the data directory, which belongs to the triad user (a named
# volume mounted there starts as a copy of it, ownership included).
tar_img="$work/rootfs.tar"
tar -C "$root" --numeric-owner --owner=0 --group=0 --sort=name --exclude=./var/lib/triad -cf "$tar_img" .
tar -C "$root" --numeric-owner --owner=$uid --group=$uid -rf "$tar_img" ./var/lib/triad

old="$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
docker import \
  --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
  --change "USER $uid:$uid" \
  --change 'WORKDIR /var/lib/triad' \
  --change 'EXPOSE 7101 7201 9101' \
  --change 'ENTRYPOINT ["/usr/local/bin/triad"]' \
  --change 'CMD ["--help"]' \
  "$tar_img" "$image" >/dev/null
new="$(docker image inspect -f '{{.Id}}' "$image")"
# Drop the image this one replaced, unless a container still uses it.
if [[ -n "$old" && "$old" != "$new" ]]; then
  docker image rm "$old" >/dev/null 2>&1 || true
fi

# Smoke test: the binary starts inside the image (libraries and loader are all there).
version="$(docker run --rm "$image" --version)" || die "the image does not run: docker run --rm $image --version failed"
docker run --rm --entrypoint /bin/sh "$image" -c 'echo ok' >/dev/null || die "the image has no working /bin/sh"
size="$(docker image inspect -f '{{.Size}}' "$image")"
echo "built $image ($version, $((size / 1024 / 1024)) MiB)"
