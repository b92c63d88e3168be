#!/usr/bin/env bash
# `make e2e-kind`: the e2e suite against a kind cluster instead of the local control plane,
# with every image built on this machine (no registry is needed; tests/e2e/kind/README.md):
#
#   1. node binaries (k8s-binaries.sh), CoreDNS and crictl (go-tools.sh) from Go modules
#   2. images: Debian bases by mmdebstrap (python-base.sh, kind-base.sh), the control-plane
#      component images (components.sh), the kind node image (node.sh), and the project's
#      Dockerfile as $image (BASE_IMAGE: the local Debian base unless FLEETSYNC_BASE_IMAGE)
#   3. a kind cluster (cluster.yaml), unless it exists, with bin/docker first on PATH for
#      kind (it swaps `--privileged`, which some machines refuse, for explicit capabilities)
#   4. the image loaded into the node
#   5. tests/e2e with FLEETSYNC_E2E_CLUSTER=kubeconfig: the fixtures `helm install`
#      charts/fleetsync (controller and workers from the loaded image), start the simulator,
#      PostgreSQL and moto on the host's address on the kind network, and run the same tests
#      (run.sh's arguments or PYTEST_ARGS, e.g. `-k NAME`, narrow them)
#   6. the examples applied as a user would (examples.sh), the simulator and PostgreSQL from
#      examples/simulator/ (PostgreSQL: a local stand-in for postgres:15-bookworm, postgres.sh)
#   7. the cluster deleted (KEEP_CLUSTER=1 keeps it for debugging)
#
# Everything slow is cached under ${FLEETSYNC_CACHE:-~/.cache/fleetsync} or kept as tagged
# images, so a second run goes straight to the cluster. Each phase prints its time.
# KIND_TESTS (test names, space-separated) runs those tests of tests/e2e/test_operator.py
# only; unset or empty, the whole file (`make test` sets it: the Makefile's KIND_TESTS).
#
# Needs Docker, Go, mmdebstrap, gcc, PostgreSQL's server binaries and `make install`; a
# missing one fails the run at once, naming it (tests/tools/system-deps.sh installs them).
# If no Docker engine answers, run.sh starts dockerd itself (as root, as the README does)
# and stops it on exit, after deleting the cluster; an engine already running is left alone.
# Linux only: pods reach the host at the kind network's gateway.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"
here=tests/e2e/kind
images=tests/tools/images
name=${KIND_CLUSTER_NAME:-fleetsync-e2e}
image=${FLEETSYNC_E2E_IMAGE:-fleetsync:e2e}
t0=$(date +%s); t=$t0
phase() { local now; now=$(date +%s); echo "== e2e-kind: $* (previous step $(( now - t ))s)" >&2; t=$now; }
fail() { echo "e2e-kind: $*" >&2; exit 2; }

missing=()
for c in docker go mmdebstrap gcc; do command -v "$c" >/dev/null || missing+=("$c"); done
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null \
  || missing+=("initdb (postgresql)")
[[ -x .venv/bin/pytest ]] || missing+=(".venv/bin/pytest (make install)")
((${#missing[@]} == 0)) || fail "missing: ${missing[*]} (bash tests/tools/system-deps.sh; make deps)"

work=$(mktemp -d -t fleetsync-kind-XXXXXX)
kubeconfig="$work/kubeconfig"
cluster_owned=0 dockerd_pid=
cleanup() {
  if [[ $cluster_owned == 1 && "${KEEP_CLUSTER:-0}" != 1 ]]; then kind delete cluster --name "$name" || true; fi
  rm -rf "$work"
  [[ -z "$dockerd_pid" ]] || stop_dockerd
}
trap cleanup EXIT

# The Docker engine: the one running, or one started here and stopped on exit.
start_dockerd() {
  [[ $(id -u) == 0 ]] || fail "no Docker engine answers 'docker info', and only root can start dockerd here"
  command -v dockerd >/dev/null || fail "no Docker engine answers 'docker info', and there is no dockerd (apt-get install docker.io)"
  local log="${TMPDIR:-/tmp}/fleetsync-dockerd.log"
  phase "starting dockerd (log: $log)"
  dockerd > "$log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && return 0
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 1
  done
  tail -20 "$log" >&2
  fail "dockerd did not answer 'docker info' within 60 s (log above)"
}
stop_dockerd() {
  kill -TERM "$dockerd_pid" 2>/dev/null || return 0
  for _ in $(seq 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 1; done
  kill -KILL "$dockerd_pid" 2>/dev/null || true
  wait "$dockerd_pid" 2>/dev/null || true
  echo "e2e-kind: stopped the dockerd it started" >&2
}
docker info >/dev/null 2>&1 || start_dockerd

phase "building kind, node binaries, CoreDNS, crictl"
kind_bin=$(bash tests/tools/kind.sh | tail -1)
kind_version=$(basename "$(dirname "$kind_bin")"); kind_version=${kind_version#kind-}
kind_module="$(go env GOMODCACHE)/sigs.k8s.io/kind@$kind_version"
cp_bin=$(bash tests/e2e/controlplane/build.sh | tail -1)   # etcd and kubectl
k8s_bin=$(bash "$images/k8s-binaries.sh" | tail -1)
coredns_version=$("$k8s_bin/kubeadm" config images list --kubernetes-version \
  "$("$k8s_bin/kubeadm" version -o short)" | sed -n 's|.*/coredns:||p')
mapfile -t tools < <(COREDNS_VERSION=$coredns_version bash "$images/go-tools.sh")
pause_image=$("$k8s_bin/kubeadm" config images list --kubernetes-version \
  "$("$k8s_bin/kubeadm" version -o short)" | grep /pause:)

phase "building images"
base_image=${FLEETSYNC_BASE_IMAGE:-$(bash "$images/python-base.sh" | tail -1)}
DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE_IMAGE=$base_image" -t "$image" . >/dev/null
kind_base=$(KIND_MODULE=$kind_module CRICTL="${tools[1]}/crictl" PAUSE_IMAGE=$pause_image \
  bash "$images/kind-base.sh" | tail -1)
components=$(bash "$images/components.sh" "$k8s_bin" "$cp_bin/etcd" "${tools[0]}/coredns" | tail -1)
postgres_image=$(bash "$images/postgres.sh" | tail -1)   # examples/simulator/'s PostgreSQL
node_image=${KIND_NODE_IMAGE:-$(bash "$images/node.sh" "$kind_base" "$k8s_bin" "$components" | tail -1)}

# kind resolves extraMounts against its working directory; make the CNI config's absolute.
sed "s|hostPath: tests/|hostPath: $root/tests/|" "$here/cluster.yaml" > "$work/cluster.yaml"
# kind with the docker wrapper first on PATH, writing its kubeconfig into $work (not ~/.kube).
kind() { PATH="$root/$here/bin:$PATH" KUBECONFIG="$work/kind-kubeconfig" "$kind_bin" "$@"; }
cluster_owned=1  # from here on, cleanup deletes the cluster (unless KEEP_CLUSTER=1)
reused=1
# A cluster left by an earlier run is reused only if its node still runs (an engine that
# stopped under it leaves a stopped node behind).
if kind get clusters 2>/dev/null | grep -qx "$name" \
  && [[ $(docker inspect -f '{{.State.Running}}' "$name-control-plane" 2>/dev/null) != true ]]; then
  phase "deleting $name: its node is not running"
  kind delete cluster --name "$name"
fi
if ! kind get clusters 2>/dev/null | grep -qx "$name"; then
  reused=0
  phase "creating kind cluster $name from $node_image"
  kind create cluster --name "$name" --config "$work/cluster.yaml" --image "$node_image" --wait 300s
fi
kind get kubeconfig --name "$name" > "$kubeconfig"
# The suite's namespaces (tests/e2e: SYSTEM_NS, NS, DOOMED), made here first so that the
# restricted Pod Security Standard is enforced on every pod the suite creates; the fixtures'
# `kubectl create namespace` finds them. On a kept cluster the last run's are removed first.
suite_namespaces=(fleetsync-system energy energy-doomed)
if [[ $reused == 1 ]]; then
  "$k8s_bin/kubectl" --kubeconfig="$kubeconfig" delete namespace "${suite_namespaces[@]:1}" \
    --ignore-not-found --wait=true
fi
for ns in "${suite_namespaces[@]}"; do
  "$k8s_bin/kubectl" --kubeconfig="$kubeconfig" create namespace "$ns" --dry-run=client -o yaml \
    | "$k8s_bin/kubectl" --kubeconfig="$kubeconfig" label --local -f - -o yaml \
        pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/warn=restricted \
    | "$k8s_bin/kubectl" --kubeconfig="$kubeconfig" apply -f -
done
# The examples name the image a release pushes (the chart's repository and appVersion).
release_image="ghcr.io/fleetsync/fleetsync:$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/fleetsync/Chart.yaml)"
docker tag "$image" "$release_image"
phase "loading $image, $release_image and $postgres_image into $name"
kind load docker-image "$image" "$release_image" "$postgres_image" --name "$name"

# The host's address on the kind network (its gateway): where pods reach the test servers.
host=${FLEETSYNC_E2E_HOST:-$(docker network inspect kind \
  -f '{{range .IPAM.Config}}{{println .Gateway}}{{end}}' | grep -m1 -E '^[0-9]+(\.[0-9]+){3}$')}
tests=(tests/e2e/test_operator.py)
if [[ -n "${KIND_TESTS:-}" ]]; then
  read -r -a names <<< "$KIND_TESTS"
  tests=("${names[@]/#/tests/e2e/test_operator.py::}")
fi
phase "running tests/e2e against $name (pods reach this host at $host)"
PATH="$k8s_bin:$PATH" \
FLEETSYNC_E2E_CLUSTER=kubeconfig \
FLEETSYNC_E2E_KUBECONFIG="$kubeconfig" \
FLEETSYNC_E2E_HOST="$host" \
FLEETSYNC_E2E_IMAGE="$image" \
  .venv/bin/pytest "${tests[@]}" ${PYTEST_ARGS:-} "$@"
phase "applying the examples (examples.sh)"
bash "$here/examples.sh" "$k8s_bin/kubectl" "$kubeconfig"
phase "done in $(( $(date +%s) - t0 ))s"
