"""stages/training.py's pieces on tiny data: the epoch logger's val monitor and the train step's
stats (the whole train -> evaluate -> log -> register run is covered by the integration tests)."""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow import MlflowClient

from synthloop.config import TrainConfig, load_config
from synthloop.stages.training import EpochLogger, train_model
from test_detection_training import FAST, make_coco, tiny_model
from tests_support import DEMO_CONFIG


# A real MLflow store (SQLite; its set-up is most of the time) and a tiny detector: 20-60 s on
# 2 busy cores.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlruns.db'}")
    # An earlier test may have left another store's experiment active (mlflow's global state).
    mlflow.set_experiment("training-stage")
    yield
    mlflow.set_tracking_uri(previous)


@pytest.fixture
def run(store):
    with mlflow.start_run() as active:
        yield active.info.run_id


def test_epoch_logger_monitors_val_ap_only_when_asked_and_only_on_eval_epochs(tmp_path, run):
    coco = make_coco(tmp_path / "coco")
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path / 'ws'}", "active.batch_size=2"])
    model = tiny_model()
    on = EpochLogger(cfg, model, coco, run_name="pretrain", train_cfg=TrainConfig(monitor_val=True),
                     checkpoint_dir=tmp_path)
    on(1, {"loss": 1.5, "AP": 0.0, "AP50": 0.0, "step": 2.0, "seconds": 0.5})
    on(2, {"loss": 1.0, "step": 4.0})  # no early-stopping eval this epoch: no monitor row
    rows = json.loads((tmp_path / "monitor.json").read_text())
    assert [r["epoch"] for r in rows] == [1] and {"val_AP", "val_AP50", "train_cpu_seconds"} <= set(rows[0])
    assert rows[0]["train_cpu_seconds"] >= 0 and on.monitor_cpu > 0
    off = EpochLogger(cfg, model, coco, run_name="finetune", train_cfg=TrainConfig(),
                      checkpoint_dir=tmp_path / "off")
    off(1, {"loss": 1.5, "AP": 0.0, "AP50": 0.0})
    assert not (tmp_path / "off" / "monitor.json").exists()
    client = MlflowClient()
    assert [m.step for m in client.get_metric_history(run, "epoch_loss")] == [1, 2, 1]
    assert len(client.get_metric_history(run, "monitor_val_AP")) == 1


def test_train_model_reports_steps_and_the_planned_budget(tmp_path, run):
    coco = make_coco(tmp_path / "coco")
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path / 'ws'}"])
    train_cfg = TrainConfig(epochs=1, **FAST)
    out = train_model(cfg, tiny_model(), run_name="pretrain", train_ds=coco, stop_ds=None,
                      val_ds=coco, train_cfg=train_cfg, checkpoint_dir=tmp_path / "ckpt",
                      progress=False)
    assert out.steps == 2 and out.seconds > 0
    assert out.stats == {"train_steps": 2.0, "train_planned_steps": 2.0, "train_time_capped": 0.0}
