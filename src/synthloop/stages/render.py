"""Stage: render (or import) a domain into the workspace and return its ``DatasetRef``.

``synthetic`` -> data/synthetic (training renders, with boxes).
``val``       -> data/val (the fixed validation set; in the demo a rendered proxy domain).
``pool``      -> data/pool (images only); its ground truth goes to oracle/pool.json, out of the
                 model's reach, for the simulated oracle. Real deployments ingest photos instead.
Rerunning resumes: finished images are not rendered again.
Rendered synthetic images are reused only while their scene is unchanged: every run passes through
``render_domain``, whose per-image keys (scene plan, render settings, assets, meshes) decide what
is reused and what renders again, so a changed ``synthetic:`` section never leaves stale renders
behind a finished annotations.json. A synthetic set without render records (``raw/``) was put
there by hand and is used as it is, never rendered over. The validation set and the pool are
fixed for a workspace (the gate compares every model on the same photos; labels point into the
pool): once made, a changed ``val:`` / ``pool:`` section is a ``ConfigError`` naming the keys,
not a silent reuse.
The sections each set was made from are kept in <workspace>/state/sources.json.
Parts given as ``cad:`` are generated into <workspace>/cad/<key>/ first (a cache keyed by their
parameters) and rendered from there; STEP/IGES meshes are tessellated into
<workspace>/cad/import/<key>/ (keyed by the file's hash and the tessellation settings).
Once renders and labelled photos both exist, their box sizes are compared per class
(``warn_box_sizes``: a warning beyond the imported domain's ``box_size_factor``).
A pool or val section with a ``path`` (``ImportedDomain``) imports labelled photos instead
(YOLO or COCO, class map applied); an imported pool keeps its boxes in oracle/ like a rendered one.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path
from typing import Callable, Literal

from synthloop.artifacts import DatasetRef
from synthloop.config import ConfigError, ImportedDomain, PipelineConfig
from synthloop.data.coco import CocoDataset
from synthloop.io_utils import copy_if_missing
from synthloop.stages.workspace import Workspace, read_record, write_record
from synthloop.versioning.dvc_repo import dataset_md5

log = logging.getLogger(__name__)
Domain = Literal["synthetic", "pool", "val"]
ANNOTATIONS = "annotations.json"
SOURCES = "sources.json"  # under <workspace>/state/: the config section each data set was made from
# keys that change no pixel or box of an imported set (a warning threshold)
_NOT_DATA = ("box_size_factor",)


def dataset_ref(name: str, folder: Path) -> DatasetRef:
    ds = CocoDataset.load(folder / ANNOTATIONS)
    return DatasetRef(name=name, annotations=folder / ANNOTATIONS, image_root=ds.image_root,
                      md5=dataset_md5(folder), num_images=len(ds.images),
                      num_annotations=len(ds.annotations))


def run(cfg: PipelineConfig, domain: Domain, *, progress: bool = True) -> DatasetRef:
    from synthloop.synthesis.meshes import resolve_cad_files, resolve_cad_parts
    from synthloop.synthesis.render import render_domain

    ws = Workspace.of(cfg)
    domain_cfg = getattr(cfg, domain)
    final = ws.dataset_dir(domain)
    changed = section_changes(cfg, domain)
    if (final / ANNOTATIONS).exists():
        if domain != "synthetic" or isinstance(domain_cfg, ImportedDomain):
            if changed:
                raise fixed_set_changed(cfg, domain, changed)
            log.info("render %s: already in %s, skipped", domain, final)
            record_section(cfg, domain)
            return dataset_ref(domain, final)
        if not (final / "raw").is_dir():
            # no render records: these images were put here (or imported), not rendered from
            # the config, so the config cannot say which are stale; never overwrite them
            log.warning("render synthetic: %s has no render records (raw/), so it was not "
                        "rendered from this config: used as it is; delete it to render the "
                        "`synthetic:` section", final)
            return dataset_ref(domain, final)
        if changed:
            log.warning("render synthetic: %s changed since the renders in %s: rendering the "
                        "images whose scene changed, reusing the others", ", ".join(changed), final)
    if isinstance(domain_cfg, ImportedDomain):
        ref = import_domain(cfg, domain, domain_cfg, progress=progress)
        record_section(cfg, domain)
        warn_box_sizes(cfg)
        return ref
    parts = resolve_cad_files(resolve_cad_parts(cfg.parts, ws.cad), ws.cad / "import")
    if domain != "pool":
        if cfg.proxy_real and domain == "val":
            log.warning("validation set is a RENDERED PROXY of real photos (demo): "
                        "replace data/val with real labelled photos for real use")
        fresh = changed or not (final / ANNOTATIONS).exists()
        render_domain(domain_cfg, parts, cfg.class_names, final, render_cfg=cfg.render,
                      progress=progress)
        record_section(cfg, domain)
        if fresh:  # not on every nightly rerun that reused all renders
            warn_box_sizes(cfg)
        return dataset_ref(domain, final)

    log.warning("pool is a RENDERED PROXY of camera photos (demo); its ground truth is kept "
                "aside in oracle/ for a simulated oracle")
    staging = ws.staging / "pool"
    gt = render_domain(domain_cfg, parts, cfg.class_names, staging, render_cfg=cfg.render,
                       progress=progress)
    ref = ingest_pool(ws, gt)
    record_section(cfg, domain)
    return ref


def _section(cfg: PipelineConfig, domain: Domain) -> dict:
    """``domain``'s section as recorded: absolute paths relative to the workspace, so that a
    repository moved with its workspace inside (or a renamed home folder) changes nothing."""
    source = getattr(cfg, domain)
    data = source.model_dump(mode="json")
    if isinstance(source, ImportedDomain):
        data = {k: v for k, v in data.items() if k not in _NOT_DATA}
    return _relative(data, Workspace.of(cfg).root.resolve())


def _relative(value: object, base: Path) -> object:
    if isinstance(value, dict):
        return {k: _relative(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v, base) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        return os.path.relpath(value, base)
    return value


def _diff(old: object, new: object, prefix: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [key for k in sorted(set(old) | set(new), key=str)
                for key in _diff(old.get(k), new.get(k), f"{prefix}.{k}")]
    return [] if old == new else [prefix]


def _sources(cfg: PipelineConfig) -> Path:
    return Workspace.of(cfg).root / "state" / SOURCES


def section_changes(cfg: PipelineConfig, domain: Domain) -> list[str]:
    """The keys of ``cfg``'s ``domain`` section that differ from the section the workspace's set
    was made from (``[]`` when equal or when no record exists: a set made before records)."""
    before = (read_record(_sources(cfg)) or {}).get(domain)
    return [] if before is None else _diff(before, _section(cfg, domain), domain)


def record_section(cfg: PipelineConfig, domain: Domain) -> None:
    """Remember the section ``domain``'s set in the workspace was made from."""
    path = _sources(cfg)
    record = read_record(path) or {}
    section = _section(cfg, domain)
    if record.get(domain) != section:  # unchanged: the file is not rewritten
        write_record(path, {**record, domain: section})


def fixed_set_changed(cfg: PipelineConfig, domain: Domain, changed: list[str]) -> ConfigError:
    folder = Workspace.of(cfg).dataset_dir(domain)
    what = {"val": "the validation set is fixed for a workspace, so that the gate compares "
                   "every model on the same photos",
            "pool": "the pool is fixed for a workspace (labels and scores point into it); new "
                    "camera photos go in with `synthloop ingest`"}[domain]
    return ConfigError(
        f"{', '.join(changed)} changed since {folder} was made in this workspace: {what}. "
        f"Put the old values back, or start a new workspace (`workspace:` in the pipeline file)")


def warn_box_sizes(cfg: PipelineConfig) -> list[str]:
    """Compare rendered and photo box sizes per class (renders vs imported val / pool ground
    truth, once both exist), the renders' at the scale pretraining shows them; log and return
    a warning per class beyond ``box_size_factor``."""
    from synthloop.synthesis.scale_check import compare_box_sizes

    ws = Workspace.of(cfg)
    synthetic = ws.dataset_dir("synthetic") / ANNOTATIONS
    if not synthetic.exists():
        return []
    # crop_scale (lo, hi) is log-uniform: the detector sees renders at sqrt(lo * hi) in median
    scale = math.sqrt(math.prod(cfg.pretrain.crop_scale)) if cfg.pretrain.crop_scale else 1.0
    warnings = []
    for domain, path in (("val", ws.dataset_dir("val") / ANNOTATIONS),
                         ("pool", ws.oracle / "pool.json")):
        source = getattr(cfg, domain)
        if isinstance(source, ImportedDomain) and path.exists():
            found = compare_box_sizes(CocoDataset.load(synthetic), CocoDataset.load(path),
                                      factor=source.box_size_factor, train_scale=scale)
            warnings += [f"{domain} photos vs renders: {w}" for w in found]
    for w in warnings:
        log.warning("%s", w)
    return warnings


def import_domain(cfg: PipelineConfig, domain: Domain, source: ImportedDomain, *,
                  progress: bool = True) -> DatasetRef:
    """Import labelled photos as ``domain`` (class map applied, EXIF-rotated, downscaled)."""
    from synthloop.data.importers import apply_class_map, describe, import_dataset, load_source

    if domain == "synthetic":
        raise ValueError("the synthetic set is rendered, not imported")
    ws = Workspace.of(cfg)
    raw = load_source(source.format, source.path)
    mapped = apply_class_map(raw, cfg.class_names, source.class_map, source=str(source.path))
    target = ws.dataset_dir(domain) if domain == "val" else ws.staging / "pool-import"
    if target.exists() and domain != "val":
        shutil.rmtree(target)  # a staging copy from a crashed import: make it again
    written = import_dataset(mapped, target, max_side=source.max_side, progress=progress)
    log.info("import %s from %s: %s", domain, source.path, describe(written))
    if domain == "val":
        return dataset_ref(domain, target)
    ref = ingest_pool(ws, written)
    shutil.rmtree(target, ignore_errors=True)
    return ref


def copy_images(ds: CocoDataset, images: Path, *,
                after_each: Callable[[], None] | None = None) -> Path:
    """Copy ``ds``'s images into the folder ``images`` (made if missing), each one atomically
    and only if missing, so a rerun after a crash copies the rest. ``after_each`` runs after
    every image (a fault point). Returns ``images``."""
    images.mkdir(parents=True, exist_ok=True)
    for im in ds.images:
        copy_if_missing(ds.image_path(im), images / im.file_name)
        if after_each is not None:
            after_each()
    return images


def ingest_pool(ws: Workspace, gt: CocoDataset) -> DatasetRef:
    """Copy pool images into data/pool (no boxes) and keep their ground truth in oracle/."""
    final = ws.dataset_dir("pool")
    images = copy_images(gt, final / "images")
    gt.with_image_root(images).save(ws.oracle / "pool.json")
    gt.without_annotations().with_image_root(images).save(final / ANNOTATIONS)
    return dataset_ref("pool", final)
