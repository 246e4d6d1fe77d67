"""One cycle at a time: the workspace lock serializes cycles and records who ran / skipped."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import threading
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

import synthloop.gating.cycle_lock as lock_module
from synthloop.config import load_config
from synthloop.gating.cycle_lock import CycleBusy, cycle_lock, read_requests
from synthloop.stages import monitor
from tests_support import DEMO_CONFIG

WAIT = 60.0  # seconds: only a guard against a hang; no test depends on how long anything takes


@pytest.fixture()
def refused(monkeypatch):
    """An Event set whenever a cycle_lock attempt finds the lock taken (flock refuses).

    The tests order threads by this and by their own events, not by sleeping: a waiter is
    known to be waiting only once it has been refused.
    """
    event = threading.Event()

    def flock(fd, operation):
        try:
            fcntl.flock(fd, operation)
        except BlockingIOError:
            event.set()
            raise

    monkeypatch.setattr(lock_module, "fcntl", SimpleNamespace(
        flock=flock, LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB, LOCK_UN=fcntl.LOCK_UN))
    return event


def in_thread(fn):
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


def try_lock(path, trigger):
    try:
        with cycle_lock(path, trigger=trigger):
            return "held"
    except CycleBusy as busy:
        return busy


def test_second_holder_is_refused_with_the_first_ones_name(tmp_path):
    with cycle_lock(tmp_path, trigger="nightly") as held:
        assert held.trigger == "nightly"
        busy = in_thread(lambda: try_lock(tmp_path, "drift"))
        assert isinstance(busy, CycleBusy) and busy.holder["trigger"] == "nightly"
    assert in_thread(lambda: try_lock(tmp_path, "drift")) == "held"  # free again


def test_waiting_holder_gets_its_turn(tmp_path, refused):
    """b asks while a holds the lock, is refused, keeps polling, and gets it when a lets go."""
    order, a_holds, a_may_go = [], threading.Event(), threading.Event()

    def first():
        with cycle_lock(tmp_path, trigger="a"):
            order.append("a-start")
            a_holds.set()
            a_may_go.wait(WAIT)
            order.append("a-end")

    def release_a_once_b_was_refused():
        refused.wait(WAIT)
        a_may_go.set()

    t = threading.Thread(target=first)
    t.start()
    assert a_holds.wait(WAIT)
    threading.Thread(target=release_a_once_b_was_refused).start()
    with cycle_lock(tmp_path, trigger="b", wait_s=WAIT, poll_s=0.01) as held:
        order.append("b-start")
    t.join()
    assert refused.is_set()  # b did ask while a held it: it waited, it did not walk in
    assert order == ["a-start", "a-end", "b-start"] and held.waited_s > 0


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    code = ("import sys, time; from synthloop.gating.cycle_lock import cycle_lock\n"
            f"with cycle_lock({str(tmp_path)!r}, trigger='doomed'):\n"
            "    print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert isinstance(try_lock(tmp_path, "x"), CycleBusy)
    finally:
        proc.kill()
        proc.wait()
    with cycle_lock(tmp_path, trigger="after-crash"):
        pass


@dataclass
class Row:
    cycle: int
    promoted: bool = True
    model_version: str = "2"
    reason: str = "test"


def test_concurrent_cycle_requests_serialize(tmp_path, refused):
    """A nightly and a drift-triggered request at once: one trains, the other is recorded as
    skipped (no wait) - and with a wait, the second runs after the first, never alongside."""
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path / 'ws'}"])
    events, inside, may_finish = [], threading.Event(), threading.Event()

    def fake_pipeline(cfg, *, runner, cycles, progress):
        events.append(("start", cycles))
        inside.set()
        may_finish.wait(WAIT)  # the cycle runs until the test lets it finish
        (cfg.workspace / "state" / f"cycle_{cycles}").mkdir(parents=True, exist_ok=True)
        (cfg.workspace / "state" / f"cycle_{cycles}" / "gate.json").write_text("{}")
        events.append(("end", cycles))
        return [Row(cycle=cycles)]

    results = {}

    def request(trigger, wait):
        results[trigger] = monitor.run_next_cycle(cfg, trigger=trigger, wait_s=wait,
                                                  pipeline_fn=fake_pipeline)

    # no wait: drift asks while nightly is inside its cycle, and is skipped at once
    nightly = threading.Thread(target=request, args=("nightly", 0.0))
    nightly.start()
    assert inside.wait(WAIT)
    request("drift", 0.0)
    may_finish.set()
    nightly.join()
    assert results["drift"]["outcome"] == "skipped" and results["nightly"]["outcome"] == "ran"
    assert results["drift"]["held_by"]["trigger"] == "nightly" and results["nightly"]["cycle"] == 1

    # with a wait: drift asks while nightly's cycle 2 runs, waits, and runs cycle 3 after it
    for event in (inside, may_finish, refused):
        event.clear()
    nightly = threading.Thread(target=request, args=("nightly", WAIT))
    nightly.start()
    assert inside.wait(WAIT)
    drift = threading.Thread(target=request, args=("drift", WAIT))
    drift.start()
    assert refused.wait(WAIT)  # drift found the lock taken and is waiting for it
    may_finish.set()
    nightly.join()
    drift.join()
    assert {t: (r["outcome"], r["cycle"]) for t, r in results.items()} == \
        {"nightly": ("ran", 2), "drift": ("ran", 3)}
    assert results["drift"]["waited_s"] > 0
    # each cycle starts after the previous one ended: never two at once
    assert events == [("start", 1), ("end", 1), ("start", 2), ("end", 2), ("start", 3), ("end", 3)]
    log = read_requests(cfg.workspace / "state")
    assert [e["outcome"] for e in log] == ["skipped", "ran", "ran", "ran"]
    assert monitor.baseline(cfg) == set()  # the fake pool is empty; baseline recorded


def test_a_failed_cycle_is_recorded_and_raised(tmp_path):
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path / 'ws'}"])

    def broken(cfg, **kw):
        raise RuntimeError("render failed")

    with pytest.raises(RuntimeError, match="render failed"):
        monitor.run_next_cycle(cfg, trigger="cli", pipeline_fn=broken)
    entry = read_requests(cfg.workspace / "state")[-1]
    assert entry["outcome"] == "failed" and "render failed" in entry["error"]


def test_the_lock_is_reentrant_in_one_thread_only(tmp_path):
    with cycle_lock(tmp_path, trigger="outer") as outer:
        with cycle_lock(tmp_path, trigger="inner") as inner:  # the runner calling the pipeline
            assert inner is outer and inner.trigger == "outer"
        assert in_thread(lambda: try_lock(tmp_path, "other")).holder["trigger"] == "outer"
    with cycle_lock(tmp_path, trigger="after"):  # released by the outer exit only
        pass
