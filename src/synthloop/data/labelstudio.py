"""Push an exported query batch to a Label Studio server and pull the finished work back.

Uses only the standard library and ``label-studio-sdk`` (2.x), so it runs in the Label Studio
environment (``make labelstudio`` makes ``.venv-labelstudio``; its pins clash with ours)::

    .venv-labelstudio/bin/python -m synthloop.data.labelstudio push \\
        --url http://127.0.0.1:8081 --export workspace/demo/labeling/cycle_3 \\
        --local-root workspace/demo/data/pool/images          # -> prints the project id
    .venv-labelstudio/bin/python -m synthloop.data.labelstudio pull \\
        --url http://127.0.0.1:8081 --project 7 --out answers.json
    synthloop label import --cycle 3 answers.json            # the strict import, in .venv

The API key (a personal access token, from "Account & Settings") is read from
``LABEL_STUDIO_API_KEY``, never from the command line. ``--local-root`` connects a Local Files
storage so that the ``/data/local-files/?d=...`` image URLs of the tasks resolve (the server
needs ``LOCAL_FILES_SERVING_ENABLED=true`` and ``LOCAL_FILES_DOCUMENT_ROOT`` above that folder);
with images on S3, give tasks ``s3://`` URLs (``labeling.image_url``) and connect an S3 storage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def client(url: str, api_key: str | None = None) -> Any:
    try:
        from label_studio_sdk import LabelStudio
    except ImportError:  # pragma: no cover - depends on the environment
        raise SystemExit("label-studio-sdk is not installed here: run this module with "
                         ".venv-labelstudio/bin/python (make labelstudio)") from None
    key = api_key or os.environ.get("LABEL_STUDIO_API_KEY")
    if not key:
        raise SystemExit("set LABEL_STUDIO_API_KEY to a Label Studio access token")
    return LabelStudio(base_url=url, api_key=key)


def push(ls: Any, export_dir: Path, *, title: str | None = None,
         local_root: Path | None = None) -> int:
    """Create a project from ``<export_dir>/labelstudio`` (config + tasks with predictions)."""
    folder = Path(export_dir) / "labelstudio"
    tasks = json.loads((folder / "tasks.json").read_text())
    manifest = json.loads((Path(export_dir) / "manifest.json").read_text())
    title = title or f"synthloop cycle {manifest['cycle']} (model v{manifest['model_version']})"
    project = ls.projects.create(title=title[:50], label_config=(folder / "label_config.xml").read_text(),
                                 description="Query batch chosen by active learning; boxes are the "
                                             "model's pre-annotations: fix, add, delete, or skip.")
    if local_root is not None:
        ls.import_storage.local.create(project=project.id, path=str(Path(local_root).resolve()),
                                       title="pool images", use_blob_urls=False)
    ls.projects.import_tasks(id=project.id, request=tasks, return_task_ids=True)
    # Show the model's boxes as pre-annotations when a task opens; let people skip an image.
    ls.projects.update(id=project.id, show_collab_predictions=True, show_skip_button=True,
                       model_version=f"v{manifest['model_version']}")
    return int(project.id)


def pull(ls: Any, project: int) -> list[dict]:
    """Every task of the project with its annotations (Label Studio's JSON export)."""
    raw = b"".join(ls.projects.exports.download_sync(id=project, export_type="JSON",
                                                     download_all_tasks=True))
    return json.loads(raw)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Label Studio round trip for synthloop batches")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("push", help="create a project from an export folder")
    p.add_argument("--url", required=True)
    p.add_argument("--export", type=Path, required=True, help="<workspace>/labeling/cycle_<t>")
    p.add_argument("--title")
    p.add_argument("--local-root", type=Path, help="pool image folder served as local files")
    q = sub.add_parser("pull", help="download a project's tasks and annotations as JSON")
    q.add_argument("--url", required=True)
    q.add_argument("--project", type=int, required=True)
    q.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    ls = client(args.url)
    if args.cmd == "push":
        print(push(ls, args.export, title=args.title, local_root=args.local_root))
    else:
        tasks = pull(ls, args.project)
        args.out.write_text(json.dumps(tasks, indent=1))
        done = sum(1 for t in tasks if t.get("annotations"))
        print(f"{len(tasks)} tasks ({done} with annotations) -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
