# edgetune service image. GPU node (default):  docker build -t edgetune .
# CPU-only image:  docker build --build-arg BASE=python:3.11-slim -t edgetune:cpu .
# The pinned torch 2.14.1 and onnxruntime-gpu 1.31.1 wheels are CUDA 13.0 / cuDNN 9 builds, so the
# GPU base is CUDA 13.0 (host driver >= 580; the NVIDIA runtime refuses older drivers at start).
ARG BASE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04
FROM ${BASE}

# make, tini (PID 1: forwards SIGTERM, reaps orphaned job workers) and, where the base has none,
# Python with venv (Ubuntu 24.04: 3.12; python:3.11-slim already has Python >= 3.11.4).
ARG PYTHON=python3
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends make tini \
 && { ${PYTHON} -c 'import ensurepip, venv' 2>/dev/null \
      || apt-get install -y --no-install-recommends python3 python3-venv; } \
 && rm -rf /var/lib/apt/lists/*

# An unprivileged user (numeric id, for runAsNonRoot) owning the data volume.
RUN useradd --create-home --uid 10001 --user-group edgetune \
 && mkdir -p /data && chown edgetune:edgetune /data

# The install CI runs (`make install`: runtime dependencies only, no pytest/grpcio-tools) into
# /app/.venv; .dockerignore keeps the host's .venv, caches and data out of the build context.
WORKDIR /app
COPY . /app
RUN PIP_NO_CACHE_DIR=1 PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 make install PYTHON=${PYTHON}

# Runs, bundles, datasets and the service's SQLite live under /data: mount a volume there.
USER 10001:10001
VOLUME ["/data"]
WORKDIR /data
# Listening on 0.0.0.0 needs tokens and TLS (EDGETUNE_AUTH_TOKENS, EDGETUNE_TLS_CERT, EDGETUNE_TLS_KEY,
# mounted read-only) or an explicit EDGETUNE_INSECURE=1: the server refuses to start otherwise.
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    EDGETUNE_HOST=0.0.0.0 \
    EDGETUNE_PORT=50051 \
    EDGETUNE_DATA_DIR=/data/edgetune-data
EXPOSE 50051
# A service image: `docker run IMAGE` serves gRPC; `docker run IMAGE demo` (or any subcommand) still works.
ENTRYPOINT ["tini", "--", "edgetune"]
CMD ["serve"]
