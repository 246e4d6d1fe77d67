"""Screenshots for docs/continuous_training.md (headless Chromium, loopback servers only).

    .venv/bin/python docs/make_ct_screenshots.py mlflow  --workspace /tmp/ct-ws
    .venv/bin/python docs/make_ct_screenshots.py prefect --config /tmp/ct.yaml

mlflow:  `mlflow ui` on 127.0.0.1 over the workspace's store; the two newest cycle runs
         compared, and the newest gate run's artifacts.
prefect: a Prefect server on 127.0.0.1 with prefect.yaml deployed, a worker, one emitted
         `synthloop.pool.grew` event; the deployments page and the triggered `al_cycle` run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shoot(url: str, out: Path, *, size=(1600, 1000), budget_ms: int = 20000,
          keep_height: int | None = None) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", f"--window-size={size[0]},{size[1]}",
                    f"--virtual-time-budget={budget_ms}", f"--screenshot={out}", url],
                   check=True, capture_output=True, timeout=180)
    if keep_height:  # a tall window renders the whole page; keep the part with content
        from PIL import Image

        Image.open(out).crop((0, 0, size[0], keep_height)).save(out, optimize=True)
    print("wrote", out)
    return out


def wait_http(url: str, timeout_s: float = 180) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


def mlflow_shots(workspace: Path) -> None:
    from mlflow import MlflowClient

    db = f"sqlite:///{workspace.resolve() / 'mlruns.db'}"
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "ui",
                             "--backend-store-uri", db, "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/health")
        client = MlflowClient(tracking_uri=db)
        exp = client.search_experiments()[0] if len(client.search_experiments()) == 1 else \
            next(e for e in client.search_experiments() if e.name != "Default")
        runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
        cycles = [r for r in runs if (r.info.run_name or "").startswith("cycle-")][:2]
        gates = [r for r in runs if (r.info.run_name or "").startswith("gate-cycle-")]
        ids = json.dumps([r.info.run_id for r in reversed(cycles)])
        q = urllib.parse.urlencode({"runs": ids, "experiments": json.dumps([exp.experiment_id])})
        shoot(f"{base}/#/compare-runs?{q}", OUT / "ct-mlflow-compare-cycles.png", size=(1600, 2600),
              keep_height=1830)
        if gates:
            g = gates[0]
            shoot(f"{base}/#/experiments/{exp.experiment_id}/runs/{g.info.run_id}/artifacts/"
                  "gate_report.png", OUT / "ct-mlflow-gate-run.png", size=(1600, 1000))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def prefect_shots(config: Path) -> None:
    import tempfile

    sys.path.insert(0, str(ROOT / "src"))
    from synthloop.flows_server import api_post, prefect_exe, start_server

    with tempfile.TemporaryDirectory() as tmp:
        srv = start_server(ROOT, port=free_port(), home=Path(tmp) / "home", timeout_s=240)
        try:
            srv.create_pool()
            srv.deploy_all()
            srv.start_worker()
            ui = srv.api_url[:-len("/api")]
            payload = {"config": str(config.resolve()), "trigger": "pool-grew", "pipeline": "demo"}
            subprocess.run([prefect_exe(), "event", "emit", "synthloop.pool.grew",
                            "--resource-id", "synthloop.pipeline.demo", "--payload",
                            json.dumps(payload)], env=srv.env, check=True, capture_output=True)
            dep = next(d for d in api_post(srv.api_url, "/deployments/filter", {})
                       if d["name"] == "al-cycle")
            run, t0 = None, time.monotonic()
            while time.monotonic() - t0 < 900:
                runs = api_post(srv.api_url, "/flow_runs/filter",
                                {"flow_runs": {"deployment_id": {"any_": [dep["id"]]}}})
                run = runs[0] if runs else None
                if run and run["state_type"] in ("COMPLETED", "FAILED", "CRASHED"):
                    break
                time.sleep(5)
            shoot(f"{ui}/deployments", OUT / "ct-prefect-deployments.png")
            if run:
                print("al_cycle run:", run["name"], run["state_type"])
                shoot(f"{ui}/runs/flow-run/{run['id']}", OUT / "ct-prefect-triggered-run.png")
        finally:
            srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["mlflow", "prefect"])
    ap.add_argument("--workspace", type=Path, default=ROOT / "workspace" / "demo")
    ap.add_argument("--config", type=Path, default=ROOT / "pipelines" / "demo.yaml")
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    mlflow_shots(args.workspace) if args.what == "mlflow" else prefect_shots(args.config)


if __name__ == "__main__":
    main()
