"""The exported scorer: the detector's heavy layers as ONNX, run by ONNX Runtime or OpenVINO.

What is exported and why: two ONNX graphs made from the torch model's own modules,

- ``dense``: backbone + FPN + the RPN head's convolutions. Input (B, 3, H, W) float32, the
  normalised, padded batch of ``model.transform``; outputs every FPN level (B, C, H/s, W/s) in
  the backbone's key order, then the RPN objectness (B, A, h, w) and box deltas (B, 4A, h, w)
  of every level. H and W are dynamic (any photo size), B too.
- ``box``: the box head (two FC layers) + predictor. Input (N, C, 7, 7) pooled RoI features;
  outputs ``logits`` (N, K+1) and ``deltas`` (N, 4(K+1)).

Everything else stays the torch model's own code: the resize/normalise transform, the anchors,
the RPN's decode + NMS, MultiScaleRoIAlign, ``RoIHeadsWithProbs.postprocess_detections`` (which
keeps the softmax row of each kept box) and the P2 pooling hook. These are the data-dependent
parts (variable box counts, NMS) that ONNX would have to re-implement, and they cost a few
percent of a pass; the convolutions and FC layers are where the time goes. So an exported pass
gives the same ``boxes`` / ``labels`` / ``scores`` / ``probs`` (background column 0) and the same
pooled P2 feature as ``open_scorer``, by construction, up to float rounding in the graphs.

``ExportedScorer.model`` is a copy of the torch detector whose ``backbone``, ``rpn.head``,
``roi_heads.box_head`` and ``roi_heads.box_predictor`` call the runtime: ``open_scorer`` and
``predict_with_probs_and_features`` use it unchanged. torchvision backend only (mmdet models
are not exported; scoring falls back to torch).
"""

from __future__ import annotations

import copy
import functools
import logging
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

RUNTIMES = ("onnxruntime", "openvino")
DENSE_FILE = "scorer_dense.onnx"
BOX_FILE = "scorer_box.onnx"
OPSET = 17


class _DenseGraph(nn.Module):
    """backbone + FPN + RPN head: (B, 3, H, W) -> (*levels, *objectness, *deltas)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.rpn_head = model.rpn.head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.backbone(x)
        objectness, deltas = self.rpn_head(list(feats.values()))
        return (*[f.contiguous() for f in feats.values()], *objectness, *deltas)


class _BoxGraph(nn.Module):
    """box head + predictor: (N, C, 7, 7) -> (logits (N, K+1), deltas (N, 4(K+1)))."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.box_head = model.roi_heads.box_head
        self.box_predictor = model.roi_heads.box_predictor

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.box_predictor(self.box_head(x))


def level_names(model: nn.Module) -> list[str]:
    """The backbone's output keys, in order (``"0"`` is the finest level, P2/stride 8)."""
    with torch.inference_mode():
        return list(model.backbone(torch.zeros(1, 3, 64, 64)).keys())


def export_onnx(model: nn.Module, out_dir: Path, *, example_hw: tuple[int, int] = (256, 320)
                ) -> dict[str, Path]:
    """Write ``scorer_dense.onnx`` and ``scorer_box.onnx`` of a torchvision detector into
    ``out_dir``; return ``{"dense": path, "box": path}``. ``example_hw`` only traces: H, W, B
    and N are dynamic axes. The model is not changed (eval mode inside, restored after)."""
    if not hasattr(model, "rpn") or not hasattr(model, "roi_heads"):
        raise TypeError(f"only torchvision Faster R-CNN models export, got {type(model).__name__}")
    out_dir.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    names = level_names(model)
    n = len(names)
    outputs = ([f"feat_{k}" for k in names] + [f"objectness_{i}" for i in range(n)]
               + [f"rpn_deltas_{i}" for i in range(n)])
    dense_axes = {"images": {0: "batch", 2: "height", 3: "width"}}
    dense_axes.update({o: {0: "batch", 2: f"h_{o}", 3: f"w_{o}"} for o in outputs})
    channels = model.backbone.out_channels
    paths = {"dense": out_dir / DENSE_FILE, "box": out_dir / BOX_FILE}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # tracer and legacy-exporter notices (constant shapes, deprecation): checked by
            # the parity tests instead
            warnings.simplefilter("ignore")
            # The TorchScript exporter: it takes the data-independent graph as it is, in
            # seconds; the dynamo exporter adds nothing for plain convolutions.
            torch.onnx.export(_DenseGraph(model), (torch.zeros(1, 3, *example_hw),),
                              str(paths["dense"]), input_names=["images"], output_names=outputs,
                              dynamic_axes=dense_axes, opset_version=OPSET, dynamo=False)
            torch.onnx.export(_BoxGraph(model), (torch.zeros(2, channels, 7, 7),),
                              str(paths["box"]), input_names=["rois"],
                              output_names=["logits", "deltas"], opset_version=OPSET,
                              dynamic_axes={"rois": {0: "n"}, "logits": {0: "n"},
                                            "deltas": {0: "n"}}, dynamo=False)
    finally:
        model.train(was_training)
    return paths


Runner = Callable[[np.ndarray], list[np.ndarray]]


def _onnxruntime_runner(path: Path, threads: int) -> Runner:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ImportError("the exported scorer needs ONNX Runtime: pip install 'synthloop[export]'"
                          ) from exc
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # no busy-waiting threads between ops: on a shared 2-core machine they burn another
    # process's CPU (the same choice as OpenVINO's default)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


@functools.cache
def _openvino_core():
    """One OpenVINO ``Core`` per process, never dropped.

    OpenVINO's CPU plugin swaps in a signal stack of its own (``sigaltstack``) each time a
    ``Core`` loads it, and puts back the one it found when that ``Core`` goes away. Two Cores
    alive at once, dropped in the order they were made, leave the thread's signal stack
    pointing at memory the first one already unmapped: the next signal the process handles
    (a subprocess's SIGCHLD, a timer) kills it with SIGSEGV and no traceback (seen in the test
    suite; tests/unit/test_score_export.py reproduces it in a fresh interpreter). One Core,
    kept, loads the plugin once; compiling is also faster the second time.
    """
    try:
        import openvino as ov
    except ImportError as exc:
        raise ImportError("the OpenVINO scorer needs OpenVINO: pip install 'synthloop[export]'"
                          ) from exc
    return ov.Core()


def _openvino_runner(path: Path, threads: int) -> Runner:
    core = _openvino_core()
    # f32 explicitly: on CPUs with AVX512-BF16 OpenVINO otherwise runs bf16, which moved pooled
    # features by ~0.7 and changed the boxes (measured here); int8 is a separate, measured model.
    compiled = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                     "PERFORMANCE_HINT": "LATENCY",
                                                     "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()  # one at a time: see ExportedScorer

    def run(x: np.ndarray) -> list[np.ndarray]:
        result = request.infer({0: x})
        return [np.array(result[out]) for out in compiled.outputs]

    return run


def make_runner(path: Path, runtime: str, *, threads: int | None = None) -> Runner:
    """A function ``x -> outputs`` (numpy, in the graph's output order) over one ONNX file."""
    threads = threads or torch.get_num_threads()
    if runtime == "onnxruntime":
        return _onnxruntime_runner(path, threads)
    if runtime == "openvino":
        return _openvino_runner(path, threads)
    raise ValueError(f"unknown export runtime {runtime!r}; known: {', '.join(RUNTIMES)}")


class _RuntimeBackbone(nn.Module):
    """Stands in for ``model.backbone``: runs the dense graph, keeps the RPN outputs for
    ``_CachedRpnHead`` (the RPN head is called right after, in the same forward)."""

    def __init__(self, run: Runner, names: list[str], out_channels: int) -> None:
        super().__init__()
        self.run, self.names, self.out_channels = run, names, out_channels
        self.rpn_outputs: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        if x.shape[-2] % 32 or x.shape[-1] % 32:
            # the graph's stride-2 paddings are constants, right for sizes that stay even
            raise ValueError(f"the exported scorer takes batches padded to a multiple of 32, "
                             f"got {tuple(x.shape[-2:])}")
        outs = [torch.from_numpy(o) for o in self.run(np.ascontiguousarray(x.float().numpy()))]
        n = len(self.names)
        self.rpn_outputs = (outs[n:2 * n], outs[2 * n:3 * n])
        return OrderedDict(zip(self.names, outs[:n]))


class _CachedRpnHead(nn.Module):
    def __init__(self, backbone: _RuntimeBackbone) -> None:
        super().__init__()
        self.__dict__["_backbone"] = backbone  # not a submodule: no second registration

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        outputs, self._backbone.rpn_outputs = self._backbone.rpn_outputs, None
        if outputs is None:
            raise RuntimeError("the RPN head ran without the exported backbone before it")
        return outputs


class _RuntimeBoxHead(nn.Module):
    """Stands in for ``roi_heads.box_head``: returns [logits | deltas] for ``_SplitPredictor``."""

    def __init__(self, run: Runner, num_logits: int) -> None:
        super().__init__()
        self.run, self.num_logits = run, num_logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 0:
            return x.new_zeros((0, self.num_logits * 5))
        logits, deltas = self.run(np.ascontiguousarray(x.float().numpy()))
        return torch.cat([torch.from_numpy(logits), torch.from_numpy(deltas)], dim=1)


class _SplitPredictor(nn.Module):
    def __init__(self, num_logits: int) -> None:
        super().__init__()
        self.num_logits = num_logits

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[:, :self.num_logits], x[:, self.num_logits:]


class ExportedScorer:
    """A torchvision detector whose heavy layers run in ``runtime`` (onnxruntime | openvino).

    ``model`` is called like the torch detector (eval mode only: it cannot train) and has its
    ``detector_cfg``, ``num_classes`` and ``checkpoint_extra``. Not thread-safe: one forward at a
    time (the serving app already serialises inference).
    """

    def __init__(self, model: nn.Module, files: dict[str, Path], *, runtime: str,
                 threads: int | None = None) -> None:
        self.runtime = runtime
        self.files = dict(files)
        names = level_names(model)
        hybrid = copy.deepcopy(model).eval()
        num_logits = hybrid.roi_heads.box_predictor.cls_score.out_features
        backbone = _RuntimeBackbone(make_runner(Path(files["dense"]), runtime, threads=threads),
                                    names, model.backbone.out_channels)
        hybrid.backbone = backbone
        hybrid.rpn.head = _CachedRpnHead(backbone)
        hybrid.roi_heads.box_head = _RuntimeBoxHead(
            make_runner(Path(files["box"]), runtime, threads=threads), num_logits)
        hybrid.roi_heads.box_predictor = _SplitPredictor(num_logits)
        hybrid.train = _eval_only(hybrid)  # type: ignore[method-assign]
        self.model = hybrid


def _eval_only(model: nn.Module) -> Callable[..., nn.Module]:
    def train(mode: bool = True) -> nn.Module:
        if mode:
            raise RuntimeError("an exported scorer only runs inference")
        return nn.Module.train(model, False)

    return train


def load_exported(model: nn.Module, folder: Path | None, *, runtime: str,
                  threads: int | None = None) -> ExportedScorer | None:
    """The exported scorer from ``folder`` (holding ``scorer_dense.onnx`` and
    ``scorer_box.onnx``) for ``model``, or None with one log line saying why torch is used."""
    files = {"dense": folder / DENSE_FILE, "box": folder / BOX_FILE} if folder else {}
    if not files or not all(p.is_file() for p in files.values()):
        log.info("scoring with torch: no exported scorer%s", f" in {folder}" if folder else "")
        return None
    try:
        return ExportedScorer(model, files, runtime=runtime, threads=threads)
    except ImportError as exc:
        log.warning("scoring with torch: %s", exc)
        return None


def describe(scorer: Any) -> str:
    """'torch' or 'onnx:<runtime>' for records."""
    return f"onnx:{scorer.runtime}" if isinstance(scorer, ExportedScorer) else "torch"


def compare_scores(reference: list[Any], other: list[Any], *, iou: float = 0.99) -> dict[str, float]:
    """How closely ``other`` (``ImageScores``, e.g. from the exported scorer) reproduces
    ``reference`` (torch) on the same images.

    A reference detection is matched when ``other`` has one of the same label whose box has
    IoU >= ``iou`` with it (the best such). Returns ``matched`` (fraction of reference
    detections matched), ``count_diff`` (most |len(ref) - len(other)| on an image),
    ``max_prob_diff`` (largest |p_ref - p_other| over the probability rows of matched pairs,
    background column included), ``max_feature_diff`` (pooled P2 features, absolute) and
    ``min_iou`` (the worst IoU among matched pairs).
    """
    from torchvision.ops import box_iou

    total = matched = 0
    count_diff = prob_diff = feature_diff = 0.0
    min_iou = 1.0
    for a, b in zip(reference, other, strict=True):
        if a.image_id != b.image_id:
            raise ValueError(f"image order differs: {a.image_id} vs {b.image_id}")
        count_diff = max(count_diff, abs(len(a.scores) - len(b.scores)))
        feature_diff = max(feature_diff, float(np.abs(a.feature - b.feature).max()))
        total += len(a.scores)
        if not len(a.scores) or not len(b.scores):
            continue
        ious = box_iou(torch.from_numpy(a.boxes), torch.from_numpy(b.boxes)).numpy()
        ious[a.labels[:, None] != b.labels[None, :]] = 0.0
        best = ious.argmax(axis=1)
        for i, j in enumerate(best):
            if ious[i, j] >= iou:
                matched += 1
                min_iou = min(min_iou, float(ious[i, j]))
                prob_diff = max(prob_diff, float(np.abs(a.probs[i] - b.probs[j]).max()))
    return {"matched": matched / total if total else 1.0, "count_diff": float(count_diff),
            "max_prob_diff": prob_diff, "max_feature_diff": feature_diff, "min_iou": min_iou,
            "detections": float(total)}
