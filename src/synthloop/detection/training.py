"""A plain training loop: SGD with linear warm-up, COCO AP on a validation set, early stopping
that keeps the best weights, a wall-clock budget, and resumable per-epoch checkpoints.

The loop returns metrics; the caller (a stage) logs them, e.g. to MLflow via ``on_epoch``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from synthloop import faults
from synthloop.config import RuntimeConfig, TrainConfig
from synthloop.data.coco import CocoDataset
from synthloop.detection.checkpoint import read_checkpoint, save_checkpoint, write_payload
from synthloop.detection.datasets import DetectionDataset, collate_detection
from synthloop.detection.device import (Precision, configure_determinism, loader_options,
                                        model_device, training_precision)
from synthloop.detection.evaluation import evaluate

log = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.pt"
WARMUP_START_FACTOR = 0.001
# Budget and stopping knobs may change between a crash and its resume; these may not.
_NOT_FINGERPRINTED = {"epochs", "max_minutes", "patience", "eval_every_epochs", "num_threads",
                      "monitor_val"}


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; lower the learning rate or check the data."""


@dataclass(frozen=True)
class TrainResult:
    """``best_metrics``: the history entry of the kept weights (validation AP keys when a
    validation set was given); ``history``: one dict per epoch; ``stop_reason``: "epochs",
    "early_stop" or "max_minutes"; ``seconds``: training wall time, summed over resumes."""

    best_metrics: dict[str, float]
    history: list[dict[str, float]]
    steps: int
    seconds: float
    best_epoch: int
    stop_reason: str = "epochs"
    best_checkpoint: Path | None = None
    last_checkpoint: Path | None = None


@dataclass
class _RunState:
    """Everything a resume needs besides the model and optimizer; plain values only."""

    epoch: int = 0  # epochs completed
    step: int = 0
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_epoch: int = 0
    best_score: float = -1.0
    bad_evals: int = 0
    stop_reason: str = ""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's), or AdamW (learns faster from scratch on a CPU budget)."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr_at(0, cfg), weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr_at(0, cfg), momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def lr_at(step: int, cfg: TrainConfig, total_steps: int | None = None) -> float:
    """Linear warm-up from ``lr * 0.001`` to ``lr`` over ``warmup_steps``, then constant, or
    with ``lr_decay: cosine`` a half cosine from ``lr`` at the warm-up's end to
    ``lr * lr_min_factor`` at step ``total_steps - 1`` (the whole budget; constant without it)."""
    if cfg.warmup_steps <= 0 or step >= cfg.warmup_steps:
        if cfg.lr_decay == "none" or not total_steps:
            return cfg.lr
        span = max(total_steps - 1 - cfg.warmup_steps, 1)
        t = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
        low = cfg.lr * cfg.lr_min_factor
        return low + (cfg.lr - low) * 0.5 * (1.0 + math.cos(math.pi * t))
    alpha = step / cfg.warmup_steps
    return cfg.lr * (WARMUP_START_FACTOR * (1 - alpha) + alpha)


def _fingerprint(model: nn.Module, train_ds: CocoDataset, cfg: TrainConfig) -> str:
    detector = getattr(model, "detector_cfg", None)
    key = {
        "train": {k: v for k, v in cfg.model_dump(mode="json").items()
                  if k not in _NOT_FINGERPRINTED and not _unused_option(cfg, k)},
        "detector": detector.model_dump(mode="json") if detector is not None else None,
        "num_classes": getattr(model, "num_classes", None),
        "images": [[im.id, im.file_name] for im in train_ds.images],
        "annotations": len(train_ds.annotations),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _unused_option(cfg: TrainConfig, key: str) -> bool:
    # options added later leave the fingerprints of runs that do not use them as they were
    # (a checkpoint written before crop_final existed still resumes)
    return key in ("crop_final", "crop_final_from") and cfg.crop_final is None


def _require_detector_attrs(model: nn.Module) -> None:
    if getattr(model, "detector_cfg", None) is None or getattr(model, "num_classes", None) is None:
        raise TypeError("train() needs a model from build_detector or load_checkpoint "
                        "(it carries detector_cfg and num_classes for the checkpoints)")


def _save_last(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: _RunState,
               fingerprint: str) -> None:
    write_payload({"format": "synthloop-train/1", "fingerprint": fingerprint,
                   "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                   "optimizer": _on_cpu(optimizer.state_dict()), "state": asdict(state)}, path)


def _on_cpu(value: Any) -> Any:
    """Tensors anywhere in a nested dict/list moved to the CPU (optimizer state on a GPU)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_on_cpu(v) for v in value)
    return value


def _try_resume(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                fingerprint: str) -> _RunState:
    ckpt = read_checkpoint(path) if path.is_file() else None
    if ckpt is None or ckpt.get("fingerprint") != fingerprint:
        if ckpt is not None:
            log.warning("%s was written for another config or dataset: starting afresh", path)
        (path.parent / BEST).unlink(missing_ok=True)  # a stale best must not win at the end
        return _RunState()
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    state = _RunState(**ckpt["state"])
    if state.stop_reason == "max_minutes":
        state.stop_reason = ""  # the budget is checked again below, maybe with a new limit
    log.info("resuming from %s after epoch %d (step %d)", path, state.epoch, state.step)
    return state


def _reseed_worker(worker_id: int, *, seed: int) -> None:
    # Each worker holds a copy of the dataset: give it its own crop/augmentation stream from
    # (run seed, epoch, worker) alone, so a run with workers is as reproducible as one without.
    torch.utils.data.get_worker_info().dataset.reseed((seed * 1_000_003 + worker_id) % 2**32)


def _loader(ds: DetectionDataset, cfg: TrainConfig, epoch: int, *,
            device: torch.device = torch.device("cpu"), workers: int | None = None) -> DataLoader:
    # Order depends on (seed, epoch) only, so a resumed run sees the same batches.
    seed = cfg.seed * 100_003 + epoch
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    options = loader_options(device, workers=workers)  # CPU: no workers, no pinned memory
    if options["num_workers"]:
        options.update(worker_init_fn=functools.partial(_reseed_worker, seed=seed),
                       generator=torch.Generator().manual_seed(seed + 1))
    return DataLoader(ds, batch_size=cfg.batch_size, sampler=order.tolist(),
                      collate_fn=collate_detection, **options)


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader, *,
                    cfg: TrainConfig, epoch: int, step: int, deadline: float | None,
                    progress: bool = True, precision: Precision | None = None
                    ) -> tuple[dict[str, float], int, bool]:
    """One pass over ``loader``. Returns (mean losses, the global step after it, whether the
    wall-clock ``deadline`` (``time.monotonic()`` value) stopped it early).

    Images and targets go to the model's device. ``precision`` (None: mixed precision on CUDA,
    float32 on the CPU; ``detection.device.training_precision``) wraps forward and step.
    Raises NonFiniteLossError on a NaN/inf loss, before the optimizer step.
    """
    device = model_device(model)
    precision = precision or training_precision(device)
    model.train()
    sums: dict[str, float] = {}
    batches = 0
    out_of_time = False
    bar = tqdm(loader, disable=not progress, desc=f"epoch {epoch}", unit="batch", leave=False)
    total_steps = cfg.epochs * len(loader)  # the budget the cosine decay spans
    for images, targets in bar:
        lr = lr_at(step, cfg, total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{"boxes": t["boxes"].to(device, non_blocking=True),
                    "labels": t["labels"].to(device, non_blocking=True)} for t in targets]
        with precision.autocast():
            losses = model(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            parts = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
            raise NonFiniteLossError(f"non-finite loss {loss.item()} at epoch {epoch}, step {step} "
                                     f"(lr {lr:.3g}; {parts}): lower the learning rate or check the boxes")
        optimizer.zero_grad(set_to_none=True)
        precision.backward(loss)
        if cfg.grad_clip_norm:
            # From scratch, early RPN/box losses can spike; clipping keeps one bad batch from
            # undoing the warm-up.
            precision.unscale(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
        precision.step(optimizer)
        faults.point("train.mid_epoch")
        step += 1
        batches += 1
        for k, v in (("loss", loss), *losses.items()):
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        bar.set_postfix(loss=f"{sums['loss'] / batches:.3f}", lr=f"{lr:.2g}")
        if deadline is not None and time.monotonic() >= deadline:
            out_of_time = True
            break
    bar.close()
    means = {k: v / max(batches, 1) for k, v in sums.items()}
    means["lr"] = lr_at(max(step - 1, 0), cfg, total_steps)
    return means, step, out_of_time


def _record_eval(state: _RunState, ap: float, cfg: TrainConfig) -> bool:
    """Update the best score and patience; True when these weights are the new best.

    AP is often exactly 0 for the first epochs from scratch: ties at 0 keep the newer weights
    and do not count against patience.
    """
    improved = ap > state.best_score or (state.best_score <= 0.0 and ap >= state.best_score)
    if improved:
        state.best_score, state.bad_evals = ap, 0
    else:
        state.bad_evals += 1
        if state.bad_evals >= cfg.patience and not state.stop_reason:
            state.stop_reason = "early_stop"
    return improved


def train(model: nn.Module, train_ds: CocoDataset, *, cfg: TrainConfig, val_ds: CocoDataset | None,
          checkpoint_dir: Path, progress: bool = True,
          on_epoch: Callable[[int, dict[str, float]], None] | None = None,
          runtime: RuntimeConfig | None = None) -> TrainResult:
    """Train ``model`` (from ``build_detector``/``load_checkpoint``) on ``train_ds``, on the
    model's device; ``runtime`` (mixed precision, loader workers) matters on CUDA only.

    Evaluates on ``val_ds`` every ``cfg.eval_every_epochs`` epochs and after the last one,
    stops early after ``cfg.patience`` evaluations without a better AP, or when
    ``cfg.max_minutes`` of training time are spent, and leaves the best weights in ``model``
    (the last ones without ``val_ds``). ``checkpoint_dir`` receives ``last.pt`` (resume state,
    every epoch) and ``best.pt`` (a ``load_checkpoint`` file); a ``last.pt`` written for the
    same config and dataset is resumed. ``on_epoch(epoch, metrics)`` runs after each epoch.
    """
    _require_detector_attrs(model)
    if not train_ds.images:
        raise ValueError("train_ds has no images")
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.num_threads)
    skip_resize = getattr(model.transform, "_skip_resize", False)
    model.transform._skip_resize = cfg.crop is not None  # read in training mode only
    try:
        return _train(model, train_ds, cfg=cfg, val_ds=val_ds, checkpoint_dir=Path(checkpoint_dir),
                      progress=progress, on_epoch=on_epoch, runtime=runtime or RuntimeConfig())
    finally:
        torch.set_num_threads(threads)
        model.transform._skip_resize = skip_resize


def _train(model: nn.Module, train_ds: CocoDataset, *, cfg: TrainConfig, val_ds: CocoDataset | None,
           checkpoint_dir: Path, progress: bool,
           on_epoch: Callable[[int, dict[str, float]], None] | None,
           runtime: RuntimeConfig) -> TrainResult:
    seed_everything(cfg.seed)
    device = model_device(model)
    configure_determinism(device)
    precision = training_precision(device, enabled=runtime.mixed_precision)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg)
    fingerprint = _fingerprint(model, train_ds, cfg)
    state = _try_resume(checkpoint_dir / LAST, model, optimizer, fingerprint)
    resize = None
    if cfg.crop is not None:  # patches come at evaluation scale: the detector must not resize
        resize = (int(model.transform.min_size[0]), int(model.transform.max_size))
    data = DetectionDataset(train_ds, augment=cfg.augment, seed=cfg.seed, crop=cfg.crop,
                            resize=resize, crop_scale=cfg.crop_scale,
                            crop_near_parts=cfg.crop_near_parts)

    while state.epoch < cfg.epochs and not state.stop_reason:
        started = time.monotonic()
        deadline = None
        if cfg.max_minutes is not None:
            deadline = started + cfg.max_minutes * 60.0 - state.seconds
            if deadline <= started:
                state.stop_reason = "max_minutes"
                break
        epoch = state.epoch + 1
        data.crop = cfg.crop_for_epoch(epoch)  # before the loader copies it into workers
        loader = _loader(data, cfg, epoch, device=device, workers=runtime.loader_workers)
        metrics, state.step, out_of_time = train_one_epoch(
            model, optimizer, loader, cfg=cfg, epoch=epoch, step=state.step, deadline=deadline,
            progress=progress, precision=precision)
        state.epoch = epoch
        _run_epoch_end(model, state, metrics, cfg=cfg, val_ds=val_ds, out_of_time=out_of_time,
                       checkpoint_dir=checkpoint_dir, started=started, progress=progress)
        _save_last(checkpoint_dir / LAST, model, optimizer, state, fingerprint)
        if on_epoch is not None:
            on_epoch(epoch, dict(state.history[-1]))
    return _finish(model, state, val_ds, checkpoint_dir)


def _run_epoch_end(model: nn.Module, state: _RunState, metrics: dict[str, float], *, cfg: TrainConfig,
                   val_ds: CocoDataset | None, out_of_time: bool, checkpoint_dir: Path,
                   started: float, progress: bool) -> None:
    """Evaluate when due, update best/early stopping, write ``best.pt``, append to history."""
    if out_of_time:
        state.stop_reason = "max_minutes"
    last = state.epoch >= cfg.epochs or bool(state.stop_reason)
    entry: dict[str, float] = {"epoch": state.epoch, "step": state.step, **metrics}
    improved = val_ds is None  # without validation the newest weights are the ones kept
    if val_ds is not None and (state.epoch % cfg.eval_every_epochs == 0 or last):
        entry.update(evaluate(model, val_ds, batch_size=cfg.batch_size, progress=progress))
        improved = _record_eval(state, entry["AP"], cfg)
    state.seconds += time.monotonic() - started
    entry["seconds"] = state.seconds
    if improved:
        state.best_epoch, state.best_metrics = state.epoch, dict(entry)
        save_checkpoint(model, checkpoint_dir / BEST, cfg=model.detector_cfg,
                        num_classes=model.num_classes,
                        extra={"epoch": state.epoch, "metrics": dict(entry)})
    state.history.append(entry)


def _finish(model: nn.Module, state: _RunState, val_ds: CocoDataset | None,
            checkpoint_dir: Path) -> TrainResult:
    best_path = checkpoint_dir / BEST
    if val_ds is not None and best_path.is_file():
        model.load_state_dict(read_checkpoint(best_path)["model"])
    return TrainResult(best_metrics=dict(state.best_metrics), history=list(state.history),
                       steps=state.step, seconds=state.seconds, best_epoch=state.best_epoch,
                       stop_reason=state.stop_reason or "epochs",
                       best_checkpoint=best_path if best_path.is_file() else None,
                       last_checkpoint=checkpoint_dir / LAST if (checkpoint_dir / LAST).is_file() else None)
