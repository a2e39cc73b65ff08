# syntax=docker/dockerfile:1
# The two app images, one build: target `ingest-worker` (the worker, and the
# one-shot `migrate`) and target `api` (the HTTP API). Build from the repository root:
#   docker build --target ingest-worker .
#   docker build --target api .
# compose.yaml and the pipeline's build job name the target.

# Build stage: a virtualenv with eventpipe and its runtime dependencies only,
# no extras: containers talk to a ClickHouse server, so no embedded chDB.
FROM python:3.12.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
WORKDIR /src
# Every package from the locks that CI installs too (scripts/lock.sh writes them), checked
# by hash: two builds of one commit get the same files. Before the source, so a code change
# reuses this layer. The build tools go to this stage's own Python, which is not shipped.
COPY requirements/build.txt requirements/runtime.txt ./requirements/
RUN pip install --require-hashes -r requirements/build.txt \
 && /opt/venv/bin/pip install --require-hashes -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY src ./src
# No isolated build environment: it would fetch the newest hatchling instead of the locked one.
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/dist . \
 && /opt/venv/bin/pip install --no-deps --no-index /tmp/dist/eventpipe-*.whl

# What both images run on: the virtualenv and an unprivileged user; `eventpipe` is PID 1, so it gets SIGTERM.
FROM python:3.12.11-slim-bookworm AS runtime
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin eventpipe
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
ENTRYPOINT ["eventpipe"]

# The ingest worker. Each replica names its broker session after its compose
# container (eventpipe-ingest-worker-2), which only Docker's DNS knows:
# /etc/hosts maps the container's address to its random hostname, so reverse
# lookups ask DNS first here (see src/eventpipe/mqtt/replica.py).
FROM runtime AS ingest-worker
RUN sed -i 's/^hosts:.*/hosts: dns files/' /etc/nsswitch.conf \
 && grep -qx 'hosts: dns files' /etc/nsswitch.conf
ENV EVENTPIPE_MQTT_CLIENT_ID_FROM_DNS=true \
    EVENTPIPE_METRICS_HOST=0.0.0.0 \
    EVENTPIPE_METRICS_PORT=9464
USER 10001:10001
EXPOSE 9464
# Healthy while connected to the broker (eventpipe_mqtt_connected on its metrics endpoint).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["eventpipe", "healthcheck", "worker"]
CMD ["worker"]

# The HTTP API.
FROM runtime AS api
ENV EVENTPIPE_API_HOST=0.0.0.0 \
    EVENTPIPE_API_PORT=8000
USER 10001:10001
EXPOSE 8000
# Healthy while /readyz answers: the API runs and ClickHouse answers it.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["eventpipe", "healthcheck", "api"]
CMD ["api"]
