"""Cycle overhead: orchestration (Prefect + lock) + tracking (MLflow) + versioning (git/DVC)
against the compute stages of one real demo cycle.

    .venv/bin/python benchmarks/cycle_overhead.py [--workspace workspace/demo]

Needs a finished demo workspace (``make demo``); it is COPIED to a temporary folder (its
MLflow experiment re-pointed at the copy's artifact folder) and one more cycle runs there as a
Prefect flow (ephemeral API, warmed up first), exactly as `al_cycle` runs it: lock, score,
query, query-batch table, label (+ DVC commit/push), finetune (+ MLflow model), gate
(bootstrap + report). Timers:

* tracking   every MLflow client call and model logging/download (outermost call only)
* versioning git + DVC (init/add/commit/tag/push)
* stages     each stage body, timed inside its Prefect task; the NEW cycle's stages are the
             compute, the others (data, pretrain, earlier cycles) only check their records
* compute    = the new cycle's stage time - tracking - versioning inside them
* resume     = the other stages' time - tracking - versioning inside them
* orchestration = flow wall time - all stage time - tracking/versioning outside stages
             (Prefect task/flow machinery, the lock, the glue between stages)

Prints a table and writes JSON (benchmarks/results/cycle_overhead.json).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "flows"))

TIMES: dict = {"depth": 0, "ctx": "outside", "calls": []}  # + "<category>:<ctx>" seconds


def timed(category: str, fn):
    """Wrap ``fn`` so that its OUTERMOST calls add their wall time to ``category:<ctx>``."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if TIMES["depth"]:
            return fn(*args, **kwargs)
        TIMES["depth"] += 1
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            key = f"{category}:{TIMES['ctx']}"
            TIMES[key] = TIMES.get(key, 0.0) + time.perf_counter() - t0
            TIMES["depth"] -= 1
    return wrapper


def t(key: str) -> float:
    return TIMES.get(key, 0.0)


def instrument() -> None:
    import mlflow
    from mlflow import MlflowClient

    from synthloop import tracking
    from synthloop.versioning import dvc_repo

    for name in ("init_workspace", "commit_data", "push", "pull", "head_rev"):
        setattr(dvc_repo, name, timed("versioning", getattr(dvc_repo, name)))
    for name in dir(MlflowClient):
        if not name.startswith("_") and callable(getattr(MlflowClient, name)):
            setattr(MlflowClient, name, timed("tracking", getattr(MlflowClient, name)))
    for name in ("start_run", "end_run", "log_params", "log_metrics", "log_metric", "set_tag"):
        setattr(mlflow, name, timed("tracking", getattr(mlflow, name)))
    for name in ("setup", "log_detector", "download_checkpoint"):
        setattr(tracking, name, timed("tracking", getattr(tracking, name)))


def copy_workspace(src: Path, dst: Path) -> None:
    """Copy a workspace and re-point every path in its MLflow store at the copy."""
    shutil.copytree(src, dst, symlinks=True)
    with sqlite3.connect(dst / "mlruns.db") as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
            for col in db.execute(f"PRAGMA table_info('{table}')").fetchall():
                if "CHAR" in col[2].upper() or "TEXT" in col[2].upper():
                    for a, b in ((src.as_uri(), dst.as_uri()), (str(src), str(dst))):
                        db.execute(f'UPDATE "{table}" SET "{col[1]}" = REPLACE("{col[1]}", ?, ?) '
                                   f'WHERE "{col[1]}" LIKE ?', (a, b, f"%{a}%"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, default=ROOT / "workspace" / "demo")
    ap.add_argument("--config", type=Path, default=ROOT / "pipelines" / "demo.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cycle_overhead.json")
    ap.add_argument("--keep", type=Path, default=None,
                    help="Keep the workspace copy here (e.g. for screenshots of the runs).")
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect import flow

    from flow_support import prefect_runner
    from synthloop.config import load_config
    from synthloop.stages.monitor import finished_cycles, run_next_cycle

    instrument()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        copy_workspace(args.workspace.resolve(), ws)
        cfg = load_config(args.config, overrides=[f"workspace={ws}"])
        cycle = finished_cycles(cfg) + 1

        def runner(name, fn, /, *a, **kw):
            ctx = "target" if kw.get("cycle") == cycle or (
                name == "log-query-batch" and a and a[-1].seed == cfg.active.seed + cycle) \
                else "other"

            def body(*a2, **kw2):
                TIMES["ctx"] = ctx
                t0 = time.perf_counter()
                try:
                    return fn(*a2, **kw2)
                finally:
                    TIMES["calls"].append((name, ctx, time.perf_counter() - t0))
                    TIMES["ctx"] = "outside"
            body.__name__ = name
            return prefect_runner(name, body, *a, **kw)

        @flow(name="warm-up")
        def warm_up() -> int:
            return 1

        @flow(name="al_cycle_bench")
        def bench_cycle() -> dict:
            return run_next_cycle(cfg, trigger="benchmark", runner=runner, wait_s=0)

        t0 = time.perf_counter()
        warm_up()
        startup = time.perf_counter() - t0
        for key in [k for k in TIMES if ":" in k]:
            TIMES[key] = 0.0  # the warm-up and the copy are not part of the cycle
        t0 = time.perf_counter()
        entry = bench_cycle()
        total = time.perf_counter() - t0
        gate = json.loads((ws / "state" / f"cycle_{cycle}" / "gate.json").read_text())
        if args.keep:
            copy_workspace(ws, args.keep.resolve())
    target = sum(sec for _, ctx, sec in TIMES["calls"] if ctx == "target")
    other = sum(sec for _, ctx, sec in TIMES["calls"] if ctx == "other")
    stages = {}
    for name, ctx, sec in TIMES["calls"]:
        key = name if ctx == "target" else f"{name} (resume)"
        stages[key] = stages.get(key, 0.0) + sec
    compute = target - t("tracking:target") - t("versioning:target")
    resume_s = other - t("tracking:other") - t("versioning:other")
    prefect_s = total - target - other - t("tracking:outside") - t("versioning:outside")
    tracking_s = sum(t(f"tracking:{c}") for c in ("target", "other", "outside"))
    versioning_s = sum(t(f"versioning:{c}") for c in ("target", "other", "outside"))
    overhead = prefect_s + resume_s + tracking_s + versioning_s
    report = {
        "cycle": cycle, "entry": entry, "total_s": round(total, 2),
        "stages_s": {k: round(v, 2) for k, v in stages.items()},
        "orchestration_s": round(prefect_s, 2), "resume_checks_s": round(resume_s, 2),
        "tracking_s": round(tracking_s, 2), "versioning_s": round(versioning_s, 2),
        "tracking_split_s": {c: round(t(f"tracking:{c}"), 2) for c in ("target", "other", "outside")},
        "versioning_split_s": {c: round(t(f"versioning:{c}"), 2)
                               for c in ("target", "other", "outside")},
        "compute_s": round(compute, 2),
        "overhead_s": round(overhead, 2), "overhead_pct_of_total": round(100 * overhead / total, 2),
        "overhead_pct_of_compute": round(100 * overhead / compute, 2),
        "prefect_startup_s": round(startup, 2),
        "gate_bootstrap_s": (gate.get("interval") or {}).get("seconds"),
        "gate_reason": gate["reason"],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m_at_end": os.getloadavg()[0]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\none demo cycle (cycle {cycle}) as a Prefect flow: {total:.1f} s")
    print(f"{'part':<16} {'seconds':>8} {'% of cycle':>10}")
    for name, sec in (("compute", compute), ("orchestration", prefect_s),
                      ("resume checks", resume_s), ("tracking", tracking_s),
                      ("versioning", versioning_s)):
        print(f"{name:<16} {sec:>8.1f} {100 * sec / total:>9.1f}%")
    print(f"overhead {overhead:.1f} s = {report['overhead_pct_of_total']:.1f}% of the cycle "
          f"({report['overhead_pct_of_compute']:.1f}% of compute); Prefect start-up "
          f"{startup:.1f} s once per process")
    print("stages:", ", ".join(f"{k} {v:.1f}s" for k, v in stages.items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
