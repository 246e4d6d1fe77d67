"""Paths shared by tests (importable because pytest puts tests/ on sys.path via rootdir conftest)."""

import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "pipelines" / "demo.yaml"
TOY_W, TOY_H = 96, 64  # make_coco's image size


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free right now (all bound at once, then released)."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    """A loopback port free right now (for a server a test starts)."""
    return free_ports(1)[0]


def write_toy_pipeline(folder: Path, *, sizes: tuple[int, int, int] = (16, 10, 5),
                       shard_size: int = 8, update: dict | None = None,
                       replace: dict | None = None, name: str = "toy.yaml") -> Path:
    """pipelines/demo.yaml at toy size (96x72 renders, 1 spp, one cycle of k=3), written to
    ``folder/name``. ``update`` merges keys into sections; ``replace`` swaps whole sections."""
    import yaml

    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    cfg["workspace"] = str(folder / "ws")
    for domain, n in zip(("synthetic", "pool", "val"), sizes):
        cfg[domain].update(num_images=n, width=96, height=72, samples=1)
    cfg["render"] = {"shard_size": shard_size}
    cfg["detector"] = {"architecture": "mobilenet_v3_fpn", "min_size": 72, "max_size": 96}
    cfg["pretrain"].update(epochs=2, max_minutes=1, batch_size=4, warmup_steps=2)
    cfg["finetune"].update(epochs=1, batch_size=2, warmup_steps=1)
    cfg["active"].update(k=3, cycles=1)
    for section, values in (update or {}).items():
        cfg.setdefault(section, {}).update(values)
    cfg.update(replace or {})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def make_coco(root: Path, n: int = 4):
    """``n`` 96x64 images with one drawn rectangle each (class 1 red, 2 blue); every 4th is empty.

    A ``CocoDataset`` for detector tests that must train or score something in seconds."""
    import numpy as np
    from PIL import Image

    from synthloop.data.coco import CocoDataset, categories_for

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(1, n + 1):
        img = np.full((TOY_H, TOY_W, 3), 40, np.uint8)
        if i % 4:
            x, y, cat = int(rng.integers(0, TOY_W - 30)), int(rng.integers(0, TOY_H - 24)), 1 + i % 2
            img[y:y + 20, x:x + 26] = (220, 60, 60) if cat == 1 else (60, 60, 220)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat,
                         "bbox": [x, y, 26, 20], "area": 520.0, "iscrowd": 0})
        Image.fromarray(img).save(root / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": TOY_W, "height": TOY_H})
    return CocoDataset.from_dict({"images": images, "annotations": anns,
                                  "categories": categories_for(["red", "blue"])}, image_root=root)


def start_moto(monkeypatch, *, port: int = 0):
    """A moto S3 server on 127.0.0.1 (``port`` 0: a free one) with test credentials in the
    environment: (server, endpoint URL). The caller stops it."""
    from moto.server import ThreadedMotoServer

    for key, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    host, bound = server.get_host_and_port()
    return server, f"http://{host}:{bound}"


def prefect_yaml_deployment(name: str) -> dict:
    """prefect.yaml's deployment ``name`` (exactly one)."""
    import yaml

    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    (found,) = [d for d in deployments if d["name"] == name]
    return found


def prefect_yaml_expects(deployment: str) -> list[list[str]]:
    """The ``expect`` list of each event trigger of prefect.yaml's ``deployment``."""
    return [list(t["expect"]) for t in prefect_yaml_deployment(deployment).get("triggers", [])
            if t.get("type") == "event"]


def starts_deployment(deployment: str, event: str, *, pipeline: str = "demo") -> bool:
    """Whether Prefect's server starts prefect.yaml's ``deployment`` on ``event`` sent for
    ``pipeline`` (resource ``synthloop.pipeline.<pipeline>``), decided as the server decides:
    its trigger index (``fnmatch`` of the event name against each expected name,
    prefect.server.events.triggers) and then the trigger's own ``covers`` (event pattern with
    the trailing ``*`` wildcard, resource match)."""
    import fnmatch
    import uuid
    from datetime import datetime, timezone

    from prefect.server.events.schemas.automations import EventTrigger
    from prefect.server.events.schemas.events import ReceivedEvent

    found = prefect_yaml_deployment(deployment)
    received = ReceivedEvent(occurred=datetime.now(timezone.utc), event=event, id=uuid.uuid4(),
                             resource={"prefect.resource.id": f"synthloop.pipeline.{pipeline}"})
    for spec in found.get("triggers", []):
        trigger = EventTrigger(match=spec["match"], expect=set(spec["expect"]),
                               posture=spec["posture"], threshold=spec["threshold"])
        if (any(fnmatch.fnmatchcase(event, e) for e in trigger.expect)
                and trigger.covers(received)):
            return True
    return False
