"""Faults on the production stack (`synthloop stack`), one stack and one toy pipeline:

1. The worker and the flow run it started die with SIGKILL (a crashed worker host) while the
   cycle holds the workspace lock. The champion must stay where it was, `stack up` must bring
   back only the worker, and the next pool-growth event must run the cycle to the end, resuming
   from the stage records, with nothing lost.
   The killed flow run must end Crashed in Prefect (flow-run heartbeats + the stack's zombie
   automation), not stay Running.
2. PostgreSQL (under MLflow and Prefect) restarts while the next cycle runs: the cycle either
   completes or fails cleanly (champion unchanged) and the next event finishes it.
3. S3 stops while the next cycle uploads its model (the run is held at the
   ``tracking.log_model`` pause point, S3 stopped, the run released): no registry version may
   point at missing files, the champion stays until a gate decides, and once `stack up` brings
   S3 back the cycle finishes (MLflow's upload retries) or the next event does.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.parse
from pathlib import Path

import mlflow
import pytest
from stack_support import (get_json, mirrored_camera_images, running_stack, stack_folder,
                           synthloop, toy_pipeline_on_stack, wait_for)

from synthloop.flows_server import api_post
from synthloop import faults, tracking
from synthloop.gating.cycle_lock import CycleBusy, cycle_lock
from synthloop.stack import postgres
from synthloop.stack.procs import PidFile, descendants, http_status, stat_fields, stop

FAILED_PUT = re.compile(r'"PUT /api/2\.0/mlflow-artifacts/artifacts/\S+ HTTP/1\.1" 5\d\d')

pytestmark = [pytest.mark.slow, pytest.mark.render, pytest.mark.e2e, pytest.mark.faults]


def _epoch(timestamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def running(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def cycle_in_progress(state: Path) -> bool:
    try:
        with cycle_lock(state, trigger="probe (test)"):
            return False
    except CycleBusy:
        return True


def test_worker_killed_mid_cycle_keeps_the_champion_and_the_next_event_resumes(
        tmp_path, render_python, report, monkeypatch):
    pause_dir = tmp_path / "pause"  # faults.pause: armed only for phase 3
    pause_dir.mkdir()
    monkeypatch.setenv(faults.PAUSE_ENV, str(pause_dir))  # the stack's worker inherits it
    with stack_folder() as folder:
        toy, camera = tmp_path / "toy.yaml", tmp_path / "camera"
        config, st = toy_pipeline_on_stack(tmp_path, folder, model="synthloop-stack-fault")
        alias_url = (f"{st.mlflow_url}/api/2.0/mlflow/registered-models/alias"
                     "?name=synthloop-stack-fault&alias=champion")
        state = tmp_path / "ws" / "state"
        env = {"PREFECT_API_URL": st.prefect_api_url}
        with running_stack(config):
            synthloop("demo", "--config", str(toy), "--cycles", "0")
            assert get_json(alias_url)["model_version"]["version"] == "1"
            mirrored_camera_images(tmp_path / "ws", camera, 3)
            assert "event synthloop.pool.grew sent" in synthloop("ingest", "--config", str(toy),
                                                                 env=env)
            wait_for("the triggered cycle to take the lock", lambda: cycle_in_progress(state),
                     300, 1)
            deps = {d["name"]: d for d in api_post(st.prefect_api_url, "/deployments/filter", {})}

            def runs():
                return api_post(st.prefect_api_url, "/flow_runs/filter", {"flow_runs": {
                    "deployment_id": {"any_": [deps["al-cycle"]["id"]]}}})

            def completed():
                return [r for r in runs() if r["state_type"] == "COMPLETED"]

            [killed_run] = [r for r in runs() if r["state_type"] == "RUNNING"]
            worker = PidFile(st.run_dir, "worker").alive_pid()
            t_kill = time.time()
            killed = [worker, *descendants(worker)]
            for pid in killed:  # the worker host dies: worker and flow-run process at once
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            wait_for("the killed processes to go", lambda: not any(map(running, killed)), 30, 1)
            assert get_json(alias_url)["model_version"]["version"] == "1"  # no gate decided
            # flock: the kernel frees the dead run's lock with its last holder (a DataLoader
            # worker forked just before the kill exits on its own within seconds).
            wait_for("the dead run's workspace lock to free",
                     lambda: not cycle_in_progress(state), 30, 1)
            status = synthloop("stack", "status", "--config", str(config), "--json", check=False)
            [worker_status] = [json.loads(line) for line in status.splitlines()
                               if '"service": "worker"' in line]
            assert not worker_status["running"] and not worker_status["healthy"]

            up = synthloop("stack", "up", "--config", str(config))
            assert up.count("already running") == 5 and "worker    healthy" in up
            out = synthloop("ingest", "--config", str(toy), env=env)  # nothing new, still grown
            assert "added 0" in out and "event synthloop.pool.grew sent" in out

            def run_state(run_id: str) -> dict:
                return get_json(f"{st.prefect_api_url}/flow_runs/{run_id}")["state"]

            [run] = wait_for("the second run to complete", completed, 900, 5)
            # The killed run: its heartbeats stopped, so the zombie automation marks it Crashed
            # (after st.prefect.zombie_after_s = 90 s without one; the second run took longer).
            crashed = wait_for("the killed flow run to be marked Crashed", lambda: (
                lambda s: s if s["type"] == "CRASHED" else None)(run_state(killed_run["id"])),
                240, 5)
            crashed_after_s = (_epoch(crashed["timestamp"]) - t_kill)
            print(f"killed flow run marked Crashed {crashed_after_s:.0f} s after the kill: "
                  f"{crashed['message']}")
            assert "heartbeat" in crashed["message"]
            limit = st.prefect.zombie_after_s + st.prefect.heartbeat_s + 60
            assert crashed_after_s <= limit, (crashed_after_s, limit)
            assert get_json(alias_url)["model_version"]["version"] == "2"
            entries = [json.loads(line) for line in
                       (state / "cycle_runs.jsonl").read_text().splitlines()]
            assert [(e["trigger"], e["outcome"]) for e in entries] == [("pool-grew", "ran")]
            assert entries[0]["cycle"] == 1 and entries[0]["promoted"] is True
            labeled = json.loads((tmp_path / "ws" / "data" / "labeled" / "annotations.json")
                                 .read_text())
            assert len(labeled["images"]) == 3  # the query batch labelled once, kept

            # PostgreSQL restarts (pg_ctl stop -m fast, start) while cycle 2 runs.
            mirrored_camera_images(tmp_path / "ws", tmp_path / "camera2", 3, vertical=True)
            assert "event synthloop.pool.grew sent" in synthloop(
                "ingest", "--config", str(toy), "--source", str(tmp_path / "camera2"), env=env)
            wait_for("cycle 2 to take the lock", lambda: cycle_in_progress(state), 300, 1)
            pg = PidFile(st.run_dir, "postgres")
            assert postgres.stop(st, pg) and not postgres.ready(st)
            postgres.start(st, pg)
            earlier = {run["id"], killed_run["id"]}
            finished = wait_for("cycle 2's run to end", lambda: [
                r for r in runs() if r["id"] not in earlier and r["state_type"] in (
                    "COMPLETED", "FAILED", "CRASHED")], 900, 5)[0]
            outcome = finished["state_type"]
            print(f"postgres restart mid-cycle: the flow run ended {outcome} "
                  f"({finished['run_count']} run(s) of the flow)")
            if outcome != "COMPLETED":  # failed cleanly: the champion waits for a gate
                assert get_json(alias_url)["model_version"]["version"] == "2"
                assert "event synthloop.pool.grew sent" in synthloop(
                    "ingest", "--config", str(toy), env=env)
                wait_for("the retried cycle 2", lambda: len(completed()) == 2, 900, 5)
            assert get_json(alias_url)["model_version"]["version"] == "3"
            entries = [json.loads(line) for line in
                       (state / "cycle_runs.jsonl").read_text().splitlines()]
            assert [e["cycle"] for e in entries if e["outcome"] == "ran"] == [1, 2]
            labeled = json.loads((tmp_path / "ws" / "data" / "labeled" / "annotations.json")
                                 .read_text())
            assert len(labeled["images"]) == 6

            # S3 stops while cycle 3 uploads its model: the run waits at tracking.log_model
            # (trained, evaluated, nothing uploaded), S3 stops, the run goes on into the outage.
            champion = lambda: get_json(alias_url)["model_version"]["version"]  # noqa: E731
            models = f"{st.mlflow_url}/api/2.0/mlflow/model-versions/search?" + \
                urllib.parse.urlencode({"filter": "name='synthloop-stack-fault'"})

            def versions() -> dict[str, str]:
                return {v["version"]: v["source"] for v in get_json(models)["model_versions"]}

            mlflow_log = st.logs_dir / "mlflow.log"
            log_before = mlflow_log.stat().st_size
            armed = pause_dir / "tracking.log_model"
            armed.touch()
            mirrored_camera_images(tmp_path / "ws", tmp_path / "camera3", 3, rotated=True)
            assert "event synthloop.pool.grew sent" in synthloop(
                "ingest", "--config", str(toy), "--source", str(tmp_path / "camera3"), env=env)
            wait_for("cycle 3 to reach the model upload",
                     (pause_dir / "tracking.log_model.reached").exists, 900, 1)
            [run3] = [r for r in runs() if r["state_type"] == "RUNNING"]
            s3 = PidFile(st.run_dir, "s3")
            assert stop(s3) and http_status(st.s3_endpoint) is None  # S3 is gone
            armed.unlink()  # the run goes on: log_model uploads into the outage
            t_out = time.monotonic()

            def outage_log() -> str:
                return mlflow_log.read_bytes()[log_before:].decode(errors="replace")

            # MLflow's server answers the upload 500 once boto3 gives up on S3 (~15 s); its
            # client retries with backoff (7 times, ~4 min in all).
            wait_for("an artifact upload to fail on the stopped S3",
                     lambda: FAILED_PUT.search(outage_log()), 180, 1)
            outage_s = time.monotonic() - t_out
            assert champion() == "3" and set(versions()) == {"1", "2", "3"}
            assert run_state(run3["id"])["type"] == "RUNNING"  # waiting on the upload
            up = synthloop("stack", "up", "--config", str(config))
            assert up.count("already running") == 5 and "s3        healthy" in up
            end3 = wait_for("cycle 3's run to end", lambda: (lambda s: s if s["type"] in (
                "COMPLETED", "FAILED", "CRASHED") else None)(run_state(run3["id"])), 900, 5)
            s3_outcome = end3["type"]
            failed_puts = len(FAILED_PUT.findall(outage_log()))
            print(f"S3 stopped during the model upload: cycle 3's run ended {s3_outcome}; "
                  f"{failed_puts} artifact PUT(s) answered 5xx by MLflow; S3 down "
                  f"{outage_s:.0f} s before `stack up`")
            if s3_outcome != "COMPLETED":  # failed cleanly: nothing registered, champion stays
                assert champion() == "3" and set(versions()) == {"1", "2", "3"}
                assert "event synthloop.pool.grew sent" in synthloop(
                    "ingest", "--config", str(toy), env=env)
                wait_for("the retried cycle 3 to promote", lambda: champion() == "4", 900, 5)
            assert champion() == "4" and set(versions()) == {"1", "2", "3", "4"}
            mlflow.set_tracking_uri(st.mlflow_url)
            for version, source in versions().items():  # every version's files are in S3
                files = {f.path.rsplit("/", 1)[-1]: f.file_size for f in
                         mlflow.artifacts.list_artifacts(
                             artifact_uri=f"{tracking._model_location(source)}/artifacts")}
                assert files.get(tracking.CHECKPOINT_NAME, 0) > 0, (version, files)
            entries = [json.loads(line) for line in
                       (state / "cycle_runs.jsonl").read_text().splitlines()]
            assert [e["cycle"] for e in entries if e["outcome"] == "ran"] == [1, 2, 3]
            labeled = json.loads((tmp_path / "ws" / "data" / "labeled" / "annotations.json")
                                 .read_text())
            assert len(labeled["images"]) == 9
    report("stack: S3 stopped during the model upload (cycle held at tracking.log_model)",
           f"the upload met the outage ({failed_puts} PUT(s) answered 500; S3 down "
           f"{outage_s:.0f} s, then `stack up` restarted S3 only); "
           f"the cycle's flow run ended {s3_outcome}; champion unchanged (v3) and no registry "
           "version until the upload was whole" + (
               "" if s3_outcome == "COMPLETED" else "; the failed run registered nothing"),
           ("yes: MLflow's upload retries carried the same run through; v4 promoted"
            if s3_outcome == "COMPLETED" else "yes: the next pool-growth event reran it; v4 "
            "promoted"),
           "nothing lost: every registry version's checkpoint is in S3; 9 labelled images")
    report("stack: PostgreSQL restarted (fast stop, start) mid-cycle",
           f"the cycle's flow run ended {outcome}" + (
               "" if outcome == "COMPLETED" else "; champion unchanged until a gate decided"),
           "yes" + ("" if outcome == "COMPLETED" else ": the next event resumed it") +
           ": v3 promoted, MLflow and Prefect reconnected without a restart",
           "nothing lost")
    report("stack: worker (and its flow run) SIGKILLed mid-cycle",
           "champion unchanged (v1); the workspace lock freed with the process; the global "
           "cycle slot freed when its 60 s lease ran out; the killed flow run marked Crashed "
           f"by the stack's zombie automation {crashed_after_s:.0f} s after the kill "
           "(heartbeats every 30 s, Crashed after 90 s without one)",
           "yes: `stack up` restarted only the worker; the next pool-growth event ran the cycle "
           "from the stage records and promoted v2",
           "nothing lost")
