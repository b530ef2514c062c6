# syntax=docker/dockerfile:1.7
# Edge image for NVIDIA Jetson (Orin; JetPack 6 = L4T r36, Ubuntu 22.04, CUDA 12, TensorRT 10).
# Build ON the Jetson (or an arm64 builder) from the repository root:
#   docker build -f deploy/docker/jetson.Dockerfile \
#     --build-arg ONNXRUNTIME_GPU="<onnxruntime-gpu wheel for JetPack 6 and CPython 3.11: a URL or a path>" \
#     -t alpr-edge-jetson:0.1.0 .
# Decode: GStreamer with NVIDIA's nvv4l2decoder (cameras: decoder gstreamer, gstreamer_preset jetson); it
# runs in a helper on Ubuntu's /usr/bin/python3 (python3-gi), the app itself on CPython 3.11.
# Inference: ONNX Runtime with the TensorRT and CUDA execution providers (detect.providers: [auto]); PyPI
# has no such build for Jetson, hence the ONNXRUNTIME_GPU argument (docs/deploy.md says where to get one).
# Run with the NVIDIA container runtime (compose: edge.jetson.yaml). Not built here: no arm64 builder.
ARG L4T_IMAGE=nvcr.io/nvidia/l4t-jetpack:r36.4.0

FROM ${L4T_IMAGE} AS build
ARG ONNXRUNTIME_GPU=""
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/alpr/venv/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/alpr/venv
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY shared ./shared
COPY services ./services
RUN pip install --no-compile .
# Replace the CPU-only onnxruntime from PyPI with a JetPack build that has the TensorRT/CUDA providers.
# The wheel is named exactly by the build argument (a file or URL of one version), so DL3013 does not apply.
# hadolint ignore=DL3013
RUN if [[ -z "${ONNXRUNTIME_GPU}" ]]; then \
        echo "jetson.Dockerfile: pass --build-arg ONNXRUNTIME_GPU=<onnxruntime-gpu wheel for JetPack 6, cp311> (docs/deploy.md)" >&2; \
        exit 1; \
    fi \
    && pip uninstall -y onnxruntime \
    && pip install --no-compile "${ONNXRUNTIME_GPU}" \
    && python -c "import onnxruntime as o, sys; p = o.get_available_providers(); print(p); sys.exit('TensorrtExecutionProvider' not in p)"
COPY deploy/docker/healthcheck.py /opt/alpr/venv/bin/alpr-healthcheck
RUN chmod 0755 /opt/alpr/venv/bin/alpr-healthcheck

FROM build AS models
ENV ALPR_MODELS_DIR=/opt/alpr/models
RUN alpr models export --if-missing --install-tools \
    && alpr models verify \
    && rm -rf /opt/alpr/models/.export-env

FROM ${L4T_IMAGE} AS edge
LABEL org.opencontainers.image.title="alpr-edge-jetson" \
      org.opencontainers.image.description="ALPR edge pipeline for NVIDIA Jetson (JetPack 6)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive
# nvidia-l4t-gstreamer (nvv4l2decoder, nvvidconv) comes from NVIDIA's L4T apt repository, which the L4T
# base images configure; the rest is Ubuntu's GStreamer and the gi bindings for /usr/bin/python3.
# libatomic1: the frame store's memory fences on ARM64 (it refuses to run without them).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.11 tini libgomp1 libglib2.0-0 libatomic1 \
        python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 \
        gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
        gstreamer1.0-libav nvidia-l4t-gstreamer \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 alpr \
    && useradd --system --uid 10001 --gid alpr --groups video --home-dir /var/lib/alpr --shell /usr/sbin/nologin alpr \
    && install -d -o alpr -g alpr /var/lib/alpr /var/lib/alpr/models /var/lib/alpr/events /run/alpr /etc/alpr
COPY --from=build /opt/alpr/venv /opt/alpr/venv
COPY --from=models --chown=alpr:alpr /opt/alpr/models /var/lib/alpr/models
ENV PATH=/opt/alpr/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ALPR_CONFIG=/etc/alpr/alpr.yaml \
    ALPR_MODELS_DIR=/var/lib/alpr/models \
    ALPR_RUNTIME_DIR=/run/alpr \
    ALPR_LOG__FORMAT=json \
    ALPR_INGEST__GSTREAMER_PYTHON=/usr/bin/python3
USER 10001:10001
WORKDIR /var/lib/alpr
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 CMD ["alpr-healthcheck"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["alpr", "--help"]
