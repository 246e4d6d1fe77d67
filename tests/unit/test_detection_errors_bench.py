"""benchmarks/detection_errors.py sorts detections by kind: checked on hand-made boxes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from synthloop.data.coco import CocoAnnotation, CocoDataset, CocoImage, categories_for
from synthloop.stages.evaluate import ImageDetections

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("detection_errors",
                                               ROOT / "benchmarks" / "detection_errors.py")
errors = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(errors)


def test_detections_are_sorted_into_kinds(tmp_path):
    # a bolt (1) and a washer (2) on the "table" around x 400-600, y 300-400 of a 1000x800 image
    ds = CocoDataset([CocoImage(1, "a.png", 1000, 800)],
                     [CocoAnnotation(1, 1, 1, (400.0, 300.0, 100.0, 40.0), 4000.0),
                      CocoAnnotation(2, 1, 2, (560.0, 360.0, 40.0, 40.0), 1600.0)],
                     categories_for(["Bolt", "Washer"]), tmp_path)
    boxes = np.array([[400, 300, 500, 340],     # bolt on the bolt: tp
                      [402, 300, 500, 340],     # the same bolt again, lower score: duplicate
                      [400, 300, 440, 340],     # bolt on a piece of the bolt (IoU 0.4)
                      [560, 360, 600, 400],     # bolt on the washer: wrong class
                      [520, 300, 540, 320],     # washer on the table, near nothing
                      [50, 700, 80, 730],       # washer on the floor
                      [560, 360, 600, 400],     # washer on the washer, but score too low
                      ], np.float32)
    preds = [ImageDetections(1, boxes, np.array([1, 1, 1, 1, 2, 2, 2]),
                             np.array([0.9, 0.85, 0.8, 0.7, 0.6, 0.9, 0.3], np.float32))]
    out = errors.classify(ds, preds, score=0.5)
    assert out["Bolt"] == {"tp": 1, "duplicate": 1, "piece": 1, "wrong_class": 1,
                           "on_table": 0, "off_table": 0, "gt": 1, "found": 1}
    assert out["Washer"] == {"tp": 0, "duplicate": 0, "piece": 0, "wrong_class": 0,
                             "on_table": 1, "off_table": 1, "gt": 1, "found": 0}
    # with the low-scoring washer counted, the washer is found
    assert errors.classify(ds, preds, score=0.2)["Washer"]["found"] == 1
