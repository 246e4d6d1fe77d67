"""The cycle through the production stack, end to end, checked through the servers' APIs.

A toy pipeline whose tracking and registry live on the stack's MLflow (Postgres + S3) gets M0
as champion; new camera images land in the ingest folder; `synthloop ingest` sends the
pool-growth event to the stack's Prefect server; the al-cycle deployment's trigger starts
al_cycle on the stack's worker, which takes the global concurrency slot, scores, queries,
labels (simulated oracle), fine-tunes and gates; the registry moves `champion`; the running
REST server answers with the new version. The gate is set to promote any candidate: the test
is about the plumbing, not about whether a toy model improved.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from people_support import Chromium
from stack_support import (get_json, mirrored_camera_images, running_stack, stack_folder,
                           synthloop, toy_pipeline_on_stack, wait_for)

from synthloop.flows_server import api_post
from synthloop.gating.cycle_lock import cycle_lock

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.render]


def test_new_images_trigger_a_cycle_on_the_stack_and_the_server_swaps(tmp_path, render_python):
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

            # Another cycle holds the stack's one cycle slot (as a second worker would).
            holder = subprocess.Popen(
                [sys.executable, "-c", HOLD_SLOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True, env={**os.environ, "PREFECT_API_URL": st.prefect_api_url})
            try:
                assert holder.stdout.readline().strip() == "held"
                # New camera images land; ingest emits the event to the stack's Prefect server.
                mirrored_camera_images(tmp_path / "ws", camera, 3)
                out = synthloop("ingest", "--config", str(toy),
                                env={"PREFECT_API_URL": st.prefect_api_url})
                assert "added 3" in out and "event synthloop.pool.grew sent" in out, out
                deps = {d["name"]: d
                        for d in api_post(st.prefect_api_url, "/deployments/filter", {})}
                al_cycle = deps["al-cycle"]["id"]
                waiting = wait_for("the triggered run to start", lambda: [
                    r for r in api_post(st.prefect_api_url, "/flow_runs/filter", {"flow_runs": {
                        "deployment_id": {"any_": [al_cycle]}}}) if r["state_type"] == "RUNNING"],
                    300, 3)[0]
                time.sleep(15)  # it waits for the slot: no cycle starts meanwhile
                assert get_json(f"{st.prefect_api_url}/flow_runs/{waiting['id']}")[
                    "state_type"] == "RUNNING"
                assert not (tmp_path / "ws" / "state" / "cycle_runs.jsonl").exists()
                with cycle_lock(tmp_path / "ws" / "state", trigger="probe (test)"):
                    pass  # free: the waiting run has not started its cycle
            finally:
                holder.communicate("", timeout=60)  # release the slot

            def finished_run():
                runs = api_post(st.prefect_api_url, "/flow_runs/filter",
                                {"flow_runs": {"deployment_id": {"any_": [al_cycle]}}})
                done = [r for r in runs if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")]
                return done[0] if done else None

            run = wait_for("the triggered al_cycle run", finished_run, 1200, 5)
            assert run["id"] == waiting["id"]
            worker_log = (st.logs_dir / "worker.log").read_text()[-4000:]
            assert run["state_type"] == "COMPLETED", worker_log
            assert run["parameters"] == {"config": str(toy), "trigger": "pool-grew"}
            result = get_json(f"{st.prefect_api_url}/flow_runs/{run['id']}")
            assert result["state"]["name"] == "Completed"

            # The registry on Postgres moved champion; the running server follows it.
            champion = get_json(alias_url)["model_version"]
            assert champion["version"] == "2"
            version = get_json(f"{mlflow_api}/model-versions/get?name=synthloop-stack-toy"
                               "&version=2")["model_version"]
            run_info = get_json(f"{mlflow_api}/runs/get?run_id={version['run_id']}")["run"]
            assert run_info["info"]["artifact_uri"].startswith("mlflow-artifacts:")
            swapped = wait_for("the server to swap to v2", lambda: (
                h := get_json(f"{st.serve_url}/health")).get("version") == "2" and h, 120, 2)
            assert swapped["swaps"] >= 1 and swapped["status"] == "ok"
            # One cycle at a time: the run waited for the slot, then held it, then gave it back.
            limit = api_post(st.prefect_api_url, "/v2/concurrency_limits/filter", {})[0]
            assert limit["name"] == "synthloop-cycle" and limit["active_slots"] == 0
            worker_text = (st.logs_dir / "worker.log").read_text()
            waited = float(re.search(r"cycle slot of synthloop-cycle taken after ([\d.]+) s",
                                     worker_text).group(1))
            assert waited >= 15
            assert "cycle request (pool-grew): ran, cycle 1, promoted True" in worker_text
            entries = [json.loads(line) for line in
                       (tmp_path / "ws" / "state" / "cycle_runs.jsonl").read_text().splitlines()]
            assert [(e["trigger"], e["outcome"]) for e in entries] == [("pool-grew", "ran")]

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
            assert get_json(alias_url)["model_version"]["version"] == "2"

            # What a person sees in a real browser (headless Debian chromium, DevTools protocol).
            shots = shots_dir(tmp_path)
            with Chromium() as browser:
                model = f"{st.mlflow_url}/#/models/synthloop-stack-toy/versions"
                page = browser.open(f"{model}/2", wait_for=["Version 2", "champion"])
                aliases = page.replace("\xa0", " ").split("Aliases", 1)[1].split("Stage")[0]
                assert "@ champion" in aliases  # (and @ challenger: the last candidate)
                browser.screenshot(shots / "stack-mlflow-champion.png")
                page = browser.open(f"{model}/1", wait_for=["Version 1", "Aliases"])
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


HOLD_SLOT = """
import sys
from prefect.concurrency.sync import concurrency
with concurrency("synthloop-cycle", occupy=1, strict=True):
    print("held", flush=True)
    sys.stdin.read()
"""
