"""Start a local Prefect server, the process work pool, the deployments of prefect.yaml and a
worker, as subprocesses of the ``prefect`` command line (the library never imports prefect).

``synthloop serve-flows`` uses this; so do the slow deployment test and the UI screenshots.
Loopback only: the server binds 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

POOL = "synthloop-process"


def prefect_exe() -> str:
    """The ``prefect`` script next to this interpreter (the venv's), else the one on PATH."""
    local = Path(sys.executable).with_name("prefect")
    found = str(local) if local.exists() else shutil.which("prefect")
    if not found:
        raise FileNotFoundError("the `prefect` command is not installed (pip install prefect)")
    return found


def prefect_env(api_url: str, home: Path | None = None, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": os.environ.get("PREFECT_UI_ENABLED", "true"), **extra}
    if home is not None:
        env["PREFECT_HOME"] = str(home)
    return env


def wait_healthy(api_url: str, *, timeout_s: float = 120.0, proc: subprocess.Popen | None = None
                 ) -> float:
    """Seconds until ``<api_url>/health`` answers; raises TimeoutError (or if ``proc`` died)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return time.monotonic() - t0
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"no healthy Prefect server at {api_url} after {timeout_s:.0f} s")


@dataclass
class FlowsServer:
    """Handles to the started processes; ``stop()`` ends them (worker first)."""

    api_url: str
    project_dir: Path
    env: dict[str, str]
    processes: list[subprocess.Popen] = field(default_factory=list)

    def run(self, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([prefect_exe(), "--no-prompt", *args], cwd=self.project_dir,
                              env=self.env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"`prefect {' '.join(args)}` failed: "
                               f"{(proc.stderr or proc.stdout)[-3000:]}")
        return proc

    def create_pool(self, pool: str = POOL) -> None:
        self.run("work-pool", "create", pool, "--type", "process", "--overwrite")

    def deploy_all(self) -> str:
        env_pwd = {**self.env, "PWD": str(self.project_dir)}
        proc = subprocess.run([prefect_exe(), "--no-prompt", "deploy", "--all"],
                              cwd=self.project_dir, env=env_pwd, capture_output=True, text=True,
                              timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"`prefect deploy --all` failed: {(proc.stderr or proc.stdout)[-3000:]}")
        return proc.stdout

    def start_worker(self, pool: str = POOL, *, log_path: Path | None = None) -> subprocess.Popen:
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        proc = subprocess.Popen([prefect_exe(), "worker", "start", "--pool", pool,
                                 "--type", "process"], cwd=self.project_dir, env=self.env,
                                stdout=out, stderr=subprocess.STDOUT)
        self.processes.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.processes.clear()


def start_server(project_dir: Path, *, port: int = 4200, home: Path | None = None,
                 log_path: Path | None = None, timeout_s: float = 120.0) -> FlowsServer:
    """``prefect server start`` on 127.0.0.1:``port`` (SQLite under PREFECT_HOME); waits healthy."""
    api_url = f"http://127.0.0.1:{port}/api"
    env = prefect_env(api_url, home)
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen([prefect_exe(), "server", "start", "--host", "127.0.0.1", "--port",
                             str(port)], cwd=project_dir, env=env, stdout=out,
                            stderr=subprocess.STDOUT)
    server = FlowsServer(api_url=api_url, project_dir=Path(project_dir), env=env, processes=[proc])
    try:
        wait_healthy(api_url, timeout_s=timeout_s, proc=proc)
    except BaseException:
        server.stop()
        raise
    return server


def api_post(api_url: str, path: str, body: dict) -> object:
    """POST JSON to the Prefect REST API (used to read flow runs without importing prefect)."""
    req = urllib.request.Request(f"{api_url}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())
