"""Import labelled photo sets (Ultralytics YOLO or COCO) as a pipeline's pool or validation set.

``load_yolo`` reads ``images/`` + ``labels/*.txt`` (a line is ``class xc yc w h`` or a polygon
``class x1 y1 x2 y2 ...``, normalised; a polygon becomes its bounding box) with the class names
from ``classes.txt`` (``name`` or ``index name`` a line) or ``data.yaml`` (``names:``).
``load_coco`` reads a COCO json. ``apply_class_map`` renames source classes to the pipeline's
part names and drops the ones mapped to ``null`` (clutter such as bottles); a source class that
is neither mapped nor a part name is an error, so nothing is dropped silently.
``import_dataset`` writes the result (images EXIF-rotated, optionally downscaled) with an
``annotations.json`` into a folder, atomically: a crash leaves no half-imported set.

Every problem is reported as ``<file>[:line]: <what>`` in one ``ImportError_``.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable

import yaml

from synthloop.data.coco import CocoAnnotation, CocoDataset, CocoError, CocoImage, categories_for

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DatasetImportError(ValueError):
    """The dataset to import is malformed; the message lists every problem with its location."""


# --------------------------------------------------------------------------- class names
def read_yolo_class_names(root: Path) -> list[str]:
    """Class names by index from ``classes.txt`` / ``data.yaml`` in ``root`` or its parent."""
    for folder in (root, root.parent):
        txt = folder / "classes.txt"
        if txt.is_file():
            names: dict[int, str] = {}
            for n, line in enumerate(txt.read_text().splitlines(), 1):
                line = line.strip()
                if not line:
                    continue
                head, _, rest = line.partition(" ")
                if head.isdigit() and rest.strip():
                    names[int(head)] = rest.strip()
                else:
                    names[len(names)] = line
            if sorted(names) != list(range(len(names))):
                raise DatasetImportError(f"{txt}: class indices must be 0..N-1, got {sorted(names)}")
            return [names[i] for i in range(len(names))]
        for name in ("data.yaml", "dataset.yaml"):
            path = folder / name
            if path.is_file():
                raw = yaml.safe_load(path.read_text()) or {}
                names_raw = raw.get("names")
                if isinstance(names_raw, dict):
                    return [str(names_raw[i]) for i in sorted(names_raw)]
                if isinstance(names_raw, list):
                    return [str(n) for n in names_raw]
                raise DatasetImportError(f"{path}: no 'names' list or mapping")
    raise DatasetImportError(f"{root}: no classes.txt or data.yaml (here or one folder up) "
                             "gives the class names")


# --------------------------------------------------------------------------------- YOLO
def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) after EXIF rotation, without decoding the pixels."""
    from PIL import Image

    from synthloop.data.images import upright_size

    try:
        with Image.open(path) as im:
            return upright_size(im)
    except Exception as exc:  # PIL raises many types for broken files
        raise DatasetImportError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from None


def _yolo_line_box(values: list[float], width: int, height: int) -> tuple[float, float, float, float]:
    """[x, y, w, h] pixels of one YOLO box or polygon line (class id removed)."""
    if len(values) == 4:
        xc, yc, bw, bh = values
        x1, y1, x2, y2 = xc - bw / 2, yc - bh / 2, xc + bw / 2, yc + bh / 2
    else:
        xs, ys = values[0::2], values[1::2]
        x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
    x1, x2 = max(0.0, x1) * width, min(1.0, x2) * width
    y1, y2 = max(0.0, y1) * height, min(1.0, y2) * height
    return (x1, y1, x2 - x1, y2 - y1)


def load_yolo(root: Path | str) -> CocoDataset:
    """A YOLO folder (``images/`` + ``labels/``) as a COCO dataset in its own class names.

    An image without a label file has no objects. Out-of-range coordinates (> 2 % outside
    0..1), odd polygon coordinates, unknown class indices and label files without an image are
    errors; all of them are listed.
    """
    root = Path(root)
    images_dir, labels_dir = root / "images", root / "labels"
    if not images_dir.is_dir():
        raise DatasetImportError(f"{root}: no images/ folder (expected YOLO layout images/ + labels/)")
    names = read_yolo_class_names(root)
    problems: list[str] = []
    files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetImportError(f"{images_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    images: list[CocoImage] = []
    anns: list[CocoAnnotation] = []
    stems = {p.stem for p in files}
    if labels_dir.is_dir():
        orphans = sorted(p.name for p in labels_dir.glob("*.txt") if p.stem not in stems)
        if orphans:
            problems.append(f"{labels_dir}: label files without an image: {orphans[:5]}")
    for image_id, path in enumerate(files, 1):
        try:
            width, height = _image_size(path)
        except DatasetImportError as exc:
            problems.append(str(exc))
            continue
        images.append(CocoImage(image_id, path.name, width, height))
        label = labels_dir / f"{path.stem}.txt"
        if not label.is_file():
            continue
        for n, line in enumerate(label.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            where = f"{label}:{n}"
            try:
                cls, values = int(parts[0]), [float(v) for v in parts[1:]]
            except ValueError:
                problems.append(f"{where}: not numbers: {line[:60]!r}")
                continue
            if not 0 <= cls < len(names):
                problems.append(f"{where}: class {cls} is not in the {len(names)} class names")
                continue
            if len(values) != 4 and (len(values) < 6 or len(values) % 2):
                problems.append(f"{where}: {len(values)} coordinates (need 4 for a box, or an "
                                "even number >= 6 for a polygon)")
                continue
            if any(v < -0.02 or v > 1.02 for v in values):
                problems.append(f"{where}: coordinates outside 0..1 (YOLO files are normalised)")
                continue
            box = _yolo_line_box(values, width, height)
            if box[2] <= 0 or box[3] <= 0:
                problems.append(f"{where}: empty box")
                continue
            anns.append(CocoAnnotation(len(anns) + 1, image_id, cls + 1, box, box[2] * box[3]))
    if problems:
        more = f" (+{len(problems) - 20} more)" if len(problems) > 20 else ""
        raise DatasetImportError(f"{root}: " + "; ".join(problems[:20]) + more)
    return CocoDataset(images, anns, categories_for(names), images_dir)


def load_coco(path: Path | str, image_root: Path | str | None = None) -> CocoDataset:
    try:
        return CocoDataset.load(path, image_root)
    except CocoError as exc:
        raise DatasetImportError(str(exc)) from None


# ----------------------------------------------------------------------------- class map
def apply_class_map(ds: CocoDataset, class_names: list[str], class_map: dict[str, str | None],
                    *, source: str = "<dataset>") -> CocoDataset:
    """Relabel ``ds`` into ``class_names`` (ids 1..C in that order).

    ``class_map`` maps a source class name to a target name, or to None to drop its boxes.
    Unmapped source names must equal a target name. Errors list every unknown name.
    """
    problems = [f"class_map target {t!r} is not a part name ({class_names})"
                for t in class_map.values() if t is not None and t not in class_names]
    problems += [f"class_map source {s!r} is not a class of the dataset ({ds.class_names})"
                 for s in class_map if s not in ds.class_names]
    target_id = {n: i + 1 for i, n in enumerate(class_names)}
    remap: dict[int, int | None] = {}
    for c in ds.categories:
        name = c["name"]
        target = class_map[name] if name in class_map else name
        if target is not None and target not in target_id:
            problems.append(f"class {name!r} is neither a part name nor in class_map "
                            f"(map it to a part, or to null to drop it)")
            continue
        remap[c["id"]] = None if target is None else target_id[target]
    if problems:
        raise DatasetImportError(f"{source}: " + "; ".join(problems))
    anns = []
    for a in ds.annotations:
        new = remap[a.category_id]
        if new is not None:
            anns.append(replace(a, id=len(anns) + 1, category_id=new))
    return CocoDataset(list(ds.images), anns, categories_for(class_names), ds.image_root)


# ---------------------------------------------------------------------------- writing
def _scaled(ds: CocoDataset, max_side: int | None) -> dict[int, float]:
    if not max_side:
        return {im.id: 1.0 for im in ds.images}
    return {im.id: min(1.0, max_side / max(im.width, im.height)) for im in ds.images}


def import_dataset(ds: CocoDataset, dest: Path | str, *, max_side: int | None = None,
                   progress: bool = True, jpeg_quality: int = 95) -> CocoDataset:
    """Copy ``ds`` into ``dest/images`` + ``dest/annotations.json`` and return the written set.

    Images are EXIF-rotated and converted to 8-bit RGB (16-bit, CMYK, grayscale are accepted);
    ``max_side`` downscales larger images (boxes scaled with them). Written into a temporary
    sibling folder and renamed into place, so ``dest`` is complete or absent.
    """
    from PIL import Image
    from tqdm import tqdm

    from synthloop.data.images import to_rgb

    dest = Path(dest)
    if dest.exists():
        raise DatasetImportError(f"{dest}: already exists; remove it to import again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        (tmp / "images").mkdir()
        scale = _scaled(ds, max_side)
        images, problems = [], []
        for im in tqdm(ds.images, desc=f"import {dest.name}", unit="img", disable=not progress):
            src = ds.image_path(im)
            try:
                with Image.open(src) as pil:
                    pil = to_rgb(pil)  # upright, 8-bit RGB (16-bit keeps its top 8 bits)
                    if pil.size != (im.width, im.height):
                        problems.append(f"{src}: {pil.size[0]}x{pil.size[1]} on disk, "
                                        f"{im.width}x{im.height} in the annotations")
                        continue
                    s = scale[im.id]
                    size = (max(1, round(im.width * s)), max(1, round(im.height * s)))
                    if s != 1.0:
                        pil = pil.resize(size, Image.BILINEAR)
                    name = Path(im.file_name).with_suffix(".jpg").name
                    pil.save(tmp / "images" / name, quality=jpeg_quality)
            except Exception as exc:
                problems.append(f"{src}: not a readable image ({exc.__class__.__name__}: {exc})")
                continue
            images.append(CocoImage(im.id, name, size[0], size[1]))
        if problems:
            raise DatasetImportError("; ".join(problems[:20]))
        names = [im.file_name for im in images]
        if len(set(names)) != len(names):
            raise DatasetImportError(f"{ds.image_root}: two images share a file name once "
                                     "written as .jpg")
        anns = []
        for a in ds.annotations:
            s = scale[a.image_id]
            box = tuple(v * s for v in a.bbox)
            anns.append(replace(a, bbox=box, area=box[2] * box[3], segmentation=None))
        out = CocoDataset(images, anns, [dict(c) for c in ds.categories], tmp / "images")
        out.validate(source=str(dest))
        out.save(tmp / "annotations.json")
        tmp.replace(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out.with_image_root(dest / "images")


def load_source(fmt: str, path: Path, *, annotations: Path | None = None) -> CocoDataset:
    if fmt == "yolo":
        return load_yolo(path)
    if fmt == "coco":
        ann = annotations or (path / "annotations.json" if path.is_dir() else path)
        root = path / "images" if path.is_dir() else None
        return load_coco(ann, root)
    raise DatasetImportError(f"unknown dataset format {fmt!r} (yolo, coco)")


def class_counts(ds: CocoDataset) -> dict[str, int]:
    names = {c["id"]: c["name"] for c in ds.categories}
    counts = {n: 0 for n in names.values()}
    for a in ds.annotations:
        counts[names[a.category_id]] += 1
    return counts


def box_sides(ds: CocoDataset, category: str | None = None) -> list[float]:
    """sqrt(w * h) of every box (of one class), for picking input sizes and anchors."""
    ids: Iterable[int] = [c["id"] for c in ds.categories if category in (None, c["name"])]
    wanted = set(ids)
    return [float((a.bbox[2] * a.bbox[3]) ** 0.5) for a in ds.annotations if a.category_id in wanted]


def describe(ds: CocoDataset) -> dict[str, Any]:
    import numpy as np

    sides = box_sides(ds)
    return {"images": len(ds.images), "boxes": len(ds.annotations), "classes": class_counts(ds),
            "box_side_px_median": float(np.median(sides)) if sides else 0.0}
