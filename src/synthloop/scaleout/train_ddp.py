"""Fine-tune (or pretrain) a detector on every GPU of a node: ``torchrun`` + DDP.

    torchrun --standalone --nproc-per-node=4 -m synthloop.scaleout.train_ddp \\
        --config pipelines/demo.yaml --train data/labeled/annotations.json \\
        --init checkpoints/previous.pt --out checkpoints/candidate.pt --epochs 12

Each rank trains on its share of the images (``shard_indices``, reshuffled per epoch) with
``detection.train_one_epoch`` on a ``DistributedDataParallel`` model; gradients are averaged,
so the effective batch is ``batch_size x world_size`` (scale ``lr`` with it if you like).
Rank 0 writes the checkpoint; evaluation and MLflow logging stay with the stage that calls
this. Without torchrun (plain ``python -m``) it is the single-process loop.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def train_ddp(*, config: Path, train: Path, out: Path, init: Path | None = None,
              epochs: int | None = None, overrides: list[str] = ()) -> dict[str, float]:
    """Train with the pipeline's ``finetune`` settings; return rank 0's last epoch metrics."""
    import torch
    from torch.utils.data import DataLoader, Subset

    from synthloop.config import load_config
    from synthloop.data.coco import CocoDataset
    from synthloop.detection import build_detector, load_checkpoint, save_checkpoint, train_one_epoch
    from synthloop.detection.datasets import DetectionDataset, collate_detection
    from synthloop.detection.device import training_precision
    from synthloop.scaleout.ddp import process_group, shard_indices, unwrap, wrap_model

    cfg = load_config(config, overrides=list(overrides))
    tcfg = cfg.finetune if epochs is None else cfg.finetune.model_copy(update={"epochs": epochs})
    with process_group() as env:
        torch.manual_seed(tcfg.seed)  # same initial weights on every rank (DDP also broadcasts)
        model = (load_checkpoint(init) if init else
                 build_detector(cfg=cfg.detector, num_classes=len(cfg.class_names)))
        model = wrap_model(model.to(env.device), env)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=tcfg.lr, momentum=tcfg.momentum,
                                    weight_decay=tcfg.weight_decay)
        data = DetectionDataset(CocoDataset.load(train), augment=tcfg.augment,
                                seed=tcfg.seed + env.rank)
        step, metrics = 0, {}
        precision = training_precision(torch.device(env.device),
                                       enabled=cfg.runtime.mixed_precision)
        for epoch in range(1, tcfg.epochs + 1):
            mine = Subset(data, shard_indices(len(data), env, seed=tcfg.seed * 100_003 + epoch))
            loader = DataLoader(mine, batch_size=tcfg.batch_size, shuffle=False,
                                collate_fn=collate_detection, num_workers=0)
            metrics, step, _ = train_one_epoch(model, optimizer, loader, cfg=tcfg, epoch=epoch,
                                               step=step, deadline=None, progress=env.is_main,
                                               precision=precision)
            if env.is_main:
                log.info("epoch %d: loss %.4f (%d ranks, step %d)", epoch, metrics["loss"],
                         env.world_size, step)
        if env.is_main:
            save_checkpoint(unwrap(model), out, cfg=cfg.detector, num_classes=len(cfg.class_names),
                            extra={"class_names": cfg.class_names, "world_size": env.world_size})
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--train", type=Path, required=True, help="COCO json (images beside it)")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint written by rank 0")
    parser.add_argument("--init", type=Path, default=None, help="checkpoint to start from")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    train_ddp(config=args.config, train=args.train, out=args.out, init=args.init,
              epochs=args.epochs, overrides=args.overrides)


if __name__ == "__main__":
    main()
