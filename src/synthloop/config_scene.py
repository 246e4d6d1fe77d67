"""What is rendered and imported, in the config: parts (meshes, CAD), the randomized scene of a
rendered domain, an imported photo set, and how Blender runs. Re-exported by ``synthloop.config``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, Discriminator, Field, Tag, model_validator

from synthloop.config_base import Strict
from synthloop.config_steer import check_sampling_weights


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

