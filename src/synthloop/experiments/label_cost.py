"""An experiment's strategies by labelling minutes, not only by labelled images.

Each run's picked images are costed with the cost model (``labeling.cost``, data/label_cost.py;
the experiment's oracle is simulated: no pre-annotations, every box drawn new), so a strategy
that picks crowded images pays for their boxes. ``attach_label_cost`` adds to each run record
``label_seconds`` and ``label_boxes`` (of every image labelled so far: a multi-cycle run's
cumulative set); ``label_cost_rows`` gives per cell (setting, strategy, k; multi-cycle cycle)
the means over the runs: minutes, boxes, AP and AP gain per labelling minute over the start
(M0_S for S+R; for R an untrained head, counted as AP 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from synthloop.data.label_cost import dataset_cost


def attach_label_cost(runs: list[dict[str, Any]], pools: Mapping[int, Any], cost: Any,
                      *, chained: bool = False) -> list[dict[str, Any]]:
    """Copies of ``runs`` (RunResult dicts) with ``label_seconds`` and ``label_boxes``.

    ``pools``: fold index -> the fold's pool (a CocoDataset with the oracle's boxes).
    ``chained``: multi-cycle runs, whose labelled set is the union of their chain's picks up to
    their cycle (chain = same seed and fold)."""
    seen: dict[tuple[int, int], set[int]] = {}
    order = sorted(range(len(runs)), key=lambda n: runs[n]["spec"].get("cycle", 0))
    costed: dict[int, dict[str, Any]] = {}
    for n in order:
        r = runs[n]
        spec = r["spec"]
        labeled = set(r["selected"])
        if chained:
            key = (spec["seed"], spec["fold"])
            labeled = seen.setdefault(key, set()) | labeled
            seen[key] = labeled
        c = dataset_cost(pools[spec["fold"]], sorted(labeled), cost)
        costed[n] = {**r, "label_seconds": round(c.seconds, 3), "label_boxes": c.boxes}
    return [costed[n] for n in range(len(runs))]


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def label_cost_rows(summary: Mapping[str, Any], metric: str = "AP") -> list[dict[str, Any]]:
    """Per cell: runs, mean labelled images, boxes, labelling minutes, ``metric`` and its gain
    per labelling minute (means over the runs). Empty when no run carries ``label_seconds``."""
    m0 = (summary.get("m0_s") or {}).get(metric)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for kind in ("single", "multi"):
        for r in summary.get(kind) or []:
            if "label_seconds" not in r:
                return []
            s = r["spec"]
            key = ((s["setting"], s["strategy"], s["k"], None) if kind == "single"
                   else ("S+R", s["strategy"], s["k"], s["cycle"]))
            groups.setdefault(key, []).append(r)
    rows = []
    for (setting, strategy, k, cycle), runs in groups.items():
        start = (m0 or 0.0) if setting == "S+R" else 0.0
        minutes = [r["label_seconds"] / 60.0 for r in runs]
        values = [r["metrics"][metric] for r in runs]
        gains = [(v - start) / m for v, m in zip(values, minutes) if m > 0]
        name = f"{setting} {strategy}" + (f" cycle {cycle}" if cycle is not None else "")
        rows.append({"cell": name, "setting": setting, "strategy": strategy, "k": k,
                     "cycle": cycle, "runs": len(runs),
                     "images": _mean([r["labels_total"] for r in runs]),
                     "boxes": _mean([r["label_boxes"] for r in runs]),
                     "minutes": _mean(minutes), "minutes_per_image":
                         _mean([m / r["labels_total"] for m, r in zip(minutes, runs)
                                if r["labels_total"]]),
                     metric: _mean(values), "start": start,
                     f"{metric}_gain_per_minute": _mean(gains)})
    return rows


def label_cost_markdown(summary: Mapping[str, Any], metric: str = "AP") -> str:
    """The table the report prints: one row a cell, means over its runs."""
    rows = label_cost_rows(summary, metric)
    if not rows:
        return "(runs recorded before labelling costs were: rerun the report)"
    lines = [f"| cell | k | runs | boxes | labelling minutes | minutes / image | {metric} | "
             f"{metric} gain / labelling minute |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['cell']} | {r['k']} | {r['runs']} | {r['boxes']:.1f} | "
                     f"{r['minutes']:.1f} | {r['minutes_per_image']:.2f} | {r[metric]:.3f} | "
                     f"{r[f'{metric}_gain_per_minute']:.4f} |")
    return "\n".join(lines)


def plot_by_minutes(ax, summary: Mapping[str, Any],
                    styles: Mapping[tuple[str, str], tuple[str, str]], metric: str = "AP") -> None:
    """``metric`` against labelling minutes: one curve a (setting, strategy), points = k."""
    rows = [r for r in label_cost_rows(summary, metric) if r["cycle"] is None]
    m0 = (summary.get("m0_s") or {}).get(metric)
    for (setting, strategy) in sorted({(r["setting"], r["strategy"]) for r in rows}):
        pts = sorted((r["minutes"], r[metric]) for r in rows
                     if (r["setting"], r["strategy"]) == (setting, strategy))
        if setting == "S+R" and m0 is not None:
            pts = [(0.0, m0)] + pts
        colour, marker = styles.get((setting, strategy), ("black", "o"))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=colour,
                label=f"{setting} {strategy}")
    ax.set_xlabel("labelling minutes (cost model, mean over runs)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
