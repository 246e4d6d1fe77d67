"""What a killed process leaves in MLflow, closed by the next pipeline start (issue 13).

Real MLflow (SQLite in tmp_path) and real processes: children open runs the way the stages do
(``tracking.process_tags``) and die by SIGKILL, one of them at the real ``registry.register``
fault point. A live child and this test process hold runs that must stay RUNNING. The pipeline
is started with a runner that stops at the first stage: what it did before is the resume path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from mlflow import MlflowClient

from synthloop import tracking
from synthloop.config import load_config
from synthloop.gating.registry import (CHAMPION, ORPHANED_REASON_TAG, ORPHANED_TAG,
                                       register_version)
from synthloop.stages.pipeline import cycle_run_id, run_pipeline
from synthloop.tracking_recovery import INTERRUPTED_TAG, PARENT_TAG, RESUMED_TAG
from tests_support import DEMO_CONFIG, ROOT

pytestmark = pytest.mark.timeout(900)

# A stage's process in miniature: open a run (or register a version, or open a cycle's run),
# print its id, then wait for stdin to close (alive until then) or die where told.
CHILD = textwrap.dedent("""
    import os, signal, sys
    import mlflow
    from mlflow import MlflowClient
    from synthloop import tracking
    from synthloop.config import load_config
    from synthloop.gating.registry import register_version

    cfg = load_config(sys.argv[1], overrides=[f"workspace={sys.argv[2]}"])
    mode = sys.argv[3]
    tracking.setup(cfg)
    if mode == "cycle":
        from synthloop.stages.pipeline import cycle_run_id
        print(cycle_run_id(cfg, 1), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    run = mlflow.start_run(run_name=f"child-{mode}", tags=tracking.process_tags())
    print(run.info.run_id, flush=True)
    if mode == "register":  # as the training stage does; SYNTHLOOP_FAULT kills us in there
        client = MlflowClient()
        client.log_text(run.info.run_id, "weights", "model/checkpoint.txt")
        register_version(client, cfg.registered_model_name, f"runs:/{run.info.run_id}/model",
                         run.info.run_id, tags={"stage": "finetune", "cycle": "1"})
    sys.stdin.read()
    mlflow.end_run()
""")


class Stop(Exception):
    """Raised by the runner at the first stage: the pipeline's start has been done by then."""


def stop_at_first_stage(name, fn, *args, **kwargs):
    raise Stop(name)


def start_pipeline(cfg) -> None:
    with pytest.raises(Stop):
        run_pipeline(cfg, runner=stop_at_first_stage)


@pytest.fixture
def cfg(tmp_path):
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path / 'ws'}"])
    cfg.workspace.mkdir(parents=True)
    tracking.setup(cfg)  # the store exists before children open it concurrently
    return cfg


def child(cfg, mode: str, *, fault: str | None = None) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "MLFLOW_ENABLE_ASYNC_LOGGING": "false"}
    env.pop("SYNTHLOOP_FAULT", None)
    if fault:
        env["SYNTHLOOP_FAULT"] = fault
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(DEMO_CONFIG), str(cfg.workspace),
                             mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
                            start_new_session=True)
    line = proc.stdout.readline().strip()
    assert line, proc.communicate()[1][-3000:]
    return proc, line


def status(client: MlflowClient, run_id: str) -> str:
    return client.get_run(run_id).info.status


def test_pipeline_start_ends_runs_of_dead_processes_and_keeps_live_ones(cfg):
    client = MlflowClient()
    exp_id = tracking.setup(cfg)
    dead, dead_run = child(cfg, "work")
    live, live_run = child(cfg, "work")
    dead.kill()
    dead.wait(timeout=60)
    live_tags = {k: v for k, v in client.get_run(live_run).data.tags.items()
                 if k.startswith("synthloop.")}
    mine = client.create_run(exp_id, run_name="this-process", tags=tracking.process_tags())
    reused = client.create_run(exp_id, run_name="reused-pid", tags={
        **live_tags, tracking.PROCESS_START_TAG: "another-boot:1"})
    nested = client.create_run(exp_id, run_name="gate-like", tags={PARENT_TAG: dead_run})
    now = time.time()
    elsewhere = {tracking.PID_TAG: "1", tracking.HOST_TAG: "another-host"}
    remote_fresh = client.create_run(exp_id, run_name="remote-fresh", tags={
        **elsewhere, tracking.OPENED_TAG: f"{now - 3600:.0f}"})
    remote_old = client.create_run(exp_id, run_name="remote-old", tags={
        **elsewhere, tracking.OPENED_TAG: f"{now - 8 * 24 * 3600:.0f}"})
    untagged = client.create_run(exp_id, run_name="untagged-fresh")

    try:
        start_pipeline(cfg)
        assert status(client, live_run) == "RUNNING"  # a live concurrent process: untouched
    finally:
        live.communicate(input="", timeout=120)
    assert live.returncode == 0
    assert status(client, live_run) == "FINISHED"  # and it finished its run itself

    expected = {dead_run: "KILLED", mine.info.run_id: "RUNNING",
                reused.info.run_id: "KILLED", nested.info.run_id: "KILLED",
                remote_fresh.info.run_id: "RUNNING", remote_old.info.run_id: "KILLED",
                untagged.info.run_id: "RUNNING"}
    assert {r: status(client, r) for r in expected} == expected
    note = client.get_run(dead_run).data.tags[INTERRUPTED_TAG]
    assert f"process {dead.pid} on " in note and "no such process" in note
    assert f"marked KILLED by process {os.getpid()}" in note
    assert "belongs to another process" in client.get_run(reused.info.run_id).data.tags[
        INTERRUPTED_TAG]
    assert f"process {dead.pid} on " in client.get_run(nested.info.run_id).data.tags[
        INTERRUPTED_TAG]  # judged by its parent's process
    assert "past the 168 h limit" in client.get_run(remote_old.info.run_id).data.tags[
        INTERRUPTED_TAG]
    for run_id, state in expected.items():
        assert (INTERRUPTED_TAG in client.get_run(run_id).data.tags) == (state == "KILLED")


def test_version_registered_by_a_killed_run_is_tagged_orphaned(cfg):
    client = MlflowClient()
    exp_id = tracking.setup(cfg)
    name = cfg.registered_model_name

    def finished_version(tags: dict[str, str]) -> str:
        run = client.create_run(exp_id, tags=tracking.process_tags())
        client.log_text(run.info.run_id, "weights", "model/checkpoint.txt")
        version = register_version(client, name, f"runs:/{run.info.run_id}/model",
                                   run.info.run_id, tags)
        client.set_terminated(run.info.run_id)
        return version

    champion = finished_version({"stage": "pretrain", "cycle": "0"})
    client.set_registered_model_alias(name, CHAMPION, champion)
    recorded = finished_version({"stage": "finetune", "cycle": "1"})  # a loser: no alias now
    record = cfg.workspace / "state" / "cycle_1" / "candidate.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"model": {"run_id": "r", "uri": "u", "version": recorded,
                                            "metrics": {}}, "eval": {}}))
    killed, killed_run = child(cfg, "register", fault="registry.register")
    _, err = killed.communicate(timeout=300)
    assert killed.returncode == -9 and "SIGKILL at registry.register" in err, err[-3000:]
    versions = {str(v.version): v.run_id for v in client.search_model_versions(f"name='{name}'")}
    orphan = next(v for v, run in versions.items() if run == killed_run)
    assert status(client, killed_run) == "RUNNING"  # what the kill left behind

    start_pipeline(cfg)
    tags = {v: client.get_model_version(name, v).tags for v in versions}
    assert status(client, killed_run) == "KILLED"
    assert tags[orphan][ORPHANED_TAG] == "true"
    reason = tags[orphan][ORPHANED_REASON_TAG]
    assert killed_run in reason and "ended KILLED" in reason and "no such process" in reason
    for v in (champion, recorded):
        assert ORPHANED_TAG not in tags[v], (v, tags[v])
    assert len(versions) == 3  # tagged, not deleted

    start_pipeline(cfg)  # a second start changes nothing
    assert client.get_model_version(name, orphan).tags == tags[orphan]


def test_rerun_reopens_the_cycle_run_a_killed_cycle_left(cfg):
    client = MlflowClient()
    proc, run_id = child(cfg, "cycle")
    proc.wait(timeout=120)
    assert proc.returncode == -9
    assert status(client, run_id) == "RUNNING"

    start_pipeline(cfg)
    note = client.get_run(run_id).data.tags[INTERRUPTED_TAG]
    assert status(client, run_id) == "KILLED" and f"process {proc.pid} on " in note

    assert cycle_run_id(cfg, 1) == run_id  # the rerun continues the cycle's run
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"
    assert run.data.tags[tracking.PID_TAG] == str(os.getpid())
    assert INTERRUPTED_TAG not in run.data.tags
    assert run.data.tags[RESUMED_TAG].startswith(note)
    assert f"resumed by process {os.getpid()}" in run.data.tags[RESUMED_TAG]
    start_pipeline(cfg)  # our own open run is alive: left RUNNING
    assert status(client, run_id) == "RUNNING"
