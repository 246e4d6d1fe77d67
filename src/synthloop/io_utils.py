"""Atomic file writes: a crash leaves the old file or the new one, never half of either."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # say which file, not just "errno 28"
            raise OSError(exc.errno, f"no space left on the device writing {path} "
                          f"({len(data)} bytes); the previous version, if any, is intact",
                          str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def copy_if_missing(src: Path | str, dst: Path | str) -> bool:
    """Copy ``src`` to ``dst`` unless ``dst`` exists, through ``.<name>.tmp`` beside it (the name
    the workspace sweep removes after a crash). Returns whether it copied."""
    import shutil

    dst = Path(dst)
    if dst.exists():
        return False
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)
    return True
