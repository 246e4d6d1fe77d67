"""Which oracle labels which pool image (stages/label_routing.py), and the query's candidate
filter that keeps scores, probabilities and features aligned."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from synthloop.artifacts import QueryBatch
from synthloop.config import LabelingConfig
from synthloop.stages.label_routing import OracleRouting, unlabelable_message
from synthloop.stages.query import labelable_candidates

TRUTH = frozenset({1, 2})


@pytest.mark.parametrize("oracle, fallback, routes, unlabelable", [
    ("simulated", None, {"simulated": (1, 2)}, (3, 4)),
    ("simulated", "labelstudio", {"simulated": (1, 2), "labelstudio": (3, 4)}, ()),
    ("cvat", None, {"cvat": (3, 1, 4, 2)}, ()),
])
def test_routing_table(oracle, fallback, routes, unlabelable):
    r = OracleRouting(oracle, fallback, TRUTH if oracle == "simulated" else frozenset())
    ids = (3, 1, 4, 2)
    got = r.route(ids)
    assert {k: tuple(sorted(v)) for k, v in got.items()} == {k: tuple(sorted(v))
                                                             for k, v in routes.items()}
    assert r.unlabelable(ids) == unlabelable


def test_fallback_only_with_the_simulated_oracle():
    assert LabelingConfig(fallback_oracle="cvat").fallback_oracle == "cvat"
    with pytest.raises(ValidationError, match="remove fallback_oracle"):
        LabelingConfig(oracle="labelstudio", fallback_oracle="cvat")


def test_message_says_what_happened_and_what_to_set():
    msg = unlabelable_message(range(100, 112))
    assert msg.startswith("12 pool images have no ground truth") and "..." in msg
    assert "labeling.fallback_oracle=labelstudio" in msg and "labeling.oracle=labelstudio" in msg


def test_candidates_without_an_oracle_are_dropped_with_their_rows():
    ids = [1, 5, 2, 6]
    probs = [np.full((n, 2), 0.5) for n in (1, 2, 3, 4)]
    feats = np.arange(8.0).reshape(4, 2)
    r = OracleRouting("simulated", None, TRUTH)
    kept_ids, kept_probs, kept_feats, excluded = labelable_candidates(
        ids, probs, feats, r, labeled_ids={6}, cycle=1)  # 6: labelled already, stays (U+L)
    assert kept_ids == [1, 2, 6] and excluded == 1
    assert [len(p) for p in kept_probs] == [1, 3, 4]
    assert kept_feats.tolist() == [[0, 1], [4, 5], [6, 7]]
    with pytest.raises(ValueError, match="none of the 2 candidates can be labelled"):
        labelable_candidates([5, 7], probs[:2], feats[:2], r, labeled_ids=set(), cycle=3)


def test_query_batch_record_round_trip():
    b = QueryBatch(strategy="dbal", params={"k": 2}, seed=1, model_version="3", pool_md5="x",
                   image_ids=(2, 7), scores=(0.5, 0.1), new_label_ids=(2, 7), excluded=4,
                   routes={"simulated": (2,), "labelstudio": (7,)})
    import json

    assert QueryBatch.from_dict(json.loads(json.dumps(b.to_dict()))) == b
    old = {k: v for k, v in b.to_dict().items() if k not in ("excluded", "routes")}
    assert QueryBatch.from_dict(old).routes == {} and QueryBatch.from_dict(old).excluded == 0
