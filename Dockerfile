# syntax=docker/dockerfile:1
# Cell Commons: one image for the api, worker, scheduler and the migration job (the command differs).
#
#   docker build -t cellcommons:0.1.0 .
#
# Stage 1 builds the wheel from the source tree; stage 2 installs only that wheel (no sources, no build
# tools, no dev extra) into a virtual environment; stage 3 copies the environment into a slim runtime that
# runs as an unprivileged user.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir "build>=1.0"
COPY pyproject.toml README.md ./
COPY platform ./platform
COPY connectors ./connectors
RUN python -m build --wheel --outdir /dist

FROM python:${PYTHON_VERSION}-slim AS install
RUN python -m venv /opt/cellcommons
COPY --from=build /dist/*.whl /tmp/
RUN /opt/cellcommons/bin/pip install --no-cache-dir /tmp/*.whl && rm /tmp/*.whl

FROM python:${PYTHON_VERSION}-slim AS runtime
LABEL org.opencontainers.image.title="Cell Commons" \
      org.opencontainers.image.description="Catalogue of clinical MSC batches and datasets shared under DUAs" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/cellcommons/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CELLCOMMONS_ENVIRONMENT=production
RUN groupadd --system --gid 10001 cellcommons \
 && useradd --system --uid 10001 --gid cellcommons --no-create-home --home-dir /nonexistent cellcommons
COPY --from=install /opt/cellcommons /opt/cellcommons
# A numeric user, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000
# Liveness only: readiness (/readyz) depends on the database and object storage and is for load balancers.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["cellcommons"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "4"]
