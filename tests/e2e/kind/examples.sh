#!/usr/bin/env bash
# The examples on a kind cluster, as a user applies them (run.sh calls this after the suite;
# usage: examples.sh <kubectl> <kubeconfig>; the image ghcr.io/fleetsync/fleetsync:<appVersion>
# must be loaded into the node):
#   1. `kubectl apply -f examples/simulator/`: the examples' namespaces (restricted Pod
#      Security Standard) and the vendor simulator as a Deployment and Service;
#   2. a pod without the restricted settings is refused in the examples' namespace; a pod
#      from the same image, restricted, fetches the simulator's stats through the
#      Service's DNS name (CoreDNS, kube-proxy);
#   3. the cities example (its PostgreSQL sink, Secret plans-db) run to completion: the
#      hourly tier's job template as a SyncJob, its url pointed at the simulator's Service,
#      written by the worker pods into the PostgreSQL of examples/simulator/ (81 rows). The
#      controller is the chart's release the suite installed (it watches energy);
#   4. `kubectl apply -f examples/<x>/` for every example: each must be accepted as written.
#      What each run then does is printed, not asserted: the examples still name
#      http://127.0.0.1:8765 and SQLite sinks, their addresses for `fleetsync run`.
set -euo pipefail
kubectl=$1 kubeconfig=$2
k() { "$kubectl" --kubeconfig="$kubeconfig" "$@"; }
root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"

k apply -f examples/simulator/
k -n fleetsync-simulator rollout status deployment/simulator --timeout=180s
k -n fleetsync-simulator rollout status deployment/postgres --timeout=180s
# The namespace label is enforced: a pod without the restricted settings is refused.
if refused=$(k -n energy run pss-check --image=busybox --restart=Never --dry-run=server 2>&1); then
  echo "examples.sh: a root pod was admitted to namespace energy: restricted not enforced" >&2
  exit 1
fi
echo "examples.sh: restricted enforced: $refused"
[[ "$refused" == *'violates PodSecurity "restricted'* ]]

k -n fleetsync-simulator delete pod dns-probe --ignore-not-found --wait=true >/dev/null
image=$(k -n fleetsync-simulator get deployment simulator -o jsonpath='{.spec.template.spec.containers[0].image}')
k apply -f - <<POD
apiVersion: v1
kind: Pod
metadata: {name: dns-probe, namespace: fleetsync-simulator}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: probe
      image: $image
      imagePullPolicy: IfNotPresent
      command:
        - python
        - -c
        - |
          import json, sys, time, urllib.request
          url = "http://simulator.fleetsync-simulator.svc:8765/_sim/stats"
          for attempt in range(1, 13):  # a fresh node's DNS and Service may lag: 60 s at most
              try:
                  stats = json.load(urllib.request.urlopen(url, timeout=5))
                  break
              except OSError as error:
                  print(f"attempt {attempt}: {error}", file=sys.stderr, flush=True)
                  time.sleep(5)
          else:
              sys.exit("the simulator was not reachable by its DNS name")
          print("vendors:", ",".join(sorted(stats["vendors"])))
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [ALL]}
POD
if ! k -n fleetsync-simulator wait pod/dns-probe --for=jsonpath='{.status.phase}'=Succeeded --timeout=120s; then
  echo "examples.sh: dns-probe did not succeed; its status, log and the namespace's events:" >&2
  k -n fleetsync-simulator get pod dns-probe -o jsonpath='{.status}' >&2 || true
  k -n fleetsync-simulator logs dns-probe >&2 || true
  k -n fleetsync-simulator get events --sort-by=.lastTimestamp >&2 || true
  k -n kube-system get pods -o wide >&2 || true
  exit 1
fi
out=$(k -n fleetsync-simulator logs dns-probe)
echo "examples.sh: simulator by DNS name from a restricted pod: $out"
# The log holds the retries' lines (stderr) too: the answer is its last line.
if [[ "$(tail -n 1 <<<"$out")" != "vendors: devices,huawei,meters,plans,solaredge,sungrow" ]]; then
  echo "examples.sh: dns-probe's answer is not the simulator's vendor list" >&2
  exit 1
fi
k -n fleetsync-simulator delete pod dns-probe --wait=false >/dev/null

# The cities example end to end on the cluster's own PostgreSQL.
k -n fleetsync-system wait deployment --all --for=condition=Available --timeout=120s >/dev/null \
  || { echo "examples.sh: no controller in fleetsync-system (run.sh's suite installs it)" >&2; exit 1; }
k -n energy delete syncjob cities-kind --ignore-not-found --wait=true >/dev/null
.venv/bin/python - examples/cities/hourly.yaml <<'PY' | k apply -f -
import sys, yaml
schedule = yaml.safe_load(open(sys.argv[1]))
spec = schedule["spec"]["jobTemplate"]["spec"]
spec["source"]["http"]["url"] = spec["source"]["http"]["url"].replace(
    "http://127.0.0.1:8765", "http://simulator.fleetsync-simulator.svc:8765")
job = {"apiVersion": schedule["apiVersion"], "kind": "SyncJob",
       "metadata": {"name": "cities-kind", "namespace": schedule["metadata"]["namespace"]},
       "spec": spec}
print(yaml.safe_dump(job))
PY
if ! k -n energy wait syncjob/cities-kind --for=condition=Complete --timeout=180s; then
  k -n energy get syncjob cities-kind -o yaml >&2
  exit 1
fi
phase=$(k -n energy get syncjob cities-kind -o jsonpath='{.status.phase}')
rows=$(k -n fleetsync-simulator exec deployment/postgres -- \
  psql -h /tmp -U fleetsync -d postgres -tAc 'select count(*) from electricity_plans')
echo "examples.sh: cities (hourly tier) into PostgreSQL in the cluster: $phase, $rows rows"
[[ "$phase" == Succeeded && "$rows" == 81 ]]
k -n energy delete syncjob cities-kind --wait=false >/dev/null

for example in examples/*/; do
  [[ "$example" == examples/simulator/ ]] && continue
  echo "examples.sh: kubectl apply -f $example"
  k apply -f "$example"
done
sleep "${EXAMPLES_OBSERVE_SECONDS:-20}"
echo "examples.sh: after ${EXAMPLES_OBSERVE_SECONDS:-20}s (not asserted; see the header):"
k get syncjobs,syncschedules -A
for example in examples/*/; do
  [[ "$example" == examples/simulator/ ]] && continue
  k delete -f "$example" --ignore-not-found --wait=false >/dev/null
done
