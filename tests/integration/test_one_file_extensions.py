"""Adding a query strategy and a cycle trigger takes one module: this one.

The strategy and the trigger below are registered here only (no other file names them); the
registries (synthloop/active/registry.py, synthloop/monitoring/triggers.py) carry them through
the config's validation, a cycle (score, query, label for real on a tiny untrained registered
detector; fine-tune and gate stand-ins, as in test_oracle_routing), the monitor's decision and
the event prefect.yaml's al-cycle deployment starts on, the experiment harness's parameters and
grid, and the experiment report's table.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow import MlflowClient
from pydantic import Field

from synthloop.active import STRATEGIES, register_strategy
from synthloop.active.base import AggregationParams, ScoredStrategy
from synthloop.artifacts import EvalResult, ModelRef, QueryBatch
from synthloop.config import ConfigError, load_config
from synthloop.data.coco import CocoAnnotation, CocoDataset
from synthloop.experiments.analysis import analyse
from synthloop.experiments.grid import grid
from synthloop.experiments.report import write_report
from synthloop.monitoring.triggers import TRIGGERS, TriggerParams, register_trigger
from synthloop.stages import label, monitor, pipeline
from synthloop.stages.render import dataset_ref
from synthloop.stages.workspace import Workspace
from people_support import make_pool, register_tiny_models
from tests_support import DEMO_CONFIG, starts_deployment

pytestmark = pytest.mark.slow
POOL = 6


# ------------------------------------------------------------- the new strategy and trigger
class DetectionCountParams(AggregationParams):
    weight: float = Field(default=1.0, gt=0.0)


class DetectionCountStrategy(ScoredStrategy):
    """Every detection scores ``weight``: images with more detections first."""

    name = "detection_count"
    Params = DetectionCountParams

    def __init__(self, *, aggregation: str = "sum", weight: float = 1.0) -> None:
        super().__init__(aggregation=aggregation)
        self.weight = weight

    def params(self) -> dict[str, object]:
        return {**super().params(), "weight": self.weight}

    def detection_scores(self, probs: np.ndarray) -> np.ndarray:
        return np.full(len(probs), self.weight)


class AskedParams(TriggerParams):
    on_request: bool = False


def asked(measured, params: AskedParams) -> tuple[bool, str]:
    return params.on_request, "asked for" if params.on_request else "not asked"


@pytest.fixture
def registered():
    register_strategy(DetectionCountStrategy)
    register_trigger("asked", rank=5, params=AskedParams)(asked)
    try:
        yield
    finally:
        STRATEGIES.pop("detection_count")
        TRIGGERS.pop("asked")


# ------------------------------------------------------------------------------ the run
def configure(tmp_path, *more: str):
    return load_config(DEMO_CONFIG, overrides=[
        f"workspace={tmp_path / 'ws'}", "versioning.push=false", "detector.min_size=64",
        "detector.max_size=96", "active.k=3", "active.strategy=detection_count",
        "active.weight=2.5", "trigger.on_request=true",
        "experiment.strategies=[random, detection_count]", *more])


def test_unregistered_names_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown query strategy 'detection_count'; known: "
                                          "coreset, dbal, entropy, least_confidence, margin"):
        configure(tmp_path)


def test_a_strategy_and_a_trigger_added_here_run_through_config_cycle_and_report(
        tmp_path, registered):
    with pytest.raises(ConfigError, match="strategy 'detection_count': bad parameter weight: "
                                          "Input should be greater than 0; known: aggregation, "
                                          "weight"):
        configure(tmp_path, "active.weight=0")
    with pytest.raises(ConfigError, match="unknown trigger setting 'on_requst'.*on_request"):
        configure(tmp_path, "trigger.on_requst=true")
    cfg = configure(tmp_path)
    assert cfg.active.strategy_params() == {"aggregation": "sum", "weight": 2.5}
    assert cfg.trigger.on_request is True

    # a cycle: the query stage builds the strategy from the config, with its parameters
    folder = make_pool(cfg, POOL)
    pool = CocoDataset.load(folder / "annotations.json")
    truth = [CocoAnnotation(i, i, 1, (10.0, 10.0, 30.0, 20.0), 600.0) for i in range(1, POOL + 1)]
    CocoDataset(pool.images, truth, pool.categories, folder / "images").save(
        Workspace.of(cfg).oracle / "pool.json")
    version = register_tiny_models(cfg, tmp_path / "models", 1)[0]
    mv = MlflowClient().get_model_version(cfg.registered_model_name, version)
    model = ModelRef(run_id=mv.run_id, uri=mv.source, version=str(version))
    ref = dataset_ref("pool", folder)

    def runner(name, fn, /, *args, **kwargs):
        stand_ins = {"finetune": lambda cfg, *, previous, **_: (
                         previous, EvalResult({"AP": 0.1, "AP50": 0.2}, "val-md5", 2)),
                     "gate": lambda cfg, **_: {"promote": False, "reason": "stand-in gate"}}
        return stand_ins.get(name, fn)(*args, **kwargs)

    _, row = pipeline.run_cycle(cfg, 1, previous=model, data={"pool": ref, "val": ref},
                                runner=runner, progress=False)
    batch = QueryBatch.from_dict(json.loads(
        (Workspace.of(cfg).cycle_dir(1) / "query.json").read_text()))
    assert batch.strategy == "detection_count" and batch.params["weight"] == 2.5
    assert len(batch.image_ids) == 3 and label.labeled_ids(cfg) == set(batch.image_ids)
    scores = list(batch.scores)  # images with more detections first, 2.5 a detection
    assert scores == sorted(scores, reverse=True) and all(s % 2.5 == 0 for s in scores)
    params = MlflowClient().get_run(pipeline.cycle_run_id(cfg, 1)).data.params
    assert params["active.strategy"] == "detection_count" and params["active.weight"] == "2.5"

    # the monitor: the new trigger decides (strongest rank) and names its event
    record = monitor.check(cfg)
    assert record["trigger"]["fire"] and record["trigger"]["trigger"] == "asked"
    assert record["trigger"]["event"] == "synthloop.cycle.asked"
    assert starts_deployment("al-cycle", "synthloop.cycle.asked", pipeline=cfg.name)
    assert MlflowClient().get_run(record["run_id"]).data.params["trigger.on_request"] == "True"

    # the experiment: the grid runs it, the harness gives it its parameters, the report a column
    from synthloop.stages.experiment import Harness

    exp = cfg.experiment
    assert {s.strategy for s in grid(exp) if s.setting == "S+R"} == {"random", "detection_count"}
    built = Harness(cfg, scale="toy", progress=False)._strategy("detection_count")
    assert isinstance(built, DetectionCountStrategy) and built.weight == 2.5
    runs = [{"spec": {"setting": setting, "strategy": strategy, "seed": seed, "k": k,
                      "cycle": 0, "fold": 0},
             "labels_total": k, "labels_new": k,
             "metrics": {"AP": ap + 0.01 * seed, "AP50": ap + 0.2}}
            for setting, strategy, base in (("R", "random", 0.2), ("S+R", "random", 0.3),
                                            ("S+R", "detection_count", 0.4))
            for seed in (1, 2) for k, ap in ((2, base), (4, base + 0.1))]
    summary = {"pipeline": cfg.name, "scale": "toy", "val_images": 5, "pool_images": POOL,
               "detector": cfg.detector.model_dump(mode="json"),
               "experiment": exp.model_dump(mode="json") | {"ks": [2, 4], "match_k": 4},
               "m0_s": {"AP": 0.25, "AP50": 0.45},
               "folds": [{"fold": 0, "val_images": 5, "pool_images": POOL,
                          "m0_s": {"AP": 0.25, "AP50": 0.45}}],
               "single": runs, "multi": []}
    summary["statistics"] = analyse(summary)
    write_report(summary, tmp_path)
    table = (tmp_path / "table.md").read_text()
    assert "| real images | R random | S+R random | S+R detection_count |" in table
    assert "| 4 | 0.315 | 0.415 | 0.515 |" in table
    assert "S+R detection_count k=4" in table
