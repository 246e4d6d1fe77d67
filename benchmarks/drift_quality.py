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
decide. Each trial is also decided without the objects check (colour and size inside the
champion's boxes), i.e. by the image-level checks the monitor had before it:
``flagged_image_level`` next to ``flagged``; and the object statistics are also tested the
other way that was considered, five per-column K-S tests at alpha / 5 (``objects_ks``).
Trials compute the same scores as the Evidently Report without building it (its t-SNE widget
costs seconds; ``--report`` builds it anyway). Reported per condition: share of trials flagged
(overall and per check); for "none" that share is the false-alarm rate. The embedding check is
reported for both methods (mmd, model), each with its permutation-calibrated threshold. Prints
a table and writes JSON.
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
from synthloop.monitoring.features import (OBJECT_COLUMNS, FeatureTable,  # noqa: E402
                                           feature_table)
from synthloop.ragged_npz import load_ragged, save_ragged  # noqa: E402

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
        save_ragged(out / f"{condition}.dets.npz", [s.image_id for s in scores],
                    [len(s.scores) for s in scores],
                    {"boxes": [s.boxes.reshape(-1, 4) for s in scores],
                     "scores": [s.scores for s in scores]},
                    empty={"boxes": np.zeros((0, 4), np.float32),
                           "scores": np.zeros(0, np.float32)})
        m = cfg.monitoring
        tables[condition] = feature_table(scores, [ds.image_path(im) for im in ds.images],
                                          object_min_score=m.object_min_score,
                                          max_objects=m.object_max_per_image)
        print(f"  {condition:<12} {len(images)} images scored in {time.perf_counter() - t0:.0f} s",
              flush=True)
    return tables, str(champ.version)


def restat_objects(tables: dict[str, FeatureTable], folder: Path, workspace: Path,
                   m: MonitoringConfig) -> dict[str, FeatureTable]:
    """The object columns again from the kept images and detections of every condition, with
    ``m``'s object settings (a cached run tried with other settings: no forward pass)."""
    from synthloop.data.coco import CocoDataset
    from synthloop.monitoring.features import object_statistics, read_rgb

    names = {im.id: im.file_name for im in
             CocoDataset.load(workspace / "data" / "pool" / "annotations.json").images}
    out = {}
    for condition, table in tables.items():
        ids, ragged, _ = load_ragged(folder / f"{condition}.dets.npz", ["boxes", "scores"])
        dets = dict(zip(ids, zip(ragged["boxes"], ragged["scores"])))
        rows = [object_statistics(read_rgb(folder / condition / names[i]), *dets[i],
                                  min_score=m.object_min_score, max_objects=m.object_max_per_image)
                for i in table.image_ids]
        stats = {**table.stats, **{c: np.array([r[c] for r in rows]) for c in OBJECT_COLUMNS}}
        out[condition] = FeatureTable(table.image_ids, table.embeddings, table.confidence, stats)
    return out


def per_column_ks(ref: FeatureTable, cur: FeatureTable, cfg: MonitoringConfig) -> bool:
    """The alternative to the objects check: K-S per object column at stat_alpha / 5."""
    import pandas as pd
    from evidently.legacy.calculations.stattests.ks_stattest import _ks_stat_test

    from synthloop.monitoring.drift import object_rows

    a, b = object_rows(ref), object_rows(cur)
    if min(len(a), len(b)) < cfg.object_min_images:
        return False
    return any(_ks_stat_test(pd.Series(a[:, j]), pd.Series(b[:, j]), None, 0.05)[0]
               < cfg.stat_alpha / len(OBJECT_COLUMNS) for j in range(a.shape[1]))


def run_trials(tables: dict[str, FeatureTable], *, trials: int, n_ref: int, n_cur: int,
               cfg: MonitoringConfig, seed: int, report: bool = False,
               conditions: tuple[str, ...] = CONDITIONS) -> dict:
    other = "model" if cfg.embedding_method == "mmd" else "mmd"
    n = len(tables["none"])
    results: dict[str, dict] = {}
    for condition in conditions:
        flags, image_level, objects_ks, per_check, alt, secs = [], [], [], {}, [], []
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
            image_level.append(any(c.drifted for c in checks if c.name != "objects"))
            objects_ks.append(per_column_ks(ref, cur, cfg))
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
        with_objects = np.isfinite(tables[condition].stats[OBJECT_COLUMNS[0]])
        results[condition] = {"trials": trials, "flagged": float(np.mean(flags)),
                              "flagged_image_level": float(np.mean(image_level)),
                              "objects_ks": float(np.mean(objects_ks)),
                              "images_with_objects": float(with_objects.mean()),
                              "per_check": {k: float(np.mean(v)) for k, v in per_check.items()},
                              f"embedding_{other}": float(np.mean(alt)),
                              "seconds_per_check": float(np.median(secs))}
        r = results[condition]
        print(f"  {condition:<12} flagged {r['flagged']:.2f} (image-level "
              f"{r['flagged_image_level']:.2f}, objects {r['per_check']['objects']:.2f}, "
              f"objects K-S {r['objects_ks']:.2f})  "
              f"embedding({cfg.embedding_method}) "
              f"{r['per_check']['embedding']:.2f}  embedding({other}) {r[f'embedding_{other}']:.2f}"
              f"  ({r['seconds_per_check']:.1f} s/check)", flush=True)
    return results


def champion_val(cfg) -> dict[str, float]:
    """The champion's validation metrics as its run recorded them (val_AP, val_AP50)."""
    from mlflow import MlflowClient

    from synthloop import tracking

    tracking.setup(cfg)
    client = MlflowClient()
    champ = client.get_model_version_by_alias(cfg.registered_model_name, "champion")
    metrics = client.get_run(champ.run_id).data.metrics
    return {k: metrics[k] for k in ("val_AP", "val_AP50") if k in metrics}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, default=ROOT / "workspace" / "demo")
    ap.add_argument("--config", type=Path, default=ROOT / "pipelines" / "demo.yaml")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--reference", type=int, default=100)
    ap.add_argument("--current", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--note", default="", help="How the workspace was made (kept in the JSON).")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="Config override, e.g. --set monitoring.object_min_score=0.05.")
    ap.add_argument("--cache", type=Path, default=None,
                    help="Folder to keep the per-condition feature tables in (reruns skip scoring).")
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    ap.add_argument("--report", action="store_true",
                    help="Build Evidently's Report (HTML widgets, t-SNE) in every trial too.")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "drift_quality.json")
    args = ap.parse_args()
    cfg = load_config(args.config, overrides=[f"workspace={args.workspace.resolve()}",
                                              *args.overrides])
    t0 = time.perf_counter()
    # The cache keeps the tables, the condition images and the champion's detections, so a
    # rerun with other object settings (monitoring.object_*) recomputes only those columns.
    cached = args.cache and all((args.cache / f"{c}{ext}").exists() for c in CONDITIONS
                                for ext in (".npz", ".dets.npz"))
    if cached:
        tables = {c: FeatureTable.load(args.cache / f"{c}.npz") for c in CONDITIONS}
        version = (args.cache / "champion_version.txt").read_text()
        tables = restat_objects(tables, args.cache, args.workspace.resolve(), cfg.monitoring)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            work = args.cache or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            print("features (champion forward pass + image statistics):", flush=True)
            tables, version = build_features(args.workspace.resolve(), cfg, work)
        if args.cache:
            for c, table in tables.items():
                table.save(args.cache / f"{c}.npz")
            (args.cache / "champion_version.txt").write_text(version)
    print(f"trials ({args.trials} per condition, {args.reference} reference vs "
          f"{args.current} current images, alpha {cfg.monitoring.stat_alpha}):", flush=True)
    results = run_trials(tables, trials=args.trials, n_ref=args.reference, n_cur=args.current,
                         cfg=cfg.monitoring, seed=args.seed, report=args.report,
                         conditions=tuple(args.conditions))
    report = {"champion_version": version, "champion_val": champion_val(cfg),
              "note": args.note, "monitoring": cfg.monitoring.model_dump(),
              "workspace": str(args.workspace), "trials": args.trials, "seed": args.seed,
              "evidently_report_built": args.report,
              "reference": args.reference, "current": args.current, "results": results,
              "false_alarm_rate": results.get("none", {}).get("flagged"),
              "wall_s": round(time.perf_counter() - t0, 1),
              "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    checks = list(next(iter(results.values()))["per_check"])
    head = (f"{'condition':<12} {'flagged':>7} {'image-lvl':>9} "
            + " ".join(f"{c[:10]:>10}" for c in checks))
    print("\n" + head + f" {'emb(alt)':>9} {'obj K-S':>8}\n" + "-" * len(head))
    for cond, r in results.items():
        alt = next(v for k, v in r.items() if k.startswith("embedding_"))
        print(f"{cond:<12} {r['flagged']:>7.2f} {r['flagged_image_level']:>9.2f} " + " ".join(
            f"{r['per_check'][c]:>10.2f}" for c in checks) + f" {alt:>9.2f} "
            f"{r['objects_ks']:>8.2f}")
    print(f"\nwrote {args.out} ({report['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
