"""The sim-to-real gap on bolts, and fine-tuning with renders mixed in: gap rule vs fixed mixes.

One cycle at small scale, few seeds (``--seeds``). Starts from the bolts workspace's M0_S (renders only,
checkpoints/pretrain/checkpoint.pt) with cycle 1's labelled photos as L (the 10 DBAL picks of
state/cycle_1/label.json), all read only:

1. the gap in M0_S's features (stages/sim_to_real.py's sampling and features: ``--images``
   renders vs as many real photos, L first then unlabelled pool images; never val), image level
   and per class on the ground-truth boxes;
2. per arm (synthetic share 0, 0.25, 0.5 and the gap rule's share with the pipeline's
   ``finetune_mix`` settings, default ones unless the pipeline sets them), fine-tune M0_S on L
   plus the arm's renders (stages/finetune.py: mixed_training_set, seeded) for the same number
   of steps (~``--steps``: epochs = ceil(steps / batches an epoch)) with the pipeline's
   finetune recipe on one thread, then COCO AP on the 15 real validation photos. An arm with
   the same renders and seed as an earlier one is not retrained (same set, same seed: same
   model; CPU training is deterministic).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sim_to_real_mix_bolts.py --seeds 0 1

Writes benchmarks/results/sim_to_real_mix_bolts.json after every arm (wall and CPU seconds per
invocation); ``--resume`` keeps its gap and finished arms and runs the missing ones.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from synthloop.config import load_config  # noqa: E402
from synthloop.data.coco import CocoDataset  # noqa: E402
from synthloop.detection import evaluate, load_checkpoint, train  # noqa: E402
from synthloop.monitoring.sim_to_real import measure_gap, synthetic_share  # noqa: E402
from synthloop.stages import sim_to_real  # noqa: E402
from synthloop.stages.finetune import mixed_training_set  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "sim_to_real_mix_bolts.json"


def measure(cfg, net, syn: CocoDataset, lab: CocoDataset, pool: CocoDataset, n: int) -> dict:
    s = cfg.sim_to_real
    rng = np.random.default_rng([s.seed, 1])
    syn_ids = sim_to_real.sample_ids([im.id for im in syn.images], n, rng)
    lab_ids, pool_ids = sim_to_real.real_sample(pool, lab, n, rng)
    t, c = time.perf_counter(), time.process_time()
    feats, level = sim_to_real.features(cfg, net, syn.subset(syn_ids), lab.subset(lab_ids),
                                        pool.subset(pool_ids), progress=False)
    image = measure_gap(feats["syn_image"], feats["real_image"], folds=s.folds,
                        permutations=s.permutations, seed=s.seed)
    classes = sim_to_real.class_gaps(cfg, feats["syn_box"], feats["syn_lab"], feats["real_box"],
                                     feats["real_lab"], rng)
    auc, auc_level = sim_to_real.rule_auc(image.to_dict(), classes)
    return {"levels": level, "rule_auc": auc, "rule_auc_level": auc_level,
            "renders": len(syn_ids), "real_labeled": len(lab_ids),
            "real_pool": len(pool_ids), "image": image.to_dict(), "classes": classes,
            "render_boxes": int(len(feats["syn_lab"])), "real_boxes": int(len(feats["real_lab"])),
            "wall_s": round(time.perf_counter() - t, 1), "cpu_s": round(time.process_time() - c, 1)}


def run_arm(cfg, ckpt: Path, lab: CocoDataset, syn: CocoDataset, val: CocoDataset, *, name: str,
            share: float, seed: int, steps: int, done: list[dict]) -> dict:
    """Fine-tune M0_S on L + the share's renders (training and render draw seeded by ``seed``),
    ~``steps`` steps, and score it on val; an arm with the same renders and seed as a done one
    is that one (same set, same seed: same model) and is not retrained."""
    train_ds, picked = mixed_training_set(lab, syn, share=share, seed=seed, cycle=1)
    twin = next((a for a in done if a.get("seed", 0) == seed and a["render_ids"] == picked
                 and "same_as" not in a), None)
    if twin is not None:
        print(f"{name:<10} seed {seed} share {share:.3f}: {len(picked)} renders, the same set as "
              f"{twin['arm']}", flush=True)
        return {**twin, "arm": name, "share": round(share, 4), "same_as": twin["arm"]}
    batches = math.ceil(len(train_ds.images) / cfg.finetune.batch_size)
    tcfg = cfg.finetune.model_copy(update={"epochs": max(1, math.ceil(steps / batches)),
                                           "max_minutes": None, "seed": seed})
    model = load_checkpoint(ckpt, device=torch.device("cpu"))
    t, c = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        result = train(model, train_ds, cfg=tcfg, val_ds=None, checkpoint_dir=Path(tmp),
                       progress=False)
    train_cpu = time.process_time() - c
    metrics = evaluate(model, val, batch_size=2, progress=False)
    arm = {"arm": name, "seed": seed, "share": round(share, 4), "renders": len(picked),
           "render_ids": picked, "images": len(train_ds.images), "epochs": tcfg.epochs,
           "steps": result.steps, **{k: round(v, 4) for k, v in metrics.items()},
           "train_cpu_s": round(train_cpu, 1), "wall_s": round(time.perf_counter() - t, 1),
           "cpu_s": round(time.process_time() - c, 1)}
    print(f"{name:<10} seed {seed} share {share:.3f}: {len(picked):>2} renders + "
          f"{len(lab.images)} photos, {result.steps} steps -> AP {metrics['AP']:.3f} "
          f"AP50 {metrics['AP50']:.3f} ({arm['cpu_s']:.0f} CPU s)", flush=True)
    return arm


def summary(arms: list[dict]) -> list[dict]:
    out = []
    for name in dict.fromkeys(a["arm"] for a in arms):
        rows = [a for a in arms if a["arm"] == name]
        row = {"arm": name, "seeds": len(rows), "renders": sorted({a["renders"] for a in rows})}
        for key in ("AP", "AP50", "AP_Bolt", "AP_Washer"):
            vals = [a[key] for a in rows]
            row[key] = {"mean": round(float(np.mean(vals)), 4), "min": min(vals), "max": max(vals)}
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, default=ROOT / "workspace" / "bolts")
    ap.add_argument("--images", type=int, default=24, help="renders and real photos for the gap")
    ap.add_argument("--steps", type=int, default=24, help="fine-tune steps an arm (about)")
    ap.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.25, 0.5])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="fine-tune seeds (train.seed and the render draw's seed)")
    ap.add_argument("--resume", action="store_true",
                    help="keep --out's gap and finished arms; run only the missing ones")
    args = ap.parse_args()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    torch.set_num_threads(1)
    cfg = load_config(ROOT / "pipelines" / "bolts.yaml",
                      overrides=["finetune_mix.mode=gap_rule", "finetune.num_threads=1"])
    data = args.workspace / "data"
    syn = CocoDataset.load(data / "synthetic" / "annotations.json")
    val = CocoDataset.load(data / "val" / "annotations.json")
    pool = CocoDataset.load(data / "pool" / "annotations.json")
    labeled_all = CocoDataset.load(data / "labeled" / "annotations.json")
    picks = json.loads((args.workspace / "state" / "cycle_1" / "label.json").read_text())["new"]
    lab = labeled_all.subset(picks)
    names = {im.id: Path(im.file_name).name for im in pool.images}
    assert all(names[im.id] == Path(im.file_name).name for im in lab.images), "L ids != pool ids"
    ckpt = args.workspace / "checkpoints" / "pretrain" / "checkpoint.pt"
    record = {"what": "sim-to-real gap of M0_S and one fine-tune cycle per synthetic share, bolts, "
                      "one seed", "M0_S": str(ckpt.relative_to(args.workspace)),
              "labels": len(lab.images), "label_ids": picks, "val_images": len(val.images),
              "finetune": cfg.finetune.model_dump(mode="json"),
              "finetune_mix": cfg.finetune_mix.model_dump(mode="json"),
              "sim_to_real": cfg.sim_to_real.model_dump(mode="json"), "arms": []}

    old = json.loads(args.out.read_text()) if args.resume and args.out.is_file() else {}
    before = old.get("invocations") or ([{"wall_s": old["wall_s"], "cpu_s": old["cpu_s"]}]
                                        if "cpu_s" in old else [])

    def save() -> None:
        now = {"wall_s": round(time.perf_counter() - wall0, 1),
               "cpu_s": round(time.process_time() - cpu0, 1),
               "load_avg_1min": round(os.getloadavg()[0], 2)}
        record.update(invocations=[*before, now],
                      wall_s=round(sum(r["wall_s"] for r in [*before, now]), 1),
                      cpu_s=round(sum(r["cpu_s"] for r in [*before, now]), 1),
                      machine={"cpus": os.cpu_count(), "torch_threads": 1})
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1, default=float) + "\n")

    # M0_S's val metrics as the pipeline recorded them (same checkpoint, same val set)
    pre = json.loads((args.workspace / "state" / "pretrain.json").read_text())["metrics"]
    record["m0"] = {k: round(v, 4) for k, v in pre.items() if k.startswith("AP")}
    record["m0_source"] = "state/pretrain.json of the workspace (the pipeline's own evaluation)"
    record["gap"] = old.get("gap") or measure(
        cfg, load_checkpoint(ckpt, device=torch.device("cpu")), syn, lab, pool, args.images)
    record["arms"] = old.get("arms", [])
    for arm in record["arms"]:  # a record from before --seeds: seed 0, its renders re-drawn
        if "render_ids" not in arm:
            arm["seed"] = arm.get("seed", 0)
            arm["render_ids"] = mixed_training_set(lab, syn, share=arm["share"], seed=arm["seed"],
                                                   cycle=1)[1]
    auc = record["gap"]["rule_auc"]
    rule = synthetic_share(cfg.finetune_mix, auc=auc, labels=len(lab.images))
    print(f"M0_S val AP {record['m0']['AP']:.3f}; gap: image MMD^2 "
          f"{record['gap']['image']['mmd2']:.4f}, AUC {record['gap']['image']['auc']:.3f}; "
          + ", ".join(f"{n} AUC {g['auc']:.3f}" for n, g in record["gap"]["classes"].items()
                      if "auc" in g) + f"; rule AUC {auc:.3f} -> gap rule share {rule:.3f}",
          flush=True)
    save()
    for seed in args.seeds:
        for name, share in [(f"fixed {s:g}", s) for s in args.shares] + [("gap rule", rule)]:
            if any(a["arm"] == name and a.get("seed", 0) == seed for a in record["arms"]):
                continue  # --resume: done in an earlier invocation
            record["arms"].append(run_arm(cfg, ckpt, lab, syn, val, name=name, share=share,
                                          seed=seed, steps=args.steps, done=record["arms"]))
            save()
    # Per arm, over the seeds run: mean and range of AP and AP50
    record["summary"] = summary(record["arms"])
    save()
    print(f"wrote {args.out} (wall {record['wall_s']} s, CPU {record['cpu_s']} s)")


if __name__ == "__main__":
    main()
