"""Hostile input at run time: a loss that blows up, an empty pool, k beyond the pool, a changed
validation set, and random COCO files (hypothesis); each ends in ONE clear line or a
like-for-like decision (the fault matrix's rows, like test_bad_inputs.py)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fault_support import one_line, short
from synthloop.config import load_config
from synthloop.data.coco import CocoDataset, CocoError
from tests_support import DEMO_CONFIG


# -------------------------------------------------------------------------- training, query
def test_nan_loss_stops_training_before_the_step(tmp_path, report):
    """lr 1e12 blows the loss up within a few steps; the loop stops before applying it."""
    import torch

    from synthloop.config import DetectorConfig, TrainConfig
    from synthloop.detection import build_detector
    from synthloop.detection.training import NonFiniteLossError, train

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    root.mkdir()
    images, anns = [], []
    for i in range(1, 5):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / f"{i}.jpg")
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 64})
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [8, 8, 30, 30]})
    ds = CocoDataset.from_dict({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "blade"}]}, image_root=root)
    torch.manual_seed(0)
    model = build_detector(cfg=DetectorConfig(architecture="mobilenet_v3_fpn", min_size=64,
                                              max_size=64), num_classes=1)
    cfg = TrainConfig(epochs=3, batch_size=2, lr=1e12, warmup_steps=0, grad_clip_norm=None,
                      augment="none")
    with pytest.raises(NonFiniteLossError) as err:
        train(model, ds, cfg=cfg, val_ds=None, checkpoint_dir=tmp_path / "ckpt", progress=False)
    msg = one_line(err.value, "non-finite loss")
    for p in model.parameters():
        assert torch.isfinite(p).all()
    report("training: NaN / infinite loss (lr 1e12)", f"NonFiniteLossError: {short(msg)}; "
           "raised before the optimizer step, weights stay finite", "n/a")


def test_empty_pool_is_a_clear_error(tmp_path, report):
    from synthloop.artifacts import DatasetRef, ModelRef
    from synthloop.stages import score

    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path / 'ws'}"])
    pool = tmp_path / "pool" / "annotations.json"
    pool.parent.mkdir()
    pool.write_text(json.dumps({"images": [], "annotations": [],
                                "categories": [{"id": 1, "name": "blade"}]}))
    ref = DatasetRef(name="pool", annotations=pool, image_root=pool.parent / "images", md5="0" * 32,
                     num_images=0, num_annotations=0)
    with pytest.raises(ValueError) as err:
        score.run(cfg, cycle=1, model=ModelRef(run_id="r", uri="models:/x", version="1"),
                  pool=ref, labeled_ids=set(), progress=False)
    msg = one_line(err.value, str(pool), "no candidate images")
    report("query: an empty pool", f"ValueError: {short(msg)}", "n/a")


@pytest.mark.parametrize("name", ["random", "margin", "entropy", "least_confidence", "dbal",
                                  "coreset"])
def test_k_beyond_the_pool_and_a_pool_without_detections(name, report):
    from synthloop.active import get_strategy

    rng = np.random.default_rng(0)
    ids = [3, 5, 8]
    nothing = [np.zeros((0, 2)) for _ in ids]  # the model detects nothing anywhere
    feats = rng.normal(size=(3, 8))
    sel = get_strategy(name).select(ids, nothing, feats, k=10, rng_seed=1)
    assert sorted(sel.image_ids) == ids  # every candidate, each once
    if name == "dbal":
        report("query: k (10) larger than the pool (3), and a pool where the model detects "
               "nothing", "accepted: every strategy (random, margin, entropy, least_confidence, "
               "dbal, coreset) returns all 3 images once, scores 0", "n/a")


def test_a_changed_validation_set_reevaluates_the_champion(tmp_path, report):
    from mlflow import MlflowClient

    from gate_support import detections, register, val_set
    from synthloop.detection.evaluation import evaluate_predictions
    from synthloop.stages import gate
    from synthloop.versioning.dvc_repo import dataset_md5

    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path / 'ws'}",
                                              "gate.bootstrap_resamples=20"])
    ds, boxes = val_set(n=12)
    val_dir = cfg.workspace / "data" / "val"
    ds.with_image_root(val_dir / "images").save(val_dir / "annotations.json")
    md5 = dataset_md5(val_dir)
    old = detections(ds, boxes, jitter=1.0, seed=1)
    champ, _ = register(cfg, ds, old, md5, recorded_md5="v-old")  # says AP 0.99 on OLD val
    MlflowClient().set_registered_model_alias(cfg.registered_model_name, "champion", champ.version)
    cand = register(cfg, ds, detections(ds, boxes, jitter=1.5, seed=5), md5)
    rec = gate.run(cfg, cycle=1, candidate=cand[0], candidate_eval=cand[1])
    assert rec["champion_value"] == pytest.approx(evaluate_predictions(ds, old)["AP"])
    report("gate: the validation set changed between champion and candidate",
           "champion re-evaluated on the candidate's val version before comparing "
           f"(AP {rec['champion_value']:.3f}, not its recorded 0.99); decision: "
           f"{'promote' if rec['promote'] else 'keep'}", "n/a",
           "nothing lost: the champion moves only on a like-for-like comparison")


# ------------------------------------------------------------------------------ hypothesis
def test_hypothesis_coco_round_trip_and_invalid_input(report):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    box = st.tuples(st.floats(0, 50), st.floats(0, 50), st.floats(1, 49), st.floats(1, 29))

    @st.composite
    def datasets(draw):
        n = draw(st.integers(0, 6))
        images = [{"id": i + 1, "file_name": f"{i}.jpg", "width": 100, "height": 80}
                  for i in range(n)]
        anns = []
        for im in images:
            for b in draw(st.lists(box, max_size=3)):
                anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": 1,
                             "bbox": list(b)})
        return {"images": images, "annotations": anns,
                "categories": [{"id": 1, "name": "blade"}]}

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(datasets())
    def round_trip(raw):
        ds = CocoDataset.from_dict(raw, image_root=Path("."))
        again = CocoDataset.from_dict(json.loads(json.dumps(ds.to_dict())), image_root=Path("."))
        assert again.to_dict() == ds.to_dict()

    breakers = st.sampled_from(["drop_key", "neg_box", "nan_box", "bad_cat", "dup_ann",
                                "text_id", "short_box"])

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(datasets(), breakers)
    def invalid_raises(raw, how):
        raw = copy.deepcopy(raw)
        if how == "drop_key":
            del raw["categories"]
        elif not raw["annotations"]:
            raw["images"].append({"id": "x"} if how == "text_id" else {"id": 1})  # bad or dup
            raw["images"][-1].update(file_name="z.jpg", width=0, height=80)
        else:
            a = raw["annotations"][0]
            if how == "neg_box":
                a["bbox"][2] = -abs(a["bbox"][2]) - 1
            elif how == "nan_box":
                a["bbox"][0] = float("nan")
            elif how == "bad_cat":
                a["category_id"] = 99
            elif how == "dup_ann":
                raw["annotations"].append(dict(a))
            elif how == "text_id":
                a["image_id"] = "one"
            else:
                a["bbox"] = a["bbox"][:3]
        with pytest.raises(CocoError):
            CocoDataset.from_dict(raw, image_root=Path("."), source="h.json")

    round_trip()
    invalid_raises()
    report("data: COCO IO under hypothesis (300 generated files)",
           "every valid file round-trips unchanged; every broken one (missing key, negative or "
           "NaN box, unknown category, duplicate or non-integer id, 3-number box) raises CocoError",
           "n/a")
