"""Which DVC version (git tag of the workspace) a dataset folder has held its files since.

``data/`` is ONE DVC-tracked folder: each commit's ``data.dvc`` names a ``.dir`` manifest (every
file's relative path and md5) in the DVC cache. A folder such as ``data/val`` is unchanged
between two commits when its manifest entries are equal, so walking back from HEAD while they
stay equal finds the oldest tagged commit that already held these files: ``val`` -> ``datasets``,
``labeled`` after cycle 2 -> ``cycle-2``. Read-only: git plumbing and the local DVC cache.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from synthloop.versioning.dvc_repo import POINTER

Entries = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class DataVersion:
    """``tag``: the oldest tag since which the folder is unchanged (None: no tag holds it);
    ``rev``: that tag's commit (HEAD without a tag); ``data_md5``: ``data.dvc``'s md5
    (``<hash>.dir``) at ``rev``: the manifest that holds this version of the folder."""

    tag: str | None
    rev: str | None
    data_md5: str | None


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def pointer_md5_at(root: Path, rev: str) -> str | None:
    """The ``data.dvc`` md5 at commit ``rev``, or None."""
    text = _git(root, "show", f"{rev}:{POINTER}")
    try:
        return str(yaml.safe_load(text)["outs"][0]["md5"]) if text else None
    except (KeyError, IndexError, TypeError, yaml.YAMLError):
        return None


def folder_entries(root: Path, data_md5: str, folder: str) -> Entries | None:
    """(relpath, md5) of the files under ``folder`` in manifest ``data_md5``; None when the
    manifest is not in the local DVC cache."""
    path = root / ".dvc" / "cache" / "files" / "md5" / data_md5[:2] / data_md5[2:]
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    prefix = folder.rstrip("/") + "/"
    return tuple(sorted((e["relpath"], e["md5"]) for e in manifest
                        if str(e.get("relpath", "")).startswith(prefix)))


def data_version(root: Path | str, name: str) -> DataVersion:
    """The version of ``data/<name>`` (``name``: synthetic, val, pool, labeled) at HEAD."""
    root = Path(root)
    log = _git(root, "log", "--format=%H%x09%D", "--decorate-refs=refs/tags", "HEAD")
    if not log:
        return DataVersion(None, None, None)
    commits = [line.split("\t", 1) for line in log.splitlines() if line.strip()]
    head = commits[0][0]
    head_md5 = pointer_md5_at(root, head)
    if head_md5 is None:
        return DataVersion(None, head, None)
    want = folder_entries(root, head_md5, name)
    if want is None:  # HEAD's manifest is not in the cache: nothing to compare with
        return DataVersion(None, head, head_md5)
    found = DataVersion(None, head, head_md5)
    for commit, refs in commits:
        md5 = pointer_md5_at(root, commit)
        if md5 is None or (md5 != head_md5 and folder_entries(root, md5, name) != want):
            break
        tags = [r[len("tag: "):] for r in refs.split(", ") if r.startswith("tag: ")]
        if tags:
            found = DataVersion(sorted(tags)[0], commit, md5)
    return found


def remote_object(remote_url: str, data_md5: str) -> str:
    """Where DVC 3 keeps manifest ``data_md5`` on ``remote_url`` (a folder or s3://...)."""
    return f"{remote_url.rstrip('/')}/files/md5/{data_md5[:2]}/{data_md5[2:]}"

