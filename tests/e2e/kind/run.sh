#!/usr/bin/env bash
# `make e2e-kind`: the e2e suite against a kind cluster instead of the local control plane.
#
#   1. build the image (Dockerfile) as fleetsync:e2e
#   2. create a kind cluster (tests/e2e/kind/cluster.yaml), unless it exists
#   3. load the image into its node
#   4. run tests/e2e with FLEETSYNC_E2E_CLUSTER=kubeconfig: the fixtures `helm install`
#      charts/fleetsync (controller and workers from the loaded image), start the simulator,
#      PostgreSQL and moto on the host's address on the kind network, and run the same tests.
#   5. delete the cluster (KEEP_CLUSTER=1 keeps it for debugging)
#
# Needs Docker (a running engine), Go (kind and kubectl are built into ~/.cache/fleetsync),
# PostgreSQL's server binaries and `make install`. Linux only: the host must be reachable
# from pods at the kind network's gateway (Docker Desktop puts the engine in a VM).
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"
name=${KIND_CLUSTER_NAME:-fleetsync-e2e}
image=${FLEETSYNC_E2E_IMAGE:-fleetsync:e2e}
work=$(mktemp -d -t fleetsync-kind-XXXXXX)
kubeconfig="$work/kubeconfig"

docker info >/dev/null 2>&1 || { echo "e2e-kind: no Docker engine answers 'docker info'" >&2; exit 2; }
kind=$(bash tests/tools/kind.sh)
bin=$(bash tests/e2e/controlplane/build.sh | tail -1)  # kubectl of the pinned release

phase() { echo "== e2e-kind: $*" >&2; }
start=$(date +%s)
phase "building $image"
docker build -t "$image" .

if ! "$kind" get clusters | grep -qx "$name"; then
  phase "creating kind cluster $name"
  "$kind" create cluster --name "$name" --config tests/e2e/kind/cluster.yaml --wait 180s \
    ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
fi
cleanup() {
  if [[ "${KEEP_CLUSTER:-0}" != 1 ]]; then "$kind" delete cluster --name "$name"; fi
  rm -rf "$work"
}
trap cleanup EXIT
"$kind" get kubeconfig --name "$name" > "$kubeconfig"
phase "loading $image into $name"
"$kind" load docker-image "$image" --name "$name"

# The host's address on the kind network (its gateway): where pods reach the test servers.
host=${FLEETSYNC_E2E_HOST:-$(docker network inspect kind \
  -f '{{range .IPAM.Config}}{{println .Gateway}}{{end}}' | grep -m1 -E '^[0-9]+(\.[0-9]+){3}$')}
phase "running tests/e2e against $name (pods reach this host at $host)"
PATH="$bin:$PATH" \
FLEETSYNC_E2E_CLUSTER=kubeconfig \
FLEETSYNC_E2E_KUBECONFIG="$kubeconfig" \
FLEETSYNC_E2E_HOST="$host" \
FLEETSYNC_E2E_IMAGE="$image" \
  .venv/bin/pytest tests/e2e ${PYTEST_ARGS:-}
phase "done in $(( $(date +%s) - start ))s"
