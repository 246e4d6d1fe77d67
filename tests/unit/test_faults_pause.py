"""``faults.pause``: a process held at a named point while a test breaks something outside it
(tests/faults/test_stack_faults.py stops S3 while a cycle waits at ``tracking.log_model``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from synthloop import faults

HELD = ("from synthloop import faults; faults.pause('tracking.log_model'); "
        "print('went on', flush=True)")


def start(pause_dir) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HELD], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, faults.PAUSE_ENV: str(pause_dir)})


def test_an_armed_point_holds_the_process_until_the_test_releases_it(tmp_path):
    armed = tmp_path / "tracking.log_model"
    armed.touch()
    proc = start(tmp_path)
    try:
        reached = tmp_path / "tracking.log_model.reached"
        deadline = time.monotonic() + 60
        while not reached.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert reached.read_text() == str(proc.pid)
        time.sleep(1.0)
        assert proc.poll() is None  # still held
        armed.unlink()
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and out.strip() == "went on"
    finally:
        proc.kill()


def test_an_unarmed_point_does_nothing(tmp_path):
    proc = start(tmp_path)  # the folder is set, the point's file is not there
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.strip() == "went on"
    assert not (tmp_path / "tracking.log_model.reached").exists()
    assert "tracking.log_model" in faults.PAUSE_POINTS
