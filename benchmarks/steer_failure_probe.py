"""Failures steer the renderer, probed on bolts (issue 16, part 1): what the failure analysis
sees and which weights it gives, for models a finished bolts run left behind. Read-only on the
workspace: val detections from its gate cache (state/val_predictions, the registered
models' own), held-out renders (pretraining's slice) predicted here from
checkpoints/<name>/checkpoint.pt (the logged model), nothing written under the workspace.

NOT the issue's measurement (AP after N cycles, steered vs uniform vs no top-up, >= 3 seeds):
that needs the fine-tune to take the top-up (stages/steer.py: with_topup) and renders at
960x540, far beyond a shared 2-core CPU. The command for it is in docs (not recorded).

    .venv/bin/python benchmarks/steer_failure_probe.py [--workspace workspace/bolts]
        [--models pretrain cycle_3] [--out benchmarks/results/steer_failure_probe_bolts.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def run_ids(ws: Path) -> dict[str, str]:
    """Checkpoint folder name -> the MLflow run that logged it (the stage records)."""
    out = {"pretrain": json.loads((ws / "state" / "pretrain.json").read_text())["run_id"]}
    for rec in sorted(ws.glob("state/cycle_*/candidate.json")):
        cycle = rec.parent.name
        if cycle != "cycle_0":
            out[cycle] = json.loads(rec.read_text())["model"]["run_id"]
    return out


def probe(cfg, ws: Path, name: str, run_id: str, threads: int) -> dict:
    import torch

    from synthloop.data.coco import CocoDataset
    from synthloop.detection import load_checkpoint, predict_with_probs_and_features
    from synthloop.gating.predictions import load_predictions, predictions_path
    from synthloop.stages.pretrain import HOLDOUT_FRACTION, split_holdout
    from synthloop.steering.failures import analyse_photos, analyse_renders
    from synthloop.steering.weights import weights_from_renders
    from synthloop.versioning.dvc_repo import dataset_md5

    torch.set_num_threads(threads)
    s = cfg.steer
    t0, c0 = time.perf_counter(), time.process_time()
    val = CocoDataset.load(ws / "data" / "val" / "annotations.json")
    cached = predictions_path(ws, run_id, dataset_md5(ws / "data" / "val"))
    photos = analyse_photos(val, load_predictions(cached), iou=s.iou, min_score=s.min_score)
    full = CocoDataset.load(ws / "data" / "synthetic" / "annotations.json")
    holdout = split_holdout(full, fraction=HOLDOUT_FRACTION, seed=cfg.pretrain.seed)[1]
    t1, c1 = time.perf_counter(), time.process_time()
    model = load_checkpoint(ws / "checkpoints" / name / "checkpoint.pt", device="cpu")
    preds = predict_with_probs_and_features(model, holdout, batch_size=2, progress=False)
    t2, c2 = time.perf_counter(), time.process_time()
    renders = analyse_renders(holdout, preds, cfg.synthetic, variables=s.variables, bins=s.bins,
                              iou=s.iou, min_score=s.min_score)
    weights = weights_from_renders(renders, floor=s.floor, ceiling=s.ceiling, prior=s.prior)
    t3, c3 = time.perf_counter(), time.process_time()
    return {"model": name, "run_id": run_id, "val_images": len(val.images),
            "holdout_images": len(holdout.images), "photos": photos, "renders": renders,
            "weights": weights,
            "seconds": {"photo_analysis_wall": round(t1 - t0, 2),
                        "photo_analysis_cpu": round(c1 - c0, 2),
                        "holdout_predict_wall": round(t2 - t1, 2),
                        "holdout_predict_cpu": round(c2 - c1, 2),
                        "render_analysis_and_weights_wall": round(t3 - t2, 3),
                        "render_analysis_and_weights_cpu": round(c3 - c2, 3)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "pipelines" / "bolts.yaml")
    ap.add_argument("--workspace", type=Path, default=ROOT / "workspace" / "bolts")
    ap.add_argument("--models", nargs="+", default=["pretrain", "cycle_3"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "steer_failure_probe_bolts.json")
    args = ap.parse_args()
    from synthloop.config import load_config

    cfg = load_config(args.config)
    ids = run_ids(args.workspace)
    unknown = [m for m in args.models if m not in ids]
    if unknown:
        sys.exit(f"error: no run recorded for {unknown}; known: {sorted(ids)}")
    rows = [probe(cfg, args.workspace, m, ids[m], args.threads) for m in args.models]
    out = {"what": "failure analysis and steered weights of finished bolts models (read-only "
                   "probe); NOT the AP comparison of steered vs uniform vs no top-up",
           "config": str(args.config.relative_to(ROOT)), "steer": cfg.steer.model_dump(),
           "machine": {"cpus": os.cpu_count(), "torch_threads": args.threads,
                       "python": platform.python_version()},
           "models": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{'model':>9} {'val miss':>8} {'val false':>9} {'holdout fail':>12}  weights")
    for r in rows:
        print(f"{r['model']:>9} {r['photos']['totals']['miss_rate']!s:>8} "
              f"{r['photos']['totals']['false_rate']!s:>9} "
              f"{r['renders']['totals']['failure_rate']!s:>12}  {json.dumps(r['weights'])}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
