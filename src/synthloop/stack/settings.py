"""The stack config (infra/stack.yaml): ports, databases, buckets and folders of the one-machine
stack, typed; every URL the services and the pipeline use is derived here and nowhere else."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_CONFIG = Path("infra/stack.yaml")
HOST = "127.0.0.1"  # every service binds loopback only


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PostgresSettings(_Strict):
    port: int = Field(default=5432, ge=1, le=65535)
    user: str = "synthloop"
    databases: list[str] = ["mlflow", "prefect"]
    bin_dir: Path | None = None
    major_version: int = Field(default=15, ge=10)

    @model_validator(mode="after")
    def _needs_both(self) -> "PostgresSettings":
        missing = {"mlflow", "prefect"} - set(self.databases)
        if missing:
            raise ValueError(f"postgres.databases must include {sorted(missing)}")
        return self


class S3Settings(_Strict):
    endpoint_url: str | None = None
    port: int = Field(default=9000, ge=1, le=65535)
    buckets: list[str] = ["mlflow", "dvc", "pool"]
    artifacts_bucket: str = "mlflow"

    @model_validator(mode="after")
    def _artifacts_bucket_listed(self) -> "S3Settings":
        if self.artifacts_bucket not in self.buckets:
            raise ValueError(f"s3.artifacts_bucket {self.artifacts_bucket!r} is not in s3.buckets")
        return self


class MlflowSettings(_Strict):
    port: int = Field(default=5000, ge=1, le=65535)


class PrefectSettings(_Strict):
    port: int = Field(default=4200, ge=1, le=65535)
    work_pool: str = "synthloop-process"
    cycle_limit: str = "synthloop-cycle"
    # Zombie flow runs: every flow run on the worker emits a heartbeat event every heartbeat_s
    # (PREFECT_FLOWS_HEARTBEAT_FREQUENCY; Prefect's minimum is 30 s); the automation
    # `zombie_automation` marks a run Crashed when zombie_after_s pass without one.
    heartbeat_s: int = Field(default=30, ge=30)
    zombie_after_s: int = Field(default=90, ge=60)
    zombie_automation: str = "synthloop-crash-zombie-flow-runs"

    @model_validator(mode="after")
    def _window_spans_heartbeats(self) -> "PrefectSettings":
        if self.zombie_after_s < 2 * self.heartbeat_s:
            raise ValueError("prefect.zombie_after_s must be at least twice prefect.heartbeat_s "
                             "(one late heartbeat must not crash a live run)")
        return self


class ServeSettings(_Strict):
    port: int = Field(default=8080, ge=1, le=65535)
    pipeline: Path = Path("pipelines/demo.yaml")


class StackSettings(_Strict):
    """infra/stack.yaml, with relative paths resolved against ``base`` by :func:`load_stack`."""

    data_dir: Path = Path(".stack")
    project_dir: Path = Path(".")
    postgres: PostgresSettings = PostgresSettings()
    s3: S3Settings = S3Settings()
    mlflow: MlflowSettings = MlflowSettings()
    prefect: PrefectSettings = PrefectSettings()
    serve: ServeSettings = ServeSettings()

    @model_validator(mode="after")
    def _distinct_ports(self) -> "StackSettings":
        ports = {"postgres": self.postgres.port, "mlflow": self.mlflow.port,
                 "prefect": self.prefect.port, "serve": self.serve.port}
        if self.s3.endpoint_url is None:
            ports["s3"] = self.s3.port
        seen: dict[int, str] = {}
        for name, port in ports.items():
            if port in seen:
                raise ValueError(f"{seen[port]} and {name} both use port {port}")
            seen[port] = name
        return self

    # -- derived URLs: the single place they are spelled -------------------------------------
    def database_url(self, database: str, driver: str) -> str:
        """``postgresql+<driver>://user@127.0.0.1:port/<database>`` (trust auth on loopback)."""
        return f"postgresql+{driver}://{self.postgres.user}@{HOST}:{self.postgres.port}/{database}"

    @property
    def s3_endpoint(self) -> str:
        return self.s3.endpoint_url or f"http://{HOST}:{self.s3.port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.mlflow.port}"

    @property
    def prefect_api_url(self) -> str:
        return f"http://{HOST}:{self.prefect.port}/api"

    @property
    def serve_url(self) -> str:
        return f"http://{HOST}:{self.serve.port}"

    # -- folders under data_dir --------------------------------------------------------------
    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def pg_data(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def s3_dir(self) -> Path:
        return self.data_dir / "s3"

    @property
    def prefect_home(self) -> Path:
        return self.data_dir / "prefect"

    @property
    def site_overlay(self) -> Path:
        """A pipeline overlay pointing tracking at the stack (``--overlay <this>``)."""
        return self.data_dir / "site.yaml"


def load_stack(path: Path | str = DEFAULT_CONFIG, *, base: Path | None = None,
               data_dir: Path | None = None) -> StackSettings:
    """Read and validate a stack config; relative paths resolve against ``base`` (default: the
    current folder). ``data_dir`` overrides the file's. Errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"stack config {path} not found (see infra/stack.yaml)")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
        settings = StackSettings.model_validate(tree)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ValueError(f"{path}: {where}: {first['msg']}") from None
    base = (base or Path.cwd()).resolve()
    update = {"data_dir": (base / (data_dir or settings.data_dir)).resolve(),
              "project_dir": (base / settings.project_dir).resolve(),
              "serve": settings.serve.model_copy(
                  update={"pipeline": (base / settings.serve.pipeline).resolve()})}
    if settings.postgres.bin_dir is not None:
        update["postgres"] = settings.postgres.model_copy(
            update={"bin_dir": (base / settings.postgres.bin_dir).resolve()})
    return settings.model_copy(update=update)
