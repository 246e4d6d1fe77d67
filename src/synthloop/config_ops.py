"""How the platform operates, in the config: export, the gate, tracking, versioning, ingest,
monitoring and triggers, labelling, serving, Dask, CAD-change retraining and the runtime
device. Re-exported by ``synthloop.config``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from synthloop.config_base import Strict


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

