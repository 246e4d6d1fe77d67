"""The cells of the experiment grid and the fine-tuning budget of one run (pure functions)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from synthloop.config import ExperimentConfig


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid. ``cycle`` 0 is a single-cycle run; multi-cycle runs count 1..n.
    ``fold`` 0: the pipeline's own pool/validation split; 1..n: a rotation fold."""

    setting: str  # "R" or "S+R"
    strategy: str
    seed: int
    k: int
    cycle: int = 0
    fold: int = 0

    @property
    def key(self) -> str:
        tail = (f"-c{self.cycle}" if self.cycle else "") + (f"-f{self.fold}" if self.fold else "")
        return f"{self.setting.replace('+', '')}-{self.strategy}-s{self.seed}-k{self.k}{tail}"


@dataclass
class RunResult:
    spec: dict[str, Any]
    labels_total: int
    labels_new: int
    metrics: dict[str, float]
    train_seconds: float
    steps: int
    selected: list[int]
    select_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def fold_indices(exp: ExperimentConfig) -> list[int]:
    return [0] if exp.folds == 1 else list(range(1, exp.folds + 1))


def grid(exp: ExperimentConfig) -> list[RunSpec]:
    """The single-cycle runs, in the order they run: the smallest (cheapest) k first, and for
    each k seed by seed (and fold by fold) every setting and strategy, so a grid stopped early
    has whole cells (every seed and fold) of its smaller ks."""
    specs: list[RunSpec] = []
    for k in sorted(exp.ks):
        for seed in exp.seeds:
            for fold in fold_indices(exp):
                for setting in exp.settings:
                    strategies = exp.real_only_strategies if setting == "R" else exp.strategies
                    specs.extend(RunSpec(setting, strategy, seed, k, fold=fold)
                                 for strategy in strategies)
    return specs


def multi_cycle_chains(exp: ExperimentConfig) -> list[list[RunSpec]]:
    """One chain of cycles 1..n a seed (``multi_cycle.seeds``, else the grid's) and fold
    (none without ``multi_cycle``)."""
    mc = exp.multi_cycle
    if mc is None:
        return []
    return [[RunSpec("S+R", mc.strategy, seed, mc.k, cycle=t, fold=fold)
             for t in range(1, mc.cycles + 1)]
            for seed in (mc.seeds or exp.seeds) for fold in fold_indices(exp)]


def finetune_budget(num_images: int, batch_size: int, *, epochs: int | None,
                    steps: int | None, min_steps: int = 0) -> tuple[int, int]:
    """(epochs, steps) of a run on ``num_images`` labelled images; an epoch is
    ceil(num_images / batch_size) steps. ``epochs``: that many epochs, raised to reach
    ``min_steps``; ``steps``: a fixed budget, rounded up to whole epochs. Exactly one is given."""
    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs and steps")
    per_epoch = max(1, math.ceil(num_images / batch_size))
    if steps is not None:
        n = max(1, math.ceil(steps / per_epoch))
    else:
        n = max(epochs, math.ceil(min_steps / per_epoch))
    return n, n * per_epoch


__all__ = ["RunResult", "RunSpec", "finetune_budget", "fold_indices", "grid", "multi_cycle_chains"]
