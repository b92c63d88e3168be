#!/usr/bin/env bash
# The system packages the test suite needs, installed from Debian when this machine can
# (root with apt-get); otherwise stop at once, naming the package and the command.
#   postgresql  - the tests start their own PostgreSQL server (initdb, pg_ctl)
#   prometheus  - promtool, for the chart's alert rule tests
#   docker.io   - the Docker engine (dockerd) and CLI for the kind cluster (make e2e-kind)
#   mmdebstrap  - the Debian root filesystems of the locally built images (no registry)
#   gcc, libc6-dev - the kind node's static pause binary
set -euo pipefail

need=()
have_pg() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null; }
have_pg || need+=(postgresql)
command -v promtool >/dev/null || need+=(prometheus)
command -v dockerd >/dev/null || need+=(docker.io)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v gcc >/dev/null || need+=(gcc)
compgen -G "/usr/lib/*/libc.a" >/dev/null || need+=(libc6-dev)  # gcc -static
((${#need[@]})) || exit 0

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "system-deps.sh: installing ${need[*]} from Debian" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  exit 0
fi
echo "system-deps.sh: missing system packages: ${need[*]}" >&2
echo "  install them with: sudo apt-get install ${need[*]}" >&2
exit 1
