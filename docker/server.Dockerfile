# syntax=docker/dockerfile:1.7
# synthloop server: REST inference for the registry champion (`synthloop serve`), swapped in place
# when the alias moves. Build from the repository root:
#   docker build -f docker/server.Dockerfile -t synthloop/server:0.1.0 .
# Run:  docker run -p 8080:8080 -e MLFLOW_TRACKING_URI=http://mlflow:5000 synthloop/server:0.1.0
# torch 2.14.1 from PyPI is the CUDA 13 build: the image serves on a GPU host too (driver >= 580).

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install "pip==25.3" \
 && /opt/venv/bin/pip install -c constraints.txt ".[serve]"

FROM python:3.11.14-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="synthloop-server" \
      org.opencontainers.image.description="REST inference for the synthloop registry champion"
RUN groupadd --system --gid 10001 synthloop \
 && useradd --system --uid 10001 --gid synthloop --home-dir /app --create-home --shell /usr/sbin/nologin synthloop
COPY --from=build /opt/venv /opt/venv
COPY --chown=10001:10001 pipelines /app/pipelines
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    GIT_PYTHON_REFRESH=quiet MLFLOW_ENABLE_ASYNC_LOGGING=false
WORKDIR /app
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]
ENTRYPOINT ["synthloop"]
CMD ["serve", "--config", "pipelines/demo.yaml", "--host", "0.0.0.0", "--port", "8080"]
