"""MLflow runs that outlived their process: end them, so a dead run never shows as RUNNING.

A SIGKILL (the OOM killer, a power cut, ``synthloop.faults``) leaves the killed process's MLflow
run RUNNING for ever. Each run synthloop opens carries ``tracking.process_tags`` (pid, host,
process start, time opened); ``mark_interrupted_runs`` ends the experiment's RUNNING runs whose
process is gone as KILLED, with a ``synthloop.interrupted`` note saying whose and why.

A run's process is gone when:
- it ran on this host, and no process has its pid, or that process is a zombie, or the pid now
  belongs to a process that started at another time (a reused pid);
- it ran on another host, or the run has no process tags (then those of its parent run count),
  and it was opened more than ``stale_after_s`` ago: another host's processes cannot be seen
  from here, so only age tells.
A run whose process is alive is never touched. The pipeline calls this while holding the
workspace's cycle lock, before any stage, so no stage of that workspace runs besides its own.

``reopen_run`` continues a run in this process (a crashed cycle's parent run, reused by the
rerun): RUNNING again, owned by this process, the interruption note kept as ``synthloop.resumed``.

``ends_failed`` covers the other way a run outlives its work: a stage that raises. Each stage
that opens a run, and the cycle's and the pipeline's runs, run their body inside it: the run
ends FAILED (KILLED on Ctrl-C) with the error in ``synthloop.error`` (and as the run's
description when it has none) and the traceback as ``error.txt``. A SIGKILL runs no handler; ``mark_interrupted_runs`` ends those runs on the next
start.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from synthloop import tracking

log = logging.getLogger(__name__)

STALE_AFTER_S = 7 * 24 * 3600.0  # another host's run (or an untagged one): ended after a week
INTERRUPTED_TAG = "synthloop.interrupted"
RESUMED_TAG = "synthloop.resumed"
ERROR_TAG = "synthloop.error"  # why a run ended FAILED: "<exception type>: <message>"
ERROR_ARTIFACT = "error.txt"  # the traceback
MAX_ERROR_TAG = 4000
NOTE_TAG = "mlflow.note.content"  # the run page's Description: a failed run without one says why
FAILED_NOTE = "FAILED: "
PARENT_TAG = "mlflow.parentRunId"


@dataclass(frozen=True)
class InterruptedRun:
    run_id: str
    run_name: str
    note: str


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _me() -> str:
    return f"process {os.getpid()} on {socket.gethostname()}"


def local_process_gone(pid: int, start: str) -> str | None:
    """Why process ``pid`` of this host (started at ``start``, see ``tracking.process_start``)
    is gone, or None while it runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "no such process"
    except PermissionError:  # it exists, under another user
        pass
    stat = tracking.proc_stat(pid)
    if stat is None:  # gone since os.kill, or no /proc here: count it alive
        return None
    if stat[0] == "Z":
        return "exited (a zombie not yet reaped)"
    if start and tracking.process_start(pid) != start:
        return "its pid now belongs to another process"
    return None


def owner_gone(tags: Mapping[str, str], *, start_time_ms: int, now_s: float,
               stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why the process named by a run's ``tags`` is gone, or None when it is (or may be) alive.

    ``start_time_ms``: the run's MLflow start time, the age of a run without an ``opened`` tag.
    """
    pid, host = tags.get(tracking.PID_TAG, ""), tags.get(tracking.HOST_TAG)
    if pid.isdigit() and host == socket.gethostname():
        return local_process_gone(int(pid), tags.get(tracking.PROCESS_START_TAG, ""))
    try:
        opened = float(tags[tracking.OPENED_TAG])
    except (KeyError, ValueError):
        opened = start_time_ms / 1000
    age = now_s - opened
    if age <= stale_after_s:
        return None
    return (f"opened {age / 3600:.0f} h ago, past the {stale_after_s / 3600:.0f} h limit for a "
            f"run whose process cannot be checked from {socket.gethostname()}")


def _owner_tags(client: MlflowClient, run: Any, running: Mapping[str, Any]) -> dict[str, str]:
    """The run's process tags, or its parent's when it has none (a run opened inside a cycle)."""
    tags = dict(run.data.tags)
    parent = tags.get(PARENT_TAG)
    if tracking.PID_TAG in tags or not parent:
        return tags
    try:
        parent_run = running.get(parent) or client.get_run(parent)
    except MlflowException:  # the parent was deleted: the run stands on its own
        return tags
    return {**tags, **{k: v for k, v in parent_run.data.tags.items()
                       if k.startswith("synthloop.")}}


def running_runs(client: MlflowClient, experiment_id: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], "attributes.status = 'RUNNING'",
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def mark_interrupted_runs(client: MlflowClient, experiment_id: str, *,
                          stale_after_s: float = STALE_AFTER_S) -> list[InterruptedRun]:
    """End as KILLED, with a ``synthloop.interrupted`` note, the experiment's RUNNING runs whose
    process is gone (see the module docstring); returns them."""
    running = {r.info.run_id: r for r in running_runs(client, experiment_id)}
    now, out = time.time(), []
    for run_id, run in running.items():
        tags = _owner_tags(client, run, running)
        why = owner_gone(tags, start_time_ms=run.info.start_time, now_s=now,
                         stale_after_s=stale_after_s)
        if why is None:
            continue
        owner = (f"process {tags[tracking.PID_TAG]} on {tags.get(tracking.HOST_TAG, '?')}"
                 if tracking.PID_TAG in tags else "its process (not recorded)")
        note = f"{owner} gone: {why}; marked KILLED by {_me()} at {_now()}"
        client.set_tag(run_id, INTERRUPTED_TAG, note)
        client.set_terminated(run_id, status="KILLED")
        log.warning("MLflow run %s (%s) was left RUNNING: %s", run.info.run_name, run_id, note)
        out.append(InterruptedRun(run_id, run.info.run_name, note))
    return out


def reopen_run(client: MlflowClient, run_id: str) -> None:
    """Continue ``run_id`` in this process: RUNNING, owned by this process; an interruption
    note or an error (``synthloop.error``) moves to ``synthloop.resumed``."""
    run = client.get_run(run_id)
    mine = tracking.process_tags()
    same = all(run.data.tags.get(k) == mine[k] for k in (tracking.PID_TAG, tracking.HOST_TAG,
                                                          tracking.PROCESS_START_TAG))
    if run.info.status == "RUNNING" and same:
        return
    if run.info.status != "RUNNING":
        client.update_run(run_id, status="RUNNING")
    for key, value in mine.items():
        client.set_tag(run_id, key, value)
    if run.data.tags.get(NOTE_TAG, "").startswith(FAILED_NOTE):
        client.delete_tag(run_id, NOTE_TAG)
    for tag, say in ((INTERRUPTED_TAG, "{}"), (ERROR_TAG, "ended FAILED: {}")):
        note = run.data.tags.get(tag)
        if note:
            client.set_tag(run_id, RESUMED_TAG,
                           f"{say.format(note)}; resumed by {_me()} at {_now()}"[:MAX_ERROR_TAG])
            client.delete_tag(run_id, tag)


def describe_error(exc: BaseException) -> str:
    """``Type: message`` on one line, cut to fit a run tag."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:MAX_ERROR_TAG]


@contextmanager
def ends_failed(run_id: str, client: MlflowClient | None = None) -> Iterator[str]:
    """Run the body for MLflow run ``run_id``; when it raises, end the run FAILED (KILLED for a
    KeyboardInterrupt) with ``synthloop.error`` and ``error.txt``, then re-raise. A tracking
    store that cannot take the note (an outage) never hides the stage's own error."""
    try:
        yield run_id
    except BaseException as exc:
        client = client or MlflowClient()
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        try:
            client.set_tag(run_id, ERROR_TAG, describe_error(exc))
            if NOTE_TAG not in client.get_run(run_id).data.tags:
                client.set_tag(run_id, NOTE_TAG, f"{FAILED_NOTE}{describe_error(exc)}\n\n"
                               f"The traceback is in the artifact {ERROR_ARTIFACT}.")
            client.log_text(run_id, "".join(traceback.format_exception(exc)), ERROR_ARTIFACT)
            client.set_terminated(run_id, status=status)
        except Exception as note_error:  # noqa: BLE001 - the stage's error is the one to raise
            log.warning("could not mark MLflow run %s %s: %s", run_id, status, note_error)
        raise
