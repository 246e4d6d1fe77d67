"""The MLflow pyfunc wrapper of a synthloop detector (what the registry stores and serves)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import mlflow.pyfunc


class DetectorPyfunc(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with ``image_path`` or ``image_b64`` (base64 JPEG/PNG) per row.

    Output: one row per input image with ``boxes`` (list of [x1, y1, x2, y2] pixels),
    ``labels`` (category ids, 1..C) and ``scores``.
    """

    def load_context(self, context: Any) -> None:
        from synthloop.detection import load_checkpoint

        self.model = load_checkpoint(Path(context.artifacts["checkpoint"]))
        self.model.eval()

    def predict(self, context: Any, model_input: Any, params: dict | None = None) -> Any:
        import numpy as np
        import pandas as pd
        import torch
        from PIL import Image

        rows = []
        for _, row in model_input.iterrows():
            if "image_b64" in row and isinstance(row["image_b64"], str):
                img = Image.open(io.BytesIO(base64.b64decode(row["image_b64"])))
            else:
                img = Image.open(row["image_path"])
            arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
            with torch.inference_mode():
                out = self.model([torch.from_numpy(arr).permute(2, 0, 1)])[0]
            rows.append({"boxes": out["boxes"].tolist(), "labels": out["labels"].tolist(),
                         "scores": out["scores"].tolist()})
        return pd.DataFrame(rows)
