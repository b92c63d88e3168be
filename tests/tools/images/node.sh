#!/usr/bin/env bash
# The kind node image, assembled as `kind build node-image` does (kind's
# pkg/build/nodeimage/buildcontext.go), but from local images only: kind's builder fetches
# the CNI (kindnetd) and storage images from registries with `ctr content fetch`, and those
# are not published as Go modules here. This cluster uses no kindnetd (the kind config
# disables the default CNI and mounts a ptp CNI config, tests/e2e/kind/cni.conflist) and the
# fallback host-path StorageClass kind installs when the node has no storage manifest.
#
# Steps: start the base image (kind-base.sh) with `sleep`; copy kubeadm, kubelet, kubectl
# into /usr/bin; write /kind/version; put node-entrypoint in front of kind's entrypoint; run
# containerd inside and import the component images (components.sh) pinned, unpacked lazily;
# stop containerd; `docker commit` with kind's entrypoint.
# Usage: node.sh <base image> <k8s bin dir> <components archive>; prints the image last.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"
base=$1 k8s_bin=$2 components=$3
release=$("$k8s_bin/kubeadm" version -o short)
key=$(inputs_key "$0" "$here/node-entrypoint" "$(docker image inspect -f '{{.Id}}' "$base")" \
  "$k8s_bin/kubelet" "$k8s_bin/kubeadm" "$components")
image="fleetsync-kind-node:$release-$key"
if have_image "$image"; then echo "$image"; exit 0; fi
start=$(date +%s)
id="fleetsync-node-build-$$"
trap 'docker rm -f -v "$id" >/dev/null 2>&1 || true' EXIT
docker run -d --name "$id" --entrypoint=sleep --security-opt seccomp=unconfined "$base" infinity >/dev/null
for b in kubeadm kubelet kubectl; do
  docker cp "$k8s_bin/$b" "$id:/usr/bin/$b"
  docker exec "$id" chown root:root "/usr/bin/$b"
  docker exec "$id" chmod 0755 "/usr/bin/$b"
done
docker exec "$id" sh -c "echo $release > /kind/version"
docker exec "$id" mv /usr/local/bin/entrypoint /usr/local/bin/entrypoint.kind
docker cp "$here/node-entrypoint" "$id:/usr/local/bin/entrypoint"
docker exec "$id" chmod 0755 /usr/local/bin/entrypoint
docker exec "$id" bash -c 'nohup containerd > /var/log/containerd-build.log 2>&1 &'
docker exec "$id" bash -c 'for i in $(seq 30); do ctr version >/dev/null 2>&1 && exit 0; sleep 1; done; cat /var/log/containerd-build.log; exit 1'
docker exec -i "$id" ctr --namespace=k8s.io images import --label=io.cri-containerd.pinned=pinned \
  --all-platforms --no-unpack --digests - < "$components"
docker exec "$id" ctr --namespace=k8s.io images ls -q | grep -v '@sha256:' >&2
# `sleep` as PID 1 reaps nothing: a stopped containerd stays a zombie, which counts as gone.
docker exec "$id" bash -c 'pkill -x containerd
  for i in $(seq 30); do ps -C containerd -o stat= | grep -qv Z || exit 0; sleep 1; done; exit 1'
docker exec "$id" rm -f /var/log/containerd-build.log
docker commit --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' \
  --change 'ENV HTTP_PROXY="" HTTPS_PROXY="" NO_PROXY=""' "$id" "$image" >/dev/null
log "node image $image built in $(( $(date +%s) - start ))s"
echo "$image"
