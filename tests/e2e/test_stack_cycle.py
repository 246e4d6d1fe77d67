"""The cycle through the production stack, end to end, checked through the servers' APIs.

A toy pipeline whose tracking and registry live on the stack's MLflow (Postgres + S3) gets M0
as champion; new camera images land in the ingest folder; `synthloop ingest` sends the
pool-growth event to the stack's Prefect server, and a second trigger arrives at once; the
al-cycle deployment's trigger starts al_cycle on the stack's worker for each, and the global
concurrency limit lets one cycle run (score, query, label with the simulated oracle, fine-tune,
gate) while the other waits for the slot, then runs; the registry moves `champion`; the running
REST server answers with the new version. A schedule set a minute ahead fires a run too. The
gate is set to promote any candidate: the test is about the plumbing, not about whether a toy
model improved.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from people_support import Chromium
from stack_support import (get_json, mirrored_camera_images, running_stack, stack_folder,
                           synthloop, toy_pipeline_on_stack, wait_for)

from synthloop.config import load_config
from synthloop.flows_server import api_post
from synthloop.gating.cycle_lock import cycle_lock
from synthloop.stack.events import emit_pool_growth

# M0, two toy cycles one after the other, a scheduled run: 5.1 min on the shared 2-core machine
# (load average ~7, nice 19); the default 900 s would leave too little room under heavier load.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.render, pytest.mark.timeout(1500)]


def test_new_images_trigger_cycles_on_the_stack_one_at_a_time_and_the_server_swaps(
        tmp_path, render_python):
    with stack_folder() as folder:
        toy, camera = tmp_path / "toy.yaml", tmp_path / "camera"
        config, st = toy_pipeline_on_stack(tmp_path, folder, model="synthloop-stack-toy",
                                           serve={"poll_seconds": 2.0})
        with running_stack(config):
            mlflow_api = f"{st.mlflow_url}/api/2.0/mlflow"
            alias_url = (f"{mlflow_api}/registered-models/alias?name=synthloop-stack-toy"
                         "&alias=champion")
            # M0 (render + pretrain + first gate) straight into the stack's registry.
            synthloop("demo", "--config", str(toy), "--cycles", "0")
            assert get_json(alias_url)["model_version"]["version"] == "1"
            health = wait_for("the server to load v1", lambda: (
                h := get_json(f"{st.serve_url}/health")).get("version") == "1" and h, 120, 2)
            assert health["status"] == "ok"

            # New camera images land; ingest emits the event to the stack's Prefect server, and
            # a second trigger for the same pipeline arrives at once (as from a second ingest):
            # two al_cycle runs start on the worker.
            mirrored_camera_images(tmp_path / "ws", camera, 3)
            out = synthloop("ingest", "--config", str(toy),
                            env={"PREFECT_API_URL": st.prefect_api_url})
            assert "added 3" in out and "event synthloop.pool.grew sent" in out, out
            second = emit_pool_growth(st.prefect_api_url, load_config(toy),
                                      config_path=str(toy), pool_growth=3)
            assert second["fire"], second
            deps = {d["name"]: d for d in api_post(st.prefect_api_url, "/deployments/filter", {})}
            al_cycle = deps["al-cycle"]["id"]

            def triggered(*states: str) -> list[dict]:
                """The al-cycle runs of this test's pipeline (by their config) in ``states``."""
                runs = api_post(st.prefect_api_url, "/flow_runs/filter",
                                {"flow_runs": {"deployment_id": {"any_": [al_cycle]}}})
                return [r for r in runs if r["state_type"] in states
                        and r["parameters"].get("config") == str(toy)]

            wait_for("both triggered runs to start",
                     lambda: len(triggered("RUNNING", "COMPLETED", "FAILED", "CRASHED")) == 2,
                     300, 3)
            runs = wait_for("both triggered al_cycle runs to end", lambda: (
                done if len(done := triggered("COMPLETED", "FAILED", "CRASHED")) == 2 else None),
                1800, 5)
            worker_log = (st.logs_dir / "worker.log").read_text()[-4000:]
            assert [r["state_type"] for r in runs] == ["COMPLETED"] * 2, worker_log
            for run in runs:
                assert run["parameters"] == {"config": str(toy), "trigger": "pool-grew"}
                assert get_json(f"{st.prefect_api_url}/flow_runs/{run['id']}")["state"][
                    "name"] == "Completed"

            # One cycle at a time, read from the Prefect server: each run logged how long it
            # waited for the one slot of synthloop-cycle; the one that waited started its stages
            # (Prefect task runs) only after the other's stages had all finished.
            def slot_wait(run: dict) -> float:
                logs = api_post(st.prefect_api_url, "/logs/filter",
                                {"logs": {"flow_run_id": {"any_": [run["id"]]}},
                                 "sort": "TIMESTAMP_ASC"})
                [waited] = [float(m.group(1)) for log in logs if (m := re.search(
                    r"cycle slot of synthloop-cycle taken after ([\d.]+) s", log["message"]))]
                return waited

            def stage_times(run: dict) -> tuple[datetime, datetime]:
                tasks = api_post(st.prefect_api_url, "/task_runs/filter",
                                 {"flow_runs": {"id": {"any_": [run["id"]]}}})
                assert tasks and all(t["state_type"] == "COMPLETED" for t in tasks), tasks
                return (min(datetime.fromisoformat(t["start_time"]) for t in tasks),
                        max(datetime.fromisoformat(t["end_time"]) for t in tasks))

            first, waited = sorted(runs, key=slot_wait)
            assert slot_wait(waited) > slot_wait(first)
            assert stage_times(waited)[0] >= stage_times(first)[1]
            limit = api_post(st.prefect_api_url, "/v2/concurrency_limits/filter", {})[0]
            assert limit["name"] == "synthloop-cycle" and limit["active_slots"] == 0
            # Both requests ran, one after the other: the slot, not the workspace lock (which
            # skips a second request at once: trigger.lock_wait_s 0), kept them apart.
            entries = [json.loads(line) for line in
                       (tmp_path / "ws" / "state" / "cycle_runs.jsonl").read_text().splitlines()]
            assert [(e["trigger"], e["outcome"], e["cycle"]) for e in entries] == [
                ("pool-grew", "ran", 1), ("pool-grew", "ran", 2)]
            assert all(e["waited_s"] < 1 for e in entries)
            run = first  # the run the browser shows below

            # The registry on Postgres moved champion (each cycle promoted: the gate promotes
            # any candidate here); the running server follows it.
            champion = get_json(alias_url)["model_version"]
            assert champion["version"] == "3"
            version = get_json(f"{mlflow_api}/model-versions/get?name=synthloop-stack-toy"
                               "&version=3")["model_version"]
            run_info = get_json(f"{mlflow_api}/runs/get?run_id={version['run_id']}")["run"]
            assert run_info["info"]["artifact_uri"].startswith("mlflow-artifacts:")
            swapped = wait_for("the server to swap to v3", lambda: (
                h := get_json(f"{st.serve_url}/health")).get("version") == "3" and h, 120, 2)
            assert swapped["swaps"] >= 1 and swapped["status"] == "ok"

            # A schedule set a minute ahead fires a run on the worker too. The workspace lock is
            # held here (as by a local cycle): the run is recorded as skipped, no training.
            start = datetime.now(timezone.utc) + timedelta(seconds=60)
            api_post(st.prefect_api_url, f"/deployments/{al_cycle}/schedules", [{
                "schedule": {"interval": 86400, "anchor_date": start.isoformat(),
                             "timezone": "UTC"},
                "active": True, "parameters": {"config": str(toy), "trigger": "schedule"}}])

            def scheduled_run():
                runs = api_post(st.prefect_api_url, "/flow_runs/filter",
                                {"flow_runs": {"deployment_id": {"any_": [al_cycle]}}})
                return [r for r in runs if r["parameters"].get("trigger") == "schedule"
                        and r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")]

            with cycle_lock(tmp_path / "ws" / "state", trigger="local (test)"):
                scheduled = wait_for("the scheduled run", scheduled_run, 420, 5)[0]
            assert scheduled["state_type"] == "COMPLETED"
            planned = datetime.fromisoformat(scheduled["expected_start_time"])
            assert abs((planned - start).total_seconds()) < 1
            last = json.loads((tmp_path / "ws" / "state" / "cycle_runs.jsonl").read_text()
                              .splitlines()[-1])
            assert (last["trigger"], last["outcome"]) == ("schedule", "skipped")
            assert last["held_by"]["trigger"] == "local (test)"
            assert get_json(alias_url)["model_version"]["version"] == "3"

            # What a person sees in a real browser (headless Debian chromium, DevTools protocol).
            shots = shots_dir(tmp_path)
            with Chromium() as browser:
                model = f"{st.mlflow_url}/#/models/synthloop-stack-toy/versions"
                page = browser.open(f"{model}/3", wait_for=["Version 3", "champion"])
                aliases = page.replace("\xa0", " ").split("Aliases", 1)[1].split("Stage")[0]
                assert "@ champion" in aliases  # (and @ challenger: the last candidate)
                browser.screenshot(shots / "stack-mlflow-champion.png")
                for older in ("1", "2"):
                    page = browser.open(f"{model}/{older}", wait_for=[f"Version {older}",
                                                                      "Aliases"])
                    assert "champion" not in page.split("Aliases", 1)[1].split("Stage")[0]
                ui = st.prefect_api_url.removesuffix("/api")
                page = browser.open(f"{ui}/runs/flow-run/{run['id']}",
                                    wait_for=[run["name"], "Completed", "Deployment"])
                lines = page.split("\n")
                assert lines[lines.index("Deployment") + 1] == "al-cycle"
                assert lines[lines.index("Work Pool") + 1] == "synthloop-process"
                browser.screenshot(shots / "stack-prefect-flow-run.png")


def shots_dir(tmp_path: Path) -> Path:
    """``SYNTHLOOP_DOCS_SCREENSHOTS=1`` keeps the screenshots in docs/images (the README's)."""
    if os.environ.get("SYNTHLOOP_DOCS_SCREENSHOTS", "").lower() in ("1", "true", "yes"):
        return Path(__file__).resolve().parents[2] / "docs" / "images"
    return tmp_path

