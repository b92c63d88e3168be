#!/usr/bin/env bash
# Build helm from its Go module (there is no Debian package) into the cache outside the
# repository; prints the binary's path last. Used by the chart tests and the e2e suite.
set -euo pipefail
version=v3.22.0
dir="${FLEETSYNC_CACHE:-$HOME/.cache/fleetsync}/tools/helm-$version"
if [[ ! -x "$dir/helm" ]]; then
  start=$(date +%s)
  mkdir -p "$dir"
  CGO_ENABLED=0 GOBIN="$dir" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version" \
    "helm.sh/helm/v3/cmd/helm@$version"
  echo "helm.sh: helm $version built in $(( $(date +%s) - start ))s" >&2
fi
echo "$dir/helm"
