"""The stack's local S3: moto's server, with a request log that survives its restarts.

moto keeps objects in memory; its recorder appends every request to a JSON-lines file that is
replayed at the next start. Two flaws of the stock recorder lose data, both fixed here:

* the server is threaded and the recorder writes without a lock: two concurrent requests (the
  parts of one multipart upload: any object over 8 MB that MLflow's server stores through
  boto3) interleave inside one line, and moto's replay stops at the first unreadable line, so
  after the restart the store is EMPTY. Here each line is written under a lock, and only
  requests that change something (PUT, POST, DELETE) are kept: GETs no longer grow the log.
* a multipart upload's parts name the upload id the server made up at the time; replayed, the
  new server hands out another id, so the parts and the completion were refused and the object
  vanished. :func:`replay` maps each recorded upload id to the one the new server returns.

``python -m synthloop.stack.s3_server -H HOST -p PORT`` runs the server (moto's arguments);
``stack up`` starts it with MOTO_ENABLE_RECORDING/MOTO_RECORDER_FILEPATH and calls
:func:`replay` on the previous log (moved aside first, so the server records a fresh,
compacted log while the replay and any new request go through it).
"""

from __future__ import annotations

import base64
import json
import re
import sys
import threading
import urllib.parse
from pathlib import Path

MUTATING = frozenset({"PUT", "POST", "DELETE"})
_LOCK = threading.Lock()


def _patch_recorder() -> None:
    from moto.moto_api._internal.recorder.models import Recorder

    record = Recorder._record_request

    def locked(self, request, body=None):
        if request.method not in MUTATING:
            return None
        with _LOCK:
            return record(self, request, body)
    Recorder._record_request = locked


def replay(endpoint: str, recording: Path) -> tuple[int, int]:
    """Send the mutating requests of ``recording`` to the S3 server at ``endpoint``, in order,
    recorded upload ids replaced by the server's new ones. Returns (replayed, skipped): skipped
    are unreadable lines (a log written by the stock recorder) and parts of an upload whose
    start was lost."""
    import requests

    fresh: dict[str, list[str]] = {}  # object path -> upload ids made by this server, unbound
    ids: dict[str, str] = {}  # recorded upload id -> this server's
    replayed = skipped = 0
    with requests.Session() as session, open(recording, "rb") as log:
        for raw in log:
            try:
                row = json.loads(raw)
            except ValueError:
                skipped += 1
                continue
            method = row.get("method")
            if method not in MUTATING:
                continue
            body = row.get("body")
            if row.get("body_encoded"):
                body = base64.b64decode(body)
            parts = urllib.parse.urlsplit(row["url"])
            query = parts.query
            pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
            old = dict(pairs).get("uploadId")
            if old is not None:
                if old not in ids:
                    if not fresh.get(parts.path):
                        skipped += 1
                        continue
                    ids[old] = fresh[parts.path].pop(0)
                query = urllib.parse.urlencode(
                    [(k, ids[old] if k == "uploadId" else v) for k, v in pairs],
                    quote_via=urllib.parse.quote)
            headers = {k: v for k, v in (row.get("headers") or {}).items()
                       if k.lower() not in ("host", "content-length", "transfer-encoding")}
            url = endpoint.rstrip("/") + parts.path + (f"?{query}" if query else "")
            resp = session.request(method, url, headers=headers, data=body, timeout=600)
            replayed += 1
            if method == "POST" and "uploads" in dict(pairs) and resp.ok:
                found = re.search(r"<UploadId>([^<]+)</UploadId>", resp.text)
                if found:
                    fresh.setdefault(parts.path, []).append(found.group(1))
    return replayed, skipped


def main() -> None:
    _patch_recorder()
    from moto.server import main as moto_main

    moto_main(sys.argv[1:])


if __name__ == "__main__":
    main()
