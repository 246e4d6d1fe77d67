"""A workspace: its own git + DVC repository holding ``data/`` as ONE DVC-tracked folder.

Layout: ``<workspace>/data/{synthetic,pool,labeled,val}/`` (COCO json + images), tracked by
``<workspace>/data.dvc``; git holds data.dvc, .gitignore and .dvc/config, tags name dataset
versions (``cycle-1``). This repo is separate from the project's source repo.

DVC runs through its Python API (``dvc.repo.Repo``); git through subprocess. DVC facts this
code leans on: ``Repo.add`` resolves paths against the CWD (we pass absolute paths) and does
not git-add the .dvc file (we do).
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from synthloop import faults

log = logging.getLogger(__name__)

DATA_DIR = "data"
POINTER = "data.dvc"
REMOTE_NAME = "storage"
GIT_USER = ("synthloop", "synthloop@localhost")
# the embedded remote, MLflow store, training scratch and generated CAD (a cache keyed by its
# parameters; lineage records its hash) live in the workspace, not in git
GITIGNORE_LINES = ("/dvc-remote/", "mlruns.db", "/mlruns/", "/mlartifacts/", "/checkpoints/",
                   "/staging/", "/cad/", "__pycache__/")


RETRY_ATTEMPTS = 3  # push/pull tries before giving up (a remote outage)
RETRY_BACKOFF_S = 1.0  # first pause; doubles after each failed try


class VersioningError(RuntimeError):
    """A git or DVC operation failed; the message has the command and its error output."""


@dataclass(frozen=True)
class Workspace:
    """A workspace repository: ``root`` folder and its default DVC remote."""

    root: Path
    remote_url: str

    @property
    def data(self) -> Path:
        return self.root / DATA_DIR


def _git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["git", *args]
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env)
    except FileNotFoundError:
        raise VersioningError("git is not installed (needed for the workspace repo)") from None
    if check and proc.returncode != 0:
        detail = proc.stderr.strip() or proc.stdout.strip()
        raise VersioningError(f"`{' '.join(cmd)}` failed in {root} "
                              f"(exit {proc.returncode}): {detail}")
    return proc


def _dvc_repo(root: Path):
    from dvc.repo import Repo  # imported here: dvc is slow to import

    try:
        return Repo(str(root))
    except Exception as exc:  # NotDvcRepoError and friends
        raise VersioningError(f"`dvc` cannot open {root}: {exc}") from exc


def _dvc_call(what: str, fn, *args, **kwargs):
    """Run a DVC API call with its INFO chatter ("To track the changes with git...") muted."""
    from dvc.exceptions import DvcException

    dvc_log = logging.getLogger("dvc")  # dvc attaches stdout handlers to it on import
    level = dvc_log.level
    dvc_log.setLevel(logging.WARNING)
    try:
        return fn(*args, **kwargs)
    except DvcException as exc:
        raise VersioningError(f"`{what}` failed: {exc}") from exc
    finally:
        dvc_log.setLevel(level)


def _remote_config(remote_url: str, endpoint_url: str | None,
                   profile: str | None = None) -> dict[str, str]:
    if "://" not in remote_url:  # a local folder: absolute, so the repo can move cwd freely
        Path(remote_url).mkdir(parents=True, exist_ok=True)
        remote_url = str(Path(remote_url).resolve())
    conf = {"url": remote_url}
    if endpoint_url:
        if not remote_url.startswith("s3://"):
            raise VersioningError(f"endpoint_url is for s3:// remotes, not {remote_url}")
        conf["endpointurl"] = endpoint_url
    if profile:
        if not remote_url.startswith("s3://"):
            raise VersioningError(f"an AWS profile is for s3:// remotes, not {remote_url}")
        conf["profile"] = profile
    return conf


def init_workspace(path: Path | str, *, remote_url: str, endpoint_url: str | None = None,
                   profile: str | None = None) -> Workspace:
    """Make ``path`` a git + DVC repo with a default remote; safe to call again.

    ``remote_url``: a local folder or ``s3://bucket/prefix``; ``endpoint_url``: S3-compatible
    endpoint (MinIO, moto); ``profile``: an AWS profile name. Credentials come from the
    environment / AWS profile (or .dvc/config.local), never from here.
    """
    from dvc.repo import Repo

    root = Path(path).resolve()
    root.mkdir(parents=True, exist_ok=True)
    (root / DATA_DIR).mkdir(exist_ok=True)
    if not (root / ".git").exists():
        _git(root, "init", "--quiet")
    for key, value in (("user.name", GIT_USER[0]), ("user.email", GIT_USER[1]),
                       ("commit.gpgsign", "false"), ("tag.gpgsign", "false")):
        if _git(root, "config", "--local", "--get", key, check=False).stdout.strip() != value:
            _git(root, "config", "--local", key, value)
    if not (root / ".dvc").exists():
        _dvc_call("dvc init", Repo.init, str(root)).close()
    remote = _remote_config(remote_url, endpoint_url, profile)
    with _dvc_repo(root) as repo:
        with repo.config.edit() as conf:
            conf["core"]["analytics"] = False
            conf["core"]["remote"] = REMOTE_NAME
            conf["remote"][REMOTE_NAME] = remote
    _ensure_gitignore(root)
    _git(root, "add", ".dvc/config", ".dvcignore", ".gitignore")
    _commit_if_staged(root, "synthloop: initialize workspace")
    return Workspace(root=root, remote_url=remote["url"])


def open_workspace(path: Path | str) -> Workspace:
    """A workspace made earlier by ``init_workspace``."""
    root = Path(path).resolve()
    if not (root / ".git").exists() or not (root / ".dvc").exists():
        raise VersioningError(f"{root} is not a workspace (run init_workspace first)")
    with _dvc_repo(root) as repo:
        url = repo.config.get("remote", {}).get(REMOTE_NAME, {}).get("url", "")
    return Workspace(root=root, remote_url=url)


def _ensure_gitignore(root: Path) -> None:
    path = root / ".gitignore"
    lines = path.read_text().splitlines() if path.exists() else []
    missing = [line for line in GITIGNORE_LINES if line not in lines]
    if missing:
        path.write_text("\n".join([*lines, *missing]) + "\n")


def _commit_if_staged(root: Path, message: str) -> bool:
    if _git(root, "diff", "--cached", "--quiet", check=False).returncode == 0:
        return False
    _git(root, "commit", "--quiet", "-m", message)
    return True


def pointer_md5(ws: Workspace) -> str:
    """The md5 of ``data/`` recorded in data.dvc (``<hash>.dir``): the dataset version."""
    path = ws.root / POINTER
    try:
        outs = yaml.safe_load(path.read_text())["outs"]
        return str(outs[0]["md5"])
    except FileNotFoundError:
        raise VersioningError(f"{path} does not exist: commit_data has not run yet") from None
    except (KeyError, IndexError, TypeError, yaml.YAMLError) as exc:
        raise VersioningError(f"{path} is not a DVC pointer with an md5: {exc}") from None


def commit_data(ws: Workspace, message: str, *, tag: str | None = None) -> str:
    """``dvc add data``, git-commit data.dvc (skipped when nothing changed), tag; -> data md5.

    Re-running with the same data makes no commit and leaves an existing tag where it is (the
    pipeline re-runs its "datasets" step on every run: the tag must keep naming the first
    version, not follow later label commits); a missing tag is put on HEAD. When this call
    does commit new data under a tag name that points elsewhere, the tag moves to the new
    commit (the latest run of that step wins; the older commit stays in history), with a
    warning.
    """
    if not ws.data.is_dir():
        raise VersioningError(f"{ws.data} does not exist: nothing to version")
    with _dvc_repo(ws.root) as repo:
        _dvc_call("dvc add data", repo.add, str(ws.data))  # absolute: add resolves against CWD
    faults.point("dvc.commit")  # data.dvc rewritten, not yet committed
    _git(ws.root, "add", POINTER, ".gitignore")
    committed = _commit_if_staged(ws.root, message)
    if tag:
        _tag_head(ws.root, tag, move=committed)
    return pointer_md5(ws)


def _tag_head(root: Path, tag: str, *, move: bool) -> None:
    head = _git(root, "rev-parse", "HEAD").stdout.strip()
    found = _git(root, "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}",
                 check=False)
    if found.returncode == 0:
        if found.stdout.strip() == head:
            return
        if not move:
            log.info("tag %s stays at %s: this run added no new data", tag,
                     found.stdout.strip()[:10])
            return
        log.warning("moving tag %s from %s to %s", tag, found.stdout.strip()[:10], head[:10])
    _git(root, "tag", "--force", tag, head)


def head_rev(ws: Workspace) -> str:
    """The workspace's current git commit."""
    return _git(ws.root, "rev-parse", "HEAD").stdout.strip()


def _with_retries(what: str, ws: Workspace, fn, *, attempts: int, backoff_s: float):
    """Run ``fn(repo)`` up to ``attempts`` times, sleeping backoff_s, 2*backoff_s, ... between.

    A remote outage (S3 down, network gone) ends in one VersioningError that names the remote
    and says the local data and commits are intact: nothing local is undone by a failed push.
    """
    t0 = time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            with _dvc_repo(ws.root) as repo:
                return fn(repo)
        except Exception as exc:  # DVC/botocore/fsspec errors alike; config errors fail fast too
            if attempt == attempts:
                cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise VersioningError(
                    f"`{what}` to remote {ws.remote_url} failed after {attempts} attempts over "
                    f"{time.monotonic() - t0:.0f} s ({type(exc).__name__}: {cause}); the local "
                    f"data, cache and git commits in {ws.root} are intact, rerun to retry"
                ) from exc
            delay = backoff_s * 2 ** (attempt - 1)
            log.warning("%s failed (attempt %d/%d: %s); retrying in %.1f s", what, attempt,
                        attempts, type(exc).__name__, delay)
            time.sleep(delay)


def push(ws: Workspace, *, jobs: int | None = None, attempts: int = RETRY_ATTEMPTS,
         backoff_s: float = RETRY_BACKOFF_S) -> int:
    """Upload the cache of the current data.dvc to the default remote; -> files uploaded.

    Bounded retries with exponential backoff (see ``_with_retries``)."""
    return int(_with_retries("dvc push", ws, lambda repo: _dvc_call(
        "dvc push", repo.push, jobs=jobs), attempts=attempts, backoff_s=backoff_s) or 0)


def pull(ws: Workspace, *, jobs: int | None = None, attempts: int = RETRY_ATTEMPTS,
         backoff_s: float = RETRY_BACKOFF_S) -> None:
    """Fetch and check out ``data/`` as recorded in data.dvc (after a clone, or a lost cache).

    Bounded retries with exponential backoff (see ``_with_retries``)."""
    _with_retries("dvc pull", ws, lambda repo: _dvc_call("dvc pull", repo.pull, jobs=jobs),
                  attempts=attempts, backoff_s=backoff_s)


def read_at(ws: Workspace, relpath: str, rev: str) -> bytes:
    """The bytes of ``relpath`` (e.g. ``data/val/annotations.json``) at git revision ``rev``.

    DVC-tracked files come from the local cache, or the remote when the cache lacks them.
    """
    from dvc.api import DVCFileSystem

    try:
        fs = DVCFileSystem(str(ws.root), rev=rev)
    except Exception as exc:
        raise VersioningError(f"`dvc fs --rev {rev}` cannot open {ws.root}: {exc}") from exc
    try:
        return fs.read_bytes(Path(relpath).as_posix())
    except FileNotFoundError:
        raise VersioningError(f"{relpath} does not exist at rev {rev} in {ws.root}") from None
    except Exception as exc:
        raise VersioningError(f"`dvc read {relpath} --rev {rev}` failed: {exc}") from exc


def dataset_md5(path: Path | str) -> str:
    """Content hash of a folder: sorted relative POSIX paths and file bytes, nothing else.

    Stable across machines, mtimes and copy order; used to tell whether data/val changed.
    """
    root = Path(path)
    if not root.is_dir():
        raise VersioningError(f"{root} is not a folder")
    digest = hashlib.md5()
    files = sorted((p for p in root.rglob("*") if p.is_file()),
                   key=lambda p: p.relative_to(root).as_posix())
    for file in files:
        rel = file.relative_to(root).as_posix().encode("utf-8")
        digest.update(len(rel).to_bytes(8, "big") + rel)
        digest.update(file.stat().st_size.to_bytes(8, "big"))
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
