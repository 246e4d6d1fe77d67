"""The experiment sections of the pipeline config (``experiment:``, run by
``synthloop experiment``: stages/experiment.py). Re-exported by ``synthloop.config``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from synthloop.config_base import StrategyName, Strict


class MultiCycleConfig(Strict):
    strategy: StrategyName = "dbal"
    k: int = Field(default=25, ge=1)
    cycles: int = Field(default=8, ge=1)
    # the chains' seeds (one chain a seed and fold); None: the grid's seeds. A chain costs
    # ``cycles`` fine-tunes and cycles - 1 pool scorings, so a grid may chain fewer seeds.
    seeds: list[int] | None = Field(default=None, min_length=1)


def _renamed_seeds(data: Any) -> Any:
    """Accept ``random_seeds``, the old name of ``seeds`` (from when only random had several)."""
    if isinstance(data, dict) and "random_seeds" in data:
        if "seeds" in data:
            raise ValueError("give 'seeds' only: 'random_seeds' is its old name")
        data = {("seeds" if k == "random_seeds" else k): v for k, v in data.items()}
    return data


class ExperimentScale(Strict):
    """What a ``--scale`` changes in the grid; unset fields keep the experiment's values.
    Setting one of ``finetune_steps`` / ``finetune_epochs`` switches the budget to it;
    ``multi_cycle: false`` leaves the multi-cycle runs out."""

    ks: list[int] | None = None
    seeds: list[int] | None = None
    strategies: list[StrategyName] | None = None
    multi_cycle: MultiCycleConfig | Literal[False] | None = None
    finetune_steps: int | None = Field(default=None, ge=1)
    finetune_epochs: int | None = Field(default=None, ge=1)
    min_steps: int | None = Field(default=None, ge=0)
    folds: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data: Any) -> Any:
        return _renamed_seeds(data)

    @model_validator(mode="after")
    def _one_budget(self) -> "ExperimentScale":
        if self.finetune_steps is not None and self.finetune_epochs is not None:
            raise ValueError("give finetune_steps or finetune_epochs, not both")
        return self


# cpu: k up to 50, 3 seeds, 8 epochs over L (at least 30 steps), 5 DBAL cycles of 10, for a
# 2-core CPU; toy: a grid that runs in a minute or two (CI), 2 seeds x 2 rotating folds.
# Pipelines may redefine them (experiment.scales.<name>) and add their own names.
_BUILTIN_SCALES = {
    "paper": ExperimentScale(),
    "cpu": ExperimentScale(ks=[5, 10, 25, 50], seeds=[1, 2, 3], finetune_epochs=8, min_steps=30,
                           multi_cycle=MultiCycleConfig(k=10, cycles=5)),
    "toy": ExperimentScale(ks=[3], seeds=[1, 2], strategies=["random", "dbal"], folds=2,
                           finetune_epochs=1, min_steps=2,
                           multi_cycle=MultiCycleConfig(k=2, cycles=2)),
}


class ExperimentConfig(Strict):
    """The paper's grid (``synthloop experiment``, stages/experiment.py): settings R and S+R,
    strategies, k values, and one multi-cycle run, every cell once per seed (and fold).

    Budget a run, one of: ``finetune_epochs`` (epochs over the labelled set, at least
    ``min_steps`` steps: it grows with k; the default) or ``finetune_steps`` (fixed; giving it
    switches the epochs off). Nothing early-stops on the validation set.
    ``folds`` > 1 rotates the validation set: pool and validation photos are pooled and split
    into ``folds`` parts (``fold_seed``); each is the validation set once, the rest the pool.
    Statistics: percentile bootstrap over a cell's runs (seed x fold); ``match_k``: the random
    run whose AP the headline asks each strategy to match (the largest k run when absent).
    """

    settings: list[Literal["R", "S+R"]] = Field(default=["R", "S+R"], min_length=1)
    strategies: list[StrategyName] = ["random", "margin", "dbal"]
    real_only_strategies: list[StrategyName] = ["random"]  # R runs: strategies that need no model
    ks: list[int] = Field(default=[10, 25, 50, 100, 150, 200], min_length=1)
    seeds: list[int] = Field(default=[1, 2, 3], min_length=1)
    multi_cycle: MultiCycleConfig | None = MultiCycleConfig()
    finetune_epochs: int | None = Field(default=20, ge=1)
    finetune_steps: int | None = Field(default=None, ge=1)
    min_steps: int = Field(default=100, ge=0)
    folds: int = Field(default=1, ge=1)
    fold_seed: int = 0
    bootstrap_resamples: int = Field(default=2000, ge=100, le=1_000_000)
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    bootstrap_seed: int = 0
    match_k: int = Field(default=50, ge=1)
    scales: dict[str, ExperimentScale] = {}

    @model_validator(mode="before")
    @classmethod
    def _old_names_and_budget(cls, data: Any) -> Any:
        data = _renamed_seeds(data)
        if (isinstance(data, dict) and data.get("finetune_steps") is not None
                and "finetune_epochs" not in data):
            data = {**data, "finetune_epochs": None}  # steps given: they replace the default
        return data

    @model_validator(mode="after")
    def _checked(self) -> "ExperimentConfig":
        if any(k < 1 for k in self.ks):
            raise ValueError(f"ks must be positive, got {self.ks}")
        if (self.finetune_steps is None) == (self.finetune_epochs is None):
            raise ValueError("give exactly one of finetune_epochs and finetune_steps")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat: {self.seeds}")
        from synthloop.active import strategy_class

        scored = [n for n in self.real_only_strategies if strategy_class(n).needs_model()]
        if scored:
            raise ValueError(f"real_only_strategies {scored} need a model's scores, and an R "
                             "run starts with a model that has seen no part")
        return self

    def at_scale(self, name: str) -> "ExperimentConfig":
        """This grid with the named scale's changes applied (ValueError on an unknown name)."""
        scales = {**_BUILTIN_SCALES, **self.scales}
        if name not in scales:
            raise ValueError(f"unknown experiment scale {name!r}; known: {', '.join(sorted(scales))}")
        changes = scales[name].model_dump(exclude_none=True)
        if changes.get("multi_cycle") is False:
            changes["multi_cycle"] = None
        if "finetune_steps" in changes:
            changes["finetune_epochs"] = None
        elif "finetune_epochs" in changes:
            changes["finetune_steps"] = None
        return ExperimentConfig.model_validate({**self.model_dump(), **changes})


__all__ = ["ExperimentConfig", "ExperimentScale", "MultiCycleConfig"]
