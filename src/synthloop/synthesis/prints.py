"""Procedural packaging prints: the ``printed`` material's image textures, drawn from a number.

Shop floors are full of printed packaging (cartons with tape and shipping labels, product labels
on bottles and packs, bags), and a detector trained on plain-coloured clutter takes their small
high-contrast details (letters, logos, holes, bar codes) for parts: on the bolts photos the
renders-only models put most of their false detections there (docs/bolts.md, "What the renders
show"). ``draw_print(i)`` draws design ``i`` of ``PRINT_DESIGNS`` deterministically with Pillow
(no font or image files: Pillow's built-in font), so the Blender worker and the tests get the
same pixels on any machine.

Three kinds, chosen by the design number: ``label`` (bright product label: colour bands, words,
logos, a bar code, a product blob), ``carton`` (brown corrugated board with packing tape, black
handling marks and a white shipping label) and ``bag`` (glossy gradients, large words, highlight
streaks).
"""

from __future__ import annotations

import colorsys
import io
import string
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from synthloop.io_utils import atomic_write_bytes

PRINT_DESIGNS = 48  # designs in the pool; a ``printed`` look draws one of them
PRINT_SIZE = 512    # pixels a side
PRINTS_VERSION = 1  # in every image key that uses prints: change it when the drawing changes
KINDS = ("label", "label", "carton", "bag")  # design i has kind KINDS[i % 4]
_LETTERS = string.ascii_uppercase + string.ascii_lowercase + string.digits + "  -%&"


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def _bright(rng: np.random.Generator) -> tuple[int, int, int]:
    return _rgb(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.55, 1.0))


def _ink(rng: np.random.Generator) -> tuple[int, int, int]:
    if rng.random() < 0.5:
        return (int(rng.integers(0, 40)),) * 3
    return _rgb(rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.2, 0.9))


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=max(6, int(size)))


def _word(rng: np.random.Generator, n: int) -> str:
    return "".join(_LETTERS[int(i)] for i in rng.integers(len(_LETTERS), size=n)).strip() or "A"


def _text_lines(rng, draw: ImageDraw.ImageDraw, box, colour, sizes=(10, 60), lines=(2, 8)):
    """Lines of random words inside ``box`` (x0, y0, x1, y1), each line its own size."""
    x0, y0, x1, y1 = box
    y = y0 + rng.uniform(0, 10)
    for _ in range(int(rng.integers(*lines))):
        size = float(np.exp(rng.uniform(np.log(sizes[0]), np.log(sizes[1]))))
        if y + size > y1:
            break
        x = x0 + rng.uniform(0, max(1.0, (x1 - x0) * 0.3))
        draw.text((x, y), _word(rng, int(rng.integers(3, 16))), fill=colour, font=_font(size))
        y += size * rng.uniform(1.1, 1.6)


def _barcode(rng, draw: ImageDraw.ImageDraw, x: float, y: float, w: float, h: float) -> None:
    draw.rectangle([x, y, x + w, y + h], fill=(245, 245, 245))
    pos = x + 0.08 * w
    while pos < x + 0.92 * w:
        bar = rng.uniform(0.006, 0.03) * w
        draw.rectangle([pos, y + 0.1 * h, pos + bar, y + 0.85 * h], fill=(10, 10, 10))
        pos += bar + rng.uniform(0.006, 0.03) * w


def _logo(rng, draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    """A circle, ring or rounded badge with a letter: the small round shapes a part detector
    most easily mistakes for a washer."""
    colour, ring = _bright(rng), rng.random() < 0.5
    box = [cx - r, cy - r * rng.uniform(0.6, 1.0), cx + r, cy + r * rng.uniform(0.6, 1.0)]
    if ring:
        draw.ellipse(box, outline=colour, width=max(2, int(r * rng.uniform(0.15, 0.45))))
    else:
        draw.ellipse(box, fill=colour)
    if rng.random() < 0.6:
        draw.text((cx - r * 0.35, cy - r * 0.5), _word(rng, 1), fill=_ink(rng),
                  font=_font(r * 1.0))


def _blob(rng, size: int) -> Image.Image:
    """A soft coloured shape standing in for a product photo (noise field under a mask)."""
    grid = rng.random((6, 6)).astype(np.float32)
    field = np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC))
    a, b = np.asarray(_bright(rng), np.float32), np.asarray(_bright(rng), np.float32)
    t = np.clip((field - field.min()) / max(float(np.ptp(field)), 1e-6), 0, 1)[..., None]
    return Image.fromarray((a * (1 - t) + b * t).astype(np.uint8))


def _label(rng: np.random.Generator, n: int) -> Image.Image:
    base = (250, 250, 248) if rng.random() < 0.35 else _bright(rng)
    img = Image.new("RGB", (n, n), base)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 5))):  # colour bands and panels
        if rng.random() < 0.6:
            y = rng.uniform(0, n)
            draw.rectangle([0, y, n, y + rng.uniform(0.04, 0.3) * n], fill=_bright(rng))
        else:
            x, y = rng.uniform(0, 0.7 * n, 2)
            draw.rectangle([x, y, x + rng.uniform(0.15, 0.5) * n, y + rng.uniform(0.1, 0.4) * n],
                           fill=_bright(rng))
    if rng.random() < 0.6:
        s = int(rng.uniform(0.2, 0.45) * n)
        blob = _blob(rng, s)
        mask = Image.new("L", (s, s), 0)
        ImageDraw.Draw(mask).ellipse([0, 0, s, s], fill=255)
        img.paste(blob, (int(rng.uniform(0, n - s)), int(rng.uniform(0, n - s))), mask)
    _text_lines(rng, draw, (0.05 * n, 0.03 * n, 0.95 * n, 0.97 * n), _ink(rng))
    for _ in range(int(rng.integers(0, 4))):
        _logo(rng, draw, rng.uniform(0.1, 0.9) * n, rng.uniform(0.1, 0.9) * n,
              rng.uniform(0.02, 0.09) * n)
    if rng.random() < 0.5:
        _barcode(rng, draw, rng.uniform(0.05, 0.6) * n, rng.uniform(0.05, 0.75) * n,
                 rng.uniform(0.15, 0.3) * n, rng.uniform(0.08, 0.18) * n)
    return img


def _carton(rng: np.random.Generator, n: int) -> Image.Image:
    grid = rng.random((n // 64 + 2, n // 8 + 2)).astype(np.float32)  # corrugation and stains
    field = np.asarray(Image.fromarray(grid, mode="F").resize((n, n), Image.BICUBIC))
    h, s, v = rng.uniform(0.07, 0.1), rng.uniform(0.3, 0.55), rng.uniform(0.45, 0.7)
    base = np.asarray(_rgb(h, s, v), np.float32)
    img = Image.fromarray(np.clip(base * (0.88 + 0.24 * field[..., None]), 0, 255)
                          .astype(np.uint8))
    draw = ImageDraw.Draw(img, "RGBA")
    if rng.random() < 0.8:  # packing tape across the middle, brown or clear
        y, w = rng.uniform(0.3, 0.6) * n, rng.uniform(0.08, 0.16) * n
        tape = (200, 160, 100, 150) if rng.random() < 0.5 else (235, 230, 220, 110)
        draw.rectangle([0, y, n, y + w], fill=tape)
    ink = (int(rng.integers(10, 50)),) * 3
    _text_lines(rng, draw, (0.05 * n, 0.05 * n, 0.6 * n, 0.45 * n), ink, sizes=(12, 70),
                lines=(1, 5))
    for _ in range(int(rng.integers(0, 4))):  # handling marks: arrows, glass, circles
        cx, cy = rng.uniform(0.1, 0.9) * n, rng.uniform(0.5, 0.9) * n
        r = rng.uniform(0.02, 0.06) * n
        if rng.random() < 0.5:
            draw.polygon([(cx, cy - r), (cx - r, cy), (cx + r, cy)], fill=ink)
            draw.rectangle([cx - r / 3, cy, cx + r / 3, cy + r], fill=ink)
        else:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=ink, width=max(2, int(r / 4)))
    if rng.random() < 0.4:  # a hand hole
        x, y = rng.uniform(0.2, 0.6) * n, rng.uniform(0.05, 0.2) * n
        draw.rounded_rectangle([x, y, x + 0.2 * n, y + 0.06 * n], radius=0.03 * n,
                               fill=(25, 20, 15))
    if rng.random() < 0.6:  # a white shipping label with text and a bar code
        x, y = rng.uniform(0.05, 0.55) * n, rng.uniform(0.45, 0.7) * n
        w, hh = rng.uniform(0.25, 0.4) * n, rng.uniform(0.18, 0.28) * n
        draw.rectangle([x, y, x + w, y + hh], fill=(245, 245, 240))
        _text_lines(rng, draw, (x + 4, y + 4, x + w, y + hh * 0.55), (15, 15, 15), sizes=(8, 18))
        _barcode(rng, draw, x + 0.1 * w, y + 0.55 * hh, 0.8 * w, 0.4 * hh)
    return img


def _bag(rng: np.random.Generator, n: int) -> Image.Image:
    a, b = np.asarray(_bright(rng), np.float32), np.asarray(_bright(rng), np.float32)
    t = np.linspace(0, 1, n, dtype=np.float32)[:, None, None]
    if rng.random() < 0.5:
        t = t.transpose(1, 0, 2)
    img = Image.fromarray((a * (1 - t) + b * t).repeat(n, 0 if t.shape[0] == 1 else 1)
                          .reshape(n, n, 3).astype(np.uint8))
    draw = ImageDraw.Draw(img, "RGBA")
    _text_lines(rng, draw, (0.05 * n, 0.1 * n, 0.95 * n, 0.9 * n), _ink(rng), sizes=(30, 110),
                lines=(1, 4))
    for _ in range(int(rng.integers(0, 3))):
        _logo(rng, draw, rng.uniform(0.1, 0.9) * n, rng.uniform(0.1, 0.9) * n,
              rng.uniform(0.04, 0.12) * n)
    for _ in range(int(rng.integers(2, 7))):  # highlights on crumpled foil
        x, w = rng.uniform(0, n), rng.uniform(4, 30)
        draw.polygon([(x, 0), (x + w, 0), (x + w + rng.uniform(-80, 80), n),
                      (x + rng.uniform(-80, 80), n)],
                     fill=(255, 255, 255, int(rng.integers(40, 140))))
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.2)))


_DRAW = {"label": _label, "carton": _carton, "bag": _bag}


def print_kind(design: int) -> str:
    return KINDS[design % len(KINDS)]


def draw_print(design: int, size: int = PRINT_SIZE) -> Image.Image:
    """Design ``design`` (0 .. PRINT_DESIGNS-1) as a ``size`` x ``size`` RGB image; the same
    pixels every call. Raises ValueError outside the pool."""
    if not 0 <= design < PRINT_DESIGNS:
        raise ValueError(f"print design {design} is outside 0..{PRINT_DESIGNS - 1}")
    rng = np.random.default_rng([20261203, design])
    return _DRAW[print_kind(design)](rng, size).convert("RGB")


def contact_sheet(designs: range | list[int] | None = None, cell: int = 160) -> Image.Image:
    """The designs side by side (8 a row), for a look at the pool."""
    designs = list(range(PRINT_DESIGNS) if designs is None else designs)
    cols = 8
    rows = (len(designs) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * cell, rows * cell), (255, 255, 255))
    for k, d in enumerate(designs):
        sheet.paste(draw_print(d).resize((cell - 4, cell - 4), Image.BILINEAR),
                    ((k % cols) * cell + 2, (k // cols) * cell + 2))
    return sheet


def uses_prints(domain, parts) -> bool:
    """Whether the domain or a part may draw a print material (a preset whose texture style is
    ``print``, as ``printed``: ``blender.presets.MATERIALS`` says which)."""
    from synthloop.synthesis.blender.presets import MATERIALS

    pools = [domain.materials, domain.distractor_materials]
    pools += [p.materials for p in parts if p.materials is not None]
    return any(MATERIALS.get(name, {}).get("texture") == "print" for pool in pools for name in pool)


def write_prints(designs, folder: Path) -> list[Path]:
    """Draw ``designs`` into ``folder``/print_NNN.png, atomically. Files drawn by this
    ``PRINTS_VERSION`` (``folder``/VERSION) are kept; those of another version are drawn again."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / "VERSION"
    if not stamp.is_file() or stamp.read_text().strip() != str(PRINTS_VERSION):
        for old in folder.glob("print_*.png"):
            old.unlink()
        atomic_write_bytes(stamp, f"{PRINTS_VERSION}\n".encode())
    out = []
    for d in sorted(designs):
        path = folder / f"print_{d:03d}.png"
        if not path.is_file():
            buf = io.BytesIO()
            draw_print(d).save(buf, format="PNG")
            atomic_write_bytes(path, buf.getvalue())
        out.append(path)
    return out
