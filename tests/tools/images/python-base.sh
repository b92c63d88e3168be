#!/usr/bin/env bash
# The base image the Dockerfile is built FROM in CI (docker build --build-arg
# BASE_IMAGE=fleetsync-base:bookworm): Debian bookworm minbase with its python3 (3.11, the
# version of the public python:3.11-slim default) and pip, so the Dockerfile's steps run
# unchanged. Debian marks its Python "externally managed"; this image, like python:*-slim, is
# a container whose only job is this Python, so the marker is removed.
# Prints the image name last.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"
packages=python3,python3-pip,python-is-python3,ca-certificates
hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED'
key=$(inputs_key "$debian_suite" "$packages" "$hook")
ca=$(inputs_key /etc/ssl/certs/ca-certificates.crt)
image=fleetsync-base:bookworm
if ! have_image "fleetsync-base:$key-$ca"; then
  tar="$images_cache/python-base-$key.tar"
  [[ -f "$tar" ]] || debian_rootfs "$tar" "$packages" --customize-hook="$hook"
  have_image "fleetsync-base:$key" \
    || import_image "$tar" "fleetsync-base:$key" 'ENV LANG=C.UTF-8' 'CMD ["python3"]'
  with_host_ca "fleetsync-base:$key" "fleetsync-base:$key-$ca"
fi
docker tag "fleetsync-base:$key-$ca" "$image"
echo "$image"
