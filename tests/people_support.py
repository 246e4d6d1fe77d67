"""Helpers for the labelling and serving tests: tiny registered detectors, a tiny pool."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from tests_support import free_port


def register_tiny_models(cfg, folder: Path, count: int = 2) -> list[str]:
    """``count`` small from-scratch detectors as registry versions with val_AP 0.1, 0.2, ...

    ``box_score_thresh=0``: even untrained weights give boxes to pre-annotate with.
    """
    import mlflow
    import torch
    from mlflow import MlflowClient

    from synthloop import tracking
    from synthloop.config import DetectorConfig
    from synthloop.detection import build_detector, save_checkpoint
    from synthloop.gating.registry import register_version

    tracking.setup(cfg)
    det = DetectorConfig(min_size=64, max_size=96, box_score_thresh=0.0)
    versions = []
    for n in range(count):
        torch.manual_seed(n)
        ckpt = save_checkpoint(build_detector(cfg=det, num_classes=len(cfg.class_names)),
                               Path(folder) / f"m{n}" / tracking.CHECKPOINT_NAME, cfg=det,
                               num_classes=len(cfg.class_names),
                               extra={"class_names": list(cfg.class_names)})
        with mlflow.start_run() as run:
            mlflow.log_metrics({"val_AP": 0.1 * (n + 1), "val_AP50": 0.3})
            uri = tracking.log_detector(ckpt)
        versions.append(register_version(MlflowClient(), cfg.registered_model_name, uri,
                                         run.info.run_id, {"val_AP": 0.1 * (n + 1)}))
    return versions


def image_bytes(width: int = 80, height: int = 60, fmt: str = "JPEG", noise: bool = True,
                seed: int = 0) -> bytes:
    arr = (np.random.default_rng(seed).random((height, width, 3)) * 255 * noise).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def make_pool(cfg, count: int = 4, width: int = 96, height: int = 72) -> Path:
    """``count`` images without boxes in <workspace>/data/pool (ids 1..count)."""
    from synthloop.data.coco import CocoDataset, CocoImage, categories_for

    folder = Path(cfg.workspace) / "data" / "pool"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(1, count + 1):
        name = f"{i:06d}.jpg"
        (folder / "images" / name).write_bytes(image_bytes(width, height, seed=i))
        images.append(CocoImage(i, name, width, height))
    CocoDataset(images, [], categories_for(list(cfg.class_names)), folder / "images").save(
        folder / "annotations.json")
    return folder


def chromium_screenshot(url: str, out: Path, *, cookies: dict[str, str], wait_s: float = 10.0,
                        size: tuple[int, int] = (1440, 900), chromium: str = "chromium") -> Path:
    """Open ``url`` in headless Chromium with ``cookies`` set (DevTools protocol on loopback),
    wait for the page to render, and save a PNG screenshot."""
    import time
    from urllib.parse import urlparse

    with Chromium(size=size, chromium=chromium) as browser:
        browser.call("Network.enable")
        for name, value in cookies.items():
            browser.call("Network.setCookie", name=name, value=value,
                         domain=urlparse(url).hostname, path="/")
        browser.call("Page.navigate", url=url)
        time.sleep(wait_s)
        return browser.screenshot(out)


class Chromium:
    """Headless Chromium driven over the DevTools protocol on loopback, for tests that read
    what a person would see: ``open`` a URL and wait until the page shows some text, read its
    text (``text``, ``evaluate``), save a ``screenshot``.

        with Chromium() as browser:
            text = browser.open(url, wait_for=["Runs"])
            browser.screenshot(path)
    """

    def __init__(self, *, size: tuple[int, int] = (1440, 900), chromium: str = "chromium"):
        self.size, self.chromium = size, chromium

    def __enter__(self) -> "Chromium":
        import json
        import subprocess
        import tempfile
        import time
        import urllib.request

        from websockets.sync.client import connect

        port = free_port()
        self._profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        self._proc = subprocess.Popen(
            # no background networking: this machine's closed network refuses those connections
            [self.chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={self._profile.name}",
             "--remote-debugging-address=127.0.0.1", f"--remote-debugging-port={port}",
             f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline, targets = time.time() + 60, []
        while time.time() < deadline and not targets:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    targets = [t for t in json.load(r) if t.get("type") == "page"]
            except OSError:
                time.sleep(0.3)
        if not targets:
            self.__exit__(None, None, None)
            raise RuntimeError("chromium did not open its DevTools port")
        self._ws = connect(targets[0]["webSocketDebuggerUrl"], max_size=2**26)
        self._ids = iter(range(1, 1_000_000))
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=self.size[0], height=self.size[1],
                  deviceScaleFactor=1, mobile=False)
        return self

    def __exit__(self, *exc) -> None:
        if getattr(self, "_ws", None) is not None:
            self._ws.close()
        self._proc.terminate()
        self._proc.wait(timeout=30)
        self._profile.cleanup()

    def call(self, method: str, **params):
        import json

        n = next(self._ids)
        self._ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            msg = json.loads(self._ws.recv(timeout=120))
            if msg.get("id") == n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-serializable)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def text(self) -> str:
        """The page's visible text plus its SVG labels (chart axes and legends)."""
        return self.evaluate("document.body ? document.body.innerText + '\\n' + "
                             "Array.from(document.querySelectorAll('svg text'))"
                             ".map(t => t.textContent).join('\\n') : ''") or ""

    def open(self, url: str, *, wait_for: tuple[str, ...] | list[str] = (),
             timeout_s: float = 60.0, settle_s: float = 1.0) -> str:
        """Navigate to ``url`` and wait until its text holds every string of ``wait_for``;
        returns the text (raises TimeoutError with the text seen when it never does)."""
        import time

        self.call("Page.navigate", url=url)
        deadline, text = time.time() + timeout_s, ""
        while time.time() < deadline:
            time.sleep(0.5)
            text = self.text()
            if all(w in text for w in wait_for):
                time.sleep(settle_s)  # let charts and late cells finish drawing
                return self.text()
        raise TimeoutError(f"{url}: no {list(wait_for)} after {timeout_s:.0f} s; the page "
                           f"showed: {' '.join(text.split())[:1500]}")

    def click(self, selector: str = "button", *, text: str | None = None) -> int:
        """Click every element matching CSS ``selector`` (whose text holds ``text``, if given);
        returns how many."""
        import json

        return int(self.evaluate(
            f"(() => {{ const els = Array.from(document.querySelectorAll({json.dumps(selector)}))"
            f".filter(e => {json.dumps(text)} === null || e.innerText.includes({json.dumps(text)}));"
            " els.forEach(e => e.click()); return els.length; })()") or 0)

    def open_more(self, *, wait_for: tuple[str, ...] | list[str], timeout_s: float = 30.0,
                  settle_s: float = 1.0) -> str:
        """Wait, without navigating, until the page's text holds every string of ``wait_for``
        (after a click); returns the text."""
        import time

        deadline, text = time.time() + timeout_s, ""
        while time.time() < deadline:
            text = self.text()
            if all(w in text for w in wait_for):
                time.sleep(settle_s)
                return self.text()
            time.sleep(0.5)
        raise TimeoutError(f"no {list(wait_for)} after {timeout_s:.0f} s; the page showed: "
                           f"{' '.join(text.split())[:1500]}")

    def screenshot(self, out: Path) -> Path:
        import base64

        shot = self.call("Page.captureScreenshot", format="png")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(shot["data"]))
        return out
