"""Figures for docs/bolts.md from a finished `synthloop experiment -c pipelines/bolts.yaml` run:
the synthetic model M0_S and the best S+R model on one real validation photo (detections with
score >= 0.5 in green, ground truth in red / blue), and the experiment's fig6/fig8 copied.

    .venv/bin/python docs/make_bolts_figures.py [--workspace workspace/bolts --scale cpu]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from synthloop.data.coco import CocoDataset  # noqa: E402
from synthloop.detection import load_checkpoint, predict  # noqa: E402
from synthloop.detection.datasets import load_image  # noqa: E402


def panel(model, ds: CocoDataset, image_index: int, title: str) -> Image.Image:
    im = ds.images[image_index]
    pil = Image.open(ds.image_path(im)).convert("RGB")
    draw = ImageDraw.Draw(pil)
    for a in ds.annotations:
        if a.image_id == im.id:
            x, y, w, h = a.bbox
            draw.rectangle([x, y, x + w, y + h], outline=(255, 40, 40) if a.category_id == 1 else (40, 160, 255))
    out = predict(model, [load_image(ds.image_path(im))])[0]
    n = 0
    for box, score in zip(out["boxes"].tolist(), out["scores"].tolist()):
        if score >= 0.5:
            draw.rectangle([v + d for v, d in zip(box, (-2, -2, 2, 2))], outline=(40, 230, 40), width=2)
            n += 1
    draw.rectangle([0, 0, 520, 22], fill=(0, 0, 0))
    draw.text((6, 5), f"{title}: {n} detections >= 0.5 (green); truth red bolt / blue washer", fill=(255, 255, 255))
    return pil


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, default=ROOT / "workspace" / "bolts")
    ap.add_argument("--scale", default="cpu")
    ap.add_argument("--image", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    exp = args.workspace / "experiments" / args.scale
    val = CocoDataset.load(args.workspace / "data" / "val" / "annotations.json")
    results = json.loads((exp / "results.json").read_text())
    multi = results["multi"]
    panels = [panel(load_checkpoint(exp / "models" / "m0_s.pt"), val, args.image, "M0_S (renders only)")]
    if multi:
        last = multi[-1]
        key = f"SR-{last['spec']['strategy']}-s{last['spec']['seed']}-k{last['spec']['k']}-c{last['spec']['cycle']}"
        panels.append(panel(load_checkpoint(exp / "models" / f"{key}.pt"), val, args.image,
                            f"after {len(multi)} DBAL cycles ({last['labels_total']} real labels)"))
    w, h = panels[0].size
    sheet = Image.new("RGB", (w, h * len(panels) + 6 * (len(panels) - 1)), "white")
    for i, p in enumerate(panels):
        sheet.paste(p, (0, i * (h + 6)))
    images = ROOT / "docs" / "images"
    sheet.save(images / "bolts_detections.jpg", quality=85)
    for name in ("fig6.png", "fig8.png"):
        if (exp / name).exists():
            shutil.copyfile(exp / name, images / f"bolts_{name}")
    shutil.copyfile(exp / "table.md", ROOT / "docs" / "bolts_table.md")
    print("wrote docs/images/bolts_detections.jpg, bolts_fig6.png, bolts_fig8.png, docs/bolts_table.md")


if __name__ == "__main__":
    main()
