"""`synthloop stack`: time to healthy (fresh data folder, then a restart on the same folder), the
time `stack down` takes, and what the idle stack costs (memory, CPU per service).

    .venv/bin/python benchmarks/stack_startup.py [--idle-s 30]

Uses free ports and a temporary data folder under /tmp (removed at the end); stops everything
it starts. Prints a table and writes benchmarks/results/stack_startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from stack_support import stack_folder, write_stack_config  # noqa: E402

from synthloop.stack.lifecycle import down, up  # noqa: E402
from synthloop.stack.procs import PidFile, process_table  # noqa: E402
from synthloop.stack.services import ORDER  # noqa: E402
from synthloop.stack.settings import load_stack  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def processes() -> dict[int, tuple[int, int, float, int]]:
    """pid -> (ppid, pgid, cpu seconds, rss bytes) for every process (/proc/<pid>/stat fields
    1, 2, 11 + 12 and 21 after the command name: see stack.procs.stat_fields)."""
    return {pid: (int(f[1]), int(f[2]), (int(f[11]) + int(f[12])) / TICK, int(f[21]) * PAGE)
            for pid, f in process_table().items()}


def service_usage(settings) -> dict[str, tuple[float, float]]:
    """service -> (cpu seconds so far, rss MB) over its process group and its children."""
    procs = processes()
    usage = {}
    for name in ORDER:
        root = PidFile(settings.run_dir, name).alive_pid()
        if root is None:
            continue
        members = {p for p, (ppid, pgid, _, _) in procs.items() if p == root or pgid == root
                   or ppid == root}
        usage[name] = (sum(procs[p][2] for p in members),
                       sum(procs[p][3] for p in members) / 2**20)
    return usage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/stack_startup.json")
    args = parser.parse_args()
    cpu0 = time.process_time()
    result: dict = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, "
                    f"{os.cpu_count()} cores", "load_avg_start": os.getloadavg()[0]}
    with stack_folder() as folder:
        settings = load_stack(write_stack_config(folder))
        try:
            result["fresh_up_s"] = {k: round(v, 2) for k, v in up(settings).items()}
            before = service_usage(settings)
            time.sleep(args.idle_s)
            after = service_usage(settings)
            result["idle"] = {name: {"cpu_pct": round(100 * (after[name][0] - before[name][0])
                                                      / args.idle_s, 2),
                                     "rss_mb": round(after[name][1], 1)} for name in after}
            result["idle_window_s"] = args.idle_s
            t0 = time.monotonic()
            down(settings)
            result["down_s"] = round(time.monotonic() - t0, 2)
            result["restart_up_s"] = {k: round(v, 2) for k, v in up(settings).items()}
        finally:
            down(settings)
    result["load_avg_end"] = os.getloadavg()[0]
    result["benchmark_process_cpu_s"] = round(time.process_time() - cpu0, 2)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("| start | " + " | ".join(ORDER) + " | total |")
    for key in ("fresh_up_s", "restart_up_s"):
        row = result[key]
        print(f"| {key} | " + " | ".join(f"{row.get(n, 0):.1f}" for n in ORDER)
              + f" | {row['total']:.1f} |")
    print("idle:", json.dumps(result["idle"]), f"down {result['down_s']} s")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
