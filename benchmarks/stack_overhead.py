"""One active-learning cycle embedded (local Prefect, MLflow on SQLite) against the same cycle on
`synthloop stack` (Prefect server + worker, MLflow on PostgreSQL + S3), same machine, one run
each: wall time, CPU time, and the tracking/registry/orchestration calls the cycle makes.

    .venv/bin/python benchmarks/stack_overhead.py [--order embedded-first|stack-first]

The cycle is the stack tests' toy pipeline (tests/stack_support.py: 96x72 renders, toy
detector, k=3, a gate that promotes any candidate) with the same 3 new camera images. Setup
(renders + M0 via `synthloop demo --cycles 0`, one workspace per side) is not timed.

* embedded: `python flows/al_cycle.py toy.yaml` in a subprocess, PREFECT_API_URL unset (Prefect
  starts its ephemeral server), MLflow on the workspace's SQLite. Wall = the subprocess; CPU =
  its rusage (and its reaped children's: the ephemeral server).
* stack: `synthloop ingest` sends the pool-growth event; wall = event sent -> the flow run is
  COMPLETED (trigger, worker poll, flow-run process start included). CPU = the change, over the
  cycle, of every stack service's process group (utime+stime+reaped children's: the flow-run
  process is the worker's child), split into the flow run (worker) and the servers.
* calls: counted in the cycle's own process by benchmarks/calls_hook/sitecustomize.py (PYTHONPATH):
  HTTP requests sent through `requests` (MLflow) and `httpx` (Prefect) by endpoint, and MLflow
  store calls (RestStore on the stack, SqlAlchemyStore embedded; outermost calls). Prefect's
  events (websocket) are not counted.

Prints a table and writes benchmarks/results/stack_overhead.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from stack_support import (mirrored_camera_images, stack_folder,  # noqa: E402
                           toy_pipeline_on_stack)

from synthloop.flows_server import api_post  # noqa: E402
from synthloop.stack.lifecycle import down, up  # noqa: E402
from synthloop.stack.procs import PidFile, process_table  # noqa: E402
from synthloop.stack.services import ORDER  # noqa: E402
from tests_support import write_toy_pipeline  # noqa: E402

HOOK = ROOT / "benchmarks" / "calls_hook"
TICK = os.sysconf("SC_CLK_TCK")
GATE = {"min_improvement": -1.0, "bootstrap_resamples": 0, "max_class_drop": 1.0}
BASE_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
            "GIT_PYTHON_REFRESH": "quiet", "OMP_NUM_THREADS": "1"}


def synthloop(*args: str, env: dict | None = None) -> str:
    proc = subprocess.run([sys.executable, "-m", "synthloop", *args], capture_output=True,
                          text=True, timeout=1800, env={**os.environ, **BASE_ENV, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"synthloop {' '.join(args)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout


def group_cpu(settings) -> dict[str, float]:
    """service -> CPU seconds of its process group, reaped children included."""
    procs = {pid: (int(f[1]), int(f[2]), sum(map(int, f[11:15])) / TICK)
             for pid, f in process_table().items()}
    out = {}
    for name in ORDER:
        root = PidFile(settings.run_dir, name).alive_pid()
        if root is not None:
            out[name] = sum(cpu for pid, (ppid, pgid, cpu) in procs.items()
                            if pid == root or pgid == root or ppid == root)
    return out


def read_calls(folder: Path, marker: str) -> collections.Counter:
    """The counts written by the process whose argv holds ``marker``."""
    total: collections.Counter = collections.Counter()
    found = 0
    for path in folder.glob("*.json"):
        data = json.loads(path.read_text())
        if marker in " ".join(data["argv"]):
            total.update(data["counts"])
            found += 1
    if found != 1:
        raise SystemExit(f"expected one call count file for {marker!r} in {folder}, found {found}")
    return total


def http_kind(path: str) -> str:
    """Which server an HTTP request went to, from its path: MLflow's REST API, MLflow's
    artifact proxy, Prefect's API, S3 itself (presigned GETs in the artifacts bucket), other."""
    if path.startswith("/api/2.0/mlflow-artifacts/"):
        return "http_mlflow_artifacts"
    if path.startswith(("/api/2.0/mlflow/", "/api/3.0/mlflow/", "/ajax-api/")):
        return "http_mlflow_api"
    if path.startswith("/api/"):
        return "http_prefect"
    if path.startswith("/mlflow/"):
        return "http_s3_presigned"
    return "http_other"


def summarize(counts: dict) -> dict:
    """Totals by server (HTTP) and by store (MLflow store calls) of the hook's raw counts."""
    by: collections.Counter = collections.Counter()
    for key, n in counts.items():
        kind, *rest = key.split(" ")
        if kind == "http":
            by[http_kind(rest[2])] += n
        else:
            by[f"store_{rest[0]}"] += n
    return {"totals": dict(sorted(by.items())),
            "by_endpoint": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))}


def embedded_cycle(work: Path, calls: Path) -> dict:
    toy = work / "toy.yaml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_URL")}
    env.update(BASE_ENV, PYTHONPATH=os.pathsep.join([str(HOOK), env.get("PYTHONPATH", "")]),
               SYNTHLOOP_BENCH_CALLS_DIR=str(calls))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "flows" / "al_cycle.py"), str(toy)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0 or "outcome" not in proc.stdout:
        raise SystemExit(f"embedded cycle failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "load_avg_at_start": load,
            "calls": summarize(read_calls(calls, "al_cycle.py"))}


def stack_cycle(settings, work: Path, calls: Path) -> dict:
    toy = work / "toy.yaml"
    env = {"PREFECT_API_URL": settings.prefect_api_url}
    deps = {d["name"]: d["id"] for d in api_post(settings.prefect_api_url, "/deployments/filter", {})}

    def runs():
        return api_post(settings.prefect_api_url, "/flow_runs/filter", {"flow_runs": {
            "deployment_id": {"any_": [deps["al-cycle"]]}}})

    seen = {r["id"] for r in runs()}
    cpu0 = group_cpu(settings)
    load = os.getloadavg()[0]
    out = synthloop("ingest", "--config", str(toy), env=env)  # nothing new; the pool grew
    t0, sent_at = time.monotonic(), time.time()
    if "event synthloop.pool.grew sent" not in out:
        raise SystemExit(f"no event sent:\n{out}")
    while True:
        new = [r for r in runs() if r["id"] not in seen]
        if new and new[0]["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        if time.monotonic() - t0 > 1800:
            raise SystemExit("the stack's cycle did not finish in 30 min")
        time.sleep(1)
    wall = time.monotonic() - t0
    run = new[0]
    if run["state_type"] != "COMPLETED":
        raise SystemExit(f"the stack's cycle ended {run['state_type']}")
    deadline = time.monotonic() + 60  # the flow-run process exits, the worker reaps it
    while list(calls.glob("*.json")) == [] and time.monotonic() < deadline:
        time.sleep(1)
    time.sleep(3)
    cpu1 = group_cpu(settings)
    cpu = {name: round(cpu1[name] - cpu0.get(name, 0.0), 2) for name in cpu1}
    return {"wall_s": round(wall, 2), "cpu_s": round(sum(cpu.values()), 2),
            "cpu_by_service_s": cpu, "load_avg_at_start": load,
            "flow_run_s": round(run["total_run_time"], 2),
            "event_to_flow_run_start_s": round(_epoch(run["start_time"]) - sent_at, 2),
            "flow_run_start": run["start_time"], "flow_run_end": run["end_time"],
            "calls": summarize(read_calls(calls, "prefect/engine.py"))}


def _epoch(timestamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--order", choices=("embedded-first", "stack-first"),
                        default="embedded-first")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks/results/stack_overhead.json")
    args = parser.parse_args()
    cpu0, t_start = time.process_time(), time.monotonic()
    result: dict = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, "
                    f"{os.cpu_count()} cores", "order": args.order,
                    "load_avg_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="synthloop-overhead-") as tmp, \
            stack_folder() as folder:
        tmp = Path(tmp)
        emb, stk = tmp / "embedded", tmp / "stack"
        for d in (emb / "calls", stk / "calls"):
            d.mkdir(parents=True)
        write_toy_pipeline(emb, update={"ingest": {"source": str(emb / "camera")},
                                        "trigger": {"pool_growth_min": 3}, "gate": GATE})
        config, settings = toy_pipeline_on_stack(stk, folder, model="synthloop-overhead")
        saved = dict(os.environ)
        os.environ.update(PYTHONPATH=os.pathsep.join([str(HOOK), saved.get("PYTHONPATH", "")]),
                          SYNTHLOOP_BENCH_CALLS_DIR=str(stk / "calls"))
        try:
            up(settings, echo=lambda line: None)  # the worker (and its flow runs) get the hook
        finally:
            os.environ.clear()
            os.environ.update(saved)
        try:
            t0 = time.monotonic()
            for side in (emb, stk):  # setup, not timed: renders and M0 in each registry
                synthloop("demo", "--config", str(side / "toy.yaml"), "--cycles", "0")
                mirrored_camera_images(side / "ws", side / "camera", 3)
                out = synthloop("ingest", "--config", str(side / "toy.yaml"), "--no-emit")
                assert "added 3" in out, out
            result["setup_s"] = round(time.monotonic() - t0, 2)
            for calls in (stk / "calls").glob("*.json"):  # setup processes' counts
                calls.unlink()
            sides = ["embedded", "stack"] if args.order == "embedded-first" else ["stack",
                                                                                  "embedded"]
            for side in sides:
                result[side] = (embedded_cycle(emb, emb / "calls") if side == "embedded"
                                else stack_cycle(settings, stk, stk / "calls"))
                print(f"{side}: {result[side]['wall_s']} s wall, {result[side]['cpu_s']} s CPU",
                      flush=True)
        finally:
            down(settings, echo=lambda line: None)
    result["overhead"] = {
        "wall_s": round(result["stack"]["wall_s"] - result["embedded"]["wall_s"], 2),
        "cpu_s": round(result["stack"]["cpu_s"] - result["embedded"]["cpu_s"], 2)}
    result["load_avg_end"] = os.getloadavg()[0]
    result["benchmark_wall_s"] = round(time.monotonic() - t_start, 1)
    result["benchmark_process_cpu_s"] = round(time.process_time() - cpu0, 2)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    keys = sorted(set(result["embedded"]["calls"]["totals"]) | set(
        result["stack"]["calls"]["totals"]))
    print("| | embedded | stack |\n|---|---|---|")
    for key in ("wall_s", "cpu_s"):
        print(f"| {key} | {result['embedded'][key]} | {result['stack'][key]} |")
    for key in keys:
        print(f"| {key} | {result['embedded']['calls']['totals'].get(key, 0)} | "
              f"{result['stack']['calls']['totals'].get(key, 0)} |")
    print("stack CPU by service:", json.dumps(result["stack"]["cpu_by_service_s"]))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
