"""Failures steer the renderer: matching and binning, bounded weights, the weighted plan
(identical without weights, shifted toward failing bins with them), the config's checks."""

import hashlib
import json

import numpy as np
import pytest
from pydantic import ValidationError

from synthloop.config import DomainConfig, IntRange, PartSpec, Range, SteerConfig
from synthloop.data.coco import CocoDataset
from synthloop.metrics import ImageDetections
from synthloop.steering.failures import analyse_photos, analyse_renders, match_image
from synthloop.steering.weights import bounded_weights, weight_changes, weights_from_renders
from synthloop.synthesis.plan import plan_scenes
from synthloop.synthesis.randomizers import weighted_bin

PARTS = [PartSpec(name="blade", procedural="turbine_blade"),
         PartSpec(name="other", procedural="turbine_blade")]


def _det(image_id, boxes, labels, scores):
    return ImageDetections(image_id, np.asarray(boxes, np.float32).reshape(-1, 4),
                           np.asarray(labels, np.int64), np.asarray(scores, np.float32))


def _coco(images, anns):
    """images: [(id, meta)] 300x300; anns: [(image_id, category_id, [x, y, w, h])]."""
    return CocoDataset.from_dict({
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 300, "height": 300, **meta}
                   for i, meta in images],
        "annotations": [{"id": k + 1, "image_id": i, "category_id": c, "bbox": b,
                         "area": b[2] * b[3], "iscrowd": 0} for k, (i, c, b) in enumerate(anns)],
        "categories": [{"id": 1, "name": "bolt"}, {"id": 2, "name": "nut"}]}, image_root=".")


# ------------------------------------------------------------------------------- matching
def test_matching_is_greedy_by_score_per_class_at_the_thresholds():
    gt = [[0, 0, 10, 10], [20, 20, 30, 30]]
    det = _det(1, [[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]],
               [1, 1, 1, 1], [0.6, 0.9, 0.95, 0.3])
    m = match_image(gt, [1, 2], det, iou=0.5, min_score=0.5)
    # 0.9 takes the first box (IoU .81); 0.6 finds it taken -> false; the 0.95 box is of the
    # wrong class for gt 2 -> false and gt 2 missed; the 0.3 box is below min_score: not kept
    assert m.gt_missed.tolist() == [False, True]
    assert len(m.det_labels) == 3 and m.det_false.tolist() == [True, False, True]


def test_photo_failures_binned_by_class_size_crowding_brightness_region():
    ds = _coco([(1, {}), (2, {})], [
        (1, 1, [0, 0, 20, 20]),      # small, top-left, crowded by the next, dark: missed
        (1, 1, [10, 10, 20, 20]),    # small, top-left, crowded, half dark: found
        (1, 2, [200, 200, 100, 100]),  # large, bottom-right, alone, bright: found
        (2, 2, [130, 130, 40, 40])])   # medium, middle-centre, alone, bright: missed
    preds = [_det(1, [[10, 10, 30, 30], [200, 200, 300, 300], [100, 0, 140, 30]],
                  [1, 2, 1], [0.9, 0.8, 0.7]),  # the last one is false (top-centre, small)
             _det(2, [], [], [])]
    grey = np.ones((300, 300), np.float32)
    grey[:25, :25] = 0.1
    out = analyse_photos(ds, preds, grey=lambda _ds, _im: grey)
    by = out["by"]
    assert out["totals"] == {"gt": 4, "missed": 2, "detections": 3, "false": 1,
                             "miss_rate": 0.5, "false_rate": 0.3333}
    assert by["class"]["bolt"] == {"gt": 2, "missed": 1, "detections": 2, "false": 1,
                                         "miss_rate": 0.5, "false_rate": 0.5}
    assert by["class"]["nut"]["missed"] == 1 and by["class"]["nut"]["false"] == 0
    assert (by["size"]["small"]["gt"], by["size"]["small"]["missed"]) == (2, 1)
    assert by["size"]["medium"]["miss_rate"] == 1.0 and by["size"]["large"]["miss_rate"] == 0.0
    assert (by["crowding"]["1"]["gt"], by["crowding"]["1"]["missed"]) == (2, 1)
    assert by["crowding"]["0"]["gt"] == 2
    # the second box is half in the dark corner: mean grey 0.49
    assert by["brightness"]["0.0-0.2"]["missed"] == 1 and by["brightness"]["0.4-0.6"]["gt"] == 1
    assert by["brightness"]["0.8-1.0"]["gt"] == 2
    # detections: the hit overlaps 2 boxes (1 besides its own), the false one none
    assert by["crowding"]["1"]["detections"] == 1 and by["crowding"]["1"]["false"] == 0
    assert by["crowding"]["0"]["detections"] == 2 and by["crowding"]["0"]["false"] == 1
    assert by["region"]["top-left"]["gt"] == 2 and by["region"]["middle-centre"]["missed"] == 1
    assert by["region"]["top-centre"]["false"] == 1
    assert by["region"]["bottom-right"]["miss_rate"] == 0.0


def _renders(distances):
    """One bolt per image at camera distance d, missed where d >= 0.55; odd images hold one
    distractor."""
    images = [(i + 1, {"camera_plan": {"distance": d}, "distractors": [{}] * (i % 2)})
              for i, d in enumerate(distances)]
    ds = _coco(images, [(i, 1, [100, 100, 50, 50]) for i, _ in images])
    preds = [_det(i, [], [], []) if m["camera_plan"]["distance"] >= 0.55
             else _det(i, [[100, 100, 150, 150]], [1], [0.9]) for i, m in images]
    return ds, preds


def test_render_failures_binned_by_sampled_values_and_turned_into_weights():
    domain = DomainConfig(num_images=1, camera_distance=Range(min=0.3, max=0.7))
    ds, preds = _renders([0.31, 0.35, 0.42, 0.48, 0.52, 0.56, 0.62, 0.69])
    out = analyse_renders(ds, preds, domain, variables=["camera_distance", "distractors"], bins=4)
    cells = out["by"]["camera_distance"]["bins"]
    assert out["by"]["camera_distance"]["edges"] == [0.3, 0.4, 0.5, 0.6, 0.7]
    assert [c["images"] for c in cells] == [2, 2, 2, 2]
    assert [c["missed"] for c in cells] == [0, 0, 1, 2]
    assert [c["failure_rate"] for c in cells] == [0.0, 0.0, 0.5, 1.0]
    assert [c["images"] for c in out["by"]["distractors"]["bins"]] == [4, 4, 0, 0]
    w = weights_from_renders(out, floor=0.5, ceiling=3.0, prior=2.0)["camera_distance"]
    assert w[0] == w[1] < w[2] < w[3] and min(w) >= 0.5 and max(w) <= 3.0
    assert np.mean(w) == pytest.approx(1.0, abs=1e-3)


# -------------------------------------------------------------------------------- weights
@pytest.mark.parametrize("floor,ceiling", [(0.5, 3.0), (0.2, 1.5), (1.0, 1.0)])
def test_weights_are_bounded_and_keep_the_mean(floor, ceiling):
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = rng.integers(0, 20, size=rng.integers(2, 9))
        f = rng.binomial(n, rng.random(len(n)))
        w = np.array(bounded_weights(f, n, floor=floor, ceiling=ceiling, prior=rng.random() * 3))
        assert (w >= floor - 1e-4).all() and (w <= ceiling + 1e-4).all()
        assert w.mean() == pytest.approx(1.0, abs=1e-3)


def test_weights_extremes_and_errors():
    assert bounded_weights([0, 0, 0], [5, 5, 5], floor=0.5, ceiling=3, prior=1) == [1.0] * 3
    # all failures in one bin with no smoothing: that bin hits the ceiling... no more
    assert bounded_weights([0, 0, 0, 9], [9, 9, 9, 9], floor=0.5, ceiling=2.5, prior=0) == [
        0.5, 0.5, 0.5, 2.5]
    with pytest.raises(ValueError, match="floor"):
        bounded_weights([1], [2], floor=1.5, ceiling=3, prior=0)
    with pytest.raises(ValueError, match="0..counts"):
        bounded_weights([3], [2], floor=0.5, ceiling=3, prior=0)
    assert weight_changes({}, {"camera_distance": [1.0, 2.0]}) == {
        "camera_distance": {"from": [1.0, 1.0], "to": [1.0, 2.0]}}
    assert weight_changes({"a": [1.0]}, {"a": [1.0]}) == {}


# ------------------------------------------------------------------------------ the plan
# sha256 of the plans below, made by the code before sampling weights existed (HEAD 89bc8eb)
PLAN_DIGESTS = {"floating": "0d294da60a281bfa8e2c4a42986314e1cf5aedf8687d4d863e13b87849a00878",
                "workbench": "03faf3247d60edf2af795732d72b3069c58a2939063c119ddbb92fcb1e9dafa2"}


def _domain(**kw):
    base = dict(num_images=12, seed=11, distractors=IntRange(min=0, max=4),
                parts_per_image=IntRange(min=1, max=3), point_lights=IntRange(min=0, max=2))
    return DomainConfig(**{**base, **kw})


@pytest.mark.parametrize("scene", sorted(PLAN_DIGESTS))
def test_without_weights_the_plan_is_byte_identical_to_before(scene):
    for domain in (_domain(scene=scene), _domain(scene=scene, sampling_weights={})):
        text = json.dumps(plan_scenes(domain, PARTS), sort_keys=True)
        assert hashlib.sha256(text.encode()).hexdigest() == PLAN_DIGESTS[scene]


def test_weighted_plan_is_deterministic_and_shifts_draws_toward_heavy_bins():
    weights = {"camera_distance": [1.0, 1.0, 1.0, 3.0], "distractors": [3.0, 1.0, 1.0, 1.0, 1.0]}
    domain = _domain(num_images=400, sampling_weights=weights)
    plan = plan_scenes(domain, PARTS)
    assert plan == plan_scenes(domain, PARTS)  # same seed + same weights = same plan
    uniform = plan_scenes(_domain(num_images=400), PARTS)
    r = domain.camera_distance
    far = lambda p: p["camera"]["distance"] >= r.min + 0.75 * (r.max - r.min)  # noqa: E731
    share = np.mean([far(p) for p in plan])
    # binomial(400, .5): 4 sd = 0.1; uniform expects .25
    assert abs(share - 0.5) < 0.1 and np.mean([far(p) for p in uniform]) < 0.35
    assert abs(np.mean([len(p["distractors"]) == 0 for p in plan]) - 3 / 7) < 0.1
    assert all(r.min <= p["camera"]["distance"] <= r.max for p in plan)
    # other randomizers draw from their own streams: untouched by the weights
    assert [p["hdri"] for p in plan] == [p["hdri"] for p in uniform]


def test_count_weights_cover_runs_of_values_as_the_analysis_bins_them():
    from synthloop.steering.failures import bin_edges, bin_index

    domain = _domain(num_images=300, distractors=IntRange(min=2, max=6),
                     sampling_weights={"distractors": [1.0, 4.0]})  # runs 2..3 and 4..6
    assert bin_edges(domain, "distractors", 2) == [2.0, 4.0, 7.0]
    counts = np.bincount([len(p["distractors"]) for p in plan_scenes(domain, PARTS)], minlength=7)
    assert counts[:2].sum() == 0 and counts[2:4].sum() / 300 == pytest.approx(0.2, abs=0.07)
    assert all(c > 0 for c in counts[2:])  # every value still drawn
    assert [bin_index(v, [2.0, 4.0, 7.0]) for v in range(2, 7)] == [0, 0, 1, 1, 1]


def test_weighted_bin_is_a_bin_by_weight_then_uniform_inside():
    u = np.linspace(0, 1, 10_001)[:-1]
    bins, fracs = zip(*(weighted_bin(x, [1.0, 3.0]) for x in u))
    assert np.mean(np.array(bins) == 1) == pytest.approx(0.75, abs=1e-3)
    inside = np.array(fracs)[np.array(bins) == 1]
    assert inside.min() >= 0 and inside.max() < 1
    assert np.mean(inside) == pytest.approx(0.5, abs=0.01)


# ------------------------------------------------------------------------------ config
@pytest.mark.parametrize("weights,match", [
    ({"camera_fov": [1.0]}, "not a steerable range"),
    ({"camera_distance": [1.0, 0.0]}, "finite and > 0"),
    ({"camera_distance": [1.0, float("nan")]}, "finite and > 0"),
    ({"camera_distance": []}, "1..64 bins"),
    ({"distractors": [1.0] * 5}, "1..4 bins"),  # 0..3: at most one bin per value
])
def test_bad_sampling_weights_are_config_errors(weights, match):
    with pytest.raises(ValidationError, match=match):
        DomainConfig(num_images=1, sampling_weights=weights)


def test_steer_config_checks_its_variables_and_bounds():
    assert SteerConfig().enabled is False
    with pytest.raises(ValidationError, match="not steerable"):
        SteerConfig(variables=["material"])
    with pytest.raises(ValidationError, match="duplicates"):
        SteerConfig(variables=["camera_distance", "camera_distance"])
    with pytest.raises(ValidationError):
        SteerConfig(floor=1.5)
    with pytest.raises(ValidationError):
        SteerConfig(ceiling=0.9)
