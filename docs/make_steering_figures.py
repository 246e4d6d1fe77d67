"""Figures for issue 16's measurements on bolts, drawn from the committed results files only
(no model is run):

- docs/images/steer_topup_bolts.png: failure-steered vs uniform vs no top-up; one cycle per
  seed (steer_topup_bolts*.json) and, where recorded, AP50/AP by cycle of the chained runs
  (steer_topup_cycles_bolts*.json);
- docs/images/sim_to_real_mix_bolts{,_run2}.png: AP and AP50 against the share of renders in
  the fine-tune, per seed, with the gap rule's share marked (sim_to_real_mix_bolts{,_run2}.json:
  two M0_S from two demo runs);
- docs/images/cad_retrain_bolts.png: CPU seconds of a CAD-change retrain against re-rendering
  everything and pretraining again (cad_retrain_bolts.json, toy size) and, where recorded, the
  full-size retrain's candidate against the champion it started from
  (cad_retrain_bolts_full.json, docs/results/bolts_demo_idle.json).

    .venv/bin/python docs/make_steering_figures.py
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ARMS = ("none", "none_matched", "uniform", "failures")
COLOURS = {"none": "#555555", "none_matched": "#aaaaaa", "uniform": "#1f77b4",
           "failures": "#d62728"}


def _rows(pattern: str) -> list[dict]:
    rows = []
    for path in sorted(RESULTS.glob(pattern)):
        rows += json.loads(path.read_text()).get("arms", [])  # a summary file has none
    return rows


def steer_figure(out: Path) -> Path | None:
    single = [r for r in _rows("steer_topup_bolts*.json") if r.get("cycle", 1) == 1]
    chained = _rows("steer_topup_cycles_bolts*.json")
    if not single and not chained:
        return None
    panels = 1 + (2 if chained else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.8), squeeze=False)
    ax = axes[0][0]
    arms = [a for a in ARMS if any(r["arm"] == a for r in single)]
    for i, arm in enumerate(arms):
        values = [r["AP50"] for r in single if r["arm"] == arm]
        ax.scatter([i] * len(values), values, color=COLOURS[arm], zorder=3)
        ax.hlines(sum(values) / len(values), i - 0.25, i + 0.25, color=COLOURS[arm])
    ax.set_xticks(range(len(arms)), arms)
    ax.set_ylabel("val AP50 (15 real photos)")
    seeds = len({r["seed"] for r in single})
    ax.set_title(f"one cycle, equal steps, {seeds} seeds (earlier M0_S)\n(dots: seeds, bar: mean)",
                 fontsize=9)
    if chained:
        for j, metric in enumerate(("AP50", "AP"), start=1):
            ax = axes[0][j]
            by = defaultdict(list)
            for r in chained:
                by[(r["arm"], r["cycle"])].append(r[metric])
            for arm in ARMS:
                cycles = sorted(c for a, c in by if a == arm)
                if not cycles:
                    continue
                means = [sum(by[(arm, c)]) / len(by[(arm, c)]) for c in cycles]
                ax.plot(cycles, means, marker="o", color=COLOURS[arm], label=arm)
                for c in cycles:
                    ax.scatter([c] * len(by[(arm, c)]), by[(arm, c)], color=COLOURS[arm],
                               alpha=0.35, s=12)
            ax.set_xlabel("cycle (labels as in the DBAL run)")
            ax.set_ylabel(f"val {metric}")
            ax.set_xticks(sorted({r["cycle"] for r in chained}))
            seeds = len({r["seed"] for r in chained})
            ax.set_title(f"chained cycles, epochs over each set, {seeds} seeds (line: mean)",
                         fontsize=9)
            ax.legend(fontsize=8)
    fig.suptitle("Failure-steered vs uniform vs no top-up (bolts)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def mix_figure(out: Path, path: Path) -> Path | None:
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    fixed = [a for a in data["arms"] if a["arm"].startswith("fixed")]
    rule = [a for a in data["arms"] if a["arm"] == "gap rule"]
    fig, axes = plt.subplots(1, 2, figsize=(9.2, 3.8))
    for ax, metric in zip(axes, ("AP", "AP50")):
        for seed in sorted({a["seed"] for a in fixed}):
            pts = sorted((a["share"], a[metric]) for a in fixed if a["seed"] == seed)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"seed {seed}")
        for a in rule:
            ax.axvline(a["share"], color="#d62728", linestyle="--", linewidth=1)
        ax.set_xlabel("share of renders in the fine-tune")
        ax.set_ylabel(f"val {metric}")
        ax.legend(fontsize=8)
    gap = data["gap"]
    classes = ", ".join(f"{c} AUC {v['auc']:.3f}" for c, v in gap["classes"].items())
    rule_share = rule[0]["share"] if rule else float("nan")
    fig.suptitle(f"Renders in the fine-tune mix (bolts, {data['labels']} labels): image AUC "
                 f"{gap['image']['auc']:.3f}, {classes}; gap rule share {rule_share:.3f} "
                 "(dashed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def cad_figure(out: Path) -> Path | None:
    path = RESULTS / "cad_retrain_bolts.json"
    if not path.exists():
        return None
    d = json.loads(path.read_text())
    full_path = RESULTS / "cad_retrain_bolts_full.json"
    demo_path = ROOT / "docs" / "results" / "bolts_demo_idle.json"
    full = json.loads(full_path.read_text()) if full_path.exists() and demo_path.exists() else None
    fig, axes = plt.subplots(1, 2 if full else 1, figsize=(13.0 if full else 8.6, 2.8),
                             squeeze=False)
    ax = axes[0][0]
    left = 0.0
    for name, cpu in (("render all (new mesh)", d["render_all_new_mesh"]["cpu_s"]),
                      ("pretrain", d["pretrain"]["cpu_s"])):
        ax.barh(1, cpu, left=left, label=name)
        left += cpu
    ax.barh(0, d["cad_retrain"]["cpu_s"], color="#d62728", label="cad retrain (re-render + fine-tune)")
    ax.set_yticks([0, 1], ["cad retrain", "full redo"])
    ax.set_xlabel("CPU seconds (toy size: 8 renders 320x180)")
    ax.set_title(f"Toy size: retrain {d['cad_retrain_cpu_s']} vs full "
                 f"{d['full_rerender_plus_pretrain_cpu_s']} CPU s (x{d['cad_over_full']})",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if full:
        ax = axes[0][1]
        champion = [c for c in json.loads(demo_path.read_text())["cycles"]
                    if c["version"] == full["cad_retrain_record"]["champion_before"]][0]
        candidate = full["cad_retrain_record"]["val_metrics"]
        metrics = ("AP", "AP50", "AP_Bolt", "AP_Washer")
        xs = range(len(metrics))
        ax.bar([x - 0.2 for x in xs], [champion[m] for m in metrics], width=0.4,
               color="#555555", label=f"champion v{champion['version']} (before)")
        ax.bar([x + 0.2 for x in xs], [candidate[m] for m in metrics], width=0.4,
               color="#d62728", label=f"retrain v{full['cad_retrain_record']['candidate_version']}"
                                      f" ({full['cad_retrain_record']['outcome']})")
        ax.set_xticks(list(xs), metrics)
        ax.set_ylabel("15 real val photos")
        ax.set_title(f"Full size: {full['cad_retrain_record']['rerendered']} renders redone, "
                     f"{full['cad_retrain']['cpu_s']} CPU s", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "images")
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    mixes = [(lambda out, run=run: mix_figure(out, RESULTS / f"{run}.json"), f"{run}.png")
             for run in ("sim_to_real_mix_bolts", "sim_to_real_mix_bolts_run2")]
    for make, name in ((steer_figure, "steer_topup_bolts.png"), *mixes,
                       (cad_figure, "cad_retrain_bolts.png")):
        written = make(args.out_dir / name)
        print(f"wrote {written}" if written else f"{name}: no results file, skipped")


if __name__ == "__main__":
    main()
