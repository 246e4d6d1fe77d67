"""Lineage: what every model was made from, recorded as MLflow tags and walked back on demand.

Each training run (and its registry version) carries ``lineage.*`` tags:

    lineage.workspace_commit     git commit of the workspace repo (data.dvc at that commit)
    lineage.data_version         md5 of data/ recorded in data.dvc (the DVC dataset version)
    lineage.source_commit        git commit of the synthloop source ("+dirty" if edited)
    lineage.data.<name>.md5      content md5 of each dataset the run used (synthetic/labeled/val/pool)
    lineage.parent_version       registry version it was fine-tuned from (absent for pretrain)
    lineage.query_batch          strategy, seed, k and image ids of the batch that added labels
    lineage.cad.<part>           sha256 (16 hex) of the mesh each part was rendered from (of its
                                 variants' file hashes where a glob or ``cad:`` gives several)

``synthloop lineage <version>`` prints the chain back to the synthetic dataset and the CAD
files, and compares each mesh hash with the file on disk now (a changed CAD revision shows as
CHANGED: re-render the synthetic set).
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from synthloop.artifacts import DatasetRef
from synthloop.config import PipelineConfig

PREFIX = "lineage."
MAX_TAG = 4500  # model-version tags are capped at 5000 characters


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git(cwd: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired, NotADirectoryError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def source_commit() -> str:
    """The synthloop source's git commit (+dirty), or ``synthloop==<version>`` when installed."""
    import synthloop

    here = Path(synthloop.__file__).resolve().parent
    head = _git(here, "rev-parse", "HEAD")
    if head is None:
        return f"synthloop=={synthloop.__version__}"
    dirty = _git(here, "status", "--porcelain", "--untracked-files=no", "--", ".")
    return head + ("+dirty" if dirty else "")


def workspace_commit(root: Path) -> str | None:
    return _git(root, "rev-parse", "HEAD") if (Path(root) / ".git").exists() else None


def part_meshes(cfg: PipelineConfig) -> dict[str, list[Path]]:
    """The mesh files each part is rendered from: the file or the glob's matches, the generated
    STL of a procedural part, the meshes of a ``cad:`` part (generated into the workspace's
    cad/ folder if not there yet, as the render stage does)."""
    from synthloop.synthesis.meshes import MeshError, cad_part_files, part_mesh_files

    out = {}
    root = cfg.workspace.resolve()
    for part in cfg.parts:
        if part.cad is not None:
            out[part.name] = cad_part_files(part, root / "cad")
        elif part.mesh is None:
            out[part.name] = [root / "data" / "synthetic" / "meshes" / f"{part.name}.stl"]
        else:
            try:
                out[part.name] = part_mesh_files(part)
            except MeshError:  # a glob that matches nothing
                out[part.name] = []
    return out


def cad_hashes(cfg: PipelineConfig) -> dict[str, str]:
    """sha256 (first 16 hex digits) of each part's mesh; "missing" where a file is absent.

    One file: its own hash. Several variants: the hash of their names and hashes, in order.
    """
    out = {}
    for name, paths in part_meshes(cfg).items():
        if not paths or not all(p.is_file() for p in paths):
            out[name] = "missing"
        elif len(paths) == 1:
            out[name] = file_sha256(paths[0])[:16]
        else:
            listing = "".join(f"{p.name} {file_sha256(p)}\n" for p in paths)
            out[name] = hashlib.sha256(listing.encode()).hexdigest()[:16]
    return out


def run_tags(cfg: PipelineConfig, *, datasets: Mapping[str, DatasetRef],
             parent_version: str | None = None, query_batch: Mapping[str, Any] | None = None,
             cad: bool = False) -> dict[str, str]:
    """The ``lineage.*`` tags of a training run that used ``datasets``."""
    from synthloop.versioning.dvc_repo import POINTER

    root = cfg.workspace.resolve()
    tags = {f"{PREFIX}source_commit": source_commit()}
    commit = workspace_commit(root)
    if commit:
        tags[f"{PREFIX}workspace_commit"] = commit
    pointer = root / POINTER
    if pointer.exists():
        import yaml

        try:
            tags[f"{PREFIX}data_version"] = str(yaml.safe_load(pointer.read_text())["outs"][0]["md5"])
        except (KeyError, IndexError, TypeError, yaml.YAMLError):
            pass
    for name, ref in datasets.items():
        tags[f"{PREFIX}data.{name}.md5"] = ref.md5
    if parent_version is not None:
        tags[f"{PREFIX}parent_version"] = str(parent_version)
    if query_batch is not None:
        tags[f"{PREFIX}query_batch"] = summarize_batch(query_batch)
    if cad:
        tags.update({f"{PREFIX}cad.{name}": h for name, h in cad_hashes(cfg).items()})
    return tags


def summarize_batch(batch: Mapping[str, Any]) -> str:
    """A compact JSON of a query batch (ids cut to fit a tag; the full batch is an artifact)."""
    ids = list(batch.get("image_ids", []))
    body = {"strategy": batch.get("strategy"), "seed": batch.get("seed"), "k": len(ids),
            "model_version": batch.get("model_version"), "pool_md5": batch.get("pool_md5"),
            "image_ids": ids}
    text = json.dumps(body, separators=(",", ":"))
    while len(text) > MAX_TAG and body["image_ids"]:
        body["image_ids"] = body["image_ids"][: len(body["image_ids"]) // 2] + ["..."]
        text = json.dumps(body, separators=(",", ":"))
    return text


@dataclass(frozen=True)
class LineageStep:
    """One model version in the chain, newest first."""

    version: str
    run_id: str
    run_name: str
    stage: str
    cycle: str
    metrics: dict[str, float]
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def parent(self) -> str | None:
        return self.tags.get(f"{PREFIX}parent_version") or self.tags.get("parent_version")

    @property
    def cad(self) -> dict[str, str]:
        return {k[len(f"{PREFIX}cad."):]: v for k, v in self.tags.items()
                if k.startswith(f"{PREFIX}cad.")}

    @property
    def datasets(self) -> dict[str, str]:
        return {k[len(f"{PREFIX}data."):-len(".md5")]: v for k, v in self.tags.items()
                if k.startswith(f"{PREFIX}data.") and k.endswith(".md5")}


def trace(client: Any, model_name: str, version: str, *, limit: int = 1000) -> list[LineageStep]:
    """Walk ``lineage.parent_version`` from ``version`` (a number or an alias) back to pretrain."""
    from mlflow.exceptions import MlflowException

    if not str(version).isdigit():
        version = str(client.get_model_version_by_alias(model_name, str(version)).version)
    steps: list[LineageStep] = []
    seen: set[str] = set()
    current: str | None = str(version)
    while current and current not in seen and len(steps) < limit:
        seen.add(current)
        try:
            mv = client.get_model_version(model_name, current)
        except MlflowException as exc:
            raise ValueError(f"{model_name} has no version {current}: {exc.message}") from None
        run = client.get_run(mv.run_id)
        tags = {**run.data.tags, **(mv.tags or {})}
        metrics = {k: float(v) for k, v in run.data.metrics.items() if k.startswith("val_")}
        steps.append(LineageStep(version=current, run_id=mv.run_id,
                                 run_name=run.info.run_name or "", stage=tags.get("stage", "?"),
                                 cycle=tags.get("cycle", "?"), metrics=metrics, tags=tags))
        current = steps[-1].parent
    return steps


def format_chain(steps: list[LineageStep], *, cad_now: Mapping[str, str] | None = None) -> str:
    """Human-readable chain, newest first; CAD hashes compared with ``cad_now`` when given."""
    lines: list[str] = []
    for step in steps:
        t = step.tags
        ap = step.metrics.get("val_AP")
        head = f"v{step.version}  {step.stage} (cycle {step.cycle})  run {step.run_id}"
        lines.append(head + (f"  val AP {ap:.4f}" if ap is not None else ""))
        lines.append(f"    labels used: {t.get('labels_used', '?')}   val md5: "
                     f"{t.get('val_md5', t.get(f'{PREFIX}data.val.md5', '?'))}")
        for name, md5 in sorted(step.datasets.items()):
            lines.append(f"    data {name:<10} md5 {md5}")
        lines.append(f"    workspace commit {t.get(f'{PREFIX}workspace_commit', '?')}   "
                     f"data.dvc {t.get(f'{PREFIX}data_version', '?')}")
        lines.append(f"    source commit    {t.get(f'{PREFIX}source_commit', '?')}")
        if f"{PREFIX}query_batch" in t:
            lines.append(f"    query batch      {t[f'{PREFIX}query_batch']}")
        for part, digest in sorted(step.cad.items()):
            now = (cad_now or {}).get(part)
            state = "" if now is None else ("  (same file now)" if now == digest else
                                            f"  CHANGED: now {now} -> re-render")
            lines.append(f"    CAD {part:<10} sha256 {digest}{state}")
        if step.parent:
            lines.append(f"    parent: v{step.parent}")
    return "\n".join(lines)


def cad_changes(recorded: Mapping[str, str], now: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Parts whose mesh hash differs from the recorded one: {part: (recorded, now)}."""
    return {p: (h, now.get(p, "missing")) for p, h in recorded.items() if now.get(p) != h}


def log_query_batch(cfg: PipelineConfig, run_id: str, batch: Any, *, size: int = 96) -> None:
    """Log the query batch as a table with thumbnails (``query_batch_table.json``: MLflow's
    table view; ``query_batch.html``: the same as a page) to the cycle's run."""
    import base64
    import html
    import io

    import mlflow
    from mlflow import MlflowClient
    from PIL import Image

    from synthloop import tracking
    from synthloop.data.coco import CocoDataset

    tracking.setup(cfg)
    client = MlflowClient()
    if any(a.path == "query_batch.html" for a in client.list_artifacts(run_id)):
        return  # logged by an earlier run of this cycle
    pool_dir = cfg.workspace.resolve() / "data" / "pool"
    pool = CocoDataset.load(pool_dir / "annotations.json")
    by_id = {im.id: im for im in pool.images}
    new = set(batch.new_label_ids)
    table: dict[str, list] = {"rank": [], "image_id": [], "file_name": [], "score": [],
                              "new_label": [], "thumbnail": []}
    rows = []
    for rank, (image_id, score) in enumerate(zip(batch.image_ids, batch.scores), start=1):
        im = by_id.get(int(image_id))
        if im is None:
            continue
        with Image.open(pool.image_path(im)) as pic:
            thumb = pic.convert("RGB")
            thumb.thumbnail((size, size))
        buf = io.BytesIO()
        thumb.save(buf, format="JPEG", quality=80)
        b64 = base64.b64encode(buf.getvalue()).decode()
        for key, value in (("rank", rank), ("image_id", int(image_id)), ("file_name", im.file_name),
                           ("score", float(score)), ("new_label", int(image_id) in new),
                           ("thumbnail", mlflow.Image(thumb))):
            table[key].append(value)
        rows.append(f"<tr><td>{rank}</td><td>{int(image_id)}</td><td>{html.escape(im.file_name)}"
                    f"</td><td>{float(score):.4f}</td><td>{'yes' if int(image_id) in new else ''}"
                    f"</td><td><img src='data:image/jpeg;base64,{b64}'></td></tr>")
    client.log_table(run_id, data=table, artifact_file="query_batch_table.json")
    page = (f"<html><body><h3>Query batch: {html.escape(batch.strategy)} seed {batch.seed}, "
            f"model v{html.escape(str(batch.model_version))}, pool {batch.pool_md5[:12]}</h3>"
            "<table border=1 cellpadding=4><tr><th>rank</th><th>image id</th><th>file</th>"
            "<th>score</th><th>new label</th><th>image</th></tr>" + "".join(rows) +
            "</table></body></html>")
    client.log_text(run_id, page, "query_batch.html")
