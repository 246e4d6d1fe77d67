"""The fault matrix and the bad-input suite: every test here is marked ``faults``.

Each test that passes adds rows (fault or input | what happened | resumed? | anything lost?) to
the session's table; ``make test-faults`` (SYNTHLOOP_RELIABILITY_DOC=docs/reliability.md) writes
the table there only when every row ran: every test file of this folder collected, no test
deselected, every test passed (no skip, no failure in setup, call or teardown). Otherwise the doc
is left as it was and the run says why, so a row that did not run (no tmpfs without root, no
Blender) never silently drops out of the committed doc. Rows are added only after a test's
assertions.

Under CI every skip is a failure (tests/conftest.py), and no test here may carry ``allow_skip``:
a missing row fails CI.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fault_support import ROWS, Row

HERE = Path(__file__).resolve().parent
TMP_PATH = re.compile(r"/tmp/pytest-of-[^/]+/pytest-\d+/[^/\s]+/")


@dataclass
class Ledger:
    """What happened to this folder's tests in the session (node ids)."""

    t0: float = field(default_factory=time.perf_counter)
    collected_files: set[str] = field(default_factory=set)
    deselected: list[str] = field(default_factory=list)
    passed: set[str] = field(default_factory=set)  # call phase passed
    not_passed: dict[str, str] = field(default_factory=dict)  # -> "skipped" | "failed"
    doc_refused: str | None = None  # why the doc was not rewritten, for the terminal summary


LEDGER = pytest.StashKey[Ledger]()


def in_suite(item: pytest.Item) -> bool:
    return item.path.resolve().parent == HERE


def pytest_configure(config):
    config.stash[LEDGER] = Ledger()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if in_suite(item):
            if item.get_closest_marker("allow_skip"):
                raise pytest.UsageError(f"{item.nodeid}: a fault-matrix test may not be allowed "
                                        "to skip: its row would be missing from the doc")
            item.add_marker(pytest.mark.faults)
            config.stash[LEDGER].collected_files.add(item.path.name)


def pytest_deselected(items):
    for item in items:
        if in_suite(item):
            item.config.stash[LEDGER].deselected.append(item.nodeid)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if in_suite(item):
        ledger = item.config.stash[LEDGER]
        if rep.failed or rep.skipped:
            ledger.not_passed.setdefault(item.nodeid, rep.outcome)
        elif rep.when == "call":
            ledger.passed.add(item.nodeid)
    return rep


@pytest.fixture()
def report():
    """``report(fault, happened, resumed, lost)``: a table row, kept if the test passes."""
    pending: list[Row] = []

    def add(fault: str, happened: str, resumed: str, lost: str = "nothing lost") -> None:
        pending.append(Row(fault, happened, resumed, lost))

    yield add
    ROWS.extend(pending)  # teardown runs after the test body: only reached rows get here


def missing_rows(ledger: Ledger, *, selected: list[str], test_files: list[str],
                 exitstatus: int, rows: int) -> str | None:
    """Why the table would not hold every row (None: it would). ``selected``: this folder's
    node ids the session ran; ``test_files``: the folder's test file names."""
    def some(ids) -> str:
        ids = list(ids)
        return ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")

    if absent := sorted(set(test_files) - ledger.collected_files):
        return f"not collected: {some(absent)} (run the whole tests/faults folder)"
    if ledger.deselected:
        return f"deselected ({len(ledger.deselected)}): {some(ledger.deselected)}"
    if ledger.not_passed:
        return (f"not passed ({len(ledger.not_passed)}): "
                + some(f"{n} ({o})" for n, o in ledger.not_passed.items()))
    if not_run := [n for n in selected if n not in ledger.passed]:
        return f"not run ({len(not_run)}): {some(not_run)}"
    if exitstatus != 0:
        return f"the session failed (exit status {int(exitstatus)})"
    if not rows:
        return "no rows"
    return None


def pytest_sessionfinish(session, exitstatus):
    target = os.environ.get("SYNTHLOOP_RELIABILITY_DOC")
    if not target:
        return
    ledger = session.config.stash[LEDGER]
    why = missing_rows(ledger, selected=[i.nodeid for i in session.items if in_suite(i)],
                       test_files=sorted(p.name for p in HERE.glob("test_*.py")),
                       exitstatus=exitstatus, rows=len(ROWS))
    if why:
        ledger.doc_refused = f"{target} NOT rewritten: {why}"
        return
    write_table(Path(target), (time.perf_counter() - ledger.t0) / 60)


def pytest_terminal_summary(terminalreporter, config):
    if refused := config.stash[LEDGER].doc_refused:
        terminalreporter.write_sep("!", refused, red=True)


def write_table(path: Path, minutes: float) -> None:
    def cell(text: str) -> str:
        text = TMP_PATH.sub("<tmp>/", " ".join(str(text).split()))  # pytest's per-run folders
        return text.replace("|", "\\|")

    lines = [
        "# Reliability: the fault matrix and the bad-input suite",
        "",
        "GENERATED by `make test-faults` (tests/faults/, conftest.py writes this file only when",
        "every test of the folder ran and passed). Do not edit by hand: rerun `make test-faults`.",
        "",
        f"Run: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {len(ROWS)} rows, "
        f"{minutes:.1f} min on {os.cpu_count()} cores.",
        "",
        "| fault or input | what happened | resumed? | anything lost? |",
        "|---|---|---|---|",
    ]
    lines += [f"| {cell(r.fault)} | {cell(r.happened)} | {cell(r.resumed)} | {cell(r.lost)} |"
              for r in ROWS]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
