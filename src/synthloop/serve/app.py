"""REST inference for the registry champion (FastAPI + uvicorn; ``pip install synthloop[serve]``).

Why FastAPI and not ``mlflow models serve``: the scoring server loads one fixed model URI at
start, so following the ``champion`` alias would need a restart per promotion (and dropped
requests); here a watcher swaps models in place, and limits, errors and ``/health`` are ours.
The registry model is still a pyfunc with a signature, so ``mlflow models serve`` works too.

    GET  /health              {"status", "model", "alias", "version", "val_AP", ...}; 503 until loaded
    POST /predict             body: image/jpeg or image/png bytes, or application/json
                              {"image_b64": "..."}; ?min_score=0.5
                              -> {"model_version", "width", "height", "detections": [{"box":
                                 [x1, y1, x2, y2] pixels, "class_id", "class_name", "score"}]}
Errors are 4xx with a "detail" that says what to change: 413 too large (bytes or pixels),
415 unsupported media type, 400 not a decodable image / bad JSON, 422 bad min_score.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations, and the
# names they use (Request) are local to create_app.
import base64
import binascii
import json
import threading
from contextlib import asynccontextmanager
from typing import Any

from synthloop.config import PipelineConfig, ServeConfig
from synthloop.serve.champion import ChampionWatcher
from synthloop.serve.decode import decode_image  # the pyfunc path decodes with it too

IMAGE_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}
JSON_TYPE = "application/json"


def _fastapi():
    try:
        import fastapi
        import starlette.concurrency
    except ImportError as exc:  # pragma: no cover - the serve extra is missing
        raise ImportError("serving needs FastAPI and uvicorn: pip install 'synthloop[serve]'") from exc
    return fastapi, starlette.concurrency


def create_app(watcher: ChampionWatcher, serve_cfg: ServeConfig = ServeConfig(), *,
               start_watcher: bool = True) -> Any:
    """The FastAPI app. With ``start_watcher`` the lifespan starts/stops the alias watcher."""
    fastapi, concurrency = _fastapi()
    from fastapi import HTTPException, Request
    from fastapi.responses import JSONResponse

    infer_lock = threading.Semaphore(1)  # 2-core machines: one forward pass at a time is fastest

    @asynccontextmanager
    async def lifespan(app):
        if start_watcher:
            await concurrency.run_in_threadpool(watcher.start)
        yield
        if start_watcher:
            watcher.stop()

    app = fastapi.FastAPI(title="synthloop detector", lifespan=lifespan,
                          description="Boxes, classes and scores from the registry champion.")

    @app.get("/health")
    def health() -> Any:
        cur = watcher.current
        body = {"status": "ok" if cur else "no model", "model": watcher.name, "alias": watcher.alias,
                "version": cur.version if cur else None,
                "val_AP": cur.metrics.get("AP") if cur else None,
                "val_AP50": cur.metrics.get("AP50") if cur else None,
                "classes": cur.class_names if cur else [], "swaps": watcher.swaps,
                "scorer": cur.scorer if cur else None,
                "loaded_at": cur.loaded_at if cur else None, "last_check": watcher.last_check,
                "last_error": watcher.last_error}
        return JSONResponse(body, status_code=200 if cur else 503)

    async def read_body(request: Request, limit: int) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise HTTPException(413, f"body is {declared} bytes; the limit is {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.post("/predict")
    async def predict(request: Request, min_score: float | None = None) -> Any:
        if min_score is not None and not 0.0 <= min_score <= 1.0:
            raise HTTPException(422, f"min_score must be within [0, 1], got {min_score}")
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in IMAGE_TYPES and ctype != JSON_TYPE:
            raise HTTPException(415, f"unsupported content type {ctype or '(none)'!r}; send "
                                     "image/jpeg, image/png, or application/json {\"image_b64\": ...}")
        max_bytes = serve_cfg.max_image_bytes
        if ctype == JSON_TYPE:
            raw = await read_body(request, max_bytes * 4 // 3 + 1024)
            try:
                data = base64.b64decode(json.loads(raw)["image_b64"], validate=True)
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise HTTPException(400, "JSON body must be {\"image_b64\": \"<base64 JPEG or PNG>\"}")
            if len(data) > max_bytes:
                raise HTTPException(413, f"image is {len(data)} bytes; the limit is {max_bytes}")
        else:
            data = await read_body(request, max_bytes)
        cur = watcher.current  # this request uses this model to the end, whatever swaps meanwhile
        if cur is None:
            raise HTTPException(503, f"no model behind {watcher.name}@{watcher.alias} yet")
        threshold = serve_cfg.min_score if min_score is None else min_score
        return await concurrency.run_in_threadpool(_infer, cur, data, threshold)

    def _infer(cur, data: bytes, threshold: float) -> dict[str, Any]:
        import torch

        try:
            image = decode_image(data, max_pixels=serve_cfg.max_image_pixels)
        except OverflowError as exc:
            raise HTTPException(413, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        from synthloop.detection.device import model_device

        with infer_lock, torch.inference_mode():
            out = cur.model([image.to(model_device(cur.model))])[0]
        dets = []
        for box, label, score in zip(out["boxes"].tolist(), out["labels"].tolist(),
                                     out["scores"].tolist()):
            if score >= threshold:
                name = cur.class_names[label - 1] if 0 < label <= len(cur.class_names) else str(label)
                dets.append({"box": [round(v, 2) for v in box], "class_id": int(label),
                             "class_name": name, "score": round(float(score), 4)})
        return {"model": cur.name, "model_version": cur.version, "width": int(image.shape[2]),
                "height": int(image.shape[1]), "detections": dets}

    return app


def build_app(cfg: PipelineConfig, *, poll_seconds: float | None = None) -> Any:
    """The app for a pipeline: its tracking store, its registered model, ``cfg.serve``."""
    import functools

    import mlflow
    import torch
    from mlflow import MlflowClient

    from synthloop.detection.device import resolve_device
    from synthloop.serve.champion import load_registry_version

    if cfg.serve.torch_threads:
        torch.set_num_threads(cfg.serve.torch_threads)
    mlflow.set_tracking_uri(cfg.tracking_uri)  # download_checkpoint reads the global URI
    loader = functools.partial(load_registry_version, device=resolve_device(cfg.runtime.device),
                               export_runtime=cfg.export.runtime if cfg.export.use else None)
    watcher = ChampionWatcher(MlflowClient(cfg.tracking_uri), cfg.registered_model_name,
                              alias=cfg.serve.alias,
                              poll_seconds=poll_seconds or cfg.serve.poll_seconds, loader=loader)
    return create_app(watcher, cfg.serve)


def serve(cfg: PipelineConfig, *, host: str | None = None, port: int | None = None) -> None:
    """Run the server in the foreground (one uvicorn worker: the model lives in this process)."""
    import uvicorn

    uvicorn.run(build_app(cfg), host=host or cfg.serve.host, port=port or cfg.serve.port,
                workers=1, log_level="info", timeout_graceful_shutdown=30)
