"""Helpers of the fault matrix: the toy config, a killable CLI run, and state snapshots."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests_support import write_toy_pipeline

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Row:
    fault: str
    happened: str
    resumed: str
    lost: str


ROWS: list[Row] = []


def toy_config(folder: Path, **overrides) -> Path:
    """The demo pipeline at its smallest: 8 renders, 8 pool images, 4 val images, k=3, 1 cycle.

    Pool scoring and fine-tuning run in batches of 2 so that 'mid-pool' and 'mid-epoch' exist.
    """
    update: dict = {"pretrain": {"epochs": 1, "max_minutes": 2, "batch_size": 2, "warmup_steps": 1},
                    "active": {"batch_size": 2}, "gate": {"bootstrap_resamples": 20}}
    replace: dict = {}
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        if field:
            update.setdefault(section, {})[field] = value
        else:
            replace[section] = value
    return write_toy_pipeline(folder, sizes=(8, 8, 4), shard_size=4, update=update,
                              replace=replace)


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "MLFLOW_ENABLE_ASYNC_LOGGING": "false", "GIT_PYTHON_REFRESH": "quiet",
           "PYTHONUNBUFFERED": "1"}
    env.pop("SYNTHLOOP_FAULT", None)
    env.update(extra)
    return env


def run_cli(args: list[str], *, fault: str | None = None, timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m synthloop <args>`` in its own process group (a fault kills the group)."""
    e = env or cli_env()
    if fault:
        e = {**e, "SYNTHLOOP_FAULT": fault}
    return subprocess.run([sys.executable, "-m", "synthloop", *args], capture_output=True,
                          text=True, timeout=timeout, env=e, cwd=ROOT, start_new_session=True)


def file_times(root: Path, patterns: tuple[str, ...]) -> dict[str, int]:
    """{relative path: mtime_ns} of the files matching ``patterns`` (a rewrite changes it)."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns
            for pattern in patterns for p in root.glob(pattern) if p.is_file()}


def finished_work(ws: Path) -> dict[str, int]:
    """Files that mark finished work: stage records, rendered and labelled images, renders'
    done-markers. A rerun that skips finished work leaves every one of them untouched."""
    return file_times(ws, ("state/*.json", "state/cycle_*/*.json", "state/cycle_*/*.npz",
                           "data/*/images/*", "data/*/raw/*.json", "staging/*/raw/*.json"))


def labelled(ws: Path) -> dict:
    """The labelled set: image id -> sorted boxes + categories (what a person paid for)."""
    path = ws / "data" / "labeled" / "annotations.json"
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    out: dict[int, list] = {im["id"]: [] for im in raw["images"]}
    for a in raw["annotations"]:
        out[a["image_id"]].append((a["category_id"], [round(v, 3) for v in a["bbox"]]))
    return {k: sorted(v) for k, v in sorted(out.items())}


def final_state(ws: Path) -> dict:
    """What must equal an uninterrupted run's: dataset hashes, the labelled set, the query."""
    from synthloop.versioning.dvc_repo import dataset_md5

    # images + annotations: the dataset a model sees (raw/ also holds the workers' timing logs)
    state = {name: (dataset_md5(ws / "data" / name / "images"),
                    hashlib.md5((ws / "data" / name / "annotations.json").read_bytes()).hexdigest())
             for name in ("synthetic", "val", "pool", "labeled")}
    state["labelled"] = labelled(ws)
    q = json.loads((ws / "state" / "cycle_1" / "query.json").read_text())
    state["query"] = q["image_ids"]
    lab = json.loads((ws / "state" / "cycle_1" / "label.json").read_text())
    state["label_record"] = {"new": lab["new"], "total": lab["total"]}
    return state


def assert_no_partial_files(ws: Path) -> None:
    """No temp file anywhere in the workspace, every JSON parses, every image decodes."""
    from PIL import Image

    from synthloop.stages.workspace import PARTIAL_FILE

    left = [p for p in ws.rglob("*") if PARTIAL_FILE.search(p.name) and p.is_file()]
    assert not left, f"partial files left: {left[:5]}"
    for folder in ("data", "state", "oracle"):
        for p in (ws / folder).rglob("*.json"):
            json.loads(p.read_text())
        for p in (ws / folder).rglob("*.jpg"):
            with Image.open(p) as im:
                im.load()
    for p in (ws / "checkpoints").rglob("*.pt"):
        from synthloop.detection.checkpoint import read_checkpoint

        read_checkpoint(p)


def champion_is_gated(ws: Path, cfg_path: Path) -> str:
    """The champion is the version the last gate record names, and that gate ran on it."""
    from mlflow import MlflowClient

    from synthloop import tracking
    from synthloop.config import load_config
    from synthloop.gating.registry import CHAMPION, get_alias_version

    cfg = load_config(cfg_path)
    tracking.setup(cfg)
    client = MlflowClient()
    champ = get_alias_version(client, cfg.registered_model_name, CHAMPION)
    assert champ is not None, "no champion after a finished run"
    gates = sorted(ws.glob("state/cycle_*/gate.json"))
    expected = None
    for path in gates:
        rec = json.loads(path.read_text())
        if rec["promote"]:
            expected = str(rec["candidate_version"])
    assert str(champ.version) == expected, (champ.version, expected)
    tags = client.get_model_version(cfg.registered_model_name, champ.version).tags
    assert "val_AP" in tags and "val_md5" in tags, "champion carries no evaluation"
    return str(champ.version)


def one_line(err: BaseException, *needles: str) -> str:
    text = str(err)
    assert "\n" not in text, f"not one line: {text!r}"
    for needle in needles:
        assert needle in text, f"{needle!r} not in {text!r}"
    return text


def short(text: str, n: int = 150) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
