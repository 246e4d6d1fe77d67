"""Serving under load: `synthloop serve` on 127.0.0.1 with 1, 4 and 16 concurrent clients and a
champion swap in the middle of each level.

    .venv/bin/python benchmarks/serve_load.py [--requests 24 48 96]

A throwaway workspace gets two tiny registry versions (MobileNetV3-FPN Faster R-CNN, untrained,
64-96 px: the serving tests' model, so the numbers are the server's own cost, not a real
detector's); `python -m synthloop serve` runs in a process of its own (one uvicorn worker, the
alias checked every 0.2 s). Per level, asyncio httpx clients POST one 80x60 JPEG to
``/predict?min_score=0``; when half the level's requests are answered the ``champion`` alias
moves to the other version, and the level goes on until as many requests again were sent after
``/health`` showed the new version. Checked per level (``synthloop.serve.loadcheck``): no failed
request; every answer names one of the two versions and carries exactly the detections of that
version's completely loaded model; each client sees old -> new, never back. Requests and seconds
are capped. Prints a table and writes benchmarks/results/serve_load.json; exits 1 on a problem.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))  # the serving tests' tiny registry versions

import httpx  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from people_support import image_bytes, register_tiny_models  # noqa: E402
from synthloop import tracking  # noqa: E402
from synthloop.config import load_config  # noqa: E402
from synthloop.serve import loadcheck  # noqa: E402
from tests_support import free_port  # noqa: E402

CONFIG = ROOT / "pipelines" / "demo.yaml"
CLIENTS = (1, 4, 16)
POLL_S = 0.2


def wait_for(predicate, *, seconds: float, what: str, every: float = 0.02) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {seconds} s")
        time.sleep(every)


def health(base: str) -> dict:
    try:
        r = httpx.get(f"{base}/health", timeout=5, trust_env=False)
    except httpx.HTTPError:
        return {}
    return r.json() if r.status_code in (200, 503) else {}


def level(base: str, image: bytes, *, clients: int, requests: int, client: MlflowClient,
          name: str, old: str, new: str, expected: dict, max_seconds: float) -> dict:
    def swap() -> None:  # returns once /health names the new version: later requests get it
        client.set_registered_model_alias(name, "champion", new)
        wait_for(lambda: health(base).get("version") == new, seconds=60, what=f"v{new} served")

    run = loadcheck.run(f"{base}/predict?min_score=0", image, clients=clients,
                        requests=requests // 2, swap=swap, swap_after=requests // 2,
                        after_swap=requests - requests // 2, max_requests=2 * requests,
                        max_seconds=max_seconds)
    problems = loadcheck.swap_problems(run, before=old, after=new, expected=expected)
    return {**run.summary(), "swap": f"v{old} -> v{new}", "problems": problems}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, nargs=3, default=[24, 48, 96], metavar="N",
                    help="requests at 1, 4 and 16 clients (half before the swap, half after)")
    ap.add_argument("--max-seconds", type=float, default=50.0, help="cap per level")
    ap.add_argument("--note", default="", help="what else ran on the machine (goes in the JSON)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_load.json")
    args = ap.parse_args()
    load_before = os.getloadavg()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        ws = Path(tmp) / "ws"
        cfg = load_config(CONFIG, overrides=[f"workspace={ws}"])
        versions = register_tiny_models(cfg, Path(tmp) / "models")
        client, name = MlflowClient(cfg.tracking_uri), cfg.registered_model_name
        client.set_registered_model_alias(name, "champion", versions[0])
        image = image_bytes(80, 60)
        expected = {}
        for v in versions:  # each version loaded completely, apart from the server
            source = client.get_model_version(name, v).source
            expected[v] = loadcheck.reference(
                tracking.download_checkpoint(source, Path(tmp) / f"v{v}"), image)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = Path(tmp) / "server.log"  # a file, not a pipe: a full pipe would stall the server
        with log.open("w") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "synthloop", "serve", "--config", str(CONFIG),
                 "--set", f"workspace={ws}", "--set", f"serve.poll_seconds={POLL_S}",
                 "--host", "127.0.0.1", "--port", str(port)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "MLFLOW_ENABLE_ASYNC_LOGGING": "false"})
        try:
            wait_for(lambda: server.poll() is not None or health(base).get("version") == versions[0],
                     seconds=180, what="the server answering", every=0.2)
            if server.poll() is not None:
                raise RuntimeError(f"the server exited: {log.read_text()[-2000:]}")
            loadcheck.run(f"{base}/predict?min_score=0", image, clients=1, requests=2)  # warm-up
            rows, old, new = [], versions[0], versions[1]
            for clients, requests in zip(CLIENTS, args.requests):
                rows.append(level(base, image, clients=clients, requests=requests, client=client,
                                  name=name, old=old, new=new, expected=expected,
                                  max_seconds=args.max_seconds))
                old, new = new, old
        finally:
            server.terminate()
            server.wait(timeout=30)
    result = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "model": "mobilenet_v3_fpn Faster R-CNN, untrained, min_size 64, max_size 96",
        "image": "80x60 JPEG, ?min_score=0",
        "server": "python -m synthloop serve: 1 uvicorn worker, one forward pass at a time, "
                  f"alias polled every {POLL_S} s",
        "levels": rows,
        "wall_s": round(time.monotonic() - t0, 1),
        "machine": {"cpus": os.cpu_count(), "machine": platform.machine(),
                    "python": platform.python_version(), "nice": os.nice(0),
                    "load_avg_1m_before": round(load_before[0], 2),
                    "load_avg_1m_after": round(os.getloadavg()[0], 2), "note": args.note},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("| clients | requests | failed | requests/s | p50 ms | p99 ms | swap | swap s | answers |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        answers = ", ".join(f"v{v}: {n}" for v, n in r["answers_per_version"].items())
        print(f"| {r['clients']} | {r['requests']} | {r['failed']} | {r['requests_per_s']} "
              f"| {r['p50_ms']} | {r['p99_ms']} | {r['swap']} | {r['swap_s']} | {answers} |")
    for r in rows:
        for p in r["problems"]:
            print(f"PROBLEM at {r['clients']} clients: {p}", file=sys.stderr)
    print(f"{args.out} ({result['wall_s']} s, load {load_before[0]:.1f} -> "
          f"{result['machine']['load_avg_1m_after']:.1f} on {os.cpu_count()} cores)")
    return 1 if any(r["problems"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
