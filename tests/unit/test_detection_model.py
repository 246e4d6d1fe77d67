"""Detector building, one-pass scoring (probs + features) and checkpoints, on tiny images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from synthloop.config import DetectorConfig
from synthloop.data.coco import CocoDataset, categories_for
from synthloop.detection import (
    ImageScores,
    RoIHeadsWithProbs,
    build_detector,
    load_checkpoint,
    predict,
    predict_with_probs_and_features,
    save_checkpoint,
)

TINY = dict(min_size=64, max_size=96)


def tiny_images(n: int, seed: int = 0, size: tuple[int, int] = (64, 96)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, *size, generator=g) for _ in range(n)]


@pytest.fixture(scope="module")
def mobilenet() -> nn.Module:
    torch.manual_seed(0)
    return build_detector(cfg=DetectorConfig(architecture="mobilenet_v3_fpn", **TINY), num_classes=2).eval()


@pytest.mark.parametrize("architecture", ["mobilenet_v3_fpn", "resnet18_fpn"])
def test_build_and_forward(architecture: str) -> None:
    model = build_detector(cfg=DetectorConfig(architecture=architecture, **TINY), num_classes=2)
    assert model.transform.min_size == (64,) and model.transform.max_size == 96
    assert isinstance(model.roi_heads, RoIHeadsWithProbs)
    assert model.roi_heads.box_predictor.cls_score.out_features == 3  # 2 classes + background
    model.eval()
    with torch.no_grad():
        (out,) = model(tiny_images(1))
    assert set(out) == {"boxes", "labels", "scores", "probs"}
    assert out["probs"].shape == (len(out["boxes"]), 3)


def test_build_resnet50_from_scratch() -> None:
    model = build_detector(cfg=DetectorConfig(architecture="resnet50_fpn", **TINY), num_classes=1)
    assert model.transform.min_size == (64,) and model.transform.max_size == 96
    # from scratch: trainable BatchNorm everywhere, every backbone layer trainable
    assert isinstance(model.backbone.body.bn1, nn.BatchNorm2d)
    assert all(p.requires_grad for p in model.backbone.parameters())
    assert model.roi_heads.box_predictor.cls_score.out_features == 2


def test_custom_anchor_sizes() -> None:
    mobile = build_detector(cfg=DetectorConfig(anchor_sizes=[16, 32], **TINY), num_classes=1)
    assert mobile.rpn.anchor_generator.sizes == ((16, 32),) * 3
    assert mobile.rpn.head.cls_logits.out_channels == 6  # 2 sizes x 3 aspect ratios
    resnet_cfg = DetectorConfig(architecture="resnet18_fpn", anchor_sizes=[8, 16, 32, 64, 128], **TINY)
    resnet = build_detector(cfg=resnet_cfg, num_classes=1)
    assert resnet.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,), (128,))


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        build_detector(cfg=DetectorConfig(**TINY), num_classes=0)
    with pytest.raises(FileNotFoundError):
        build_detector(cfg=DetectorConfig(weights="/nonexistent/model.pt", **TINY), num_classes=1)


def test_probs_and_features(mobilenet: nn.Module) -> None:
    scores = predict_with_probs_and_features(mobilenet, tiny_images(3), batch_size=2, progress=False)
    assert [s.image_id for s in scores] == [0, 1, 2]
    assert sum(len(s.boxes) for s in scores) > 0
    for s in scores:
        assert isinstance(s, ImageScores)
        n = len(s.boxes)
        assert s.boxes.shape == (n, 4) and s.boxes.dtype == np.float32
        assert s.probs.shape == (n, 3) and s.probs.dtype == np.float32
        np.testing.assert_allclose(s.probs.sum(axis=1), 1.0, atol=1e-5)
        assert np.all(s.labels >= 1)  # background (column 0) is never a label
        # each score is the softmax entry of its own row and label: rows stayed aligned
        np.testing.assert_allclose(s.probs[np.arange(n), s.labels], s.scores, atol=1e-6)
        assert s.feature.shape == (256,) and s.feature.dtype == np.float32
        assert np.isfinite(s.feature).all()


def test_one_forward_per_batch(mobilenet: nn.Module) -> None:
    calls = {"model": 0, "backbone": 0}
    hooks = [mobilenet.register_forward_hook(lambda *a: calls.__setitem__("model", calls["model"] + 1)),
             mobilenet.backbone.register_forward_hook(
                 lambda *a: calls.__setitem__("backbone", calls["backbone"] + 1))]
    try:
        scores = predict_with_probs_and_features(mobilenet, tiny_images(5), batch_size=2, progress=False)
    finally:
        for h in hooks:
            h.remove()
    assert len(scores) == 5
    assert calls == {"model": 3, "backbone": 3}


def test_boxes_in_original_coordinates(mobilenet: nn.Module) -> None:
    # 192x128 input, resized to 96x64 inside the model: boxes must come back at 192x128 scale
    images = tiny_images(2, seed=1, size=(128, 192))
    (scored, _) = predict_with_probs_and_features(mobilenet, images, batch_size=2, progress=False)
    assert scored.boxes[:, 2].max() > 96.5 and scored.boxes[:, 2].max() <= 192.0
    assert scored.boxes[:, 3].max() <= 128.0 and scored.boxes.min() >= 0.0
    plain = predict(mobilenet, images)[0]
    np.testing.assert_allclose(plain["boxes"].numpy(), scored.boxes, atol=1e-4)


def test_scoring_a_coco_dataset_keeps_ids_and_mode(mobilenet: nn.Module, tmp_path: Path) -> None:
    images = []
    for image_id in (7, 3):
        Image.fromarray(np.full((64, 96, 3), 30 * image_id, np.uint8)).save(tmp_path / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": 96, "height": 64})
    ds = CocoDataset.from_dict({"images": images, "annotations": [], "categories": categories_for(["a", "b"])},
                               image_root=tmp_path)
    mobilenet.train()
    scores = predict_with_probs_and_features(mobilenet, ds, batch_size=4, progress=False)
    assert mobilenet.training  # the caller's mode is restored
    mobilenet.eval()
    assert [s.image_id for s in scores] == [7, 3]


def test_checkpoint_round_trip(mobilenet: nn.Module, tmp_path: Path) -> None:
    path = save_checkpoint(mobilenet, tmp_path / "ckpt" / "model.pt", cfg=mobilenet.detector_cfg,
                           num_classes=2, extra={"class_names": ["a", "b"]})
    assert not list(path.parent.glob("*.tmp"))
    loaded = load_checkpoint(path)
    assert loaded.checkpoint_extra == {"class_names": ["a", "b"]}
    images = tiny_images(2, seed=2)
    before = predict_with_probs_and_features(mobilenet, images, batch_size=2, progress=False)
    after = predict_with_probs_and_features(loaded, images, batch_size=2, progress=False)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.probs, b.probs)
        np.testing.assert_array_equal(a.feature, b.feature)
    # a config that points at the checkpoint loads the same weights
    from_path = build_detector(cfg=DetectorConfig(weights=str(path), **TINY), num_classes=2)
    for k, v in mobilenet.state_dict().items():
        assert torch.equal(v, from_path.state_dict()[k]), k
    # another class count keeps everything but the box predictor (fine-tuning to new classes)
    other = build_detector(cfg=DetectorConfig(weights=str(path), **TINY), num_classes=4)
    assert other.roi_heads.box_predictor.cls_score.out_features == 5
    assert torch.equal(other.backbone.fpn.layer_blocks[0][0].weight,
                       mobilenet.backbone.fpn.layer_blocks[0][0].weight)


@pytest.mark.parametrize("architecture", ["mobilenet_v3_fpn", "resnet18_fpn"])
def test_default_weights_path_without_network(architecture: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """"DEFAULT" loads torchvision's enum weights (faked here: no downloads) and re-heads the model."""
    from torchvision.models import resnet18
    from torchvision.models._api import WeightsEnum
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

    def fake_state_dict(self: WeightsEnum, *args, **kwargs) -> dict:
        if architecture == "resnet18_fpn":
            return resnet18(weights=None).state_dict()
        return fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None).state_dict()

    monkeypatch.setattr(WeightsEnum, "get_state_dict", fake_state_dict)
    model = build_detector(cfg=DetectorConfig(architecture=architecture, weights="DEFAULT", **TINY),
                           num_classes=2)
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    assert model.transform.min_size == (64,)
    assert isinstance(model.roi_heads, RoIHeadsWithProbs)
