"""MLflow plumbing shared by the stages: experiment setup, model logging, weight download.

Stages open runs and log; this module only knows how synthloop lays its things out in MLflow.
Models are logged as MLflow pyfunc models carrying our checkpoint (loaded with
``torch.load(weights_only=True)``), so ``mlflow models serve`` and the registry see a real model.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow import MlflowClient

from synthloop import __version__
from synthloop.config import PipelineConfig

CHECKPOINT_NAME = "checkpoint.pt"
PIP_REQUIREMENTS = ["torch==2.14.1", "torchvision==0.29.1", "numpy==2.4.6", "pillow",
                    "pandas==2.3.3", f"synthloop=={__version__}"]  # synthloop: from a wheelhouse,
# see docker/README.md (`mlflow models serve` without --env-manager local installs these)


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
