#!/usr/bin/env bash
# The kind node's base image (what kind's images/base Dockerfile builds from source), from
# Debian's packages instead: systemd, containerd, runc, CNI plugins and the node tools, plus
# kind's own files (entrypoint, systemd units, containerd config) from the kind Go module in
# the module cache and crictl built from its Go module. Tagged fleetsync-kind-base:<hash>
# and fleetsync-kind-base:bookworm; prints the image name last.
#
# Differences from upstream's base, each deliberate:
# - Debian's containerd (1.6) and runc (1.1) instead of source builds of the latest; kind's
#   config.toml is version 2, which 1.6 reads. The kubelet still accepts a CRI without the
#   RuntimeConfig call (it falls back to its own cgroupDriver setting).
# - Debian's CNI plugins live in /usr/lib/cni; /opt/cni/bin links there.
# - The sandbox (pause) image is the one kubeadm of the pinned release lists, so one pause
#   image serves both.
# - No fuse-overlayfs, NFS or iSCSI tools (rootless and storage tests only).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"
kind_module=${KIND_MODULE:?the kind module directory, e.g. \$(go env GOMODCACHE)/sigs.k8s.io/kind@v0.33.0}
crictl=${CRICTL:?path of a crictl binary (go-tools.sh)}
pause_image=${PAUSE_IMAGE:?the pause image kubeadm lists, e.g. registry.k8s.io/pause:3.10.2}
files="$kind_module/images/base/files"
[[ -x "$files/usr/local/bin/entrypoint" || -f "$files/usr/local/bin/entrypoint" ]] \
  || { echo "kind-base.sh: no kind base files in $files" >&2; exit 1; }

packages=systemd,systemd-sysv,dbus,containerd,runc,containernetworking-plugins
packages+=,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2
packages+=,pigz,e2fsprogs,bash,ca-certificates,curl,jq,procps
# Runs on the host with the new root filesystem in $1 (mmdebstrap customize hook).
read -r -d '' hook <<HOOK || true
set -e
cp -r "$files"/. "\$1"/
chmod 0755 "\$1"/usr/local/bin/* "\$1"/kind/bin/*
chmod -R u+w,go-w "\$1"/kind "\$1"/etc/systemd/system "\$1"/etc/containerd "\$1"/etc/default "\$1"/etc/sysctl.d
install -m 0755 "$crictl" "\$1"/usr/local/bin/crictl
ln -sf /usr/bin/containerd "\$1"/usr/local/bin/containerd
mkdir -p "\$1"/opt/cni && rm -rf "\$1"/opt/cni/bin && ln -s /usr/lib/cni "\$1"/opt/cni/bin
sed -i 's|sandbox_image = .*|sandbox_image = "$pause_image"|' "\$1"/etc/containerd/config.toml
chroot "\$1" sh -c 'ctr oci spec | jq ".hooks.createContainer[.hooks.createContainer|length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" | jq "del(.process.rlimits)" > /etc/containerd/cri-base.json'
find "\$1"/lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete
rm -f "\$1"/lib/systemd/system/multi-user.target.wants/* "\$1"/etc/systemd/system/*.wants/*
rm -f "\$1"/lib/systemd/system/local-fs.target.wants/* "\$1"/lib/systemd/system/sockets.target.wants/*udev*
rm -f "\$1"/lib/systemd/system/sockets.target.wants/*initctl* "\$1"/lib/systemd/system/basic.target.wants/*
echo ReadKMsg=no >> "\$1"/etc/systemd/journald.conf
chroot "\$1" systemctl enable kubelet.service containerd.service undo-mount-hacks.service
chroot "\$1" systemctl mask systemd-binfmt.service
mkdir -p "\$1"/etc/kubernetes/manifests
HOOK
key=$(inputs_key "$debian_suite" "$packages" "$hook" "$crictl" "$files/usr/local/bin/entrypoint" "$files/etc/containerd/config.toml")
image=fleetsync-kind-base:bookworm
if ! have_image "fleetsync-kind-base:$key"; then
  tar="$images_cache/kind-base-$key.tar"
  [[ -f "$tar" ]] || debian_rootfs "$tar" "$packages" --customize-hook="$hook"
  import_image "$tar" "fleetsync-kind-base:$key" 'ENV container=docker' \
    'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]'
fi
docker tag "fleetsync-kind-base:$key" "$image"
echo "$image"
