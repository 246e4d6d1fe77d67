"""A contact sheet: rendered previews above sample photos, boxes drawn, as one PNG."""

from __future__ import annotations

from pathlib import Path

from synthloop.data.coco import CocoDataset


def write_contact_sheet(previews: CocoDataset, photos: CocoDataset, path: Path, *,
                        n: int = 8, thumb: int = 240) -> Path:
    """A PNG: a row of rendered previews over a row of sample photos, boxes drawn in per-class
    colours, class names in a legend line. Returns ``path``."""
    from PIL import Image, ImageDraw

    colours = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
               (70, 240, 240), (240, 50, 230), (210, 245, 60)]
    names = previews.class_names

    def tile(ds: CocoDataset, im) -> Image.Image:
        with Image.open(ds.image_path(im)) as pil:
            pil = pil.convert("RGB")
        s = thumb / max(pil.size)
        pil = pil.resize((max(1, round(pil.width * s)), max(1, round(pil.height * s))))
        draw = ImageDraw.Draw(pil)
        for a in ds.annotations_by_image().get(im.id, []):
            x, y, w, h = (v * s for v in a.bbox)
            draw.rectangle([x, y, x + w, y + h], outline=colours[(a.category_id - 1) % 8], width=2)
        canvas = Image.new("RGB", (thumb, thumb), (32, 32, 32))
        canvas.paste(pil, ((thumb - pil.width) // 2, (thumb - pil.height) // 2))
        return canvas

    rows = [("renders", previews, previews.images[:n]),
            ("photos", photos, photos.images[:n])]
    cols = max(1, max(len(r[2]) for r in rows))
    label_h = 18
    sheet = Image.new("RGB", (cols * thumb, len(rows) * (thumb + label_h) + label_h), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (title, ds, images) in enumerate(rows):
        y0 = r * (thumb + label_h)
        draw.text((4, y0 + 3), f"{title} ({len(ds.images)} images, {len(ds.annotations)} boxes)",
                  fill="black")
        for c, im in enumerate(images):
            sheet.paste(tile(ds, im), (c * thumb, y0 + label_h))
    x = 4
    for i, name in enumerate(names):
        draw.text((x, sheet.height - label_h + 3), name, fill=colours[i % 8])
        x += 8 * len(name) + 16
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
