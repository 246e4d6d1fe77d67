"""Typed pipeline configuration: every YAML file in pipelines/ loads into ``PipelineConfig``.

Unknown keys, wrong types and impossible ranges are errors that name the file and the key.
Precedence: pipelines/<name>.yaml < overlays (later wins) < CLI overrides (``a.b=value``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """The pipeline configuration is invalid; the message says where and why."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(Strict):
    """A closed interval [min, max] sampled uniformly."""

    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> "Range":
        if self.min > self.max:
            raise ValueError(f"impossible range: min {self.min} > max {self.max}")
        return self


class IntRange(Strict):
    min: int
    max: int

    @model_validator(mode="after")
    def _ordered(self) -> "IntRange":
        if self.min > self.max:
            raise ValueError(f"impossible range: min {self.min} > max {self.max}")
        return self


class PartSpec(Strict):
    """One part class: a mesh file, or a procedural generator such as ``turbine_blade``."""

    name: str
    mesh: Path | None = None
    procedural: Literal["turbine_blade"] | None = None
    unit: Literal["auto", "mm", "m"] = "auto"

    @model_validator(mode="after")
    def _one_source(self) -> "PartSpec":
        if (self.mesh is None) == (self.procedural is None):
            raise ValueError(f"part '{self.name}': give exactly one of 'mesh' or 'procedural'")
        return self


class SensorConfig(Strict):
    """Camera-side effects applied after compositing (the proxy real domain uses them)."""

    noise_std: Range = Range(min=0.0, max=0.0)  # Gaussian noise, 0..255 scale
    blur_sigma: Range = Range(min=0.0, max=0.0)  # Gaussian blur, pixels
    jpeg_quality: IntRange = IntRange(min=95, max=95)
    color_gain: Range = Range(min=1.0, max=1.0)  # per-channel white balance jitter


class DomainConfig(Strict):
    """How one image domain is rendered (synthetic training set, or the demo's proxy real set)."""

    num_images: int = Field(gt=0)
    seed: int = 0
    width: int = Field(default=320, ge=32, le=4096)
    height: int = Field(default=240, ge=32, le=4096)
    samples: int = Field(default=4, ge=1, le=4096)
    denoise: bool = False
    scene: Literal["floating"] = "floating"
    materials: list[str] = ["brushed_steel", "dark_blue_metal"]
    backgrounds: str = "procedural:workshop"
    distractors: IntRange = IntRange(min=0, max=3)
    parts_per_image: IntRange = IntRange(min=1, max=1)
    camera_distance: Range = Range(min=0.35, max=0.6)
    camera_elevation_deg: Range = Range(min=10.0, max=80.0)
    focal_length_mm: Range = Range(min=35.0, max=50.0)
    hdri_strength: Range = Range(min=0.6, max=1.6)
    min_visibility: float = Field(default=0.3, ge=0.0, le=1.0)
    sensor: SensorConfig = SensorConfig()


class RenderConfig(Strict):
    """Where and how Blender runs: a separate interpreter that has ``bpy`` (numpy<2 pin)."""

    blender_python: str | None = None  # default: $SYNTHLOOP_BLENDER_PYTHON, then .venv-render
    workers: int = Field(default=1, ge=1, le=64)
    threads: int = Field(default=0, ge=0)  # 0: Blender picks (all cores)
    shard_size: int = Field(default=50, ge=1)


class DetectorConfig(Strict):
    backend: Literal["torchvision"] = "torchvision"
    architecture: Literal["mobilenet_v3_fpn", "resnet18_fpn", "resnet50_fpn"] = "mobilenet_v3_fpn"
    min_size: int = Field(default=240, ge=32)
    max_size: int = Field(default=320, ge=32)
    weights: str | None = None  # None: from scratch; "DEFAULT": torchvision COCO; or a path/URL
    box_score_thresh: float = Field(default=0.05, ge=0.0, le=1.0)
    anchor_sizes: list[int] | None = None


class TrainConfig(Strict):
    lr: float = Field(default=0.02, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=1e-4, ge=0)
    batch_size: int = Field(default=4, ge=1)
    epochs: int = Field(default=10, ge=1)
    max_minutes: float | None = Field(default=None, gt=0)
    warmup_steps: int = Field(default=50, ge=0)
    patience: int = Field(default=3, ge=1)
    augment: str = "flip"
    seed: int = 0
    num_threads: int = Field(default=2, ge=1)
    eval_every_epochs: int = Field(default=1, ge=1)


class ActiveConfig(Strict):
    strategy: Literal["random", "margin", "entropy", "least_confidence", "dbal", "coreset"] = "dbal"
    aggregation: Literal["sum", "max", "mean"] = "sum"
    k: int = Field(default=10, ge=1)
    beta: float = Field(default=2.0, ge=1.0)
    scope: Literal["unlabeled", "unlabeled+labeled"] = "unlabeled"
    cycles: int = Field(default=2, ge=0)
    seed: int = 0
    batch_size: int = Field(default=8, ge=1)


class GateConfig(Strict):
    metric: Literal["AP", "AP50", "AP75"] = "AP"
    min_improvement: float = 0.0
    require_same_val: bool = True


class TrackingConfig(Strict):
    uri: str | None = None  # default: sqlite:///<workspace>/mlruns.db
    experiment: str | None = None  # default: the pipeline name
    registered_model: str | None = None  # default: synthloop-<pipeline name>


class VersioningConfig(Strict):
    remote_url: str | None = None  # default: <workspace>/dvc-remote; s3://bucket/prefix for S3
    s3_endpoint_url: str | None = None
    push: bool = True


class PipelineConfig(Strict):
    name: str
    workspace: Path = Path("workspace/demo")
    parts: list[PartSpec]
    synthetic: DomainConfig
    pool: DomainConfig
    val: DomainConfig
    proxy_real: bool = True  # pool/val are a rendered stand-in for real photos (the demo)
    render: RenderConfig = RenderConfig()
    detector: DetectorConfig = DetectorConfig()
    pretrain: TrainConfig = TrainConfig()
    finetune: TrainConfig = TrainConfig(epochs=5, lr=0.005)
    active: ActiveConfig = ActiveConfig()
    gate: GateConfig = GateConfig()
    tracking: TrackingConfig = TrackingConfig()
    versioning: VersioningConfig = VersioningConfig()

    @property
    def class_names(self) -> list[str]:
        return [p.name for p in self.parts]

    @property
    def tracking_uri(self) -> str:
        return self.tracking.uri or f"sqlite:///{self.workspace.resolve() / 'mlruns.db'}"

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def registered_model_name(self) -> str:
        return self.tracking.registered_model or f"synthloop-{self.name}"


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: '{key}' is not a section")
    node[keys[-1]] = value


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys")
    return data


def load_config(path: Path | str, *, overlays: list[Path | str] = (),
                overrides: list[str] = ()) -> PipelineConfig:
    """Load a pipeline YAML, apply overlays then ``key.sub=value`` overrides, and validate.

    Relative mesh paths resolve against the YAML file's folder.
    """
    path = Path(path)
    tree = _read_yaml(path)
    for overlay in overlays:
        tree = _deep_merge(tree, _read_yaml(Path(overlay)))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
    for part in tree.get("parts", []) or []:
        if isinstance(part, dict) and part.get("mesh") and not Path(part["mesh"]).is_absolute():
            part["mesh"] = str((path.parent / part["mesh"]).resolve())
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{path}: " + "; ".join(lines)) from None
