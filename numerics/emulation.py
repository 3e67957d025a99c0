"""Drop-in emulation for any PyTorch model: ``emulate(model, target, **options)``.

``emulate`` deep-copies the model, lets the target swap modules in the copy, and installs a
:class:`torch.overrides.TorchFunctionMode` around the copy's forward pass that routes functional
calls (``F.softmax``, ``Tensor.softmax``, ``F.scaled_dot_product_attention``, ``F.linear``,
``torch.matmul``, ...) to the target's emulators. User models need no surgery, the original model is
left untouched, and the copy keeps its class (Hugging Face methods such as ``generate`` still work).

Emulated operations take and return the model's own dtype; inside, they compute what the hardware
computes (e.g. BF16 values held in a float32 tensor). With autograd on, gradients flow straight
through: the backward pass is that of the exact operation (straight-through estimator), so models
can be fine-tuned with emulation on.

The copy carries its configuration in ``copy.emulation`` (target and typed options), which is what
``hwmodels.estimate(copy, *inputs)`` prices. Inside :func:`reference_arithmetic` an emulated model
computes the model's own operations (no handler runs; swapped modules compute their plain product),
which is how ``hwmodels.trace`` records the model's operations rather than the emulator's.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import copy
import dataclasses
import inspect

from torch import nn
from torch.overrides import TorchFunctionMode

from numerics.registry import TargetOptions, get_target

__all__ = ["emulate", "Emulation", "reference_arithmetic", "in_reference_arithmetic"]

_REFERENCE = contextvars.ContextVar("edgenum_reference_arithmetic", default=False)
_CALL = contextvars.ContextVar("edgenum_call", default=None)
"""The innermost emulated forward pass running in this thread (None inside a module that emulates
itself): only its emulation handles calls, so nested or concurrent passes never mix."""


@contextlib.contextmanager
def reference_arithmetic():
    """Within this block (in this thread), emulated models compute their reference operations:
    the function mode passes every call through and modules that emulate themselves compute the
    plain product of their stored weights. ``hwmodels.trace`` uses it to record an emulated model's
    own operations."""
    token = _REFERENCE.set(True)
    try:
        yield
    finally:
        _REFERENCE.reset(token)


def in_reference_arithmetic() -> bool:
    """True inside :func:`reference_arithmetic` (checked by modules that emulate themselves)."""
    return _REFERENCE.get()


@dataclasses.dataclass
class Emulation:
    """What ``emulate`` did to a model; available as ``model.emulation``.

    ``config`` holds the target's typed options (the hardware that was emulated), ``options`` the
    same as a dict; ``counts`` the operations replaced during the most recent forward pass, per kind
    (e.g. ``{"softmax": 6, "gelu": 6, "matmul": 36}``); ``swapped`` the modules replaced at
    ``emulate`` time, per kind; ``details`` what a target records beyond that.
    """

    target: str
    config: TargetOptions
    """The typed options the model was emulated with."""
    handlers: dict = dataclasses.field(repr=False, default_factory=dict)
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    swapped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    details: dict = dataclasses.field(default_factory=dict)
    """Target-specific records, e.g. ``details["sparsity"]`` for ``"flexisaga"``."""

    @property
    def options(self) -> dict:
        """``config`` as a dict."""
        return self.config.as_dict()

    def count(self, kind: str, n: int = 1) -> None:
        """Count a replaced operation in the pass running in this thread (``counts`` when none runs)."""
        call = _CALL.get()
        (call.counts if call is not None and call.emulation is self else self.counts)[kind] += n

    def __str__(self) -> str:
        changed = self.config.changed()
        text = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        lines = [f"emulated target {self.target!r}" + (f" ({text})" if text else " (defaults)")]
        if self.swapped:
            lines.append("  modules swapped: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.swapped.items())))
        if self.counts:
            lines.append(
                "  replaced in the last forward pass: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.counts.items()))
            )
        elif self.handlers:
            lines.append("  no forward pass yet")
        return "\n".join(lines)


class _Call:
    """One emulated forward pass in one thread: its emulation and what it replaced."""

    def __init__(self, emulation: Emulation):
        self.emulation = emulation
        self.counts = collections.Counter()


class _Mode(TorchFunctionMode):
    """Routes the functions an emulation handles to its handlers, while its own pass is the innermost
    one of this thread (the mode is off inside its handlers)."""

    def __init__(self, call: _Call):
        super().__init__()
        self.call = call

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        emulation = self.call.emulation
        handler = emulation.handlers.get(func)
        if handler is None or _CALL.get() is not self.call:
            return func(*args, **kwargs)
        return handler(emulation, func, args, kwargs)


class _InstanceForward:
    """Base of the forwards ``emulate`` sets on instances: picklable, with the signature of the class's
    forward (Hugging Face inspects it to route keyword arguments)."""

    def __init__(self, module: nn.Module):
        self.module = module

    @property
    def __signature__(self):
        return inspect.signature(type(self.module).forward.__get__(self.module))


class _EmulatedForward(_InstanceForward):
    """The forward of an emulated model: the class's forward inside the target's function mode, entered
    and left with ``with`` (so an interrupt or an error cannot leave it on), as the innermost pass of
    this thread."""

    def __call__(self, *args, **kwargs):
        module = self.module
        forward = type(module).forward.__get__(module)
        if _REFERENCE.get():  # a reference pass (tracing) neither emulates nor touches the record
            return forward(*args, **kwargs)
        call = _Call(module.emulation)
        token = _CALL.set(call)
        try:
            with _Mode(call):
                out = forward(*args, **kwargs)
        finally:
            _CALL.reset(token)
        module.emulation.counts = call.counts  # the last finished pass, swapped in whole
        return out


class _SelfEmulatedForward(_InstanceForward):
    """The forward of a module that emulates itself (e.g. a crossbar Linear): its own torch calls are
    part of the emulation, so no handler sees them."""

    def __call__(self, *args, **kwargs):
        token = _CALL.set(None)
        try:
            return type(self.module).forward(self.module, *args, **kwargs)
        finally:
            _CALL.reset(token)


def emulate(model: nn.Module, target: str, **options) -> nn.Module:
    """A copy of ``model`` whose arithmetic follows ``target``; ``model`` itself is left untouched.

    ``target`` is one of :func:`numerics.registry.targets` (``"fp32"`` is the unmodified arithmetic).
    Options are the target's typed options (``numerics.nn.target_options(target)`` lists them with
    their defaults); an unknown option or a bad value raises ``ValueError`` naming it and what is
    allowed, before the model is copied. The copy reports what was replaced in ``copy.emulation``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    spec = get_target(target)
    config = spec.make_options(**options)
    for name, module in model.named_modules():
        if isinstance(getattr(module, "emulation", None), Emulation):
            where = f" (submodule {name!r})" if name else ""
            raise ValueError(f"model is already emulated{where}; emulate the original model instead")
    new = copy.deepcopy(model)
    emulation = Emulation(target, config)
    new.emulation = emulation  # set before prepare, so prepared modules can count into it
    emulation.handlers = spec.prepare(new, emulation.options if spec.legacy else config)
    for module in new.modules():
        if module is not new and getattr(type(module), "emulates_itself", False):  # e.g. a crossbar Linear
            module.forward = _SelfEmulatedForward(module)
    new.forward = _EmulatedForward(new)
    return new
