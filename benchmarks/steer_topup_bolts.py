"""Failures steer the renderer, measured on bolts: one fine-tune cycle with a failure-steered
top-up vs a uniform top-up of the same size vs no top-up, per seed (issue 16, part 1).

Starts from the bolts workspace's M0_S (renders only, checkpoints/pretrain/checkpoint.pt) with
cycle 1's labelled photos as L (the DBAL picks of state/cycle_1/label.json), all read only:

1. M0_S's failures on the held-out renders (pretraining's slice) give the steered weights
   (stages/steer.py's analysis: steering/failures.py + steering/weights.py, the pipeline's
   ``steer`` settings);
2. per seed, two top-ups of ``--topup`` renders with the pipeline's synthetic domain and the
   same seed (stages/steer.py: topup_domain), one with those weights, one without (uniform),
   rendered with Blender into ``--render-dir`` (resumable; the workspace's CAD cache copied);
3. per seed and arm (none, uniform, failures), fine-tune M0_S on L (+ the arm's top-up) for
   about ``--steps`` steps with the pipeline's finetune recipe (seed = the seed), then COCO AP
   on the real validation photos.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/steer_topup_bolts.py --seeds 1 2 3 \\
        --topup 32 --steps 48

Writes benchmarks/results/steer_topup_bolts.json after every arm (wall and CPU seconds).
``--render-size WxH`` shrinks the renders: for a smoke run only (other pixels, other domain).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from synthloop.config import load_config  # noqa: E402
from synthloop.data.coco import CocoDataset  # noqa: E402
from synthloop.detection import (evaluate, load_checkpoint,  # noqa: E402
                                 predict_with_probs_and_features, train)
from synthloop.experiments.folds import union_dataset  # noqa: E402
from synthloop.stages import steer  # noqa: E402
from synthloop.stages.pretrain import HOLDOUT_FRACTION, split_holdout  # noqa: E402
from synthloop.steering.failures import analyse_renders  # noqa: E402
from synthloop.steering.weights import weights_from_renders  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "steer_topup_bolts.json"


def steered_weights(cfg, net, syn: CocoDataset) -> tuple[dict, dict]:
    s = cfg.steer
    holdout = split_holdout(syn, fraction=HOLDOUT_FRACTION, seed=cfg.pretrain.seed)[1]
    preds = predict_with_probs_and_features(net, holdout, batch_size=2, progress=False)
    renders = analyse_renders(holdout, preds, cfg.synthetic, variables=s.variables, bins=s.bins,
                              iou=s.iou, min_score=s.min_score)
    return weights_from_renders(renders, floor=s.floor, ceiling=s.ceiling, prior=s.prior), renders


def render_topup(cfg, ws: Path, out: Path, domain) -> CocoDataset:
    from synthloop.synthesis.meshes import resolve_cad_files, resolve_cad_parts
    from synthloop.synthesis.render import render_domain

    cad = out.parent / "cad"
    if not cad.exists():  # the workspace stays untouched: its CAD cache, copied
        shutil.copytree(ws / "cad", cad)
    if not (out / "annotations.json").exists():
        parts = resolve_cad_files(resolve_cad_parts(cfg.parts, cad), cad / "import")
        render_domain(domain, parts, cfg.class_names, out, render_cfg=cfg.render, progress=False)
    return CocoDataset.load(out / "annotations.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, default=ROOT / "workspace" / "bolts")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--topup", type=int, default=32, help="renders a top-up")
    ap.add_argument("--steps", type=int, default=48, help="fine-tune steps an arm (about)")
    ap.add_argument("--render-dir", type=Path, default=Path(tempfile.gettempdir()) / "steer_topups")
    ap.add_argument("--render-size", default=None, help="WxH, smoke runs only")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    torch.set_num_threads(1)
    overrides = ["steer.enabled=true", f"steer.topup_images={args.topup}",
                 "finetune.num_threads=1"]
    if args.render_size:
        w, h = args.render_size.lower().split("x")
        overrides += [f"synthetic.width={int(w)}", f"synthetic.height={int(h)}"]
    cfg = load_config(ROOT / "pipelines" / "bolts.yaml", overrides=overrides)
    data = args.workspace / "data"
    syn = CocoDataset.load(data / "synthetic" / "annotations.json")
    val = CocoDataset.load(data / "val" / "annotations.json")
    picks = json.loads((args.workspace / "state" / "cycle_1" / "label.json").read_text())["new"]
    lab = CocoDataset.load(data / "labeled" / "annotations.json").subset(picks)
    ckpt = args.workspace / "checkpoints" / "pretrain" / "checkpoint.pt"
    net = load_checkpoint(ckpt, device=torch.device("cpu"))
    weights, analysis = steered_weights(cfg, net, syn)
    record = {"what": "one fine-tune cycle from M0_S: failure-steered vs uniform vs no top-up",
              "labels": len(lab.images), "val_images": len(val.images), "topup": args.topup,
              "render_size": args.render_size or f"{cfg.synthetic.width}x{cfg.synthetic.height}",
              "steer": cfg.steer.model_dump(mode="json"), "weights": weights,
              "holdout_failures": analysis, "finetune": cfg.finetune.model_dump(mode="json"),
              "arms": []}

    def save() -> None:
        record.update(wall_s=round(time.perf_counter() - wall0, 1),
                      cpu_s=round(time.process_time() - cpu0, 1),
                      machine={"cpus": os.cpu_count(), "torch_threads": 1,
                               "load_avg_1min": round(os.getloadavg()[0], 2)})
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1, default=float) + "\n")

    save()
    for seed in args.seeds:
        for arm in ("none", "uniform", "failures"):
            t, c = time.perf_counter(), time.process_time()
            train_ds, renders = lab, 0
            if arm != "none":
                domain = steer.topup_domain(cfg, seed, weights if arm == "failures" else {})
                topup = render_topup(cfg, args.workspace, args.render_dir / f"{arm}-seed{seed}",
                                     domain)
                train_ds, renders = union_dataset(lab, topup), len(topup.images)
            render_s = time.perf_counter() - t
            batches = math.ceil(len(train_ds.images) / cfg.finetune.batch_size)
            tcfg = cfg.finetune.model_copy(update={
                "epochs": max(1, math.ceil(args.steps / batches)), "max_minutes": None,
                "seed": seed})
            model = load_checkpoint(ckpt, device=torch.device("cpu"))
            with tempfile.TemporaryDirectory() as tmp:
                result = train(model, train_ds, cfg=tcfg, val_ds=None, checkpoint_dir=Path(tmp),
                               progress=False)
            metrics = evaluate(model, val, batch_size=2, progress=False)
            row = {"seed": seed, "arm": arm, "renders": renders, "images": len(train_ds.images),
                   "steps": result.steps, **{k: round(v, 4) for k, v in metrics.items()},
                   "render_wall_s": round(render_s, 1),
                   "wall_s": round(time.perf_counter() - t, 1),
                   "cpu_s": round(time.process_time() - c, 1)}
            record["arms"].append(row)
            print(f"seed {seed} {arm:<8} {renders:>3} renders + {len(lab.images)} photos, "
                  f"{result.steps} steps -> AP {metrics['AP']:.3f} AP50 {metrics['AP50']:.3f}",
                  flush=True)
            save()
    print(f"wrote {args.out} (wall {record['wall_s']} s, CPU {record['cpu_s']} s)")


if __name__ == "__main__":
    main()
