"""Stage: a changed CAD file retrains itself (the answer to ``synthloop.cad.changed``).

    invalidate  the renders that SHOW a changed part (the scene plan says which: it is a pure
                function of the domain seed and the image index, so image i keeps its camera,
                poses, lights, background and seeds; only the mesh is new). An image with
                several parts is invalidated when any of them changed. Every other render
                stays byte for byte (its done-marker still matches, so nothing touches it).
    re-render   ``render.run(cfg, "synthetic")``: the shard resume logic renders exactly the
                invalidated images again, in Blender, with their original plans
    version     ``dvc add data`` + a workspace commit tagged ``cad-<revision>``
    fine-tune   the champion, on all renders plus the real labels collected so far
                (``cad_retrain.epochs``, else ``finetune``'s recipe), evaluated on the fixed val
                set, registered with ``lineage.cad.<part>`` tags that carry the NEW hashes
    gate        ``gate.run`` as for a cycle (bootstrap interval, per-class drops, fail closed)

All under the workspace's cycle lock (no DAL cycle trains or promotes meanwhile). Records live in
<workspace>/state/cad_retrain/<revision>/ (revision: a digest of every part's hash now):
``invalidated.json``, ``candidate.json``, ``gate.json``, ``retrain.json``; a rerun after a crash
resumes after the last finished step, and a repeated event for the same revision returns the
finished record (a candidate the gate refused is not trained again). ``cycle_runs.jsonl``
records each request, as for cycles.

An image's render key names only the meshes of the classes it shows (synthesis/render.py), so
a mesh file at a new path (a ``cad:`` part's new parameters, a re-tessellated STEP) leaves the
other parts' images valid too. Limits: in crowded scenes (bolts: 15-45 parts an image) nearly
every image shows every part, so nearly every image is rendered again; a changed variant COUNT
of one part shifts the mesh indices of the parts after it, so their images are rendered again
as well (same scenes, new keys).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from mlflow import MlflowClient

from synthloop import lineage, tracking
from synthloop.artifacts import DatasetRef, EvalResult, ModelRef
from synthloop.config import PipelineConfig
from synthloop.data.coco import CocoDataset, union
from synthloop.gating.cycle_lock import CycleBusy, cycle_lock, record_request
from synthloop.gating.registry import CHAMPION, get_alias_version
from synthloop.stages import gate, render
from synthloop.stages.cad_records import cad_retrain_dir, cad_revision
from synthloop.stages.monitor import cad_changed, finished_cycles
from synthloop.stages.training import train_evaluate_register
from synthloop.stages.workspace import Workspace, read_record, write_record

log = logging.getLogger(__name__)
Runner = Callable[..., Any]
TRIGGER = "cad-changed"


def call(name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)




# ------------------------------------------------------------------------ which images
def images_showing(plans: Iterable[Mapping[str, Any]], classes: set[int]) -> list[str]:
    """Stems (``%06d`` of the plan index) of the planned images with a part of ``classes``."""
    return [f"{int(p['index']):06d}" for p in plans
            if any(int(part["class_index"]) in classes for part in p["parts"])]


def rendered_stems(out_dir: Path) -> list[str]:
    """Images a worker has rendered into ``out_dir`` (their done-markers ``raw/<stem>.json``)."""
    return sorted(p.stem for p in (Path(out_dir) / "raw").glob("*.json") if p.stem.isdigit())


def invalidate(out_dir: Path, stems: Iterable[str]) -> None:
    """Delete what was rendered for ``stems`` (worker outputs, done-marker, composite record,
    JPEG) and the set's annotations.json, so the render stage renders exactly these again.
    Idempotent."""
    out_dir = Path(out_dir)
    raw = out_dir / "raw"
    for stem in stems:
        for path in (raw / f"{stem}.json", raw / f"{stem}.png", raw / f"{stem}.ids.npz",
                     raw / f"{stem}.anns.json", out_dir / "images" / f"{stem}.jpg"):
            path.unlink(missing_ok=True)
    (out_dir / render.ANNOTATIONS).unlink(missing_ok=True)


def stems_to_rerender(cfg: PipelineConfig, parts: Iterable[str]) -> list[str]:
    """The rendered synthetic images that show one of ``parts`` (names), from the scene plan."""
    from synthloop.synthesis.meshes import resolve_cad_files, resolve_cad_parts
    from synthloop.synthesis.plan import plan_scenes

    ws = Workspace.of(cfg)
    names = set(parts)
    unknown = names - set(cfg.class_names)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; known: {', '.join(cfg.class_names)}")
    have = rendered_stems(ws.dataset_dir("synthetic"))
    if not have:
        return []
    specs = resolve_cad_files(resolve_cad_parts(cfg.parts, ws.cad), ws.cad / "import")
    plans = plan_scenes(cfg.synthetic, specs, start=0, count=max(int(s) for s in have) + 1)
    classes = {i for i, name in enumerate(cfg.class_names) if name in names}
    rendered = set(have)
    return [s for s in images_showing(plans, classes) if s in rendered]


def invalidate_changed(cfg: PipelineConfig, changed: Mapping[str, tuple[str, str]],
                       folder: Path) -> dict[str, Any]:
    """Invalidate the renders of the ``changed`` parts; write and return ``invalidated.json``.
    The record is written after the deletions, so a crash before it deletes again (nothing has
    been re-rendered yet) and a crash after it never deletes a fresh render."""
    done = read_record(folder / "invalidated.json")
    if done:
        return done
    out = Workspace.of(cfg).dataset_dir("synthetic")
    stems = stems_to_rerender(cfg, changed)
    total = len(rendered_stems(out))
    invalidate(out, stems)
    rec = {"changed": {p: list(h) for p, h in changed.items()}, "stems": stems,
           "rendered_before": total, "kept": total - len(stems)}
    write_record(folder / "invalidated.json", rec)
    log.info("cad retrain: %d of %d renders show %s and will be rendered again", len(stems),
             total, ", ".join(sorted(changed)))
    return rec


# ------------------------------------------------------------------------ training set
def labeled_ref(cfg: PipelineConfig) -> DatasetRef | None:
    folder = Workspace.of(cfg).dataset_dir("labeled")
    return render.dataset_ref("labeled", folder) if (folder / render.ANNOTATIONS).exists() else None


def training_set(synthetic: DatasetRef, labeled: DatasetRef | None) -> CocoDataset:
    """All renders plus the labelled real images (``coco.union``: ids renumbered)."""
    sets = [CocoDataset.load(synthetic.annotations, synthetic.image_root)]
    if labeled is not None and labeled.num_images:
        sets.append(CocoDataset.load(labeled.annotations, labeled.image_root))
    return union(sets)


def version_synthetic(cfg: PipelineConfig, synthetic: DatasetRef, message: str, tag: str) -> str:
    """Commit data/ (DVC) under ``tag``; keep state/datasets.json's synthetic md5 current."""
    from synthloop.versioning.remote import commit_and_push

    md5 = commit_and_push(cfg, message, tag=tag)
    path = Workspace.of(cfg).root / "state" / "datasets.json"
    recorded = read_record(path)
    if recorded is not None:
        write_record(path, {**recorded, "synthetic": synthetic.md5})
    return md5


def finetune_champion(cfg: PipelineConfig, *, champion: Any, synthetic: DatasetRef,
                      labeled: DatasetRef | None, val: DatasetRef, cycle: int, folder: Path,
                      changed: Mapping[str, Any], parent_run_id: str | None,
                      progress: bool) -> tuple[ModelRef, EvalResult]:
    """Fine-tune the champion on renders + real labels; ``candidate.json`` makes it resumable."""
    done = read_record(folder / "candidate.json")
    if done:
        return ModelRef(**done["model"]), EvalResult(**done["eval"])
    tracking.setup(cfg)
    train_ds = training_set(synthetic, labeled)
    epochs = cfg.cad_retrain.epochs or cfg.finetune.epochs
    train_cfg = cfg.finetune.model_copy(update={"epochs": epochs})
    datasets = {"synthetic": synthetic, **({"labeled": labeled} if labeled else {})}
    n_real = labeled.num_images if labeled else 0
    with tempfile.TemporaryDirectory() as tmp:
        init = tracking.download_checkpoint(champion.source, Path(tmp))
        ref, ev = train_evaluate_register(
            cfg, run_name=f"cad-retrain-{folder.name}",
            tags={"stage": "cad-retrain", "cycle": str(cycle), "labels_used": str(n_real),
                  "parent_version": str(champion.version),
                  "cad.changed": json.dumps({p: list(h) for p, h in changed.items()}),
                  **lineage.run_tags(cfg, datasets={**datasets, "val": val}, cad=True,
                                     parent_version=str(champion.version))},
            train_ds=train_ds, stop_ds=None, val=val, train_cfg=train_cfg, init_checkpoint=init,
            checkpoint_dir=Workspace.of(cfg).checkpoint_dir(f"cad_{folder.name}"),
            parent_run_id=parent_run_id, datasets=datasets, progress=progress,
            extra_params={"synthetic.md5": synthetic.md5, "real_labels": n_real,
                          "parent_model_version": champion.version})
    write_record(folder / "candidate.json", {
        "model": {"run_id": ref.run_id, "uri": ref.uri, "version": ref.version,
                  "metrics": ref.metrics},
        "eval": {"metrics": ev.metrics, "dataset_md5": ev.dataset_md5,
                 "num_images": ev.num_images}})
    return ref, ev


# ------------------------------------------------------------------------ the stage
def run(cfg: PipelineConfig, *, runner: Runner = call, progress: bool = False,
        trigger: str = TRIGGER, wait_s: float | None = None) -> dict[str, Any]:
    """Answer a CAD change under the cycle lock; returns the outcome (also in cycle_runs.jsonl).

    ``outcome``: ``promoted`` | ``kept champion`` | ``unchanged`` (no part's hash differs from
    the champion's) | ``no champion`` | ``disabled`` | ``skipped`` (another cycle held the lock).
    """
    state = Workspace.of(cfg).root / "state"
    asked = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if not cfg.cad_retrain.enabled:
        return record_request(state, {"trigger": trigger, "outcome": "disabled", "asked": asked,
                                      "reason": "cad_retrain.enabled is false"})
    wait = cfg.trigger.lock_wait_s if wait_s is None else wait_s
    try:
        with cycle_lock(state, trigger=trigger, wait_s=wait):
            result = retrain(cfg, runner=runner, progress=progress)
    except CycleBusy as busy:
        log.warning("cad retrain (%s) skipped: %s", trigger, busy)
        return record_request(state, {"trigger": trigger, "outcome": "skipped", "asked": asked,
                                      "held_by": busy.holder})
    except Exception as exc:  # recorded, then re-raised: a rerun resumes from the records
        record_request(state, {"trigger": trigger, "outcome": "failed", "asked": asked,
                               "error": f"{type(exc).__name__}: {exc}"[:2000]})
        raise
    keys = ("outcome", "revision", "candidate_version", "reason")
    record_request(state, {"trigger": trigger, "asked": asked, "kind": "cad-retrain",
                           **{k: result[k] for k in keys if k in result}})
    return result


def retrain(cfg: PipelineConfig, *, runner: Runner = call, progress: bool = False
            ) -> dict[str, Any]:
    """The steps (the caller holds the cycle lock); resumes from the revision's records."""
    tracking.setup(cfg)
    client = MlflowClient()
    now = lineage.cad_hashes(cfg)
    folder = cad_retrain_dir(cfg, now)
    finished = read_record(folder / "retrain.json")
    if finished:
        return finished
    champion = get_alias_version(client, cfg.registered_model_name, CHAMPION)
    if champion is None:
        return {"outcome": "no champion", "revision": cad_revision(now),
                "reason": "no champion yet: the first pretrain renders the current meshes"}
    started = read_record(folder / "invalidated.json")
    changed = ({p: tuple(h) for p, h in started["changed"].items()} if started
               else cad_changed(cfg, client))
    if not changed:
        return {"outcome": "unchanged", "revision": cad_revision(now),
                "reason": f"the champion v{champion.version} was trained on these meshes"}
    missing = sorted(p for p, (_, new) in changed.items() if new == "missing")
    if missing:
        raise FileNotFoundError(f"mesh of {', '.join(missing)} is missing: nothing re-rendered")
    t0, cpu0 = time.time(), time.process_time()
    inv = runner("cad-invalidate", invalidate_changed, cfg, changed, folder)
    synthetic = runner("render-synthetic", render.run, cfg, "synthetic", progress=progress)
    parts = ", ".join(f"{p} {old}->{new}" for p, (old, new) in sorted(changed.items()))
    data_md5 = runner("version-data", version_synthetic, cfg, synthetic,
                      f"synthetic: {len(inv['stems'])} renders of {parts} re-rendered "
                      "(CAD changed)",
                      f"cad-{folder.name}")
    render_s = time.time() - t0
    val = render.dataset_ref("val", Workspace.of(cfg).dataset_dir("val"))
    labeled = labeled_ref(cfg)
    cycle = finished_cycles(cfg)
    parent = parent_run(cfg, client, folder, changed, inv)
    candidate, ev = runner("cad-finetune", finetune_champion, cfg, champion=champion,
                           synthetic=synthetic, labeled=labeled, val=val, cycle=cycle,
                           folder=folder, changed=changed, parent_run_id=parent,
                           progress=progress)
    decision = runner("gate", gate.run, cfg, cycle=cycle, candidate=candidate, candidate_eval=ev,
                      parent_run_id=parent, record_dir=folder)
    result = {"outcome": "promoted" if decision["promote"] else "kept champion",
              "revision": folder.name, "after_cycle": cycle, "finished": time.time(), "changed": {p: list(h) for p, h in changed.items()},
              "cad": now, "rerendered": inv["stems"], "kept_renders": inv["kept"],
              "synthetic_md5": synthetic.md5, "data_version": data_md5,
              "labels_used": labeled.num_images if labeled else 0,
              "champion_before": str(champion.version),
              "candidate_version": str(candidate.version), "val_metrics": ev.metrics,
              "reason": decision["reason"], "rule": decision["rule"],
              "render_and_version_s": round(render_s, 1),
              "seconds": round(time.time() - t0, 1),
              "host_cpu_s": round(time.process_time() - cpu0, 1), "parent_run_id": parent}
    client.log_metric(parent, "rerendered", float(len(inv["stems"])))
    client.log_metric(parent, "kept_renders", float(inv["kept"]))
    client.log_metric(parent, "promoted", float(decision["promote"]))
    client.log_dict(parent, result, "cad_retrain.json")
    client.set_terminated(parent)
    write_record(folder / "retrain.json", result)
    log.info("cad retrain %s: %d renders redone, %d kept; candidate v%s %s (%s)", folder.name,
             len(inv["stems"]), inv["kept"], candidate.version, result["outcome"],
             decision["reason"])
    return result


def parent_run(cfg: PipelineConfig, client: MlflowClient, folder: Path,
               changed: Mapping[str, Any], inv: Mapping[str, Any]) -> str:
    """The MLflow run holding this retrain (created once per revision, reused on a rerun)."""
    from synthloop import tracking_recovery

    rec = read_record(folder / "run.json")
    if rec:
        tracking_recovery.reopen_run(client, rec["run_id"])
        return rec["run_id"]
    exp_id = tracking.setup(cfg)
    run = client.create_run(exp_id, run_name=f"cad-retrain-{folder.name}",
                            tags={"stage": "cad-retrain-request", **tracking.process_tags()})
    rid = run.info.run_id
    for part, (old, new) in changed.items():
        client.log_param(rid, f"cad.{part}.before", old)
        client.log_param(rid, f"cad.{part}.after", new)
    client.log_dict(rid, dict(inv), "invalidated.json")
    write_record(folder / "run.json", {"run_id": rid})
    return rid
