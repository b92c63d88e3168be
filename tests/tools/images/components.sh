#!/usr/bin/env bash
# The images a kubeadm node runs, built locally and tagged with the names `kubeadm config
# images list` gives for the pinned release (kind pre-loads them into the node image):
#   kube-apiserver, kube-controller-manager, kube-scheduler, etcd, coredns: the static binary
#     alone on a minimal root filesystem (lib.sh static_rootfs), like upstream's distroless;
#   kube-proxy: Debian minbase with iptables, nftables and conntrack (it drives them);
#   pause: pause.c from the k8s.io/kubernetes module, compiled static.
# Usage: components.sh <k8s bin dir> <etcd binary> <coredns binary>; writes one
# `docker save` archive of all of them and prints its path last.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"
k8s_bin=$1 etcd=$2 coredns=$3
kubeadm="$k8s_bin/kubeadm"
release=$("$kubeadm" version -o short)
mapfile -t wanted < <("$kubeadm" config images list --kubernetes-version "$release")
image_for() { printf '%s\n' "${wanted[@]}" | grep -m1 "/$1:"; }
path_env='ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin'

key=$(inputs_key "$0" "$here/lib.sh" "${wanted[@]}" "$k8s_bin/kube-apiserver" "$etcd" "$coredns")
archive="$images_cache/components-$key.tar"
if [[ -f "$archive" ]]; then echo "$archive"; exit 0; fi
start=$(date +%s)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for c in kube-apiserver kube-controller-manager kube-scheduler; do
  static_rootfs "$work/$c.tar" "$k8s_bin/$c:/usr/local/bin/$c"
  import_image "$work/$c.tar" "$(image_for "$c")" "$path_env" "ENTRYPOINT [\"/usr/local/bin/$c\"]"
done
static_rootfs "$work/etcd.tar" "$etcd:/usr/local/bin/etcd"
import_image "$work/etcd.tar" "$(image_for etcd)" "$path_env" 'ENTRYPOINT ["/usr/local/bin/etcd"]'
static_rootfs "$work/coredns.tar" "$coredns:/coredns"
import_image "$work/coredns.tar" "$(image_for coredns)" "$path_env" 'ENTRYPOINT ["/coredns"]'

# pause.c of the same release, from the module k8s-binaries.sh built from.
pause_src="$(go env GOMODCACHE)/k8s.io/kubernetes@$release/build/pause/linux/pause.c"
pause_tag=$(image_for pause); pause_tag=${pause_tag##*:}
gcc -Os -static -Wall -DVERSION="$pause_tag" -o "$work/pause" "$pause_src"
strip "$work/pause"
static_rootfs "$work/pause.tar" "$work/pause:/pause"
import_image "$work/pause.tar" "$(image_for pause)" 'USER 65535:65535' 'ENTRYPOINT ["/pause"]'

proxy_packages=iptables,nftables,conntrack,kmod,ca-certificates
proxy_rootfs="$images_cache/kube-proxy-rootfs-$(inputs_key "$debian_suite" "$proxy_packages").tar"
[[ -f "$proxy_rootfs" ]] || debian_rootfs "$proxy_rootfs" "$proxy_packages"
cp "$proxy_rootfs" "$work/kube-proxy.tar"
mkdir -p "$work/kp/usr/local/bin" && cp "$k8s_bin/kube-proxy" "$work/kp/usr/local/bin/"
tar -C "$work/kp" --owner=0 --group=0 -rf "$work/kube-proxy.tar" ./usr/local/bin/kube-proxy
import_image "$work/kube-proxy.tar" "$(image_for kube-proxy)" "$path_env" 'ENTRYPOINT ["/usr/local/bin/kube-proxy"]'

docker save -o "$archive.partial" "${wanted[@]}"
mv "$archive.partial" "$archive"
log "components for $release built in $(( $(date +%s) - start ))s: ${wanted[*]}"
echo "$archive"
