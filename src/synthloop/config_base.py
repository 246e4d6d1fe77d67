"""The base of the typed config models (config.py and its config_*.py modules): strict frozen
models, the config's error, and names checked against a registry when the YAML is loaded."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict


class ConfigError(ValueError):
    """The pipeline configuration is invalid; the message says where and why."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _known_strategy(name: str) -> str:
    """A name of synthloop.active's registry (the one list of query strategies)."""
    from synthloop.active import strategy_class

    strategy_class(name)  # ValueError listing the known names
    return name


StrategyName = Annotated[str, AfterValidator(_known_strategy)]

__all__ = ["ConfigError", "StrategyName", "Strict"]
