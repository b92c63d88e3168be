# fleetsync: one image for the controller (`fleetsync controller`) and the worker pods
# (`fleetsync worker`). Multi-stage: build the wheel, then install it into a slim runtime
# with no compiler, no pip cache and no shell needed at run time.
#
# Plain Dockerfile syntax (no heredocs, no `# syntax=` line): it builds with BuildKit and with
# the classic builder, and needs no frontend image from a registry.

ARG PYTHON_VERSION=3.11
# Both stages start from this image: a Python with pip. Users keep the public default; CI,
# which reaches no image registry, passes a base built from Debian's packages
# (tests/tools/images/python-base.sh: --build-arg BASE_IMAGE=fleetsync-base:bookworm).
ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
RUN python -m pip install --no-cache-dir build==1.2.2
# Dependencies first: this layer is reused until pyproject.toml changes.
COPY pyproject.toml README.md ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels -r /tmp/requirements.txt
# Then the source: the wheel the tests run is the wheel the image installs.
COPY operator ./operator
RUN python -m build --wheel --outdir /wheels/fleetsync .

FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="fleetsync" \
      org.opencontainers.image.description="Keep fleets in sync: SyncJob/SyncSchedule controller and worker" \
      org.opencontainers.image.source="https://github.com/fleetsync/fleetsync" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir --no-index --find-links /wheels /wheels/fleetsync/*.whl \
 && rm -rf /wheels
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Numeric non-root user, matching runAsUser in the chart and in the worker pods. It needs an
# /etc/passwd entry: kopf names the controller's peering identity after getpass.getuser(),
# which raises "uid not found" for a uid without one (found on kind, where the controller runs
# as this uid; the local process control plane runs it as the invoking user).
RUN groupadd --gid 65532 fleetsync \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin fleetsync
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["fleetsync"]
CMD ["--help"]
