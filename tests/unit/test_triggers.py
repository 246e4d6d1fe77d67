"""The trigger registry (monitoring/triggers.py) is the one list of what starts a cycle:
prefect.yaml's al-cycle deployment starts on every registered event and names no other (a
trigger registered without an event sends ``synthloop.cycle.<name>``, which its wildcard
covers), the config's ``trigger:`` keys are its triggers' settings, and a clash between
triggers is refused at registration."""

from __future__ import annotations

import pytest
import yaml

from synthloop.config import ConfigError, TriggerConfig, load_config
from synthloop.monitoring.decision import EVENT_CAD
from synthloop.monitoring.triggers import (CYCLE_EVENT_PREFIX, TRIGGERS, TriggerParams,
                                           cycle_events, register_trigger)
from tests_support import DEMO_CONFIG, ROOT, prefect_yaml_expects, starts_deployment


def test_prefect_yaml_starts_a_cycle_on_every_registered_event_and_no_other():
    (expects,) = prefect_yaml_expects("al-cycle")
    missed = [e for e in cycle_events() if not starts_deployment("al-cycle", e)]
    assert not missed, (f"prefect.yaml's al-cycle trigger (definitions.cycle_events) does not "
                        f"start on {missed}: list them, or register the trigger without an event")
    stale = sorted({e for e in expects if "*" not in e} - set(cycle_events()))
    assert not stale, f"prefect.yaml's al-cycle names events no trigger sends: {stale}"
    assert [e for e in expects if "*" in e] == [f"{CYCLE_EVENT_PREFIX}*"]
    assert not starts_deployment("al-cycle", EVENT_CAD)  # cad-retrain's event, not a cycle's


def test_a_trigger_registered_without_an_event_starts_al_cycle():
    register_trigger("manual-14", rank=99)(lambda m, p: (False, "never"))
    try:
        assert TRIGGERS["manual-14"].event == "synthloop.cycle.manual-14"
        assert "synthloop.cycle.manual-14" in cycle_events()
        assert starts_deployment("al-cycle", "synthloop.cycle.manual-14")
    finally:
        TRIGGERS.pop("manual-14")
    assert not starts_deployment("al-cycle", "synthloop.cyclexyz")  # the namespace, not a prefix


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
