"""Why DBAL trails random on the bolts pool, drawn from committed results files only (no model
is run): docs/images/bolts_grid_diversity.png.

Left: the spread of each strategy's picks in M0's pooled FPN P2 features (mean pairwise cosine
distance; benchmarks/results/pick_diversity_bolts.json), against random k-subsets of the pool.
Right: the same runs' AP on the 15 validation photos, one dot a seed, the mean as a bar.

    .venv/bin/python docs/make_grid_figures.py
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DIVERSITY = ROOT / "benchmarks" / "results" / "pick_diversity_bolts.json"
OUT = ROOT / "docs" / "images" / "bolts_grid_diversity.png"


def main() -> None:
    rec = json.loads(DIVERSITY.read_text())
    rows = rec["grids"]
    ks = sorted({r["k"] for r in rows})
    names = []
    for r in rows:
        if r["picks"] not in names:
            names.append(r["picks"])
    names.sort(key=lambda n: (not n.startswith("random"), "random" not in n, n))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / len(names)
    colours = plt.cm.tab10.colors
    labelled: set[str] = set()
    for j, name in enumerate(names):
        for x, k in enumerate(ks):
            row = next((r for r in rows if r["picks"] == name and r["k"] == k), None)
            if row is None:
                continue
            pos = x + (j - (len(names) - 1) / 2) * width
            left.bar(pos, row["spread"], width, color=colours[j % 10],
                     label=None if name in labelled else name)
            labelled.add(name)
            if row.get("AP_per_seed"):
                right.bar(pos, row["AP"], width, color=colours[j % 10], alpha=0.5)
                right.scatter([pos] * len(row["AP_per_seed"]), row["AP_per_seed"], s=12,
                              color=colours[j % 10], zorder=3)
    for ax in (left, right):
        ax.set_xticks(range(len(ks)), [f"k = {k}" for k in ks])
    left.set_ylabel("spread of the picks (mean cosine distance)")
    left.set_title("How different the picked photos are\n(M0's pooled P2 features)")
    left.legend(fontsize=7, loc="upper left")
    right.set_ylabel("AP on the 15 validation photos")
    right.set_title("AP after fine-tuning on them (dots: seeds)")
    lo = min(v for r in rows for v in r.get("AP_per_seed", []) or [1.0])
    right.set_ylim(max(0.0, lo - 0.05), None)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
