# syntax=docker/dockerfile:1.7
# synthloop worker: a Prefect process worker with the package, its flows and pipelines; it also
# serves as a Dask worker image (`dask worker tcp://scheduler:8786`) for scoring chunks.
# Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t synthloop/worker:0.1.0 .
# Run:  docker run -e PREFECT_API_URL=http://prefect-server:4200/api synthloop/worker:0.1.0

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install "pip==25.3" \
 && /opt/venv/bin/pip install -c constraints.txt ".[serve]"

FROM python:3.11.14-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="synthloop-worker"
# git: DVC and the workspace repository; tini: signals reach the worker and its flow runs.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git=1:2.39.5-0+deb12u3 tini=0.19.0-1+b3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 synthloop \
 && useradd --system --uid 10001 --gid synthloop --home-dir /app --create-home --shell /usr/sbin/nologin synthloop \
 && mkdir -p /workspace && chown 10001:10001 /workspace
COPY --from=build /opt/venv /opt/venv
COPY --chown=10001:10001 flows /app/flows
COPY --chown=10001:10001 pipelines /app/pipelines
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false GIT_PYTHON_REFRESH=quiet \
    MLFLOW_ENABLE_ASYNC_LOGGING=false PREFECT_HOME=/app/.prefect
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["tini", "--"]
CMD ["prefect", "worker", "start", "--pool", "synthloop-process", "--type", "process"]
