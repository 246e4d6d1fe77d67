"""What the cycle report (stages/cycle_report.py) costs a cycle, on the bolts workspace.

    .venv/bin/python benchmarks/cycle_report_cost.py [--workspace workspace/bolts] [--screenshot]

The finished workspace is COPIED (without checkpoints, DVC remote and experiment folders; its
MLflow store re-pointed at the copy) and each finished cycle's report is made in order, as
the end of each cycle makes it: cycle 1's also bootstraps M0's AP/AP50 interval, every later
cycle one model (its own), the earlier ones come from their report.json. Wall and CPU seconds
(time.process_time) per cycle, the page's size and the cycle run's own wall time go to
benchmarks/results/cycle_report_cost.json. ``--screenshot``: headless Chromium
(tests/people_support.py) shoots the last cycle's page to docs/images/cycle-report-bolts.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
OUT = ROOT / "benchmarks" / "results" / "cycle_report_cost.json"
SHOT = ROOT / "docs" / "images" / "cycle-report-bolts.png"
SKIP = ("checkpoints", "dvc-remote", "experiments", "cycle.lock")


def copy_workspace(src: Path, dst: Path) -> None:
    """Copy what the report reads and re-point every path in the MLflow store at the copy."""
    shutil.copytree(src, dst, symlinks=True, ignore=lambda d, names: [
        n for n in names if Path(d) == src and n in SKIP])
    with sqlite3.connect(dst / "mlruns.db") as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
            for col in db.execute(f"PRAGMA table_info('{table}')").fetchall():
                if "CHAR" in col[2].upper() or "TEXT" in col[2].upper():
                    for a, b in ((src.as_uri(), dst.as_uri()), (str(src), str(dst))):
                        db.execute(f'UPDATE "{table}" SET "{col[1]}" = '
                                   f'replace("{col[1]}", ?, ?)', (a, b))


def screenshot(page: Path, out: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from people_support import Chromium

    with Chromium(size=(1100, 2900)) as browser:
        browser.open(page.as_uri(), wait_for=["Gate decision and evidence"])
        broken = browser.evaluate("Array.from(document.images)"
                                  ".filter(i => !(i.naturalWidth > 0)).length")
        if broken:
            raise SystemExit(f"{broken} images of {page} did not decode")
        browser.screenshot(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, default=ROOT / "workspace" / "bolts")
    ap.add_argument("--config", type=Path, default=ROOT / "pipelines" / "bolts.yaml")
    ap.add_argument("--screenshot", action="store_true", help=f"write {SHOT.relative_to(ROOT)}")
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    from mlflow import MlflowClient

    from synthloop.config import load_config
    from synthloop.stages import cycle_report
    from synthloop.stages.workspace import Workspace, read_record

    src = args.workspace.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / src.name
        copy_workspace(src, dst)
        cfg = load_config(args.config, overrides=[f"workspace={dst}"])
        ws, rows, t = Workspace.of(cfg), [], 1
        while (ws.cycle_dir(t) / "gate.json").exists():
            run_id = read_record(ws.cycle_dir(t) / "run.json")["run_id"]
            info = MlflowClient(tracking_uri=cfg.tracking_uri).get_run(run_id).info
            done = cycle_report.run(cfg, cycle=t, parent_run_id=run_id)
            if "error" in done:
                raise SystemExit(f"cycle {t}: {done['error']}")
            rows.append({"cycle": t, "seconds": done["seconds"],
                         "cpu_seconds": done["cpu_seconds"],
                         "models_bootstrapped": 2 if t == 1 else 1,
                         "html_bytes": Path(done["path"]).stat().st_size,
                         "cycle_run_seconds": (info.end_time - info.start_time) / 1000.0})
            t += 1
        if args.screenshot and rows:
            screenshot(ws.cycle_dir(rows[-1]["cycle"]) / cycle_report.REPORT, SHOT)
        first = read_record(ws.cycle_dir(1) / "candidate.json")
    g = cfg.gate
    where = src.relative_to(ROOT) if src.is_relative_to(ROOT) else src
    result = {"workspace": str(where), "pipeline": cfg.name,
              "val_images": first["eval"]["num_images"] if first else None,
              "bootstrap_resamples": g.bootstrap_resamples, "confidence": g.confidence,
              "cycles": rows,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}}
    print(f"{'cycle':>5}  {'wall s':>7}  {'cpu s':>7}  {'models':>6}  {'KiB':>6}")
    for r in rows:
        print(f"{r['cycle']:>5}  {r['seconds']:>7.2f}  {r['cpu_seconds']:>7.2f}  "
              f"{r['models_bootstrapped']:>6}  {r['html_bytes'] / 1024:>6.0f}")
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
