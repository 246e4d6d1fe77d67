"""infra/stack.yaml: one source of truth that compose agrees with; the errors `stack up` gives
before it starts anything (bad config, port taken, data folder of another version, missing
binaries); pid files that never signal a process that is not ours, and a stop that leaves
nothing ours started running."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml
from stack_support import stack_folder, write_stack_config
from tests_support import ROOT

from synthloop.stack.lifecycle import up
from synthloop.stack.procs import PidFile, spawn, stat_fields, stop
from synthloop.stack.settings import load_stack

COMPOSE = ROOT / "infra" / "compose.yaml"


def published(service: dict) -> set[int]:
    return {int(p.split(":")[-1]) for p in service.get("ports", [])}


def test_compose_uses_the_stack_configs_ports_databases_buckets_and_pool():
    st = load_stack(ROOT / "infra" / "stack.yaml", base=ROOT)
    compose = yaml.safe_load(COMPOSE.read_text())
    svc = compose["services"]
    assert st.mlflow.port in published(svc["mlflow"])
    assert st.prefect.port in published(svc["prefect-server"])
    assert st.serve.port in published(svc["server"])
    assert st.s3.port in published(svc["minio"])
    mlflow_cmd = " ".join(svc["mlflow"]["command"])
    assert f"--port {st.mlflow.port}" in mlflow_cmd
    assert f"--artifacts-destination s3://{st.s3.artifacts_bucket}" in mlflow_cmd
    assert re.search(rf"@postgres:{st.postgres.port}/mlflow\b", mlflow_cmd)
    prefect_db = svc["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert prefect_db.endswith(f"@postgres:{st.postgres.port}/prefect")
    assert svc["postgres"]["environment"]["POSTGRES_USER"] == st.postgres.user
    assert svc["postgres"]["environment"]["POSTGRES_DB"] == "mlflow"
    assert "CREATE DATABASE prefect" in (ROOT / "infra/postgres/init.sql").read_text()
    buckets = re.search(r"for bucket in \(([^)]*)\)",
                        svc["create-buckets"]["command"][0]).group(1)
    assert sorted(re.findall(r'"([^"]+)"', buckets)) == sorted(st.s3.buckets)
    worker_cmd = svc["worker"]["command"]
    assert worker_cmd[worker_cmd.index("--pool") + 1] == st.prefect.work_pool
    prefect_yaml = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    assert prefect_yaml["definitions"]["work_pool"]["name"] == st.prefect.work_pool
    serve_cmd = svc["server"]["command"]
    assert serve_cmd[serve_cmd.index("--port") + 1] == str(st.serve.port)


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "stack.yaml"
    bad.write_text("mlflow: {port: 5000}\nprefect: {port: 5000}\n")
    with pytest.raises(ValueError, match="mlflow and prefect both use port 5000"):
        load_stack(bad)
    bad.write_text("mlflow: {prot: 5000}\n")
    with pytest.raises(ValueError, match=r"mlflow\.prot"):
        load_stack(bad)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_stack(tmp_path / "missing.yaml")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "synthloop", "stack", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("service", ["postgres", "serve"])
def test_port_taken_is_one_clear_line_and_nothing_starts(service):
    """The first service's port or the last one's: refused before PostgreSQL (or anything) runs."""
    with stack_folder() as folder, socket.socket() as squatter:
        config = write_stack_config(folder)
        port = getattr(load_stack(config), service).port
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        proc = run_cli("up", "--config", str(config))
        assert proc.returncode == 2
        assert f"port {port} for {service} is already in use" in proc.stderr
        assert f"{service}.port" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (folder / "data" / "postgres").exists()  # no cluster was made or started
        assert not list((folder / "data").glob("run/*.pid"))


def test_data_folder_of_another_postgres_version_is_refused():
    with stack_folder() as folder:
        settings = load_stack(write_stack_config(folder))
        settings.pg_data.mkdir(parents=True)
        (settings.pg_data / "PG_VERSION").write_text("14\n")
        with pytest.raises(RuntimeError, match="holds a PostgreSQL 14 cluster but this stack "
                                               "runs PostgreSQL 15"):
            up(settings, echo=lambda line: None)
        (settings.pg_data / "PG_VERSION").write_text("15\n")
        (settings.data_dir / "stack.json").write_text('{"format": 99}')
        with pytest.raises(RuntimeError, match="stack format 99"):
            up(settings, echo=lambda line: None)


def test_missing_binaries_are_named(tmp_path):
    with stack_folder() as folder:
        config = write_stack_config(folder, postgres={"bin_dir": str(tmp_path)})
        proc = run_cli("up", "--config", str(config))
        assert proc.returncode == 2
        assert "PostgreSQL 15 binaries (initdb, pg_ctl, postgres) not found" in proc.stderr
        assert "postgres.bin_dir" in proc.stderr


def test_stop_never_signals_a_process_that_only_reused_the_pid(tmp_path):
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        pidfile = PidFile(tmp_path, "worker")
        pidfile.write(proc.pid, ["sleep", "60"], group=True)
        record = pidfile.read()
        record["start_ticks"] += 1  # the recorded process started at another time: not this one
        pidfile.path.write_text(__import__("json").dumps(record))
        assert pidfile.alive_pid() is None
        assert stop(pidfile) is False
        time.sleep(0.2)
        assert proc.poll() is None  # untouched
        pidfile.write(proc.pid, ["sleep", "60"], group=True)  # now it is ours
        assert stop(pidfile, timeout_s=5) is True
        assert proc.wait(timeout=5) is not None
        assert not pidfile.path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


GRANDCHILD_IN_OWN_SESSION = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                         start_new_session=True)
print(child.pid, flush=True)
time.sleep(120)
"""


def test_stop_takes_along_what_the_service_started_outside_its_group(tmp_path):
    """A service's child in a session of its own (as Prefect's worker starts each flow run) is
    not in the service's process group: `stack down` must still stop it, not orphan it."""
    pidfile, log = PidFile(tmp_path, "worker"), tmp_path / "worker.log"
    spawn(pidfile, [sys.executable, "-c", GRANDCHILD_IN_OWN_SESSION], env=dict(os.environ),
          cwd=tmp_path, log=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not log.read_text().strip().split("\n")[-1].isdigit():
        time.sleep(0.1)
    child = int(log.read_text().strip().split("\n")[-1])
    try:
        assert int(stat_fields(child)[2]) == child  # its own group, not the service's
        assert stop(pidfile, timeout_s=5) is True
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _running(child):
            time.sleep(0.1)
        assert not _running(child)
    finally:
        if _running(child):
            os.kill(child, signal.SIGKILL)


def _running(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def test_zombie_flow_runs_heartbeats_and_automation_are_what_prefect_reads(tmp_path):
    """The worker's flow runs send heartbeats every prefect.heartbeat_s (Prefect reads the env
    var the stack sets), and the automation body is one Prefect's own schema accepts: after a
    heartbeat, another (or a final state) within prefect.zombie_after_s, else Crashed."""
    from prefect.events.schemas.automations import AutomationCore, Posture

    from synthloop.stack.services import service_env, zombie_automation_body

    st = load_stack(ROOT / "infra" / "stack.yaml", base=ROOT)
    env = service_env(st)
    assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(st.prefect.heartbeat_s) == "30"
    proc = subprocess.run([sys.executable, "-c", "from prefect.settings import "
                           "get_current_settings as s; print(s().flows.heartbeat_frequency)"],
                          capture_output=True, text=True, timeout=120,
                          env={**env, "PREFECT_HOME": str(tmp_path)})
    assert proc.stdout.strip() == "30", proc.stderr[-2000:]
    auto = AutomationCore.model_validate(zombie_automation_body(st))
    assert auto.trigger.posture == Posture.Proactive
    assert auto.trigger.within.total_seconds() == st.prefect.zombie_after_s == 90
    assert auto.trigger.after == {"prefect.flow-run.heartbeat"}
    assert {"prefect.flow-run.heartbeat", "prefect.flow-run.Completed",
            "prefect.flow-run.Failed", "prefect.flow-run.Crashed"} <= auto.trigger.expect
    assert auto.trigger.for_each == {"prefect.resource.id"}
    # Deployment runs only (the stack's worker sets their heartbeat): a flow run started by
    # hand beats every 180 s (Prefect's default) and must not be crashed after 90 s.
    assert auto.trigger.match_related.model_dump() == {"prefect.resource.role": "deployment"}
    assert [(a.type, a.state.value) for a in auto.actions] == [("change-flow-run-state",
                                                                "CRASHED")]
    bad = tmp_path / "stack.yaml"
    bad.write_text("prefect: {heartbeat_s: 40, zombie_after_s: 70}\n")
    with pytest.raises(ValueError, match=r"prefect: .*zombie_after_s must be at least twice"):
        load_stack(bad)
    bad.write_text("prefect: {heartbeat_s: 10}\n")
    with pytest.raises(ValueError, match=r"prefect\.heartbeat_s"):
        load_stack(bad)
