"""One cycle at a time: the workspace lock serializes cycles and records who ran / skipped."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import pytest

from synthloop.config import load_config
from synthloop.gating.cycle_lock import CycleBusy, cycle_lock, read_requests
from synthloop.stages import monitor
from tests_support import DEMO_CONFIG


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


def test_waiting_holder_gets_its_turn(tmp_path):
    order = []

    def first():
        with cycle_lock(tmp_path, trigger="a"):
            order.append("a-start")
            time.sleep(0.6)
            order.append("a-end")

    t = threading.Thread(target=first)
    t.start()
    time.sleep(0.2)
    with cycle_lock(tmp_path, trigger="b", wait_s=10, poll_s=0.05) as held:
        order.append("b-start")
    t.join()
    assert order == ["a-start", "a-end", "b-start"] and held.waited_s >= 0.3


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


def test_concurrent_cycle_requests_serialize(tmp_path):
    """A nightly and a drift-triggered request at once: one trains, the other is recorded as
    skipped (no wait) - and with a wait, the second runs after the first, never alongside."""
    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={tmp_path / 'ws'}"])
    running, overlaps, spans = [], [], []

    def fake_pipeline(cfg, *, runner, cycles, progress):
        running.append(1)
        overlaps.append(len(running))
        start = time.monotonic()
        time.sleep(0.5)
        (cfg.workspace / "state" / f"cycle_{cycles}").mkdir(parents=True, exist_ok=True)
        (cfg.workspace / "state" / f"cycle_{cycles}" / "gate.json").write_text("{}")
        spans.append((start, time.monotonic()))
        running.pop()
        return [Row(cycle=cycles)]

    results = {}

    def request(trigger, wait):
        results[trigger] = monitor.run_next_cycle(cfg, trigger=trigger, wait_s=wait,
                                                  pipeline_fn=fake_pipeline)

    threads = [threading.Thread(target=request, args=("nightly", 0.0)),
               threading.Thread(target=request, args=("drift", 0.0))]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert sorted(r["outcome"] for r in results.values()) == ["ran", "skipped"]
    skipped = next(r for r in results.values() if r["outcome"] == "skipped")
    ran = next(r for r in results.values() if r["outcome"] == "ran")
    assert skipped["held_by"]["trigger"] == ran["trigger"] and ran["cycle"] == 1

    threads = [threading.Thread(target=request, args=("nightly", 5.0)),
               threading.Thread(target=request, args=("drift", 5.0))]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert {r["outcome"] for r in results.values()} == {"ran"}
    assert sorted(r["cycle"] for r in results.values()) == [2, 3]
    assert max(overlaps) == 1  # never two cycles at once
    (a0, a1), (b0, b1) = sorted(spans)[-2:]
    assert b0 >= a1
    log = read_requests(cfg.workspace / "state")
    assert [e["outcome"] for e in log].count("skipped") == 1 and len(log) == 4
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
