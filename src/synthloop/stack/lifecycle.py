"""Bring the stack up in order, report its health, bring it down (see services.py)."""

from __future__ import annotations

import json
import time
from typing import Callable

from synthloop.stack import postgres
from synthloop.stack.procs import StackError, check_port_free, stop, wait_until
from synthloop.stack.services import (CHECKS, ORDER, PORT_KEYS, STACK_FORMAT, STARTERS, TIMEOUTS,
                                      Health, _log, _pid, configure_prefect, ensure_buckets,
                                      service_env)
from synthloop.stack.settings import StackSettings


def services(settings: StackSettings) -> tuple[str, ...]:
    """The services this stack runs itself (an external S3 endpoint is not one of them)."""
    return tuple(s for s in ORDER if not (s == "s3" and settings.s3.endpoint_url))


def check_data_folder(settings: StackSettings) -> None:
    """Refuse a data folder written by another stack format or PostgreSQL major version."""
    marker = settings.data_dir / "stack.json"
    if marker.is_file():
        try:
            found = json.loads(marker.read_text())
        except ValueError:
            raise StackError(f"{marker} is not JSON: is {settings.data_dir} a stack data "
                             "folder?") from None
        if found.get("format") != STACK_FORMAT:
            raise StackError(f"{settings.data_dir} was written by stack format "
                             f"{found.get('format')}, this synthloop writes format {STACK_FORMAT}:"
                             " use another data folder (--data-dir)")
    postgres.check_data_version(settings)


def check_ports(settings: StackSettings) -> None:
    """Every port that a service not running yet will bind is free: a taken one (even the last
    service's) is an error before anything starts, not after the services before it did."""
    for name in services(settings):
        if name in PORT_KEYS and _pid(settings, name).alive_pid() is None:
            key, port = PORT_KEYS[name]
            check_port_free(name, port(settings), key)


def up(settings: StackSettings, *, echo: Callable[[str], None] = print) -> dict[str, float]:
    """Start every service not already running, in order, each healthy before the next.
    Returns seconds per service (0.0 for one already running) and ``total``."""
    t_start = time.monotonic()
    check_data_folder(settings)
    postgres.find_bin_dir(settings)  # a missing binary is an error before anything starts
    check_ports(settings)
    for folder in (settings.data_dir, settings.logs_dir, settings.run_dir):
        folder.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "stack.json").write_text(json.dumps(
        {"format": STACK_FORMAT, "postgres_major": settings.postgres.major_version}))
    env = service_env(settings)
    started: list[str] = []
    timings: dict[str, float] = {}
    try:
        for name in services(settings):
            t0 = time.monotonic()
            if _pid(settings, name).alive_pid() is not None and CHECKS[name](settings):
                echo(f"{name:9s} already running")
                timings[name] = 0.0
                continue
            if name in PORT_KEYS:
                key, port = PORT_KEYS[name]
                check_port_free(name, port(settings), key)
            if name == "postgres":
                postgres.start(settings, _pid(settings, name))
            else:
                STARTERS[name](settings, env)
            started.append(name)
            wait_until(lambda n=name: CHECKS[n](settings), what=name, timeout_s=TIMEOUTS.get(
                name, 120), log=_log(settings, name), pidfile=_pid(settings, name))
            if name == "s3" or (name == "mlflow" and settings.s3.endpoint_url):
                ensure_buckets(settings)
            if name == "prefect":
                configure_prefect(settings, env)
            timings[name] = time.monotonic() - t0
            echo(f"{name:9s} healthy in {timings[name]:.1f} s")
    except BaseException:
        for name in reversed(started):
            _stop_one(settings, name)
        raise
    timings["total"] = time.monotonic() - t_start
    return timings


def _stop_one(settings: StackSettings, name: str) -> bool:
    if name == "postgres":
        return postgres.stop(settings, _pid(settings, name))
    return stop(_pid(settings, name))


def down(settings: StackSettings, *, echo: Callable[[str], None] = print) -> list[str]:
    """Stop, in reverse order, the processes our pid files name; the data folder stays."""
    stopped = []
    for name in reversed(services(settings)):
        if _stop_one(settings, name):
            stopped.append(name)
            echo(f"{name:9s} stopped")
    return stopped


def status(settings: StackSettings) -> list[Health]:
    report = []
    for name in ORDER:
        if name == "s3" and settings.s3.endpoint_url:
            ok = CHECKS[name](settings)
            report.append(Health(name, True, ok, f"external {settings.s3.endpoint_url}"))
            continue
        pid = _pid(settings, name).alive_pid()
        ok = pid is not None and CHECKS[name](settings)
        detail = (f"pid {pid}" if pid else "not running") + (
            f", log {_log(settings, name)}" if pid else "")
        report.append(Health(name, pid is not None, ok, detail))
    return report
