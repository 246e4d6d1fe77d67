"""One cycle at a time per pipeline: a file lock in the workspace, and a log of who ran.

A nightly run and a drift-triggered run may start together (two Prefect flow runs, two worker
processes, or a person at the CLI). Only the lock holder trains and promotes; the other waits up
to ``wait_s`` seconds, then gives up and is recorded as ``skipped`` with the holder's name.
``flock`` locks belong to the open file, so the kernel frees them when a holder dies: a crashed
run never leaves a stale lock behind. The lock is re-entrant within one thread (the locked cycle
runner calls the pipeline, which takes the lock too); other threads and processes are refused.

Files: ``<workspace>/state/cycle.lock`` (holder as JSON) and ``state/cycle_runs.jsonl`` (one
line per request: trigger, outcome ran|skipped, waited seconds, cycle, times).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

LOCK_NAME = "cycle.lock"
LOG_NAME = "cycle_runs.jsonl"
_HELD: dict[tuple[str, int], Held] = {}  # (lock path, thread id) -> this thread's turn


class CycleBusy(RuntimeError):
    """Another cycle holds the lock; ``holder`` says which (trigger, pid, host, since)."""

    def __init__(self, holder: dict[str, Any], waited_s: float) -> None:
        self.holder = holder
        self.waited_s = waited_s
        super().__init__(f"another cycle is running ({holder.get('trigger', '?')}, pid "
                         f"{holder.get('pid', '?')} since {holder.get('since', '?')}); "
                         f"waited {waited_s:.0f} s")


@dataclass(frozen=True)
class Held:
    """What the holder knows about its turn."""

    trigger: str
    waited_s: float
    since: str


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read_holder(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    try:
        return json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError:
        return {}


@contextmanager
def cycle_lock(state_dir: Path, *, trigger: str, wait_s: float = 0.0,
               poll_s: float = 0.5) -> Iterator[Held]:
    """Hold the pipeline's cycle lock for the ``with`` body, or raise ``CycleBusy``.

    ``trigger``: who asks (``nightly``, ``drift``, ``pool-grew``, ``cli``...), recorded for the
    others to read. ``wait_s`` 0 means try once.
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    key = (os.path.realpath(state_dir / LOCK_NAME), threading.get_ident())
    if key in _HELD:  # this thread already holds it: nested use, nothing to do
        yield _HELD[key]
        return
    fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    start = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= wait_s:
                    raise CycleBusy(_read_holder(fd), waited) from None
                time.sleep(min(poll_s, max(0.01, wait_s - waited)))
        since = _now()
        holder = {"trigger": trigger, "pid": os.getpid(), "host": socket.gethostname(),
                  "since": since}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(holder).encode())
        _HELD[key] = Held(trigger=trigger, waited_s=time.monotonic() - start, since=since)
        try:
            yield _HELD[key]
        finally:
            del _HELD[key]
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def record_request(state_dir: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Append one request's outcome to ``cycle_runs.jsonl`` (O_APPEND: lines never interleave)."""
    entry = {"recorded": _now(), **entry}
    line = (json.dumps(entry, sort_keys=True, default=str) + "\n").encode()
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(state_dir) / LOG_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return entry


def read_requests(state_dir: Path) -> list[dict[str, Any]]:
    path = Path(state_dir) / LOG_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
