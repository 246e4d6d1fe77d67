"""Background photos: seeded procedural styles, a folder of images, or an S3 prefix.

A background *spec* string is ``procedural:<style>``, a folder path or ``s3://bucket/prefix``.
``get_background_source`` turns it into a source that (1) draws a JSON-able choice per image
from a numpy Generator (the scene plan stores it) and (2) renders that choice at any size,
deterministically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from synthloop.io_utils import atomic_write_bytes

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class BackgroundError(ValueError):
    """A background spec cannot be used; the message says which and why."""


# ------------------------------------------------------------------------------- primitives
def _noise(rng: np.random.Generator, w: int, h: int, cells: int, octaves: int = 3) -> np.ndarray:
    """Smooth value noise in [0, 1], (h, w) float32: upsampled random grids, summed octaves."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        c = cells * 2**o
        grid = rng.random((max(2, c * h // max(w, h) + 2), c + 2)).astype(np.float32)
        up = Image.fromarray(grid, mode="F").resize((w, h), Image.BICUBIC)
        out += amp * np.asarray(up)
        total += amp
        amp *= 0.5
    out /= total
    return np.clip((out - out.min()) / max(float(np.ptp(out)), 1e-6), 0, 1)


def _field(rng, w, h, colour, spread=0.35, cells=4) -> np.ndarray:
    """A colour field: ``colour`` modulated by smooth noise, (h, w, 3) float 0..255."""
    n = _noise(rng, w, h, cells)[..., None]
    return np.clip(np.asarray(colour, np.float32) * (1 - spread / 2 + spread * n), 0, 255)


def _jitter(rng, colour, amount=18):
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def _vertical_light(h: int, w: int, top: float, bottom: float) -> np.ndarray:
    return np.linspace(top, bottom, h, dtype=np.float32)[:, None, None].repeat(w, 1)


# ---------------------------------------------------------------------------------- styles
_WORKSHOP_WALLS = [(196, 178, 150), (172, 150, 118), (150, 165, 150), (140, 150, 165),
                   (205, 195, 180), (120, 105, 90)]
_WORKSHOP_ITEMS = [(180, 40, 30), (40, 80, 160), (220, 170, 40), (60, 60, 60), (30, 110, 60),
                   (200, 110, 40), (150, 150, 150)]


def _workshop(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """Warm walls, pegboard, wooden shelves with boxes, hanging tools, a workbench edge."""
    wall = _field(rng, w, h, _jitter(rng, _WORKSHOP_WALLS[rng.integers(len(_WORKSHOP_WALLS))]))
    wall *= _vertical_light(h, w, rng.uniform(0.75, 1.05), rng.uniform(0.8, 1.1))
    img = Image.fromarray(wall.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    if rng.random() < 0.6:  # pegboard holes
        step = int(rng.integers(7, 14)) * max(1, w // 320)
        dot = (50, 40, 30)
        for y in range(step // 2, h, step):
            for x in range(step // 2, w, step):
                d.point((x, y), fill=dot)
    for _ in range(rng.integers(2, 7)):  # hanging tools: dark strokes with a handle
        x, y = rng.integers(0, w), rng.integers(0, h // 2)
        length = rng.integers(h // 8, h // 3)
        col = _jitter(rng, _WORKSHOP_ITEMS[rng.integers(len(_WORKSHOP_ITEMS))], 25)
        d.line((x, y, x + rng.integers(-8, 9), y + length), fill=(45, 45, 48),
               width=int(rng.integers(1, 4)))
        d.rectangle((x - 3, y, x + 3, y + length // 3), fill=col)
    for _ in range(rng.integers(1, 4)):  # shelves with boxes on them
        y = int(rng.integers(h // 6, h - h // 5))
        wood = _jitter(rng, (130, 90, 55), 25)
        x0, x1 = sorted(rng.integers(0, w, 2))
        x0, x1 = (0, w) if rng.random() < 0.6 else (int(x0), int(x1) + w // 4)
        d.rectangle((x0, y + 4, x1, y + 9), fill=(60, 50, 40))  # shadow under the plank
        d.rectangle((x0, y, x1, y + 4), fill=wood)
        x = x0
        while x < x1 - 10:
            bw, bh = int(rng.integers(8, w // 8 + 9)), int(rng.integers(6, h // 6 + 7))
            if rng.random() < 0.7:
                d.rectangle((x, y - bh, x + bw, y), fill=_jitter(rng, _WORKSHOP_ITEMS[
                    rng.integers(len(_WORKSHOP_ITEMS))], 30), outline=(40, 35, 30))
            x += bw + int(rng.integers(2, 20))
    if rng.random() < 0.8:  # workbench edge with wood grain
        y = int(h * rng.uniform(0.72, 0.9))
        grain = _noise(rng, max(2, w // 40), max(2, h // 2), 6)
        grain = np.asarray(Image.fromarray(grain, mode="F").resize((w, h - y), Image.BILINEAR))
        top = np.asarray(_jitter(rng, (150, 105, 65), 25), np.float32)
        bench = top * (0.75 + 0.4 * grain[..., None])
        arr = np.asarray(img).astype(np.float32)
        arr[y:] = bench
        img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.2))))


_FACTORY_BASES = [(118, 122, 128), (96, 104, 112), (132, 132, 124), (84, 96, 90), (70, 78, 92)]
_FACTORY_MACHINES = [(60, 110, 80), (210, 120, 30), (70, 90, 140), (180, 180, 170), (120, 40, 40)]


def _factory(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """Cool concrete, painted floor with lane lines, pipes, machines, hazard stripes, lamps."""
    base = _field(rng, w, h, _jitter(rng, _FACTORY_BASES[rng.integers(len(_FACTORY_BASES))]),
                  spread=0.5, cells=8)
    base *= 0.85 + 0.3 * rng.random((h, w, 1)).astype(np.float32)  # concrete grain
    horizon = int(h * rng.uniform(0.45, 0.7))
    floor = np.asarray(_jitter(rng, (90, 100, 95), 20), np.float32)
    base[horizon:] = floor * (0.7 + 0.5 * _noise(rng, w, h - horizon, 5)[..., None])
    img = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(rng.integers(1, 4)):  # machines: blocks with panel lines
        x0, bw = int(rng.integers(-w // 8, w)), int(rng.integers(w // 6, w // 2))
        top = int(rng.integers(h // 5, horizon))
        col = _jitter(rng, _FACTORY_MACHINES[rng.integers(len(_FACTORY_MACHINES))], 20)
        d.rectangle((x0, top, x0 + bw, horizon + 4), fill=col, outline=(30, 30, 30), width=2)
        for _ in range(rng.integers(1, 4)):
            px = x0 + int(rng.integers(4, max(5, bw - 12)))
            d.rectangle((px, top + 6, px + bw // 5, top + 6 + (horizon - top) // 3),
                        outline=(25, 25, 25))
    for _ in range(rng.integers(1, 4)):  # pipes with cylindrical shading
        thick = int(rng.integers(4, max(5, h // 14)))
        shade = np.sin(np.linspace(0.15, np.pi - 0.15, thick))[:, None] * 0.8 + 0.2
        col = np.asarray(_jitter(rng, [(150, 150, 150), (170, 50, 40), (50, 120, 70)][
            rng.integers(3)], 20), np.float32)
        arr = np.asarray(img).astype(np.float32)
        if rng.random() < 0.6:
            y = int(rng.integers(0, horizon))
            arr[y:y + thick] = (col * shade[..., None])[: len(arr[y:y + thick])]
        else:
            x = int(rng.integers(0, w))
            band = (col * shade[..., None]).transpose(1, 0, 2)[:, : len(arr[0, x:x + thick])]
            arr[:horizon, x:x + thick] = band
        img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
        d = ImageDraw.Draw(img)
    for _ in range(rng.integers(1, 3)):  # yellow lane lines on the floor
        y = int(rng.integers(horizon, h))
        d.line((0, y, w, y + int(rng.integers(-h // 6, h // 6))), fill=(220, 190, 40),
               width=int(rng.integers(2, 6)))
    if rng.random() < 0.6:  # hazard stripes
        y0, hh = int(rng.integers(0, h - 10)), int(rng.integers(6, max(7, h // 10)))
        for k in range(-hh, w, 2 * hh):
            d.polygon([(k, y0 + hh), (k + hh, y0), (k + 2 * hh, y0), (k + hh, y0 + hh)],
                      fill=(20, 20, 20))
            d.polygon([(k + hh, y0 + hh), (k + 2 * hh, y0), (k + 3 * hh, y0),
                       (k + 2 * hh, y0 + hh)], fill=(230, 190, 20))
    arr = np.asarray(img).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(rng.integers(0, 3)):  # overhead lamps: soft bright spots
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h * 0.4), rng.uniform(w * 0.05, w * 0.2)
        arr += 120 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))


PROCEDURAL_STYLES: dict[str, Callable[[np.random.Generator, int, int], Image.Image]] = {
    "workshop": _workshop,
    "factory": _factory,
}


# --------------------------------------------------------------------------------- sources
class ProceduralBackgrounds:
    """``procedural:<style>``: every choice is a seed; the image is drawn from it."""

    def __init__(self, style: str):
        self.style = style
        self.spec = f"procedural:{style}"

    def choose(self, rng: np.random.Generator) -> dict:
        return {"source": self.spec, "seed": int(rng.integers(0, 2**31 - 1))}

    def render(self, choice: dict, width: int, height: int) -> Image.Image:
        draw = PROCEDURAL_STYLES[self.style]
        return draw(np.random.default_rng(choice["seed"]), width, height).convert("RGB")


def _crop_photo(path: Path, choice: dict, width: int, height: int) -> Image.Image:
    """Zoom, crop and flip one photo as ``choice`` says, to exactly ``width`` x ``height``."""
    try:
        img = Image.open(path).convert("RGB")
    except OSError as exc:
        raise BackgroundError(f"background {path}: cannot read image ({exc})") from None
    scale = max(width / img.width, height / img.height) * choice["zoom"]
    size = (max(width, round(img.width * scale)), max(height, round(img.height * scale)))
    img = img.resize(size, Image.BILINEAR)
    x = round((size[0] - width) * choice["crop"][0])
    y = round((size[1] - height) * choice["crop"][1])
    img = img.crop((x, y, x + width, y + height))
    return img.transpose(Image.FLIP_LEFT_RIGHT) if choice["flip"] else img


class FolderBackgrounds:
    """A folder of photos: a choice names a file, a zoom, a crop position and a flip."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.spec = str(folder)
        self.files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not self.files:
            raise BackgroundError(f"background folder {folder} has no images "
                                  f"({', '.join(IMAGE_EXTENSIONS)})")

    def choose(self, rng: np.random.Generator) -> dict:
        return {"source": self.spec, "file": self.files[int(rng.integers(len(self.files)))],
                "zoom": round(float(rng.uniform(1.0, 1.3)), 4),
                "crop": [round(float(rng.random()), 4), round(float(rng.random()), 4)],
                "flip": bool(rng.random() < 0.5)}

    def render(self, choice: dict, width: int, height: int) -> Image.Image:
        return _crop_photo(self.folder / choice["file"], choice, width, height)


def _s3_client():
    try:
        import boto3
    except ImportError:
        raise BackgroundError("s3:// backgrounds need boto3: pip install boto3") from None
    # endpoint and credentials come from the environment / AWS profile (AWS_ENDPOINT_URL, ...)
    return boto3.client("s3")


def _cache_root() -> Path:
    return Path(os.environ.get("SYNTHLOOP_CACHE_DIR", "~/.cache/synthloop")).expanduser()


class S3Location:
    """``s3://bucket/prefix``: its objects download on first use into
    ``$SYNTHLOOP_CACHE_DIR`` (default ``~/.cache/synthloop``)/s3/<bucket>/<prefix>."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.bucket, _, self.prefix = self.url[len("s3://"):].partition("/")
        self.folder = _cache_root() / "s3" / self.bucket / self.prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def list(self) -> list[str]:
        """Object names under the prefix, relative to it."""
        pages = _s3_client().get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.key(""))
        try:
            keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        except Exception as exc:  # botocore raises many kinds; all mean "cannot list"
            raise BackgroundError(f"background {self.url}: cannot list ({exc})") from None
        return [k[len(self.key("")):] for k in keys]

    def fetch(self, name: str) -> Path:
        local = self.folder / name
        if not local.is_file():
            data = _s3_client().get_object(Bucket=self.bucket, Key=self.key(name))["Body"].read()
            atomic_write_bytes(local, data)
        return local


class S3Backgrounds(FolderBackgrounds):
    """Photos under an S3 prefix, listed once; each is downloaded (cached) on first use."""

    def __init__(self, url: str):  # noqa: not FolderBackgrounds.__init__: nothing local yet
        self.location = S3Location(url)
        self.spec, self.folder = self.location.url, self.location.folder
        self.files = sorted(n for n in self.location.list()
                            if Path(n).suffix.lower() in IMAGE_EXTENSIONS)
        if not self.files:
            raise BackgroundError(f"background {url} has no images ({', '.join(IMAGE_EXTENSIONS)})")

    def render(self, choice: dict, width: int, height: int) -> Image.Image:
        return _crop_photo(self.location.fetch(choice["file"]), choice, width, height)


def known_backgrounds() -> list[str]:
    return [f"procedural:{s}" for s in PROCEDURAL_STYLES]


def get_background_source(spec: str) -> ProceduralBackgrounds | FolderBackgrounds:
    """Resolve a background spec: ``procedural:<style>``, ``s3://bucket/prefix`` or a folder.

    Unknown names raise ``BackgroundError`` (a ValueError) listing the known ones.
    """
    if spec.startswith("procedural:"):
        style = spec.split(":", 1)[1]
        if style not in PROCEDURAL_STYLES:
            raise BackgroundError(f"unknown background '{spec}'; known: "
                                  f"{', '.join(known_backgrounds())}, or a folder of images")
        return ProceduralBackgrounds(style)
    if spec.startswith("s3://"):
        return S3Backgrounds(spec)
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise BackgroundError(f"unknown background '{spec}': not a folder; known: "
                              f"{', '.join(known_backgrounds())}, an s3:// prefix, or a folder "
                              f"of images")
    return FolderBackgrounds(folder.resolve())


def render_background(choice: dict, width: int, height: int) -> Image.Image:
    """Draw the background a plan chose, as an RGB image of exactly ``width`` x ``height``.

    Photos are read straight from the choice (no folder listing per image).
    """
    source = choice["source"]
    if source.startswith("procedural:"):
        return get_background_source(source).render(choice, width, height)
    if source.startswith("s3://"):
        return _crop_photo(S3Location(source).fetch(choice["file"]), choice, width, height)
    return _crop_photo(Path(source) / choice["file"], choice, width, height)
