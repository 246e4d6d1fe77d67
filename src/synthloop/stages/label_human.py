"""The human oracle: export a query batch with pre-annotations, import the answers strictly.

The round trip of one cycle (``labeling.oracle`` is ``labelstudio`` or ``cvat``)::

    synthloop cycle ...           -> score, query, then the label stage exports the batch to
                                     <workspace>/labeling/cycle_<t>/ and stops: LabelsPending
    (people label it in Label Studio / CVAT and export their work)
    synthloop label import --cycle t FILE   -> strict validation; answers kept in state/
    synthloop cycle ...           -> the label stage adds the answers to data/labeled, versions
                                     them with DVC and logs what pre-annotation saved; go on

Skipped and not-yet-labelled images are not added: they stay in the pool for later cycles.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from synthloop import tracking
from synthloop.artifacts import QueryBatch
from synthloop.config import PipelineConfig
from synthloop.data.coco import CocoDataset, CocoImage, categories_for
from synthloop.data.label_export import TOOLS, ExportManifest, Preannotation, write_export
from synthloop.data.label_import import load_import, preannotation_savings
from synthloop.stages.label_routing import SIMULATED, labeled_ids, restrict
from synthloop.stages.render import ANNOTATIONS
from synthloop.stages.workspace import Workspace, read_record, write_record

log = logging.getLogger(__name__)
IMPORT_RECORD, ANSWERS = "label_import.json", "label_answers.json"


class LabelsPending(RuntimeError):
    """The batch waits for people; the message says where it is and what to run next."""


def export_folder(cfg: PipelineConfig, cycle: int) -> Path:
    root = cfg.labeling.export_dir or (Workspace.of(cfg).root / "labeling")
    return Path(root).resolve() / f"cycle_{cycle}"


def _pool(cfg: PipelineConfig) -> CocoDataset:
    return CocoDataset.load(Workspace.of(cfg).dataset_dir("pool") / ANNOTATIONS)


def predict_preannotations(cfg: PipelineConfig, model_version: str, images: list[CocoImage],
                           image_root: Path) -> list[Preannotation]:
    """The registry version's detections with score >= ``labeling.preannotation_min_score``."""
    from mlflow import MlflowClient

    from synthloop.detection import load_checkpoint, load_image, predict
    from synthloop.detection.device import resolve_device

    tracking.setup(cfg)
    mv = MlflowClient().get_model_version(cfg.registered_model_name, str(model_version))
    with tempfile.TemporaryDirectory() as tmp:
        model = load_checkpoint(tracking.download_checkpoint(mv.source, Path(tmp)),
                                device=resolve_device(cfg.runtime.device))
    out: list[Preannotation] = []
    for im in images:
        res = predict(model, [load_image(Path(image_root) / im.file_name)])[0]
        for box, label, score in zip(res["boxes"].tolist(), res["labels"].tolist(),
                                     res["scores"].tolist()):
            if score >= cfg.labeling.preannotation_min_score:
                out.append(Preannotation(im.id, int(label), tuple(float(v) for v in box), float(score)))
    return out


def human_tool(cfg: PipelineConfig) -> str:
    """The labelling tool people use: ``labeling.oracle``, or its fallback for a mixed pool."""
    return cfg.labeling.fallback_oracle or cfg.labeling.oracle


def people_part(batch: QueryBatch) -> QueryBatch:
    """In a mixed batch (some images simulated, some for people): the images for people.
    Any other batch as it is (``synthloop label export --tool`` may show it to people)."""
    people = [i for name, ids in batch.routes.items() if name != SIMULATED for i in ids]
    if not people or SIMULATED not in batch.routes:
        return batch
    return restrict(batch, people)


def export_batch(cfg: PipelineConfig, cycle: int, batch: QueryBatch | None = None, *,
                 tool: str | None = None, force: bool = False) -> ExportManifest:
    """Write the cycle's unlabelled query images for ``tool`` (default: ``human_tool(cfg)``).

    Idempotent: an existing export for the same tool is returned as it is (``force`` redoes it).
    """
    tool = tool or human_tool(cfg)
    if tool not in TOOLS:
        raise ValueError(f"export for which tool? got {tool!r}; known: {', '.join(TOOLS)} "
                         "(set labeling.oracle or labeling.fallback_oracle, or pass --tool)")
    folder = export_folder(cfg, cycle)
    if not force and (folder / "manifest.json").is_file():
        manifest = ExportManifest.load(folder)
        if manifest.tool == tool:
            return manifest
    if batch is None:
        rec = read_record(Workspace.of(cfg).cycle_dir(cycle) / "query.json")
        if rec is None:
            raise FileNotFoundError(f"cycle {cycle} has no query batch yet: run `synthloop cycle` "
                                    "(it stops at the label stage and exports the batch)")
        batch = people_part(QueryBatch.from_dict(rec))
    have = labeled_ids(cfg)
    pool = _pool(cfg)
    images = pool.subset([i for i in batch.image_ids if i not in have]).images
    pre = predict_preannotations(cfg, batch.model_version, images, pool.image_root)
    manifest = ExportManifest(cycle=cycle, tool=tool, model_version=str(batch.model_version),
                              pool_md5=batch.pool_md5, class_names=tuple(cfg.class_names),
                              images=tuple(images), preannotations=tuple(pre),
                              created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    main = write_export(manifest, folder, image_root=pool.image_root, image_url=cfg.labeling.image_url)
    log.info("label export (cycle %d, %s): %d images, %d pre-annotations -> %s", cycle, tool,
             len(images), len(pre), main)
    return manifest


def import_answers(cfg: PipelineConfig, cycle: int, path: Path | str, *,
                   tool: str = "auto") -> dict[str, Any]:
    """Validate an answer file against the cycle's export and keep it for the label stage.

    All or nothing: a rejected file (``LabelImportError``) writes nothing. Importing again
    before the cycle goes on replaces the earlier import (e.g. after more tasks were done).
    """
    ws = Workspace.of(cfg)
    state = ws.cycle_dir(cycle)
    if read_record(state / "label.json"):
        raise ValueError(f"cycle {cycle} is already labelled and versioned; answers for later "
                         "cycles go to their own cycle")
    folder = export_folder(cfg, cycle)
    manifest = ExportManifest.load(folder)
    path = Path(path)
    batch = load_import(path, manifest, tool=tool)
    savings = preannotation_savings(manifest.preannotations, batch, iou=cfg.labeling.accept_iou)
    from synthloop.stages.label_cost import human_cost

    cost = human_cost(cfg, manifest, batch, path)
    answers = batch.to_coco(manifest, _pool(cfg).image_root)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    kept = folder / "returned" / f"{digest[:12]}-{path.name}"
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, kept)
    answers.save(state / ANSWERS)
    record = {"cycle": cycle, "tool": batch.tool, "source": str(kept), "sha256": digest,
              "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "returned": list(batch.returned), "skipped": list(batch.skipped),
              "pending": list(batch.pending), "boxes": len(answers.annotations),
              "savings": savings, "cost": cost.to_dict()}
    write_record(state / IMPORT_RECORD, record)  # written last: the import's commit point
    log.info("label import (cycle %d): %d images back (%d boxes), %d skipped, %d pending; %s of "
             "the boxes were pre-annotations accepted unchanged", cycle, len(batch.returned),
             len(answers.annotations), len(batch.skipped), len(batch.pending),
             "n/a" if savings["accepted_share"] is None else f"{savings['accepted_share']:.0%}")
    return record


def human_answers(cfg: PipelineConfig, cycle: int, batch: QueryBatch
                  ) -> tuple[CocoDataset, dict[str, Any]]:
    """The imported answers of ``cycle``; export the batch and raise ``LabelsPending`` if none."""
    state = Workspace.of(cfg).cycle_dir(cycle)
    rec = read_record(state / IMPORT_RECORD)
    if rec is None:
        manifest = export_batch(cfg, cycle, batch)
        folder = export_folder(cfg, cycle)
        if not manifest.images:  # every chosen image was labelled before (scope U+L): no work
            empty = CocoDataset([], [], categories_for(list(cfg.class_names)), _pool(cfg).image_root)
            return empty, {"tool": manifest.tool, "skipped": [], "pending": [], "boxes": 0,
                           "savings": None, "sha256": None, "cost": None}
        raise LabelsPending(
            f"cycle {cycle}: {len(manifest.images)} images wait for labels in {folder} "
            f"({manifest.tool}). Label them, export the results, then run "
            f"`synthloop label import --cycle {cycle} FILE` and rerun `synthloop cycle` to go on.")
    if not rec["returned"] and rec["pending"]:
        raise LabelsPending(f"cycle {cycle}: the imported file ({rec['source']}) holds no finished "
                            f"image yet ({len(rec['pending'])} pending); import again when some are done")
    answers = CocoDataset.load(state / ANSWERS, _pool(cfg).image_root)
    log_label_metrics(cfg, cycle, rec)
    summary = {k: rec[k] for k in ("tool", "skipped", "pending", "boxes", "savings", "sha256")}
    summary["cost"] = rec.get("cost")  # None: imported before costs were recorded
    return answers, summary


def log_label_metrics(cfg: PipelineConfig, cycle: int, rec: dict[str, Any]) -> None:
    """What the cycle's labels cost and what pre-annotation saved, on the cycle's MLflow run."""
    run = read_record(Workspace.of(cfg).cycle_dir(cycle) / "run.json")
    if not run:
        return
    from mlflow import MlflowClient

    tracking.setup(cfg)
    s = rec["savings"]
    metrics = {"label_images_returned": len(rec["returned"]), "label_images_skipped": len(rec["skipped"]),
               "label_images_pending": len(rec["pending"]), "label_boxes": rec["boxes"],
               "label_boxes_accepted": s["boxes_accepted"],
               "label_boxes_drawn_or_moved": s["boxes_drawn_or_moved"],
               "label_preannotations_rejected": s["preannotations_rejected"]}
    if s["accepted_share"] is not None:
        metrics["label_preannotation_accepted_share"] = s["accepted_share"]
    client = MlflowClient()
    for key, value in metrics.items():
        client.log_metric(run["run_id"], key, float(value), step=cycle)
    client.set_tag(run["run_id"], "label.tool", rec["tool"])


def status(cfg: PipelineConfig) -> list[dict[str, Any]]:
    """One row per cycle that got a query batch: waiting, returned, committed, and the cost."""
    ws = Workspace.of(cfg)
    rows = []
    cycles = sorted(int(p.name.split("_")[1]) for p in (ws.root / "state").glob("cycle_*")
                    if (p / "query.json").is_file()) if (ws.root / "state").is_dir() else []
    for cycle in cycles:
        state = ws.cycle_dir(cycle)
        query = read_record(state / "query.json") or {}
        done = read_record(state / "label.json")
        imported = read_record(state / IMPORT_RECORD)
        folder = export_folder(cfg, cycle)
        manifest = ExportManifest.load(folder) if (folder / "manifest.json").is_file() else None
        row: dict[str, Any] = {"cycle": cycle, "queried": len(query.get("image_ids", [])),
                               "tool": manifest.tool if manifest else ("simulated" if done else "-"),
                               "exported": len(manifest.images) if manifest else 0,
                               "returned": None, "skipped": None, "pending": None,
                               "labelled": len(done["new"]) if done else 0, "boxes": None,
                               "accepted_share": None, "state": "committed" if done else "queried",
                               "minutes": None, "cost_source": None}
        cost = (done or {}).get("cost") or (imported or {}).get("cost")
        if cost:  # annotator minutes: lead times or the cost model (stages/label_cost.py)
            row.update(minutes=cost["minutes"], cost_source=cost["source"])
        if imported:
            s = imported["savings"]
            row.update(returned=len(imported["returned"]), skipped=len(imported["skipped"]),
                       pending=len(imported["pending"]), boxes=imported["boxes"],
                       accepted_share=s["accepted_share"], drawn=s["boxes_drawn_or_moved"])
            if not done:
                row["state"] = "imported (rerun `synthloop cycle`)"
        elif manifest and not done:
            row["state"] = f"waiting for labels in {folder}"
        rows.append(row)
    return rows


def format_status(rows: list[dict[str, Any]]) -> str:
    """The table `synthloop label status` prints. Cost = images labelled and annotator minutes;
    boxes drawn or moved by hand are the boxes not accepted unchanged from the pre-annotations."""
    if not rows:
        return "no query batch yet: run `synthloop cycle` first"

    def cell(v: Any, fmt: str = "{}") -> str:
        return "-" if v is None else fmt.format(v)

    head = (f"{'cycle':>5}  {'tool':<11}  {'queried':>7}  {'exported':>8}  {'back':>4}  "
            f"{'skipped':>7}  {'pending':>7}  {'labelled':>8}  {'boxes':>5}  {'drawn':>5}  "
            f"{'kept':>5}  {'minutes':>7}  state")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['cycle']:>5}  {r['tool']:<11}  {r['queried']:>7}  {r['exported']:>8}  "
                     f"{cell(r['returned']):>4}  {cell(r['skipped']):>7}  {cell(r['pending']):>7}  "
                     f"{r['labelled']:>8}  {cell(r['boxes']):>5}  {cell(r.get('drawn')):>5}  "
                     f"{cell(r['accepted_share'], '{:.0%}'):>5}  "
                     f"{cell(r.get('minutes'), '{:.1f}'):>7}  {r['state']}")
    lines.append("kept = share of returned boxes that were pre-annotations accepted unchanged "
                 "(IoU >= labeling.accept_iou); drawn = boxes drawn or moved by hand; minutes = "
                 "annotator minutes (Label Studio lead times where exported, else the "
                 "labeling.cost model)")
    return "\n".join(lines)
