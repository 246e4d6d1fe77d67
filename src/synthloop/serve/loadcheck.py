"""Bounded load on a loopback ``synthloop serve``, with a champion swap in the middle.

``drive`` sends ``POST /predict`` from ``clients`` concurrent asyncio clients (httpx) until
``requests`` answers are in; once ``swap_after`` answers are in it runs ``swap`` (a blocking
callable that returns when the new champion is being served) in a thread, and it keeps going
until ``after_swap`` more requests were sent after that. Requests and seconds are capped.

``swap_problems`` then checks what the issue asks of a swap under load: no failed request,
every answer names one of the two versions and shows that version's *complete* model (its
detections equal the ones a fully loaded copy of it gives the same image, ``reference``),
and each client sees the old version, then the new one, never back. Only loopback addresses are
accepted: this is a test of our own server, not a load generator.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class Answer:
    """One request: its client, when it was sent (``time.monotonic``), how long it took."""

    client: int
    sent: float
    seconds: float
    status: int  # 0: no HTTP answer at all (connection error, timeout)
    version: str | None = None
    found: tuple[float, ...] = ()  # ``fingerprint`` of its detections
    detail: str = ""


@dataclass(frozen=True)
class LoadRun:
    clients: int
    answers: tuple[Answer, ...]
    wall_s: float
    swap_started: float | None = None  # time.monotonic() around the swap callable
    swap_done: float | None = None

    def summary(self) -> dict[str, Any]:
        """requests, failed, requests/s, latency p50/p99 (ms), answers per version."""
        import numpy as np

        ms = np.array([a.seconds * 1000.0 for a in self.answers] or [0.0])
        versions: dict[str, int] = {}
        for a in self.answers:
            versions[str(a.version)] = versions.get(str(a.version), 0) + 1
        swap_s = None
        if self.swap_done is not None and self.swap_started is not None:
            swap_s = round(self.swap_done - self.swap_started, 3)
        n = len(self.answers)
        return {"clients": self.clients, "requests": n,
                "failed": sum(a.status != 200 for a in self.answers),
                "wall_s": round(self.wall_s, 3),
                "requests_per_s": round(n / self.wall_s, 2) if self.wall_s else 0.0,
                "p50_ms": round(float(np.percentile(ms, 50)), 1),
                "p99_ms": round(float(np.percentile(ms, 99)), 1),
                "max_ms": round(float(ms.max()), 1), "swap_s": swap_s,
                "answers_per_version": dict(sorted(versions.items()))}


def require_loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"{url}: the load check only targets loopback "
                         f"({', '.join(LOOPBACK_HOSTS)})")


async def drive(url: str, body: bytes, *, clients: int, requests: int,
                content_type: str = "image/jpeg", swap: Callable[[], Any] | None = None,
                swap_after: int = 0, after_swap: int = 0, max_requests: int | None = None,
                max_seconds: float = 120.0, timeout_s: float = 60.0) -> LoadRun:
    """POST ``body`` to ``url`` (``.../predict?min_score=0``) from ``clients`` clients.

    Stops once ``requests`` answers are in and (with ``swap``) ``after_swap`` requests were sent
    after the swap returned, or at ``max_requests`` (default 4 x ``requests``) or ``max_seconds``.
    """
    import httpx

    require_loopback(url)
    if clients < 1 or requests < 1:
        raise ValueError(f"clients and requests must be >= 1, got {clients} and {requests}")
    cap = max_requests or 4 * requests
    answers: list[Answer] = []
    swap_times: dict[str, float] = {}
    swap_task: asyncio.Task | None = None
    sent = 0
    t0 = time.monotonic()

    def finished() -> bool:
        if len(answers) < requests:
            return False
        if swap is None:
            return True
        done = swap_times.get("done")
        return done is not None and sum(a.sent >= done for a in answers) >= after_swap

    def run_swap() -> None:
        swap_times["started"] = time.monotonic()
        swap()
        swap_times["done"] = time.monotonic()

    async def client(index: int, http: httpx.AsyncClient) -> None:
        nonlocal sent, swap_task
        while not finished() and sent < cap and time.monotonic() - t0 < max_seconds:
            sent += 1
            start = time.monotonic()
            try:
                r = await http.post(url, content=body, headers={"content-type": content_type})
                answers.append(_answer(index, start, r))
            except httpx.HTTPError as exc:
                answers.append(Answer(index, start, time.monotonic() - start, 0, detail=repr(exc)))
            if swap is not None and swap_task is None and len(answers) >= swap_after:
                swap_task = asyncio.create_task(asyncio.to_thread(run_swap))

    # trust_env=False: no proxy from the environment may sit between us and 127.0.0.1.
    async with httpx.AsyncClient(timeout=timeout_s, trust_env=False,
                                 limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    wall = time.monotonic() - t0
    if swap_task is not None:
        await swap_task  # re-raises what the swap raised
    return LoadRun(clients, tuple(answers), wall, swap_times.get("started"), swap_times.get("done"))


def _answer(client: int, sent: float, r: Any) -> Answer:
    seconds = time.monotonic() - sent
    if r.status_code != 200:
        return Answer(client, sent, seconds, r.status_code, detail=r.text[:300])
    body = r.json()
    return Answer(client, sent, seconds, 200, str(body.get("model_version")),
                  fingerprint(body.get("detections", [])))


def run(url: str, body: bytes, **kwargs: Any) -> LoadRun:
    """``drive`` from synchronous code (no event loop running)."""
    return asyncio.run(drive(url, body, **kwargs))


def fingerprint(detections: Sequence[Mapping[str, Any]]) -> tuple[float, float, float]:
    """(count, sum of scores, sum of box coordinates) of ``/predict`` detections: equal for one
    model and one image whatever their order; an untrained detector's scores all sit near 0.5,
    so its boxes are what tells two of them apart."""
    return (float(len(detections)), float(sum(d["score"] for d in detections)),
            float(sum(sum(d["box"]) for d in detections)))


def reference(checkpoint: Path, image: bytes, *, max_pixels: int = 25_000_000
              ) -> tuple[float, float, float]:
    """The ``fingerprint`` of what a completely loaded copy of ``checkpoint`` finds in ``image``
    (every detection: ask the server with ``?min_score=0``)."""
    import torch

    from synthloop.detection import load_checkpoint
    from synthloop.serve.decode import decode_image

    model = load_checkpoint(checkpoint)
    model.eval()
    with torch.inference_mode():
        out = model([decode_image(image, max_pixels=max_pixels)])[0]
    return fingerprint([{"score": s, "box": b}
                        for s, b in zip(out["scores"].tolist(), out["boxes"].tolist())])


def alike(a: Sequence[float], b: Sequence[float]) -> bool:
    """Two fingerprints of one model: same count; sums within the server's rounding (scores to
    4 decimals, box coordinates to 2) plus float noise."""
    if not a or not b or a[0] != b[0]:
        return False
    n = a[0]
    return abs(a[1] - b[1]) <= 1e-4 * n + 1e-3 and abs(a[2] - b[2]) <= 0.02 * n + 0.05


def swap_problems(run: LoadRun, *, before: str, after: str,
                  expected: Mapping[str, Sequence[float]]) -> list[str]:
    """What went wrong in a swap from ``before`` to ``after`` under load (empty: nothing).

    ``expected``: version -> ``reference`` fingerprint of its complete model.
    """
    problems: list[str] = []
    if alike(expected[before], expected[after]):
        problems.append(f"v{before} and v{after} answer alike: the check cannot tell them apart")
    failed = [a for a in run.answers if a.status != 200]
    if failed:
        problems.append(f"{len(failed)} of {len(run.answers)} requests failed, e.g. "
                        f"status {failed[0].status}: {failed[0].detail[:200]}")
    ok = [a for a in run.answers if a.status == 200]
    for a in ok:
        if a.version not in (before, after):
            problems.append(f"an answer named v{a.version}, neither v{before} nor v{after}")
        elif not alike(a.found, expected[a.version]):
            problems.append(f"an answer naming v{a.version} found {_show(a.found)}, its complete "
                            f"model {_show(expected[a.version])}: a half-loaded or mislabelled "
                            "model")
        if len(problems) > 10:
            return problems
    rank = {before: 0, after: 1}
    for c in range(run.clients):
        seq = [rank.get(a.version, -1) for a in sorted(ok, key=lambda a: a.sent) if a.client == c]
        if seq != sorted(seq):
            problems.append(f"client {c} went back to v{before} after v{after}")
    if run.swap_done is not None:
        late = [a for a in ok if a.sent >= run.swap_done and a.version != after]
        if late:
            problems.append(f"{len(late)} requests sent after the swap finished were not "
                            f"answered by v{after}")
        if not any(a.sent >= run.swap_done for a in ok):
            problems.append("no request was answered after the swap")
    if run.swap_started is not None and not any(a.sent + a.seconds <= run.swap_started
                                                 and a.version == before for a in ok):
        problems.append(f"no answer from v{before} before the swap")
    return problems


def _show(fp: Sequence[float]) -> str:
    if not fp:
        return "nothing"
    return f"{int(fp[0])} boxes (score sum {fp[1]:.4f}, coordinate sum {fp[2]:.2f})"
