"""The thin Prefect flows on Prefect's test harness, with the heavy stages replaced by stubs:
monitor -> decide -> cycle wiring, stage calls as tasks, events emitted, the lock honoured."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass

import pytest

from synthloop.gating.cycle_lock import cycle_lock, read_requests
from tests_support import DEMO_CONFIG, ROOT

pytestmark = pytest.mark.slow
sys.path.insert(0, str(ROOT / "flows"))


@dataclass
class Row:
    cycle: int
    promoted: bool = True
    model_version: str = "2"
    reason: str = "stub"


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(DEMO_CONFIG.read_text().replace("workspace: workspace/demo",
                                                    f"workspace: {tmp_path / 'ws'}"))
    return path


@pytest.fixture
def stub_pipeline(monkeypatch):
    """run_pipeline that runs one tiny stage through the runner (so it is a Prefect task)."""
    import synthloop.stages.pipeline as pipeline

    calls = []

    def fake(cfg, *, runner, cycles, progress):
        calls.append(runner("score", lambda: "scored"))
        d = cfg.workspace / "state" / f"cycle_{cycles}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "gate.json").write_text("{}")
        return [Row(cycle=cycles)]

    monkeypatch.setattr(pipeline, "run_pipeline", fake)
    return calls


def stub_monitor(monkeypatch, fire: bool, trigger: str = "drift"):
    import synthloop.stages.monitor as monitor_stage

    def check(cfg, *, ingest_result=None):
        return {"run_id": "r1", "pool_growth": 0, "cad_changed": {},
                "trigger": {"fire": fire, "event": "synthloop.drift.detected" if fire else None,
                            "trigger": trigger if fire else None,
                            "reasons": ["stub says so" if fire else "quiet"]}}

    monkeypatch.setattr(monitor_stage, "check", check)


def test_al_cycle_runs_stages_as_tasks_and_records_the_trigger(harness, config, stub_pipeline):
    from al_cycle import al_cycle

    entry = al_cycle(str(config), trigger="pool-grew")
    assert entry["outcome"] == "ran" and entry["cycle"] == 1 and stub_pipeline == ["scored"]
    assert read_requests(config.parent / "ws" / "state")[-1]["trigger"] == "pool-grew"


def test_al_cycle_is_skipped_while_another_cycle_holds_the_lock(harness, config, stub_pipeline):
    from al_cycle import al_cycle

    held, done = threading.Event(), threading.Event()

    def nightly():  # another run (its own thread, like another worker process) holds the lock
        with cycle_lock(config.parent / "ws" / "state", trigger="nightly"):
            held.set()
            done.wait(120)

    other = threading.Thread(target=nightly)
    other.start()
    held.wait(30)
    try:
        entry = al_cycle(str(config), trigger="drift")
    finally:
        done.set()
        other.join()
    assert entry["outcome"] == "skipped" and entry["held_by"]["trigger"] == "nightly"
    assert stub_pipeline == []


def test_continuous_training_cycles_only_when_the_monitor_says_so(harness, config,
                                                                  stub_pipeline, monkeypatch):
    from continuous_training import continuous_training

    stub_monitor(monkeypatch, fire=False)
    quiet = continuous_training(str(config))
    assert quiet["cycle"] is None and stub_pipeline == []
    forced = continuous_training(str(config), force=True)
    assert forced["cycle"]["outcome"] == "ran" and forced["cycle"]["trigger"] == "nightly:forced"
    stub_monitor(monkeypatch, fire=True, trigger="drift")
    fired = continuous_training(str(config))
    assert fired["cycle"]["trigger"] == "nightly:drift" and fired["cycle"]["cycle"] == 2


def test_monitor_emits_the_decision_as_an_event(harness, config, monkeypatch):
    import flow_support
    from monitor import monitor

    sent = []
    monkeypatch.setattr(flow_support, "emit_event", lambda **kw: sent.append(kw))
    stub_monitor(monkeypatch, fire=True)
    record = monitor(str(config))
    assert record["events"] == ["synthloop.drift.detected"]
    assert sent[0]["resource"]["prefect.resource.id"] == "synthloop.pipeline.demo"
    assert sent[0]["payload"]["trigger"] == "drift"
    assert sent[0]["payload"]["config"] == str(config.resolve())


def test_continuous_training_skips_querying_when_labels_stopped_paying(harness, config,
                                                                      stub_pipeline, monkeypatch):
    """The stop rule: two cycles that bought almost no AP per labelling minute -> saturated;
    the nightly flow records the skip and queries nothing. Off by default."""
    import json

    from continuous_training import continuous_training

    state = config.parent / "ws" / "state"
    for t, gain in ((1, 0.001), (2, 0.0)):  # 20 labelling minutes each
        d = state / f"cycle_{t}"
        d.mkdir(parents=True)
        (d / "label.json").write_text(json.dumps({"new": [t], "total": t, "cost": {
            "seconds": 1200.0, "source": "model", "images": 1, "boxes": 3}}))
        (d / "gate.json").write_text(json.dumps({"improvement": gain, "promote": False}))
    stub_monitor(monkeypatch, fire=True, trigger="pool-grew")
    skipped = continuous_training(str(config),
                                  overrides=["labeling.stop_below_gain_per_minute=0.001"])
    assert skipped["cycle"]["outcome"] == "saturated" and stub_pipeline == []
    assert "below labeling.stop_below_gain_per_minute=0.001" in skipped["cycle"]["reason"]
    assert read_requests(state)[-1]["outcome"] == "saturated"
    ran = continuous_training(str(config))  # the rule is off by default: the cycle runs
    assert ran["cycle"]["outcome"] == "ran" and ran["cycle"]["cycle"] == 3


def test_cad_retrain_flow_records_each_answer_to_the_event(harness, config):
    """The flow the cad-retrain deployment starts on synthloop.cad.changed, on the real stage:
    without a champion there is nothing to retrain; the switch turns the reaction off; each
    request is logged beside the cycles' (the full chain: tests/e2e/test_cad_change_retrains.py)."""
    from cad_retrain import cad_retrain

    first = cad_retrain(str(config), trigger="cad-changed")
    assert first["outcome"] == "no champion"
    off = cad_retrain(str(config), trigger="cad-changed",
                      overrides=["cad_retrain.enabled=false"])
    assert off["outcome"] == "disabled"
    log = read_requests(config.parent / "ws" / "state")
    assert [(r["trigger"], r["outcome"]) for r in log[-2:]] == [
        ("cad-changed", "no champion"), ("cad-changed", "disabled")]
