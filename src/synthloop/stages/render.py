"""Stage: render a domain with Blender into the workspace and return its ``DatasetRef``.

``synthetic`` -> data/synthetic (training renders, with boxes).
``val``       -> data/val (the fixed validation set; in the demo a rendered proxy domain).
``pool``      -> data/pool (images only); its ground truth goes to oracle/pool.json, out of the
                 model's reach, for the simulated oracle. Real deployments ingest photos instead.
Rerunning resumes: finished images are not rendered again.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Literal

from synthloop.artifacts import DatasetRef
from synthloop.config import PipelineConfig
from synthloop.data.coco import CocoDataset
from synthloop.stages.workspace import Workspace
from synthloop.versioning.dvc_repo import dataset_md5

log = logging.getLogger(__name__)
Domain = Literal["synthetic", "pool", "val"]
ANNOTATIONS = "annotations.json"


def dataset_ref(name: str, folder: Path) -> DatasetRef:
    ds = CocoDataset.load(folder / ANNOTATIONS)
    return DatasetRef(name=name, annotations=folder / ANNOTATIONS, image_root=ds.image_root,
                      md5=dataset_md5(folder), num_images=len(ds.images),
                      num_annotations=len(ds.annotations))


def run(cfg: PipelineConfig, domain: Domain, *, progress: bool = True) -> DatasetRef:
    from synthloop.synthesis.render import render_domain

    ws = Workspace.of(cfg)
    domain_cfg = getattr(cfg, domain)
    final = ws.dataset_dir(domain)
    if (final / ANNOTATIONS).exists():
        log.info("render %s: already in %s, skipped", domain, final)
        return dataset_ref(domain, final)
    if domain != "pool":
        if cfg.proxy_real and domain == "val":
            log.warning("validation set is a RENDERED PROXY of real photos (demo): "
                        "replace data/val with real labelled photos for real use")
        render_domain(domain_cfg, cfg.parts, cfg.class_names, final, render_cfg=cfg.render,
                      progress=progress)
        return dataset_ref(domain, final)

    log.warning("pool is a RENDERED PROXY of camera photos (demo); its ground truth is kept "
                "aside in oracle/ for a simulated oracle")
    staging = ws.staging / "pool"
    gt = render_domain(domain_cfg, cfg.parts, cfg.class_names, staging, render_cfg=cfg.render,
                       progress=progress)
    return ingest_pool(ws, gt)


def ingest_pool(ws: Workspace, gt: CocoDataset) -> DatasetRef:
    """Copy pool images into data/pool (no boxes) and keep their ground truth in oracle/."""
    final = ws.dataset_dir("pool")
    images = final / "images"
    images.mkdir(parents=True, exist_ok=True)
    for im in gt.images:
        dst = images / im.file_name
        if not dst.exists():
            tmp = dst.with_name(f".{dst.name}.tmp")
            shutil.copyfile(gt.image_path(im), tmp)
            tmp.replace(dst)
    gt.with_image_root(images).save(ws.oracle / "pool.json")
    gt.without_annotations().with_image_root(images).save(final / ANNOTATIONS)
    return dataset_ref("pool", final)
