"""Where a CAD retrain keeps its records, and what they say (stages/cad_retrain.py writes them).

<workspace>/state/cad_retrain/<revision>/: ``invalidated.json``, ``run.json``,
``candidate.json``, ``gate.json``, ``retrain.json`` (the outcome, written last). The revision
names the set of part hashes it retrained for. Read by the monitor (a revision already answered
is not announced again) and by the pipeline (a promoted retrain is where the next cycle starts).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping

from synthloop import lineage
from synthloop.artifacts import ModelRef
from synthloop.config import PipelineConfig
from synthloop.stages.workspace import Workspace, read_record


def cad_revision(hashes: Mapping[str, str]) -> str:
    """A short name for the CAD revision ``{part: hash}`` (12 hex digits)."""
    return hashlib.sha256(json.dumps(dict(sorted(hashes.items()))).encode()).hexdigest()[:12]


def cad_retrain_dir(cfg: PipelineConfig, hashes: Mapping[str, str]) -> Path:
    """Where the retrain for the CAD revision ``hashes`` keeps its records."""
    return Workspace.of(cfg).root / "state" / "cad_retrain" / cad_revision(hashes)


def cad_answered(cfg: PipelineConfig) -> bool:
    """True when the current meshes' revision has a finished CAD retrain (promoted or not)."""
    return (cad_retrain_dir(cfg, lineage.cad_hashes(cfg)) / "retrain.json").is_file()


def promoted_after(cfg: PipelineConfig, cycle: int) -> ModelRef | None:
    """The newest CAD retrain promoted after cycle ``cycle`` finished, as the model the next
    cycle fine-tunes from (its renders show the new meshes; the previous cycle's candidate was
    trained on the old ones). None when there is none: the cycle starts from M_{t-1}."""
    best = None
    for path in (Workspace.of(cfg).root / "state" / "cad_retrain").glob("*/retrain.json"):
        rec = read_record(path)
        if rec and rec.get("outcome") == "promoted" and rec.get("after_cycle") == cycle:
            if best is None or rec["finished"] > best[0]["finished"]:
                best = (rec, read_record(path.parent / "candidate.json"))
    return ModelRef(**best[1]["model"]) if best else None
