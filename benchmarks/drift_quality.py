"""Drift detector quality on controlled shifts: detection rate and false-alarm rate.

    .venv/bin/python benchmarks/drift_quality.py [--workspace workspace/demo] [--trials 30]

Needs a finished demo workspace (``make demo``): its champion (the model whose P2 features and
confidences the monitor uses), its pool images and their raw renders (staging/pool/raw: RGBA +
instance ids), so every condition is made by the demo's own compositing code:

* none        the pool images as rendered (the reference distribution)
* brightness  x1.25 after compositing (a lamp change)
* blur        Gaussian blur sigma 1.5 px after compositing (focus drift)
* background  composited over the *workshop* backgrounds instead of the factory ones
* part_colour the part's pixels (instance ids 1..999) tinted orange before compositing

Per trial: a random reference of ``--reference`` images (condition none) and ``--current``
OTHER images in the trial's condition; the monitor's checks (monitoring/drift.py, Evidently)
decide. Trials compute the same scores as the Evidently Report without building it (its t-SNE
widget costs seconds; ``--report`` builds it anyway). Reported per condition: share of trials flagged (overall and per check); for "none"
that share is the false-alarm rate. The embedding check is reported for both methods (mmd,
model), each with its permutation-calibrated threshold. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from synthloop.config import MonitoringConfig, load_config  # noqa: E402
from synthloop.monitoring.decision import decide_drift  # noqa: E402
from synthloop.monitoring.drift import (_embedding_method, _frame, _pca_components,  # noqa: E402
                                        permutation_threshold, run_checks)
from synthloop.monitoring.features import FeatureTable, feature_table  # noqa: E402

CONDITIONS = ("none", "brightness", "blur", "background", "part_colour")


def make_image(rgba: Image.Image, ids: np.ndarray, meta: dict, condition: str, seed: int) -> Image.Image:
    from synthloop.synthesis.backgrounds import get_background_source
    from synthloop.synthesis.composite import composite

    plan = {"background": meta["background"], "sensor": meta["sensor"]}
    if condition == "background":
        plan["background"] = get_background_source("procedural:workshop").choose(
            np.random.default_rng(seed))
    if condition == "part_colour":
        arr = np.asarray(rgba, np.float32).copy()
        part = (ids >= 1) & (ids < 1000)
        grey = arr[..., :3][part].mean(axis=1, keepdims=True)
        arr[..., :3][part] = np.clip(grey * np.array([1.35, 0.7, 0.25]) + [40, 10, 0], 0, 255)
        rgba = Image.fromarray(arr.astype(np.uint8), "RGBA")
    img = composite(rgba, plan)
    if condition == "brightness":
        img = Image.fromarray(np.clip(np.asarray(img, np.float32) * 1.25, 0, 255).astype(np.uint8))
    if condition == "blur":
        img = img.filter(ImageFilter.GaussianBlur(1.5))
    return img


def build_features(workspace: Path, cfg, out: Path) -> dict[str, FeatureTable]:
    """Render every condition of every pool image and score it with the champion (one pass)."""
    from mlflow import MlflowClient

    from synthloop import tracking
    from synthloop.data.coco import CocoDataset, CocoImage
    from synthloop.detection import load_checkpoint, predict_with_probs_and_features

    tracking.setup(cfg)
    champ = MlflowClient().get_model_version_by_alias(cfg.registered_model_name, "champion")
    net = load_checkpoint(tracking.download_checkpoint(champ.source, out / "ckpt"))
    pool = CocoDataset.load(workspace / "data" / "pool" / "annotations.json")
    raw = workspace / "staging" / "pool" / "raw"
    tables = {}
    for condition in CONDITIONS:
        folder = out / condition
        folder.mkdir(parents=True, exist_ok=True)
        images = []
        for im in pool.images:
            stem = Path(im.file_name).stem
            rgba = Image.open(raw / f"{stem}.png").convert("RGBA")
            ids = np.load(raw / f"{stem}.ids.npz")["ids"]
            img = make_image(rgba, ids, im.meta, condition, seed=im.id)
            img.save(folder / im.file_name, quality=int(im.meta["sensor"]["jpeg_quality"]))
            images.append(CocoImage(im.id, im.file_name, im.width, im.height))
        ds = CocoDataset(images, [], pool.categories, folder)
        t0 = time.perf_counter()
        scores = predict_with_probs_and_features(net, ds, batch_size=8, progress=False)
        tables[condition] = feature_table(scores, [ds.image_path(im) for im in ds.images])
        print(f"  {condition:<12} {len(images)} images scored in {time.perf_counter() - t0:.0f} s",
              flush=True)
    return tables, str(champ.version)


def run_trials(tables: dict[str, FeatureTable], *, trials: int, n_ref: int, n_cur: int,
               cfg: MonitoringConfig, seed: int, report: bool = False,
               conditions: tuple[str, ...] = CONDITIONS) -> dict:
    other = "model" if cfg.embedding_method == "mmd" else "mmd"
    n = len(tables["none"])
    results: dict[str, dict] = {}
    for condition in conditions:
        flags, per_check, alt, secs = [], {}, [], []
        for t in range(trials):
            rng = np.random.default_rng(seed * 1000 + t)
            order = rng.permutation(n)
            ref = tables["none"].take(order[:n_ref])
            cur = tables[condition].take(order[n_ref:n_ref + n_cur])
            t0 = time.perf_counter()
            checks = run_checks(ref, cur, cfg.model_copy(update={"seed": t}),
                                report=report)
            secs.append(time.perf_counter() - t0)
            d = decide_drift(checks, n_reference=n_ref, n_current=n_cur, min_current=2)
            flags.append(d.drifted)
            for c in checks:
                per_check.setdefault(c.name, []).append(c.drifted)
            pca = _pca_components(cfg, n_ref, n_cur, ref.embeddings.shape[1])
            method = _embedding_method(other, pca)
            with threadpool_limits(limits=1):  # as run_checks does
                score = float(method(_frame(cur.embeddings), _frame(ref.embeddings))[0])
                thr = permutation_threshold(ref.embeddings, cur.embeddings, method,
                                            alpha=cfg.stat_alpha, seed=t,
                                            permutations=cfg.permutations)
            alt.append(score > thr)
        results[condition] = {"trials": trials, "flagged": float(np.mean(flags)),
                              "per_check": {k: float(np.mean(v)) for k, v in per_check.items()},
                              f"embedding_{other}": float(np.mean(alt)),
                              "seconds_per_check": float(np.median(secs))}
        r = results[condition]
        print(f"  {condition:<12} flagged {r['flagged']:.2f}  embedding({cfg.embedding_method}) "
              f"{r['per_check']['embedding']:.2f}  embedding({other}) {r[f'embedding_{other}']:.2f}"
              f"  ({r['seconds_per_check']:.1f} s/check)", flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, default=ROOT / "workspace" / "demo")
    ap.add_argument("--config", type=Path, default=ROOT / "pipelines" / "demo.yaml")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--reference", type=int, default=100)
    ap.add_argument("--current", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=None,
                    help="Folder to keep the per-condition feature tables in (reruns skip scoring).")
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    ap.add_argument("--report", action="store_true",
                    help="Build Evidently's Report (HTML widgets, t-SNE) in every trial too.")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "drift_quality.json")
    args = ap.parse_args()
    cfg = load_config(args.config, overrides=[f"workspace={args.workspace.resolve()}"])
    t0 = time.perf_counter()
    cached = args.cache and all((args.cache / f"{c}.npz").exists() for c in CONDITIONS)
    if cached:
        tables = {c: FeatureTable.load(args.cache / f"{c}.npz") for c in CONDITIONS}
        version = (args.cache / "champion_version.txt").read_text()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            print("features (champion forward pass + image statistics):", flush=True)
            tables, version = build_features(args.workspace.resolve(), cfg, Path(tmp))
        if args.cache:
            args.cache.mkdir(parents=True, exist_ok=True)
            for c, table in tables.items():
                table.save(args.cache / f"{c}.npz")
            (args.cache / "champion_version.txt").write_text(version)
    print(f"trials ({args.trials} per condition, {args.reference} reference vs "
          f"{args.current} current images, alpha {cfg.monitoring.stat_alpha}):", flush=True)
    results = run_trials(tables, trials=args.trials, n_ref=args.reference, n_cur=args.current,
                         cfg=cfg.monitoring, seed=args.seed, report=args.report,
                         conditions=tuple(args.conditions))
    report = {"champion_version": version, "monitoring": cfg.monitoring.model_dump(),
              "evidently_report_built": args.report,
              "reference": args.reference, "current": args.current, "results": results,
              "false_alarm_rate": results.get("none", {}).get("flagged"),
              "wall_s": round(time.perf_counter() - t0, 1),
              "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    checks = list(next(iter(results.values()))["per_check"])
    head = f"{'condition':<12} {'flagged':>7} " + " ".join(f"{c[:10]:>10}" for c in checks)
    print("\n" + head + f" {'emb(alt)':>9}\n" + "-" * len(head))
    for cond, r in results.items():
        alt = next(v for k, v in r.items() if k.startswith("embedding_"))
        print(f"{cond:<12} {r['flagged']:>7.2f} " + " ".join(
            f"{r['per_check'][c]:>10.2f}" for c in checks) + f" {alt:>9.2f}")
    print(f"\nwrote {args.out} ({report['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
