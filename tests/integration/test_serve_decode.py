"""One decoder for both serving paths: the REST app and the MLflow pyfunc hand the model the same
upright, not-clipped picture for an EXIF-rotated JPEG and a 16-bit PNG (issue 13)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from synthloop.config import ServeConfig
from synthloop.serve.champion import ChampionWatcher, LoadedModel
from synthloop.serve.pyfunc import DetectorPyfunc

pytest.importorskip("fastapi")


class RecordingModel:
    """Keeps every image it is given; answers one box over the whole image, score = mean pixel."""

    def __init__(self) -> None:
        self.images: list[torch.Tensor] = []

    def __call__(self, images):
        self.images.extend(images)
        return [{"boxes": torch.tensor([[0.0, 0.0, float(im.shape[2]), float(im.shape[1])]]),
                 "labels": torch.tensor([1]), "scores": im.mean().reshape(1)} for im in images]


def exif_rotated_jpeg() -> tuple[bytes, np.ndarray]:
    """A 64x48 JPEG tagged orientation 6, and its upright pixels (48 wide, 64 high)."""
    yy, xx = np.mgrid[0:48, 0:64]
    arr = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=-1).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: show the stored pixels rotated 90 degrees clockwise
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    stored = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))  # as stored
    return buf.getvalue(), np.rot90(stored, k=-1)  # k=-1: clockwise


def sixteen_bit_png() -> tuple[bytes, np.ndarray]:
    """A 16-bit gray PNG of 40000s and 1000s, and its 8-bit RGB: the top byte (156 and 3)."""
    arr = np.full((20, 30), 40000, dtype=np.uint16)
    arr[:, :10] = 1000
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")  # mode I;16
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I")
    expected = np.repeat((arr >> 8).astype(np.uint8)[..., None], 3, axis=-1)
    return buf.getvalue(), expected


@pytest.mark.parametrize("make", [exif_rotated_jpeg, sixteen_bit_png], ids=["exif-jpeg", "png16"])
def test_rest_and_pyfunc_decode_alike(make):
    from fastapi.testclient import TestClient

    from synthloop.serve.app import create_app

    data, upright = make()
    ctype = "image/jpeg" if data[:2] == b"\xff\xd8" else "image/png"

    rest_model = RecordingModel()
    watcher = ChampionWatcher(None, "tiny")
    watcher.current = LoadedModel(name="tiny", version="1", model=rest_model, class_names=["part"])
    with TestClient(create_app(watcher, ServeConfig(min_score=0.0), start_watcher=False)) as http:
        r = http.post("/predict", content=data, headers={"content-type": ctype})
    assert r.status_code == 200, r.text
    rest = r.json()

    pyfunc = DetectorPyfunc()
    pyfunc.model = RecordingModel()
    frame = pd.DataFrame([{"image_b64": base64.b64encode(data).decode()}])
    (row,) = pyfunc.predict(None, frame).to_dict("records")

    (rest_in,), (pyfunc_in,) = rest_model.images, pyfunc.model.images
    expected = torch.from_numpy(upright.copy()).permute(2, 0, 1).float() / 255.0
    assert torch.equal(rest_in, pyfunc_in), "the two serving paths decoded the image differently"
    assert torch.allclose(pyfunc_in, expected, atol=1e-6), "not the upright, top-byte picture"
    height, width = upright.shape[:2]
    assert (rest["width"], rest["height"]) == (width, height)
    (det,) = rest["detections"]
    assert det["box"] == row["boxes"][0] == [0.0, 0.0, float(width), float(height)]
    assert det["score"] == pytest.approx(row["scores"][0], abs=1e-4)


def test_pyfunc_reads_image_paths_with_the_same_decoder(tmp_path):
    data, upright = exif_rotated_jpeg()
    path = tmp_path / "turned.jpg"
    path.write_bytes(data)
    pyfunc = DetectorPyfunc()
    pyfunc.model = RecordingModel()
    pyfunc.predict(None, pd.DataFrame([{"image_path": str(path)}]))
    (seen,) = pyfunc.model.images
    assert tuple(seen.shape) == (3, *upright.shape[:2])


def test_pyfunc_refuses_what_rest_refuses():
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    pyfunc = DetectorPyfunc()
    pyfunc.model = RecordingModel()
    frame = pd.DataFrame([{"image_b64": base64.b64encode(gif.getvalue()).decode()}])
    with pytest.raises(ValueError, match="unsupported image format GIF"):
        pyfunc.predict(None, frame)
