# syntax=docker/dockerfile:1.7
# Server image: `alpr persist` (Kafka → PostgreSQL/TimescaleDB), `alpr query` (REST API) and `alpr db`.
# Build from the repository root:
#   docker build -f deploy/docker/server.Dockerfile -t alpr-server:0.1.0 .
# No models: the server never runs inference.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/alpr/venv/bin:$PATH
RUN python -m venv /opt/alpr/venv
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY shared ./shared
COPY services ./services
RUN pip install --no-compile .
COPY deploy/docker/healthcheck.py /opt/alpr/venv/bin/alpr-healthcheck
RUN chmod 0755 /opt/alpr/venv/bin/alpr-healthcheck

FROM ${PYTHON_IMAGE} AS server
LABEL org.opencontainers.image.title="alpr-server" \
      org.opencontainers.image.description="ALPR persist + query services" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini libgomp1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 alpr \
    && useradd --system --uid 10001 --gid alpr --home-dir /var/lib/alpr --shell /usr/sbin/nologin alpr \
    && install -d -o alpr -g alpr /var/lib/alpr /etc/alpr
COPY --from=build /opt/alpr/venv /opt/alpr/venv
ENV PATH=/opt/alpr/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ALPR_CONFIG=/etc/alpr/alpr.yaml \
    ALPR_LOG__FORMAT=json
USER 10001:10001
WORKDIR /var/lib/alpr
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["alpr-healthcheck"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["alpr", "--help"]
