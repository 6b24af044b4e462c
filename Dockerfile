# syntax=docker/dockerfile:1
# modelmon worker image: `modelmon` is the entry point, `worker` the default command.
#
#   docker build -t modelmon:0.1.0 .
#   docker run --rm -e MODELMON_KAFKA_BOOTSTRAP=kafka:9092 -p 6066:6066 modelmon:0.1.0
#   docker run --rm -e MODELMON_KAFKA_BOOTSTRAP=kafka:9092 modelmon:0.1.0 topics create --partitions 8
#
# The image never starts a Kafka broker of its own: set MODELMON_KAFKA_BOOTSTRAP (no Java inside).
# Checked by hadolint in tests/unit/test_deploy.py; docker-compose.yml and deploy/kubernetes/ run it.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: install the package and its dependencies into a virtualenv (wheels only, no compiler)
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ONLY_BINARY=:all:
RUN python -m venv /opt/modelmon
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY app ./app
RUN /opt/modelmon/bin/pip install --no-compile . \
    && /opt/modelmon/bin/modelmon --version

# ---- runtime: the virtualenv, a non-root user, a data volume
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="modelmon" \
      org.opencontainers.image.description="Kafka-native monitor for machine-learning models in production" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 modelmon \
    && useradd --system --uid 10001 --gid modelmon --home-dir /var/lib/modelmon --shell /usr/sbin/nologin modelmon \
    && install -d -o modelmon -g modelmon -m 0750 /var/lib/modelmon
COPY --from=build /opt/modelmon /opt/modelmon
COPY deploy/alert-rules.yaml /etc/modelmon/alert-rules.yaml
ENV PATH=/opt/modelmon/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODELMON_HOME=/var/lib/modelmon \
    MODELMON_WEB_HOST=0.0.0.0 \
    MODELMON_WEB_PORT=6066
USER 10001:10001
WORKDIR /var/lib/modelmon
VOLUME ["/var/lib/modelmon"]
EXPOSE 6066
# Liveness of the worker's web server (the image has no curl: Python's urllib asks /health).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('MODELMON_WEB_PORT', '6066'), timeout=4)"]
ENTRYPOINT ["modelmon"]
CMD ["worker", "--loglevel", "info"]
