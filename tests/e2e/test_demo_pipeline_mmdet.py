"""The demo pipeline at toy size with ``detector.backend: mmdet`` (mmdet's Faster R-CNN R50-FPN):
render -> pretrain -> score -> query -> label -> finetune -> gate, resumable, as with torchvision.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmdet_support import require_mmdet
from tests_support import write_toy_pipeline

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.render, pytest.mark.mmdet]


def toy_mmdet_config(tmp_path: Path) -> Path:
    return write_toy_pipeline(tmp_path, name="toy-mmdet.yaml", update={"pretrain": {"max_minutes": 2}},
                              replace={"detector": {"backend": "mmdet", "min_size": 72, "max_size": 96,
                                                    "box_batch_size_per_image": 64,
                                                    "rpn_post_nms_top_n_train": 300}})


def test_demo_pipeline_runs_with_the_mmdet_backend(tmp_path, render_python):
    require_mmdet()
    from synthloop.config import load_config
    from synthloop.detection import load_checkpoint
    from synthloop.stages.pipeline import run_pipeline
    from synthloop.stages.score import load_scores
    from synthloop.stages.workspace import Workspace

    cfg = load_config(toy_mmdet_config(tmp_path))
    assert cfg.detector.backend == "mmdet"
    rows = run_pipeline(cfg, progress=False)
    assert [r.cycle for r in rows] == [0, 1]
    assert rows[1].labels_total == 3 and rows[1].labels_new == 3
    for r in rows:
        assert 0.0 <= r.metrics["AP"] <= 1.0

    # the strategy saw mmdet's scores in the shared layout: C+1 = 2 columns, 256-d features
    (scores_file,) = Workspace.of(cfg).cycle_dir(1).glob("scores-*.npz")
    ids, probs, features = load_scores(scores_file)
    assert len(ids) == 10 and features.shape == (10, 256)
    for p in probs:
        assert p.shape[1] == 2
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)

    # the registered models are mmdet checkpoints that load back (weights-only)
    ckpts = sorted(Path(cfg.workspace).rglob("best.pt"))
    assert ckpts, "no training checkpoint written"
    assert load_checkpoint(ckpts[-1]).detector_cfg.backend == "mmdet"

    # a rerun resumes: nothing is trained again
    again = run_pipeline(cfg, progress=False)
    assert [r.model_version for r in again] == [r.model_version for r in rows]
