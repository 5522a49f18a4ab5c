# radgr image. Build targets: `cpu` (laptops, CI-like hosts) and `gpu` (CUDA hosts).
#   docker build --target cpu -t radgr:cpu .
#   docker run --rm -v $PWD/runs:/data radgr:cpu index stats /data/demo/index
# Models and indexes are mounted as volumes, never baked in. The serving entry point,
# the vLLM extras and the health check arrive with the server (issues 4 and 5).

FROM python:3.11-slim AS cpu
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
RUN useradd --create-home --uid 1000 radgr
WORKDIR /app
# dependencies first: this layer is reused while only the code changes
COPY pyproject.toml README.md ./
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
 && mkdir -p radgr sid_index trainer server && touch radgr/__init__.py sid_index/__init__.py \
    trainer/__init__.py server/__init__.py && pip install . && pip uninstall -y radgr
COPY radgr radgr
COPY sid_index sid_index
COPY trainer trainer
COPY server server
RUN pip install --no-deps .
USER radgr
ENTRYPOINT ["radgr"]
CMD ["--help"]

FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04 AS gpu
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PIP_BREAK_SYSTEM_PACKAGES=1
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip \
 && rm -rf /var/lib/apt/lists/* && useradd --create-home --uid 1001 radgr
WORKDIR /app
COPY pyproject.toml README.md ./
COPY radgr radgr
COPY sid_index sid_index
COPY trainer trainer
COPY server server
RUN pip install torch && pip install ".[gpu]"
USER radgr
ENTRYPOINT ["radgr"]
CMD ["--help"]
