"""The sim-to-real stage and the fine-tune's mix, through a real MLflow store, on a tiny detector:
the gap lands in the cycle's run (image level and per class) and its record; the fine-tune trains
on L plus the share's renders and logs the share; the default trains on L alone.

A tiny untrained MobileNetV3-FPN on 96x64 images: what is tested is the plumbing; the numbers on
bolts are benchmarks/sim_to_real_mix_bolts.py's.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from synthloop import tracking
from synthloop.artifacts import ModelRef
from synthloop.config import DetectorConfig, load_config
from synthloop.data.coco import CocoDataset, categories_for
from synthloop.detection import build_detector, predict_with_probs_and_features, save_checkpoint
from synthloop.detection.domain_features import domain_features
from synthloop.gating.registry import register_version
from synthloop.stages import finetune, sim_to_real
from synthloop.stages.render import dataset_ref
from synthloop.stages.workspace import Workspace
from tests_support import DEMO_CONFIG

pytestmark = pytest.mark.slow
DET = DetectorConfig(min_size=64, max_size=96, box_score_thresh=0.0)


def make_coco(root: Path, n: int) -> CocoDataset:
    """``n`` 96x64 images with two drawn rectangles each, class 1 ("blade", the demo's)."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    images, anns = [], []
    for i in range(1, n + 1):
        img = np.full((64, 96, 3), 40, np.uint8)
        for cat, colour in ((1, (220, 60, 60)), (1, (60, 60, 220))):
            x, y = int(rng.integers(0, 66)), int(rng.integers(0, 40))
            img[y:y + 20, x:x + 26] = colour
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat,
                         "bbox": [x, y, 26, 20], "area": 520.0, "iscrowd": 0})
        Image.fromarray(img).save(root / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": 96, "height": 64})
    return CocoDataset.from_dict({"images": images, "annotations": anns,
                                  "categories": categories_for(["blade"])}, image_root=root)


def setup(tmp_path: Path, *overrides: str):
    cfg = load_config(DEMO_CONFIG, overrides=[
        f"workspace={tmp_path / 'ws'}", "versioning.push=false", "active.batch_size=2",
        "sim_to_real.images=8", "sim_to_real.folds=2", "sim_to_real.permutations=20",
        "finetune.epochs=1", "finetune.batch_size=2", "finetune.warmup_steps=1",
        "detector.architecture=mobilenet_v3_fpn", "detector.min_size=64", "detector.max_size=96",
        *overrides])
    ws = Workspace.of(cfg)
    refs = {}
    for name, n in (("synthetic", 12), ("pool", 8), ("labeled", 4), ("val", 4)):
        folder = ws.dataset_dir(name)
        make_coco(folder / "images", n=n).save(folder / "annotations.json")
        refs[name] = dataset_ref(name, folder)
    return cfg, refs


def register(cfg, folder: Path) -> ModelRef:
    tracking.setup(cfg)
    torch.manual_seed(0)
    model = build_detector(cfg=DET, num_classes=len(cfg.class_names))
    ckpt = save_checkpoint(model, folder / tracking.CHECKPOINT_NAME, cfg=DET,
                           num_classes=len(cfg.class_names),
                           extra={"class_names": list(cfg.class_names)})
    with mlflow.start_run() as run:
        uri = tracking.log_detector(ckpt)
    version = register_version(MlflowClient(), cfg.registered_model_name, uri, run.info.run_id, {})
    return ModelRef(run_id=run.info.run_id, uri=uri, version=version)


def parent_run(cfg) -> str:
    exp = tracking.setup(cfg)
    return MlflowClient().create_run(exp, run_name="cycle-1").info.run_id


def test_image_features_are_the_scorers_pooled_features(tmp_path):
    coco = make_coco(tmp_path / "images", n=4)
    torch.manual_seed(0)
    model = build_detector(cfg=DET, num_classes=1)
    mine = domain_features(model, coco)
    scorer = np.stack([s.feature for s in predict_with_probs_and_features(
        model, coco, batch_size=1, progress=False)])
    np.testing.assert_allclose(mine.image, scorer, rtol=1e-4, atol=1e-5)
    assert len(mine.box) == len(coco.annotations) == len(mine.box_labels)
    assert mine.box.shape[1] > 0


def test_the_gap_is_logged_with_the_cycle_and_recorded(tmp_path):
    cfg, refs = setup(tmp_path)
    model = register(cfg, tmp_path / "m0")
    parent = parent_run(cfg)
    rec = sim_to_real.run(cfg, cycle=1, model=model, synthetic=refs["synthetic"],
                          pool=refs["pool"], labeled=refs["labeled"], parent_run_id=parent)
    on_disk = json.loads((Workspace.of(cfg).cycle_dir(1) / "sim_to_real.json").read_text())
    assert on_disk["image"] == rec["image"] and rec["levels"] == "image+box"
    assert len(rec["synthetic_ids"]) == 8
    # real photos: L's 4 first, then pool images not in L; never val
    assert len(rec["real_labeled_ids"]) == 4 and len(rec["real_pool_ids"]) == 4
    metrics = MlflowClient().get_run(parent).data.metrics
    assert {"sim_to_real_mmd", "sim_to_real_auc", "sim_to_real_mmd_p",
            "sim_to_real_rule_auc"} <= set(metrics)
    assert rec["rule_auc_level"] == "box"
    assert metrics["sim_to_real_auc"] == pytest.approx(rec["image"]["auc"])
    per_class = {k for k in metrics if k.startswith("sim_to_real_auc.")}
    assert per_class == {f"sim_to_real_auc.{n}" for n, g in rec["classes"].items() if "auc" in g}
    assert per_class, rec["classes"]
    # cached per (cycle, model version)
    assert sim_to_real.run(cfg, cycle=1, model=model, synthetic=refs["synthetic"],
                           pool=refs["pool"], labeled=refs["labeled"]) == on_disk


@pytest.mark.parametrize("mode", ["off", "fixed"])
def test_finetune_mixes_renders_and_logs_the_share(tmp_path, mode):
    cfg, refs = setup(tmp_path, f"finetune_mix.mode={mode}", "finetune_mix.synthetic_share=0.5")
    model = register(cfg, tmp_path / "m0")
    parent = parent_run(cfg)
    ref, _ = finetune.run(cfg, cycle=1, previous=model, labeled=refs["labeled"], val=refs["val"],
                          parent_run_id=parent, progress=False, synthetic=refs["synthetic"])
    client = MlflowClient()
    run = client.get_run(ref.run_id).data
    share = 0.5 if mode == "fixed" else 0.0
    assert run.params["finetune_mix.mode"] == mode
    assert float(run.params["finetune_mix.share"]) == share
    assert int(run.params["train.num_images"]) == (8 if mode == "fixed" else 4)
    assert run.metrics["finetune_synthetic_share"] == share
    assert client.get_run(parent).data.metrics["finetune_synthetic_share"] == share
    rec = json.loads((Workspace.of(cfg).cycle_dir(1) / "candidate.json").read_text())
    assert rec["mix"]["synthetic_images"] == (4 if mode == "fixed" else 0)


def test_finetune_adds_the_cycles_failure_steered_top_up(tmp_path):
    """With steer on, the renders stages/steer.py made for cycle 1 join L in its fine-tune
    (and in the run's params and datasets); cycle 2 has none of its own."""
    from synthloop.stages import steer

    cfg, refs = setup(tmp_path, "steer.enabled=true", "steer.topup_images=3")
    folder = steer.topup_dir(cfg, 1)
    make_coco(folder / "images", n=3).save(folder / "annotations.json")
    model = register(cfg, tmp_path / "m0")
    ref, _ = finetune.run(cfg, cycle=1, previous=model, labeled=refs["labeled"], val=refs["val"],
                          parent_run_id=parent_run(cfg), progress=False)
    params = MlflowClient().get_run(ref.run_id).data.params
    assert int(params["train.num_images"]) == 4 + 3 and params["steer.topup_images"] == "3"
    rec = json.loads((Workspace.of(cfg).cycle_dir(1) / "candidate.json").read_text())
    assert rec["mix"]["topup_images"] == 3 and rec["mix"]["synthetic_images"] == 0


def test_the_gap_rule_steers_the_finetune_and_the_report_shows_both(tmp_path):
    from synthloop.monitoring.sim_to_real import synthetic_count, synthetic_share
    from synthloop.stages import cycle_report

    cfg, refs = setup(tmp_path, "finetune_mix.mode=gap_rule", "finetune_mix.lo=0.2")
    model = register(cfg, tmp_path / "m0")
    parent = parent_run(cfg)
    gap = sim_to_real.run(cfg, cycle=1, model=model, synthetic=refs["synthetic"],
                          pool=refs["pool"], labeled=refs["labeled"], parent_run_id=parent)
    ref, _ = finetune.run(cfg, cycle=1, previous=model, labeled=refs["labeled"], val=refs["val"],
                          parent_run_id=parent, progress=False, synthetic=refs["synthetic"],
                          gap=gap)
    share = synthetic_share(cfg.finetune_mix, auc=gap["rule_auc"], labels=4)
    assert share >= 0.2
    params = MlflowClient().get_run(ref.run_id).data.params
    assert float(params["finetune_mix.share"]) == pytest.approx(share, abs=1e-4)
    assert int(params["train.num_images"]) == 4 + synthetic_count(share, 4)
    done = cycle_report.run(cfg, cycle=1, parent_run_id=parent)
    html = Path(done["path"]).read_text()
    # each in the run's metrics table and in the gap's table (the share it steered beside it)
    for key in ("sim_to_real_mmd", "sim_to_real_auc", "sim_to_real_auc.blade",
                "finetune_synthetic_share"):
        assert html.count(f'data-metric="{key}"') == 2, key


@pytest.mark.parametrize("mode", ["off", "gap_rule"])
def test_the_cycle_measures_the_gap_before_the_finetune_it_steers(tmp_path, mode):
    from types import SimpleNamespace

    from synthloop.artifacts import EvalResult
    from synthloop.stages import pipeline

    cfg, refs = setup(tmp_path, f"finetune_mix.mode={mode}")
    previous = ModelRef(run_id="m0", uri="models:/m0", version="1")
    calls: list[str] = []
    seen: dict[str, object] = {}

    def runner(name, fn, /, *args, **kwargs):
        calls.append(name)
        if name == "finetune":
            seen.update(kwargs)
            return previous, EvalResult({"AP": 0.1, "AP50": 0.2}, "val-md5", 4)
        return {"score": lambda: Path("scores.npz"),
                "query": lambda: SimpleNamespace(new_label_ids=[1, 2]),
                "label": lambda: refs["labeled"],
                "sim-to-real": lambda: {"image": {"auc": 0.9}, "rule_auc": 0.7},
                "gate": lambda: {"promote": False, "reason": "stand-in gate"},
                }.get(name, lambda: None)()

    pipeline.run_cycle(cfg, 1, previous=previous, runner=runner, progress=False,
                       data={"synthetic": refs["synthetic"], "pool": refs["pool"],
                             "val": refs["val"]})
    if mode == "off":  # the paper's cycle: no gap measured, L only
        assert "sim-to-real" not in calls and seen["gap"] is None
    else:
        assert calls.index("label") < calls.index("sim-to-real") < calls.index("finetune")
        assert seen["gap"] == {"image": {"auc": 0.9}, "rule_auc": 0.7}
    assert seen["synthetic"] == refs["synthetic"]
