"""Data-parallel training with torchrun: the process group, the model wrapper, the data split.

``torchrun --nproc-per-node=4 train.py`` starts one process per GPU and sets ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE``; without them (a plain ``python``) everything here is the
single-process path: no process group, the model unchanged, every index on rank 0. So a
training script written with these helpers runs the same on a laptop and on 8 GPUs::

    with process_group() as env:
        model = wrap_model(build_detector(...).to(env.device), env)
        indices = shard_indices(len(dataset), env, seed=epoch)   # this rank's images
        ... train_one_epoch on Subset(dataset, indices); DDP averages the gradients ...
        if env.is_main: save_checkpoint(unwrap(model), ...)       # one writer

NCCL on GPUs, Gloo on CPUs (tests run two Gloo processes on loopback).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_from_torchrun(environ: dict[str, str] | None = None) -> DistEnv:
    """Read torchrun's variables (absent: one process). The device is ``cuda:<local_rank>``
    where CUDA is available, else ``cpu``."""
    import torch

    e = os.environ if environ is None else environ
    world = int(e.get("WORLD_SIZE", "1"))
    rank, local = int(e.get("RANK", "0")), int(e.get("LOCAL_RANK", "0"))
    if not (0 <= rank < world and world >= 1):
        raise ValueError(f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world}")
    device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    return DistEnv(rank, local, world, device)


@contextmanager
def process_group(backend: str | None = None, environ: dict[str, str] | None = None
                  ) -> Iterator[DistEnv]:
    """Join the torchrun process group for the block (no-op for a single process)."""
    import torch
    import torch.distributed as dist

    env = env_from_torchrun(environ)
    if not env.distributed:
        yield env
        return
    backend = backend or ("nccl" if env.device.startswith("cuda") else "gloo")
    if env.device.startswith("cuda"):
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size)
    try:
        yield env
    finally:
        dist.destroy_process_group()


def wrap_model(model: Any, env: DistEnv) -> Any:
    """``DistributedDataParallel`` around ``model`` when distributed, else ``model`` itself."""
    if not env.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [env.local_rank] if env.device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: Any) -> Any:
    """The plain module (what checkpoints save), DDP or not."""
    return getattr(model, "module", model)


def shard_indices(n: int, env: DistEnv, *, seed: int = 0, shuffle: bool = True) -> list[int]:
    """This rank's share of ``range(n)``: a seeded permutation cut round-robin, padded by
    wrapping so that every rank gets the same count (as ``DistributedSampler`` does)."""
    import torch

    order = (torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
             if shuffle else list(range(n)))
    per_rank = -(-n // env.world_size) if n else 0
    padded = (order * (1 + (per_rank * env.world_size) // max(n, 1)))[:per_rank * env.world_size]
    return padded[env.rank::env.world_size]
