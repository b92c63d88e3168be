#!/usr/bin/env bash
# A local stand-in for the public postgres:15-bookworm image that examples/simulator/ names
# (the examples' PostgreSQL sink in a cluster), from Debian bookworm's postgresql-15 package:
# no registry is reachable in CI. It keeps the public image's interface that the manifest
# relies on: user `postgres` with uid/gid 999, the server's bin directory on PATH (initdb,
# postgres, psql, pg_isready). Tagged fleetsync-postgres:<hash> and postgres:15-bookworm;
# prints the public name last (run.sh loads it into the kind node under that name).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"
packages=postgresql-15,ca-certificates
# After the essential packages, before postgresql's postinst creates its user: uid/gid 999
# as in the public image (adduser then finds the user and keeps it).
read -r -d '' user_hook <<'HOOK' || true
set -e
echo 'postgres:x:999:999:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash' >> "$1"/etc/passwd
echo 'postgres:x:999:' >> "$1"/etc/group
[ ! -f "$1"/etc/shadow ] || echo 'postgres:*:20000:0:99999:7:::' >> "$1"/etc/shadow
HOOK
# The package's default cluster (made by its postinst) is not the container's: it starts
# its own in PGDATA.
cleanup_hook='rm -rf "$1"/var/lib/postgresql/15/main "$1"/etc/postgresql/15/main'
key=$(inputs_key "$debian_suite" "$packages" "$user_hook" "$cleanup_hook")
image=postgres:15-bookworm
if ! have_image "fleetsync-postgres:$key"; then
  tar="$images_cache/postgres-$key.tar"
  [[ -f "$tar" ]] || debian_rootfs "$tar" "$packages" --essential-hook="$user_hook" \
    --customize-hook="$cleanup_hook"
  import_image "$tar" "fleetsync-postgres:$key" \
    'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    'ENV PGDATA=/var/lib/postgresql/data' 'ENV LANG=C.UTF-8' 'USER 999' 'CMD ["postgres"]'
fi
docker tag "fleetsync-postgres:$key" "$image"
echo "$image"
