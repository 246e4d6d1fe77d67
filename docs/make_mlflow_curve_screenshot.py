"""docs/images/mlflow-learning-curve-bolts.png: the bolts demo's learning curve in `mlflow ui`.

    cp -a workspace/bolts /tmp/bolts-copy      # a COPY: this script writes to its store
    sqlite3 /tmp/bolts-copy/mlruns.db "update experiments set artifact_location = \
        'file:///tmp/bolts-copy/mlartifacts' where name = 'bolts'"
    .venv/bin/python docs/make_mlflow_curve_screenshot.py --workspace /tmp/bolts-copy

``run_pipeline`` on the finished workspace retrains nothing: it reopens (or creates) the
workspace's pipeline run and puts every finished cycle on its curve (val AP by cycle, the gate
decisions table) from the cycles' records. Then `mlflow server` on 127.0.0.1 and headless
Chromium (tests/people_support.py's DevTools driver) shoot that run's Model metrics tab.
The other MLflow screenshots come from tests/e2e/test_mlflow_review_browser.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images" / "mlflow-learning-curve-bolts.png"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, required=True, help="a copy of a finished workspace")
    ap.add_argument("--config", type=Path, default=ROOT / "pipelines" / "bolts.yaml")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from people_support import Chromium
    from review_support import start_mlflow_ui
    from tests_support import free_port

    from synthloop import tracking
    from synthloop.config import load_config
    from synthloop.stages import learning_curve
    from synthloop.stages.pipeline import run_pipeline
    from synthloop.stages.workspace import read_record

    cfg = load_config(args.config, overrides=[f"workspace={args.workspace}"])
    rows = run_pipeline(cfg, progress=False)
    print(f"{len(rows)} cycles on the curve")
    run_id = read_record(cfg.workspace / "state" / learning_curve.RECORD)["run_id"]
    exp_id = tracking.runs_url(cfg).split("/experiments/")[1].split("/")[0]
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_mlflow_ui(cfg.tracking_uri, port, Path(tmp) / "mlflow.log")
        try:
            with Chromium(size=(1600, 900)) as browser:
                browser.open(f"http://127.0.0.1:{port}/#/experiments/{exp_id}/runs/{run_id}/"
                             "model-metrics?workflowType=machine_learning",
                             wait_for=["val_AP50", "labels_used", "Step"], settle_s=3)
                browser.click('[data-component-id="mlflow.assistant.chat_panel.close"]')
                browser.open_more(wait_for=["val_AP"], settle_s=2)
                print("wrote", browser.screenshot(OUT))
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
