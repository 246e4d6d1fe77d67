"""The one registry of cycle triggers: what may start a cycle, its event, its settings.

A trigger is a pure check registered with ``@register_trigger``: given what the monitor
measured (``Measurements``) and its own settings, it says whether it fires and why. From this
registry come the monitor's decision (``decide_trigger``, monitoring/decision.py, called by
stages/monitor.py and stack/events.py), the keys allowed under ``trigger:`` in a pipeline YAML
(config_ops.py ``TriggerConfig``: each trigger's ``params`` model declares its own), and the events
the ``al-cycle`` deployment listens to (prefect.yaml expects the three built-in events and
``synthloop.cycle.*``; tests/unit/test_triggers.py checks that it covers every
``cycle_events()`` entry and names no other). A trigger registered without an ``event`` sends
``synthloop.cycle.<name>``, so adding a trigger is one function here (or in any module imported
before the config is loaded) and no other file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class TriggerParams(BaseModel):
    """A trigger's settings (flat keys under ``trigger:``); unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Drift(Protocol):  # monitoring.decision.DriftDecision
    drifted: bool
    reason: str


@dataclass(frozen=True)
class Measurements:
    """What the monitor measured since the last cycle (stages/monitor.py ``check``)."""

    pool_growth: int  # new pool images since the last cycle
    drift: _Drift | None = None  # None: not checked (too few images, or the pool-growth path)
    champion_confidence: float | None = None  # champion's mean top score on the new images
    reference_confidence: float | None = None  # ... and on the reference images


Check = Callable[[Measurements, Any], tuple[bool, str]]
CYCLE_EVENT_PREFIX = "synthloop.cycle."  # prefect.yaml's al-cycle expects synthloop.cycle.*


@dataclass(frozen=True)
class Trigger:
    name: str  # recorded by the cycle lock and sent as the event's ``trigger`` payload
    event: str  # the Prefect event the monitor emits when this trigger decides
    check: Check  # (measurements, its params) -> (fires, why)
    params: type[TriggerParams]
    rank: int  # when several fire, the lowest rank names the event (the strongest reason)

    def settings(self, section: Mapping[str, Any]) -> TriggerParams:
        """This trigger's params from the ``trigger:`` section (its keys only)."""
        fields = self.params.model_fields
        return self.params.model_validate({k: v for k, v in section.items() if k in fields})


TRIGGERS: dict[str, Trigger] = {}


def register_trigger(name: str, *, rank: int, event: str | None = None,
                     params: type[TriggerParams] = TriggerParams) -> Callable[[Check], Check]:
    """Decorator: register ``check`` as the trigger ``name``; its event is
    ``synthloop.cycle.<name>`` unless given (an event outside that namespace must also be
    listed in prefect.yaml's ``cycle_events``). Names, events and parameter names must be
    unique across triggers (they share the flat ``trigger:`` section)."""
    event = event or f"{CYCLE_EVENT_PREFIX}{name}"

    def add(check: Check) -> Check:
        taken = {k: t.name for t in TRIGGERS.values() if t.name != name
                 for k in t.params.model_fields}
        clash = sorted(set(params.model_fields) & set(taken))
        if clash:
            raise ValueError(f"trigger {name!r}: parameters {clash} belong to "
                             f"{sorted({taken[k] for k in clash})}")
        if any(t.event == event and t.name != name for t in TRIGGERS.values()):
            raise ValueError(f"trigger {name!r}: event {event!r} is taken")
        if name in TRIGGERS and TRIGGERS[name].check is not check:
            raise ValueError(f"trigger {name!r} is registered twice")
        TRIGGERS[name] = Trigger(name, event, check, params, rank)
        return check

    return add


def triggers() -> list[Trigger]:
    """Registered triggers, strongest first."""
    return sorted(TRIGGERS.values(), key=lambda t: (t.rank, t.name))


def cycle_events() -> list[str]:
    """The events that start a cycle: what prefect.yaml's al-cycle trigger must expect."""
    return [t.event for t in triggers()]


def check_section(section: Mapping[str, Any]) -> dict[str, Any]:
    """The ``trigger:`` keys (besides the cycle lock's) checked by the triggers that declare
    them, defaults filled in. ValueError naming the known keys on an unknown key or bad value."""
    known = {k: t for t in TRIGGERS.values() for k in t.params.model_fields}
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise ValueError(f"unknown trigger setting {', '.join(map(repr, unknown))}; known: "
                         f"{', '.join(sorted(known))} (triggers: {', '.join(sorted(TRIGGERS))})")
    out: dict[str, Any] = {}
    for t in TRIGGERS.values():
        try:
            out.update(t.settings(section).model_dump())
        except ValidationError as exc:
            bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"trigger {t.name!r}: {bad}") from None
    return out


# --------------------------------------------------------------------------- the built-ins
# Their events predate the synthloop.cycle.* namespace; prefect.yaml names each of them.
EVENT_DRIFT = "synthloop.drift.detected"
EVENT_METRIC = "synthloop.champion.degraded"
EVENT_POOL = "synthloop.pool.grew"


class DriftParams(TriggerParams):
    on_drift: bool = True  # a drift decision (monitoring/drift.py) starts a cycle


@register_trigger("drift", event=EVENT_DRIFT, rank=10, params=DriftParams)
def drift_detected(m: Measurements, p: DriftParams) -> tuple[bool, str]:
    if m.drift is None:
        return False, "drift not checked"
    if not m.drift.drifted:
        return False, "no drift"
    return p.on_drift, m.drift.reason if p.on_drift else f"drift ignored ({m.drift.reason})"


class MetricDropParams(TriggerParams):
    confidence_drop: float = Field(default=0.1, gt=0.0, le=1.0)  # champion mean top score


@register_trigger("metric-drop", event=EVENT_METRIC, rank=20, params=MetricDropParams)
def champion_degraded(m: Measurements, p: MetricDropParams) -> tuple[bool, str]:
    if m.champion_confidence is None or m.reference_confidence is None:
        return False, "no champion confidence"
    drop = m.reference_confidence - m.champion_confidence
    if drop >= p.confidence_drop:
        return True, (f"champion mean top score fell {m.reference_confidence:.3f} -> "
                      f"{m.champion_confidence:.3f} (drop {drop:.3f} >= {p.confidence_drop})")
    return False, "no metric drop"


class PoolGrowthParams(TriggerParams):
    pool_growth_min: int = Field(default=50, ge=1)  # new pool images since the last cycle


@register_trigger("pool-grew", event=EVENT_POOL, rank=30, params=PoolGrowthParams)
def pool_grew(m: Measurements, p: PoolGrowthParams) -> tuple[bool, str]:
    if m.pool_growth >= p.pool_growth_min:
        return True, f"pool grew by {m.pool_growth} images (>= {p.pool_growth_min})"
    return False, f"pool grew by {m.pool_growth} (< {p.pool_growth_min})"


__all__ = ["CYCLE_EVENT_PREFIX", "EVENT_DRIFT", "EVENT_METRIC", "EVENT_POOL", "TRIGGERS",
           "Measurements", "Trigger", "TriggerParams", "check_section", "cycle_events",
           "register_trigger", "triggers"]
