#!/usr/bin/env bash
# Build kind from its Go module into the cache outside the repository; prints the binary's
# path last. Used by `make e2e-kind` (tests/e2e/kind/run.sh).
set -euo pipefail
version=v0.33.0  # its default node image is kindest/node:v1.37.0
dir="${FLEETSYNC_CACHE:-$HOME/.cache/fleetsync}/tools/kind-$version"
if [[ ! -x "$dir/kind" ]]; then
  start=$(date +%s)
  mkdir -p "$dir"
  CGO_ENABLED=0 GOBIN="$dir" go install -trimpath "sigs.k8s.io/kind@$version"
  echo "kind.sh: kind $version built in $(( $(date +%s) - start ))s" >&2
fi
echo "$dir/kind"
