"""The demo pipeline end to end at toy size: real Blender, real training, MLflow, DVC, Prefect.

One pipeline run through the Prefect flow (ephemeral harness), then a rerun through the CLI
that must resume without redoing anything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests_support import write_toy_pipeline

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.render]


def toy_config(tmp_path: Path) -> Path:
    return write_toy_pipeline(tmp_path)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, render_python):
    from prefect.testing.utilities import prefect_test_harness

    sys.path.insert(0, str(ROOT / "flows"))
    from demo import demo_flow  # noqa: E402  (flows/ is not a package: nothing imports it)

    tmp = tmp_path_factory.mktemp("demo")
    config = toy_config(tmp)
    with prefect_test_harness(server_startup_timeout=120):
        rows = demo_flow(str(config))
    return config, rows


def test_flow_runs_every_stage_and_reports_each_cycle(finished):
    _, rows = finished
    assert [r["cycle"] for r in rows] == [0, 1]
    assert rows[0]["promoted"] is True  # the first model becomes champion: there was none
    assert rows[1]["labels_total"] == 3 and rows[1]["labels_new"] == 3
    for r in rows:
        assert 0.0 <= r["metrics"]["AP"] <= 1.0


def test_mlflow_holds_runs_registry_and_champion(finished):
    import mlflow
    from mlflow import MlflowClient

    from synthloop.config import load_config

    config, rows = finished
    cfg = load_config(config)
    mlflow.set_tracking_uri(cfg.tracking_uri)
    client = MlflowClient()
    exp = client.get_experiment_by_name(cfg.experiment_name)
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert {"pretrain", "cycle-1", "finetune-cycle-1"} <= set(runs)
    cycle = runs["cycle-1"]
    assert cycle.data.params["active.strategy"] == "dbal"
    assert "val_AP" in cycle.data.metrics and "labels_total" in cycle.data.metrics
    assert cycle.data.tags["gate.promote"] in ("True", "False")
    assert runs["finetune-cycle-1"].data.tags["mlflow.parentRunId"] == cycle.info.run_id
    batch = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=cycle.info.run_id, artifact_path="query_batch.json")).read_text())
    assert len(batch["image_ids"]) == 3 and batch["strategy"] == "dbal"
    champ = client.get_model_version_by_alias(cfg.registered_model_name, "champion")
    expected = rows[1]["model_version"] if rows[1]["promoted"] else rows[0]["model_version"]
    assert str(champ.version) == expected
    assert str(client.get_model_version_by_alias(cfg.registered_model_name, "challenger").version) == \
        rows[1]["model_version"]


def test_dvc_holds_a_version_per_stage_that_changed_data(finished):
    config, _ = finished
    from synthloop.config import load_config

    ws = load_config(config).workspace
    tags = subprocess.run(["git", "-C", str(ws), "tag"], capture_output=True, text=True,
                          check=True).stdout.split()
    assert {"datasets", "cycle-1"} <= set(tags)
    assert (ws / "data.dvc").exists()
    labeled = json.loads((ws / "data" / "labeled" / "annotations.json").read_text())
    assert len(labeled["images"]) == 3
    assert any((ws / "dvc-remote").rglob("*")), "nothing was pushed to the DVC remote"


def finished_work(ws: Path) -> dict[str, int]:
    """{path: mtime_ns} of stage records, rendered and labelled images, and checkpoints: a rerun
    that renders or trains anything again rewrites some of them."""
    patterns = ("state/*.json", "state/cycle_*/*.json", "state/cycle_*/*.npz", "data/*/images/*",
                "data/*/raw/*.json", "checkpoints/*/*.pt")
    return {str(p.relative_to(ws)): p.stat().st_mtime_ns
            for pattern in patterns for p in ws.glob(pattern) if p.is_file()}


def test_rerun_through_the_cli_resumes_without_redoing_work(finished):
    from synthloop.config import load_config

    config, rows = finished
    ws = load_config(config).workspace
    before = finished_work(ws)
    assert any(p.startswith("checkpoints/") for p in before) and len(before) > 20
    out = subprocess.run([sys.executable, "-m", "synthloop", "demo", "--config", str(config)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    after = finished_work(ws)
    redone = [p for p, t in before.items() if after.get(p) != t]
    assert not redone, f"the rerun rewrote {redone[:5]}"  # nothing rendered or trained again
    assert "PROXY" in out.stdout
    table = [line.split() for line in out.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in table[:2]] == [0, 1]
    assert table[1][-1] == ("yes" if rows[1]["promoted"] else "no")
