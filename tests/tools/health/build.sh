#!/usr/bin/env bash
# Build the health-verdict tool (kstatus + Argo CD's Lua runner, see main.go) into the cache
# outside the repository, keyed by a hash of its sources so an edit rebuilds it; prints the
# binary's path last. Used by tests/unit/test_health_tool.py and tests/e2e/test_health.py.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
key=$(cd "$here" && cat go.mod go.sum ./*.go | sha256sum | cut -c1-12)
dir="${FLEETSYNC_CACHE:-$HOME/.cache/fleetsync}/tools/health-$key"
if [[ ! -x "$dir/health" ]]; then
  start=$(date +%s)
  mkdir -p "$dir"
  (cd "$here" && CGO_ENABLED=0 nice -n 19 go build -trimpath -ldflags "-s -w" \
    -o "$dir/health.tmp" .)
  mv "$dir/health.tmp" "$dir/health"
  echo "health/build.sh: built in $(( $(date +%s) - start ))s" >&2
fi
echo "$dir/health"
