"""``synthloop stack up | status | down``: the services in start order, their health checks.

Order: postgres -> s3 -> mlflow -> prefect (server, work pool, cycle limit, deployments) ->
worker -> serve. ``up`` starts each service that is not already running (its pid file names a
live process), waits until it is healthy, and on a failure stops what this call started.
``down`` stops, in reverse order, only processes named by the pid files.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from synthloop.stack import postgres
from synthloop.stack.procs import PidFile, StackError, executable, http_status, spawn, wait_until
from synthloop.stack.settings import HOST, StackSettings

ORDER = ("postgres", "s3", "mlflow", "prefect", "worker", "serve")
STACK_FORMAT = 1
LOCAL_S3_KEYS = {"AWS_ACCESS_KEY_ID": "synthloop", "AWS_SECRET_ACCESS_KEY": "synthloop-local"}


@dataclass(frozen=True)
class Health:
    service: str
    running: bool  # our pid file names a live process (always True for an external S3)
    healthy: bool
    detail: str


def _pid(settings: StackSettings, name: str) -> PidFile:
    return PidFile(settings.run_dir, name)


def _log(settings: StackSettings, name: str) -> Path:
    return settings.logs_dir / f"{name}.log"


def s3_env(settings: StackSettings) -> dict[str, str]:
    """Credentials and region for the S3 endpoint: the environment's, or the local server's."""
    env = {"AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    if settings.s3.endpoint_url is None:
        env.update({k: os.environ.get(k, v) for k, v in LOCAL_S3_KEYS.items()})
    return env


def service_env(settings: StackSettings) -> dict[str, str]:
    """The environment every service and every flow run of the stack gets."""
    return {**os.environ, **s3_env(settings),
            "MLFLOW_S3_ENDPOINT_URL": settings.s3_endpoint,
            "MLFLOW_TRACKING_URI": settings.mlflow_url,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "PREFECT_API_URL": settings.prefect_api_url,
            "PREFECT_HOME": str(settings.prefect_home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_API_URL": settings.prefect_api_url,
            "PREFECT_API_DATABASE_CONNECTION_URL": settings.database_url("prefect", "asyncpg"),
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(settings.prefect.heartbeat_s),
            "SYNTHLOOP_CYCLE_LIMIT": settings.prefect.cycle_limit}


# -- health checks -----------------------------------------------------------------------------
def _s3_healthy(settings: StackSettings) -> bool:
    return http_status(f"{settings.s3_endpoint}/", timeout=3) is not None


def _worker_online(settings: StackSettings) -> bool:
    """A worker of the pool is ONLINE with a heartbeat sent after OUR worker process started
    (the server keeps a stopped worker ONLINE for a while: its status alone proves nothing)."""
    from datetime import datetime

    from synthloop.flows_server import api_post

    record = _pid(settings, "worker").read()
    if not record:
        return False
    try:
        workers = api_post(settings.prefect_api_url,
                           f"/work_pools/{settings.prefect.work_pool}/workers/filter", {})
    except OSError:
        return False
    return any(w.get("status") == "ONLINE" and w.get("last_heartbeat_time")
               and datetime.fromisoformat(w["last_heartbeat_time"]).timestamp()
               >= record["started_at"] for w in workers)


def _serve_answers(settings: StackSettings) -> bool:
    return http_status(f"{settings.serve_url}/health") in (200, 503)  # 503: no champion yet


CHECKS: dict[str, Callable[[StackSettings], bool]] = {
    "postgres": postgres.ready,
    "s3": _s3_healthy,
    "mlflow": lambda s: http_status(f"{s.mlflow_url}/health") == 200,
    "prefect": lambda s: http_status(f"{s.prefect_api_url}/health") == 200,
    "worker": _worker_online,
    "serve": _serve_answers,
}

PORT_KEYS = {"postgres": ("postgres.port", lambda s: s.postgres.port),
             "s3": ("s3.port", lambda s: s.s3.port),
             "mlflow": ("mlflow.port", lambda s: s.mlflow.port),
             "prefect": ("prefect.port", lambda s: s.prefect.port),
             "serve": ("serve.port", lambda s: s.serve.port)}


# -- starting each service ---------------------------------------------------------------------
def _start_s3(settings: StackSettings, env: dict[str, str]) -> None:
    """moto's S3 server in memory (stack/s3_server.py), every request that changes something
    appended to s3/requests.jsonl and replayed at start: the buckets and objects survive a
    restart. The previous log is moved aside and replayed through the new server, which
    records it again (compacted) with whatever clients send meanwhile; it is deleted only once
    the replay finished (an interrupted replay is redone, with what was recorded since)."""
    import shutil
    import sys

    from synthloop.stack.s3_server import replay

    settings.s3_dir.mkdir(parents=True, exist_ok=True)
    recording = settings.s3_dir / "requests.jsonl"
    previous = settings.s3_dir / "requests.replaying.jsonl"
    if recording.is_file() and recording.stat().st_size:
        if previous.is_file():  # the last replay did not finish: keep its log first
            with open(previous, "ab") as out, open(recording, "rb") as src:
                shutil.copyfileobj(src, out)
            recording.unlink()
        else:
            recording.rename(previous)
    env = {**env, "MOTO_ENABLE_RECORDING": "true", "MOTO_RECORDER_FILEPATH": str(recording)}
    executable("moto_server", "pip install 'moto[server]'")  # a clear error when moto is missing
    cmd = [sys.executable, "-m", "synthloop.stack.s3_server", "-H", HOST, "-p",
           str(settings.s3.port)]
    spawn(_pid(settings, "s3"), cmd, env=env, cwd=settings.data_dir, log=_log(settings, "s3"))
    wait_until(lambda: _s3_healthy(settings), what="S3 (moto)", timeout_s=60,
               log=_log(settings, "s3"), pidfile=_pid(settings, "s3"))
    if previous.is_file():
        done, skipped = replay(settings.s3_endpoint, previous)
        with open(_log(settings, "s3"), "a") as log:
            log.write(f"synthloop: replayed {done} requests from {previous.name}"
                      + (f", skipped {skipped} unreadable or orphaned" if skipped else "") + "\n")
        previous.unlink()


def ensure_buckets(settings: StackSettings) -> list[str]:
    import boto3

    env = s3_env(settings)
    client = boto3.client("s3", endpoint_url=settings.s3_endpoint,
                          aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID",
                                                           env.get("AWS_ACCESS_KEY_ID")),
                          aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY",
                                                               env.get("AWS_SECRET_ACCESS_KEY")),
                          region_name=env["AWS_DEFAULT_REGION"])
    have = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    made = [b for b in settings.s3.buckets if b not in have]
    for bucket in made:
        client.create_bucket(Bucket=bucket)
    return made


def _start_mlflow(settings: StackSettings, env: dict[str, str]) -> None:
    cmd = [executable("mlflow", "pip install mlflow"), "server", "--host", HOST, "--port",
           str(settings.mlflow.port), "--workers", "1",
           "--backend-store-uri", settings.database_url("mlflow", "psycopg2"),
           "--artifacts-destination", f"s3://{settings.s3.artifacts_bucket}", "--serve-artifacts"]
    spawn(_pid(settings, "mlflow"), cmd, env=env, cwd=settings.data_dir,
          log=_log(settings, "mlflow"))


def _prefect(settings: StackSettings, env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([executable("prefect", "pip install prefect"), "--no-prompt", *args],
                          cwd=settings.project_dir, env={**env, "PWD": str(settings.project_dir)},
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    with open(_log(settings, "prefect-deploy"), "a") as out:
        out.write(f"\n--- prefect {' '.join(args)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        raise StackError(f"`prefect {' '.join(args)}` failed: "
                         f"{(proc.stderr or proc.stdout).strip()[-1500:]}")
    return proc.stdout


def _start_prefect(settings: StackSettings, env: dict[str, str]) -> None:
    settings.prefect_home.mkdir(parents=True, exist_ok=True)
    cmd = [executable("prefect", "pip install prefect"), "server", "start", "--host", HOST,
           "--port", str(settings.prefect.port)]
    spawn(_pid(settings, "prefect"), cmd, env=env, cwd=settings.data_dir,
          log=_log(settings, "prefect"))


def configure_prefect(settings: StackSettings, env: dict[str, str]) -> None:
    """Work pool, the one-slot cycle limit, and prefect.yaml's deployments (all idempotent)."""
    if not (settings.project_dir / "prefect.yaml").is_file():
        raise StackError(f"{settings.project_dir}/prefect.yaml not found: set project_dir in "
                         "the stack config")
    _prefect(settings, env, "work-pool", "create", settings.prefect.work_pool, "--type",
             "process", "--overwrite")
    ensure_cycle_limit(settings)
    ensure_zombie_automation(settings)
    _prefect(settings, env, "deploy", "--all")


def ensure_cycle_limit(settings: StackSettings) -> dict:
    """The global concurrency limit (1 slot) that al_cycle runs take on the stack's server."""
    from synthloop.flows_server import api_post

    name = settings.prefect.cycle_limit
    found = [c for c in api_post(settings.prefect_api_url, "/v2/concurrency_limits/filter", {})
             if c["name"] == name]
    if found:
        return found[0]
    return api_post(settings.prefect_api_url, "/v2/concurrency_limits/",
                    {"name": name, "limit": 1, "active": True})


def zombie_automation_body(settings: StackSettings) -> dict:
    """Prefect's "detect zombie flows" automation (docs.prefect.io/v3/advanced/
    detect-zombie-flows): after a flow run's heartbeat, expect another heartbeat or a final
    state within ``prefect.zombie_after_s``, else set the run Crashed. A worker host that dies
    (SIGKILL, power cut) otherwise leaves its flow run Running forever.

    Only runs of a deployment are watched (the heartbeat's related resources name it): those
    run on the stack's worker, whose env sets the heartbeat frequency. Any flow run sends
    heartbeats, at Prefect's default of every 180 s: a flow run started by hand against this
    server (PREFECT_API_URL set, no deployment) must not be taken for a zombie after 90 s."""
    p = settings.prefect
    return {
        "name": p.zombie_automation,
        "description": (f"Written by `synthloop stack up`: a deployment's flow run whose "
                        f"heartbeats (every "
                        f"{p.heartbeat_s} s) stop for {p.zombie_after_s} s is marked Crashed."),
        "enabled": True,
        "trigger": {
            "type": "event", "posture": "Proactive", "threshold": 1, "within": p.zombie_after_s,
            "match": {"prefect.resource.id": ["prefect.flow-run.*"]},
            "match_related": {"prefect.resource.role": "deployment"},
            "after": ["prefect.flow-run.heartbeat"],
            "expect": ["prefect.flow-run.heartbeat", "prefect.flow-run.Completed",
                       "prefect.flow-run.Failed", "prefect.flow-run.Cancelled",
                       "prefect.flow-run.Crashed"],
            "for_each": ["prefect.resource.id"]},
        "actions": [{"type": "change-flow-run-state", "state": "CRASHED",
                     "message": f"No heartbeat for {p.zombie_after_s} s: the process running "
                                "this flow run died (marked by the stack's zombie automation)."}],
    }


def ensure_zombie_automation(settings: StackSettings) -> str:
    """Create the zombie automation, or update it in place when it exists (idempotent: one
    automation of that name, whatever the number of `stack up`s). Returns its id."""
    from synthloop.flows_server import api_post

    body = zombie_automation_body(settings)
    found = [a for a in api_post(settings.prefect_api_url, "/automations/filter", {})
             if a["name"] == body["name"]]
    if not found:
        return api_post(settings.prefect_api_url, "/automations/", body)["id"]
    for extra in found[1:]:  # duplicates (two `up`s racing): keep one
        _api(settings.prefect_api_url, f"/automations/{extra['id']}", None, "DELETE")
    _api(settings.prefect_api_url, f"/automations/{found[0]['id']}", body, "PUT")
    return found[0]["id"]


def _api(api_url: str, path: str, body: dict | None, method: str) -> None:
    import json
    import urllib.request

    req = urllib.request.Request(f"{api_url}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30):
        pass


def _start_worker(settings: StackSettings, env: dict[str, str]) -> None:
    cmd = [executable("prefect", "pip install prefect"), "worker", "start", "--pool",
           settings.prefect.work_pool, "--type", "process"]
    spawn(_pid(settings, "worker"), cmd, env=env, cwd=settings.project_dir,
          log=_log(settings, "worker"))


def write_site_overlay(settings: StackSettings) -> Path:
    """The pipeline overlay for the stack: tracking and the registry go to its MLflow server."""
    settings.site_overlay.write_text(
        "# Written by `synthloop stack up`: pass with --overlay to use the stack's MLflow.\n"
        + yaml.safe_dump({"tracking": {"uri": settings.mlflow_url}}))
    return settings.site_overlay


def _start_serve(settings: StackSettings, env: dict[str, str]) -> None:
    if not settings.serve.pipeline.is_file():
        raise StackError(f"serve.pipeline {settings.serve.pipeline} not found")
    cmd = [executable("synthloop", "pip install -e ."), "serve", "--config",
           str(settings.serve.pipeline), "--overlay", str(write_site_overlay(settings)),
           "--host", HOST, "--port", str(settings.serve.port)]
    spawn(_pid(settings, "serve"), cmd, env=env, cwd=settings.project_dir,
          log=_log(settings, "serve"))


STARTERS = {"s3": _start_s3, "mlflow": _start_mlflow, "prefect": _start_prefect,
            "worker": _start_worker, "serve": _start_serve}
TIMEOUTS = {"s3": 60, "mlflow": 180, "prefect": 240, "worker": 120, "serve": 240}
