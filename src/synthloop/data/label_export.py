"""Export a query batch for people to label, with the model's detections as pre-annotations.

Two tools, one manifest:

* **Label Studio**: ``tasks.json`` (the task format ``label-studio-sdk`` and the UI's "Import"
  take: one task per image, its pre-annotations as ``predictions``) and ``label_config.xml`` (an
  ``<Image>`` + ``<RectangleLabels>`` interface with one label per class).
* **CVAT**: ``annotations/instances_default.json`` in COCO 1.0 (what CVAT's "Upload annotations
  -> COCO 1.0" reads; images are matched by file name), the same zipped, and ``images/``.

``manifest.json`` records what was exported (image ids, sizes, file names, pre-annotations,
model and pool versions): the strict import validates the returned file against it, and the
pre-annotation savings are measured against it, never against what the tool sends back.

Boxes: ``Preannotation.bbox`` is ``[x1, y1, x2, y2]`` pixels; COCO files hold ``[x, y, w, h]``
pixels; Label Studio holds percentages of the image size (x, y, width, height).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import quoteattr

from synthloop.data.coco import CocoImage
from synthloop.io_utils import atomic_write_bytes, atomic_write_text, copy_if_missing

Tool = Literal["labelstudio", "cvat"]
TOOLS: tuple[str, ...] = ("labelstudio", "cvat")
FROM_NAME, TO_NAME = "label", "image"  # names of the Label Studio control and object tags
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Preannotation:
    """One model detection offered to the annotator: ``bbox`` [x1, y1, x2, y2] pixels."""

    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]
    score: float


@dataclass(frozen=True)
class ExportManifest:
    """What went out for labelling: the single source of truth for the import."""

    cycle: int
    tool: str
    model_version: str
    pool_md5: str
    class_names: tuple[str, ...]
    images: tuple[CocoImage, ...]
    preannotations: tuple[Preannotation, ...] = ()
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def image_by_id(self) -> dict[int, CocoImage]:
        return {im.id: im for im in self.images}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["images"] = [{"id": im.id, "file_name": im.file_name, "width": im.width,
                        "height": im.height} for im in self.images]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExportManifest":
        return cls(cycle=int(d["cycle"]), tool=str(d["tool"]), model_version=str(d["model_version"]),
                   pool_md5=str(d["pool_md5"]), class_names=tuple(d["class_names"]),
                   images=tuple(CocoImage(int(i["id"]), str(i["file_name"]), int(i["width"]),
                                          int(i["height"])) for i in d["images"]),
                   preannotations=tuple(Preannotation(int(p["image_id"]), int(p["category_id"]),
                                                      tuple(float(v) for v in p["bbox"]),
                                                      float(p["score"]))
                                        for p in d.get("preannotations", [])),
                   created=str(d.get("created", "")), extra=dict(d.get("extra", {})))

    def save(self, folder: Path) -> Path:
        return atomic_write_text(Path(folder) / MANIFEST, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, folder: Path) -> "ExportManifest":
        path = Path(folder) / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"no export manifest at {path}: export the batch first "
                                    "(`synthloop label export --cycle N`)")
        return cls.from_dict(json.loads(path.read_text()))


# ----------------------------------------------------------------------------- Label Studio
def labelstudio_label_config(class_names: list[str] | tuple[str, ...]) -> str:
    """The labelling interface: zoomable image, one rectangle label per class."""
    labels = "\n".join(f"    <Label value={quoteattr(n)}/>" for n in class_names)
    return (f'<View>\n  <Image name="{TO_NAME}" value="$image" zoom="true" zoomControl="true"/>\n'
            f'  <RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}" strokeWidth="2">\n'
            f"{labels}\n  </RectangleLabels>\n</View>\n")


def to_labelstudio_value(bbox_xyxy, width: int, height: int) -> dict[str, float]:
    """[x1, y1, x2, y2] pixels -> Label Studio's percentages ``{x, y, width, height}``."""
    x1, y1, x2, y2 = (float(v) for v in bbox_xyxy)
    return {"x": 100.0 * x1 / width, "y": 100.0 * y1 / height,
            "width": 100.0 * (x2 - x1) / width, "height": 100.0 * (y2 - y1) / height,
            "rotation": 0}


def labelstudio_tasks(manifest: ExportManifest, image_url: str) -> list[dict[str, Any]]:
    """One task per image; ``image_url`` is a template with ``{file_name}`` (and ``{id}``).

    ``data.synthloop_image_id`` carries the pool image id through Label Studio and back.
    """
    by_image: dict[int, list[Preannotation]] = {}
    for p in manifest.preannotations:
        by_image.setdefault(p.image_id, []).append(p)
    tasks = []
    for im in manifest.images:
        result = []
        for n, p in enumerate(by_image.get(im.id, [])):
            result.append({"id": f"m{im.id}-{n}", "from_name": FROM_NAME, "to_name": TO_NAME,
                           "type": "rectanglelabels", "original_width": im.width,
                           "original_height": im.height, "image_rotation": 0, "score": p.score,
                           "value": {**to_labelstudio_value(p.bbox, im.width, im.height),
                                     "rectanglelabels": [manifest.class_names[p.category_id - 1]]}})
        scores = [r["score"] for r in result]
        tasks.append({"data": {"image": image_url.format(file_name=im.file_name, id=im.id),
                               "synthloop_image_id": im.id, "file_name": im.file_name,
                               "cycle": manifest.cycle},
                      "predictions": [{"model_version": f"v{manifest.model_version}",
                                       "score": min(scores) if scores else 0.0,
                                       "result": result}]})
    return tasks


# ------------------------------------------------------------------------------------ CVAT
def cvat_coco(manifest: ExportManifest) -> dict[str, Any]:
    """COCO 1.0 as CVAT reads it: pre-annotations as annotations, boxes [x, y, w, h] pixels."""
    cats = [{"id": i + 1, "name": n, "supercategory": ""} for i, n in enumerate(manifest.class_names)]
    images = [{"id": im.id, "file_name": im.file_name, "width": im.width, "height": im.height}
              for im in manifest.images]
    anns = []
    for n, p in enumerate(manifest.preannotations, start=1):
        x1, y1, x2, y2 = p.bbox
        anns.append({"id": n, "image_id": p.image_id, "category_id": p.category_id,
                     "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                     "area": round((x2 - x1) * (y2 - y1), 2), "iscrowd": 0, "segmentation": [],
                     "attributes": {"occluded": False, "score": round(p.score, 4)}})
    return {"info": {"description": f"synthloop cycle {manifest.cycle} query batch, "
                                    f"pre-annotated by model v{manifest.model_version}"},
            "licenses": [], "categories": cats, "images": images, "annotations": anns}


# ---------------------------------------------------------------------------------- writing
def write_export(manifest: ExportManifest, out_dir: Path, *, image_root: Path,
                 image_url: str = "/data/local-files/?d=pool/images/{file_name}") -> Path:
    """Write the tool's files and the manifest into ``out_dir``; return the main file.

    The manifest is written last: an export interrupted half-way is redone in full.
    """
    out_dir = Path(out_dir)
    if manifest.tool == "labelstudio":
        folder = out_dir / "labelstudio"
        main = atomic_write_text(folder / "tasks.json",
                                 json.dumps(labelstudio_tasks(manifest, image_url), indent=1))
        atomic_write_text(folder / "label_config.xml", labelstudio_label_config(manifest.class_names))
    elif manifest.tool == "cvat":
        folder = out_dir / "cvat"
        coco = json.dumps(cvat_coco(manifest), indent=1)
        main = atomic_write_text(folder / "annotations" / "instances_default.json", coco)
        import io

        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("annotations/instances_default.json", coco)
        atomic_write_bytes(folder / "cvat_preannotations_coco.zip", buf.getvalue())
        images = folder / "images"
        images.mkdir(parents=True, exist_ok=True)
        for im in manifest.images:  # each atomically: a crash leaves no half-copied image
            copy_if_missing(Path(image_root) / im.file_name, images / im.file_name)
    else:
        raise ValueError(f"unknown labelling tool {manifest.tool!r}; known: {', '.join(TOOLS)}")
    manifest.save(out_dir)
    return main
