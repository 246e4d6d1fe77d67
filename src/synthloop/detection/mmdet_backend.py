"""The MMDetection backend: any mmdet 3.x two-stage config behind the torchvision interface.

``build_mmdet_detector`` returns an ``MMDetDetector``: an ``nn.Module`` that takes and returns
what a torchvision detector does (see ``synthloop.detection.backends``), so the training loop,
COCO evaluation, scoring and checkpoints are the same code for both backends. It needs the
``mmdet`` extra (``make setup-mmdet``: mmengine 0.10.7, mmdet 3.3.0, mmcv 2.1.0 with ops).

Layout differences normalised here: mmdet's softmax puts background in the LAST column and its
labels are 0-based; ours put background in column 0 and labels are category ids 1..C.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from synthloop.config import DetectorConfig

log = logging.getLogger(__name__)

INSTALL_HINT = ("the mmdet backend needs the mmdet extra: run `make setup-mmdet` "
                "(builds mmcv 2.1.0 once, ~15 min on 2 cores, then reuses the cached wheel)")


def require_mmdet() -> None:
    """Import mmdet (registering its modules) or raise ImportError saying how to install it."""
    try:
        import mmcv  # noqa: F401
        import mmdet  # noqa: F401
        import mmengine  # noqa: F401
        from mmcv.ops import nms  # noqa: F401  (the compiled ops, mmcv._ext)
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=True)


def resolve_config_path(name: str) -> Path:
    """A config file path as given, or relative to the configs that ship inside mmdet
    (``mmdet/.mim/configs``, e.g. ``faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py``)."""
    import mmdet

    path = Path(name).expanduser()
    if path.is_file():
        return path
    shipped = Path(mmdet.__file__).parent / ".mim" / "configs" / name
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(f"mmdet config {name!r} is neither a file nor one of mmdet's own "
                            f"configs under {shipped.parents[len(Path(name).parts) - 1]}")


def _set_everywhere(node: Any, key: str, value: Any) -> int:
    """Set ``key`` in every dict of a nested config (e.g. num_classes of every head)."""
    count = 0
    if isinstance(node, dict):
        for k in list(node.keys()):
            if k == key:
                node[k] = value
                count += 1
            else:
                count += _set_everywhere(node[k], key, value)
    elif isinstance(node, (list, tuple)):
        count += sum(_set_everywhere(item, key, value) for item in node)
    return count


def model_config(cfg: DetectorConfig, num_classes: int):
    """The mmengine ``ConfigDict`` of the model: ``cfg.mmdet_config`` with our overrides."""
    from mmengine.config import Config

    model = Config.fromfile(str(resolve_config_path(cfg.mmdet_config))).model
    if _set_everywhere(model, "num_classes", num_classes) == 0:
        raise ValueError(f"{cfg.mmdet_config}: no head with num_classes in the model config")
    # Our images arrive as RGB tensors (mmdet's own loader reads BGR with OpenCV).
    model.data_preprocessor.update(bgr_to_rgb=False, rgb_to_bgr=False)
    test_rcnn = model.get("test_cfg", {}).get("rcnn")
    if test_rcnn is not None:
        test_rcnn.score_thr = cfg.box_score_thresh
    train_cfg = model.get("train_cfg") or {}
    if train_cfg.get("rpn_proposal") is not None:
        train_cfg.rpn_proposal.update(nms_pre=cfg.rpn_pre_nms_top_n_train,
                                      max_per_img=cfg.rpn_post_nms_top_n_train)
    if train_cfg.get("rcnn", {}).get("sampler") is not None:
        train_cfg.rcnn.sampler.num = cfg.box_batch_size_per_image
    backbone = model.get("backbone", {})
    if cfg.weights != "DEFAULT":
        backbone["init_cfg"] = None  # no ImageNet download: from scratch, or weights loaded later
    return model


def set_backbone_mode(detector: nn.Module, model_cfg, *, pretrained: bool) -> None:
    """From scratch, BatchNorm statistics and the stem must learn (torchvision does the same
    without weights); from pretrained weights, the config's ``norm_eval``/``frozen_stages`` hold.
    Parameters are the same either way: only ``requires_grad`` and BN's mode differ."""
    backbone, spec = detector.backbone, model_cfg.get("backbone", {})
    if hasattr(backbone, "norm_eval"):
        backbone.norm_eval = bool(spec.get("norm_eval", False)) if pretrained else False
    if hasattr(backbone, "frozen_stages"):
        backbone.frozen_stages = int(spec.get("frozen_stages", -1)) if pretrained else -1
        for param in backbone.parameters():
            param.requires_grad = True
        if hasattr(backbone, "_freeze_stages"):
            backbone._freeze_stages()
    backbone.train(backbone.training)


class ProbsBBoxHeadMixin:
    """Keeps, for every detection kept by score filter + NMS, the softmax row of the proposal it
    came from (``results.probs``, (N, C+1), mmdet layout: background LAST)."""

    def _predict_by_feat_single(self, roi, cls_score, bbox_pred, img_meta, rescale=False,
                                rcnn_test_cfg=None):
        from mmdet.models.layers import multiclass_nms
        from mmdet.structures.bbox import get_box_tensor, scale_boxes
        from mmengine.structures import InstanceData

        if rcnn_test_cfg is None or roi.shape[0] == 0:
            # test-time augmentation (raw scores, no NMS) or no proposals: mmdet's own result
            results = super()._predict_by_feat_single(roi, cls_score, bbox_pred, img_meta,
                                                      rescale=rescale, rcnn_test_cfg=rcnn_test_cfg)
            if rcnn_test_cfg is not None:
                results.probs = roi.new_zeros((0, self.num_classes + 1))
            return results
        # mmdet's BBoxHead._predict_by_feat_single (3.3.0), plus return_inds in the NMS
        scores = (self.loss_cls.get_activation(cls_score) if self.custom_cls_channels
                  else F.softmax(cls_score, dim=-1))
        num_rois = roi.size(0)
        if bbox_pred is not None:
            per_roi = 1 if self.reg_class_agnostic else self.num_classes
            rois = roi.repeat_interleave(per_roi, dim=0)
            bbox_pred = bbox_pred.view(-1, self.bbox_coder.encode_size)
            bboxes = self.bbox_coder.decode(rois[..., 1:], bbox_pred, max_shape=img_meta["img_shape"])
        else:
            bboxes = roi[:, 1:].clone()
        if rescale and bboxes.size(0) > 0:
            bboxes = scale_boxes(bboxes, [1 / s for s in img_meta["scale_factor"]])
        bboxes = get_box_tensor(bboxes)
        box_dim = bboxes.size(-1)
        bboxes = bboxes.view(num_rois, -1)
        dets, labels, inds = multiclass_nms(bboxes, scores, rcnn_test_cfg.score_thr,
                                            rcnn_test_cfg.nms, rcnn_test_cfg.max_per_img,
                                            box_dim=box_dim, return_inds=True)
        results = InstanceData()
        results.bboxes = dets[:, :-1]
        results.scores = dets[:, -1]
        results.labels = labels
        # inds index the flattened (roi, foreground class) candidates
        results.probs = scores[torch.div(inds, self.num_classes, rounding_mode="floor")]
        return results


def with_prob_bbox_head(detector: nn.Module) -> nn.Module:
    """Give ``detector.roi_head.bbox_head`` the ``ProbsBBoxHeadMixin`` in place (behaviour only,
    same parameters), whatever BBoxHead subclass the config chose."""
    from mmdet.models.roi_heads.bbox_heads import BBoxHead

    head = getattr(getattr(detector, "roi_head", None), "bbox_head", None)
    if not isinstance(head, BBoxHead):
        raise ValueError("the mmdet backend needs a two-stage detector whose roi_head has one "
                         f"BBoxHead (e.g. Faster R-CNN); got {type(head).__name__}")
    if not isinstance(head, ProbsBBoxHeadMixin):
        cls = type(head)
        head.__class__ = type(f"{cls.__name__}WithProbs", (ProbsBBoxHeadMixin, cls), {})
    return detector


def background_first(probs: torch.Tensor) -> torch.Tensor:
    """(N, C+1) softmax rows in mmdet's layout (background LAST) -> torchvision's (column 0)."""
    return torch.cat([probs[:, -1:], probs[:, :-1]], dim=1)


def resize_like_torchvision(image: torch.Tensor, min_size: int, max_size: int) -> torch.Tensor:
    """torchvision's ``GeneralizedRCNNTransform`` resize: shorter side to ``min_size`` unless the
    longer side would pass ``max_size`` (bilinear), so both backends see the same pixels."""
    h, w = image.shape[-2:]
    scale = min(min_size / min(h, w), max_size / max(h, w))
    return F.interpolate(image[None], scale_factor=scale, mode="bilinear",
                         recompute_scale_factor=True, align_corners=False)[0]


class TorchvisionLikeResize:
    """The input resize, with the attributes of torchvision's ``GeneralizedRCNNTransform`` that
    the shared training code reads: ``min_size`` (a tuple), ``max_size`` and ``_skip_resize``
    (training on crops already at evaluation scale: no resize in training mode)."""

    def __init__(self, min_size: int, max_size: int) -> None:
        self.min_size = (int(min_size),)
        self.max_size = int(max_size)
        self._skip_resize = False

    def __call__(self, image: torch.Tensor, *, training: bool) -> torch.Tensor:
        if training and self._skip_resize:
            return image
        return resize_like_torchvision(image, self.min_size[0], self.max_size)


def follow_device(module: nn.Module) -> None:
    """Point every mmengine data preprocessor inside ``module`` (``_device``: where it moves the
    inputs) at the device of ``module``'s weights, as mmengine's ``BaseModel.to`` does."""
    from synthloop.detection.device import model_device

    device = model_device(module)
    for sub in module.modules():
        if isinstance(getattr(sub, "_device", None), torch.device):
            sub._device = device


class MMDetDetector(nn.Module):
    """An mmdet detector with the torchvision calling convention (``backends`` module doc).

    ``detector`` is the mmdet model (its own data preprocessor normalises and pads to 32);
    images are resized here exactly as torchvision resizes them.
    """

    def __init__(self, detector: nn.Module, *, cfg: DetectorConfig, num_classes: int,
                 model_cfg) -> None:
        super().__init__()
        self.detector = with_prob_bbox_head(detector)
        self.model_cfg = model_cfg  # the mmengine ConfigDict it was built from
        self.num_classes = num_classes
        self.transform = TorchvisionLikeResize(cfg.min_size, cfg.max_size)
        self.detector_cfg = cfg

    def _apply(self, fn, recurse: bool = True):
        # .to(device) / .cuda() on this wrapper never reach mmengine's BaseModel.to, which is
        # what tells the data preprocessor where to send the inputs: tell it here.
        out = super()._apply(fn, recurse)
        follow_device(self)
        return out

    @property
    def detector_cfg(self) -> DetectorConfig:
        return self._detector_cfg

    @detector_cfg.setter
    def detector_cfg(self, cfg: DetectorConfig) -> None:
        # load_checkpoint builds with weights=None, then sets the saved config: a model first
        # built on pretrained weights must fine-tune with its frozen stem and BN again.
        self._detector_cfg = cfg
        set_backbone_mode(self.detector, self.model_cfg, pretrained=cfg.weights is not None)

    def _samples(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None):
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData

        inputs, samples = [], []
        for i, image in enumerate(images):
            h, w = image.shape[-2:]
            resized = self.transform(image, training=targets is not None)
            nh, nw = resized.shape[-2:]
            sample = DetDataSample(metainfo={"img_shape": (nh, nw), "ori_shape": (h, w),
                                             "scale_factor": (nw / w, nh / h)})
            if targets is not None:
                boxes = targets[i]["boxes"].reshape(-1, 4).float()
                scale = boxes.new_tensor([nw / w, nh / h, nw / w, nh / h])
                sample.gt_instances = InstanceData(bboxes=boxes * scale,
                                                   labels=targets[i]["labels"].long() - 1)
            inputs.append(resized * 255.0)  # mmdet's mean/std are in 0..255
            samples.append(sample)
        return self.detector.data_preprocessor({"inputs": inputs, "data_samples": samples},
                                               targets is not None)

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None):
        if self.training:
            if targets is None:
                raise ValueError("in training mode the model needs targets")
            data = self._samples(images, targets)
            losses = self.detector.loss(data["inputs"], data["data_samples"])
            # Losses only (mmdet also reports accuracy); per-level lists are summed, as
            # BaseModel.parse_losses does, so sum(values) is mmdet's total loss.
            return {k: (sum(v) if isinstance(v, (list, tuple)) else v)
                    for k, v in losses.items() if "loss" in k}
        return self.forward_with_features(images)[0]

    def forward_with_features(self, images: list[torch.Tensor]
                              ) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
        """One forward: per-image results (boxes in original pixels, labels 1..C, scores,
        probs (N, C+1) background in column 0) and P2 (``extract_feat(x)[0]``) averaged over each
        image's unpadded area, (B, 256)."""
        data = self._samples(images, None)
        inputs, samples = data["inputs"], data["data_samples"]
        feats = self.detector.extract_feat(inputs)
        proposals = self.detector.rpn_head.predict(feats, samples, rescale=False)
        instances = self.detector.roi_head.predict(feats, proposals, samples, rescale=True)
        p2 = feats[0]
        ph, pw = inputs.shape[-2:]
        fh, fw = p2.shape[-2:]
        results, pooled = [], []
        for i, (sample, inst) in enumerate(zip(samples, instances)):
            h, w = sample.metainfo["img_shape"]
            vh = max(1, min(fh, math.ceil(h * fh / ph)))
            vw = max(1, min(fw, math.ceil(w * fw / pw)))
            pooled.append(p2[i, :, :vh, :vw].mean(dim=(1, 2)))
            probs = inst.probs if "probs" in inst else inst.scores.new_zeros((0, self.num_classes + 1))
            results.append({"boxes": inst.bboxes.reshape(-1, 4), "labels": inst.labels.long() + 1,
                            "scores": inst.scores,
                            "probs": background_first(probs)})
        return results, torch.stack(pooled) if pooled else p2.new_zeros((0, p2.shape[1]))


def _quiet_init_weights(detector: nn.Module) -> None:
    """``init_weights`` without mmengine's per-parameter INFO report (hundreds of lines)."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        detector.init_weights()
    finally:
        logger.setLevel(level)


def build_mmdet_detector(*, cfg: DetectorConfig, num_classes: int) -> MMDetDetector:
    """An ``MMDetDetector`` from ``cfg.mmdet_config`` for ``num_classes`` foreground classes.

    ``cfg.weights``: None trains from scratch (nothing downloaded); ``"DEFAULT"`` keeps the
    config's own backbone ``init_cfg`` (ImageNet weights, e.g. ``torchvision://resnet50``,
    fetched by mmengine); anything else is a path or URL of an mmdet/mmengine checkpoint (the
    model zoo's ``.pth``) or of a synthloop checkpoint, loaded with ``load_weights_into``.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int (background excluded), got {num_classes!r}")
    if cfg.min_size > cfg.max_size:
        raise ValueError(f"min_size {cfg.min_size} > max_size {cfg.max_size}")
    require_mmdet()
    from mmdet.registry import MODELS

    spec = model_config(cfg, num_classes)
    detector = MODELS.build(spec)
    _quiet_init_weights(detector)
    model = MMDetDetector(detector, cfg=cfg, num_classes=num_classes, model_cfg=spec)
    if cfg.weights not in (None, "DEFAULT"):
        BACKEND.load_weights(model, cfg.weights, num_classes=num_classes)
    return model


class MMDetBackend:
    """The mmdet backend (``registry.BACKENDS["mmdet"]``): the architecture is
    ``cfg.mmdet_config``, built by mmdet's own registry. Not exportable (detection/export.py
    knows torchvision's layers only)."""

    name = "mmdet"
    exportable = False

    def build(self, *, cfg: DetectorConfig, num_classes: int) -> MMDetDetector:
        return build_mmdet_detector(cfg=cfg, num_classes=num_classes)

    def load_weights(self, model: nn.Module, source: str | Path, *, num_classes: int) -> None:
        from synthloop.detection.mmdet_weights import load_weights_into

        load_weights_into(model, source)  # a predictor for another class count starts fresh

    def open_scorer(self, model: nn.Module):
        """``MMDetDetector.forward_with_features``: results and P2 from one forward."""
        return model.forward_with_features, lambda: None

    def requirements(self, cfg: DetectorConfig) -> tuple[str, ...]:
        return ("torch", "torchvision", "mmengine", "mmcv", "mmdet")


BACKEND = MMDetBackend()
