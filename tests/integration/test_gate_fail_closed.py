"""The gate fails closed: when the evidence cannot be computed nothing is promoted, no alias
moves, the refusal is recorded (state and MLflow) and the cycle ends non-zero. Only
``gate.allow_point_rule_on_error`` lets the point estimates decide, and the record says so."""

from __future__ import annotations

import json
import logging
import sys

import mlflow
import pytest
from mlflow import MlflowClient

from gate_support import exact_detections, exact_set, register, save_val_set
from synthloop.config import load_config
from synthloop.gating.decision import RULE_BOOTSTRAP, RULE_POINT_ON_ERROR, RULE_REFUSED
from synthloop.stages import gate
from tests_support import DEMO_CONFIG

N = 14
REFUSED = "refused: gate could not evaluate ("


def make_cfg(tmp_path, *extra: str):
    return load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path / 'ws'}",
                                               "gate.bootstrap_resamples=20", *extra])


def champion_and_candidate(cfg, *, cache_candidate: bool = True):
    """v1 (finds 6 of 14 boxes) gated in as champion, v2 (finds all 14) registered: the point
    estimates alone say promote v2."""
    ds = exact_set(N)
    md5 = save_val_set(cfg, ds)
    champ = register(cfg, ds, exact_detections(ds, {1: set(range(1, 7))}), md5)
    assert gate.run(cfg, cycle=0, candidate=champ[0], candidate_eval=champ[1])["promote"]
    cand = register(cfg, ds, exact_detections(ds, {1: set(range(1, N + 1))}), md5,
                    cache=cache_candidate)
    return champ, cand


def aliases(cfg) -> dict[str, str]:
    model = MlflowClient().get_registered_model(cfg.registered_model_name)
    return {alias: str(version) for alias, version in model.aliases.items()}


def gate_run(cfg, cycle: int):
    client = MlflowClient()
    exp = client.get_experiment_by_name(cfg.experiment_name)
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}[
        f"gate-cycle-{cycle}"]


def assert_refused(cfg, excinfo, cand, cause: str) -> dict:
    """The refusal is loud (one line), recorded in state and MLflow, and moved nothing."""
    message = str(excinfo.value)
    assert "\n" not in message and REFUSED in message and cause in message
    assert "gate.allow_point_rule_on_error" in message
    cycle_dir = cfg.workspace / "state" / "cycle_1"
    assert not (cycle_dir / "gate.json").exists()  # not a decision: a rerun decides again
    rec = json.loads((cycle_dir / "gate_refused.json").read_text())
    assert rec == excinfo.value.record
    assert rec["rule"] == RULE_REFUSED and rec["promote"] is False
    assert rec["reason"].startswith(REFUSED) and cause in rec["reason"]
    assert aliases(cfg) == {"champion": "1", "challenger": "1"}  # nothing moved
    run = gate_run(cfg, 1)
    assert run.info.status == "FAILED" and run.data.tags["gate.rule"] == RULE_REFUSED
    text = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/gate_reason.txt")
    assert text.startswith(REFUSED)
    assert MlflowClient().get_run(cand[0].run_id).data.tags["gate.rule"] == RULE_REFUSED
    return rec


def test_a_missing_val_file_refuses_and_a_rerun_decides_by_bootstrap(tmp_path):
    cfg = make_cfg(tmp_path)
    _, cand = champion_and_candidate(cfg)
    annotations = cfg.workspace / "data" / "val" / "annotations.json"
    saved = annotations.read_bytes()
    annotations.unlink()
    with pytest.raises(gate.GateRefused) as excinfo:
        gate.run(cfg, cycle=1, candidate=cand[0], candidate_eval=cand[1])
    assert_refused(cfg, excinfo, cand, "the validation annotations are missing")
    annotations.write_bytes(saved)  # the cause fixed, the same call resumes and decides
    rec = gate.run(cfg, cycle=1, candidate=cand[0], candidate_eval=cand[1])
    assert rec["promote"] and rec["rule"] == RULE_BOOTSTRAP and aliases(cfg)["champion"] == "2"


def test_an_unreadable_checkpoint_refuses(tmp_path):
    cfg = make_cfg(tmp_path)
    _, cand = champion_and_candidate(cfg, cache_candidate=False)
    client = MlflowClient()  # the candidate's checkpoint is there but is not a checkpoint
    client.log_text(cand[0].run_id, "not a torch file", "model/artifacts/checkpoint.pt")
    with pytest.raises(gate.GateRefused) as excinfo:
        gate.run(cfg, cycle=1, candidate=cand[0], candidate_eval=cand[1])
    rec = assert_refused(cfg, excinfo, cand, f"bootstrap failed: RuntimeError: no cached val "
                                             f"predictions of run {cand[0].run_id}")
    assert "cannot be loaded: UnpicklingError" in rec["reason"]


def test_a_checkpoint_that_cannot_be_downloaded_refuses(tmp_path):
    cfg = make_cfg(tmp_path)
    _, cand = champion_and_candidate(cfg, cache_candidate=False)  # and no artifact at all
    with pytest.raises(gate.GateRefused) as excinfo:
        gate.run(cfg, cycle=1, candidate=cand[0], candidate_eval=cand[1])
    rec = assert_refused(cfg, excinfo, cand, f"({cand[0].uri}) cannot be loaded: MlflowException")
    assert rec["candidate_value"] == pytest.approx(1.0) and rec["interval"] is None


def test_with_the_switch_on_the_point_rule_decides_and_is_recorded_as_such(tmp_path):
    cfg = make_cfg(tmp_path, "gate.allow_point_rule_on_error=true")
    _, cand = champion_and_candidate(cfg, cache_candidate=False)
    rec = gate.run(cfg, cycle=1, candidate=cand[0], candidate_eval=cand[1])
    assert rec["promote"] and rec["rule"] == RULE_POINT_ON_ERROR and rec["interval"] is None
    assert "[no bootstrap: bootstrap failed:" in rec["reason"]
    assert "point estimates compared because gate.allow_point_rule_on_error" in rec["reason"]
    assert aliases(cfg)["champion"] == "2"
    assert json.loads((cfg.workspace / "state" / "cycle_1" / "gate.json").read_text()) == rec
    run = gate_run(cfg, 1)
    assert run.data.tags["gate.rule"] == RULE_POINT_ON_ERROR
    assert run.data.params["gate.allow_point_rule_on_error"] == "True"


@pytest.mark.parametrize("switch", ["false", "true"])
def test_a_champion_that_cannot_be_reevaluated_refuses_even_with_the_switch(tmp_path, switch):
    """Its recorded AP is on another val version: no point estimate to compare either."""
    cfg = make_cfg(tmp_path, f"gate.allow_point_rule_on_error={switch}")
    ds = exact_set(N)
    md5 = save_val_set(cfg, ds)
    old = register(cfg, ds, exact_detections(ds, {1: {1}}), md5, recorded_md5="v-old",
                   cache=False)
    MlflowClient().set_registered_model_alias(cfg.registered_model_name, "champion",
                                              old[0].version)
    cand = register(cfg, ds, exact_detections(ds, {1: set(range(1, N + 1))}), md5)
    with pytest.raises(gate.GateRefused) as excinfo:
        gate.run(cfg, cycle=1, candidate=cand[0], candidate_eval=cand[1])
    rec = excinfo.value.record
    assert rec["rule"] == RULE_REFUSED and not rec["promote"]
    assert f"champion v{old[0].version} could not be re-evaluated on val set {md5}" in rec["reason"]
    assert aliases(cfg)["champion"] == old[0].version


@pytest.fixture()
def restore_cli_logging():
    """The CLI installs its own handler on the package logger; give the next tests theirs."""
    pkg = logging.getLogger("synthloop")
    state = (pkg.handlers[:], pkg.level, pkg.propagate)
    yield
    pkg.handlers[:], pkg.level, pkg.propagate = state


def test_a_refused_gate_ends_the_cycle_non_zero_with_one_line(tmp_path, monkeypatch, capsys,
                                                              restore_cli_logging):
    """`synthloop cycle` with the real cycle sequence (pipeline.run_cycle) and the real gate;
    only the stages before the gate are stood in for (the runner is the documented seam)."""
    from synthloop import cli
    from synthloop.stages import pipeline

    cfg = make_cfg(tmp_path)
    champ, cand = champion_and_candidate(cfg)
    (cfg.workspace / "data" / "val" / "annotations.json").unlink()
    done = {"score": None, "query": None, "log-query-batch": None, "label": None,
            "finetune": cand}

    def stand_in(name, fn, /, *args, **kwargs):
        return fn(*args, **kwargs) if name == "gate" else done[name]

    def one_cycle(cfg_, *, runner, cycles, progress, **_):
        return [pipeline.run_cycle(cfg_, 1, previous=champ[0], runner=stand_in,
                                   data={"pool": None, "val": None})[1]]

    monkeypatch.setattr(pipeline, "_run_pipeline", one_cycle)
    monkeypatch.setattr(sys, "argv", ["synthloop", "cycle", "-c", str(DEMO_CONFIG),
                                      "-w", str(cfg.workspace),
                                      "--set", "gate.bootstrap_resamples=20"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and REFUSED in err[0] and "annotations are missing" in err[0]
    parent = MlflowClient().get_run(json.loads(
        (cfg.workspace / "state" / "cycle_1" / "run.json").read_text())["run_id"])
    assert parent.info.status == "FAILED" and parent.data.tags["gate.rule"] == RULE_REFUSED
    assert aliases(cfg) == {"champion": "1", "challenger": "1"}


def test_the_gate_command_exits_non_zero_on_a_refusal(tmp_path, monkeypatch, capsys,
                                                      restore_cli_logging):
    from synthloop import cli

    cfg = make_cfg(tmp_path)
    _, cand = champion_and_candidate(cfg)
    (cfg.workspace / "data" / "val" / "annotations.json").unlink()
    monkeypatch.setattr(sys, "argv", ["synthloop", "gate", str(cand[0].version), "--apply",
                                      "-c", str(DEMO_CONFIG), "-w", str(cfg.workspace),
                                      "--set", "gate.bootstrap_resamples=20"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 1
    assert REFUSED in capsys.readouterr().err
    assert aliases(cfg) == {"champion": "1", "challenger": "1"}
