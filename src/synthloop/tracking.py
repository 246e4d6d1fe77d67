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
from synthloop.config import DetectorConfig, PipelineConfig

CHECKPOINT_NAME = "checkpoint.pt"
# What the logged pyfunc imports besides its backend's distributions (serve/pyfunc.py and
# serve/decode.py: DataFrames in and out, images decoded with Pillow into numpy).
PYFUNC_DISTRIBUTIONS = ("numpy", "pillow", "pandas")
# The process that opened (or reopened) a run: pid, host, the process's start (a reused pid has
# another) and when it opened the run (UNIX seconds).
PID_TAG = "synthloop.pid"
HOST_TAG = "synthloop.host"
PROCESS_START_TAG = "synthloop.process_start"
OPENED_TAG = "synthloop.opened"
# MLflow's experiment kind: model training (the value the UI's kind selector writes for
# "Machine learning"; GenAI is the other). MLflow 3.17's UI lands by its sidebar switch instead,
# see runs_url.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


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
        exp_id = client.create_experiment(cfg.experiment_name, artifact_location=artifact_root,
                                          tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    else:
        exp_id = exp.experiment_id
        if EXPERIMENT_KIND_TAG not in exp.tags:  # an older workspace's; a kind set in the UI stays
            client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def runs_url(cfg: PipelineConfig, base: str = "http://127.0.0.1:5000") -> str:
    """The pipeline's runs table in ``mlflow ui`` at ``base``.

    MLflow 3.17's UI picks an experiment's first page from its sidebar switch (GenAI / Model
    training: the URL's ``workflowType``, else the browser's saved choice, GenAI by default),
    not from ``mlflow.experimentKind``; so the link names the switch's "Model training" side.
    """
    exp = MlflowClient(tracking_uri=cfg.tracking_uri).get_experiment_by_name(cfg.experiment_name)
    where = f"experiments/{exp.experiment_id}/runs" if exp is not None else "experiments"
    return f"{base.rstrip('/')}/#/{where}?workflowType=machine_learning"


def installed_pin(distribution: str) -> str:
    """``name==version`` of the installed ``distribution``. A local label (``2.14.1+cpu``) is
    dropped: ``==2.14.1`` accepts every build of that release, from PyPI or a vendor index."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version(distribution)
    except PackageNotFoundError:
        raise PackageNotFoundError(f"{distribution} is needed by the logged model but is not "
                                   "installed here: its version cannot be recorded") from None
    return f"{distribution}=={found.split('+')[0]}"


def model_requirements(detector: DetectorConfig) -> list[str]:
    """pip requirements of a logged model of ``detector``, pinned at the installed versions:
    its backend's distributions (``DetectorBackend.requirements``: torch and torchvision; mmdet
    adds mmengine, mmcv and mmdet), the pyfunc's own, and synthloop at its version (from a
    wheelhouse, see docker/README.md; `mlflow models serve` without --env-manager local
    installs these)."""
    from synthloop.detection.backends import get_backend

    backend = get_backend(detector.backend).requirements(detector)
    names = dict.fromkeys([*backend, *PYFUNC_DISTRIBUTIONS])  # in order, once each
    return [installed_pin(n) for n in names] + [f"synthloop=={__version__}"]


def checkpoint_requirements(checkpoint: Path) -> list[str]:
    """``model_requirements`` of the detector saved in ``checkpoint`` (its config only is read)."""
    from synthloop.detection.checkpoint import read_detector_config

    return model_requirements(read_detector_config(checkpoint))


def log_detector(checkpoint: Path, *, name: str = "model",
                 export_files: dict[str, Path] | None = None) -> str:
    """Log ``checkpoint`` as a pyfunc model in the active run; return its model URI.

    ``export_files`` (``detection.export.export_onnx``'s ``{"dense", "box"}`` ONNX files) go in
    the same logged model, beside the checkpoint: the export is versioned with the model."""
    from synthloop.serve.pyfunc import DetectorPyfunc, detector_signature

    artifacts = {"checkpoint": str(checkpoint)}
    artifacts.update({f"scorer_{k}": str(v) for k, v in (export_files or {}).items()})
    from synthloop import faults

    faults.pause("tracking.log_model")  # trained and evaluated; nothing uploaded yet
    info = mlflow.pyfunc.log_model(name=name, python_model=DetectorPyfunc(),
                                   artifacts=artifacts,
                                   pip_requirements=checkpoint_requirements(checkpoint),
                                   signature=detector_signature())
    return info.model_uri


def _model_location(model_uri: str) -> str:
    location = model_uri.rstrip("/")
    if location.startswith("models:/m-"):
        # An MLflow 3 logged model (also what registry versions point at): its files live at
        # the logged model's own artifact location, not under the run.
        location = MlflowClient().get_logged_model(location[len("models:/"):]).artifact_location
    return location


def download_checkpoint(model_uri: str, dst: Path) -> Path:
    """Fetch the checkpoint file of a logged synthloop model into ``dst`` (a folder)."""
    dst.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(
        artifact_uri=f"{_model_location(model_uri)}/artifacts/{CHECKPOINT_NAME}", dst_path=str(dst)))


def download_export(model_uri: str, dst: Path) -> Path | None:
    """Fetch the exported scorer's ONNX files of a logged model into ``dst``; return ``dst``,
    or None when the model was logged without an export (then nothing is written)."""
    from mlflow.exceptions import MlflowException

    from synthloop.detection.export import BOX_FILE, DENSE_FILE

    location = f"{_model_location(model_uri)}/artifacts"
    try:
        listed = {Path(f.path).name for f in mlflow.artifacts.list_artifacts(artifact_uri=location)}
    except (MlflowException, OSError):
        return None
    if not {DENSE_FILE, BOX_FILE} <= listed:
        return None
    dst.mkdir(parents=True, exist_ok=True)
    for name in (DENSE_FILE, BOX_FILE):
        mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/{name}", dst_path=str(dst))
    return dst


def exported_or_torch(model_uri: str, model, *, runtime: str, use: bool = True):
    """The model to score or serve with: ``model`` (torch) with its heavy layers run by the
    exported ONNX graphs logged with ``model_uri`` in ``runtime``, or ``model`` itself, with
    one log line saying why, when there is no export, ``use`` is False or the runtime is
    missing. Returns ``(model_to_call, "onnx:<runtime>" | "torch")``."""
    import logging
    import tempfile

    from synthloop.detection.backends import backend_of, get_backend
    from synthloop.detection.export import describe, load_exported

    log = logging.getLogger(__name__)
    if not use:
        log.info("scoring with torch: export.use is false")
        return model, "torch"
    if not get_backend(backend_of(model)).exportable:
        log.info("scoring with torch: %s detectors are not exported", backend_of(model))
        return model, "torch"
    param = next(model.parameters(), None)
    if param is not None and param.device.type != "cpu":
        log.info("scoring with torch on %s: the exported scorer is for CPUs", param.device)
        return model, "torch"
    with tempfile.TemporaryDirectory() as tmp:
        folder = download_export(model_uri, Path(tmp))
        if folder is None:
            log.info("scoring with torch: %s was logged without an exported scorer", model_uri)
            return model, "torch"
        scorer = load_exported(model, folder, runtime=runtime)  # runtimes read the files now
    if scorer is None:
        return model, "torch"
    log.info("scoring with the exported scorer (%s) of %s", describe(scorer), model_uri)
    return scorer.model, describe(scorer)
