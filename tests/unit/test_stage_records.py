"""Small pieces of the stages that must be exact: score caching, label union."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthloop.data.coco import CocoAnnotation, CocoDataset, CocoImage, categories_for
from synthloop.stages.label import union
from synthloop.stages.score import load_scores, save_scores


@dataclass
class FakeScores:
    image_id: int
    scores: np.ndarray
    probs: np.ndarray
    feature: np.ndarray


def test_scores_round_trip_keeps_per_image_detections_including_empty(tmp_path):
    rng = np.random.default_rng(0)
    items = [FakeScores(5, np.ones(2), rng.random((2, 3), dtype=np.float32), rng.random(256, dtype=np.float32)),
             FakeScores(7, np.ones(0), np.zeros((0, 3), np.float32), rng.random(256, dtype=np.float32)),
             FakeScores(9, np.ones(1), rng.random((1, 3), dtype=np.float32), rng.random(256, dtype=np.float32))]
    path = tmp_path / "s.npz"
    save_scores(path, items)
    ids, probs, feats = load_scores(path)
    assert ids == [5, 7, 9]
    assert [p.shape for p in probs] == [(2, 3), (0, 3), (1, 3)]
    np.testing.assert_array_equal(probs[0], items[0].probs)
    np.testing.assert_array_equal(feats[2], items[2].feature)


def ds(ids, root=Path("/r")):
    images = [CocoImage(i, f"{i}.jpg", 10, 10) for i in ids]
    anns = [CocoAnnotation(n + 1, i, 1, (1.0, 1.0, 2.0, 2.0), 4.0) for n, i in enumerate(ids)]
    return CocoDataset(images, anns, categories_for(["part"]), root)


def test_union_keeps_pool_ids_and_never_duplicates_a_label():
    old = ds([3, 8])
    merged = union(old, ds([8, 11, 4], root=Path("/other")))
    assert [im.id for im in merged.images] == [3, 8, 11, 4]
    assert sorted(a.image_id for a in merged.annotations) == [3, 4, 8, 11]
    assert len({a.id for a in merged.annotations}) == 4
    assert merged.image_root == Path("/r")
    merged.validate()
    assert union(None, old) is old
