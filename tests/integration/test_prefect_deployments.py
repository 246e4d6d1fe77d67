"""prefect.yaml on a real local Prefect server (127.0.0.1): deployments on the process work
pool, the nightly cron, and an event that starts an `al_cycle` run through a worker.

The test holds the pipeline's cycle lock itself, so the triggered run finishes fast with
outcome "skipped" and names the holder: that shows the trigger, the worker and the lock
together without training a model.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from synthloop.flows_server import api_post, prefect_exe, start_server
from synthloop.gating.cycle_lock import cycle_lock, read_requests
from tests_support import DEMO_CONFIG, ROOT, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prefect")
    srv = start_server(ROOT, port=free_port(), home=tmp / "home", log_path=tmp / "server.log",
                       timeout_s=240)
    try:
        srv.create_pool()
        srv.deploy_all()
        srv.start_worker(log_path=tmp / "worker.log")
        yield srv, tmp
    finally:
        srv.stop()


def deployments(api: str) -> dict[str, dict]:
    return {d["name"]: d for d in api_post(api, "/deployments/filter", {})}


def test_deployments_schedules_and_triggers(server):
    srv, _ = server
    deps = deployments(srv.api_url)
    assert {"continuous-training-nightly", "al-cycle", "pool-watcher", "synthesize",
            "pretrain", "cad-retrain"} <= set(deps)
    assert all(d["work_pool_name"] == "synthloop-process" for d in deps.values())
    nightly = deps["continuous-training-nightly"]["schedules"]
    assert nightly[0]["schedule"]["cron"] == "0 2 * * *"
    automations = api_post(srv.api_url, "/automations/filter", {})
    expects = {e for a in automations for e in a["trigger"].get("expect", [])}
    assert {"synthloop.pool.grew", "synthloop.drift.detected",
            "synthloop.champion.degraded", "synthloop.cycle.*"} <= expects
    cad = [a for a in automations if "synthloop.cad.changed" in a["trigger"].get("expect", [])]
    assert [a["actions"][0]["deployment_id"] for a in cad] == [deps["cad-retrain"]["id"]]


# a built-in trigger's event, and the event of a trigger registered without one of its own
# (monitoring/triggers.py: synthloop.cycle.<name>, which al-cycle expects by wildcard)
@pytest.mark.parametrize("event, trigger", [("synthloop.pool.grew", "pool-grew"),
                                            ("synthloop.cycle.audit-14", "audit-14")])
def test_an_event_starts_al_cycle_which_respects_the_lock(server, tmp_path, event, trigger):
    srv, tmp = server
    config = tmp_path / "pipeline.yaml"
    config.write_text(DEMO_CONFIG.read_text().replace("workspace: workspace/demo",
                                                      f"workspace: {tmp_path / 'ws'}"))
    al_cycle_id = deployments(srv.api_url)["al-cycle"]["id"]
    only_al_cycle = {"flow_runs": {"deployment_id": {"any_": [al_cycle_id]}}}
    earlier = {r["id"] for r in api_post(srv.api_url, "/flow_runs/filter", only_al_cycle)}
    state = tmp_path / "ws" / "state"
    with cycle_lock(state, trigger="nightly (test)"):
        payload = {"config": str(config), "trigger": trigger, "pipeline": "demo"}
        subprocess.run([prefect_exe(), "event", "emit", event, "--resource-id",
                        "synthloop.pipeline.demo", "--payload", json.dumps(payload)],
                       env=srv.env, check=True, capture_output=True, timeout=120)
        t0, run = time.monotonic(), None
        while time.monotonic() - t0 < 420:
            runs = [r for r in api_post(srv.api_url, "/flow_runs/filter", only_al_cycle)
                    if r["id"] not in earlier]
            run = runs[0] if runs else None
            if run and run["state_type"] in ("COMPLETED", "FAILED", "CRASHED"):
                break
            time.sleep(3)
    assert run is not None, f"{event} started no al_cycle run"
    logs = (tmp / "worker.log").read_text()[-3000:]
    assert run["state_type"] == "COMPLETED", logs
    assert run["parameters"]["trigger"] == trigger
    assert run["parameters"]["config"] == str(config)
    entry = read_requests(state)[-1]
    assert entry["trigger"] == trigger and entry["outcome"] == "skipped"
    assert entry["held_by"]["trigger"] == "nightly (test)"
