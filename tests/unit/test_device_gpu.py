"""On a CUDA machine (marker ``gpu``: deselected, not skipped, where torch sees no GPU): auto
picks the GPU, training runs there with mixed precision and loader workers, and what is stored
comes back to the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthloop.config import DetectorConfig, RuntimeConfig, TrainConfig
from synthloop.detection import build_detector, predict_with_probs_and_features, train
from synthloop.detection.device import loader_options, resolve_device, training_precision
from synthloop.detection.training import seed_everything
from test_detection_training import make_coco

pytestmark = pytest.mark.gpu
TINY = DetectorConfig(min_size=64, max_size=96)


def test_auto_takes_the_gpu_and_trains_there_with_mixed_precision(tmp_path):
    device = resolve_device("auto")
    assert device.type == "cuda"
    precision = training_precision(device)
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert precision.dtype is expected and (precision.scaler is not None) == (
        expected is torch.float16)
    assert loader_options(device, workers=2) == {"num_workers": 2, "pin_memory": True}
    coco = make_coco(tmp_path / "coco", n=8)
    runs = []
    for run in range(2):
        seed_everything(0)
        model = build_detector(cfg=TINY, num_classes=2, device=device)
        result = train(model, coco, cfg=TrainConfig(batch_size=2, warmup_steps=1, lr=0.005,
                                                    epochs=2, augment="flip"),
                       val_ds=coco, checkpoint_dir=tmp_path / f"run{run}", progress=False,
                       runtime=RuntimeConfig(loader_workers=2))
        assert next(model.parameters()).device.type == "cuda"
        assert np.isfinite(result.history[-1]["loss"])
        ckpt = torch.load(tmp_path / f"run{run}" / "last.pt", weights_only=True)
        assert all(v.device.type == "cpu" for v in ckpt["model"].values())
        scores = predict_with_probs_and_features(model, coco, batch_size=4, progress=False)
        assert all(isinstance(s.probs, np.ndarray) for s in scores)
        runs.append(result.history[0]["loss"])
    # same seed, same device: the same batches and augmentations (workers seeded per epoch)
    assert runs[0] == pytest.approx(runs[1], rel=1e-2)
