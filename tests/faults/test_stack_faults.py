"""Faults on the production stack (`synthloop stack`), one stack and one toy pipeline:

1. The worker and the flow run it started die with SIGKILL (a crashed worker host) while the
   cycle holds the workspace lock. The champion must stay where it was, `stack up` must bring
   back only the worker, and the next pool-growth event must run the cycle to the end, resuming
   from the stage records, with nothing lost.
2. PostgreSQL (under MLflow and Prefect) restarts while the next cycle runs: the cycle either
   completes or fails cleanly (champion unchanged) and the next event finishes it.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from stack_support import (get_json, mirrored_camera_images, running_stack, stack_folder,
                           synthloop, toy_pipeline_on_stack, wait_for)

from synthloop.flows_server import api_post
from synthloop.gating.cycle_lock import CycleBusy, cycle_lock
from synthloop.stack import postgres
from synthloop.stack.procs import PidFile

pytestmark = [pytest.mark.slow, pytest.mark.render, pytest.mark.e2e, pytest.mark.faults]


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rfind(")") + 2:].split()[1]), []).append(
                int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cycle_in_progress(state: Path) -> bool:
    try:
        with cycle_lock(state, trigger="probe (test)"):
            return False
    except CycleBusy:
        return True


def test_worker_killed_mid_cycle_keeps_the_champion_and_the_next_event_resumes(
        tmp_path, render_python, report):
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
            worker = PidFile(st.run_dir, "worker").alive_pid()
            killed = descendants(worker)
            for pid in killed:  # the worker host dies: worker and flow-run process at once
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            wait_for("the killed processes to go", lambda: not any(map(running, killed)), 30, 1)
            assert get_json(alias_url)["model_version"]["version"] == "1"  # no gate decided
            assert not cycle_in_progress(state)  # flock: the kernel freed the dead run's lock
            status = synthloop("stack", "status", "--config", str(config), "--json", check=False)
            [worker_status] = [json.loads(line) for line in status.splitlines()
                               if '"service": "worker"' in line]
            assert not worker_status["running"] and not worker_status["healthy"]

            up = synthloop("stack", "up", "--config", str(config))
            assert up.count("already running") == 5 and "worker    healthy" in up
            out = synthloop("ingest", "--config", str(toy), env=env)  # nothing new, still grown
            assert "added 0" in out and "event synthloop.pool.grew sent" in out
            deps = {d["name"]: d for d in api_post(st.prefect_api_url, "/deployments/filter", {})}

            def runs():
                return api_post(st.prefect_api_url, "/flow_runs/filter", {"flow_runs": {
                    "deployment_id": {"any_": [deps["al-cycle"]["id"]]}}})

            def completed():
                return [r for r in runs() if r["state_type"] == "COMPLETED"]

            [run] = wait_for("the second run to complete", completed, 900, 5)
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
            finished = wait_for("cycle 2's run to end", lambda: [r for r in runs() if r["id"] !=
                                run["id"] and r["state_type"] in ("COMPLETED", "FAILED",
                                                                  "CRASHED")], 900, 5)[0]
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
    report("stack: PostgreSQL restarted (fast stop, start) mid-cycle",
           f"the cycle's flow run ended {outcome}" + (
               "" if outcome == "COMPLETED" else "; champion unchanged until a gate decided"),
           "yes" + ("" if outcome == "COMPLETED" else ": the next event resumed it") +
           ": v3 promoted, MLflow and Prefect reconnected without a restart",
           "nothing lost")
    report("stack: worker (and its flow run) SIGKILLed mid-cycle",
           "champion unchanged (v1); the workspace lock freed with the process; the global "
           "cycle slot freed when its 60 s lease ran out; the killed flow run stays Running in "
           "Prefect (no flow-run heartbeats)",
           "yes: `stack up` restarted only the worker; the next pool-growth event ran the cycle "
           "from the stage records and promoted v2",
           "nothing lost")
