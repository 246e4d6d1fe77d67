"""The mmdet backend: parity of the strategy inputs with torchvision, the background-column
normalisation, checkpoints (ours and mmengine's on torch >= 2.6), and resumed training.

Tests marked ``mmdet`` skip where the extra is not installed (`make setup-mmdet`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdet_support import make_coco, require_mmdet
from synthloop.config import DetectorConfig, TrainConfig
from synthloop.detection import (build_detector, load_checkpoint, predict_with_probs_and_features,
                                 save_checkpoint, train)

SMALL = dict(min_size=64, max_size=96)


def mmdet_cfg(**kw) -> DetectorConfig:
    return DetectorConfig(backend="mmdet", **{**SMALL, **kw})


def mmdet_model(num_classes: int = 2, **kw):
    require_mmdet()
    torch.manual_seed(0)
    return build_detector(cfg=mmdet_cfg(**kw), num_classes=num_classes)


def images() -> list[torch.Tensor]:
    """Three images of different sizes (so a batch is padded), values 0..1."""
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, 64, 96, generator=g), torch.rand(3, 72, 80, generator=g),
            torch.rand(3, 50, 100, generator=g)]


def test_mmdet_backend_without_the_extra_says_how_to_install(monkeypatch):
    # Runs everywhere: hide mmcv even where it is installed.
    monkeypatch.setitem(sys.modules, "mmcv", None)
    with pytest.raises(ImportError, match="make setup-mmdet"):
        build_detector(cfg=mmdet_cfg(), num_classes=2)


def _backbone(model):
    return model.detector.backbone if hasattr(model, "detector") else model.backbone


@pytest.mark.mmdet
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torchvision", "mmdet"])
def test_both_backends_give_strategies_the_same_inputs(backend):
    if backend == "mmdet":
        model = mmdet_model(num_classes=2)
    else:
        require_mmdet()  # the pair is the point: skip both halves together
        torch.manual_seed(0)
        model = build_detector(cfg=DetectorConfig(architecture="resnet50_fpn", **SMALL), num_classes=2)
    calls = []
    handle = _backbone(model).register_forward_hook(lambda *a: calls.append(1))
    try:
        scores = predict_with_probs_and_features(model, images(), batch_size=1, progress=False)
    finally:
        handle.remove()
    assert len(calls) == 3  # one forward pass per image: probabilities and features together
    sizes = [(64, 96), (72, 80), (50, 100)]
    assert sum(len(s.scores) for s in scores) > 0, "an untrained 2-class head scores ~1/3: boxes expected"
    for s, (h, w) in zip(scores, sizes):
        n = len(s.scores)
        assert s.probs.shape == (n, 3) and s.probs.dtype == np.float32  # C+1 columns
        np.testing.assert_allclose(s.probs.sum(axis=1), 1.0, atol=1e-5)
        assert set(s.labels.tolist()) <= {1, 2}  # category ids, 0 is background
        # the score of a detection is its class's column: background must be column 0
        np.testing.assert_allclose(s.scores, s.probs[np.arange(n), s.labels], rtol=1e-5)
        assert s.boxes.shape == (n, 4)
        assert (s.boxes[:, 2] <= w + 1e-3).all() and (s.boxes[:, 3] <= h + 1e-3).all()
        assert s.feature.shape == (256,) and np.isfinite(s.feature).all()
    assert not np.allclose(scores[0].feature, scores[1].feature)


@pytest.mark.mmdet
def test_mmdet_background_column_moves_first():
    """Crafted logits through the real bbox head: mmdet's background (last) becomes column 0."""
    model = mmdet_model(num_classes=2)
    from mmengine.config import ConfigDict

    head = model.detector.roi_head.bbox_head
    # row 0: class index 1 (our label 2); row 1: background; row 2: class index 0 (label 1)
    logits = torch.tensor([[0.0, 6.0, 0.0], [0.0, 0.0, 8.0], [5.0, 0.0, 0.0]])
    rois = torch.tensor([[0, 10, 10, 40, 30], [0, 5, 5, 20, 20], [0, 50, 20, 90, 60]], dtype=torch.float)
    test_cfg = ConfigDict(score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100)
    meta = {"img_shape": (64, 96), "scale_factor": (1.0, 1.0)}
    (res,) = head.predict_by_feat(rois=(rois,), cls_scores=(logits,), bbox_preds=(torch.zeros(3, 8),),
                                  batch_img_metas=[meta], rcnn_test_cfg=test_cfg, rescale=False)
    from synthloop.detection.mmdet_backend import background_first

    probs = background_first(res.probs)
    top = {int(l) + 1: p for l, p in zip(res.labels, probs)}  # our labels are mmdet's + 1
    assert top[2].argmax() == 2 and top[1].argmax() == 1
    expected = torch.softmax(logits, -1)
    rows = {2: 0, 1: 2}
    for label, p in top.items():
        row = expected[rows[label]]
        torch.testing.assert_close(p, torch.cat([row[-1:], row[:-1]]))
    assert len(res.labels) == 2  # the background row and the ~0 classes keep no box


@pytest.mark.mmdet
@pytest.mark.slow
def test_mmdet_checkpoint_round_trip(tmp_path: Path):
    model = mmdet_model(num_classes=2).eval()
    path = save_checkpoint(model, tmp_path / "m.pt", cfg=model.detector_cfg, num_classes=2,
                           extra={"class_names": ["red", "blue"]})
    loaded = load_checkpoint(path)  # torch.load(weights_only=True) inside
    assert loaded.detector_cfg.backend == "mmdet" and loaded.num_classes == 2
    assert loaded.checkpoint_extra["class_names"] == ["red", "blue"]
    a = predict_with_probs_and_features(model, images()[:1], batch_size=1, progress=False)[0]
    b = predict_with_probs_and_features(loaded, images()[:1], batch_size=1, progress=False)[0]
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)
    np.testing.assert_allclose(a.feature, b.feature, atol=1e-6)


@pytest.mark.mmdet
@pytest.mark.slow
def test_backbone_learns_from_scratch_and_keeps_frozen_stem_when_pretrained(tmp_path: Path):
    model = mmdet_model(num_classes=2)
    backbone = model.detector.backbone
    assert backbone.conv1.weight.requires_grad and backbone.norm_eval is False  # from scratch
    # a checkpoint of a model first built on pretrained weights (the config's frozen_stages=1,
    # norm_eval=True) must come back with them, although load_checkpoint builds with weights=None
    pretrained_cfg = model.detector_cfg.model_copy(update={"weights": "zoo.pth"})
    path = save_checkpoint(model, tmp_path / "p.pt", cfg=pretrained_cfg, num_classes=2)
    loaded = load_checkpoint(path)
    backbone = loaded.detector.backbone
    assert backbone.norm_eval is True and backbone.frozen_stages == 1
    assert not backbone.conv1.weight.requires_grad and not backbone.layer1[0].conv1.weight.requires_grad
    assert backbone.layer2[0].conv1.weight.requires_grad
    loaded.train()
    assert not backbone.norm1.training  # BN kept in eval mode while training


def _mmengine_style_checkpoint(path: Path, state: dict) -> None:
    """What mmengine's Runner writes (a model-zoo .pth): meta, state_dict, and a message hub
    whose HistoryBuffers hold numpy arrays."""
    from mmengine.logging import MessageHub

    hub = MessageHub.get_instance("synthloop-test")
    hub.update_scalar("train/loss", 1.5)
    hub.update_scalar("train/loss", np.float64(1.25))
    torch.save({"meta": {"epoch": 12, "iter": 1000, "mmengine_version": "0.10.7",
                         "dataset_meta": {"classes": ("red", "blue", "green")},
                         "seed": np.int64(0)},
                "state_dict": state, "message_hub": hub.state_dict()}, path)


@pytest.mark.mmdet
@pytest.mark.slow
def test_model_zoo_style_checkpoint_loads_on_torch_2_6_plus(tmp_path: Path):
    source = mmdet_model(num_classes=3)  # a "zoo" model with another class count
    path = tmp_path / "zoo.pth"
    _mmengine_style_checkpoint(path, source.detector.state_dict())
    with pytest.raises(Exception, match="weights_only|Unsupported global"):
        torch.load(path)  # what mmengine 0.10.7 does on torch >= 2.6: refused
    model = mmdet_model(num_classes=2, weights=str(path))
    own, zoo = model.detector.state_dict(), source.detector.state_dict()
    for key in ("backbone.conv1.weight", "rpn_head.rpn_cls.weight", "roi_head.bbox_head.shared_fcs.0.weight"):
        torch.testing.assert_close(own[key], zoo[key])
    assert own["roi_head.bbox_head.fc_cls.weight"].shape[0] == 3  # 2 classes + background, fresh


class _GetattrPayload:
    """Pickles as ``getattr(HistoryBuffer, "__init__")``: the first step of a code-execution chain."""

    def __reduce__(self):
        from mmengine.logging import HistoryBuffer

        return (getattr, (HistoryBuffer, "__init__"))


@pytest.mark.mmdet
def test_only_history_buffer_lookups_pass_the_getattr_allowance(tmp_path: Path):
    require_mmdet()
    from synthloop.detection.mmdet_weights import load_mmengine_checkpoint

    path = tmp_path / "crafted.pth"
    torch.save({"state_dict": {}, "x": _GetattrPayload()}, path)
    with pytest.raises(ValueError, match="TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"):
        load_mmengine_checkpoint(path)


@pytest.mark.mmdet
@pytest.mark.slow
def test_mmdet_training_resumes_from_its_last_checkpoint(tmp_path: Path):
    ds = make_coco(tmp_path / "coco")
    fast = dict(batch_size=2, warmup_steps=1, lr=0.005, num_threads=2, augment="flip")
    first = train(mmdet_model(num_classes=2), ds, cfg=TrainConfig(epochs=1, **fast), val_ds=None,
                  checkpoint_dir=tmp_path / "ckpt")
    assert first.steps == 2 and np.isfinite(first.history[0]["loss"])
    assert {"loss_rpn_cls", "loss_cls", "loss_bbox"} <= set(first.history[0])
    resumed = train(mmdet_model(num_classes=2), ds, cfg=TrainConfig(epochs=2, **fast), val_ds=None,
                    checkpoint_dir=tmp_path / "ckpt")
    assert resumed.steps == 4 and len(resumed.history) == 2
    assert resumed.history[0] == first.history[0]  # epoch 1 was not run again
    best = load_checkpoint(resumed.best_checkpoint)
    assert best.detector_cfg.backend == "mmdet"


@pytest.mark.mmdet
def test_unknown_mmdet_config_is_a_clear_error():
    require_mmdet()
    with pytest.raises(FileNotFoundError, match="no-such-config"):
        build_detector(cfg=mmdet_cfg(mmdet_config="no-such-config.py"), num_classes=2)


@pytest.mark.mmdet
def test_mmdet_data_preprocessor_follows_the_model_to_its_device():
    """`.to(device)` on our wrapper must reach mmengine's data preprocessor, which moves the
    inputs: left on the CPU, it would feed CPU tensors to a model on the GPU."""
    model = mmdet_model()
    assert model.detector.data_preprocessor._device == torch.device("cpu")
    model.to("meta")
    assert model.detector.data_preprocessor._device == torch.device("meta")
    model.to_empty(device="cpu")  # weights on meta have no data to copy back: allocate them
    assert model.detector.data_preprocessor._device == torch.device("cpu")
