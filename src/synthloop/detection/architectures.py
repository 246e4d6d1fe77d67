"""The torchvision backend's architectures: Faster R-CNN builders registered by name in
``registry.ARCHITECTURES`` (EfficientNet-Lite FPN ones live in ``lite_fpn``).

Each is ``build(cfg, num_classes, kwargs) -> FasterRCNN`` for ``num_classes`` foreground classes
(+1 background); ``kwargs`` are FasterRCNN's keyword arguments that the config sets (input
resize, score threshold, sampling sizes). ``torchvision_backend.build_detector`` then sets
anchors, the probability head and checkpoint weights.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torchvision.models.detection import (
    FasterRCNN,
    fasterrcnn_mobilenet_v3_large_fpn,
    fasterrcnn_resnet50_fpn,
)
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.ops import misc as misc_ops

from synthloop.config import DetectorConfig

ASPECT_RATIOS = (0.5, 1.0, 2.0)


def _imagenet(cfg: DetectorConfig) -> bool:
    """ImageNet backbone weights through torchvision's enums (downloaded once into TORCH_HOME)."""
    return cfg.weights == "DEFAULT" or cfg.backbone_weights == "imagenet"


def _replace_predictor(model: FasterRCNN, num_classes: int) -> None:
    in_features = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes + 1)


def build_mobilenet(cfg: DetectorConfig, num_classes: int, kwargs: dict[str, Any]) -> FasterRCNN:
    """torchvision's MobileNetV3-Large FPN: COCO detector weights (``weights: DEFAULT``) or none."""
    if cfg.weights == "DEFAULT":
        from torchvision.models.detection import FasterRCNN_MobileNet_V3_Large_FPN_Weights as W

        model = fasterrcnn_mobilenet_v3_large_fpn(weights=W.DEFAULT, **kwargs)
        _replace_predictor(model, num_classes)
        return model
    return fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None,
                                             num_classes=num_classes + 1, **kwargs)


HR_ANCHOR_SIZES = (16, 32, 64, 128, 256)  # one a level: strides 8, 16, 32, 32, 64


def build_mobilenet_hr(cfg: DetectorConfig, num_classes: int, kwargs: dict[str, Any]
                       ) -> FasterRCNN:
    """MobileNetV3-Large FPN over strides 8, 16, 32 (+ pooled 64).

    torchvision's MobileNetV3 FPN takes its two levels from the last blocks, both at stride 32,
    with 32-512 px anchors: parts of 12-30 px fall between its anchor centres. Two more levels
    (strides 8 and 16) and 16 px anchors see them, for ~1.4x the compute a step.
    """
    from torchvision.models import MobileNet_V3_Large_Weights, mobilenet_v3_large
    from torchvision.models.detection.backbone_utils import _mobilenet_extractor

    frozen_bn = cfg.resolved_frozen_bn()
    norm = misc_ops.FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
    weights = MobileNet_V3_Large_Weights.IMAGENET1K_V1 if _imagenet(cfg) else None
    net = mobilenet_v3_large(weights=weights, norm_layer=norm)
    trainable = 3 if frozen_bn else 6
    backbone = _mobilenet_extractor(net, True, trainable, returned_layers=[2, 3, 4, 5])
    levels = len(HR_ANCHOR_SIZES)
    anchors = AnchorGenerator(tuple((s,) for s in HR_ANCHOR_SIZES), (ASPECT_RATIOS,) * levels)
    return FasterRCNN(backbone, num_classes=num_classes + 1, rpn_anchor_generator=anchors,
                      rpn_score_thresh=0.05, **kwargs)


def build_resnet50(cfg: DetectorConfig, num_classes: int, kwargs: dict[str, Any]) -> FasterRCNN:
    """R50-FPN: COCO detector weights (``weights: DEFAULT``, torchvision's enum: downloaded once
    into TORCH_HOME/hub/checkpoints and read from there after), ImageNet backbone only, or none.
    Frozen BatchNorm is rebuilt as such when a checkpoint of a pretrained model is reloaded."""
    frozen_bn, imagenet = cfg.resolved_frozen_bn(), cfg.backbone_weights == "imagenet"
    if cfg.weights == "DEFAULT":
        from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights as W

        model = fasterrcnn_resnet50_fpn(weights=W.DEFAULT, **kwargs)
        _replace_predictor(model, num_classes)
        return model
    if frozen_bn or imagenet:
        from torchvision.models import ResNet50_Weights

        backbone = resnet_fpn_backbone(
            backbone_name="resnet50", weights=ResNet50_Weights.IMAGENET1K_V1 if imagenet else None,
            norm_layer=misc_ops.FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d,
            trainable_layers=3 if frozen_bn else 5)
        return FasterRCNN(backbone, num_classes=num_classes + 1, **kwargs)
    return fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                   num_classes=num_classes + 1, **kwargs)


def build_resnet18(cfg: DetectorConfig, num_classes: int, kwargs: dict[str, Any]) -> FasterRCNN:
    """ResNet-18 FPN (no COCO detector weights exist): ImageNet backbone or from scratch."""
    if cfg.resolved_frozen_bn():
        from torchvision.models import ResNet18_Weights

        # ImageNet backbone: keep its statistics frozen, as torchvision does for pretrained R50
        weights = ResNet18_Weights.DEFAULT if _imagenet(cfg) else None
        backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=weights,
                                       norm_layer=misc_ops.FrozenBatchNorm2d, trainable_layers=3)
    else:
        # From scratch BatchNorm must learn (FrozenBatchNorm2d at init is the identity).
        backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None,
                                       norm_layer=nn.BatchNorm2d, trainable_layers=5)
    return FasterRCNN(backbone, num_classes=num_classes + 1, **kwargs)
