"""What an ML engineer sees in MLflow (issue 20), in a real browser: headless Chromium over the
DevTools protocol on a real `mlflow server`, over a workspace made by the real pipeline (M0 and
one cycle on tests/review_support.py's Blender-free data, then a cycle that stops with an error).

Checked as a reviewer would look: the link synthloop prints opens the experiment on its runs,
the Dataset column names each data version, a failed cycle shows FAILED with its error, the
version page shows the gate's verdict, the model page says which version serves, the pipeline
run's charts draw AP by cycle. ``SYNTHLOOP_DOCS_SCREENSHOTS=1`` writes the runs, failed-cycle
and verdict screenshots to docs/images (the README's); otherwise they go to the tmp folder.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from people_support import Chromium
from tests_support import free_port
from review_support import start_mlflow_ui, tiny_workspace
from synthloop import tracking
from synthloop.stages import learning_curve
from synthloop.stages.pipeline import run_pipeline
from synthloop.stages.workspace import Workspace, read_record
from synthloop.tracking_recovery import ERROR_TAG, NOTE_TAG

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1500)]
ML = "workflowType=machine_learning"
# MLflow 3.17.2's own component ids (the pinned version): its chat panel's close button, and
# the button that opens a parent run's child runs in the runs table
ASSISTANT_CLOSE = '[data-component-id="mlflow.assistant.chat_panel.close"]'
RUN_EXPANDER = '[data-component-id$="runnamecellrenderer.tsx_46"]'


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """M0 + cycle 1 finished, run twice (the rerun adds nothing), then cycle 2 stopped by a
    real error: the oracle's ground truth is gone, so the query finds nothing to label."""
    tmp = tmp_path_factory.mktemp("review")
    cfg = tiny_workspace(tmp)
    t0 = time.perf_counter()
    rows = run_pipeline(cfg, cycles=1, progress=False)
    run_pipeline(cfg, cycles=1, progress=False)
    oracle = Workspace.of(cfg).oracle / "pool.json"
    shutil.move(oracle, tmp / "pool.json")
    with pytest.raises(ValueError, match="can be labelled"):
        run_pipeline(cfg, cycles=2, progress=False)
    print(f"workspace built in {time.perf_counter() - t0:.0f} s")
    tracking.setup(cfg)
    return cfg, rows


def runs_by_name(cfg) -> dict:
    client = MlflowClient()
    exp = client.get_experiment_by_name(cfg.experiment_name)
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}


def test_the_store_holds_the_curve_the_table_and_the_failed_cycle(workspace):
    cfg, rows = workspace
    client, runs = MlflowClient(), runs_by_name(cfg)
    curve = runs[f"pipeline-{cfg.name}"]
    assert curve.info.run_id == read_record(cfg.workspace / "state" / learning_curve.RECORD)[
        "run_id"]  # one run for the workspace, reopened by every start
    history = {k: [(m.step, m.value) for m in client.get_metric_history(curve.info.run_id, k)]
               for k in ("val_AP", "val_AP50", "labels_used")}
    assert history["val_AP"] == [(0, rows[0].metrics["AP"]), (1, rows[1].metrics["AP"])]
    assert [s for s, _ in history["val_AP50"]] == [0, 1]
    assert history["labels_used"] == [(0, 0.0), (1, 3.0)]  # the rerun added no point
    table = learning_curve.logged_cycles(client, curve.info.run_id)
    assert table == {0, 1}
    finetune = {d.dataset.name for d in runs["finetune-cycle-1"].inputs.dataset_inputs}
    assert finetune == {"labeled@cycle-1", "val@datasets"}
    cycle1 = {d.dataset.name for d in runs["cycle-1"].inputs.dataset_inputs}
    assert cycle1 == {"pool@datasets", "labeled@cycle-1", "val@datasets"}
    failed = runs["cycle-2"]
    assert failed.info.status == "FAILED"
    assert failed.data.tags[ERROR_TAG].startswith("ValueError: query (cycle 2): none of the")
    assert failed.data.tags[NOTE_TAG] == f"FAILED: {failed.data.tags[ERROR_TAG]}\n\n" \
        "The traceback is in the artifact error.txt."
    assert curve.info.status == "FAILED" and curve.data.tags[ERROR_TAG] == \
        failed.data.tags[ERROR_TAG]


def shots_dir(tmp_path: Path) -> Path:
    if os.environ.get("SYNTHLOOP_DOCS_SCREENSHOTS", "").lower() in ("1", "true", "yes"):
        return ROOT / "docs" / "images"
    return tmp_path


def test_a_reviewer_sees_runs_datasets_failure_verdict_and_curve(workspace, tmp_path):
    if shutil.which("chromium") is None:
        pytest.fail("no `chromium` on PATH: install Debian's chromium (apt-get install chromium)")
    cfg, rows = workspace
    runs = runs_by_name(cfg)
    exp_id = runs["pretrain"].info.experiment_id
    out = shots_dir(tmp_path)
    port = free_port()
    server = start_mlflow_ui(cfg.tracking_uri, port, tmp_path / "mlflow.log")
    base = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    try:
        with Chromium(size=(1600, 900)) as browser:
            # the link `synthloop demo` prints: the runs, not MLflow's GenAI overview
            text = browser.open(tracking.runs_url(cfg, base),
                                wait_for=["labeled@cycle-1", "synthetic@datasets"])
            assert f"#/experiments/{exp_id}/runs" in browser.evaluate("location.href")
            for seen in ("Dataset", "pool@datasets", "val@datasets", "Training", "Validation",
                         "Scoring", "cycle-2", "pretrain"):  # finetune/gate: inside cycles
                assert seen in text, seen
            browser.click(ASSISTANT_CLOSE)  # MLflow's chat panel: a third of the window
            assert browser.click(RUN_EXPANDER) >= 1  # open cycle-1: its fine-tune and gate runs
            browser.click("button", text="Expand rows")  # every dataset of a run, not "+2"
            text = browser.open_more(wait_for=["finetune-cycle-1", "gate-cycle-1",
                                               "val@datasets (", "labeled@cycle-1 ("])
            browser.screenshot(out / "mlflow-runs.png")

            failed = runs["cycle-2"]
            error = failed.data.tags[ERROR_TAG]  # in full as the description, cut as a tag
            browser.open(f"{base}/#/experiments/{exp_id}/runs/{failed.info.run_id}?{ML}",
                         wait_for=["Failed", ERROR_TAG, f"FAILED: {error[:60]}", error[-40:]])
            browser.screenshot(out / "mlflow-failed-cycle.png")

            version = rows[1].model_version
            verdict = MlflowClient().get_model_version(cfg.registered_model_name,
                                                       version).description.split("\n")[0]
            assert verdict.startswith(("promoted: AP ", "refused: AP "))
            text = browser.open(f"{base}/#/models/{cfg.registered_model_name}/versions/"
                                f"{version}?{ML}", wait_for=[verdict, "Description"])
            assert "over 200 resamples" in verdict and "per-class ok" in verdict
            browser.screenshot(out / "mlflow-version-verdict.png")

            champion = rows[1].model_version if rows[1].promoted else rows[0].model_version
            browser.open(f"{base}/#/models/{cfg.registered_model_name}?{ML}",
                         wait_for=[f"Serving: v{champion} (alias 'champion') since "])

            curve = runs[f"pipeline-{cfg.name}"].info.run_id
            text = browser.open(f"{base}/#/experiments/{exp_id}/runs/{curve}/model-metrics?{ML}",
                                wait_for=["val_AP50", "labels_used", "Step"])
            charts = browser.evaluate(
                "Array.from(document.querySelectorAll('.js-plotly-plot, canvas, svg.main-svg'))"
                ".length")
            assert charts and charts >= 2, charts
            assert "pipeline-demo (val_AP)" in text  # the AP-by-cycle line's legend
            # the toy's APs are ~0: docs/images/mlflow-learning-curve-bolts.png is the real
            # demo's curve (docs/make_mlflow_curve_screenshot.py)
            browser.screenshot(tmp_path / "mlflow-learning-curve.png")

            text = browser.open(f"{base}/#/experiments/{exp_id}/runs/{curve}/artifacts/"
                                f"{learning_curve.TABLE}?{ML}",
                                wait_for=["candidate_version", "no champion"])
            assert "champion_before" in text and "bootstrap" in text
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(f"browser checks: {time.perf_counter() - t0:.0f} s")


def test_the_cycle_report_renders_offline_and_shows_the_runs_numbers(workspace, tmp_path):
    """Issue 16, part 4: cycle 1's report, as MLflow holds it, opened from disk in Chromium
    (no server: the page must need nothing else); then the run page in MLflow links it.
    The toy's APs are ~0: docs/images/cycle-report-bolts.png is the bolts demo's report
    (benchmarks/cycle_report_cost.py --screenshot)."""
    from synthloop.reports.cycle_report import format_value
    from synthloop.stages import cycle_report

    cfg, rows = workspace
    run = runs_by_name(cfg)["cycle-1"]
    client, rid = MlflowClient(), run.info.run_id
    assert run.data.tags[cycle_report.TAG] == cycle_report.REPORT
    page = Path(client.download_artifacts(rid, cycle_report.REPORT, str(tmp_path)))
    assert page.read_bytes() == (Workspace.of(cfg).cycle_dir(1) / cycle_report.REPORT).read_bytes()
    t0 = time.perf_counter()
    with Chromium(size=(1100, 1900)) as browser:
        text = browser.open(page.as_uri(), wait_for=["cycle 1", "Gate decision and evidence"])
        images = browser.evaluate("Array.from(document.images).map(i => "
                                  "[i.complete, i.naturalWidth, i.src.slice(0, 15)])")
        # the gate's figure and the k=3 queried images, decoded, all from data URIs
        assert len(images) == 1 + len(read_record(Workspace.of(cfg).cycle_dir(1) /
                                                  "query.json")["image_ids"])
        assert all(done and width > 0 and src.startswith("data:image/")
                   for done, width, src in images), images
        fetched = browser.evaluate("performance.getEntriesByType('resource')"
                                   ".map(e => e.name).filter(n => !n.startsWith('data:'))")
        assert fetched == [], fetched
        chart = browser.evaluate("(() => { const r = document.querySelector('svg')"
                                 ".getBoundingClientRect(); return [r.width, r.height]; })()")
        assert chart[0] > 300 and chart[1] > 100
        cells = browser.evaluate("Array.from(document.querySelectorAll('[data-metric]'))"
                                 ".map(e => [e.dataset.metric, e.dataset.value, e.innerText])")
        metrics = client.get_run(rid).data.metrics
        assert {key for key, _, _ in cells} == set(metrics)
        for key, value, shown in cells:  # what the page prints is the run's value
            assert float(value) == metrics[key] and shown == format_value(metrics[key], key)
        assert f"{rows[1].metrics['AP']:.4f}" in text and "not enabled" in text
        browser.screenshot(tmp_path / "cycle-report.png")

        port = free_port()
        server = start_mlflow_ui(cfg.tracking_uri, port, tmp_path / "mlflow.log")
        try:
            url = (f"http://127.0.0.1:{port}/#/experiments/{run.info.experiment_id}/runs/{rid}"
                   f"?{ML}")
            browser.open(url, wait_for=["Cycle 1 report: ", cycle_report.REPORT])
            links = browser.evaluate("Array.from(document.querySelectorAll('a'))"
                                     ".map(a => a.href).filter(h => h.endsWith('"
                                     f"/artifacts/{cycle_report.REPORT}'))")
            assert links, "the run's description does not link the report"
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(f"cycle report browser checks: {time.perf_counter() - t0:.0f} s")
