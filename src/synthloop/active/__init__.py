"""Query strategies, chosen by name: ``get_strategy("dbal", beta=2.0).select(...)``.

Every module of this package is imported here, so a strategy in a new module registers itself
(``@register_strategy``, active/registry.py): adding one is one file. The built-in modules come
first, in the order of the report's columns.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any, Protocol

from synthloop.active.base import NoParams, Selection, Strategy, new_label_ids
from synthloop.active.registry import (STRATEGIES, check_params, declared_params, get_strategy,
                                       register_strategy, shared_params, strategy_class,
                                       strategy_names)

# isort: off  (registration order = the report's column order)
from synthloop.active.random_sampling import RandomStrategy
from synthloop.active.uncertainty import (MarginStrategy, EntropyStrategy,
                                          LeastConfidenceStrategy)
from synthloop.active.dbal import DBALStrategy
from synthloop.active.coreset import CoresetStrategy
# isort: on

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


class _ActiveSettings(Protocol):  # config.ActiveConfig, without importing config
    strategy: str
    params: Mapping[str, Any]


def strategy_from_config(cfg: _ActiveSettings) -> Strategy:
    """The strategy an ``ActiveConfig`` names, with the parameters under ``active:`` that it
    declares."""
    return get_strategy(cfg.strategy, **shared_params(cfg.params, [cfg.strategy])[cfg.strategy])


__all__ = ["STRATEGIES", "CoresetStrategy", "DBALStrategy", "EntropyStrategy",
           "LeastConfidenceStrategy", "MarginStrategy", "NoParams", "RandomStrategy", "Selection",
           "Strategy", "check_params", "declared_params", "get_strategy", "new_label_ids",
           "register_strategy", "shared_params", "strategy_class", "strategy_from_config",
           "strategy_names"]
