"""The gate decides on metrics without torch: ``synthloop.metrics`` (COCO evaluation, the
detections record) and every ``synthloop.gating`` module import and run with no torch loaded.

Run in a fresh interpreter: in the test process other tests have long imported torch.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import importlib, pkgutil, sys, tempfile
    from pathlib import Path

    import numpy as np

    import synthloop.gating
    for info in pkgutil.iter_modules(synthloop.gating.__path__):
        importlib.import_module(f"synthloop.gating.{info.name}")
    from synthloop.artifacts import EvalResult
    from synthloop.config import GateConfig
    from synthloop.data.coco import CocoAnnotation, CocoDataset, CocoImage, categories_for
    from synthloop.gating.bootstrap import paired_bootstrap
    from synthloop.gating.decision import decide_promotion
    from synthloop.gating.predictions import load_predictions, save_predictions
    from synthloop.gating.report import pr_curve
    from synthloop.metrics import ImageDetections, evaluate_predictions

    images = [CocoImage(i + 1, f"{i}.jpg", 100, 100) for i in range(6)]
    anns = [CocoAnnotation(i + 1, i + 1, 1, (10.0 + i, 10.0, 30.0, 25.0), 750.0) for i in range(6)]
    ds = CocoDataset(images, anns, categories_for(["part"]), Path("."))

    def found(hit):
        return [ImageDetections(a.image_id, np.array([[a.bbox[0], a.bbox[1], a.bbox[0] + 30,
                                                        a.bbox[1] + 25]], np.float32)[: int(a.image_id in hit)],
                                np.ones(int(a.image_id in hit), np.int64),
                                np.full(int(a.image_id in hit), 0.9, np.float32)) for a in anns]

    cand, champ = found(set(range(1, 7))), found({1, 2, 3})
    with tempfile.TemporaryDirectory() as tmp:
        cand = load_predictions(save_predictions(Path(tmp) / "c.npz", cand))
    interval, _ = paired_bootstrap(ds, cand, champ, resamples=5, seed=0)
    metrics = {k: evaluate_predictions(ds, p) for k, p in (("cand", cand), ("champ", champ))}
    decision = decide_promotion(EvalResult(metrics["cand"], "md5", 6),
                                EvalResult(metrics["champ"], "md5", 6), GateConfig(),
                                interval=interval)
    assert decision.promote, decision
    assert pr_curve(ds, cand)[1].shape == (101,)
    print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
""")


def test_gating_imports_and_decides_without_torch():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-2000:]
