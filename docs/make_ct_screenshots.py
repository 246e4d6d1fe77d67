"""Screenshots for docs/continuous_training.md (headless Chromium, loopback servers only).

    .venv/bin/python docs/make_ct_screenshots.py prefect --config /tmp/ct.yaml

The MLflow screenshots (docs/images/mlflow-*.png) come from the browser test that checks them
(``SYNTHLOOP_DOCS_SCREENSHOTS=1 .venv/bin/pytest tests/e2e/test_mlflow_review_browser.py``) and
from docs/make_mlflow_curve_screenshot.py.

prefect: a Prefect server on 127.0.0.1 with prefect.yaml deployed, a worker, one emitted
         `synthloop.pool.grew` event; the deployments page and the triggered `al_cycle` run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"


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


def prefect_shots(config: Path) -> None:
    import tempfile

    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "tests"))  # the one free_port (tests/tests_support.py)
    from synthloop.flows_server import api_post, prefect_exe, start_server
    from tests_support import free_port

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
    ap.add_argument("what", choices=["prefect"])
    ap.add_argument("--config", type=Path, default=ROOT / "pipelines" / "demo.yaml")
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    prefect_shots(args.config)


if __name__ == "__main__":
    main()
