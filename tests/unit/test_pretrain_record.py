"""The pretrain stage's record: a finished M0 is kept, and says so loudly when the renders it was
trained on are no longer the workspace's renders."""

from __future__ import annotations

import logging
from pathlib import Path

from synthloop.artifacts import DatasetRef, ModelRef
from synthloop.config import load_config
from synthloop.stages import pretrain
from synthloop.stages.workspace import Workspace, write_record

ROOT = Path(__file__).resolve().parents[2]


def _ref(name: str, md5: str) -> DatasetRef:
    return DatasetRef(name=name, annotations=Path("a.json"), image_root=Path("images"), md5=md5,
                      num_images=1, num_annotations=1)


def test_a_finished_m0_is_kept_and_a_changed_render_set_is_named(tmp_path, caplog):
    cfg = load_config(ROOT / "pipelines" / "demo.yaml", overrides=[f"workspace={tmp_path}"])
    model = {"run_id": "r1", "uri": "runs:/r1/model", "version": "1", "metrics": {"AP": 0.4}}
    write_record(Workspace.of(cfg).root / "state" / "pretrain.json",
                 {**model, "synthetic_md5": "aaa"})
    caplog.set_level(logging.INFO, logger="synthloop.stages.pretrain")

    assert pretrain.run(cfg, _ref("synthetic", "aaa"), _ref("val", "v")) == ModelRef(**model)
    assert "already done (run r1), skipped" in caplog.text and "WARNING" not in caplog.text

    caplog.clear()
    assert pretrain.run(cfg, _ref("synthetic", "bbb"), _ref("val", "v")) == ModelRef(**model)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "trained on other renders (synthetic md5 aaa, now bbb)" in (
        warned[0].getMessage())
