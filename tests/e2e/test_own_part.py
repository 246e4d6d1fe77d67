"""Bring your own part, end to end at toy size: a STEP file the test makes (in inches) and a
folder of real labelled photos -> `synthloop init` -> the printed next commands (render,
import the photos, pretrain M0 and one DAL cycle), through the real CLI, Blender and training.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from cad_support import bolt

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.render]

TOY = ["synthetic.num_images=8", "synthetic.width=128", "synthetic.height=72",
       "synthetic.samples=1", "synthetic.camera_distance={min: 0.2, max: 0.35}",
       "synthetic.parts_per_image={min: 1, max: 3}",
       "pool.max_side=128", "val.max_side=128",
       "detector={architecture: mobilenet_v3_fpn, min_size: 72, max_size: 128}",
       "pretrain={epochs: 2, max_minutes: 1, batch_size: 4, warmup_steps: 2}",
       "finetune={epochs: 1, batch_size: 2, warmup_steps: 1}",
       "active={strategy: dbal, k: 2, cycles: 1}", "render={shard_size: 8}"]


def _photos(bolts_real: Path, dest: Path, n: int = 6) -> Path:
    """The first ``n`` frames of bolts_real/valid in YOLO layout (Bolt, Bottle, Washer)."""
    for sub in ("images", "labels"):
        (dest / sub).mkdir(parents=True)
    for img in sorted((bolts_real / "valid" / "images").iterdir())[:n]:
        shutil.copy(img, dest / "images" / img.name)
        shutil.copy(bolts_real / "valid" / "labels" / f"{img.stem}.txt", dest / "labels")
    shutil.copy(bolts_real / "classes.txt", dest)
    return dest


def _invoke(args: list[str]):
    from typer.testing import CliRunner

    from synthloop.cli import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"synthloop {' '.join(args)}:\n{result.output}\n{result.exception!r}"
    return result.output


def test_step_part_and_photos_to_a_first_cycle(tmp_path, render_python, bolts_real, monkeypatch):
    from synthloop.synthesis.cad_import import write_step

    t0, cpu0 = time.time(), time.process_time()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SYNTHLOOP_BLENDER_PYTHON", render_python)
    step = write_step(tmp_path / "Bolt.step", {"Bolt": bolt()}, unit="inch")  # 16 x 16 x 46 mm
    photos = _photos(bolts_real, tmp_path / "camera")
    out = _invoke(["init", "--name", "mybolt", "--cad", str(step), "--labels", "yolo",
                   str(photos), "--val-fraction", "0.34", "--out", str(tmp_path / "proj"),
                   *[a for s in TOY for a in ("--set", s)]])
    assert "Bolt: 0.016 x 0.016 x 0.046 m (unit inch, file unit inch; Bolt.step)" in out
    config = tmp_path / "proj" / "mybolt.yaml"
    assert (tmp_path / "proj" / "mybolt-contact.png").stat().st_size > 10_000
    text = config.read_text()
    assert "Photo classes with no part, dropped from pool/val: Bottle, Washer" in text

    # the 8 previews: boxes of a 46 mm part at 0.2-0.35 m, 35-50 mm lens, 128 px frame
    previews = json.loads((tmp_path / "proj/workspace/mybolt/init/previews/annotations.json")
                          .read_text())
    assert len(previews["images"]) == 8 and len(previews["annotations"]) >= 4
    sides = np.array([max(a["bbox"][2:]) for a in previews["annotations"]])
    diag_px_nearest = np.linalg.norm([0.016, 0.016, 0.046]) * 50 * 128 / (36 * 0.2)
    assert sides.max() <= 1.3 * diag_px_nearest  # 25.4x too large if inches were misread
    assert sides.max() >= 0.016 * 35 * 128 / (36 * 0.35)

    commands = out.split("next:\n", 1)[1].splitlines()[:4]
    for line in commands:  # render synthetic, render pool, render val, cycle --cycles 1
        args = shlex.split(line.split("#")[0])
        assert args[0] == "synthloop"
        _invoke(args[1:])
    from synthloop.config import load_config
    from synthloop.stages.workspace import Workspace

    ws = Workspace.of(load_config(config))
    gate = json.loads(ws.cycle_dir(1).joinpath("gate.json").read_text())
    assert "promote" in json.dumps(gate)
    labels = json.loads((ws.dataset_dir("labeled") / "annotations.json").read_text())
    assert len(labels["images"]) == 2
    print(f"\nown-part e2e: {time.time() - t0:.0f} s wall, {time.process_time() - cpu0:.0f} s CPU "
          "(this process; Blender workers not counted)")
