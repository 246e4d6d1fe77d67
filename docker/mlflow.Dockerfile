# syntax=docker/dockerfile:1.7
# MLflow tracking + registry server with the Postgres driver and S3 (boto3) for artifacts, the
# same MLflow version as the pipeline's client. Used by infra/compose.yaml.
#   docker build -f docker/mlflow.Dockerfile -t synthloop/mlflow:3.17.2 .

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY constraints.txt /tmp/constraints.txt
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install "pip==25.3" \
 && /opt/venv/bin/pip install -c /tmp/constraints.txt "mlflow==3.17.2" "boto3==1.43.117" "psycopg2-binary==2.9.13"

FROM python:3.11.14-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="synthloop-mlflow"
RUN groupadd --system --gid 10001 mlflow \
 && useradd --system --uid 10001 --gid mlflow --home-dir /mlflow --create-home --shell /usr/sbin/nologin mlflow
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
WORKDIR /mlflow
USER 10001:10001
EXPOSE 5000
ENTRYPOINT ["mlflow"]
CMD ["server", "--host", "0.0.0.0", "--port", "5000", "--workers", "1"]
