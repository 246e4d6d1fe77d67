"""Image- and box-level features of a torchvision Faster R-CNN, for the sim-to-real gap.

One backbone pass per image (no RPN, no detection): the image feature is the finest FPN level
averaged over the image's own area, the same vector the active-learning scorer pools
(``torchvision_backend._FeatureCapture``); each ground-truth box's feature is the box head's
representation (the input of the class/box predictor) of the RoI-aligned FPN features inside
the box, i.e. what the detector classifies the box from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from synthloop.data.coco import CocoDataset
from synthloop.detection.datasets import boxes_by_image, load_image


@dataclass(frozen=True)
class DomainFeatures:
    """image (n, C) float32, one row per image in dataset order; box (m, R) float32 and
    box_labels (m,) int64 (category ids 1..C), one row per ground-truth box (crowd boxes left
    out); empty (0, R) when ``boxes`` was False or the images hold no boxes."""

    image: np.ndarray
    box: np.ndarray
    box_labels: np.ndarray


def supports_box_features(model: nn.Module) -> bool:
    """True for torchvision Faster R-CNNs (transform, backbone, roi_heads with a box head)."""
    heads = getattr(model, "roi_heads", None)
    return all(hasattr(model, a) for a in ("transform", "backbone")) and heads is not None \
        and hasattr(heads, "box_roi_pool") and hasattr(heads, "box_head")


def domain_features(model: nn.Module, dataset: CocoDataset, *, boxes: bool = True,
                    progress: bool = False) -> DomainFeatures:
    """Features of every image of ``dataset`` (and of its ground-truth boxes when ``boxes``),
    one image a forward, in eval mode and inference mode."""
    if not supports_box_features(model):
        raise TypeError("domain_features needs a torchvision Faster R-CNN "
                        "(use predict_with_probs_and_features' pooled features otherwise)")
    device = next(model.parameters()).device
    gt = boxes_by_image(dataset) if boxes else {}
    images, box_rows, labels = [], [], []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for im in dataset.images:
                img = load_image(dataset.image_path(im)).to(device)
                b, lab = gt.get(im.id, (np.zeros((0, 4), np.float32), np.zeros(0, np.int64)))
                target = {"boxes": torch.as_tensor(b, device=device).reshape(-1, 4),
                          "labels": torch.as_tensor(lab, device=device)}
                image_list, targets = model.transform([img], [target])
                feats = model.backbone(image_list.tensors)
                images.append(_pooled_finest(feats, image_list))
                if boxes and len(lab):
                    pooled = model.roi_heads.box_roi_pool(feats, [targets[0]["boxes"]],
                                                          image_list.image_sizes)
                    box_rows.append(model.roi_heads.box_head(pooled).float().cpu().numpy())
                    labels.append(np.asarray(lab, np.int64))
    finally:
        model.train(was_training)
    width = box_rows[0].shape[1] if box_rows else 0
    return DomainFeatures(image=np.stack(images).astype(np.float32),
                          box=np.vstack(box_rows) if box_rows else np.zeros((0, width), np.float32),
                          box_labels=np.concatenate(labels) if labels else np.zeros(0, np.int64))


def _pooled_finest(feats: dict[str, torch.Tensor], image_list) -> np.ndarray:
    fmap = feats["0"] if "0" in feats else next(iter(feats.values()))  # (1, C, h, w)
    (h, w), (ph, pw) = image_list.image_sizes[0], image_list.tensors.shape[-2:]
    fh, fw = fmap.shape[-2:]
    vh = max(1, min(fh, math.ceil(h * fh / ph)))  # the image's own area, not the padding
    vw = max(1, min(fw, math.ceil(w * fw / pw)))
    return fmap[0, :, :vh, :vw].mean(dim=(1, 2)).float().cpu().numpy()
