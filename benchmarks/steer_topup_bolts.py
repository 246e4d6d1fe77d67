"""Failures steer the renderer, measured on bolts: fine-tune cycles with failure-steered
top-ups vs uniform top-ups of the same size vs no top-up, per seed (issue 16, part 1).

Starts from the bolts workspace's M0_S (renders only, checkpoints/pretrain/checkpoint.pt); cycle
t's labelled set L_t is the photos its cycles 1..t picked (state/cycle_<t>/label.json, the DBAL
picks of that run: the same L_t in every arm, so the arms differ only by their top-ups), all
read only. Per seed and arm (none, uniform, failures), a chain of ``--cycles`` fine-tunes, each
from the arm's previous model:

1. the failures arm weighs the renderer by where ITS current model fails on the held-out
   renders (pretraining's slice; stages/steer.py's analysis: steering/failures.py +
   steering/weights.py, the pipeline's ``steer`` settings); the uniform arm uses no weights;
2. ``--topup`` renders with the pipeline's synthetic domain, a seed per (seed, cycle) shared by
   both top-up arms (stages/steer.py: topup_domain), rendered with Blender into
   ``--render-dir`` (resumable; the workspace's CAD cache copied);
3. fine-tune on L_t (+ the arm's top-up): ``--budget steps`` trains about ``--steps`` steps in
   every arm (renders take steps from the photos); ``--budget epochs`` trains the pipeline's
   finetune epochs over the arm's whole training set, as the product does (renders add steps);
   then COCO AP on the real validation photos. ``--arms none_matched`` adds the control for
   the extra steps: L_t only, trained for about as many steps as a top-up arm gets.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/steer_topup_bolts.py --seeds 1 2 3 \\
        --topup 32 --steps 48
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/steer_topup_bolts.py --seeds 1 --cycles 2 \\
        --budget epochs --topup 16 --out benchmarks/results/steer_topup_cycles_bolts_seed1.json

Writes the results JSON after every arm's cycle (wall and CPU seconds). ``--summarize FILE...``
writes the mean AP/AP50 per arm and cycle over the files' seeds (to ``--out``) and exits.
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


def labelled_sets(ws: Path, cycles: int) -> list[list]:
    """L_1..L_cycles: the image ids cycles 1..t of the workspace's run picked."""
    picked, sets = [], []
    for t in range(1, cycles + 1):
        path = ws / "state" / f"cycle_{t}" / "label.json"
        if not path.exists():
            raise SystemExit(f"{path}: missing; the workspace's run has fewer than {cycles} cycles")
        picked += [i for i in json.loads(path.read_text())["new"] if i not in picked]
        sets.append(list(picked))
    return sets


def summarize(paths: list[Path], out: Path) -> None:
    """Mean AP and AP50 per (arm, cycle) over the seeds of result files ``paths``."""
    rows = [row for path in paths for row in json.loads(path.read_text())["arms"]]
    cells = sorted({(r["arm"], r.get("cycle", 1)) for r in rows}, key=lambda c: (c[1], c[0]))
    summary = []
    for arm, cycle in cells:
        cell = [r for r in rows if r["arm"] == arm and r.get("cycle", 1) == cycle]
        summary.append({"arm": arm, "cycle": cycle, "seeds": sorted(r["seed"] for r in cell),
                        **{m: round(sum(r[m] for r in cell) / len(cell), 4)
                           for m in ("AP", "AP50", "AP_Bolt", "AP_Washer")}})
    out.write_text(json.dumps({"files": [p.name for p in paths], "mean_over_seeds": summary},
                              indent=1) + "\n")
    for c in summary:
        print(f"cycle {c['cycle']} {c['arm']:<13} seeds {c['seeds']}: AP {c['AP']} AP50 {c['AP50']}")
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, default=ROOT / "workspace" / "bolts")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--cycles", type=int, default=1, help="fine-tune cycles an arm (chained)")
    ap.add_argument("--topup", type=int, default=32, help="renders a top-up")
    ap.add_argument("--budget", choices=("steps", "epochs"), default="steps",
                    help="steps: about --steps steps in every arm; epochs: the pipeline's "
                         "finetune epochs over each arm's training set")
    ap.add_argument("--steps", type=int, default=48, help="fine-tune steps an arm (about)")
    ap.add_argument("--arms", nargs="+", default=["none", "uniform", "failures"],
                    choices=["none", "uniform", "failures", "none_matched"],
                    help="none_matched: no top-up, as many steps as a top-up arm (about)")
    ap.add_argument("--render-dir", type=Path, default=Path(tempfile.gettempdir()) / "steer_topups")
    ap.add_argument("--render-size", default=None, help="WxH, smoke runs only")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--summarize", type=Path, nargs="+", default=None,
                    help="result files to average per arm and cycle (written to --out)")
    args = ap.parse_args()
    if args.summarize:
        return summarize(args.summarize, args.out)
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
    labelled = CocoDataset.load(data / "labeled" / "annotations.json")
    sets = [labelled.subset(ids) for ids in labelled_sets(args.workspace, args.cycles)]
    ckpt = args.workspace / "checkpoints" / "pretrain" / "checkpoint.pt"
    weights, analysis = steered_weights(cfg, load_checkpoint(ckpt, device=torch.device("cpu")), syn)
    record = {"what": f"{args.cycles} chained fine-tune cycle(s) from M0_S: failure-steered vs "
                      "uniform vs no top-up",
              "cycles": args.cycles, "budget": args.budget,
              "labels": [len(s.images) for s in sets], "val_images": len(val.images),
              "topup": args.topup,
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
        for arm in args.arms:
            model = load_checkpoint(ckpt, device=torch.device("cpu"))
            for cycle, lab in enumerate(sets, start=1):
                t, c = time.perf_counter(), time.process_time()
                train_ds, renders, arm_weights = lab, 0, {}
                if arm == "failures":  # cycle 1: M0_S's weights (above); later: this arm's model's
                    arm_weights = weights if cycle == 1 else steered_weights(cfg, model, syn)[0]
                if arm in ("uniform", "failures"):
                    topup_seed = seed if args.cycles == 1 else 100 * seed + cycle
                    domain = steer.topup_domain(cfg, topup_seed, arm_weights)
                    name = f"{arm}-seed{seed}" + ("" if args.cycles == 1 else f"-cycle{cycle}")
                    topup = render_topup(cfg, args.workspace, args.render_dir / name, domain)
                    train_ds, renders = union_dataset(lab, topup), len(topup.images)
                render_s = time.perf_counter() - t
                batches = math.ceil(len(train_ds.images) / cfg.finetune.batch_size)
                if args.budget == "steps":
                    steps = args.steps
                elif arm == "none_matched":  # the steps a top-up arm's epochs take
                    steps = cfg.finetune.epochs * math.ceil(
                        (len(lab.images) + args.topup) / cfg.finetune.batch_size)
                else:  # the pipeline's epochs over this arm's training set
                    steps = None
                epochs = max(1, math.ceil(steps / batches)) if steps else cfg.finetune.epochs
                tcfg = cfg.finetune.model_copy(update={"epochs": epochs, "max_minutes": None,
                                                       "seed": seed})
                with tempfile.TemporaryDirectory() as tmp:
                    result = train(model, train_ds, cfg=tcfg, val_ds=None,
                                   checkpoint_dir=Path(tmp), progress=False)
                metrics = evaluate(model, val, batch_size=2, progress=False)
                row = {"seed": seed, "arm": arm, "cycle": cycle, "labels": len(lab.images),
                       "renders": renders, "images": len(train_ds.images), "steps": result.steps,
                       **{k: round(v, 4) for k, v in metrics.items()},
                       "weights_range": ([round(min(min(w) for w in arm_weights.values()), 4),
                                          round(max(max(w) for w in arm_weights.values()), 4)]
                                         if arm_weights else None),
                       "render_wall_s": round(render_s, 1),
                       "wall_s": round(time.perf_counter() - t, 1),
                       "cpu_s": round(time.process_time() - c, 1)}
                record["arms"].append(row)
                print(f"seed {seed} {arm:<8} cycle {cycle}: {renders:>3} renders + "
                      f"{len(lab.images)} photos, {result.steps} steps -> AP {metrics['AP']:.3f} "
                      f"AP50 {metrics['AP50']:.3f}", flush=True)
                save()
    print(f"wrote {args.out} (wall {record['wall_s']} s, CPU {record['cpu_s']} s)")


if __name__ == "__main__":
    main()
