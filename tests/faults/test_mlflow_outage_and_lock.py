"""The MLflow server stops in the middle of a cycle; then two triggers ask for a cycle at once.

Against a real ``mlflow server`` on loopback: M0 is trained and made champion, the server is
killed while cycle 1 fine-tunes, and the cycle must fail before its gate with the champion
untouched. After a restart (same store) the rerun finishes the cycle. Then, in a pipeline of
its own, a drift-triggered ``synthloop next-cycle`` asks while a nightly one holds the cycle lock
(held still with SIGSTOP, so that nothing depends on how long a cycle takes): the nightly run
runs, the drift run is skipped, and state/cycle_runs.jsonl says which.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fault_support import ROOT, champion_is_gated, cli_env, run_cli, toy_config
from tests_support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.render, pytest.mark.e2e,
              # ~5 min alone on 2 cores; 3x that when other jobs hold the CPUs
              pytest.mark.timeout(2400)]


class Server:
    """``mlflow server`` with a SQLite store and local artifacts; stop and start again."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        exe = Path(sys.executable).with_name("mlflow")
        log = open(self.folder / "server.log", "ab")
        self.proc = subprocess.Popen(
            [str(exe), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers",
             "1", "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
             "--artifacts-destination", str(self.folder / "artifacts")],
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 180:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except OSError:
                assert self.proc.poll() is None, (self.folder / "server.log").read_text()[-2000:]
                time.sleep(0.5)
        pytest.fail("mlflow server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)  # the server and its gunicorn/uvicorn workers
            self.proc.wait(timeout=30)


@pytest.fixture()
def served(tmp_path, render_python):
    """A fresh MLflow server and toy pipeline for each test: no test runs on another's state."""
    folder = tmp_path
    server = Server(folder)
    server.start()
    cfg = toy_config(folder / "pipeline", tracking={"uri": server.url})
    # bounded client retries, so that an outage fails in seconds, not minutes
    env = cli_env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="2", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1",
                  MLFLOW_HTTP_REQUEST_TIMEOUT="20")
    yield server, cfg, env
    server.stop()


def alias(server: Server, cfg_path: Path, name: str) -> str | None:
    from mlflow import MlflowClient

    from synthloop.config import load_config
    from synthloop.gating.registry import get_alias_version

    cfg = load_config(cfg_path)
    mv = get_alias_version(MlflowClient(server.url), cfg.registered_model_name, name)
    return None if mv is None else str(mv.version)


def test_mlflow_down_mid_cycle_fails_before_the_gate_and_promotes_nothing(served, report):
    server, cfg, env = served
    ws = cfg.parent / "ws"
    first = run_cli(["demo", "--config", str(cfg), "--cycles", "0"], env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    champion_before = alias(server, cfg, "champion")
    assert champion_before is not None

    proc = subprocess.Popen([sys.executable, "-m", "synthloop", "demo", "--config", str(cfg)],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    label_done = ws / "state" / "cycle_1" / "label.json"
    t0 = time.monotonic()
    while not label_done.exists():  # labels are in: next comes fine-tuning, logged to MLflow
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() - t0 < 600
        time.sleep(0.1)
    server.stop()
    _, err = proc.communicate(timeout=600)
    assert proc.returncode != 0, "the cycle went on without MLflow"
    assert not (ws / "state" / "cycle_1" / "gate.json").exists()
    assert not (ws / "state" / "cycle_1" / "candidate.json").exists()
    errors = [line.strip() for line in err.splitlines()
              if re.match(r"\s*[\w.]*(Error|Exception)\b", line)]
    last = errors[-1] if errors else err.strip().splitlines()[-1]
    assert "127.0.0.1" in err or "Connection" in err, err[-2000:]

    server.start()  # the same store comes back
    assert alias(server, cfg, "champion") == champion_before  # nothing was promoted
    labels = json.loads(label_done.read_text())
    rerun = run_cli(["demo", "--config", str(cfg)], env=env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads(label_done.read_text()) == labels  # labels kept, not redone
    assert (ws / "state" / "cycle_1" / "gate.json").exists()
    version = champion_is_gated(ws, cfg)
    gate = json.loads((ws / "state" / "cycle_1" / "gate.json").read_text())
    assert version == (str(gate["candidate_version"]) if gate["promote"] else champion_before)
    report("MLflow server killed while cycle 1 fine-tunes",
           f"the cycle failed before its gate ({last[:160]}); no gate record, champion still "
           f"v{champion_before}",
           f"yes: after a restart the rerun kept the {len(labels['new'])} new labels, trained, "
           f"gated ({'promoted' if gate['promote'] else 'kept the champion'})")


def lock_holder(state: Path) -> dict:
    """Who the cycle lock file names ({} while nobody holds it)."""
    try:
        return json.loads((state / "cycle.lock").read_text() or "{}")
    except (FileNotFoundError, json.JSONDecodeError):  # not yet created, or being written
        return {}


def test_a_drift_run_asking_while_a_nightly_run_holds_the_cycle_is_skipped(served, report):
    from synthloop.gating.cycle_lock import read_requests

    server, cfg, env = served
    state = cfg.parent / "ws" / "state"
    first = run_cli(["demo", "--config", str(cfg), "--cycles", "0"], env=env)  # M0, champion
    assert first.returncode == 0, first.stderr[-3000:]
    before = len(read_requests(state))
    ask = ["next-cycle", "--config", str(cfg), "--wait", "0", "--trigger"]
    log = cfg.parent / "nightly.log"
    with open(log, "w") as out:
        nightly = subprocess.Popen([sys.executable, "-m", "synthloop", *ask, "nightly"], env=env,
                                   cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        while lock_holder(state).get("pid") != nightly.pid:  # nightly's cycle has begun
            assert nightly.poll() is None, log.read_text()[-3000:]
            time.sleep(0.1)
        os.killpg(nightly.pid, signal.SIGSTOP)  # it stays inside its cycle, holding the lock
        try:
            drift = run_cli([*ask, "drift"], env=env)
        finally:
            os.killpg(nightly.pid, signal.SIGCONT)
        nightly.wait(timeout=1200)
    finally:
        if nightly.poll() is None:
            os.killpg(nightly.pid, signal.SIGKILL)
            nightly.wait()
    assert drift.returncode == 0, drift.stderr[-3000:]
    assert nightly.returncode == 0, log.read_text()[-3000:]
    entries = read_requests(state)[before:]
    assert [(e["trigger"], e["outcome"]) for e in entries] == [("drift", "skipped"),
                                                               ("nightly", "ran")], entries
    assert entries[0]["held_by"]["trigger"] == "nightly"
    assert entries[0]["held_by"]["pid"] == nightly.pid
    assert entries[1]["cycle"] == 1 and (state / "cycle_1" / "gate.json").exists()
    assert not (state / "cycle_2").exists()  # one cycle, not two
    report("a drift-triggered run asking while a nightly run holds the cycle",
           "nightly took the cycle lock and ran cycle 1; drift was skipped at once; "
           "state/cycle_runs.jsonl records both, the skipped entry naming nightly (and its pid) "
           "as holder", "n/a: the skipped request is recorded; the next trigger runs it")
