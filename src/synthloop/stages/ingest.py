"""Stage: ingest new camera images into data/pool from a folder or an S3 prefix; version them.

Each candidate file is validated before it joins the pool: size in bytes, decodable as an image
(Pillow), each side within [min_side, max_side], and not a duplicate of a pool image (sha256 of
the bytes). Rejections are recorded with their reason; nothing is deleted at the source.
Accepted images get new pool ids and are written as ``ingest_<sha16>.<ext>``; the pool's COCO
json gains them without boxes, and DVC commits a new data version tagged ``pool-<n>``.

A source may hold an ``annotations.json`` with ground truth of its images (a simulated camera:
the demo and the tests); those boxes go to ``oracle/pool.json`` for the simulated oracle only.
Images it does not list get no ground truth: the simulated oracle cannot label them, so the
query leaves them out unless ``labeling.fallback_oracle`` sends them to people
(stages/label_routing.py).

Credentials for S3 come from the environment or ``ingest.s3_profile``; never from config.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from synthloop.config import IngestConfig, PipelineConfig
from synthloop.data.coco import CocoDataset, CocoImage, categories_for
from synthloop.data.images import upright_size
from synthloop.io_utils import atomic_write_bytes
from synthloop.stages.workspace import Workspace, read_record, write_record

log = logging.getLogger(__name__)
ANNOTATIONS = "annotations.json"
FORMATS = {"JPEG": ".jpg", "PNG": ".png"}


@dataclass(frozen=True)
class IngestResult:
    source: str
    added: tuple[int, ...]  # new pool image ids
    rejected: tuple[tuple[str, str], ...]  # (source key, reason)
    duplicates: int
    pool_size: int
    data_md5: str | None  # DVC data version after the commit (None: nothing added)
    with_ground_truth: int = 0  # added images the source's annotations.json has boxes for

    def to_dict(self) -> dict:
        return asdict(self)


def validate_image(data: bytes, cfg: IngestConfig) -> tuple[str | None, tuple[int, int], str]:
    """(reason it is refused or None, (width, height), file extension) of one file's bytes."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > cfg.max_bytes:
        return f"too large ({len(data)} bytes > {cfg.max_bytes})", (0, 0), ""
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, size = im.format, upright_size(im)  # what people and the model see (EXIF)
            im.load()  # decodes every pixel: truncated files fail here
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        return f"not a decodable image ({type(exc).__name__})", (0, 0), ""
    if fmt not in FORMATS:
        return f"unsupported format {fmt} (known: {', '.join(FORMATS)})", size, ""
    w, h = size
    if min(w, h) < cfg.min_side or max(w, h) > cfg.max_side:
        return f"size {w}x{h} outside [{cfg.min_side}, {cfg.max_side}] pixels", size, ""
    return None, size, FORMATS[fmt]


def _s3_client(cfg: IngestConfig):
    import boto3

    session = boto3.Session(profile_name=cfg.s3_profile) if cfg.s3_profile else boto3.Session()
    return session.client("s3", endpoint_url=cfg.s3_endpoint_url)


def _split_s3(url: str) -> tuple[str, str]:
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"ingest.source {url!r}: expected s3://bucket/prefix")
    return bucket, prefix


def list_source(source: str, cfg: IngestConfig
                ) -> Iterator[tuple[str, int, Callable[[], bytes]]]:
    """Yield (key, size in bytes, read() -> bytes) for every file at the source, sorted by key."""
    exts = tuple(e.lower() for e in cfg.extensions)
    if source.startswith("s3://"):
        bucket, prefix = _split_s3(source)
        client = _s3_client(cfg)
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        objects = sorted((o for p in pages for o in p.get("Contents", [])), key=lambda o: o["Key"])
        for obj in objects:
            key = obj["Key"]
            if key.lower().endswith(exts):
                yield (f"s3://{bucket}/{key}", int(obj["Size"]),
                       lambda k=key: client.get_object(Bucket=bucket, Key=k)["Body"].read())
        return
    root = Path(source)
    if not root.is_dir():
        raise FileNotFoundError(f"ingest.source {root} is not a folder")
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts):
        yield str(path), path.stat().st_size, path.read_bytes


def _read_source_annotations(source: str, cfg: IngestConfig) -> dict | None:
    try:
        if source.startswith("s3://"):
            bucket, prefix = _split_s3(source)
            key = f"{prefix.rstrip('/')}/{ANNOTATIONS}" if prefix else ANNOTATIONS
            return json.loads(_s3_client(cfg).get_object(Bucket=bucket, Key=key)["Body"].read())
        path = Path(source) / ANNOTATIONS
        return json.loads(path.read_text()) if path.exists() else None
    except Exception as exc:  # no ground truth at the source is the normal case
        log.debug("ingest: no annotations at %s (%s)", source, exc)
        return None


def _pool_hashes(pool: CocoDataset, known: dict[str, str]) -> dict[str, str]:
    """sha256 -> file name of every pool image (cached in the ingest record)."""
    have = set(known.values())
    for im in pool.images:
        if im.file_name not in have:
            known[hashlib.sha256(pool.image_path(im).read_bytes()).hexdigest()] = im.file_name
    return known


def run(cfg: PipelineConfig, *, source: str | None = None) -> IngestResult:
    """Ingest what is new at ``source`` (default ``cfg.ingest.source``); idempotent."""
    from synthloop.versioning.remote import commit_and_push

    source = source or cfg.ingest.source
    if not source:
        raise ValueError("ingest: no source (set ingest.source to a folder or s3://bucket/prefix)")
    ws = Workspace.of(cfg)
    state_path = ws.root / "state" / "ingest" / "state.json"
    state = read_record(state_path) or {"seen": {}, "hashes": {}, "batches": 0}
    pool_dir = ws.dataset_dir("pool")
    pool_json = pool_dir / ANNOTATIONS
    pool = (CocoDataset.load(pool_json) if pool_json.exists() else
            CocoDataset([], [], categories_for(cfg.class_names), pool_dir / "images"))
    hashes = _pool_hashes(pool, state["hashes"])
    next_id = max((im.id for im in pool.images), default=0) + 1
    added: list[CocoImage] = []
    by_source_name: dict[str, int] = {}
    rejected: list[tuple[str, str]] = []
    duplicates = 0
    for key, size, read in list_source(source, cfg.ingest):
        if key in state["seen"]:
            continue
        if size > cfg.ingest.max_bytes:
            reason: str | None = f"too large ({size} bytes > {cfg.ingest.max_bytes})"
            data = b""
        else:
            data = read()
            reason, (w, h), ext = validate_image(data, cfg.ingest)
        if reason is None:
            digest = hashlib.sha256(data).hexdigest()
            if digest in hashes:
                reason = f"duplicate of pool image {hashes[digest]}"
                duplicates += 1
        if reason is not None:
            rejected.append((key, reason))
            state["seen"][key] = {"rejected": reason}
            continue
        name = f"ingest_{digest[:16]}{ext}"
        atomic_write_bytes(pool_dir / "images" / name, data)
        hashes[digest] = name
        added.append(CocoImage(next_id, name, w, h, {"source": key}))
        by_source_name[Path(key).name] = next_id
        state["seen"][key] = {"id": next_id}
        next_id += 1
    md5, truth = None, 0
    if added:
        pool = CocoDataset(pool.images + added, pool.annotations, pool.categories, pool.image_root)
        pool.save(pool_json)
        truth = _add_ground_truth(ws, cfg, _read_source_annotations(source, cfg.ingest),
                                  by_source_name, added)
        state["batches"] += 1
        md5 = commit_and_push(cfg, f"ingest: +{len(added)} pool images from {source} "
                                   f"({len(rejected)} rejected)", tag=f"pool-{state['batches']}")
    state["hashes"] = hashes
    write_record(state_path, state)
    result = IngestResult(source, tuple(im.id for im in added), tuple(rejected), duplicates,
                          len(pool.images), md5, truth)
    _log_batch(ws, result)
    log.info("ingest: +%d images, %d rejected (%d duplicates); pool %d", len(added),
             len(rejected), duplicates, len(pool.images))
    if added and truth < len(added) and cfg.labeling.oracle == "simulated":
        log.warning("ingest: %d of the %d new images have no ground truth (no annotations.json "
                    "entry): the simulated oracle cannot label them, so the query %s",
                    len(added) - truth, len(added),
                    f"sends them to {cfg.labeling.fallback_oracle}" if cfg.labeling.fallback_oracle
                    else "leaves them out (set labeling.fallback_oracle=labelstudio or cvat to "
                         "have people label them)")
    return result


def _add_ground_truth(ws: Workspace, cfg: PipelineConfig, raw: dict | None,
                      by_name: dict[str, int], added: list[CocoImage]) -> int:
    """Simulated camera only: copy the source's boxes of accepted images into oracle/pool.json.

    Only images the source's json lists join the oracle (one listed without boxes is a known
    empty image); returns how many did.
    """
    if not raw:
        return 0
    oracle_path = ws.oracle / "pool.json"
    oracle = (CocoDataset.load(oracle_path, ws.dataset_dir("pool") / "images")
              if oracle_path.exists() else
              CocoDataset([], [], categories_for(cfg.class_names), ws.dataset_dir("pool") / "images"))
    src = CocoDataset.from_dict(raw, image_root=Path("."), source="ingest annotations")
    src_ids = {im.id: by_name[Path(im.file_name).name] for im in src.images
               if Path(im.file_name).name in by_name}
    next_ann = max((a.id for a in oracle.annotations), default=0) + 1
    anns = list(oracle.annotations)
    for a in src.annotations:
        if a.image_id in src_ids:
            anns.append(replace(a, id=next_ann, image_id=src_ids[a.image_id]))
            next_ann += 1
    known = set(src_ids.values())
    listed = [im for im in added if im.id in known]
    CocoDataset(oracle.images + listed, anns, oracle.categories, oracle.image_root
                ).save(oracle_path)
    return len(listed)


def _log_batch(ws: Workspace, result: IngestResult) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    write_record(ws.root / "state" / "ingest" / f"batch-{stamp}.json", result.to_dict())


def ingested_ids(cfg: PipelineConfig) -> set[int]:
    """Pool ids that came in through ingest (not rendered/imported with the first pool)."""
    state = read_record(Workspace.of(cfg).root / "state" / "ingest" / "state.json") or {}
    return {int(v["id"]) for v in state.get("seen", {}).values() if "id" in v}
