"""Procedural and folder backgrounds: seeded, deterministic, clear errors."""

import io

import numpy as np
import pytest
from PIL import Image

from synthloop.synthesis.backgrounds import (BackgroundError, get_background_source,
                                             render_background)


@pytest.mark.parametrize("spec", ["procedural:workshop", "procedural:factory"])
def test_procedural_is_deterministic_and_sized(spec):
    src = get_background_source(spec)
    choice = src.choose(np.random.default_rng(3))
    a = np.asarray(render_background(choice, 100, 64))
    b = np.asarray(render_background(choice, 100, 64))
    assert a.shape == (64, 100, 3) and np.array_equal(a, b)
    other = np.asarray(render_background(src.choose(np.random.default_rng(4)), 100, 64))
    assert not np.array_equal(a, other)


def test_styles_look_different():
    mean = {}
    for style in ("workshop", "factory"):
        src = get_background_source(f"procedural:{style}")
        imgs = [np.asarray(src.render(src.choose(np.random.default_rng(i)), 64, 48), float)
                for i in range(8)]
        mean[style] = np.mean([im.reshape(-1, 3).mean(0) for im in imgs], 0)
    # workshop is warm (red > blue), factory cool grey-blue-green
    assert mean["workshop"][0] - mean["workshop"][2] > mean["factory"][0] - mean["factory"][2]


def test_unknown_name_lists_known():
    with pytest.raises(ValueError, match="procedural:workshop.*procedural:factory"):
        get_background_source("procedural:beach")
    with pytest.raises(BackgroundError, match="not a folder"):
        get_background_source("/no/such/folder")


def test_folder_source(tmp_path):
    with pytest.raises(BackgroundError, match="has no images"):
        get_background_source(str(tmp_path))
    Image.new("RGB", (50, 30), (200, 10, 10)).save(tmp_path / "a.png")
    src = get_background_source(str(tmp_path))
    choice = src.choose(np.random.default_rng(0))
    img = render_background(choice, 100, 64)
    assert img.size == (100, 64) and choice["file"] == "a.png"
    assert np.asarray(img)[..., 0].mean() > 150


@pytest.mark.slow
def test_s3_prefix_source(tmp_path, monkeypatch):
    """Photos under s3://bucket/prefix (moto on loopback): listed, downloaded once, cached."""
    import boto3

    from tests_support import start_moto

    monkeypatch.setenv("SYNTHLOOP_CACHE_DIR", str(tmp_path))
    server, endpoint = start_moto(monkeypatch)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="photos")
        buf = io.BytesIO()
        Image.new("RGB", (60, 40), (10, 200, 10)).save(buf, format="PNG")
        s3.put_object(Bucket="photos", Key="coco/train/a.png", Body=buf.getvalue())
        s3.put_object(Bucket="photos", Key="coco/train/readme.txt", Body=b"not an image")
        s3.put_object(Bucket="photos", Key="other/b.png", Body=buf.getvalue())
        src = get_background_source("s3://photos/coco")
        assert src.files == ["train/a.png"]
        choice = src.choose(np.random.default_rng(0))
        img = render_background(choice, 30, 20)
        assert img.size == (30, 20) and np.asarray(img)[..., 1].mean() > 150
        assert (tmp_path / "s3" / "photos" / "coco" / "train" / "a.png").is_file()
        with pytest.raises(BackgroundError, match="s3://photos/empty has no images"):
            get_background_source("s3://photos/empty")
    finally:
        server.stop()
