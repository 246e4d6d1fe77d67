# syntax=docker/dockerfile:1.7
# synthloop trainer: CUDA torch for fine-tuning / pretraining jobs (one GPU, or torchrun for
# several: see synthloop/scaleout/ddp.py). torch==2.14.1 on PyPI ships the CUDA 13 runtime in
# its nvidia-* wheels, so the base needs no CUDA toolkit: only a host driver >= 580 and the
# NVIDIA container toolkit (`docker run --gpus all`, or nvidia.com/gpu on Kubernetes).
# Build from the repository root:
#   docker build -f docker/trainer.Dockerfile -t synthloop/trainer:0.1.0 .

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install "pip==25.3" \
 && /opt/venv/bin/pip install -c constraints.txt . \
 && /opt/venv/bin/python -c "import torch, torchvision; print(torch.__version__, torch.version.cuda)"

FROM python:3.11.14-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="synthloop-trainer"
RUN apt-get update \
 && apt-get install -y --no-install-recommends git=1:2.39.5-0+deb12u3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 synthloop \
 && useradd --system --uid 10001 --gid synthloop --home-dir /app --create-home --shell /usr/sbin/nologin synthloop \
 && mkdir -p /workspace && chown 10001:10001 /workspace
COPY --from=build /opt/venv /opt/venv
COPY --chown=10001:10001 flows /app/flows
COPY --chown=10001:10001 pipelines /app/pipelines
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    GIT_PYTHON_REFRESH=quiet MLFLOW_ENABLE_ASYNC_LOGGING=false
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["synthloop"]
CMD ["cycle", "--config", "pipelines/demo.yaml", "--workspace", "/workspace"]
