"""MLflow plumbing shared by the stages: experiment setup, model logging, weight download.

Stages open runs and log; this module only knows how synthloop lays its things out in MLflow.
Models are logged as MLflow pyfunc models carrying our checkpoint (loaded with
``torch.load(weights_only=True)``), so ``mlflow models serve`` and the registry see a real model.
Every run a stage opens carries ``process_tags``: the process that owns it, so that a later run
can tell a run left RUNNING by a killed process from a live one (tracking_recovery.py).
"""

from __future__ import annotations

import functools
import os
import socket
import time
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from synthloop import __version__
from synthloop.config import PipelineConfig

CHECKPOINT_NAME = "checkpoint.pt"
PIP_REQUIREMENTS = ["torch==2.14.1", "torchvision==0.29.1", "numpy==2.4.6", "pillow",
                    "pandas==2.3.3", f"synthloop=={__version__}"]  # synthloop: from a wheelhouse,
# see docker/README.md (`mlflow models serve` without --env-manager local installs these)
# The process that opened (or reopened) a run: pid, host, the process's start (a reused pid has
# another) and when it opened the run (UNIX seconds).
PID_TAG = "synthloop.pid"
HOST_TAG = "synthloop.host"
PROCESS_START_TAG = "synthloop.process_start"
OPENED_TAG = "synthloop.opened"


@functools.lru_cache(maxsize=1)
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def proc_stat(pid: int) -> tuple[str, str] | None:
    """(state letter, start time in clock ticks since boot) of ``pid`` from /proc; None where
    there is no such process or no /proc (not Linux)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # the name in (...) may hold spaces
    return fields[0], fields[19]  # fields 3 (state) and 22 (starttime) of proc(5)


def process_start(pid: int) -> str:
    """``<boot id>:<start ticks>`` of ``pid``: equal only for the same process; "" if unknown."""
    stat = proc_stat(pid)
    return f"{_boot_id()}:{stat[1]}" if stat else ""


def process_tags() -> dict[str, str]:
    """The tags that name this process as the owner of a run it opens or reopens."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname(),
            PROCESS_START_TAG: process_start(os.getpid()), OPENED_TAG: f"{time.time():.0f}"}


def setup(cfg: PipelineConfig) -> str:
    """Point MLflow at the pipeline's store and experiment; return the experiment id."""
    mlflow.set_tracking_uri(cfg.tracking_uri)
    client = MlflowClient()
    exp = client.get_experiment_by_name(cfg.experiment_name)
    if exp is None:
        artifact_root = None
        if cfg.tracking.uri is None:  # embedded store: keep artifacts in the workspace
            artifact_root = (cfg.workspace.resolve() / "mlartifacts").as_uri()
        exp_id = client.create_experiment(cfg.experiment_name, artifact_location=artifact_root)
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def log_detector(checkpoint: Path, *, name: str = "model") -> str:
    """Log ``checkpoint`` as a pyfunc model in the active run; return its model URI."""
    from synthloop.serve.pyfunc import DetectorPyfunc, detector_signature

    info = mlflow.pyfunc.log_model(name=name, python_model=DetectorPyfunc(),
                                   artifacts={"checkpoint": str(checkpoint)},
                                   pip_requirements=PIP_REQUIREMENTS,
                                   signature=detector_signature())
    return info.model_uri


def download_checkpoint(model_uri: str, dst: Path) -> Path:
    """Fetch the checkpoint file of a logged synthloop model into ``dst`` (a folder)."""
    dst.mkdir(parents=True, exist_ok=True)
    location = model_uri.rstrip("/")
    if location.startswith("models:/m-"):
        # An MLflow 3 logged model (also what registry versions point at): its files live at
        # the logged model's own artifact location, not under the run.
        location = MlflowClient().get_logged_model(location[len("models:/"):]).artifact_location
    return Path(mlflow.artifacts.download_artifacts(
        artifact_uri=f"{location}/artifacts/{CHECKPOINT_NAME}", dst_path=str(dst)))
