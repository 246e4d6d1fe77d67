"""How alike are the photos each strategy picks? Read from a finished bolts grid, no training.

DBAL clusters the pool in M0's pooled FPN P2 features (weighted k-means++ on the top beta*k
images by margin-sum uncertainty) so that its k picks differ from each other. This measures
whether they do, in that same feature space: the spread of a pick set is the mean cosine
distance between its images' L2-normalised features (0: all alike). For every S+R single-cycle
run of the grid it records the spread, the picks' boxes per image (Bolt, Washer) and how much
the seeds' pick sets overlap; for reference, random k-subsets of the pool (200 draws) and
DBAL's picks recomputed offline for several beta (the selection only: cheap) from the same
cached M0 scores. Optional: more grids of DBAL runs (``--extra NAME=SCALE``, e.g. a wider
pre-filter) joined by seed and k to show their AP beside their spread.

    .venv/bin/python benchmarks/pick_diversity_bolts.py --workspace workspace/bolts --scale grid \
        --extra beta5=grid_beta5

Needs the workspace the grid ran in (its oracle/pool.json, experiments/<scale>/results.json and
models/scores-m0_s.npz). Prints a table, writes benchmarks/results/pick_diversity_bolts.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from synthloop.active import get_strategy  # noqa: E402
from synthloop.stages import score  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "pick_diversity_bolts.json"


def spread(unit: np.ndarray, rows: list[int]) -> float:
    """Mean pairwise cosine distance of the rows of L2-normalised features."""
    v = unit[rows]
    sims = v @ v.T
    upper = np.triu_indices(len(rows), 1)
    return float((1.0 - sims[upper]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, default=ROOT / "workspace" / "bolts")
    ap.add_argument("--scale", default="grid")
    ap.add_argument("--extra", action="append", default=[],
                    help="NAME=SCALE: another grid's DBAL runs to show beside (repeatable)")
    ap.add_argument("--betas", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0, 7.5])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    root = args.workspace / "experiments" / args.scale
    results = json.loads((root / "results.json").read_text())
    pool = json.loads((args.workspace / "oracle" / "pool.json").read_text())
    cats = {c["id"]: c["name"] for c in pool["categories"]}
    boxes: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for a in pool["annotations"]:
        boxes[a["image_id"]][cats[a["category_id"]]] += 1
    ids, probs, feats = score.load_scores(root / "models" / "scores-m0_s.npz")
    ids = [int(i) for i in ids]
    row_of = {i: n for n, i in enumerate(ids)}
    unit = feats.astype(float) / np.linalg.norm(feats.astype(float), axis=1, keepdims=True)

    def describe(picks: list[list[int]]) -> dict:
        sets = [set(p) for p in picks]
        overlap = ([len(a & b) / len(a) for a, b in itertools.combinations(sets, 2)]
                   if len(sets) > 1 else [])
        return {"spread": float(np.mean([spread(unit, [row_of[i] for i in p]) for p in picks])),
                "bolts_per_image": float(np.mean([boxes[i].get("Bolt", 0) for p in picks for i in p])),
                "washers_per_image": float(np.mean([boxes[i].get("Washer", 0) for p in picks for i in p])),
                "seed_overlap": float(np.mean(overlap)) if overlap else None}

    def runs_of(res: dict) -> dict[tuple[str, int], list[dict]]:
        out: dict[tuple[str, int], list[dict]] = defaultdict(list)
        for r in res["single"]:
            s = r["spec"]
            if s["setting"] == "S+R":  # "single" holds one-cycle runs only (chains: "multi")
                out[(s["strategy"], s["k"])].append(r)
        return out

    rows = []
    ks = sorted({s["k"] for s in (r["spec"] for r in results["single"])})
    rng = np.random.default_rng(0)
    for k in ks:
        draws = [list(rng.choice(ids, k, replace=False)) for _ in range(200)]
        rows.append({"picks": "random subsets of the pool (200 draws)", "k": k,
                     **describe([[int(i) for i in d] for d in draws]), "AP": None})
    grids = {"grid": runs_of(results)}
    for spec in args.extra:
        name, scale = spec.split("=", 1)
        grids[name] = runs_of(json.loads(
            (args.workspace / "experiments" / scale / "results.json").read_text()))
    for name, cells in grids.items():
        for (strategy, k), runs in sorted(cells.items(), key=lambda x: (x[0][1], x[0][0])):
            runs = sorted(runs, key=lambda r: r["spec"]["seed"])
            label = f"S+R {strategy}" + ("" if name == "grid" else f" ({name})")
            rows.append({"picks": label, "k": k, **describe([r["selected"] for r in runs]),
                         "AP": float(np.mean([r["metrics"]["AP"] for r in runs])),
                         "AP_per_seed": [r["metrics"]["AP"] for r in runs], "runs": len(runs)})
    offline = []
    for beta in args.betas:
        for k in ks:
            if beta * k > len(ids):
                continue
            picks = [[int(i) for i in get_strategy("dbal", beta=beta, aggregation="sum").select(
                ids, probs, feats, k=k, rng_seed=seed, labeled_ids=frozenset()).image_ids]
                for seed in (1, 2, 3)]
            offline.append({"beta": beta, "k": k, **describe(picks)})
    record = {"workspace_scale": args.scale, "pool_images": len(ids),
              "measure": "mean pairwise cosine distance of the picks' L2-normalised pooled FPN P2 "
                         "features of M0 (the features DBAL clusters)",
              "grids": rows, "dbal_offline_seeds_1_3": offline}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print("| picks | k | spread | bolts / image | washers / image | seeds' overlap | AP |")
    print("|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["k"], r["picks"])):
        ov = "-" if r["seed_overlap"] is None else f"{r['seed_overlap']:.2f}"
        ap_s = "-" if r["AP"] is None else f"{r['AP']:.3f}"
        print(f"| {r['picks']} | {r['k']} | {r['spread']:.4f} | {r['bolts_per_image']:.1f} | "
              f"{r['washers_per_image']:.1f} | {ov} | {ap_s} |")
    print("\nDBAL picks recomputed offline (selection only, seeds 1-3):")
    print("| beta | k | spread | seeds' overlap |")
    print("|---|---|---|---|")
    for r in offline:
        print(f"| {r['beta']:g} | {r['k']} | {r['spread']:.4f} | {r['seed_overlap']:.2f} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
