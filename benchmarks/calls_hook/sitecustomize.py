"""Call counter for benchmarks/stack_overhead.py, loaded by Python's ``site`` at start-up in
every process whose PYTHONPATH holds this folder. Inert unless ``SYNTHLOOP_BENCH_CALLS_DIR``
is set; then it counts, in this process:

* HTTP requests sent with ``requests`` (MLflow's REST client and its artifact proxy) and
  ``httpx`` (Prefect's client), one per ``send`` (urllib3's retries inside it are not extra);
* calls of the MLflow tracking and registry stores (``RestStore`` on a server,
  ``SqlAlchemyStore`` embedded): the outermost call only, so one store call that calls
  another counts once. Wrapped when their modules are imported (nothing imported here).

At exit it writes ``<dir>/<pid>.json`` with its argv and the counts. Prefect's events go over a
websocket, not counted. Nothing of the product imports this.
"""

from __future__ import annotations

import os

_DIR = os.environ.get("SYNTHLOOP_BENCH_CALLS_DIR")

if _DIR:
    import atexit
    import collections
    import functools
    import importlib.abc
    import importlib.util
    import json
    import re
    import sys
    import threading

    COUNTS: collections.Counter = collections.Counter()
    _LOCAL = threading.local()
    _ID = re.compile(r"^(?:[0-9a-f]{32}|[0-9a-f-]{36}|m-[0-9a-f]{32}|\d+)$")
    STORES = {"mlflow.store.tracking.rest_store": ("RestStore", "tracking"),
              "mlflow.store.tracking.sqlalchemy_store": ("SqlAlchemyStore", "tracking"),
              "mlflow.store.model_registry.rest_store": ("RestStore", "registry"),
              "mlflow.store.model_registry.sqlalchemy_store": ("SqlAlchemyStore", "registry")}

    def _http_key(method: str, url: str) -> str:
        path = url.split("://", 1)[-1].split("?", 1)[0]
        host, _, path = path.partition("/")
        server = ("mlflow" if path.startswith(("api/2.0/mlflow", "api/3.0/mlflow", "ajax-api")) else
                  "prefect" if path.startswith("api/") else "other")
        if path.startswith("api/2.0/mlflow-artifacts/artifacts"):
            path = "api/2.0/mlflow-artifacts/artifacts/..."
        path = "/".join("{id}" if _ID.match(p) else p for p in path.split("/"))
        return f"http {server} {method} /{path}"

    def _wrap_requests() -> None:
        import requests

        send = requests.Session.send

        @functools.wraps(send)
        def counted(self, request, **kwargs):
            COUNTS[_http_key(request.method, request.url)] += 1
            return send(self, request, **kwargs)
        requests.Session.send = counted

    def _wrap_httpx() -> None:
        import httpx

        sync_send, async_send = httpx.Client.send, httpx.AsyncClient.send

        @functools.wraps(sync_send)
        def counted(self, request, *args, **kwargs):
            COUNTS[_http_key(request.method, str(request.url))] += 1
            return sync_send(self, request, *args, **kwargs)

        @functools.wraps(async_send)
        async def acounted(self, request, *args, **kwargs):
            COUNTS[_http_key(request.method, str(request.url))] += 1
            return await async_send(self, request, *args, **kwargs)
        httpx.Client.send, httpx.AsyncClient.send = counted, acounted

    def _wrap_store(cls, kind: str) -> None:
        for name, fn in list(vars(cls).items()):
            if name.startswith("_") or not callable(fn) or isinstance(fn, (staticmethod,
                                                                          classmethod, type)):
                continue

            def make(fn=fn, name=name):
                @functools.wraps(fn)
                def counted(*args, **kwargs):
                    if getattr(_LOCAL, "depth", 0):
                        return fn(*args, **kwargs)
                    COUNTS[f"store {kind} {cls.__name__} {name}"] += 1
                    _LOCAL.depth = 1
                    try:
                        return fn(*args, **kwargs)
                    finally:
                        _LOCAL.depth = 0
                return counted
            setattr(cls, name, make())

    def _after_http_import(name):
        def wrap(module):
            sys.modules[name] = module
            (_wrap_requests if name == "requests" else _wrap_httpx)()
        return wrap

    # module name -> what to do right after its first import
    AFTER_IMPORT = {**{name: (lambda module, cls_name=cls_name, kind=kind:
                              _wrap_store(getattr(module, cls_name), kind))
                       for name, (cls_name, kind) in STORES.items()},
                    **{name: _after_http_import(name) for name in ("requests", "httpx")}}

    class _WrapAfterImport(importlib.abc.MetaPathFinder):
        """Finds the module with the next finder, then runs its AFTER_IMPORT hook once."""
        done: set = set()

        def find_spec(self, name, path, target=None):
            if name not in AFTER_IMPORT or name in self.done:
                return None
            self.done.add(name)
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
            else:
                return None
            exec_module, hook = spec.loader.exec_module, AFTER_IMPORT[name]

            def exec_and_wrap(module):
                exec_module(module)
                hook(module)
            spec.loader.exec_module = exec_and_wrap
            return spec

    sys.meta_path.insert(0, _WrapAfterImport())

    @atexit.register
    def _write() -> None:
        if COUNTS:
            with open(os.path.join(_DIR, f"{os.getpid()}.json"), "w") as out:
                json.dump({"pid": os.getpid(), "argv": sys.argv, "counts": COUNTS}, out)
