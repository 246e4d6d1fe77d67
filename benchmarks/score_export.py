"""Pool scoring at factory scale: the exported scorer (ONNX Runtime, OpenVINO) against torch,
side by side in one run, on bolts photos at the detector's real input size (1920x1080).

    .venv/bin/python benchmarks/score_export.py --checkpoint /tmp/best.pt [--images 4]

``--checkpoint``: a bolts detector (e.g. a copy of workspace/bolts/checkpoints/pretrain/best.pt);
without it, the bolts pipeline's EfficientNet-Lite0 FPN with its ImageNet backbone and seeded,
untrained heads (nothing downloaded). For each backend the same ``--images`` pool photos are
scored one at a time, the backends interleaved image by image (a load that comes and goes on a
shared machine hits all of them alike); wall and CPU seconds (process_time) per image. Parity
of every backend against torch eager on those photos: matched detections (same label, IoU >=
0.99), the largest probability and pooled-feature differences, and whether DBAL and margin
pick the same images (k = half the photos). Projected wall time for a 10,000-photo pool on one
machine like this one and on N Dask machines (rate x N: scoring chunks are independent).
Serving: ``synthloop serve``'s app on 127.0.0.1 (uvicorn, in this process), one 1920x1080 JPEG,
p50/p99 at 1 and 4 clients, torch vs the exported scorer.
Prints a table and writes benchmarks/results/score_export.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))  # loopback_server: the serving tests' uvicorn helper

import numpy as np  # noqa: E402
import torch  # noqa: E402

from synthloop.active import get_strategy  # noqa: E402
from synthloop.config import DetectorConfig, ServeConfig  # noqa: E402
from synthloop.detection import build_detector, load_checkpoint, load_image  # noqa: E402
from synthloop.detection.export import ExportedScorer, compare_scores, export_onnx  # noqa: E402
from synthloop.detection.scoring import predict_with_probs_and_features  # noqa: E402

POOL = ROOT / "datasets" / "bolts_real" / "train" / "images"
OUT = ROOT / "benchmarks" / "results" / "score_export.json"
POOL_SIZE = 10_000
DASK_MACHINES = (1, 4, 16)
SUBSET_MS = (1, 2, 3, 5)
SUBSET_OUT = ROOT / "benchmarks" / "results" / "score_export_subset.json"


def bolts_model(checkpoint: Path | None) -> tuple[torch.nn.Module, str]:
    if checkpoint is not None:
        return load_checkpoint(checkpoint).eval(), f"checkpoint {checkpoint.name}"
    torch.manual_seed(0)
    cfg = DetectorConfig(architecture="efficientnet_lite0_fpn", backbone_weights="imagenet",
                         min_size=1080, max_size=1920)
    return build_detector(cfg=cfg, num_classes=2).eval(), "lite0 ImageNet backbone, untrained heads"


def quantized_box_graph(files: dict[str, Path], folder: Path) -> dict[str, Path]:
    """int8 (dynamic, per-channel weights) of the box head's FC layers: ONNX Runtime's
    quantize_dynamic, no calibration data. The dense graph (depthwise convolutions) stays fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = folder / "scorer_box_int8.onnx"
    quantize_dynamic(str(files["box"]), str(out), weight_type=QuantType.QInt8, per_channel=True)
    return {"dense": files["dense"], "box": out}


def rates(backends: dict[str, torch.nn.Module], images: list[torch.Tensor]) -> tuple[dict, dict]:
    """Score every image with every backend, interleaved; per-backend seconds and scores."""
    for model in backends.values():  # first call allocates and compiles: not counted
        predict_with_probs_and_features(model, images[:1], batch_size=1, progress=False)
    wall = {k: 0.0 for k in backends}
    cpu = {k: 0.0 for k in backends}
    scores: dict[str, list] = {k: [] for k in backends}
    for i, image in enumerate(images):
        for name, model in backends.items():
            t, c = time.perf_counter(), time.process_time()
            out = predict_with_probs_and_features(model, [image], batch_size=1, progress=False)
            wall[name] += time.perf_counter() - t
            cpu[name] += time.process_time() - c
            scores[name].append(dataclasses.replace(out[0], image_id=i))
    n = len(images)
    table = {k: {"images": n, "s_per_image": round(wall[k] / n, 3),
                 "cpu_s_per_image": round(cpu[k] / n, 3),
                 "images_per_s": round(n / wall[k], 3)} for k in backends}
    return table, scores


def picks(scores: list, k: int) -> dict[str, list[int]]:
    ids = [s.image_id for s in scores]
    out = {}
    for name, params in (("dbal", {"beta": 2.0}), ("margin", {})):
        sel = get_strategy(name, **params).select(ids, [s.probs for s in scores],
                                                  np.stack([s.feature for s in scores]),
                                                  k=k, rng_seed=0)
        out[name] = [int(i) for i in sel.image_ids]
    return out


def serving(models: dict[str, torch.nn.Module], jpeg: bytes, requests: int) -> dict:
    from serve_support import loopback_server
    from synthloop.serve import loadcheck
    from synthloop.serve.app import create_app
    from synthloop.serve.champion import ChampionWatcher, LoadedModel

    out = {}
    for name, model in models.items():
        watcher = ChampionWatcher(None, "bolts")
        watcher.current = LoadedModel(name="bolts", version="1", model=model,
                                      class_names=["Bolt", "Washer"], scorer=name)
        with loopback_server(create_app(watcher, ServeConfig(), start_watcher=False)) as base:
            loadcheck.run(f"{base}/predict", jpeg, clients=1, requests=1)  # warm-up
            for clients in (1, 4):
                run = loadcheck.run(f"{base}/predict", jpeg, clients=clients,
                                    requests=requests * clients // 2 or 1,
                                    max_requests=requests * clients // 2 or 1, max_seconds=300,
                                    timeout_s=300)
                s = run.summary()
                out[f"{name}@{clients}"] = {k: s[k] for k in ("clients", "requests", "failed",
                                                              "p50_ms", "p99_ms",
                                                              "requests_per_s")}
    return out


def subset_study(model: torch.nn.Module, threads: int, k: int, seeds: int) -> dict:
    """Score the whole bolts pool with the exported scorer (OpenVINO), then for m in SUBSET_MS
    and ``seeds`` seeds: how many of DBAL's k picks on a random m*k subset are among its k
    picks on the whole pool, and the mean DBAL score of the picks relative to the whole pool's."""
    from synthloop.stages.score import candidate_subset

    photos = sorted(POOL.glob("*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        scorer = ExportedScorer(model, export_onnx(model, Path(tmp)), runtime="openvino",
                                threads=threads).model
        t, c = time.perf_counter(), time.process_time()
        scores = [dataclasses.replace(predict_with_probs_and_features(
            scorer, [load_image(p)], batch_size=1, progress=False)[0], image_id=i)
            for i, p in enumerate(photos)]
        wall, cpu = time.perf_counter() - t, time.process_time() - c
    by_id = {s.image_id: s for s in scores}
    dbal = get_strategy("dbal", beta=2.0)

    def select(ids: list[int]):
        return dbal.select(ids, [by_id[i].probs for i in ids],
                           np.stack([by_id[i].feature for i in ids]), k=k, rng_seed=0)

    full = select(list(by_id))
    full_ids, full_mean = set(full.image_ids), float(np.mean(full.scores))
    rows = {}
    for m in SUBSET_MS:
        overlap, ratio = [], []
        for seed in range(seeds):
            sub = select(candidate_subset(list(by_id), m=m, k=k, seed=seed))
            overlap.append(len(full_ids & set(sub.image_ids)) / k)
            ratio.append(float(np.mean(sub.scores)) / full_mean)
        rows[f"m={m}"] = {"m": m, "scored": min(m * k, len(photos)),
                          "overlap_with_full_pool_picks": round(float(np.mean(overlap)), 3),
                          "mean_pick_score_vs_full": round(float(np.mean(ratio)), 3)}
    return {"pool": len(photos), "k": k, "seeds": seeds, "strategy": "dbal beta 2",
            "scorer": "onnx:openvino", "pool_wall_s": round(wall, 1),
            "pool_cpu_s": round(cpu, 1), "subsets": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a bolts detector checkpoint (default: lite0, ImageNet backbone)")
    parser.add_argument("--images", type=int, default=4, help="pool photos per backend")
    parser.add_argument("--threads", type=int, default=2, help="torch/ORT/OpenVINO threads")
    parser.add_argument("--serve-requests", type=int, default=4,
                        help="requests per client count (x clients / 2); 0: skip serving")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--subset-study", action="store_true",
                        help="instead: score the whole bolts pool with the exported scorer and "
                             "compare DBAL's picks on m*k subsets with its picks on the pool "
                             f"(writes {SUBSET_OUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    if args.checkpoint is not None and not args.checkpoint.is_file():
        print(f"error: no checkpoint at {args.checkpoint}", file=sys.stderr)
        return 2
    if args.images < 2:
        print("error: --images must be >= 2 (the picks compare k = images // 2)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    cpu0, t_start = time.process_time(), time.perf_counter()
    model, source = bolts_model(args.checkpoint)
    if args.subset_study:
        study = {"command": "python benchmarks/score_export.py " + " ".join(argv or sys.argv[1:]),
                 "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "model": source, **subset_study(model, args.threads, k=10, seeds=20)}
        SUBSET_OUT.write_text(json.dumps(study, indent=1) + "\n")
        for name, row in study["subsets"].items():
            print(f"{name:5s} scored {row['scored']:3d}: {row['overlap_with_full_pool_picks']:.2f} "
                  f"of the pool's picks, mean score {row['mean_pick_score_vs_full']:.2f} x")
        print(f"wrote {SUBSET_OUT}; pool scored in {study['pool_wall_s']} s "
              f"({study['pool_cpu_s']} CPU s)")
        return 0
    photos = sorted(POOL.glob("*.jpg"))[:args.images]
    images = [load_image(p) for p in photos]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        files = export_onnx(model, Path(tmp))
        export_s = time.perf_counter() - t
        sizes = {k: round(v.stat().st_size / 1e6, 1) for k, v in files.items()}
        int8 = quantized_box_graph(files, Path(tmp))
        backends = {
            "torch eager": model,
            "onnxruntime fp32": ExportedScorer(model, files, runtime="onnxruntime",
                                               threads=args.threads).model,
            "openvino fp32": ExportedScorer(model, files, runtime="openvino",
                                            threads=args.threads).model,
            "onnxruntime fp32 + int8 box head": ExportedScorer(model, int8, runtime="onnxruntime",
                                                               threads=args.threads).model,
        }
        table, scores = rates(backends, images)
        k = len(images) // 2
        reference = picks(scores["torch eager"], k)
        for name, row in table.items():
            row["speedup_vs_torch_eager"] = round(table["torch eager"]["s_per_image"]
                                                  / row["s_per_image"], 2)
            row["cpu_speedup_vs_torch_eager"] = round(table["torch eager"]["cpu_s_per_image"]
                                                      / row["cpu_s_per_image"], 2)
            row["parity"] = {m: round(v, 6) for m, v in
                             compare_scores(scores["torch eager"], scores[name]).items()}
            mine = picks(scores[name], k)
            row["same_picks"] = {m: mine[m] == reference[m] for m in mine}
            row["picks"] = mine
            row["projected_10k_pool_h"] = {
                f"{n}_machines": round(POOL_SIZE * row["s_per_image"] / n / 3600, 2)
                for n in DASK_MACHINES}
        serve = {}
        if args.serve_requests:
            buf = io.BytesIO()
            from PIL import Image

            Image.open(photos[0]).convert("RGB").save(buf, "JPEG", quality=90)
            serve = serving({"torch": model, "onnx:openvino": backends["openvino fp32"]},
                            buf.getvalue(), args.serve_requests)
    result = {
        "command": "python benchmarks/score_export.py " + " ".join(argv or sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": torch.get_num_threads(), "platform": platform.platform(),
                    "threads": args.threads, "note": "shared with a running experiment"},
        "model": source, "input": f"{images[0].shape[2]}x{images[0].shape[1]} bolts_real photos",
        "export_s": round(export_s, 2), "onnx_mb": sizes, "backends": table,
        "serving": serve, "pool_size_projected": POOL_SIZE,
        "cpu_s_total": round(time.process_time() - cpu0, 1),
        "wall_s_total": round(time.perf_counter() - t_start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'backend':32s} {'s/img':>7s} {'cpu s/img':>9s} {'x eager':>7s} {'matched':>8s} "
          f"{'max dp':>8s} {'same picks':>10s} {'10k h (1/4/16)':>16s}")
    for name, row in table.items():
        proj = "/".join(str(v) for v in row["projected_10k_pool_h"].values())
        same = "yes" if all(row["same_picks"].values()) else str(row["same_picks"])
        print(f"{name:32s} {row['s_per_image']:7.2f} {row['cpu_s_per_image']:9.2f} "
              f"{row['speedup_vs_torch_eager']:7.2f} {row['parity']['matched']:8.3f} "
              f"{row['parity']['max_prob_diff']:8.1e} {same:>10s} {proj:>16s}")
    for name, row in serve.items():
        print(f"serve {name:26s} p50 {row['p50_ms']:8.0f} ms  p99 {row['p99_ms']:8.0f} ms "
              f"({row['requests']} requests)")
    print(f"wrote {args.out}; {result['cpu_s_total']} CPU s, "
          f"{result['wall_s_total']} s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
