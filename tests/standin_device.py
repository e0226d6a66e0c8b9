"""A stand-in accelerator for CPU-only test machines: the jobs run their real code paths with
``device="meta"`` standing for a GPU; every tensor "on the accelerator" holds real values computed
on the CPU, and any operation that mixes devices fails as it fails on a GPU.

``with standin_accelerator():`` activates it. Inside:

- a tensor moved to the stand-in device (``.to("meta")``, a module's ``.to``) or created there
  (``torch.zeros(..., device="meta")``) becomes a :class:`StandInTensor`: it reports
  ``device(type='meta')`` and wraps a real CPU tensor; ``.cpu()``, ``.to("cpu")`` and ``.item()``
  read it back, as from a GPU;
- an operation whose tensor arguments live on different devices raises :class:`DeviceMismatch`
  with the message a GPU gives ("Expected all tensors to be on the same device"), except for 0-dim
  CPU tensors, which CUDA kernels take as scalars; a random operation on the stand-in device with
  a CPU ``torch.Generator`` raises too (CUDA wants a CUDA generator).

Why the meta device and real values: a wrapper that reported ``cuda`` would make autograd ask the
CUDA runtime for streams, which fails without a driver; plain meta or fake tensors carry no values,
so a job would stop at its first host read (a loss's ``.item()``, a metric) and never reach its later
paths (validation, the checkpoint, the evaluation). With the stand-in each job runs to its end.

Saving: a stand-in tensor pickles as its CPU values (what a CUDA tensor saved by ``torch.save`` reads
back as with ``map_location="cpu"``, as :func:`kdinv.io.load_tensors` loads).
"""

from __future__ import annotations

import contextlib
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

STANDIN = torch.device("meta")
"""The device that stands for the accelerator: pass it (or "meta") as a job's ``device``."""

aten = torch.ops.aten

# Operations that copy between devices: the only ones allowed to see two devices. The result lives
# where the copy's target device (``_to_copy``) or destination (``copy_``) is.
_TO_COPY = aten._to_copy.default
_COPY_INTO = {aten.copy_.default, aten._copy_from.default, aten._copy_from_and_resize.default}


class DeviceMismatch(RuntimeError):
    """An operation mixed the stand-in accelerator and the CPU (where a GPU raises)."""


class StandInTensor(torch.Tensor):
    """A tensor on the stand-in device: real values in :attr:`elem` (a CPU tensor)."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        out = torch.Tensor._make_wrapper_subclass(
            cls, elem.size(), strides=elem.stride(), storage_offset=elem.storage_offset(),
            dtype=elem.dtype, layout=elem.layout, device=STANDIN, requires_grad=False,
        )
        out.elem = elem
        return out

    def __repr__(self):
        return f"StandInTensor({self.elem!r})"

    @property
    def is_meta(self) -> bool:
        """False: it holds values. (``load_state_dict`` skips copying into a meta parameter, as
        into one without storage; into a stand-in one it copies, as into a GPU's.)"""
        return False

    def __reduce_ex__(self, protocol):
        return self.elem.detach().clone().__reduce_ex__(protocol)

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"a stand-in accelerator tensor was used outside standin_accelerator(): {func}")


def _zeros_if_plain_meta(a):
    if isinstance(a, torch.Tensor) and not isinstance(a, StandInTensor) and a.device.type == STANDIN.type:
        return StandInTensor(torch.zeros(a.shape, dtype=a.dtype))
    return a


def _on_standin(device) -> bool:
    return device is not None and torch.device(device).type == STANDIN.type


def _device_name(t: torch.Tensor) -> str:
    return "accelerator (stand-in)" if isinstance(t, StandInTensor) else str(t.device)


class StandInMode(TorchDispatchMode):
    """The dispatch mode behind :func:`standin_accelerator`; ``ops_on_standin`` counts the
    operations that ran on the stand-in device, so a test can check that work really ran there."""

    def __init__(self):
        super().__init__()
        self.ops_on_standin = 0
        self.host_to_device = []  # shapes of the tensors copied from the CPU to the stand-in device

    def _result_on_standin(self, func, args, kwargs, tensors) -> bool:
        if func is _TO_COPY:
            device = kwargs.get("device")
            return _on_standin(device) if device is not None else isinstance(args[0], StandInTensor)
        if func in _COPY_INTO:
            return isinstance(args[0], StandInTensor)
        devices = {
            _device_name(t) for t in tensors
            if isinstance(t, StandInTensor) or not (t.dim() == 0 and t.device.type == "cpu")
        }  # fmt: skip
        if kwargs.get("device") is not None:
            device = torch.device(kwargs["device"])
            devices.add("accelerator (stand-in)" if _on_standin(device) else str(device))
        if len(devices) > 1:
            raise DeviceMismatch(
                "Expected all tensors to be on the same device, but found at least two devices, "
                f"{' and '.join(sorted(devices))}! (in {func})"
            )
        on_standin = devices == {"accelerator (stand-in)"}
        generator = kwargs.get("generator")
        if on_standin and isinstance(generator, torch.Generator) and generator.device.type == "cpu":
            raise DeviceMismatch(f"Expected an accelerator generator but found a CPU one (in {func})")
        return on_standin

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        # a plain meta tensor here is one autograd made for the stand-in device without data (the
        # zero tangent of forward-mode autodiff): zeros on the stand-in
        args, kwargs = tree_map(_zeros_if_plain_meta, (args, kwargs))
        flat, _ = tree_flatten((args, kwargs))
        tensors = [a for a in flat if isinstance(a, torch.Tensor)]
        out_standin = self._result_on_standin(func, args, kwargs, tensors)
        wrappers = {id(t.elem): t for t in tensors if isinstance(t, StandInTensor)}
        if wrappers or out_standin:
            self.ops_on_standin += 1
        if func is _TO_COPY and out_standin and not isinstance(args[0], StandInTensor):
            self.host_to_device.append(tuple(args[0].shape))

        def unwrap(a):
            return a.elem if isinstance(a, StandInTensor) else a

        args, kwargs = tree_map(unwrap, args), tree_map(unwrap, kwargs)
        if _on_standin(kwargs.get("device")):
            kwargs["device"] = torch.device("cpu")
        out = func(*args, **kwargs)

        def wrap(o):
            if not isinstance(o, torch.Tensor) or isinstance(o, StandInTensor):
                return o
            if id(o) in wrappers:  # an in-place or out= operation returns its own argument
                return wrappers[id(o)]
            return StandInTensor(o) if out_standin else o

        return tree_map(wrap, out)


class StandInAutocast(TorchFunctionMode):
    """Autocast on the stand-in device, which torch's own autocast does not know: matmuls and
    convolutions with a stand-in tensor argument cast their floating-point arguments to ``dtype``
    (a cast autograd records, as autocast's), so they compute and return ``dtype``; ``ops`` counts
    them. Everything else runs as it is (reductions, softmax, the losses in float32)."""

    LOWER_PRECISION: ClassVar[set] = {F.linear, F.conv1d, F.conv2d, torch.matmul, torch.mm, torch.bmm, torch.einsum,
                       torch.Tensor.matmul, torch.Tensor.__matmul__}

    def __init__(self, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.dtype = dtype
        self.ops = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat, _ = tree_flatten((args, kwargs))
        if func in self.LOWER_PRECISION and any(isinstance(a, StandInTensor) for a in flat):
            self.ops += 1
            args, kwargs = tree_map(self._cast, (args, kwargs))
        return func(*args, **kwargs)

    def _cast(self, a):
        return a.to(self.dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a


@contextlib.contextmanager
def standin_accelerator():
    """Run the block with the stand-in accelerator (module docstring); yields the mode."""
    mode = StandInMode()
    # a module's .to() replaces each parameter's tensor by swapping it with the converted one (the
    # parameter objects stay the same, as with a GPU); its default, assigning .data, would change
    # the wrapper's dtype and device without its values
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        with mode:
            yield mode
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)
