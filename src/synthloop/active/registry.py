"""The one registry of query strategies: every name and parameter comes from here.

A strategy is one class (active/base.py: ``Strategy`` or ``ScoredStrategy``) decorated with
``@register_strategy``; its ``Params`` (a pydantic model) declares what its constructor takes.
From this registry come the config's checks (``active.strategy``, the strategy parameters
under ``active:``, the experiment's strategies: config.py), the parameters each strategy gets (stages/query.py, the
experiment harness) and the report's columns (experiments/report.py). A new module in
``synthloop/active/`` is imported by the package, so adding a strategy is one file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from synthloop.active.base import Strategy

STRATEGIES: dict[str, type[Strategy]] = {}  # name -> class, in registration order


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make ``cls`` known by ``cls.name`` (a name taken twice is an error)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{cls.__qualname__}: a strategy needs a ``name`` like 'margin', "
                         f"got {name!r}")
    if name in STRATEGIES and STRATEGIES[name] is not cls:
        raise ValueError(f"query strategy {name!r} is registered twice "
                         f"({STRATEGIES[name].__qualname__} and {cls.__qualname__})")
    STRATEGIES[name] = cls
    return cls


def strategy_names() -> tuple[str, ...]:
    """Registered names, in registration order (the report's column order)."""
    return tuple(STRATEGIES)


def strategy_class(name: str) -> type[Strategy]:
    """The class registered as ``name``; ValueError listing the known names otherwise."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown query strategy {name!r}; known: "
                         f"{', '.join(sorted(STRATEGIES))}") from None


def declared_params(name: str) -> dict[str, Any]:
    """The parameters strategy ``name`` takes, with their defaults."""
    return {k: f.default for k, f in strategy_class(name).Params.model_fields.items()}


def check_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` checked by strategy ``name``'s ``Params``: the full set, defaults filled in.
    ValueError (one line, naming the known parameters) on an unknown key or a bad value."""
    model = strategy_class(name).Params
    try:
        return model.model_validate(dict(params)).model_dump()
    except ValidationError as exc:
        known = ", ".join(model.model_fields) or "none"
        bad = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'params'}: "
                        + ("unknown parameter" if e["type"] == "extra_forbidden" else e["msg"])
                        for e in exc.errors())
        raise ValueError(f"strategy {name!r}: bad parameter {bad}; known: {known}") from None


def shared_params(params: Mapping[str, Any], names: Iterable[str] | None = None
                  ) -> dict[str, dict[str, Any]]:
    """Settings shared by several strategies (the parameters under ``active:``: the grid runs
    several under one config): each key goes to every strategy in ``names`` (default: all
    registered) that declares it, checked by that strategy. Returns name -> its full
    parameters. A key that no registered strategy declares is a ValueError listing them all."""
    names = list(STRATEGIES if names is None else names)
    for name in names:
        strategy_class(name)
    declared = {k for cls in STRATEGIES.values() for k in cls.Params.model_fields}
    unknown = sorted(set(params) - declared)
    if unknown:
        raise ValueError(f"{', '.join(map(repr, unknown))}: no query strategy takes "
                         f"{'this parameter' if len(unknown) == 1 else 'these parameters'}; "
                         f"known: {', '.join(sorted(declared)) or 'none'}")
    out = {}
    for name in names:
        fields = strategy_class(name).Params.model_fields
        out[name] = check_params(name, {k: v for k, v in params.items() if k in fields})
    return out


def get_strategy(name: str, **params: Any) -> Strategy:
    """Build the strategy called ``name``; unknown names or parameters raise ValueError."""
    cls = strategy_class(name)
    return cls(**check_params(name, params))


__all__ = ["STRATEGIES", "check_params", "declared_params", "get_strategy", "register_strategy",
           "shared_params", "strategy_class", "strategy_names"]
