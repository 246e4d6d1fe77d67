"""Find the detector a ``--model`` argument names: a checkpoint file, a registry alias or version,
or an MLflow run id, and load it with the class names it detects.

Spec forms (tried in this order):

- a path to a checkpoint written by ``save_checkpoint`` (or an http(s) URL to one);
- ``vN`` or ``N``: version N of the pipeline's registered model;
- 32 hex digits: an MLflow run id (its registry version, else the model the run logged);
- anything else: an alias of the pipeline's registered model (``champion``, ``challenger``).

The registry forms need the pipeline config (tracking URI and registered model name). Class
names come from the checkpoint (``extra["class_names"]``, written by the training stages), else
from the pipeline config's part names.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from synthloop.config import PipelineConfig

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_VERSION = re.compile(r"^v?(\d+)$")


class ModelSourceError(ValueError):
    """The ``--model`` argument names nothing loadable; the message says what to do instead."""


@dataclass(frozen=True)
class ModelUnderTest:
    """A loaded detector (eval mode) and what it is. ``class_names[i]`` is label ``i + 1``."""

    model: nn.Module
    class_names: tuple[str, ...]
    label: str  # short, for file names and tables: "champion-v7", "run-1a2b3c4d", "best"
    details: dict[str, Any] = field(default_factory=dict)  # source, version, run_id, resize


def spec_needs_registry(spec: str) -> bool:
    """True unless ``spec`` is an existing file or a URL (then no pipeline config is needed)."""
    return not (spec.startswith(("http://", "https://")) or Path(spec).is_file())


def load_model_under_test(spec: str, *, cfg: PipelineConfig | None,
                          device: Any = None) -> ModelUnderTest:
    """Resolve and load ``spec`` (see the module docstring) onto ``device`` (a resolved
    ``torch.device``; None: ``cfg.runtime.device``, or ``auto`` without ``cfg``); ``cfg`` is
    needed for registry specs and for checkpoints without class names."""
    if device is None:
        from synthloop.detection.device import resolve_device

        device = resolve_device(cfg.runtime.device if cfg is not None else "auto")
    if not spec_needs_registry(spec):
        return _from_checkpoint(spec, cfg, device)
    if _looks_like_path(spec):
        raise ModelSourceError(f"checkpoint not found: {spec}")
    if cfg is None:
        raise ModelSourceError(f"--model {spec} names a registry model: pass --config with the "
                               "pipeline YAML whose registry holds it")
    client = _registry_client(cfg)
    name = cfg.registered_model_name
    version_match = _VERSION.match(spec)
    if version_match:
        version = _get_version(client, name, version_match.group(1))
        return _from_registry(client, name, version, cfg, label=f"v{version.version}",
                              device=device)
    if _RUN_ID.match(spec):
        return _from_run(client, spec, cfg, device)
    version = _get_alias(client, name, spec)
    return _from_registry(client, name, version, cfg, label=f"{spec}-v{version.version}",
                          device=device)


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or "\\" in spec or spec.endswith((".pt", ".pth", ".ckpt"))


def _class_names(model: nn.Module, cfg: PipelineConfig | None, where: str) -> tuple[str, ...]:
    names = list(getattr(model, "checkpoint_extra", {}).get("class_names", []) or [])
    if not names and cfg is not None:
        names = list(cfg.class_names)
    if not names:
        raise ModelSourceError(f"{where} carries no class names: pass --config with the pipeline "
                               "YAML whose parts the model detects")
    if len(names) != int(model.num_classes):
        raise ModelSourceError(f"{where} detects {model.num_classes} classes but the class names "
                               f"are {names}: pass --config with the pipeline it was trained for")
    return tuple(names)


def _resize(model: nn.Module) -> dict[str, int]:
    det = model.detector_cfg
    return {"min_size": int(det.min_size), "max_size": int(det.max_size)}


def _from_checkpoint(spec: str, cfg: PipelineConfig | None, device: Any) -> ModelUnderTest:
    from synthloop.detection import load_checkpoint

    try:
        model = load_checkpoint(spec, device=device)
    except ImportError as exc:  # an mmdet checkpoint without the extra installed
        raise ModelSourceError(f"{spec}: cannot build its detector ({exc}); "
                               "install the backend it needs (make setup-mmdet)") from None
    is_url = spec.startswith(("http://", "https://"))
    label = Path(spec.rstrip("/")).stem or "model"
    where = spec if is_url else str(Path(spec).resolve())
    return ModelUnderTest(model, _class_names(model, cfg, spec), label,
                          {"source": "checkpoint", "checkpoint": where, **_resize(model)})


# ------------------------------------------------------------------------------ registry
def _registry_client(cfg: PipelineConfig) -> Any:
    import mlflow
    from mlflow import MlflowClient

    uri = cfg.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        # MLflow would create an empty store here; say what is missing instead
        raise ModelSourceError(f"no MLflow store at {uri[len('sqlite:///'):]}: run the pipeline "
                               "of --config first, or pass a checkpoint path as --model")
    mlflow.set_tracking_uri(uri)  # checkpoint downloads go through the global tracking URI
    return MlflowClient(tracking_uri=uri)


def _get_version(client: Any, name: str, number: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, number)
    except MlflowException:
        raise ModelSourceError(f"registered model {name!r} has no version {number} "
                               f"(latest: {_latest(client, name)})") from None


def _get_alias(client: Any, name: str, alias: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        pass
    try:
        aliases = sorted(client.get_registered_model(name).aliases)
    except MlflowException:
        raise ModelSourceError(f"no registered model {name!r} in the registry: run the pipeline "
                               "first, or pass a checkpoint path as --model") from None
    raise ModelSourceError(f"registered model {name!r} has no alias {alias!r} (aliases: "
                           f"{', '.join(aliases) or 'none'}); pass vN, a run id or a checkpoint path")


def _latest(client: Any, name: str) -> str:
    versions = [int(v.version) for v in client.search_model_versions(f"name = '{name}'")]
    return f"v{max(versions)}" if versions else "none"


def _from_registry(client: Any, name: str, version: Any, cfg: PipelineConfig,
                   *, label: str, device: Any) -> ModelUnderTest:
    from synthloop.serve.champion import load_registry_version

    # the champion as `serve` loads it
    loaded = load_registry_version(client, name, version, device=device)
    where = f"{name} v{loaded.version}"
    names = tuple(loaded.class_names) or _class_names(loaded.model, cfg, where)
    details = {"source": "registry", "registered_model": name, "version": loaded.version,
               "run_id": loaded.run_id, "tracking_uri": cfg.tracking_uri,
               "recorded_val_metrics": loaded.metrics, **_resize(loaded.model)}
    return ModelUnderTest(loaded.model, names, label, details)


def _from_run(client: Any, run_id: str, cfg: PipelineConfig, device: Any) -> ModelUnderTest:
    from mlflow.exceptions import MlflowException

    from synthloop import tracking
    from synthloop.detection import load_checkpoint

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ModelSourceError(f"no MLflow run {run_id} in {cfg.tracking_uri}") from None
    versions = client.search_model_versions(f"run_id = '{run_id}'")
    if versions:
        version = max(versions, key=lambda v: int(v.version))
        return _from_registry(client, version.name, version, cfg, label=f"run-{run_id[:8]}",
                              device=device)
    logged = client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                         filter_string=f"source_run_id = '{run_id}'")
    if not logged:
        raise ModelSourceError(f"run {run_id} logged no model: pass a run that trained one")
    with tempfile.TemporaryDirectory() as tmp:
        model = load_checkpoint(tracking.download_checkpoint(f"models:/{logged[0].model_id}",
                                                             Path(tmp)), device=device)
    details = {"source": "run", "run_id": run_id, "tracking_uri": cfg.tracking_uri,
               **_resize(model)}
    return ModelUnderTest(model, _class_names(model, cfg, f"run {run_id}"), f"run-{run_id[:8]}",
                          details)
