"""Record a finished demo run of a pipeline as a results file (docs/results/<name>_demo.json).

Reads the workspace's stage records (no model is run): the pretrain stage's real-validation
monitor (when ``pretrain.monitor_val`` was on), M0 and every cycle's metrics, labels and gate
decision, and the training steps against the plan. Prints the table docs/bolts.md shows.

    .venv/bin/synthloop demo --config pipelines/bolts.yaml --set pretrain.monitor_val=true
    .venv/bin/python benchmarks/record_demo.py --config pipelines/bolts.yaml --wall-min 41.3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from synthloop.config import load_config  # noqa: E402
from synthloop.stages.pipeline import finished_cycle  # noqa: E402
from synthloop.stages.workspace import Workspace, read_record  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "pipelines" / "bolts.yaml")
    ap.add_argument("--wall-min", type=float, default=None, help="the demo's measured wall time")
    ap.add_argument("--cpu-min", type=float, default=None, help="the demo's measured CPU time")
    ap.add_argument("--note", default="", help="conditions of the run (machine load, ...)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    cfg = load_config(args.config)
    ws = Workspace.of(cfg)
    pre = read_record(ws.root / "state" / "pretrain.json")
    if not pre:
        raise SystemExit(f"{ws.root}: no finished pretrain stage; run the demo first")
    monitor_path = ws.checkpoint_dir("pretrain") / "monitor.json"
    monitor = json.loads(monitor_path.read_text()) if monitor_path.exists() else []
    for row in monitor:  # minutes, as the docs print them
        row["train_cpu_min"] = round(row["train_cpu_seconds"] / 60, 2)
    gate0 = read_record(ws.cycle_dir(0) / "gate.json") or {}
    rows = [{"cycle": 0, "labels": 0, "new": 0, **_metrics(pre["metrics"]),
             "version": str(pre["version"]), "promoted": bool(gate0.get("promote")),
             "reason": gate0.get("reason", "")}]
    for t in range(1, cfg.active.cycles + 1):
        done = finished_cycle(cfg, t)
        if done is None:
            break
        _, row = done
        rows.append({"cycle": t, "labels": row.labels_total, "new": row.labels_new,
                     **_metrics(row.metrics), "version": row.model_version,
                     "promoted": row.promoted, "reason": row.reason})
    record = {"pipeline": cfg.name, "wall_min": args.wall_min, "cpu_min": args.cpu_min,
              "note": args.note, "pretrain_monitor": monitor, "cycles": rows}
    out = args.out or ROOT / "docs" / "results" / f"{cfg.name}_demo.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print("| cycle | labels | AP | AP50 | AP Bolt | AP Washer | steps (planned) | promoted |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['cycle']} | {r['labels']} | {r['AP']:.3f} | {r['AP50']:.3f} | "
              f"{r.get('AP_Bolt', float('nan')):.3f} | {r.get('AP_Washer', float('nan')):.3f} | "
              f"{r.get('train_steps', 0):.0f} ({r.get('train_planned_steps', 0):.0f}) | "
              f"{'yes' if r['promoted'] else 'no'} |")
    print(f"wrote {out}")


def _metrics(metrics: dict) -> dict:
    return {k: round(float(v), 4) for k, v in metrics.items()
            if k in ("AP", "AP50", "AP75") or k.startswith(("AP_", "train_"))}


if __name__ == "__main__":
    main()
