#!/usr/bin/env bash
# Build the e2e control plane from Go modules: kube-apiserver, kube-controller-manager,
# kubectl (k8s.io/kubernetes) and etcd (go.etcd.io/etcd/server/v3, the version
# k8s.io/kubernetes itself requires). Binaries are cached outside the repository under
# ${FLEETSYNC_CACHE:-~/.cache/fleetsync}/controlplane/<release>-<hash of go.mod/go.sum>/bin,
# so a second run (or a second clone) does not rebuild. Prints the bin directory last.
#
# Version ldflags follow upstream's hack/lib/version.sh: without them /version reports a
# placeholder (v0.0.0-master) and `kubectl version` fails its skew check.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

release=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' go.mod)
etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" && $2 ~ /^v/ {print $2; exit}' go.mod)
[[ -n "$release" && -n "$etcd_version" ]] || { echo "build.sh: cannot read versions from go.mod" >&2; exit 1; }
key=$(cat go.mod go.sum build.sh | sha256sum | cut -c1-12)
cache="${FLEETSYNC_CACHE:-$HOME/.cache/fleetsync}/controlplane/${release}-${key}"
bin="$cache/bin"

if [[ -x "$bin/kube-apiserver" && -x "$bin/kube-controller-manager" && -x "$bin/etcd" && -x "$bin/kubectl" ]]; then
  echo "build.sh: control plane $release already built" >&2
  echo "$bin"
  exit 0
fi

mkdir -p "$cache"
tmp="$cache/bin.partial"
rm -rf "$tmp" && mkdir -p "$tmp"

# Semver parts for component-base/version, as hack/lib/version.sh derives them.
major=${release#v}; major=${major%%.*}
minor=${release#v*.}; minor=${minor%%.*}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
v=k8s.io/component-base/version
cv=k8s.io/client-go/pkg/version
ldflags="-s -w"
for pkg in "$v" "$cv"; do
  ldflags+=" -X $pkg.gitVersion=$release -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit=0000000000000000000000000000000000000000"
  ldflags+=" -X $pkg.buildDate=$build_date"
done

export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}"
start=$(date +%s)
for cmd in kube-apiserver kube-controller-manager kubectl; do
  s=$(date +%s)
  go build -trimpath -ldflags "$ldflags" -o "$tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd"
  echo "build.sh: $cmd built in $(( $(date +%s) - s ))s" >&2
done
s=$(date +%s)
go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
echo "build.sh: etcd $etcd_version built in $(( $(date +%s) - s ))s" >&2

rm -rf "$bin" && mv "$tmp" "$bin"
echo "build.sh: control plane $release built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
