"""Follow a registry alias (``champion``): load its model, and swap when the alias moves.

The swap never drops a request: a request takes the current ``LoadedModel`` once and keeps
using it to the end; the watcher loads the new version completely (and runs it once) before
it replaces the reference in one assignment. The old model goes when its last request ends.
A failed load keeps serving the old model and is reported by ``/health``.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """One registry version in memory. ``model`` maps a list of (3, H, W) float tensors to
    torchvision-style outputs (``boxes`` [x1, y1, x2, y2] pixels, ``labels`` 1..C, ``scores``)."""

    name: str
    version: str
    model: Any
    class_names: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str = ""
    loaded_at: float = 0.0
    scorer: str = "torch"  # or "onnx:<runtime>": the exported scorer of this version


def load_registry_version(client: Any, name: str, version: Any, *,
                          device: Any = None, export_runtime: str | None = None) -> LoadedModel:
    """Download a registry version's checkpoint, rebuild the detector on ``device``
    (``detection.device.resolve_device``'s result; None: the CPU), run it once.

    ``export_runtime`` (onnxruntime | openvino): serve with the version's exported scorer when
    it has one (on the CPU; torch otherwise, with a log line); None: torch."""
    import torch

    from synthloop import tracking
    from synthloop.detection import load_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        model = load_checkpoint(tracking.download_checkpoint(version.source, Path(tmp)),
                                device=device)
    model.eval()
    scorer = "torch"
    if export_runtime is not None:
        model, scorer = tracking.exported_or_torch(version.source, model, runtime=export_runtime)
    from synthloop.detection.device import model_device

    with torch.inference_mode():  # first call allocates; do it before traffic sees the model
        model([torch.zeros(3, 64, 64, device=model_device(model))])  # an exported scorer: CPU
    metrics = {}
    if version.run_id:
        run_metrics = client.get_run(version.run_id).data.metrics
        metrics = {k[len("val_"):]: float(v) for k, v in run_metrics.items() if k.startswith("val_")}
    if "AP" not in metrics and "val_AP" in (version.tags or {}):
        metrics["AP"] = float(version.tags["val_AP"])
    names = list(getattr(model, "checkpoint_extra", {}).get("class_names", []))
    return LoadedModel(name=name, version=str(version.version), model=model, class_names=names,
                       metrics=metrics, run_id=version.run_id or "", loaded_at=time.time(),
                       scorer=scorer)


class ChampionWatcher:
    """Keeps ``current`` equal to the model behind ``alias``; ``refresh`` checks once."""

    def __init__(self, client: Any, name: str, *, alias: str = "champion", poll_seconds: float = 10.0,
                 loader: Callable[[Any, str, Any], LoadedModel] = load_registry_version):
        self.client, self.name, self.alias = client, name, alias
        self.poll_seconds = poll_seconds
        self.loader = loader
        self.current: LoadedModel | None = None
        self.swaps = 0
        self.last_error: str | None = None
        self.last_check: float = 0.0
        self._lock = threading.Lock()  # one refresh at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Load the alias's version if it is not the one in memory; True when it swapped."""
        from mlflow.exceptions import MlflowException

        with self._lock:
            self.last_check = time.time()
            try:
                version = self.client.get_model_version_by_alias(self.name, self.alias)
            except MlflowException as exc:
                self.last_error = f"no {self.alias!r} alias on {self.name!r}: {exc.message[:200]}"
                return False
            if self.current is not None and self.current.version == str(version.version):
                self.last_error = None
                return False
            try:
                loaded = self.loader(self.client, self.name, version)
            except Exception as exc:  # keep serving the old model; /health shows why
                self.last_error = f"loading v{version.version} failed: {exc!r}"[:500]
                log.exception("serve: could not load %s v%s", self.name, version.version)
                return False
            before = self.current.version if self.current else None
            self.current = loaded  # the swap: one reference assignment
            if before is not None:
                self.swaps += 1
            self.last_error = None
            log.info("serve: %s@%s is now v%s (was %s)", self.name, self.alias, loaded.version, before)
            return True

    def start(self) -> None:
        """Check now, then every ``poll_seconds`` on a daemon thread."""
        self.refresh()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="champion-watcher", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # a registry hiccup must not kill the watcher
                log.exception("serve: alias check failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
