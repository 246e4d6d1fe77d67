"""The MLflow pyfunc wrapper of a synthloop detector (what the registry stores and serves)."""

from __future__ import annotations

import base64
import io
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
    ``labels`` (category ids, 1..C) and ``scores``.
    """

    def load_context(self, context: Any) -> None:
        from synthloop.detection import load_checkpoint

        self.model = load_checkpoint(Path(context.artifacts["checkpoint"]))
        self.model.eval()

    # No type hints here: MLflow would try to derive a schema from them; the signature is
    # detector_signature(), given when the model is logged.
    def predict(self, context, model_input, params=None):
        import numpy as np
        import pandas as pd
        import torch
        from PIL import Image

        rows = []
        for _, row in model_input.iterrows():
            if isinstance(row.get("image_b64"), str):
                img = Image.open(io.BytesIO(base64.b64decode(row["image_b64"])))
            else:
                img = Image.open(row["image_path"])
            arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
            with torch.inference_mode():
                out = self.model([torch.from_numpy(arr).permute(2, 0, 1)])[0]
            rows.append({"boxes": out["boxes"].tolist(), "labels": out["labels"].tolist(),
                         "scores": out["scores"].tolist()})
        return pd.DataFrame(rows)
