"""The pool-growth event `synthloop ingest` sends to a Prefect server (POST <api>/events), and
the decision behind it; the server side (trigger -> al_cycle) is tests/e2e/test_stack_cycle.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from tests_support import DEMO_CONFIG

from synthloop.config import load_config
from synthloop.stack.events import emit_pool_growth


class _Events(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Events.received.append((self.path, json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_pool_growth_event_fires_at_the_threshold_only():
    server = HTTPServer(("127.0.0.1", 0), _Events)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = f"http://127.0.0.1:{server.server_port}/api"
    cfg = load_config(DEMO_CONFIG, overrides=["trigger.pool_growth_min=3"])
    _Events.received.clear()
    try:
        quiet = emit_pool_growth(api, cfg, config_path="/p/demo.yaml", pool_growth=2)
        assert not quiet["fire"] and quiet["event_id"] is None and _Events.received == []
        sent = emit_pool_growth(api, cfg, config_path="/p/demo.yaml", pool_growth=3)
    finally:
        server.shutdown()
    assert sent["fire"] and sent["event"] == "synthloop.pool.grew"
    [(path, [event])] = _Events.received
    assert path == "/api/events"
    assert event["id"] == sent["event_id"] and event["event"] == "synthloop.pool.grew"
    assert event["resource"]["prefect.resource.id"] == f"synthloop.pipeline.{cfg.name}"
    # prefect.yaml's al-cycle trigger passes these two on as the flow's parameters
    assert event["payload"]["config"] == "/p/demo.yaml"
    assert event["payload"]["trigger"] == "pool-grew" and event["payload"]["pool_growth"] == 3


def test_ingest_emit_without_a_server_is_one_clear_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    proc = subprocess.run([sys.executable, "-m", "synthloop", "ingest", "--config",
                           str(DEMO_CONFIG), "--workspace", str(tmp_path / "ws"), "--emit"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "--emit needs PREFECT_API_URL" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "ws").exists()  # nothing ingested, nothing half-written
