#!/usr/bin/env bash
# Build the node binaries of the pinned Kubernetes release (kubelet, kubeadm, kubectl,
# kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy) from Go modules, with
# the module of tests/e2e/controlplane (same release, same replacements), into
# ${FLEETSYNC_CACHE:-~/.cache/fleetsync}/kind/k8s-<release>-<hash>/bin. Prints that directory last.
#
# The control-plane module lists only what the process control plane needs as tools; the
# other commands' packages come from the same k8s.io/kubernetes module version, so a copy of
# its go.mod/go.sum in the cache is enough (`-mod=mod` records any missing sums in the copy,
# never in the repository).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mod="$here/../../e2e/controlplane"
release=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$mod/go.mod")
[[ -n "$release" ]] || { echo "k8s-binaries.sh: cannot read the release from $mod/go.mod" >&2; exit 1; }
key=$(cat "$mod/go.mod" "$mod/go.sum" "$0" | sha256sum | cut -c1-12)
cache="${FLEETSYNC_CACHE:-$HOME/.cache/fleetsync}/kind/k8s-${release}-${key}"
bin="$cache/bin"
cmds=(kubelet kubeadm kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy)

done_all=1
for c in "${cmds[@]}"; do [[ -x "$bin/$c" ]] || done_all=0; done
if [[ $done_all == 1 ]]; then
  echo "k8s-binaries.sh: $release already built" >&2
  echo "$bin"
  exit 0
fi

work="$cache/module" tmp="$cache/bin.partial"
rm -rf "$work" "$tmp" && mkdir -p "$work" "$tmp"
cp "$mod/go.mod" "$mod/go.sum" "$work/"
cd "$work"

# Version ldflags as upstream's hack/lib/version.sh sets them (kubeadm refuses to work with
# a placeholder version: it derives the image tags and the control-plane version from it).
major=${release#v}; major=${major%%.*}
minor=${release#v*.}; minor=${minor%%.*}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$release -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit=0000000000000000000000000000000000000000"
  ldflags+=" -X $pkg.buildDate=$build_date"
done

export CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
start=$(date +%s)
for c in "${cmds[@]}"; do
  s=$(date +%s)
  go build -trimpath -ldflags "$ldflags" -o "$tmp/$c" "k8s.io/kubernetes/cmd/$c"
  echo "k8s-binaries.sh: $c built in $(( $(date +%s) - s ))s" >&2
done
rm -rf "$bin" && mv "$tmp" "$bin"
echo "$release" > "$cache/version"
echo "k8s-binaries.sh: $release node binaries built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
