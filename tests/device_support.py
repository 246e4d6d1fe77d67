"""A second device on a CPU-only machine, for testing that tensors follow the model's device.

``on_sim_device(model)`` gives the model's weights the type ``SimTensor``: CPU memory that says
``tensor.device == meta`` and behaves like memory on another device. Inside ``SimDevice()``
(a ``TorchFunctionMode``) ``x.to(<the model's device>)`` and factories called with
``device=<the model's device>`` make ``SimTensor``s; ``.cpu()`` / ``.to("cpu")`` make plain
tensors again; an op mixing a ``SimTensor`` with a plain CPU tensor (other than a 0-d one)
raises "Expected all tensors to be on the same device", and ``.numpy()`` of a ``SimTensor``
raises, as CUDA does. Everything computes for real (on the CPU), so the product code runs its
real path end to end: a stage that forgets to move an input to the model's device, or to bring
a result back before storing it, fails here as it would on a GPU.

``DeviceRecorder(model)`` is a forward pre-hook that records the devices of every tensor the
model is called with (images and targets).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

SIM = torch.device("meta")


def _wrap(value: Any) -> Any:
    return tree_map(lambda t: t.as_subclass(SimTensor) if type(t) is torch.Tensor else t, value)


def _names_sim(arg: Any) -> bool:
    if isinstance(arg, SimTensor):
        return True
    if isinstance(arg, (str, torch.device)):
        try:
            return torch.device(arg).type == SIM.type
        except (RuntimeError, TypeError):
            return False
    return False


def _names_cpu(args: tuple, kwargs: dict) -> bool:
    flat, _ = tree_flatten((args, kwargs))
    for arg in flat:
        if isinstance(arg, (str, torch.device)):
            try:
                if torch.device(arg).type == "cpu":
                    return True
            except (RuntimeError, TypeError):
                pass
    return False


class SimTensor(torch.Tensor):
    """CPU memory that reports (and behaves as if it lives on) another device."""

    @property
    def device(self) -> torch.device:  # noqa: D401 - the tensor's (simulated) device
        return SIM

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.copy_:  # a copy between devices is allowed (load_state_dict)
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        if func is torch.Tensor.cpu or (func is torch.Tensor.to and _names_cpu(args[1:], kwargs)):
            with torch._C.DisableTorchFunctionSubclass():
                out = func(*args, **kwargs)
            return out.as_subclass(torch.Tensor) if isinstance(out, torch.Tensor) else out
        if func is torch.Tensor.numpy:
            raise TypeError("can't convert a tensor on the simulated device to numpy: "
                            "use Tensor.cpu() to copy the tensor to host memory first")
        flat, _ = tree_flatten((args, kwargs))
        plain = [t for t in flat if type(t) is torch.Tensor and t.dim() > 0]
        if plain:
            raise RuntimeError("Expected all tensors to be on the same device, but found at least "
                               f"two devices, meta (simulated) and cpu! ({func})")
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        return _wrap(out)


class SimDevice(TorchFunctionMode):
    """Moves to the simulated device, and factories on it, make ``SimTensor``s."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.to and not isinstance(args[0], SimTensor):
            flat, _ = tree_flatten((args[1:], kwargs))
            if any(_names_sim(a) for a in flat):
                rest = [a for a in args[1:] if not isinstance(a, (str, torch.device, torch.Tensor))]
                kwargs.pop("device", None)
                kwargs.pop("non_blocking", None)
                moved = args[0].to(*rest, **kwargs) if (rest or kwargs) else args[0].clone()
                return moved.as_subclass(SimTensor)
        if _names_sim(kwargs.get("device")):
            kwargs["device"] = "cpu"
            return _wrap(func(*args, **kwargs))
        return func(*args, **kwargs)


def on_sim_device(model: nn.Module) -> nn.Module:
    """Put every parameter and buffer of ``model`` on the simulated device (in place)."""
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None:
                module._parameters[name] = nn.Parameter(param.detach().as_subclass(SimTensor),
                                                        requires_grad=param.requires_grad)
        for name, buf in list(module._buffers.items()):
            if buf is not None:
                module._buffers[name] = buf.as_subclass(SimTensor)
    return model


def plain_cpu(tensor: torch.Tensor) -> bool:
    """True for an ordinary CPU tensor (not on the simulated device)."""
    return type(tensor) is torch.Tensor or (isinstance(tensor, nn.Parameter)
                                            and not isinstance(tensor, SimTensor))


class DeviceRecorder:
    """Records the device of every tensor passed to ``model``'s forward (args and kwargs)."""

    def __init__(self, model: nn.Module) -> None:
        self.devices: list[str] = []
        self.calls = 0
        self._handle = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        self.calls += 1
        flat, _ = tree_flatten((args, kwargs))
        self.devices += [str(t.device) for t in flat if isinstance(t, torch.Tensor)]

    def close(self) -> None:
        self._handle.remove()
