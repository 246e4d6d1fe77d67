"""A pool that holds images the simulated oracle cannot label (photos ingested without ground
truth): the query picks only labelable images and counts the others, and a cycle completes;
with ``labeling.fallback_oracle`` the same pool is labelled by both oracles in one cycle.

Score, query, lineage and label run for real (a tiny untrained registered detector); fine-tune
and gate are stand-ins: they are not what is tested here and would only add minutes.
"""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from synthloop.artifacts import DatasetRef, EvalResult, ModelRef, QueryBatch
from synthloop.config import load_config
from synthloop.data.coco import CocoAnnotation, CocoDataset
from synthloop.stages import ingest, label, pipeline, query, score
from synthloop.stages.label_human import LabelsPending, export_folder, import_answers
from synthloop.stages.render import dataset_ref
from synthloop.stages.workspace import Workspace, write_record
from people_support import image_bytes, make_pool, register_tiny_models
from tests_support import DEMO_CONFIG

pytestmark = pytest.mark.slow
RENDERED, INGESTED = 4, 12  # pool ids 1..4 have ground truth, 5..16 came in through ingest


def workspace(tmp_path, *overrides: str):
    cfg = load_config(DEMO_CONFIG, overrides=[
        f"workspace={tmp_path / 'ws'}", f"ingest.source={tmp_path / 'camera'}",
        "versioning.push=false", "detector.min_size=64", "detector.max_size=96",
        "active.strategy=dbal", "active.k=3", "labeling.preannotation_min_score=0.0", *overrides])
    folder = make_pool(cfg, RENDERED)
    pool = CocoDataset.load(folder / "annotations.json")
    truth = [CocoAnnotation(i, i, 1, (10.0, 10.0, 30.0, 20.0), 600.0)
             for i in range(1, RENDERED + 1)]
    CocoDataset(pool.images, truth, pool.categories, folder / "images").save(
        Workspace.of(cfg).oracle / "pool.json")
    camera = tmp_path / "camera"
    camera.mkdir()
    for n in range(INGESTED):  # a camera without annotations.json: no ground truth
        (camera / f"cam_{n:02d}.jpg").write_bytes(image_bytes(96, 72, seed=100 + n))
    added = ingest.run(cfg)
    assert added.added == tuple(range(RENDERED + 1, RENDERED + INGESTED + 1))
    assert added.with_ground_truth == 0
    return cfg


def champion(cfg, tmp_path) -> ModelRef:
    version = register_tiny_models(cfg, tmp_path / "models", 1)[0]
    mv = MlflowClient().get_model_version(cfg.registered_model_name, version)
    return ModelRef(run_id=mv.run_id, uri=mv.source, version=str(version))


def stand_in_runner(calls: list[str]):
    """Run score, query, lineage and label for real; fine-tune and gate as stand-ins."""

    def finetune(cfg, *, cycle, previous, labeled, **_):
        return previous, EvalResult({"AP": 0.1, "AP50": 0.2}, "val-md5", 2)

    def gate(cfg, *, cycle, **_):
        return {"promote": False, "reason": "stand-in gate"}

    def runner(name, fn, /, *args, **kwargs):
        calls.append(name)
        fn = {"finetune": finetune, "gate": gate}.get(name, fn)
        return fn(*args, **kwargs)

    return runner


def pool_ref(cfg) -> DatasetRef:
    return dataset_ref("pool", Workspace.of(cfg).dataset_dir("pool"))


def test_simulated_oracle_picks_only_labelable_images_and_the_cycle_completes(tmp_path, caplog):
    cfg = workspace(tmp_path)
    model = champion(cfg, tmp_path)
    calls: list[str] = []
    with caplog.at_level("WARNING"):
        _, row = pipeline.run_cycle(cfg, 1, previous=model,
                                    data={"pool": pool_ref(cfg), "val": pool_ref(cfg)},
                                    runner=stand_in_runner(calls), progress=False)
    assert calls == ["score", "query", "log-query-batch", "label", "finetune", "gate",
                     "label-cost", "cycle-report"]
    batch = QueryBatch.from_dict(json.loads(
        (Workspace.of(cfg).cycle_dir(1) / "query.json").read_text()))
    assert len(batch.image_ids) == 3 and set(batch.image_ids) <= set(range(1, RENDERED + 1))
    assert batch.excluded == INGESTED
    assert batch.routes == {"simulated": batch.new_label_ids}
    assert row.labels_new == 3 and label.labeled_ids(cfg) == set(batch.image_ids)
    assert f"{INGESTED} of {RENDERED + INGESTED} candidates left out" in caplog.text
    assert "labeling.fallback_oracle" in caplog.text  # says what to set
    run = MlflowClient().get_run(pipeline.cycle_run_id(cfg, 1))
    assert run.data.metrics["query_excluded"] == float(INGESTED)
    # the simulated oracle's cost: the cost model, one box an image: 3 x (5 s + 7 s)
    rec = json.loads((Workspace.of(cfg).cycle_dir(1) / "label.json").read_text())
    assert rec["cost"]["source"] == "model" and rec["cost"]["seconds"] == pytest.approx(36.0)
    assert run.data.metrics["label_seconds"] == pytest.approx(36.0)
    assert run.data.tags["label.cost_source"] == "model"


def test_a_batch_recorded_before_routing_is_chosen_again(tmp_path, caplog):
    """The issue's workspace: a query record holding ingested ids (what the old code wrote)."""
    cfg = workspace(tmp_path)
    model = champion(cfg, tmp_path)
    stale = QueryBatch(strategy="dbal", params={}, seed=1, model_version=model.version,
                       pool_md5="old", image_ids=(7, 2, 9), scores=(3.0, 2.0, 1.0),
                       new_label_ids=(7, 2, 9))
    write_record(Workspace.of(cfg).cycle_dir(1) / "query.json", stale.to_dict())
    with pytest.raises(ValueError, match=r"cannot be labelled: 2 pool images have no ground "
                                         r"truth.*labeling.fallback_oracle"):
        label.run(cfg, cycle=1, batch=stale)
    scores = score.run(cfg, cycle=1, model=model, pool=pool_ref(cfg), labeled_ids=set(),
                       progress=False)
    with caplog.at_level("WARNING"):
        again = query.run(cfg, cycle=1, scores_path=scores, model=model, pool=pool_ref(cfg),
                          labeled_ids=set())
    assert "choosing again" in caplog.text
    assert set(again.image_ids) <= set(range(1, RENDERED + 1)) and again.excluded == INGESTED
    assert label.run(cfg, cycle=1, batch=again).num_images == 3


def test_a_mixed_pool_routes_each_image_to_an_oracle_that_can_label_it(tmp_path):
    cfg = workspace(tmp_path, "labeling.fallback_oracle=labelstudio", "active.k=14")
    model = champion(cfg, tmp_path)
    scores = score.run(cfg, cycle=1, model=model, pool=pool_ref(cfg), labeled_ids=set(),
                       progress=False)
    batch = query.run(cfg, cycle=1, scores_path=scores, model=model, pool=pool_ref(cfg),
                      labeled_ids=set())
    assert batch.excluded == 0 and len(batch.image_ids) == 14
    people = [i for i in batch.image_ids if i > RENDERED]
    simulated = [i for i in batch.image_ids if i <= RENDERED]
    assert len(people) >= 10 and len(simulated) >= 2  # 14 of 16, 4 with ground truth
    assert batch.routes == {"simulated": tuple(simulated), "labelstudio": tuple(people)}

    with pytest.raises(LabelsPending, match="label import --cycle 1"):
        label.run(cfg, cycle=1, batch=batch)
    folder = export_folder(cfg, 1)
    tasks = json.loads((folder / "labelstudio" / "tasks.json").read_text())
    assert sorted(t["data"]["synthloop_image_id"] for t in tasks) == sorted(people)
    for n, t in enumerate(tasks):  # people accept the first pre-annotation of each image
        t["annotations"] = [{"id": n + 1, "was_cancelled": False,
                             "result": t["predictions"][0]["result"][:1]}]
        if n % 2 == 0:  # Label Studio timed every other one
            t["annotations"][0]["lead_time"] = 10.0 + n
    (tmp_path / "done.json").write_text(json.dumps(tasks))
    import_answers(cfg, 1, tmp_path / "done.json")

    ref = label.run(cfg, cycle=1, batch=batch)
    assert ref.num_images == 14 and label.labeled_ids(cfg) == set(batch.image_ids)
    labeled = CocoDataset.load(ref.annotations)
    truth = {a.image_id: a.bbox for a in labeled.annotations if a.image_id <= RENDERED}
    assert truth == {i: (10.0, 10.0, 30.0, 20.0) for i in simulated}  # copied ground truth
    assert {a.image_id for a in labeled.annotations} == set(batch.image_ids)
    rec = json.loads((Workspace.of(cfg).cycle_dir(1) / "label.json").read_text())
    assert rec["routes"] == {"simulated": len(simulated), "labelstudio": len(people)}
    # cost: lead times where Label Studio gave them; the model elsewhere (5 s an image, 7 s a
    # new box; 1 s for the accepted pre-annotation and each one deleted)
    timed = sum(10.0 + n for n in range(0, len(tasks), 2))
    untimed = sum(5.0 + len(t["predictions"][0]["result"]) for n, t in enumerate(tasks) if n % 2)
    assert rec["cost"]["source"] == "mixed" and rec["cost"]["images_timed"] == (len(tasks) + 1) // 2
    assert rec["cost"]["seconds"] == pytest.approx(timed + untimed + 12.0 * len(simulated))
