"""`synthloop stack` for real: PostgreSQL 15, S3 (moto), MLflow and Prefect on Postgres, a
Prefect worker, the REST server; then a restart on the same data folder keeps the MLflow run,
its S3 artifact, the registry alias, the deployments and the flow-run history."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from stack_support import running_stack, stack_folder, write_stack_config

from synthloop.flows_server import api_post
from synthloop.stack.procs import PidFile, http_status

pytestmark = pytest.mark.slow


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "synthloop", "stack", *args],
                          capture_output=True, text=True, timeout=600)


def test_up_restart_keeps_everything_down_stops_only_ours():
    import mlflow
    from mlflow import MlflowClient

    with stack_folder() as folder:
        config = write_stack_config(folder)
        with running_stack(config) as st:
            status = cli("status", "--config", str(config), "--json")
            assert status.returncode == 0, status.stdout + status.stderr
            report = [json.loads(line) for line in status.stdout.splitlines()]
            assert [r["service"] for r in report] == ["postgres", "s3", "mlflow", "prefect",
                                                      "worker", "serve"]
            assert all(r["healthy"] for r in report)
            # MLflow on Postgres with S3 artifacts: a run, an artifact, a registered alias.
            client = MlflowClient(st.mlflow_url)
            mlflow.set_tracking_uri(st.mlflow_url)
            exp = client.create_experiment("stack-test")
            run = client.create_run(exp)
            client.log_metric(run.info.run_id, "AP", 0.25)
            client.log_text(run.info.run_id, "kept across restarts", "note.txt")
            client.create_registered_model("stack-model")
            client.create_model_version("stack-model", f"runs:/{run.info.run_id}/note.txt",
                                        run.info.run_id)
            client.set_registered_model_alias("stack-model", "champion", "1")
            # Prefect on Postgres: the deployments, the cycle limit, a flow run (in the future:
            # the worker leaves it alone).
            deps = {d["name"]: d for d in api_post(st.prefect_api_url, "/deployments/filter", {})}
            assert {"al-cycle", "pool-watcher", "continuous-training-nightly"} <= set(deps)
            limits = api_post(st.prefect_api_url, "/v2/concurrency_limits/filter", {})
            assert [(c["name"], c["limit"]) for c in limits] == [("synthloop-cycle", 1)]
            # The zombie automation (flow runs whose heartbeats stop are marked Crashed).
            [zombie] = [a for a in api_post(st.prefect_api_url, "/automations/filter", {})
                        if a["name"] == st.prefect.zombie_automation]
            assert zombie["enabled"] and zombie["trigger"]["within"] == st.prefect.zombie_after_s
            assert zombie["actions"][0]["state"] == "CRASHED"
            later = (datetime.now(timezone.utc) + timedelta(days=30)).isoformat()
            flow_run = api_post(st.prefect_api_url,
                                f"/deployments/{deps['synthesize']['id']}/create_flow_run",
                                {"state": {"type": "SCHEDULED",
                                           "state_details": {"scheduled_time": later}}})
            # The Postgres databases really hold them.
            import psycopg2
            with psycopg2.connect(host="127.0.0.1", port=st.postgres.port, user="synthloop",
                                  dbname="prefect") as conn, conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM deployment")
                assert cur.fetchone()[0] >= 5
            again = cli("up", "--config", str(config))  # idempotent: nothing restarted
            assert again.returncode == 0 and again.stdout.count("already running") == 6
            pids = {name: PidFile(st.run_dir, name).alive_pid() for name in
                    ("postgres", "s3", "mlflow", "prefect", "worker", "serve")}
            down = cli("down", "--config", str(config))
            assert down.returncode == 0, down.stderr
            assert all(PidFile(st.run_dir, n).alive_pid() is None for n in pids)
            assert all(not _alive(pid) for pid in pids.values())
            assert http_status(f"{st.mlflow_url}/health") is None
            assert cli("status", "--config", str(config)).returncode == 1
            assert "nothing of the stack ran" in cli("down", "--config", str(config)).stdout

            up = cli("up", "--config", str(config))  # the same data folder
            assert up.returncode == 0, up.stderr[-3000:]
            # A stopped worker stays ONLINE on the server for a while: health must wait for the
            # NEW worker's heartbeat, which takes seconds (process start, imports).
            assert float(re.search(r"worker +healthy in ([\d.]+) s", up.stdout).group(1)) > 1.0
            client = MlflowClient(st.mlflow_url)
            assert client.get_run(run.info.run_id).data.metrics == {"AP": 0.25}
            assert mlflow.artifacts.load_text(
                f"runs:/{run.info.run_id}/note.txt") == "kept across restarts"
            assert client.get_model_version_by_alias("stack-model", "champion").version == "1"
            runs = api_post(st.prefect_api_url, "/flow_runs/filter", {})
            assert flow_run["id"] in {r["id"] for r in runs}
            assert len(api_post(st.prefect_api_url, "/v2/concurrency_limits/filter", {})) == 1
            assert [a["id"] for a in api_post(st.prefect_api_url, "/automations/filter", {})
                    if a["name"] == st.prefect.zombie_automation] == [zombie["id"]]  # updated
            logs = cli("logs", "mlflow", "--config", str(config), "-n", "5")
            assert logs.returncode == 0 and "mlflow.log" in logs.stdout


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False
