"""Query strategies, chosen by name: ``get_strategy("dbal", beta=2.0).select(...)``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from synthloop.active.base import Selection, Strategy, new_label_ids
from synthloop.active.coreset import CoresetStrategy
from synthloop.active.dbal import DBALStrategy
from synthloop.active.random_sampling import RandomStrategy
from synthloop.active.uncertainty import (EntropyStrategy, LeastConfidenceStrategy,
                                          MarginStrategy)

if TYPE_CHECKING:
    from synthloop.config import ActiveConfig

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (RandomStrategy, MarginStrategy, EntropyStrategy, LeastConfidenceStrategy,
                DBALStrategy, CoresetStrategy)
}


def get_strategy(name: str, **params: object) -> Strategy:
    """Build the strategy called ``name``; unknown names or parameters raise ValueError."""
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown query strategy {name!r}; known: "
                         f"{', '.join(sorted(STRATEGIES))}") from None
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"strategy {name!r}: bad parameters {sorted(params)} ({exc})") from None


def strategy_from_config(cfg: "ActiveConfig") -> Strategy:
    """The strategy an ``ActiveConfig`` names, given only the settings it takes."""
    params: dict[str, object] = {}
    if cfg.strategy in ("margin", "entropy", "least_confidence", "dbal"):
        params["aggregation"] = cfg.aggregation
    if cfg.strategy == "dbal":
        params["beta"] = cfg.beta
    return get_strategy(cfg.strategy, **params)


__all__ = ["STRATEGIES", "CoresetStrategy", "DBALStrategy", "EntropyStrategy",
           "LeastConfidenceStrategy", "MarginStrategy", "RandomStrategy", "Selection",
           "Strategy", "get_strategy", "new_label_ids", "strategy_from_config"]
