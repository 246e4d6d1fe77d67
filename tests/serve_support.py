"""Serving tests' scene: two tiny registry versions, the app on 127.0.0.1, and a swap callable.

The server runs in a thread on a socket that is bound and listening before the thread starts,
so no client meets a closed port, and ``loopback_server`` yields once the app's start-up has
finished, so no client's timeout runs while the champion loads.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from mlflow import MlflowClient

from people_support import image_bytes, register_tiny_models
from synthloop import tracking
from synthloop.config import load_config
from synthloop.serve.champion import ChampionWatcher, LoadedModel, load_registry_version
from synthloop.serve.loadcheck import reference
from tests_support import DEMO_CONFIG


@contextmanager
def loopback_server(app: Any) -> Iterator[str]:
    """``app`` under uvicorn on 127.0.0.1 (a free port); yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    # connections wait in the backlog, but the app's start-up (loading the champion) may take
    # longer than a client's timeout on a loaded machine: yield once it has finished
    deadline = time.monotonic() + 120
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        if not server.started:
            raise RuntimeError("the test server did not start (see its log above)")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@dataclass
class SwapScene:
    url: str  # POST here: /predict?min_score=0 (every detection goes into the fingerprint)
    watcher: ChampionWatcher
    client: MlflowClient
    name: str
    versions: list[str]
    image: bytes
    expected: dict[str, tuple[float, ...]]  # version -> fingerprint of its complete model

    def swap_to(self, version: str) -> Callable[[], None]:
        """Move ``champion`` to ``version`` and return once the server answers with it."""
        def swap() -> None:
            self.client.set_registered_model_alias(self.name, "champion", version)
            if not self.watcher.refresh() or self.watcher.current.version != version:
                raise AssertionError(f"no swap to v{version}: {self.watcher.last_error}")
        return swap


@contextmanager
def swap_scene(folder: Path, *, loader: Callable[..., LoadedModel] = load_registry_version
               ) -> Iterator[SwapScene]:
    """v1 is champion and in memory; ``loader`` loads later versions (a test may tear it)."""
    from synthloop.serve.app import create_app

    cfg = load_config(DEMO_CONFIG, overrides=[f"workspace={folder / 'ws'}"])
    versions = register_tiny_models(cfg, folder / "models")
    client = MlflowClient(cfg.tracking_uri)
    name = cfg.registered_model_name
    client.set_registered_model_alias(name, "champion", versions[0])
    image = image_bytes(80, 60)
    expected = {}
    for v in versions:  # each version loaded completely, apart from the server
        source = client.get_model_version(name, v).source
        expected[v] = reference(tracking.download_checkpoint(source, folder / f"v{v}"), image)
    watcher = ChampionWatcher(client, name, poll_seconds=3600, loader=loader)
    assert watcher.refresh() and watcher.current.version == versions[0]
    with loopback_server(create_app(watcher, cfg.serve, start_watcher=False)) as base:
        yield SwapScene(f"{base}/predict?min_score=0", watcher, client, name, versions, image,
                        expected)
