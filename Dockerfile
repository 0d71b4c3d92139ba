# The swarm-operator image. Build: `docker build -t swarm-operator:dev .` (hack/kind-e2e.sh does, then loads it
# into kind). Stage one turns the package and every dependency into wheels; stage two installs only those wheels
# into a virtual environment on a clean slim Python, so the final image holds no build tools and no sources.
# tests/packaging runs these same RUN commands in a fresh virtual environment (no Docker engine on the CI machines).
# No `# syntax=` line: the Dockerfile frontend built into every BuildKit engine since Docker 20.10 handles
# RUN --mount, and a syntax line makes every build fetch the frontend from a registry (offline builds fail).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
# --only-binary: every dependency must come as a wheel, so no stage ever needs a compiler;
# a dependency that ships only sources fails the build here instead of silently pulling in gcc.
RUN python -m pip wheel --no-cache-dir --only-binary=:all: --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
# VERSION pins the wheel installed below, so the version label cannot disagree with the package.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/swarm-operator/swarm-operator
LABEL org.opencontainers.image.title="swarm-operator" \
      org.opencontainers.image.description="A Kubernetes operator that runs Ray clusters, autoscaled from Ray's own demand" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# HOME=/tmp: with a read-only root filesystem the only writable place is the /tmp emptyDir the chart mounts.
# Bytecode is compiled at install time, so nothing needs to write .pyc files at run time.
ENV VIRTUAL_ENV=/opt/swarm-operator \
    PATH=/opt/swarm-operator/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/swarm-operator \
    && /opt/swarm-operator/bin/pip install --no-cache-dir --no-index --find-links /wheels "swarm-operator==${VERSION}"
# A fixed numeric UID, so the chart's runAsUser/runAsNonRoot can verify it without reading /etc/passwd.
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin swarm
USER 10001:10001
WORKDIR /tmp
# 8080: Prometheus /metrics; 8081: /healthz.
EXPOSE 8080 8081
ENTRYPOINT ["swarm-operator", "run"]
