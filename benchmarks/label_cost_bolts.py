"""Labelling minutes per strategy on the recorded bolts grid, without new training.

The small grid (docs/results/bolts_grid_small.json: settings R and S+R, random / margin / DBAL,
k = 10, seeds 1-3, one fold) records each run's picked pool images. This costs each run's picks
with the default cost model (``labeling.cost``: every box drawn new, the simulated oracle),
using the pool's boxes from the repository (datasets/bolts_real/train, imported the way
pipelines/bolts.yaml imports it: Bottle boxes dropped), and reports per strategy (means over
the seeds) the boxes picked, labelling minutes, AP and AP gain per labelling minute (over
M0_S for S+R, over AP 0 for R).

    .venv/bin/python benchmarks/label_cost_bolts.py [--grid docs/results/bolts_grid_small.json]

Prints a table, writes benchmarks/results/label_cost_bolts.json and the figure
docs/images/bolts_label_minutes.png. Takes seconds (reads the
YOLO labels and image sizes). When the bolts workspace exists, the pool's image ids are
checked against its oracle/pool.json (read only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from synthloop.config import LabelCostConfig, load_config  # noqa: E402
from synthloop.data.importers import apply_class_map, load_source  # noqa: E402
from synthloop.experiments.label_cost import attach_label_cost, label_cost_rows  # noqa: E402
from synthloop.experiments.report import minutes_figure  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "label_cost_bolts.json"


def bolts_pool(workspace_check: bool = True):
    """The bolts pool with its boxes, ids as the pipeline's import gives them."""
    cfg = load_config(ROOT / "pipelines" / "bolts.yaml")
    src = cfg.pool
    path = src.path if src.path.is_absolute() else (ROOT / "pipelines" / src.path).resolve()
    pool = apply_class_map(load_source(src.format, path), cfg.class_names, src.class_map,
                           source=str(path))
    recorded = ROOT / "workspace" / "bolts" / "oracle" / "pool.json"
    if workspace_check and recorded.is_file():
        names = {im["id"]: im["file_name"] for im in json.loads(recorded.read_text())["images"]}
        mine = {im.id: Path(im.file_name).name for im in pool.images}
        if names != mine:
            raise SystemExit(f"pool ids differ from {recorded}: the grid's picks would be "
                             "costed on the wrong images")
    return cfg, pool


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", type=Path,
                    default=ROOT / "docs" / "results" / "bolts_grid_small.json")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--figure", type=Path,
                    default=ROOT / "docs" / "images" / "bolts_label_minutes.png",
                    help="AP and AP50 against labelling minutes (the report's fig_label_minutes)")
    args = ap.parse_args()
    wall, cpu = time.perf_counter(), time.process_time()
    grid = json.loads(args.grid.read_text())
    cfg, pool = bolts_pool()
    if len(pool.images) != grid["pool_images"]:
        raise SystemExit(f"the grid's pool had {grid['pool_images']} images, the repo's "
                         f"{len(pool.images)}")
    cost = LabelCostConfig()  # the defaults, whatever a pipeline sets
    single = attach_label_cost(grid["single"], {0: pool}, cost)
    summary = {**grid, "single": single, "multi": []}
    rows = label_cost_rows(summary, "AP")
    ap50 = {r["cell"]: r for r in label_cost_rows(summary, "AP50")}
    boxes_per_image = len(pool.annotations) / len(pool.images)
    counts = [0] * len(pool.images)
    index = {im.id: n for n, im in enumerate(pool.images)}
    for a in pool.annotations:
        counts[index[a.image_id]] += 1
    out_rows = []
    for r in rows:
        cell = (r["setting"], r["strategy"], r["k"])
        per_seed = sorted((x["spec"]["seed"], round(x["label_seconds"] / 60, 1), x["label_boxes"])
                          for x in single
                          if (x["spec"]["setting"], x["spec"]["strategy"], x["spec"]["k"]) == cell)
        out_rows.append({"cell": r["cell"], "k": r["k"], "runs": r["runs"],
                         "boxes": round(r["boxes"], 1), "minutes": round(r["minutes"], 1),
                         "minutes_per_image": round(r["minutes_per_image"], 2),
                         "AP": round(r["AP"], 3), "AP_start": round(r["start"], 3),
                         "AP_gain_per_minute": round(r["AP_gain_per_minute"], 4),
                         "AP50": round(ap50[r["cell"]]["AP50"], 3),
                         "per_seed_minutes_boxes": [{"seed": s, "minutes": m, "boxes": b}
                                                    for s, m, b in per_seed]})
    record = {"what": "labelling minutes of the recorded bolts small grid's picks, default cost "
                      "model (every box drawn new)",
              "grid": (str(args.grid.relative_to(ROOT)) if args.grid.is_relative_to(ROOT)
                       else str(args.grid)),
              "cost_model": cost.model_dump(mode="json"),
              "pool": {"images": len(pool.images), "boxes": len(pool.annotations),
                       "boxes_per_image": round(boxes_per_image, 1),
                       "boxes_per_image_min": min(counts), "boxes_per_image_max": max(counts),
                       "boxes_per_image_sd": round(statistics.pstdev(counts), 1),
                       "minutes_per_average_image": round(
                           (cost.image_s + cost.new_box_s * boxes_per_image) / 60, 2)},
              "m0_s_AP": round(grid["m0_s"]["AP"], 3), "rows": out_rows,
              "wall_s": round(time.perf_counter() - wall, 2),
              "cpu_s": round(time.process_time() - cpu, 2)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    minutes_figure(summary, args.figure)
    print(f"pool: {len(pool.images)} images, {len(pool.annotations)} boxes "
          f"({boxes_per_image:.1f} an image, {min(counts)} to {max(counts)}, s.d. "
          f"{statistics.pstdev(counts):.1f}); cost model {cost.model_dump()}")
    print(f"{'cell':<14} {'k':>3} {'runs':>4} {'boxes':>6} {'minutes':>8} {'min/img':>8} "
          f"{'AP':>6} {'AP50':>6} {'AP gain/min':>11}")
    for r in out_rows:
        print(f"{r['cell']:<14} {r['k']:>3} {r['runs']:>4} {r['boxes']:>6.1f} {r['minutes']:>8.1f} "
              f"{r['minutes_per_image']:>8.2f} {r['AP']:>6.3f} {r['AP50']:>6.3f} "
              f"{r['AP_gain_per_minute']:>11.4f}")
    spread = statistics.pstdev([r["minutes"] for r in out_rows]) if len(out_rows) > 1 else 0.0
    print(f"spread of mean minutes across cells: {spread:.1f} min; wrote {args.out} "
          f"(wall {record['wall_s']} s, CPU {record['cpu_s']} s)")


if __name__ == "__main__":
    main()
