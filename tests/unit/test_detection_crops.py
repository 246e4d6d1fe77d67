"""Training on crops at evaluation scale, the high-resolution MobileNet FPN, anchor settings."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from synthloop.config import DetectorConfig, TrainConfig
from synthloop.data.coco import CocoAnnotation, CocoDataset, CocoImage, categories_for
from synthloop.detection import build_detector, train
from synthloop.detection.datasets import DetectionDataset


def _dataset(tmp_path, n=2, size=(400, 200)):
    (tmp_path / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(1, n + 1):
        Image.new("RGB", size, (90, 90, 90)).save(tmp_path / "images" / f"{i}.png")
        images.append(CocoImage(i, f"{i}.png", *size))
        anns.append(CocoAnnotation(i, i, 1, (100.0, 50.0, 20.0, 10.0), 200.0))
    return CocoDataset(images, anns, categories_for(["part"]), tmp_path / "images")


def test_crops_come_at_the_evaluation_scale(tmp_path):
    ds = _dataset(tmp_path)
    # the detector resizes a 400x200 image to 800x400 at evaluation (min_size 400, max 800)
    data = DetectionDataset(ds, crop=128, resize=(400, 800), seed=3)
    seen_box = False
    for _ in range(20):
        image, target = data[0]
        assert tuple(image.shape) == (3, 128, 128)
        if len(target["boxes"]):
            x1, y1, x2, y2 = target["boxes"][0].tolist()
            if min(x1, y1) <= 0 or x2 >= 128 or y2 >= 128:
                continue  # cut by the crop's edge (kept when at least half is inside)
            seen_box = True
            assert (x2 - x1, y2 - y1) == pytest.approx((40.0, 20.0), abs=0.01)  # 2x, like eval
    assert seen_box


def test_crop_scale_shows_parts_at_a_range_of_sizes(tmp_path):
    ds = _dataset(tmp_path)  # the 20x10 box is 40x20 at evaluation scale (2x)
    data = DetectionDataset(ds, crop=128, resize=(400, 800), seed=3, crop_scale=(0.5, 0.75))
    widths = []
    for _ in range(40):
        image, target = data[0]
        assert tuple(image.shape) == (3, 128, 128)
        for x1, y1, x2, y2 in target["boxes"].tolist():
            if min(x1, y1) > 0 and x2 < 128 and y2 < 128:  # not cut by the crop's edge
                widths.append(x2 - x1)
                assert (y2 - y1) == pytest.approx((x2 - x1) / 2, abs=0.05)
    assert len(widths) > 10
    assert min(widths) >= 20.0 - 0.01 and max(widths) <= 30.0 + 0.01  # 2x times 0.5..0.75
    assert max(widths) - min(widths) > 5.0  # a range, not one size


def test_crop_near_parts_sets_the_share_of_patches_with_a_part(tmp_path):
    # one 20x10 box in an 800x400 image (evaluation scale 1): a 128 px patch anywhere holds it
    # about 1 time in 20
    ds = _dataset(tmp_path, n=1, size=(800, 400))

    def share_with_box(near: float) -> float:
        data = DetectionDataset(ds, crop=128, resize=(400, 800), seed=5, crop_near_parts=near)
        return sum(len(data[0][1]["boxes"]) > 0 for _ in range(200)) / 200

    assert share_with_box(1.0) > 0.9  # centred within 0.4 patch of the box: (nearly) always in
    assert share_with_box(0.0) < 0.15  # anywhere: mostly background
    assert 0.35 < share_with_box(0.5) < 0.7
    with pytest.raises(ValueError, match="crop_near_parts"):
        DetectionDataset(ds, crop=128, resize=(400, 800), crop_near_parts=1.5)
    with pytest.raises(ValueError):
        TrainConfig(crop=64, crop_near_parts=-0.1)


def test_crop_scale_is_checked():
    with pytest.raises(ValueError, match="crop_scale needs crop"):
        TrainConfig(crop_scale=(0.5, 1.0))
    with pytest.raises(ValueError, match="lo <= hi"):
        TrainConfig(crop=64, crop_scale=(1.0, 0.5))


def test_crop_is_never_larger_than_the_image(tmp_path):
    data = DetectionDataset(_dataset(tmp_path, size=(60, 40)), crop=512, resize=(40, 60))
    image, _ = data[0]
    assert tuple(image.shape) == (3, 40, 60)


def test_crop_needs_the_detector_resize(tmp_path):
    with pytest.raises(ValueError, match="crop needs resize"):
        DetectionDataset(_dataset(tmp_path), crop=64)


def _spied_detector() -> tuple[torch.nn.Module, list]:
    """A small detector whose transform records (first image's shape, skip_resize) per call."""
    model = build_detector(cfg=DetectorConfig(min_size=100, max_size=200), num_classes=1)
    seen: list = []
    real_forward = model.transform.forward

    def spy(images, targets=None):
        seen.append((tuple(images[0].shape), model.transform._skip_resize))
        return real_forward(images, targets)

    model.transform.forward = spy
    return model, seen


def test_training_with_crops_skips_the_resize_only_while_training(tmp_path):
    ds = _dataset(tmp_path / "d")
    model, seen = _spied_detector()
    train(model, ds, cfg=TrainConfig(epochs=1, batch_size=2, crop=64, warmup_steps=0),
          val_ds=None, checkpoint_dir=tmp_path / "ck", progress=False)
    assert seen and all(shape == (3, 64, 64) and skip for shape, skip in seen)
    assert model.transform._skip_resize is False


def test_patches_grow_to_crop_final_for_the_last_share_of_the_epochs():
    cfg = TrainConfig(epochs=12, crop=384, crop_final=512)  # crop_final_from 2/3: from epoch 9
    assert [cfg.crop_for_epoch(e) for e in range(1, 13)] == [384] * 8 + [512] * 4
    half = TrainConfig(epochs=3, crop=64, crop_final=96, crop_final_from=0.5)
    assert [half.crop_for_epoch(e) for e in (1, 2, 3)] == [64, 64, 96]  # round(1.5) = 2
    assert TrainConfig(epochs=3, crop=64).crop_for_epoch(3) == 64
    with pytest.raises(ValueError, match="crop_final needs crop"):
        TrainConfig(crop_final=512)
    with pytest.raises(ValueError, match="crop_final_from"):
        TrainConfig(crop=64, crop_final=96, crop_final_from=1.0)


def test_training_switches_to_the_final_patches_and_resumes_old_checkpoints(tmp_path):
    from synthloop.detection.training import _fingerprint

    ds = _dataset(tmp_path / "d")
    model, seen = _spied_detector()
    cfg = TrainConfig(epochs=3, batch_size=2, crop=48, crop_final=64, warmup_steps=0)
    train(model, ds, cfg=cfg, val_ds=None, checkpoint_dir=tmp_path / "ck", progress=False)
    # epochs 1-2: 48 px, epoch 3: 64 px (one step an epoch)
    assert [shape for shape, _ in seen] == [(3, 48, 48)] * 2 + [(3, 64, 64)]
    # a run without the option keeps the fingerprint it had before the option existed
    plain = TrainConfig(epochs=3, batch_size=2, crop=48)
    assert _fingerprint(model, ds, plain) == _fingerprint(
        model, ds, plain.model_copy(update={"crop_final_from": 0.5}))
    assert _fingerprint(model, ds, plain) != _fingerprint(model, ds, cfg)


def test_high_resolution_mobilenet_has_stride_8_level_and_16px_anchors():
    model = build_detector(cfg=DetectorConfig(architecture="mobilenet_v3_hr_fpn",
                                              min_size=128, max_size=128), num_classes=2)
    feats = model.backbone(torch.zeros(1, 3, 128, 128))
    assert feats["0"].shape[-1] == 16  # stride 8
    assert model.rpn.anchor_generator.sizes[0] == (16,)
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 128, 128)])
    assert out[0]["probs"].shape[1] == 3


def test_aspect_ratios_and_anchor_sizes_from_config():
    cfg = DetectorConfig(anchor_sizes=[16, 32], aspect_ratios=[0.25, 1.0, 4.0])
    model = build_detector(cfg=cfg, num_classes=1)
    gen = model.rpn.anchor_generator
    assert gen.sizes[0] == (16, 32) and gen.aspect_ratios[0] == (0.25, 1.0, 4.0)
    assert model.rpn.head.cls_logits.out_channels == 6
    with pytest.raises(ValueError, match="must be positive"):
        build_detector(cfg=DetectorConfig(aspect_ratios=[0.0]), num_classes=1)

