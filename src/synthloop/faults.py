"""Named crash points for the fault-injection tests (tests/faults/).

``point("render.mid_shard")`` does nothing unless the environment variable ``SYNTHLOOP_FAULT``
names that point; then the process (and, when it leads its own process group, its workers such
as the Blender render subprocesses) is killed with SIGKILL on the spot: no ``finally`` blocks,
no atexit, exactly what a power cut or the OOM killer leaves behind. ``NAME@N`` fires at the
N-th hit of the point in this process (default the first).

Unset, a call is one dict lookup: cheap enough for per-batch and per-image loops.
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "SYNTHLOOP_FAULT"
POINTS = ("render.mid_shard", "dvc.commit", "dvc.push", "train.mid_epoch", "score.mid_pool",
          "label.mid_write", "registry.register", "gate.alias_move")
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
