"""Where a pipeline keeps its state, and the MLflow connection each stage opens.

A workspace is its own git + DVC repository (separate from synthloop's source tree)::

    <workspace>/data/{synthetic,pool,labeled,val}/   COCO json + images, tracked by data.dvc
    <workspace>/oracle/                              ground truth kept aside (simulated oracle)
    <workspace>/state/cycle_<t>/                     per-stage records that make reruns resume
    <workspace>/checkpoints/                         training checkpoints (resume after a crash)
    <workspace>/cad/<key>/                           meshes generated from ``cad:`` parts
    <workspace>/mlruns.db, mlartifacts/, dvc-remote/ embedded MLflow store and DVC remote
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthloop.config import PipelineConfig
from synthloop.io_utils import atomic_write_text

log = logging.getLogger(__name__)
# What our atomic writes leave behind when killed between write and rename: io_utils
# (``.<name>.<random>.tmp``), stage copies (``.<name>.tmp``), Blender workers (``<name>.tmp<pid>``).
PARTIAL_FILE = re.compile(r"^\..+\.tmp$|\.tmp\d+(\.png)?$")
SWEPT_FOLDERS = ("data", "oracle", "state", "checkpoints", "staging", "cad")


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def of(cls, cfg: PipelineConfig) -> "Workspace":
        return cls(cfg.workspace.resolve())

    @property
    def data(self) -> Path:
        return self.root / "data"

    def dataset_dir(self, name: str) -> Path:
        return self.data / name

    @property
    def oracle(self) -> Path:
        return self.root / "oracle"

    def cycle_dir(self, cycle: int) -> Path:
        return self.root / "state" / f"cycle_{cycle}"

    def checkpoint_dir(self, name: str) -> Path:
        return self.root / "checkpoints" / name

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def cad(self) -> Path:
        """Meshes generated from ``cad:`` parts, one folder per parameter hash."""
        return self.root / "cad"

    @property
    def artifact_root(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def dvc_remote(self) -> Path:
        return self.root / "dvc-remote"

    def partial_files(self) -> list[Path]:
        """Temp files of writes that a crash interrupted (never a finished file's name)."""
        return sorted(p for name in SWEPT_FOLDERS if (self.root / name).is_dir()
                      for p in (self.root / name).rglob("*")
                      if PARTIAL_FILE.search(p.name) and p.is_file())

    def sweep_partial_files(self) -> int:
        """Delete ``partial_files``; call only while holding the cycle lock (no writer runs)."""
        found = self.partial_files()
        for path in found:
            path.unlink(missing_ok=True)
        if found:
            log.warning("removed %d partial files left by an interrupted run (e.g. %s)",
                        len(found), found[0])
        return len(found)


def read_record(path: Path) -> dict[str, Any] | None:
    """A finished stage's record, or None when the stage has not finished."""
    return json.loads(path.read_text()) if path.exists() else None


def write_record(path: Path, record: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, default=str))
