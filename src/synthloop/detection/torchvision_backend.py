"""Build torchvision Faster R-CNN detectors (the default backend) from a ``DetectorConfig``.

Every model built here has ``RoIHeadsWithProbs`` as its box head, so one forward pass yields the
usual ``boxes`` / ``labels`` / ``scores`` plus ``probs``: the full softmax row of each kept box.
Labels are 1..C (the COCO category ids); 0 is background.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import (
    FasterRCNN,
    fasterrcnn_mobilenet_v3_large_fpn,
    fasterrcnn_resnet50_fpn,
)
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import boxes as box_ops
from torchvision.ops import misc as misc_ops

from synthloop.config import DetectorConfig

log = logging.getLogger(__name__)

ASPECT_RATIOS = (0.5, 1.0, 2.0)


class RoIHeadsWithProbs(RoIHeads):
    """``RoIHeads`` whose eval output also carries ``probs``: (N, C+1) softmax, background col 0.

    ``postprocess_detections`` is torchvision's, plus the proposal row of every candidate box is
    carried through the score filter, the small-box filter and NMS, so each kept detection can
    return the softmax row it came from. Same parameters and state_dict as ``RoIHeads``.
    """

    def postprocess_detections(self, class_logits, box_regression, proposals, image_shapes):
        device = class_logits.device
        num_classes = class_logits.shape[-1]
        boxes_per_image = [p.shape[0] for p in proposals]
        pred_boxes = self.box_coder.decode(box_regression, proposals)
        pred_scores = torch.softmax(class_logits, -1)

        all_boxes, all_scores, all_labels, all_probs = [], [], [], []
        for boxes, probs, image_shape in zip(pred_boxes.split(boxes_per_image, 0),
                                             pred_scores.split(boxes_per_image, 0), image_shapes):
            boxes = box_ops.clip_boxes_to_image(boxes, image_shape)
            n_rows = probs.shape[0]
            labels = torch.arange(num_classes, device=device).view(1, -1).expand(n_rows, -1)
            rows = torch.arange(n_rows, device=device).view(-1, 1).expand(-1, num_classes)
            # one candidate per (proposal, foreground class), as torchvision does
            boxes = boxes[:, 1:].reshape(-1, 4)
            scores = probs[:, 1:].reshape(-1)
            labels = labels[:, 1:].reshape(-1)
            rows = rows[:, 1:].reshape(-1)

            keep = torch.where(scores > self.score_thresh)[0]
            boxes, scores, labels, rows = boxes[keep], scores[keep], labels[keep], rows[keep]
            keep = box_ops.remove_small_boxes(boxes, min_size=1e-2)
            boxes, scores, labels, rows = boxes[keep], scores[keep], labels[keep], rows[keep]
            keep = box_ops.batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            all_boxes.append(boxes[keep])
            all_scores.append(scores[keep])
            all_labels.append(labels[keep])
            all_probs.append(probs[rows[keep]])
        self._last_probs = all_probs
        return all_boxes, all_scores, all_labels

    def forward(self, features, proposals, image_shapes, targets=None):
        self._last_probs = None
        result, losses = super().forward(features, proposals, image_shapes, targets)
        if not self.training and self._last_probs is not None:
            for res, probs in zip(result, self._last_probs):
                res["probs"] = probs
        self._last_probs = None
        return result, losses


def with_prob_heads(model: FasterRCNN) -> FasterRCNN:
    """Make ``model.roi_heads`` a ``RoIHeadsWithProbs`` in place (same state, same weights)."""
    if not isinstance(model.roi_heads, RoIHeads):
        raise TypeError(f"expected a torchvision Faster R-CNN, got roi_heads {type(model.roi_heads)}")
    if not isinstance(model.roi_heads, RoIHeadsWithProbs):
        # The subclass adds behaviour only, no parameters: swapping the class keeps everything.
        model.roi_heads.__class__ = RoIHeadsWithProbs
    return model


def build_detector(*, cfg: DetectorConfig, num_classes: int) -> FasterRCNN:
    """A Faster R-CNN for ``num_classes`` foreground classes (background excluded).

    ``cfg.weights``: None trains from scratch (no backbone weights either); ``"DEFAULT"`` takes
    torchvision's COCO detector weights (ImageNet backbone weights for resnet18_fpn, which has
    no detector weights) and replaces the box predictor; anything else is a path or URL of a
    synthloop checkpoint (``save_checkpoint``) whose weights are loaded. The input resize is
    ``cfg.min_size`` / ``cfg.max_size``. The model carries ``detector_cfg`` and ``num_classes``
    attributes so checkpoints can rebuild it.
    """
    if not isinstance(cfg, DetectorConfig):
        raise TypeError(f"cfg must be a DetectorConfig, got {type(cfg).__name__}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int (background excluded), got {num_classes!r}")
    if cfg.min_size > cfg.max_size:
        raise ValueError(f"min_size {cfg.min_size} > max_size {cfg.max_size}")
    pretrained = cfg.weights == "DEFAULT"
    # ImageNet backbones through torchvision's enums (downloaded once into TORCH_HOME)
    imagenet = pretrained or cfg.backbone_weights == "imagenet"
    kwargs: dict[str, Any] = {"min_size": cfg.min_size, "max_size": cfg.max_size,
                              "box_score_thresh": cfg.box_score_thresh,
                              "rpn_pre_nms_top_n_train": cfg.rpn_pre_nms_top_n_train,
                              "rpn_post_nms_top_n_train": cfg.rpn_post_nms_top_n_train,
                              "box_batch_size_per_image": cfg.box_batch_size_per_image}
    if cfg.architecture == "mobilenet_v3_fpn":
        model = _build_mobilenet(pretrained, num_classes, kwargs)
    elif cfg.architecture == "mobilenet_v3_hr_fpn":
        model = _build_mobilenet_hr(imagenet, cfg.resolved_frozen_bn(), num_classes, kwargs)
    elif cfg.architecture == "resnet50_fpn":
        model = _build_resnet50(pretrained, cfg.backbone_weights == "imagenet",
                                cfg.resolved_frozen_bn(), num_classes, kwargs)
    elif cfg.architecture == "resnet18_fpn":
        model = _build_resnet18(imagenet, cfg.resolved_frozen_bn(), num_classes, kwargs)
    elif cfg.architecture.startswith("efficientnet_lite"):
        from synthloop.detection.lite_fpn import build_efficientnet_lite

        model = build_efficientnet_lite(cfg, num_classes, kwargs)
    else:  # pydantic already restricts the name; this guards hand-made configs
        raise ValueError(f"unknown architecture {cfg.architecture!r}; known: mobilenet_v3_fpn, "
                         "mobilenet_v3_hr_fpn, resnet18_fpn, resnet50_fpn, efficientnet_lite{0,1,2}_fpn")
    if cfg.anchor_sizes or tuple(cfg.aspect_ratios) != ASPECT_RATIOS:
        sizes = cfg.anchor_sizes or [s[0] if len(s) == 1 else s for s in
                                     model.rpn.anchor_generator.sizes]
        _set_anchor_sizes(model, sizes, cfg.aspect_ratios)
    with_prob_heads(model)
    if cfg.weights is not None and not pretrained:
        load_weights_into(model, cfg.weights, num_classes=num_classes)
    model.detector_cfg = cfg
    model.num_classes = num_classes
    return model


def _replace_predictor(model: FasterRCNN, num_classes: int) -> None:
    in_features = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes + 1)


def _build_mobilenet(pretrained: bool, num_classes: int, kwargs: dict[str, Any]) -> FasterRCNN:
    if pretrained:
        from torchvision.models.detection import FasterRCNN_MobileNet_V3_Large_FPN_Weights as W

        model = fasterrcnn_mobilenet_v3_large_fpn(weights=W.DEFAULT, **kwargs)
        _replace_predictor(model, num_classes)
        return model
    return fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None,
                                             num_classes=num_classes + 1, **kwargs)


HR_ANCHOR_SIZES = (16, 32, 64, 128, 256)  # one a level: strides 8, 16, 32, 32, 64


def _build_mobilenet_hr(pretrained: bool, frozen_bn: bool, num_classes: int,
                        kwargs: dict[str, Any]) -> FasterRCNN:
    """MobileNetV3-Large FPN over strides 8, 16, 32 (+ pooled 64).

    torchvision's MobileNetV3 FPN takes its two levels from the last blocks, both at stride 32,
    with 32-512 px anchors: parts of 12-30 px fall between its anchor centres. Two more levels
    (strides 8 and 16) and 16 px anchors see them, for ~1.4x the compute a step.
    """
    from torchvision.models import MobileNet_V3_Large_Weights, mobilenet_v3_large
    from torchvision.models.detection.backbone_utils import _mobilenet_extractor

    norm = misc_ops.FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
    weights = MobileNet_V3_Large_Weights.IMAGENET1K_V1 if pretrained else None
    net = mobilenet_v3_large(weights=weights, norm_layer=norm)
    trainable = 3 if frozen_bn else 6
    backbone = _mobilenet_extractor(net, True, trainable, returned_layers=[2, 3, 4, 5])
    levels = len(HR_ANCHOR_SIZES)
    anchors = AnchorGenerator(tuple((s,) for s in HR_ANCHOR_SIZES), (ASPECT_RATIOS,) * levels)
    return FasterRCNN(backbone, num_classes=num_classes + 1, rpn_anchor_generator=anchors,
                      rpn_score_thresh=0.05, **kwargs)


def _build_resnet50(pretrained: bool, imagenet: bool, frozen_bn: bool, num_classes: int,
                    kwargs: dict[str, Any]) -> FasterRCNN:
    """R50-FPN: COCO detector weights (``pretrained``, torchvision's enum: downloaded once into
    TORCH_HOME/hub/checkpoints and read from there after), ImageNet backbone only, or none.
    Frozen BatchNorm is rebuilt as such when a checkpoint of a pretrained model is reloaded."""
    if pretrained:
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


def _build_resnet18(pretrained: bool, frozen_bn: bool, num_classes: int,
                    kwargs: dict[str, Any]) -> FasterRCNN:
    if frozen_bn:
        from torchvision.models import ResNet18_Weights

        # ImageNet backbone: keep its statistics frozen, as torchvision does for pretrained R50
        weights = ResNet18_Weights.DEFAULT if pretrained else None
        backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=weights,
                                       norm_layer=misc_ops.FrozenBatchNorm2d, trainable_layers=3)
    else:
        # From scratch BatchNorm must learn (FrozenBatchNorm2d at init is the identity).
        backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None,
                                       norm_layer=nn.BatchNorm2d, trainable_layers=5)
    return FasterRCNN(backbone, num_classes=num_classes + 1, **kwargs)


def _set_anchor_sizes(model: FasterRCNN, sizes: list, ratios: list[float] = ASPECT_RATIOS) -> None:
    """Replace the anchors: one size per FPN level when ``len(sizes)`` equals the number of
    levels (ResNet-FPN: 5, P2-P6; MobileNet-HR: 5), otherwise every level gets all sizes
    (MobileNet-FPN: 3 levels); ``ratios`` (h/w) at every level. A fresh RPN head is made when
    the anchors per location change.
    """
    levels = len(model.rpn.anchor_generator.sizes)
    if len(sizes) == levels:
        per_level = tuple(tuple(int(v) for v in s) if isinstance(s, tuple) else (int(s),)
                          for s in sizes)
    else:
        per_level = (tuple(int(s) for s in sizes),) * levels
    if any(v <= 0 for level in per_level for v in level) or any(r <= 0 for r in ratios):
        raise ValueError(f"anchor sizes and aspect ratios must be positive, got {sizes}, {ratios}")
    generator = AnchorGenerator(per_level, (tuple(float(r) for r in ratios),) * levels)
    old = model.rpn.anchor_generator.num_anchors_per_location()[0]
    new = generator.num_anchors_per_location()[0]
    model.rpn.anchor_generator = generator
    if new != old:
        model.rpn.head = RPNHead(model.backbone.out_channels, new)


def load_weights_into(model: nn.Module, source: str | Path, *, num_classes: int) -> None:
    """Load a synthloop checkpoint (path or http(s) URL) into ``model``.

    A checkpoint made for a different number of classes loads everything but the box predictor
    (fine-tuning onto a new class list); any other mismatch is an error.
    """
    from synthloop.detection.checkpoint import read_checkpoint

    ckpt = read_checkpoint(source)
    state = ckpt["model"]
    if ckpt.get("num_classes") not in (None, num_classes):
        log.warning("checkpoint %s has %s classes, model has %d: box predictor starts fresh",
                    source, ckpt.get("num_classes"), num_classes)
        state = {k: v for k, v in state.items() if not k.startswith("roi_heads.box_predictor.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        bad = [k for k in missing if not k.startswith("roi_heads.box_predictor.")] + list(unexpected)
        if bad:
            raise ValueError(f"checkpoint {source} does not fit this architecture: {bad[:5]}")
        return
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {source} does not fit this model: {exc}") from None
