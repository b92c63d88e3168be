# Shared by the image scripts in this directory (sourced, not run). Every image is built
# without a registry: Debian root filesystems from Debian's packages (mmdebstrap) or a few
# static binaries, turned into images with `docker import`. Tarballs are cached outside the
# repository; an image whose tag (a hash of its inputs) exists is not rebuilt.
# shellcheck shell=bash
images_cache="${FLEETSYNC_CACHE:-$HOME/.cache/fleetsync}/kind/images"
debian_suite=bookworm
debian_mirrors=(
  "deb http://deb.debian.org/debian $debian_suite main"
  "deb http://deb.debian.org/debian $debian_suite-updates main"
  "deb http://deb.debian.org/debian-security $debian_suite-security main"
)

log() { echo "images: $*" >&2; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# debian_rootfs <out.tar> <comma-separated packages> [mmdebstrap options...]
# A minbase root filesystem without documentation, man pages or apt lists.
debian_rootfs() {
  local out=$1 packages=$2; shift 2
  local s; s=$(date +%s)
  mkdir -p "$(dirname "$out")"
  mmdebstrap --variant=minbase --include="$packages" --quiet \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "$@" "$debian_suite" "${out%.tar}.partial.tar" "${debian_mirrors[@]}"
  mv "${out%.tar}.partial.tar" "$out"
  log "$(basename "$out") built in $(( $(date +%s) - s ))s ($(du -h "$out" | cut -f1))"
}

# static_rootfs <out.tar> <src>:<dest>...  A root filesystem holding only the given files
# (static binaries), /tmp, and passwd/group entries for root and the non-root user.
static_rootfs() {
  local out=$1; shift
  local dir; dir=$(mktemp -d)
  mkdir -p "$dir"/{etc,tmp,usr/local/bin,var/run}
  chmod 1777 "$dir/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$dir/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$dir/etc/group"
  echo 'hosts: files dns' > "$dir/etc/nsswitch.conf"
  local spec
  for spec in "$@"; do
    mkdir -p "$dir/$(dirname "${spec#*:}")"
    cp "${spec%%:*}" "$dir/${spec#*:}"
  done
  mkdir -p "$(dirname "$out")"
  tar -C "$dir" --owner=0 --group=0 -cf "$out" .
  rm -rf "$dir"
}

# import_image <tar> <image> [docker import -c changes...]
import_image() {
  local tar=$1 image=$2; shift 2
  local args=() c
  for c in "$@"; do args+=(-c "$c"); done
  docker import "${args[@]}" "$tar" "$image" >/dev/null
  log "imported $image"
}

# with_host_ca <image> <new image>: <image> plus this host's CA bundle. Where HTTPS goes
# through an intercepting proxy (as in CI), builds inside the image (pip) then trust what the
# host trusts. For local build images only; never pushed.
with_host_ca() {
  local dir; dir=$(mktemp -d)
  cp /etc/ssl/certs/ca-certificates.crt "$dir/"
  printf 'FROM %s\nCOPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n' "$1" > "$dir/Dockerfile"
  DOCKER_BUILDKIT=0 docker build -q -t "$2" "$dir" >/dev/null
  rm -rf "$dir"
}

# inputs_key <files or strings...>: 12 hex digits naming a build's inputs.
inputs_key() { { for x in "$@"; do if [[ -f "$x" ]]; then cat "$x"; else echo "$x"; fi; done; } | sha256sum | cut -c1-12; }
