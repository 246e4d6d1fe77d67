"""The trigger registry (monitoring/triggers.py) is the one list of what starts a cycle:
prefect.yaml's al-cycle deployment listens to exactly its events, the config's ``trigger:``
keys are its triggers' settings, and a clash between triggers is refused at registration."""

from __future__ import annotations

import pytest
import yaml

from synthloop.config import ConfigError, TriggerConfig, load_config
from synthloop.monitoring.decision import EVENT_CAD
from synthloop.monitoring.triggers import (TRIGGERS, TriggerParams, cycle_events,
                                           register_trigger)
from tests_support import DEMO_CONFIG, ROOT


def al_cycle_expects() -> list[str]:
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    (al_cycle,) = [d for d in deployments if d["name"] == "al-cycle"]
    return [e for t in al_cycle["triggers"] for e in t["expect"]]


def test_prefect_yaml_listens_to_exactly_the_registered_cycle_events():
    expects = al_cycle_expects()
    assert sorted(expects) == sorted(cycle_events()), (
        "prefect.yaml's al-cycle `expect` (definitions.cycle_events) must list the events of "
        "monitoring/triggers.py's registry")
    assert EVENT_CAD not in expects  # a changed CAD is the cad-retrain deployment's event


def test_a_changed_cad_starts_the_cad_retrain_deployment():
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    listeners = {d["name"]: d for d in deployments
                 if any(EVENT_CAD in t.get("expect", []) for t in d.get("triggers", []))}
    assert list(listeners) == ["cad-retrain"]
    dep = listeners["cad-retrain"]
    path, name = dep["entrypoint"].split(":")
    assert (path, name) == ("flows/cad_retrain.py", "cad_retrain")
    assert f"def {name}(config: str" in (ROOT / path).read_text()
    (trigger,) = dep["triggers"]
    assert trigger["expect"] == [EVENT_CAD] and trigger["match"] == {
        "prefect.resource.id": "synthloop.pipeline.*"}
    # the monitor's event payload (flows/flow_support.py) carries config and trigger
    assert trigger["parameters"] == {"config": "{{ event.payload.config }}",
                                     "trigger": "{{ event.payload.trigger }}"}


def test_trigger_settings_come_from_the_registry():
    cfg = TriggerConfig(pool_growth_min=3)
    assert (cfg.pool_growth_min, cfg.on_drift, cfg.confidence_drop) == (3, True, 0.1)
    declared = {k for t in TRIGGERS.values() for k in t.params.model_fields}
    assert set(cfg.model_extra) == declared
    env = load_config(DEMO_CONFIG, environ={"SYNTHLOOP_TRIGGER__POOL_GROWTH_MIN": "7"})
    assert env.trigger.pool_growth_min == 7  # a trigger's setting from the environment
    with pytest.raises(ConfigError, match="SYNTHLOOP_TRIGGER__ON_DRIF: 'trigger.on_drif' is not "
                                          "a config key .*on_drift"):
        load_config(DEMO_CONFIG, environ={"SYNTHLOOP_TRIGGER__ON_DRIF": "false"})
    with pytest.raises(ConfigError, match=r"trigger: .*unknown trigger setting 'pool_grow_min'; "
                                          r"known: confidence_drop, on_drift, pool_growth_min"):
        load_config(DEMO_CONFIG, overrides=["trigger.pool_grow_min=3"])
    with pytest.raises(ConfigError, match="trigger 'metric-drop': confidence_drop"):
        load_config(DEMO_CONFIG, overrides=["trigger.confidence_drop=2"])


def test_triggers_may_not_share_a_setting_or_an_event():
    class Clash(TriggerParams):
        pool_growth_min: int = 1

    with pytest.raises(ValueError, match=r"\['pool_growth_min'\] belong to \['pool-grew'\]"):
        register_trigger("clash", event="synthloop.clash", rank=99, params=Clash)(
            lambda m, p: (False, ""))
    with pytest.raises(ValueError, match="event 'synthloop.pool.grew' is taken"):
        register_trigger("clash", event="synthloop.pool.grew", rank=99)(lambda m, p: (False, ""))
    assert "clash" not in TRIGGERS
