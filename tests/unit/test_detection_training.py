"""Augmentation presets, the training loop (2-step runs), and COCO evaluation on tiny data."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from synthloop.config import DetectorConfig, TrainConfig
from synthloop.data.coco import CocoDataset
from synthloop.detection import (
    DetectionDataset,
    NonFiniteLossError,
    build_augmentation,
    build_detector,
    evaluate,
    evaluate_predictions,
    load_checkpoint,
    train,
)
from synthloop.detection.training import _record_eval, _RunState, lr_at

from tests_support import TOY_H as H, TOY_W as W, make_coco


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> CocoDataset:
    return make_coco(tmp_path_factory.mktemp("coco"))


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_detector(cfg=DetectorConfig(min_size=64, max_size=96), num_classes=2)


FAST = dict(batch_size=2, warmup_steps=1, lr=0.005, num_threads=2, augment="flip")


# ------------------------------------------------------------------ augmentation
def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="none, flip, paper"):
        build_augmentation("mosaic")


@pytest.mark.parametrize("preset", ["none", "flip", "paper"])
def test_presets_keep_boxes_valid(coco: CocoDataset, preset: str) -> None:
    ds = DetectionDataset(coco, augment=preset, seed=1)
    for _ in range(3):
        for i in range(len(ds)):
            image, target = ds[i]
            assert image.shape == (3, H, W) and image.dtype == torch.float32
            assert 0.0 <= image.min() and image.max() <= 1.0
            boxes, labels = target["boxes"], target["labels"]
            assert boxes.dtype == torch.float32 and boxes.shape[1:] == (4,)
            assert labels.dtype == torch.int64 and len(labels) == len(boxes)
            assert set(labels.tolist()) <= {1, 2}
            if len(boxes):
                assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
                assert boxes.min() >= 0 and (boxes[:, 2] <= W).all() and (boxes[:, 3] <= H).all()
    assert ds[3][1]["boxes"].shape == (0, 4)  # the image without boxes stays empty


def test_flip_moves_boxes_with_the_image(coco: CocoDataset) -> None:
    flip = build_augmentation("flip", seed=0)
    image = np.zeros((H, W, 3), np.uint8)
    image[10:30, 5:31] = 255
    outs = [flip(image, np.array([[5, 10, 31, 30]], np.float32), np.array([2])) for _ in range(8)]
    flipped = [o for o in outs if o.image[10:30, W - 31:W - 5].min() == 255]
    assert flipped, "p=0.5 flip never fired in 8 draws"
    np.testing.assert_allclose(flipped[0].boxes, [[W - 31, 10, W - 5, 30]], atol=1e-3)
    assert flipped[0].labels.dtype == np.int64 and flipped[0].labels.tolist() == [2]


# ----------------------------------------------------------------------- training
def test_lr_cosine_decay_spans_the_budget() -> None:
    cfg = TrainConfig(lr=0.1, warmup_steps=10, lr_decay="cosine", lr_min_factor=0.05)
    assert lr_at(5, cfg, 110) == lr_at(5, TrainConfig(lr=0.1, warmup_steps=10))  # warm-up as ever
    assert lr_at(10, cfg, 110) == pytest.approx(0.1)
    assert lr_at(60, cfg, 111) == pytest.approx(0.005 + 0.095 * 0.5)  # half way: the mean
    assert lr_at(110, cfg, 111) == pytest.approx(0.005)  # the last step: lr * lr_min_factor
    assert lr_at(500, cfg, 111) == pytest.approx(0.005)
    lrs = [lr_at(s, cfg, 111) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lr_at(60, cfg) == 0.1  # no budget known: constant
    with pytest.raises(ValueError):
        TrainConfig(lr_decay="step")


def test_lr_warmup_is_linear() -> None:
    cfg = TrainConfig(lr=0.1, warmup_steps=10)
    assert lr_at(0, cfg) == pytest.approx(0.1 * 0.001)
    assert lr_at(5, cfg) == pytest.approx(0.1 * (0.001 * 0.5 + 0.5))
    assert lr_at(10, cfg) == lr_at(500, cfg) == 0.1


def test_early_stopping_counts_only_after_a_nonzero_ap() -> None:
    cfg = TrainConfig(patience=2)
    state = _RunState()
    assert [_record_eval(state, ap, cfg) for ap in (0.0, 0.0, 0.0)] == [True, True, True]
    assert state.stop_reason == ""
    assert [_record_eval(state, ap, cfg) for ap in (0.2, 0.1)] == [True, False]
    assert state.stop_reason == ""
    assert _record_eval(state, 0.2, cfg) is False and state.stop_reason == "early_stop"


def test_train_evaluate_and_resume(coco: CocoDataset, tmp_path: Path) -> None:
    model = tiny_model()
    seen = []
    result = train(model, coco, cfg=TrainConfig(epochs=1, **FAST), val_ds=coco,
                   checkpoint_dir=tmp_path, progress=False, on_epoch=lambda e, m: seen.append((e, m)))
    assert result.steps == 2 and result.best_epoch == 1 and result.stop_reason == "epochs"
    assert len(result.history) == 1 and [e for e, _ in seen] == [1]
    metrics = seen[0][1]
    assert np.isfinite(metrics["loss"]) and {"AP", "AP50", "AP75", "AP_red", "AP_blue"} <= set(metrics)
    assert result.best_metrics["AP"] == metrics["AP"]
    assert (tmp_path / "last.pt").is_file() and result.best_checkpoint == tmp_path / "best.pt"
    best = load_checkpoint(result.best_checkpoint)
    assert best.checkpoint_extra["epoch"] == 1
    # same config with one more epoch: continues from last.pt instead of starting over
    resumed = train(tiny_model(), coco, cfg=TrainConfig(epochs=2, **FAST), val_ds=coco,
                    checkpoint_dir=tmp_path, progress=False)
    assert resumed.steps == 4 and [h["epoch"] for h in resumed.history] == [1, 2]
    # a different learning rate is another run: it starts afresh
    fresh = train(tiny_model(), coco, cfg=TrainConfig(epochs=1, **{**FAST, "lr": 0.001}),
                  val_ds=None, checkpoint_dir=tmp_path, progress=False)
    assert fresh.steps == 2 and fresh.best_metrics["epoch"] == 1 and "AP" not in fresh.best_metrics


def test_time_budget_stops_after_a_step(coco: CocoDataset, tmp_path: Path) -> None:
    result = train(tiny_model(), coco, cfg=TrainConfig(epochs=5, max_minutes=1e-5, **FAST),
                   val_ds=None, checkpoint_dir=tmp_path, progress=False)
    assert result.steps == 1 and result.stop_reason == "max_minutes"


def test_non_finite_loss_raises(coco: CocoDataset, tmp_path: Path) -> None:
    model = tiny_model()
    nan = torch.tensor(float("nan"), requires_grad=True)
    model.forward = lambda images, targets=None: {"loss_classifier": nan * 1.0}
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        train(model, coco, cfg=TrainConfig(epochs=1, **FAST), val_ds=None,
              checkpoint_dir=tmp_path, progress=False)


# --------------------------------------------------------------------- evaluation
def _gt_as_predictions(coco: CocoDataset) -> list[SimpleNamespace]:
    out = []
    for im in coco.images:
        boxes, labels = coco.boxes_xyxy(im.id)
        out.append(SimpleNamespace(image_id=im.id, boxes=boxes, labels=labels,
                                   scores=np.ones(len(labels), np.float32)))
    return out


def test_perfect_predictions_score_ap_one(coco: CocoDataset) -> None:
    metrics = evaluate_predictions(coco, _gt_as_predictions(coco))
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP_red"] == pytest.approx(1.0) and metrics["AP_blue"] == pytest.approx(1.0)


def test_no_detections_and_empty_ground_truth(coco: CocoDataset) -> None:
    assert evaluate_predictions(coco, [])["AP"] == 0.0
    # a confident false positive on the image without ground truth lowers AP below 1
    preds = _gt_as_predictions(coco)
    preds[3] = SimpleNamespace(image_id=4, boxes=np.array([[1, 1, 30, 30]], np.float32),
                               labels=np.array([1]), scores=np.array([2.0], np.float32))
    assert 0.0 < evaluate_predictions(coco, preds)["AP_red"] < 1.0
    with pytest.raises(ValueError, match="ground truth"):
        evaluate_predictions(coco.without_annotations(), [])


def test_evaluate_runs_the_model(coco: CocoDataset) -> None:
    metrics = evaluate(tiny_model(), coco, batch_size=4)
    assert 0.0 <= metrics["AP"] <= 1.0 and set(metrics) == {"AP", "AP50", "AP75", "AP_red", "AP_blue"}


def test_boxes_by_image_matches_the_dataset(coco: CocoDataset) -> None:
    from synthloop.detection.datasets import boxes_by_image

    table = boxes_by_image(coco)
    for im in coco.images:
        boxes, labels = coco.boxes_xyxy(im.id)
        np.testing.assert_array_equal(table[im.id][0], boxes)
        np.testing.assert_array_equal(table[im.id][1], labels)
