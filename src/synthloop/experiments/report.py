"""Tables and plots of an experiment's results, shaped like the paper's Table A1, Fig. 6, Fig. 8.

``write_report(summary, folder)`` writes ``table.md`` (AP and AP50 per real-image count: R
random mean, S+R random mean, S+R margin, S+R DBAL, multi-cycle; then per-seed values with
the standard error, then per-class AP), ``fig6.png`` (AP against labelled real images per
strategy, random as mean +- standard error over seeds) and ``fig8.png`` (the multi-cycle run
against the single-cycle ones).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from synthloop.io_utils import atomic_write_text

COLUMNS = [("R", "random"), ("S+R", "random"), ("S+R", "margin"), ("S+R", "entropy"),
           ("S+R", "least_confidence"), ("S+R", "dbal"), ("S+R", "coreset")]


def _cells(summary: dict[str, Any], metric: str) -> dict[tuple[str, str, int], list[float]]:
    cells: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for r in summary["single"]:
        s = r["spec"]
        cells[(s["setting"], s["strategy"], s["k"])].append(float(r["metrics"][metric]))
    return cells


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value)."""
    arr = np.asarray(values, float)
    if arr.size == 0:
        return float("nan"), float("nan")
    se = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else 0.0
    return float(arr.mean()), se


def _fmt(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def table_markdown(summary: dict[str, Any], metric: str = "AP") -> str:
    cells = _cells(summary, metric)
    present = [c for c in COLUMNS if any((c[0], c[1], k) in cells for k in summary["experiment"]["ks"])]
    multi = {r["labels_total"]: r["metrics"][metric] for r in summary.get("multi", [])}
    mc = summary["experiment"].get("multi_cycle") or {}
    mc_name = f"S+R {mc.get('strategy', '')}, cycles of {mc.get('k', '')}" if multi else None
    head = ["real images"] + [f"{s} {st}" + (" (mean of seeds)" if st == "random" else "")
                              for s, st in present] + ([mc_name] if mc_name else [])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    m0 = (summary.get("m0_s") or {}).get(metric)
    counts = sorted({0, *summary["experiment"]["ks"], *multi})
    for n in counts:
        row = [str(n)]
        for setting, strategy in present:
            if n == 0:
                row.append(_fmt(m0) if setting == "S+R" else "-")
            else:
                vals = cells.get((setting, strategy, n))
                row.append(_fmt(mean_se(vals)[0]) if vals else "-")
        if mc_name:
            row.append(_fmt(m0) if n == 0 else _fmt(multi.get(n)))
        rows.append("| " + " | ".join(row) + " |")
    return "\n".join(rows)


def seeds_markdown(summary: dict[str, Any], metric: str = "AP") -> str:
    by: dict[tuple[str, int], list[tuple[int, float]]] = defaultdict(list)
    for r in summary["single"]:
        s = r["spec"]
        if s["strategy"] == "random":
            by[(s["setting"], s["k"])].append((s["seed"], float(r["metrics"][metric])))
    lines = ["| setting | k | per seed | mean | standard error |", "|---|---|---|---|---|"]
    for (setting, k), vals in sorted(by.items()):
        vals.sort()
        mean, se = mean_se([v for _, v in vals])
        per = " / ".join(f"{v:.3f}" for _, v in vals)
        lines.append(f"| {setting} | {k} | {per} | {mean:.3f} | {se:.3f} |")
    return "\n".join(lines)


def per_class_markdown(summary: dict[str, Any]) -> str:
    runs = [("M0_S (0 real)", summary.get("m0_s") or {})]
    for r in summary["single"]:
        s = r["spec"]
        if s["strategy"] != "random" or s["seed"] == summary["experiment"]["random_seeds"][0]:
            runs.append((f"{s['setting']} {s['strategy']} k={s['k']}"
                         + (f" seed {s['seed']}" if s["strategy"] == "random" else ""), r["metrics"]))
    for r in summary.get("multi", []):
        s = r["spec"]
        runs.append((f"S+R {s['strategy']} cycle {s['cycle']} ({r['labels_total']} labels)", r["metrics"]))
    classes = sorted({k[3:] for _, m in runs for k in m if k.startswith("AP_")})
    lines = ["| run | AP | AP50 | " + " | ".join(f"AP {c}" for c in classes) + " |",
             "|---|---|---|" + "---|" * len(classes)]
    for name, m in runs:
        if not m:
            continue
        lines.append(f"| {name} | {_fmt(m.get('AP'))} | {_fmt(m.get('AP50'))} | "
                     + " | ".join(_fmt(m.get(f"AP_{c}")) for c in classes) + " |")
    return "\n".join(lines)


def _plot_single(ax, summary: dict[str, Any], metric: str) -> None:
    cells = _cells(summary, metric)
    ks = sorted(summary["experiment"]["ks"])
    m0 = (summary.get("m0_s") or {}).get(metric)
    styles = {("R", "random"): ("tab:gray", "s"), ("S+R", "random"): ("tab:blue", "o"),
              ("S+R", "margin"): ("tab:orange", "^"), ("S+R", "dbal"): ("tab:green", "D"),
              ("S+R", "entropy"): ("tab:purple", "v"), ("S+R", "least_confidence"): ("tab:brown", "<"),
              ("S+R", "coreset"): ("tab:pink", ">")}
    for (setting, strategy), (color, marker) in styles.items():
        xs = [k for k in ks if (setting, strategy, k) in cells]
        if not xs:
            continue
        stats = [mean_se(cells[(setting, strategy, k)]) for k in xs]
        ys = [m for m, _ in stats]
        if setting == "S+R" and m0 is not None:
            xs, ys, stats = [0] + xs, [m0] + ys, [(m0, 0.0)] + stats
        label = f"{setting} {strategy}" + (" (mean ± s.e.)" if strategy == "random" else "")
        ax.errorbar(xs, ys, yerr=[s for _, s in stats], color=color, marker=marker, capsize=3,
                    label=label)
    ax.set_xlabel("labelled real images")
    ax.set_ylabel(f"COCO {metric} on the real validation set")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def write_report(summary: dict[str, Any], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    files = []
    text = [f"# Experiment: {summary['pipeline']} at scale `{summary['scale']}`", "",
            f"Validation: {summary['val_images']} "
            + ("RENDERED images standing in for real photos (the demo's proxy domain)"
               if summary.get("proxy_real") else "real images")
            + f" (never trained on); pool: "
            f"{summary['pool_images']} images. Detector: {summary['detector']['architecture']} "
            f"at {summary['detector']['min_size']}/{summary['detector']['max_size']}.", "",
            "## COCO AP@[.5:.95] (Table A1 shape)", "", table_markdown(summary, "AP"), "",
            "## AP50", "", table_markdown(summary, "AP50"), "",
            "## Random selection per seed (AP)", "", seeds_markdown(summary, "AP"), "",
            "## Per-class AP", "", per_class_markdown(summary), ""]
    path = folder / "table.md"
    atomic_write_text(path, "\n".join(text))
    files.append(path)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, metric in zip(axes, ("AP", "AP50")):
        _plot_single(ax, summary, metric)
    fig.suptitle(f"{summary['pipeline']}: one cycle of k labels (Fig. 6 shape)")
    fig.tight_layout()
    path = folder / "fig6.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path)

    if summary.get("multi"):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        mc = summary["experiment"]["multi_cycle"]
        for ax, metric in zip(axes, ("AP", "AP50")):
            _plot_single(ax, summary, metric)
            m0 = (summary.get("m0_s") or {}).get(metric)
            xs = [r["labels_total"] for r in summary["multi"]]
            ys = [r["metrics"][metric] for r in summary["multi"]]
            if m0 is not None:
                xs, ys = [0] + xs, [m0] + ys
            ax.plot(xs, ys, color="black", marker="*", markersize=10, lw=2,
                    label=f"S+R {mc['strategy']}, {len(summary['multi'])} cycles of {mc['k']}")
            ax.legend(fontsize=8)
        fig.suptitle(f"{summary['pipeline']}: several small cycles vs one (Fig. 8 shape)")
        fig.tight_layout()
        path = folder / "fig8.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    return files
