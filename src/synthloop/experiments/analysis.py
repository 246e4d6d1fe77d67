"""The statistics of an experiment's results: ``analyse(summary)`` -> ``summary["statistics"]``.

Per cell (setting, strategy, k; or a multi-cycle cycle) over its runs (seed x fold): mean,
standard error, percentile bootstrap interval, means per fold and per seed. Then the paper's
headline quantity: how many labels each S+R strategy (and the multi-cycle run, over its
cumulative labels) needs to reach S+R random's mean AP at ``match_k`` (the largest k run when
``match_k`` was not run), with a bootstrap interval; "not reached" where its curve stays below.
Curves of S+R start at M0_S (0 labels). Works on plain dicts (results.json) only.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from synthloop.experiments.statistics import (bootstrap_labels_to_match, bootstrap_mean_interval,
                                              mean_se)

METRICS = ("AP", "AP50")
PAPER_LABELS_TO_MATCH = 25  # DBAL's labels for random's AP at k = 50 (turbine blades)


def _boot(summary: dict[str, Any]) -> dict[str, Any]:
    e = summary["experiment"]
    return {"resamples": int(e.get("bootstrap_resamples", 2000)),
            "confidence": float(e.get("confidence", 0.95)), "seed": int(e.get("bootstrap_seed", 0))}


def cell_stats(runs: list[dict[str, Any]], metric: str, boot: dict[str, Any]) -> dict[str, Any]:
    """Mean, s.e., bootstrap interval, per-fold and per-seed means of ``runs``' ``metric``."""
    values = [float(r["metrics"][metric]) for r in runs]
    mean, se = mean_se(values)
    lo, hi = bootstrap_mean_interval(values, **boot)
    by_fold: dict[int, list[float]] = defaultdict(list)
    by_seed: dict[int, list[float]] = defaultdict(list)
    for r, v in zip(runs, values):
        by_fold[int(r["spec"].get("fold", 0))].append(v)
        by_seed[int(r["spec"]["seed"])].append(v)
    return {"n": len(values), "mean": mean, "se": se, "interval": [lo, hi],
            "per_fold": {str(f): float(np.mean(v)) for f, v in sorted(by_fold.items())},
            "per_seed": {str(s): float(np.mean(v)) for s, v in sorted(by_seed.items())},
            "values": values}


def _group(runs: list[dict[str, Any]], key) -> dict[Any, list[dict[str, Any]]]:
    out: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        out[key(r)].append(r)
    return dict(out)


def single_cells(summary: dict[str, Any], boot: dict[str, Any]) -> list[dict[str, Any]]:
    groups = _group(summary["single"], lambda r: (r["spec"]["setting"], r["spec"]["strategy"],
                                                  int(r["spec"]["k"])))
    return [{"setting": s, "strategy": st, "k": k, "labels": float(k),
             **{m: cell_stats(runs, m, boot) for m in METRICS if m in runs[0]["metrics"]},
             "means": _means(runs)}
            for (s, st, k), runs in groups.items()]


def _means(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Every metric's mean over the runs (per-class AP, AP75, ...): the report's per-class table."""
    keys = sorted({k for r in runs for k in r["metrics"]})
    return {k: float(np.mean([r["metrics"][k] for r in runs if k in r["metrics"]])) for k in keys}


def multi_cells(summary: dict[str, Any], boot: dict[str, Any]) -> list[dict[str, Any]]:
    groups = _group(summary.get("multi", []), lambda r: int(r["spec"]["cycle"]))
    return [{"setting": "S+R", "strategy": runs[0]["spec"]["strategy"], "k": runs[0]["spec"]["k"],
             "cycle": t, "labels": float(np.mean([r["labels_total"] for r in runs])),
             **{m: cell_stats(runs, m, boot) for m in METRICS if m in runs[0]["metrics"]}}
            for t, runs in sorted(groups.items())]


def m0_values(summary: dict[str, Any], metric: str) -> list[float]:
    """M0_S's metric per fold (one value without folds); empty when there is no M0_S."""
    per_fold = [f["m0_s"][metric] for f in summary.get("folds", []) if f.get("m0_s")]
    if per_fold:
        return [float(v) for v in per_fold]
    m0 = (summary.get("m0_s") or {}).get(metric)
    return [] if m0 is None else [float(m0)]


def match_k(summary: dict[str, Any], cells: list[dict[str, Any]]) -> int | None:
    """The k of S+R random to match: ``match_k`` when it ran, else the largest k run."""
    ks = sorted(c["k"] for c in cells if (c["setting"], c["strategy"]) == ("S+R", "random"))
    if not ks:
        return None
    wanted = int(summary["experiment"].get("match_k", 50))
    return wanted if wanted in ks else ks[-1]


def _sentence(name: str, est: dict[str, Any], ref_k: int, metric: str, conf: float) -> str:
    target = f"the {metric} of S+R random at k = {ref_k} ({est['target']:.3f})"
    if est["labels"] is None:
        return (f"{name} does not reach {target} within {est['max_labels']:g} labels: not reached "
                f"({est['reached_share']:.0%} of bootstrap resamples reach it).")
    if est["labels"] == 0.0 and est["interval"][1] == 0.0:
        return f"{name}: M0_S already reaches {target} before any label."
    lo, hi = est["interval"]
    lo_s = "not reached" if lo is None else f"{lo:.1f}"
    hi_s = f"not reached within {est['max_labels']:g}" if hi is None else f"{hi:.1f}"
    return (f"{name} needs {est['labels']:.1f} labels ({conf:.0%} bootstrap interval {lo_s} to "
            f"{hi_s}) to match {target}.")


def labels_to_match_section(summary: dict[str, Any], cells: list[dict[str, Any]],
                            multi: list[dict[str, Any]], metric: str,
                            boot: dict[str, Any]) -> dict[str, Any]:
    """Per S+R strategy (and the multi-cycle run): the labels it needs to match random."""
    ref_k = match_k(summary, cells)
    if ref_k is None:
        return {"reference": None, "curves": [], "why": "no S+R random runs to match"}
    ref = next(c for c in cells if (c["setting"], c["strategy"], c["k"]) == ("S+R", "random", ref_k))
    if metric not in ref:
        return {"reference": None, "curves": [], "why": f"the runs have no {metric}"}
    m0 = m0_values(summary, metric)
    start = [(0.0, m0)] if m0 else []
    curves: list[tuple[str, list[tuple[float, list[float]]]]] = []
    for strategy in sorted({c["strategy"] for c in cells if c["setting"] == "S+R"} - {"random"}):
        own = sorted((c for c in cells if (c["setting"], c["strategy"]) == ("S+R", strategy)),
                     key=lambda c: c["k"])
        curves.append((f"S+R {strategy}", start + [(c["labels"], c[metric]["values"]) for c in own]))
    if multi:
        name = f"S+R {multi[0]['strategy']}, {len(multi)} cycles of {multi[0]['k']}"
        curves.append((name, start + [(c["labels"], c[metric]["values"]) for c in multi]))
    out = []
    for name, points in curves:
        est = bootstrap_labels_to_match(points, ref[metric]["values"], **boot)
        row = {"curve": name, "labels": est.labels, "interval": list(est.interval),
               "reached_share": est.reached_share, "target": est.target,
               "max_labels": max(x for x, _ in points)}
        row["sentence"] = _sentence(name, row, ref_k, metric, boot["confidence"])
        out.append(row)
    return {"reference": {"setting": "S+R", "strategy": "random", "k": ref_k,
                          "mean": ref[metric]["mean"]}, "curves": out}


def analyse(summary: dict[str, Any]) -> dict[str, Any]:
    """The statistics block of results.json (see the module docstring)."""
    boot = _boot(summary)
    cells = single_cells(summary, boot)
    multi = multi_cells(summary, boot)
    m0 = {}
    for metric in METRICS:
        values = m0_values(summary, metric)
        if values:  # M0_S is one model: its runs are the folds
            m0[metric] = {"n": len(values), "mean": float(np.mean(values)), "values": values,
                          "interval": list(bootstrap_mean_interval(values, **boot))}
    return {"bootstrap": {**boot, "unit": "one run (seed x fold)", "kind": "percentile"},
            "m0_s": m0, "cells": cells, "multi": multi,
            "labels_to_match": {m: labels_to_match_section(summary, cells, multi, m, boot)
                                for m in METRICS},
            "paper_labels_to_match": {"strategy": "dbal", "k": 50,
                                      "labels": PAPER_LABELS_TO_MATCH}}


__all__ = ["analyse", "cell_stats", "labels_to_match_section", "match_k", "m0_values"]
