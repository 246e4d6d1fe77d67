"""Named crash points for the fault-injection tests (tests/faults/).

``point("render.mid_shard")`` does nothing unless the environment variable ``SYNTHLOOP_FAULT``
names that point; then the process (and, when it leads its own process group, its workers such
as the Blender render subprocesses) is killed with SIGKILL on the spot: no ``finally`` blocks,
no atexit, exactly what a power cut or the OOM killer leaves behind. ``NAME@N`` fires at the
N-th hit of the point in this process (default the first).

Unset, a call is one dict lookup: cheap enough for per-batch and per-image loops.

``pause("tracking.log_model")`` holds a process at a named point instead of killing it, so a
test can break something outside it (stop S3, restart a database) at an exact step: when
``SYNTHLOOP_FAULT_PAUSE_DIR`` names a folder holding a file named after the point (the test
"arms" it), the process writes ``<point>.reached`` there (its pid) and waits until the armed
file is removed (at most ``timeout_s``), then goes on. Unarmed, it costs one ``stat``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

ENV = "SYNTHLOOP_FAULT"
POINTS = ("render.mid_shard", "dvc.commit", "dvc.push", "train.mid_epoch", "score.mid_pool",
          "label.mid_write", "registry.register", "gate.alias_move")
PAUSE_ENV = "SYNTHLOOP_FAULT_PAUSE_DIR"
PAUSE_POINTS = ("tracking.log_model",)
_hits: dict[str, int] = {}


def point(name: str) -> None:
    """Crash here if ``SYNTHLOOP_FAULT`` names ``name`` (see the module docstring)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    target, _, nth = wanted.partition("@")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] < (int(nth) if nth else 1):
        return
    sys.stderr.write(f"synthloop.faults: SIGKILL at {name}\n")
    sys.stderr.flush()
    if os.getpgrp() == os.getpid():  # our own group (the tests start us so): take workers too
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def pause(name: str, *, timeout_s: float = 900.0) -> None:
    """Hold here while ``$SYNTHLOOP_FAULT_PAUSE_DIR/<name>`` exists (see the module docstring)."""
    folder = os.environ.get(PAUSE_ENV)
    if not folder:
        return
    armed = Path(folder) / name
    if not armed.exists():
        return
    (Path(folder) / f"{name}.reached").write_text(str(os.getpid()))
    sys.stderr.write(f"synthloop.faults: paused at {name} until {armed} is removed\n")
    sys.stderr.flush()
    deadline = time.monotonic() + timeout_s
    while armed.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
