#!/usr/bin/env bash
# Build the Go programs the kind node and its pods need that are not part of Kubernetes:
# CoreDNS (the version kubeadm of the pinned release deploys) and crictl (kind uses it in the
# node). Static binaries into ${FLEETSYNC_CACHE:-~/.cache/fleetsync}/kind/tools/<name>-<version>.
# Prints the directory of each, one per line: coredns first, then crictl.
set -euo pipefail
coredns_version=${COREDNS_VERSION:?set by the caller from kubeadm config images list}
crictl_version=v1.36.0  # cri-tools follows the Kubernetes minor
cache="${FLEETSYNC_CACHE:-$HOME/.cache/fleetsync}/kind/tools"
build() {  # build <dir> <package@version>
  local dir=$1 pkg=$2 s
  if [[ ! -d "$dir" ]]; then
    s=$(date +%s)
    mkdir -p "$dir.partial"
    CGO_ENABLED=0 GOBIN="$dir.partial" GOFLAGS=-buildvcs=false go install -trimpath -ldflags "-s -w" "$pkg"
    mv "$dir.partial" "$dir"
    echo "go-tools.sh: $pkg built in $(( $(date +%s) - s ))s" >&2
  fi
  echo "$dir"
}
build "$cache/coredns-$coredns_version" "github.com/coredns/coredns@$coredns_version"
build "$cache/crictl-$crictl_version" "sigs.k8s.io/cri-tools/cmd/crictl@$crictl_version"
