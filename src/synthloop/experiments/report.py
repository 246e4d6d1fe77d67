"""Tables and plots of an experiment's results, shaped like the paper's Table A1, Fig. 6, Fig. 8.

``write_report(summary, folder)`` writes ``table.md``: the labels each strategy needs to match
random (the paper's headline), AP and AP50 means per real-image count (R random, S+R random,
margin, DBAL, multi-cycle; Table A1's shape), every cell with its runs, standard error and
bootstrap interval, per-fold means when the validation set rotates, and per-class AP. Then
``fig6.png`` (AP against labelled real images per strategy, bars: bootstrap intervals) and
``fig8.png`` (the multi-cycle run against the single-cycle ones), and, when the runs carry
labelling costs, a table by labelling minutes and ``fig_label_minutes.png`` (AP against
annotator minutes: experiments/label_cost.py). The numbers come from
``summary["statistics"]`` (experiments/analysis.py), computed here when absent.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from synthloop.active import strategy_class, strategy_names
from synthloop.experiments.analysis import analyse
from synthloop.experiments.label_cost import label_cost_markdown, label_cost_rows, plot_by_minutes
from synthloop.experiments.statistics import mean_se
from synthloop.io_utils import atomic_write_text

R_MARKERS = ("s", "p", "8", "*")  # R curves are grey
# S+R curves, in the registry's order (active/): random, margin, entropy, least_confidence,
# dbal, coreset get the colours they always had; strategies added later take the next ones.
PALETTE = [("tab:blue", "o"), ("tab:orange", "^"), ("tab:purple", "v"), ("tab:brown", "<"),
           ("tab:green", "D"), ("tab:pink", ">"), ("tab:olive", "P"), ("tab:cyan", "X"),
           ("tab:red", "h"), ("black", "d")]


def columns() -> list[tuple[str, str]]:
    """(setting, strategy) columns: R with the strategies that need no model, then S+R with
    every registered one."""
    names = strategy_names()
    return ([("R", n) for n in names if not strategy_class(n).needs_model()]
            + [("S+R", n) for n in names])


def styles() -> dict[tuple[str, str], tuple[str, str]]:
    """(colour, marker) of each column's curve."""
    cols = columns()
    sr = [c for c in cols if c[0] == "S+R"]
    r = [c for c in cols if c[0] == "R"]
    return {**{c: ("tab:gray", R_MARKERS[i % len(R_MARKERS)]) for i, c in enumerate(r)},
            **{c: PALETTE[i % len(PALETTE)] for i, c in enumerate(sr)}}


def _stats(summary: dict[str, Any]) -> dict[str, Any]:
    if "statistics" not in summary:
        summary = {**summary, "statistics": analyse(summary)}
    return summary["statistics"]


def _fmt(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _by_cell(stats: dict[str, Any]) -> dict[tuple[str, str, int], dict[str, Any]]:
    return {(c["setting"], c["strategy"], c["k"]): c for c in stats["cells"]}


def _multi_name(summary: dict[str, Any]) -> str:
    mc = summary["experiment"].get("multi_cycle") or {}
    return f"S+R {mc.get('strategy', '')}, cycles of {mc.get('k', '')}"


def table_markdown(summary: dict[str, Any], metric: str = "AP") -> str:
    """Mean ``metric`` per real-image count, one column per setting and strategy."""
    stats = _stats(summary)
    cells = _by_cell(stats)
    ks = summary["experiment"]["ks"]
    present = [c for c in columns() if any((c[0], c[1], k) in cells for k in ks)]
    multi = {round(c["labels"]): c[metric]["mean"] for c in stats["multi"] if metric in c}
    mc_name = _multi_name(summary) if multi else None
    head = ["real images"] + [f"{s} {st}" for s, st in present] + ([mc_name] if mc_name else [])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    m0 = stats["m0_s"].get(metric, {}).get("mean")
    for n in sorted({0, *ks, *multi}):
        row = [str(n)]
        for setting, strategy in present:
            if n == 0:
                row.append(_fmt(m0) if setting == "S+R" else "-")
            else:
                cell = cells.get((setting, strategy, n))
                row.append(_fmt(cell[metric]["mean"]) if cell and metric in cell else "-")
        if mc_name:
            row.append(_fmt(m0) if n == 0 else _fmt(multi.get(n)))
        rows.append("| " + " | ".join(row) + " |")
    return "\n".join(rows)


def _cell_rows(stats: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    order = {c: i for i, c in enumerate(columns())}
    rows = [(f"{c['setting']} {c['strategy']} k={c['k']}", c)
            for c in sorted(stats["cells"], key=lambda c: (order.get((c["setting"], c["strategy"]), 99),
                                                           c["k"]))]
    rows += [(f"S+R {c['strategy']} cycle {c['cycle']} ({c['labels']:g} labels)", c)
             for c in stats["multi"]]
    return rows


def cells_markdown(summary: dict[str, Any], metric: str = "AP") -> str:
    """Every cell: its runs, per-seed means (over folds), mean, s.e., bootstrap interval."""
    stats = _stats(summary)
    conf = stats["bootstrap"]["confidence"]
    lines = [f"| cell | runs | per seed | mean | standard error | {conf:.0%} bootstrap interval |",
             "|---|---|---|---|---|---|"]
    for name, cell in _cell_rows(stats):
        if metric not in cell:
            continue
        s = cell[metric]
        per = " / ".join(f"{v:.3f}" for v in s["per_seed"].values())
        lo, hi = s["interval"]
        lines.append(f"| {name} | {s['n']} | {per} | {s['mean']:.3f} | {s['se']:.3f} | "
                     f"{lo:.3f} to {hi:.3f} |")
    return "\n".join(lines)


def folds_markdown(summary: dict[str, Any], metric: str = "AP") -> str:
    """Mean ``metric`` per validation fold (over seeds), and pooled over folds."""
    stats = _stats(summary)
    folds = [str(f["fold"]) for f in summary.get("folds", [])]
    lines = ["| cell | " + " | ".join(f"fold {f}" for f in folds) + " | pooled |",
             "|---|" + "---|" * (len(folds) + 1)]
    m0 = [f.get("m0_s") or {} for f in summary.get("folds", [])]
    if any(metric in m for m in m0):
        pooled = stats["m0_s"].get(metric, {}).get("mean")
        lines.append("| M0_S (0 labels) | " + " | ".join(_fmt(m.get(metric)) for m in m0)
                     + f" | {_fmt(pooled)} |")
    for name, cell in _cell_rows(stats):
        if metric in cell:
            s = cell[metric]
            lines.append(f"| {name} | " + " | ".join(_fmt(s["per_fold"].get(f)) for f in folds)
                         + f" | {s['mean']:.3f} |")
    return "\n".join(lines)


def match_markdown(summary: dict[str, Any]) -> str:
    """The labels each strategy needs to match S+R random, one sentence a curve and metric."""
    stats = _stats(summary)
    lines = []
    for metric, section in stats["labels_to_match"].items():
        if section.get("reference") is None:
            lines.append(f"- {metric}: cannot be computed ({section.get('why')}).")
        lines += [f"- {metric}: {row['sentence']}" for row in section["curves"]]
    paper = stats.get("paper_labels_to_match") or {}
    if paper:
        lines.append(f"- The paper (turbine blades, AP): DBAL needed {paper['labels']} labels to "
                     f"match random at k = {paper['k']}.")
    return "\n".join(lines)


def per_class_markdown(summary: dict[str, Any]) -> str:
    """Mean per-class AP of every cell (over its runs)."""
    runs: list[tuple[str, list[dict[str, float]]]] = [
        ("M0_S (0 real)", [f["m0_s"] for f in summary.get("folds", []) if f.get("m0_s")]
         or ([summary["m0_s"]] if summary.get("m0_s") else []))]
    groups: dict[str, list[dict[str, float]]] = {}
    for r in summary["single"]:
        s = r["spec"]
        groups.setdefault(f"{s['setting']} {s['strategy']} k={s['k']}", []).append(r["metrics"])
    for r in summary.get("multi", []):
        s = r["spec"]
        groups.setdefault(f"S+R {s['strategy']} cycle {s['cycle']}", []).append(r["metrics"])
    runs += list(groups.items())
    classes = sorted({k[3:] for _, ms in runs for m in ms for k in m if k.startswith("AP_")})
    lines = ["| cell | runs | AP | AP50 | " + " | ".join(f"AP {c}" for c in classes) + " |",
             "|---|---|---|---|" + "---|" * len(classes)]
    for name, ms in runs:
        if not ms:
            continue
        mean = {key: mean_se([m[key] for m in ms if key in m])[0]
                for key in ["AP", "AP50", *(f"AP_{c}" for c in classes)]}
        lines.append(f"| {name} | {len(ms)} | {_fmt(mean['AP'])} | {_fmt(mean['AP50'])} | "
                     + " | ".join(_fmt(mean[f"AP_{c}"]) for c in classes) + " |")
    return "\n".join(lines)


def _errorbar(ax, xs: list[float], cells: list[dict[str, Any]], **kw) -> None:
    """Means with their bootstrap intervals as asymmetric bars."""
    ys = [c["mean"] for c in cells]
    low = [max(0.0, c["mean"] - c["interval"][0]) for c in cells]
    high = [max(0.0, c["interval"][1] - c["mean"]) for c in cells]
    ax.errorbar(xs, ys, yerr=[low, high], capsize=3, **kw)


def _m0_point(stats: dict[str, Any], metric: str) -> dict[str, Any] | None:
    return stats["m0_s"].get(metric) or None


def _plot_single(ax, summary: dict[str, Any], metric: str) -> None:
    stats = _stats(summary)
    cells = _by_cell(stats)
    ks = sorted(summary["experiment"]["ks"])
    m0 = _m0_point(stats, metric)
    for (setting, strategy), (color, marker) in styles().items():
        xs = [k for k in ks if (setting, strategy, k) in cells]
        if not xs:
            continue
        points = [cells[(setting, strategy, k)][metric] for k in xs]
        if setting == "S+R" and m0 is not None:
            xs, points = [0] + xs, [m0] + points
        _errorbar(ax, xs, points, color=color, marker=marker, label=f"{setting} {strategy}")
    ref = stats["labels_to_match"].get(metric, {}).get("reference")
    if ref:  # the level every strategy is asked to match (table.md, "Labels to match random")
        ax.axhline(ref["mean"], color="tab:blue", ls=":", lw=1,
                   label=f"S+R random at k = {ref['k']}")
    ax.set_xlabel("labelled real images")
    ax.set_ylabel(f"COCO {metric} on the real validation set")
    ax.grid(alpha=0.3)
    conf = stats["bootstrap"]["confidence"]
    ax.set_title(f"mean over seeds x folds; bars: {conf:.0%} bootstrap interval", fontsize=9)
    ax.legend(fontsize=8)


def _plot_multi(ax, summary: dict[str, Any], metric: str) -> None:
    stats = _stats(summary)
    m0 = _m0_point(stats, metric)
    xs = [c["labels"] for c in stats["multi"]]
    points = [c[metric] for c in stats["multi"]]
    if m0 is not None:
        xs, points = [0.0] + xs, [m0] + points
    _errorbar(ax, xs, points, color="black", marker="*", markersize=10, lw=2,
              label=f"{_multi_name(summary)} ({len(stats['multi'])} cycles)")
    ax.legend(fontsize=8)


def _figure(summary: dict[str, Any], folder: Path, name: str, title: str, multi: bool) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, metric in zip(axes, ("AP", "AP50")):
        _plot_single(ax, summary, metric)
        if multi:
            _plot_multi(ax, summary, metric)
    fig.suptitle(f"{summary['pipeline']}: {title}")
    fig.tight_layout()
    path = folder / name
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _data_line(summary: dict[str, Any]) -> str:
    folds = summary.get("folds") or []
    kind = ("RENDERED images standing in for real photos (the demo's proxy domain)"
            if summary.get("proxy_real") else "real images")
    if len(folds) > 1:
        sizes = sorted({f["val_images"] for f in folds})
        where = (f"{len(folds)} rotating folds of {'/'.join(map(str, sizes))} {kind}, each the "
                 "validation set once (pool: the other images)")
    else:
        where = f"{summary['val_images']} {kind}; pool: {summary['pool_images']} images"
    d = summary["detector"]
    return (f"Validation: {where}; never trained on. Detector: {d['architecture']} at "
            f"{d['min_size']}/{d['max_size']}.")


def minutes_figure(summary: dict[str, Any], path: Path) -> Path:
    """AP and AP50 against labelling minutes (experiments/label_cost.py)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, metric in zip(axes, ("AP", "AP50")):
        plot_by_minutes(ax, summary, styles(), metric)
    fig.suptitle(f"{summary['pipeline']}: AP by labelling minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_report(summary: dict[str, Any], folder: Path) -> list[Path]:
    folder = Path(folder)
    summary = {**summary, "statistics": _stats(summary)}
    e, b = summary["experiment"], summary["statistics"]["bootstrap"]
    seeds = e.get("seeds") or e.get("random_seeds") or []
    text = [f"# Experiment: {summary['pipeline']} at scale `{summary['scale']}`", "",
            _data_line(summary), "",
            f"Every cell: {len(seeds)} seeds x {len(summary.get('folds') or [0])} fold(s); "
            f"intervals: percentile bootstrap over the runs ({b['resamples']} resamples, "
            f"seed {b['seed']}).", "",
            "## Labels to match random", "", match_markdown(summary), "",
            "## COCO AP@[.5:.95], mean of the runs (Table A1 shape)", "",
            table_markdown(summary, "AP"), "",
            "## AP50, mean of the runs", "", table_markdown(summary, "AP50"), "",
            "## Every cell (AP)", "", cells_markdown(summary, "AP"), "",
            "## Every cell (AP50)", "", cells_markdown(summary, "AP50"), ""]
    if len(summary.get("folds") or []) > 1:
        text += ["## Per validation fold (AP, mean over seeds)", "",
                 folds_markdown(summary, "AP"), ""]
    text += ["## Per-class AP (mean of the runs)", "", per_class_markdown(summary), ""]
    by_minutes = bool(label_cost_rows(summary))
    if by_minutes:
        text += ["## By labelling minutes (cost model `labeling.cost`, every picked box drawn "
                 "new; gain over M0_S for S+R, over AP 0 for R)", "",
                 label_cost_markdown(summary), ""]
    path = folder / "table.md"
    atomic_write_text(path, "\n".join(text))
    files = [path, _figure(summary, folder, "fig6.png", "one cycle of k labels (Fig. 6 shape)",
                           multi=False)]
    if by_minutes:
        files.append(minutes_figure(summary, folder / "fig_label_minutes.png"))
    if summary.get("multi"):
        files.append(_figure(summary, folder, "fig8.png",
                             "several small cycles vs one (Fig. 8 shape)", multi=True))
    return files


__all__ = ["cells_markdown", "folds_markdown", "match_markdown", "mean_se", "per_class_markdown",
           "table_markdown", "write_report"]
