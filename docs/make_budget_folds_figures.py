"""Two follow-ups of the bolts grid, drawn and tabulated from committed results files only (no
model is run):

- R vs S+R at one longer budget (docs/results/bolts_grid_long.json, scale ``grid_long``: 200
  steps for every run) next to the grid's budget (docs/results/bolts_grid.json: 8 epochs over
  the labels, at least 30 steps) -> docs/images/bolts_grid_long.png;
- S+R random vs DBAL at k = 10 with the validation set rotated over the 90 photos
  (docs/results/bolts_grid_folds.json, scale ``grid_folds``: 5 folds of 18) -> per fold and
  pooled, and DBAL minus random paired by fold and seed -> docs/images/bolts_grid_folds.png.

The tables it prints are written to docs/results/bolts_grid_long_folds.md (docs/bolts.md quotes
them).

    .venv/bin/python docs/make_budget_folds_figures.py
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
GRID, LONG, FOLDS = (RESULTS / f"bolts_grid{s}.json" for s in ("", "_long", "_folds"))
TABLES = RESULTS / "bolts_grid_long_folds.md"
IMAGES = ROOT / "docs" / "images"
BOOT = 2000


def runs(path: Path) -> list[dict]:
    return [r for r in json.loads(path.read_text())["single"] if r["spec"]["cycle"] == 0]


def pick(rows: list[dict], **spec) -> list[dict]:
    return sorted((r for r in rows if all(r["spec"][k] == v for k, v in spec.items())),
                  key=lambda r: (r["spec"]["seed"], r["spec"]["fold"]))


def mean_se(values: list[float]) -> tuple[float, float]:
    m = statistics.fmean(values)
    return m, (statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan"))


def interval(values: list[float], seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean (resampling the runs)."""
    v = np.asarray(values)
    means = v[np.random.default_rng(seed).integers(0, len(v), (BOOT, len(v)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def long_table(grid: list[dict], long: list[dict], m0: dict[str, dict]) -> tuple[str, list[tuple]]:
    """``m0``: each file's M0_S metrics on the 15 validation photos (the S+R rows start from it;
    the two scales may have trained their own M0_S, so both are shown)."""
    lines = ["| setting | k | budget | steps | AP per seed (1 / 2 / 3) | AP mean | standard error | "
             "AP50 mean |", "|---|---|---|---|---|---|---|---|"]
    for budget, metrics in m0.items():
        if metrics:
            lines.append(f"| M0_S (0 real labels), the S+R rows' start | 0 | {budget} | - | - | "
                         f"{metrics['AP']:.3f} | - | {metrics['AP50']:.3f} |")
    points = []
    for k in sorted({r["spec"]["k"] for r in long}):
        for setting in ("R", "S+R"):
            for budget, rows in (("grid: 8 epochs, >= 30 steps", grid), ("200 steps", long)):
                got = pick(rows, setting=setting, strategy="random", k=k)
                if not got:
                    continue
                ap = [r["metrics"]["AP"] for r in got]
                m, se = mean_se(ap)
                ap50 = statistics.fmean(r["metrics"]["AP50"] for r in got)
                steps = "/".join(sorted({str(r["steps"]) for r in got}))
                lines.append(f"| {setting} random | {k} | {budget} | {steps} | "
                             f"{' / '.join(f'{v:.3f}' for v in ap)} | {m:.3f} | {se:.3f} | {ap50:.3f} |")
                points.append((setting, k, budget, ap))
    return "\n".join(lines), points


def folds_tables(rows: list[dict], summary: dict) -> tuple[str, str, dict]:
    folds = sorted({r["spec"]["fold"] for r in rows})
    m0 = {f["fold"]: (f.get("m0_s") or {}).get("AP") for f in summary["folds"]}
    head = ["| cell | " + " | ".join(f"fold {f}" for f in folds) + " | pooled | standard error | "
            "95% bootstrap interval |", "|---|" + "---|" * (len(folds) + 3)]
    if all(m0.get(f) is not None for f in folds):
        pooled = statistics.fmean(m0[f] for f in folds)
        head.append("| M0_S (0 real labels) | " + " | ".join(f"{m0[f]:.3f}" for f in folds)
                    + f" | {pooled:.3f} | - | - |")
    by = {}
    for strategy in ("random", "dbal"):
        got = pick(rows, strategy=strategy)
        by[strategy] = {(r["spec"]["fold"], r["spec"]["seed"]): r["metrics"]["AP"] for r in got}
        per = [statistics.fmean(v for (f, _), v in by[strategy].items() if f == fold) for fold in folds]
        m, se = mean_se(list(by[strategy].values()))
        lo, hi = interval(list(by[strategy].values()))
        head.append(f"| S+R {strategy}, k = 10 | " + " | ".join(f"{v:.3f}" for v in per)
                    + f" | {m:.3f} | {se:.3f} | {lo:.3f} to {hi:.3f} |")
    pairs = sorted(set(by["random"]) & set(by["dbal"]))
    diff = {p: by["dbal"][p] - by["random"][p] for p in pairs}
    lines = ["| fold | DBAL - random, seed 1 / 2 / 3 | mean |", "|---|---|---|"]
    for fold in folds:
        d = [diff[p] for p in pairs if p[0] == fold]
        lines.append(f"| {fold} | {' / '.join(f'{v:+.3f}' for v in d)} | {statistics.fmean(d):+.3f} |")
    m, se = mean_se(list(diff.values()))
    lo, hi = interval(list(diff.values()))
    wins = sum(v > 0 for v in diff.values())
    lines.append(f"| pooled ({len(diff)} pairs) | DBAL ahead in {wins} of {len(diff)} | {m:+.3f} "
                 f"(standard error {se:.3f}, 95% bootstrap {lo:+.3f} to {hi:+.3f}) |")
    return "\n".join(head), "\n".join(lines), {"folds": folds, "by": by, "diff": diff}


def figure_long(points: list[tuple]) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 4))
    colours = {"R": "tab:grey", "S+R": "tab:blue"}
    xs, labels = [], []
    for i, (setting, k, budget, ap) in enumerate(points):
        x = i + (i // 4) * 0.6
        ax.bar(x, statistics.fmean(ap), 0.8, color=colours[setting],
               alpha=0.35 if budget.startswith("grid") else 0.8)
        ax.scatter([x] * len(ap), ap, s=12, color="black", zorder=3)
        xs.append(x)
        labels.append(f"{setting}\nk={k}\n{'grid' if budget.startswith('grid') else '200 st.'}")
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylabel("AP on the 15 validation photos")
    ax.set_title("R (real labels only) vs S+R (from M0), random picks:\n"
                 "the grid's budget (pale) and 200 steps for both (dark); dots: seeds", fontsize=9)
    fig.tight_layout()
    out = IMAGES / "bolts_grid_long.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def figure_folds(info: dict) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for j, (strategy, colour) in enumerate((("random", "tab:blue"), ("dbal", "tab:orange"))):
        for fold in info["folds"]:
            vals = [v for (f, _), v in info["by"][strategy].items() if f == fold]
            x = fold + (j - 0.5) * 0.35
            ax.bar(x, statistics.fmean(vals), 0.35, color=colour, alpha=0.6,
                   label=f"S+R {strategy}" if fold == info["folds"][0] else None)
            ax.scatter([x] * len(vals), vals, s=12, color="black", zorder=3)
    ax.set_xticks(info["folds"], [f"fold {f}" for f in info["folds"]])
    ax.set_ylabel("AP on the fold's 18 validation photos")
    ax.set_title("k = 10 picked from the other 72 photos; dots: seeds", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = IMAGES / "bolts_grid_folds.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    text = ["# Bolts grid follow-ups (written by docs/make_budget_folds_figures.py)", ""]
    if LONG.exists():
        m0 = {"grid: 8 epochs, >= 30 steps": json.loads(GRID.read_text()).get("m0_s"),
              "200 steps": json.loads(LONG.read_text()).get("m0_s")}
        table, points = long_table(runs(GRID), runs(LONG), m0)
        text += ["## R vs S+R, random picks, at the grid's budget and at 200 steps", "", table, ""]
        print(table)
        print(f"wrote {figure_long(points)}")
    if FOLDS.exists():
        summary = json.loads(FOLDS.read_text())
        cells, paired, info = folds_tables(runs(FOLDS), summary)
        text += ["## S+R at k = 10, validation rotated over 5 folds of 18 (AP)", "", cells, "",
                 "## DBAL minus random, paired by fold and seed (AP)", "", paired, ""]
        print(cells, paired, sep="\n\n")
        print(f"wrote {figure_folds(info)}")
    TABLES.write_text("\n".join(text))
    print(f"wrote {TABLES}")


if __name__ == "__main__":
    main()
