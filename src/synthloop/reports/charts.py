"""The pictures of the cycle report, as text a page can inline: the AP curve as SVG, a query
image with its boxes as a JPEG data URI. Pure: bytes and numbers in, strings out."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

# colour-blind-safe (Okabe-Ito), one a class by category id
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442",
           "#000000")
SERIES = {"AP": "#0072B2", "AP50": "#E69F00"}


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def class_colour(category_id: int) -> str:
    return PALETTE[int(category_id) % len(PALETTE)]


def draw_boxes(image: bytes, boxes: np.ndarray, labels: Sequence[int],
               names: Mapping[int, str], *, size: int = 320, max_named: int = 8) -> bytes:
    """``image`` (encoded, any PIL format) scaled so its longer side is ``size`` px, with
    ``boxes`` ((N, 4) float, [x1, y1, x2, y2] pixels of the original image) outlined in the
    colour of their ``labels`` (category ids: ``class_colour``), named when there are at most
    ``max_named`` (more names would hide the image); returns a JPEG."""
    from PIL import Image, ImageDraw

    with Image.open(io.BytesIO(image)) as im:
        im = im.convert("RGB")
    scale = size / max(im.size)
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), resample)
    draw = ImageDraw.Draw(im)
    named = len(labels) <= max_named
    for box, label in zip(np.asarray(boxes, dtype=float).reshape(-1, 4) * scale, labels):
        colour = class_colour(label)
        draw.rectangle([float(v) for v in box], outline=colour, width=2)
        if named:
            draw.text((float(box[0]) + 2, float(box[1]) + 1), names.get(int(label), str(label)),
                      fill=colour)
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=82)
    return out.getvalue()


@dataclass(frozen=True)
class CurvePoint:
    """One model on the curve: ``values`` metric -> value, ``intervals`` metric -> (lo, hi)."""

    cycle: int
    values: Mapping[str, float]
    intervals: Mapping[str, tuple[float, float]]
    promoted: bool


def _axis(value: float) -> tuple[float, float]:
    """(top, tick step) of a 0-based axis showing ``value``: steps of 0.1 up to 0.6, else 0.2."""
    step = 0.1 if value <= 0.6 + 1e-9 else 0.2
    return max(step, step * float(np.ceil(round(value / step, 6)))), step


def curve_svg(points: Sequence[CurvePoint], *, metrics: Sequence[str] = ("AP", "AP50"),
              width: int = 640, height: int = 260) -> str:
    """AP and AP50 by cycle with their bootstrap intervals as error bars; a filled marker is a
    promoted model, a hollow one a model the gate kept out. Inline SVG (no script, no fonts)."""
    left, right, top, bottom = 48, 110, 16, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    cycles = [p.cycle for p in points]
    highs = [v for p in points for m in metrics
             for v in (p.values.get(m, 0.0), *p.intervals.get(m, ()))]
    y_top, step = _axis(max(highs, default=0.1))
    span = max(1, max(cycles, default=0) - min(cycles, default=0))

    def x(c: int) -> float:
        return left + plot_w * ((c - min(cycles)) / span if len(cycles) > 1 else 0.5)

    def y(v: float) -> float:
        return top + plot_h * (1.0 - min(max(v, 0.0), y_top) / y_top)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="AP and AP50 by cycle">',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" '
             'stroke="#ccc"/>']
    for k in range(round(y_top / step) + 1):
        v = step * k
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                     f'stroke="#e4e4e4"/><text x="{left - 6}" y="{y(v) + 4:.1f}" '
                     f'text-anchor="end" font-size="11">{v:.2f}</text>')
    for c in cycles:
        parts.append(f'<text x="{x(c):.1f}" y="{top + plot_h + 16}" text-anchor="middle" '
                     f'font-size="11">{c}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle" '
                 'font-size="12">cycle (0 = pretrained on renders)</text>')
    for j, m in enumerate(metrics):
        colour = SERIES.get(m, PALETTE[j % len(PALETTE)])
        line = " ".join(f"{x(p.cycle):.1f},{y(p.values[m]):.1f}" for p in points
                        if m in p.values)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" '
                     'stroke-width="2"/>')
        for p in points:
            if m not in p.values:
                continue
            if m in p.intervals:
                lo, hi = p.intervals[m]
                parts.append(f'<line x1="{x(p.cycle):.1f}" x2="{x(p.cycle):.1f}" '
                             f'y1="{y(lo):.1f}" y2="{y(hi):.1f}" stroke="{colour}"/>')
            fill = colour if p.promoted else "#fff"
            parts.append(f'<circle cx="{x(p.cycle):.1f}" cy="{y(p.values[m]):.1f}" r="4" '
                         f'fill="{fill}" stroke="{colour}" stroke-width="2"/>')
        ly = top + 14 + 18 * j
        parts.append(f'<line x1="{left + plot_w + 10}" x2="{left + plot_w + 30}" y1="{ly - 4}" '
                     f'y2="{ly - 4}" stroke="{colour}" stroke-width="2"/><text '
                     f'x="{left + plot_w + 34}" y="{ly}" font-size="12">{html.escape(m)}</text>')
    parts.append(f'<text x="{left + plot_w + 10}" y="{top + 14 + 18 * len(metrics) + 6}" '
                 'font-size="10" fill="#555">filled: promoted</text></svg>')
    return "".join(parts)
