"""The one ragged ``.npz`` format behind the pool scores and the cached val detections."""

import numpy as np
import pytest

from synthloop.gating.predictions import ImageDetections, load_predictions, save_predictions
from synthloop.ragged_npz import load_ragged, save_ragged
from synthloop.stages.score import load_scores, save_scores, scores_meta


def test_round_trip_keeps_images_without_rows_and_per_file_arrays(tmp_path):
    rows = [np.ones((2, 3), np.float32), np.zeros((0, 3), np.float32), np.full((1, 3), 7, np.float32)]
    path = save_ragged(tmp_path / "r.npz", [5, 6, 9], [2, 0, 1], {"x": rows},
                       empty={"x": np.zeros((0, 3), np.float32)}, note=np.array("hi"))
    ids, ragged, rest = load_ragged(path, ["x"])
    assert ids == [5, 6, 9] and [a.shape for a in ragged["x"]] == [(2, 3), (0, 3), (1, 3)]
    assert ragged["x"][2][0, 0] == 7 and str(rest["note"]) == "hi"
    ids, ragged, _ = load_ragged(save_ragged(tmp_path / "e.npz", [], [], {"x": []},
                                             empty={"x": np.zeros((0, 3), np.float32)}), ["x"])
    assert ids == [] and ragged["x"] == []
    with pytest.raises(ValueError, match="own keys"):
        save_ragged(tmp_path / "bad.npz", [1], [0], {"counts": [np.zeros(0)]}, empty={})


class _Scores:
    def __init__(self, image_id, n):
        self.image_id, self.scores = image_id, np.arange(n, dtype=np.float32)
        self.probs = np.full((n, 3), 0.5, np.float32)
        self.feature = np.full(4, image_id, np.float32)


def test_scores_and_predictions_are_the_same_format(tmp_path):
    save_scores(tmp_path / "s.npz", [_Scores(1, 2), _Scores(2, 0)], candidates=10)
    ids, probs, features = load_scores(tmp_path / "s.npz")
    assert ids == [1, 2] and [p.shape for p in probs] == [(2, 3), (0, 3)]
    assert features[1, 0] == 2 and scores_meta(tmp_path / "s.npz")["candidates"] == 10
    assert load_ragged(tmp_path / "s.npz", ["probs"])[0] == [1, 2]

    dets = [ImageDetections(3, np.array([[0, 0, 5, 5]], np.float32), np.array([1]), np.array([0.9])),
            ImageDetections(4, np.zeros((0, 4)), np.zeros(0), np.zeros(0))]
    save_predictions(tmp_path / "p.npz", dets)
    back = load_predictions(tmp_path / "p.npz")
    assert [d.image_id for d in back] == [3, 4] and back[0].boxes.dtype == np.float32
    assert back[0].labels.tolist() == [1] and len(back[1].scores) == 0
    ids, ragged, _ = load_ragged(tmp_path / "p.npz", ["boxes", "labels", "scores"])
    assert ids == [3, 4] and ragged["boxes"][0].tolist() == [[0, 0, 5, 5]]
