"""Ingest of new camera images into data/pool: validation, duplicates, DVC versions, S3."""

from __future__ import annotations

import io
import json
import subprocess

import numpy as np
import pytest
from PIL import Image

from synthloop.config import load_config
from synthloop.data.coco import CocoDataset, categories_for
from synthloop.stages import ingest
from tests_support import DEMO_CONFIG


def jpeg(seed: int, size=(100, 80)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def cfg(tmp_path):
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path / 'ws'}",
                                              f"ingest.source={tmp_path / 'camera'}",
                                              "ingest.max_bytes=200000", "ingest.min_side=64"])
    pool = tmp_path / "ws" / "data" / "pool"
    (pool / "images").mkdir(parents=True)
    (pool / "images" / "000001.jpg").write_bytes(jpeg(0))
    ds = CocoDataset.from_dict({"images": [{"id": 1, "file_name": "000001.jpg", "width": 100,
                                            "height": 80}], "annotations": [],
                                "categories": categories_for(cfg.class_names)},
                               image_root=pool / "images")
    ds.save(pool / "annotations.json")
    (tmp_path / "camera").mkdir()
    return cfg


def git_tags(cfg) -> list[str]:
    return subprocess.run(["git", "-C", str(cfg.workspace), "tag"], capture_output=True,
                          text=True, check=True).stdout.split()


def test_validation_duplicates_and_a_dvc_version(cfg, tmp_path):
    cam = tmp_path / "camera"
    (cam / "a.jpg").write_bytes(jpeg(1))
    (cam / "b.jpg").write_bytes(jpeg(2))
    (cam / "same_as_pool.jpg").write_bytes(jpeg(0))           # duplicate of a pool image
    (cam / "twin_of_a.jpg").write_bytes(jpeg(1))              # duplicate within the batch
    (cam / "broken.jpg").write_bytes(jpeg(3)[:300])           # truncated: not decodable
    (cam / "text.png").write_bytes(b"not an image at all")
    (cam / "tiny.jpg").write_bytes(jpeg(4, size=(40, 40)))    # below min_side
    (cam / "huge.png").write_bytes(b"\x89PNG" + bytes(300000))  # above max_bytes
    (cam / "notes.txt").write_text("ignored: not an image extension")
    res = ingest.run(cfg)
    assert len(res.added) == 2 and res.duplicates == 2 and res.pool_size == 3
    reasons = dict((k.rsplit("/", 1)[-1], r) for k, r in res.rejected)
    assert set(reasons) == {"same_as_pool.jpg", "twin_of_a.jpg", "broken.jpg", "text.png",
                            "tiny.jpg", "huge.png"}
    assert "duplicate of pool image 000001.jpg" in reasons["same_as_pool.jpg"]
    assert "not a decodable image" in reasons["broken.jpg"]
    assert "outside" in reasons["tiny.jpg"] and "too large" in reasons["huge.png"]
    pool = CocoDataset.load(cfg.workspace / "data" / "pool" / "annotations.json")
    assert [im.id for im in pool.images] == [1, 2, 3]
    assert all(pool.image_path(im).exists() for im in pool.images)
    assert res.data_md5 and "pool-1" in git_tags(cfg)
    assert ingest.ingested_ids(cfg) == {2, 3}

    again = ingest.run(cfg)  # nothing new: no commit, no tag
    assert again.added == () and again.rejected == () and "pool-2" not in git_tags(cfg)
    (cam / "c.jpg").write_bytes(jpeg(5))
    assert ingest.run(cfg).added == (4,) and "pool-2" in git_tags(cfg)


def test_simulated_camera_ground_truth_goes_to_the_oracle_only(cfg, tmp_path):
    cam = tmp_path / "camera"
    (cam / "a.jpg").write_bytes(jpeg(1))
    (cam / "annotations.json").write_text(json.dumps({
        "images": [{"id": 7, "file_name": "a.jpg", "width": 100, "height": 80}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [1, 2, 30, 20],
                         "area": 600, "iscrowd": 0}],
        "categories": categories_for(cfg.class_names)}))
    res = ingest.run(cfg)
    oracle = CocoDataset.load(cfg.workspace / "oracle" / "pool.json")
    assert [a.image_id for a in oracle.annotations] == [res.added[0]]
    pool = CocoDataset.load(cfg.workspace / "data" / "pool" / "annotations.json")
    assert pool.annotations == []  # the model never sees the boxes


def test_only_images_the_source_lists_get_ground_truth(cfg, tmp_path):
    """An image missing from annotations.json is not a known empty image: the simulated
    oracle must not label it (with no boxes), so it stays out of oracle/pool.json."""
    cam = tmp_path / "camera"
    (cam / "a.jpg").write_bytes(jpeg(1))
    (cam / "b.jpg").write_bytes(jpeg(2))  # not in annotations.json
    (cam / "annotations.json").write_text(json.dumps({
        "images": [{"id": 7, "file_name": "a.jpg", "width": 100, "height": 80}],
        "annotations": [], "categories": categories_for(cfg.class_names)}))
    res = ingest.run(cfg)
    assert len(res.added) == 2 and res.with_ground_truth == 1
    oracle = CocoDataset.load(cfg.workspace / "oracle" / "pool.json")
    assert [im.id for im in oracle.images] == [res.added[0]]  # a.jpg (sources sort by name)


def test_missing_source_is_an_error(cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        ingest.run(cfg, source=str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_ingest_from_an_s3_prefix(cfg, moto_s3):
    endpoint, s3, bucket = moto_s3
    s3.put_object(Bucket=bucket, Key="line-3/2026/a.jpg", Body=jpeg(11))
    s3.put_object(Bucket=bucket, Key="line-3/2026/b.jpg", Body=jpeg(0))  # duplicate
    s3.put_object(Bucket=bucket, Key="line-3/2026/c.jpg", Body=b"garbage")
    s3.put_object(Bucket=bucket, Key="other-line/d.jpg", Body=jpeg(12))  # not our prefix
    cfg = cfg.model_copy(update={"ingest": cfg.ingest.model_copy(update={
        "source": f"s3://{bucket}/line-3/", "s3_endpoint_url": endpoint})})
    res = ingest.run(cfg)
    assert len(res.added) == 1 and res.duplicates == 1
    assert {k for k, _ in res.rejected} == {f"s3://{bucket}/line-3/2026/b.jpg",
                                            f"s3://{bucket}/line-3/2026/c.jpg"}
    assert ingest.run(cfg).added == ()
