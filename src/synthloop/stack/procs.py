"""Processes of the stack: started detached with a pid file each, stopped only through those.

A pid file (``<data_dir>/run/<name>.pid``, JSON) records the pid, the command and the process's
start time from /proc, so ``stack down`` never signals a process that merely reused the pid.
Each service runs in its own session (process group): stopping it takes its children along.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable


class StackError(RuntimeError):
    """A precondition of the stack failed; the message says which and what to do."""


def executable(name: str, hint: str) -> str:
    """``name`` next to this interpreter (the venv's scripts), else on PATH; StackError if absent."""
    local = Path(sys.executable).with_name(name)
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise StackError(f"the `{name}` command is not installed ({hint})")
    return found


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_port_free(service: str, port: int, key: str) -> None:
    if port_in_use(port):
        raise StackError(f"port {port} for {service} is already in use by another process: stop "
                         f"it or set {key} in the stack config")


def stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (0: state, 1: ppid, 2: process group,
    11-14: utime, stime, cutime, cstime in clock ticks, 19: start time); None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()


def process_table() -> dict[int, list[str]]:
    """Every process's ``stat_fields``, by pid (a process that ends meanwhile is left out)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := stat_fields(int(entry.name))) is not None:
            table[int(entry.name)] = fields
    return table


def descendants(root: int, table: dict[int, list[str]] | None = None) -> list[int]:
    """Every process below ``root`` (not ``root`` itself), from /proc's parent links."""
    children: dict[int, list[int]] = {}
    for pid, fields in (process_table() if table is None else table).items():
        children.setdefault(int(fields[1]), []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22)."""
    fields = stat_fields(pid)
    return int(fields[19]) if fields and fields[0] not in ("Z", "X") else None


class PidFile:
    """``<run_dir>/<name>.pid``: what one service of the stack is."""

    def __init__(self, run_dir: Path, name: str):
        self.path = Path(run_dir) / f"{name}.pid"
        self.name = name

    def write(self, pid: int, cmd: list[str], *, group: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"pid": pid, "start_ticks": _start_ticks(pid), "cmd": cmd, "group": group,
                  "started_at": time.time()}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(self.path)

    def read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def alive_pid(self) -> int | None:
        """The recorded pid if that very process still runs, else None."""
        record = self.read()
        if not record:
            return None
        ticks = _start_ticks(record["pid"])
        return record["pid"] if ticks is not None and ticks == record["start_ticks"] else None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def spawn(pidfile: PidFile, cmd: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> int:
    """Start ``cmd`` detached (own session), output appended to ``log``; write the pid file."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    pidfile.write(proc.pid, cmd, group=True)
    return proc.pid


def stop(pidfile: PidFile, *, timeout_s: float = 30.0) -> bool:
    """SIGTERM the recorded process (its whole group when it was started as one), SIGKILL after
    ``timeout_s``; then the same for any process it started outside that group that is still
    running (Prefect's worker starts each flow run in a session of its own, and a worker killed
    before it stopped them would leave them running). False when nothing of ours was running.
    The pid file is removed."""
    pid = pidfile.alive_pid()
    record = pidfile.read() or {}
    if pid is None:
        pidfile.remove()
        return False
    table = process_table()
    outside = {p: int(table[p][19]) for p in descendants(pid, table)
               if not record.get("group") or int(table[p][2]) != pid}

    def send(sig: int) -> None:
        try:
            os.killpg(pid, sig) if record.get("group") else os.kill(pid, sig)
        except ProcessLookupError:
            pass

    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and pidfile.alive_pid() is not None:
        _reap(pid)
        time.sleep(0.2)
    if pidfile.alive_pid() is not None:
        send(signal.SIGKILL)
        time.sleep(0.5)
        _reap(pid)
    _stop_left_behind(outside, timeout_s)
    pidfile.remove()
    return True


def _stop_left_behind(started: dict[int, int], timeout_s: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``, the processes of ``started`` (pid -> start
    ticks) that still run (the same start time: not a new process that reused the pid); a
    process group leader takes its group along."""
    def running() -> list[int]:
        return [p for p, ticks in started.items() if _start_ticks(p) == ticks]

    def send(pids: list[int], sig: int) -> None:
        for p in pids:
            fields = stat_fields(p)
            try:
                os.killpg(p, sig) if fields and int(fields[2]) == p else os.kill(p, sig)
            except ProcessLookupError:
                pass

    left = running()
    if not left:
        return
    send(left, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (left := running()):
        time.sleep(0.2)
    send(left, signal.SIGKILL)


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our own child (tests start the stack
    in-process); otherwise nothing to do."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def http_status(url: str, timeout: float = 3.0) -> int | None:
    """The HTTP status of GET ``url`` (4xx/5xx included); None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None


def wait_until(check: Callable[[], bool], *, what: str, timeout_s: float, log: Path,
               pidfile: PidFile | None = None) -> float:
    """Seconds until ``check()`` holds; StackError naming the log if it exits or times out."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if check():
            return time.monotonic() - t0
        if pidfile is not None and pidfile.alive_pid() is None:
            raise StackError(f"{what} exited during start-up:\n{tail(log, 15)}\n(full log: {log})")
        time.sleep(0.5)
    raise StackError(f"{what} not healthy after {timeout_s:.0f} s:\n{tail(log, 15)}\n"
                     f"(full log: {log})")


def tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 200 * lines))
            text = fh.read().decode(errors="replace")
    except OSError:
        return f"({path} not written yet)"
    return "\n".join(text.splitlines()[-lines:])
