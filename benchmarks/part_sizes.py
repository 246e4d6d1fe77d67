"""Part sizes and box shapes: the real bolts photos against render sets, at the detector's scale.

For each COCO set (the real valid/ photos are imported on the fly from datasets/bolts_real),
per class: the box's long side in pixels at the scale the detector sees it (photos 1920x1080:
1x; renders: 1080 / their height, times an optional crop_scale factor) and the long/short side
ratio (a flat washer seen from e degrees above the table: ~1/sin(e)). Prints a table, writes JSON.

    .venv/bin/python benchmarks/part_sizes.py workspace/bolts/data/synthetic \\
        workspace/bolts_oblique/data/synthetic
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from synthloop.data.importers import apply_class_map, load_yolo  # noqa: E402


def stats(boxes: dict[str, list[tuple[float, float]]]) -> dict:
    out = {}
    for name, wh in sorted(boxes.items()):
        a = np.asarray(wh, np.float64)
        long, short = a.max(1), a.min(1)
        ratio = long / np.maximum(short, 1.0)
        out[name] = {"boxes": len(a),
                     "long_px_p10_50_90": np.percentile(long, [10, 50, 90]).round(1).tolist(),
                     "ratio_p10_50_90": np.percentile(ratio, [10, 50, 90]).round(2).tolist()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("renders", nargs="*", type=Path, help="COCO folders (annotations.json)")
    ap.add_argument("--factors", nargs="*", type=float, default=[],
                    help="crop_scale factor per render folder (geometric mean of [lo, hi])")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "part_sizes_bolts.json")
    args = ap.parse_args()
    factors = args.factors or [1.0] * len(args.renders)
    if len(factors) != len(args.renders):
        raise SystemExit("give one --factors value per render folder")
    sets = {}
    real = apply_class_map(load_yolo(ROOT / "datasets" / "bolts_real" / "valid"),
                           ["Bolt", "Washer"], {"Bottle": None}, source="valid")
    names = {c["id"]: c["name"] for c in real.categories}
    boxes: dict[str, list] = {}
    for a in real.annotations:
        boxes.setdefault(names[a.category_id], []).append(a.bbox[2:4])
    sets["photos valid/ (1920x1080, 1x)"] = stats(boxes)
    for folder, factor in zip(args.renders, factors):
        d = json.loads((folder / "annotations.json").read_text())
        names = {c["id"]: c["name"] for c in d["categories"]}
        heights = {im["id"]: im["height"] for im in d["images"]}
        boxes = {}
        for a in d["annotations"]:
            s = 1080 / heights[a["image_id"]] * factor
            boxes.setdefault(names[a["category_id"]], []).append((a["bbox"][2] * s,
                                                                  a["bbox"][3] * s))
        sets[f"{folder} (x{1080 / next(iter(heights.values())) * factor:.2f})"] = stats(boxes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(sets, indent=1))
    print("| set | class | boxes | long side px p10 / p50 / p90 | long/short p10 / p50 / p90 |")
    print("|---|---|---|---|---|")
    for name, per in sets.items():
        for cls, r in per.items():
            print(f"| {name} | {cls} | {r['boxes']} | "
                  f"{' / '.join(f'{v:g}' for v in r['long_px_p10_50_90'])} | "
                  f"{' / '.join(f'{v:g}' for v in r['ratio_p10_50_90'])} |")


if __name__ == "__main__":
    main()
