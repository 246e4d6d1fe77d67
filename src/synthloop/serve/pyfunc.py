"""The MLflow pyfunc wrapper of a synthloop detector (what the registry stores and serves)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import mlflow.pyfunc


def detector_signature() -> Any:
    """The pyfunc's signature: either input column per row; list-valued outputs per image."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "image_b64", required=False),
                       ColSpec("string", "image_path", required=False)]),
        outputs=Schema([ColSpec(Array(Array("double")), "boxes"), ColSpec(Array("long"), "labels"),
                        ColSpec(Array("double"), "scores")]))


class DetectorPyfunc(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with ``image_path`` or ``image_b64`` (base64 JPEG/PNG) per row.

    Output: one row per input image with ``boxes`` (list of [x1, y1, x2, y2] pixels),
    ``labels`` (category ids, 1..C) and ``scores``. Images are decoded exactly as the REST
    path decodes them (``serve.decode.decode_image``: upright, 16-bit gray not clipped, JPEG or
    PNG only, at most ``serve.max_image_pixels``'s default), so both paths give one answer.
    """

    def load_context(self, context: Any) -> None:
        from synthloop.detection import load_checkpoint
        from synthloop.detection.device import resolve_device

        # A served MLflow model has no pipeline config: runtime.device's default (auto).
        self.model = load_checkpoint(Path(context.artifacts["checkpoint"]),
                                     device=resolve_device("auto"))
        self.model.eval()

    # No type hints here: MLflow would try to derive a schema from them; the signature is
    # detector_signature(), given when the model is logged.
    def predict(self, context, model_input, params=None):
        import pandas as pd
        import torch

        from synthloop.config import ServeConfig
        from synthloop.serve.decode import decode_image  # the REST path's decoder: EXIF, 16-bit

        max_pixels = ServeConfig().max_image_pixels
        rows = []
        for _, row in model_input.iterrows():
            if isinstance(row.get("image_b64"), str):
                source = base64.b64decode(row["image_b64"])
            else:
                source = row["image_path"]
            image = decode_image(source, max_pixels=max_pixels)
            from synthloop.detection.device import model_device

            with torch.inference_mode():
                out = self.model([image.to(model_device(self.model))])[0]
            rows.append({"boxes": out["boxes"].tolist(), "labels": out["labels"].tolist(),
                         "scores": out["scores"].tolist()})
        return pd.DataFrame(rows)
