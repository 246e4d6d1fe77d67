"""runtime.device: the resolver, CPU results unchanged by the plumbing, and every tensor the
training loop, evaluation, scoring and the evaluate stage create following the model's device
(a simulated second device: tests/device_support.py)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from device_support import DeviceRecorder, SimDevice, SimTensor, on_sim_device, plain_cpu
from synthloop.config import ConfigError, DetectorConfig, RuntimeConfig, TrainConfig
from synthloop.detection import build_detector, load_checkpoint, predict, train
from synthloop.detection.device import (
    DeviceUnavailableError,
    autocast_dtype,
    loader_options,
    resolve_device,
    training_precision,
)
from synthloop.detection.scoring import predict_with_probs_and_features
from synthloop.detection.training import seed_everything
from test_detection_training import make_coco

NO_CUDA = not torch.cuda.is_available()
TINY = DetectorConfig(min_size=64, max_size=96)
# "paper": colour jitter and noise draw continuous values, so a different random stream (loader
# workers) can never give the same batches by chance, as two coin flips for "flip" can
STEPS = dict(batch_size=2, warmup_steps=1, lr=0.005, num_threads=1, augment="paper", epochs=1)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return make_coco(tmp_path_factory.mktemp("coco"))


# ------------------------------------------------------------------------------ the resolver
def test_cpu_and_auto_without_cuda_resolve_to_the_cpu(caplog):
    assert resolve_device("cpu") == torch.device("cpu")
    if NO_CUDA:
        from synthloop.detection import device as device_mod

        device_mod._LOGGED.discard("auto")
        with caplog.at_level(logging.INFO, logger="synthloop.detection.device"):
            assert resolve_device("auto") == torch.device("cpu")
        assert "runtime.device auto: using cpu (no CUDA GPU visible)" in caplog.text


@pytest.mark.skipif(not NO_CUDA, reason="needs a machine without CUDA")
@pytest.mark.allow_skip(reason="on a GPU machine cuda resolves; that is test_gpu.py's case")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_is_a_config_error(spec):
    with pytest.raises(DeviceUnavailableError, match=rf"runtime.device is '{spec}' but torch "
                       "sees no CUDA GPU.*set runtime.device to auto or cpu") as info:
        resolve_device(spec)
    assert isinstance(info.value, ConfigError)  # the CLI's one line and exit status 2


@pytest.mark.parametrize("bad", ["gpu", "CUDA", "cuda:", "cuda:x", "mps", ""])
def test_unknown_device_names_are_refused_by_the_config(bad):
    with pytest.raises(ValidationError):
        RuntimeConfig(device=bad)
    with pytest.raises(ValueError, match="give auto, cpu, cuda or cuda:N"):
        resolve_device(bad)


def test_precision_and_loader_per_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype(cpu) is None
    assert autocast_dtype(cuda, bf16_supported=True) is torch.bfloat16
    assert autocast_dtype(cuda, bf16_supported=False) is torch.float16
    assert autocast_dtype(cuda, enabled=False, bf16_supported=True) is None
    p = training_precision(cpu)
    assert p.dtype is None and p.scaler is None
    assert loader_options(cpu) == {"num_workers": 0, "pin_memory": False}
    assert loader_options(cpu, workers=8) == {"num_workers": 0, "pin_memory": False}
    assert loader_options(cuda, workers=3) == {"num_workers": 3, "pin_memory": True}


# ------------------------------------------------------------- CPU results exactly as before
def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _plain_loop(coco):
    """The CPU training loop as it was before devices: float32 forward, backward and SGD step
    in the main process, batches in the (seed, epoch) order; written out here so that the
    product loop's CPU path is checked against something it does not share."""
    from synthloop.detection.datasets import DetectionDataset, collate_detection
    from synthloop.detection.training import lr_at, make_optimizer

    cfg = TrainConfig(**STEPS)
    seed_everything(0)
    model = build_detector(cfg=TINY, num_classes=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    data = DetectionDataset(coco, augment=cfg.augment, seed=cfg.seed)
    order = torch.randperm(len(data),
                           generator=torch.Generator().manual_seed(cfg.seed * 100_003 + 1))
    model.train()
    for step, start in enumerate(range(0, len(order), cfg.batch_size)):
        chunk = order[start:start + cfg.batch_size]
        images, targets = collate_detection([data[int(i)] for i in chunk])
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        losses = model(images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
    torch.set_num_threads(threads)
    return _state(model), predict_with_probs_and_features(model, coco, batch_size=2, progress=False)


def _trained(coco, tmp_path, **how):
    """Weights after 2 steps (1 epoch of 2 batches) through ``train``, and their predictions."""
    seed_everything(0)
    model = build_detector(cfg=TINY, num_classes=2, **how.get("build", {}))
    train(model, coco, cfg=TrainConfig(**STEPS), val_ds=None, checkpoint_dir=tmp_path,
          progress=False, **how.get("train", {}))
    return _state(model), predict_with_probs_and_features(model, coco, batch_size=2, progress=False)


@pytest.mark.slow
def test_cpu_and_auto_train_and_predict_exactly_as_before(coco, tmp_path):
    """``train`` with runtime.device cpu, or auto on a machine without CUDA (it resolves to the
    same device: test above), or without any device argument, gives bit-identical weights and
    predictions to the plain float32 loop: no mixed precision, no loader workers on the CPU."""
    base_w, base_p = _plain_loop(coco)
    cpu = resolve_device("cpu")
    runs = {"default": _trained(coco, tmp_path / "default"),
            "cpu": _trained(coco, tmp_path / "cpu", build={"device": cpu},
                            train={"runtime": RuntimeConfig(device="cpu")})}
    for name, (weights, preds) in runs.items():
        assert weights.keys() == base_w.keys()
        changed = [k for k in base_w if not torch.equal(weights[k], base_w[k])]
        assert not changed, f"{name}: weights differ from the plain loop's: {changed[:3]}"
        for a, b in zip(preds, base_p, strict=True):
            assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.probs, b.probs)
            assert np.array_equal(a.feature, b.feature)
    seed_everything(0)
    fresh = build_detector(cfg=TINY, num_classes=2).state_dict()
    assert any(not torch.equal(base_w[k], fresh[k]) for k in fresh)  # the steps did train


def test_load_checkpoint_onto_a_device(coco, tmp_path):
    from synthloop.detection import save_checkpoint

    seed_everything(0)
    path = save_checkpoint(build_detector(cfg=TINY, num_classes=2), tmp_path / "m.pt", cfg=TINY,
                           num_classes=2)
    model = load_checkpoint(path, device=resolve_device("cpu"))
    assert not model.training and next(model.parameters()).device == torch.device("cpu")
    on_meta = load_checkpoint(path, device="meta")  # the device is really used: no data there
    with pytest.raises(RuntimeError):
        on_meta.state_dict()["roi_heads.box_predictor.cls_score.bias"].tolist()


# ------------------------------------------------- every tensor follows the model's device
@pytest.fixture()
def sim_model():
    seed_everything(0)
    return on_sim_device(build_detector(cfg=TINY, num_classes=2))


@pytest.mark.slow
def test_training_on_another_device_moves_inputs_and_stores_cpu_tensors(coco, tmp_path, sim_model):
    recorder = DeviceRecorder(sim_model)
    with SimDevice():
        result = train(sim_model, coco, cfg=TrainConfig(**STEPS), val_ds=coco,
                       checkpoint_dir=tmp_path, progress=False)
    recorder.close()
    assert recorder.calls >= 2 + 2  # 2 training batches, then evaluation batches
    assert recorder.devices and set(recorder.devices) == {"meta"}  # images AND targets moved
    assert isinstance(next(sim_model.parameters()), SimTensor)  # the model stayed there
    assert all(type(v) in (int, float) for v in result.history[0].values())  # not tensors
    for name in ("last.pt", "best.pt"):  # what is stored is on the CPU, loadable without it
        ckpt = torch.load(tmp_path / name, map_location="cpu", weights_only=True)
        tensors = [v for v in ckpt["model"].values()]
        if name == "last.pt":
            tensors += [v for s in ckpt["optimizer"]["state"].values() for v in s.values()
                        if isinstance(v, torch.Tensor)]
        assert tensors and all(plain_cpu(t) for t in tensors)


def test_scoring_and_predict_on_another_device_return_cpu_results(coco, sim_model):
    recorder = DeviceRecorder(sim_model)
    with SimDevice():
        scores = predict_with_probs_and_features(sim_model, coco, batch_size=2, progress=False)
        images = [torch.rand(3, 40, 50), torch.rand(3, 64, 96)]
        plain = predict(sim_model, images)
    recorder.close()
    assert set(recorder.devices) == {"meta"} and recorder.calls == 2 + 1
    assert len(scores) == len(coco.images)
    assert all(isinstance(s.feature, np.ndarray) and s.feature.shape == (256,) for s in scores)
    assert all(plain_cpu(v) for out in plain for v in out.values())


@pytest.mark.slow
def test_the_evaluate_stage_on_another_device(coco, tmp_path, sim_model):
    from synthloop.stages.evaluate import LabelledSet, evaluate_folder
    from synthloop.stages.model_source import ModelUnderTest

    loaded = ModelUnderTest(sim_model.eval(), ("red", "blue"), "sim", {})
    data = LabelledSet(path=tmp_path / "photos", ds=coco, fmt="coco")
    with SimDevice():
        report = evaluate_folder(model=loaded, data=data, out=tmp_path / "out", class_map={},
                                 batch_size=2, overlays=1, progress=False)
    assert report.metrics_path.is_file() and 0.0 <= report.metrics["AP"] <= 1.0


def test_the_simulated_device_catches_an_input_left_on_the_cpu(sim_model):
    """The check itself: a forward on CPU images fails as it would on a GPU."""
    sim_model.eval()
    with SimDevice(), pytest.raises(RuntimeError, match="same device"):
        sim_model([torch.rand(3, 40, 50)])


def test_mmdet_wrapper_tells_its_data_preprocessors_the_device():
    """``mmdet_backend.follow_device`` (what ``MMDetDetector._apply`` calls; runs without
    mmdet): every submodule with an mmengine-style ``_device`` follows the weights."""
    from torch import nn

    from synthloop.detection.mmdet_backend import follow_device

    class Preprocessor(nn.Module):  # mmengine's BaseDataPreprocessor keeps `_device` so
        def __init__(self):
            super().__init__()
            self._device = torch.device("cpu")

    model = nn.Sequential(nn.Linear(2, 2), Preprocessor())
    model.to("meta")
    follow_device(model)
    assert model[1]._device == torch.device("meta")


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true")
def test_loader_workers_on_cuda_are_seeded_per_run_and_epoch(coco):
    """The CUDA loader (workers, pinned memory; built here without a GPU) gives the same
    batches for the same (seed, epoch), whatever else ran before, and new ones each epoch."""
    from synthloop.detection.datasets import DetectionDataset
    from synthloop.detection.training import _loader

    cfg = TrainConfig(**STEPS)
    cuda = torch.device("cuda")

    def batches(epoch):
        data = DetectionDataset(coco, augment=cfg.augment, seed=cfg.seed)
        loader = _loader(data, cfg, epoch, device=cuda, workers=2)
        assert loader.num_workers == 2 and loader.pin_memory
        return [im for images, _ in loader for im in images]

    first = batches(1)
    torch.rand(100)  # the global RNG moves between runs: the batches must not depend on it
    again, other = batches(1), batches(2)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true")
def test_each_loader_worker_draws_its_own_augmentations(tmp_path):
    """Workers hold copies of the dataset: without their own seeds, worker 0's and worker 1's
    first images would get the very same augmentation. Four copies of one image make that
    visible."""
    import shutil

    from synthloop.data.coco import CocoDataset
    from synthloop.detection.datasets import DetectionDataset
    from synthloop.detection.training import _loader

    one = make_coco(tmp_path / "src", n=1)
    d = one.to_dict()
    for i in range(2, 5):
        shutil.copy(tmp_path / "src" / "1.png", tmp_path / "src" / f"{i}.png")
        d["images"].append({**d["images"][0], "id": i, "file_name": f"{i}.png"})
        d["annotations"].append({**d["annotations"][0], "id": i, "image_id": i})
    same = CocoDataset.from_dict(d, image_root=tmp_path / "src")
    cfg = TrainConfig(**{**STEPS, "batch_size": 1})
    loader = _loader(DetectionDataset(same, augment=cfg.augment, seed=cfg.seed), cfg, 1,
                     device=torch.device("cuda"), workers=2)
    images = [batch[0][0] for batch in loader]  # batches 0, 2 from worker 0; 1, 3 from worker 1
    assert len(images) == 4 and not torch.equal(images[0], images[1])
