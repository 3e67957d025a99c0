"""Drop-in emulation for any PyTorch model: ``emulate(model, target, **options)``.

``emulate`` deep-copies the model, lets the target swap modules in the copy, and installs a
:class:`torch.overrides.TorchFunctionMode` around every call into the copy (its forward, any
submodule's forward, ``generate``) that routes functional calls (``F.softmax``, ``Tensor.softmax``,
``F.scaled_dot_product_attention``, ``F.linear``, ``torch.matmul``, ``torch.einsum``, convolutions, ...)
to the target's emulators. User models need no surgery, the original model is left untouched, and the
copy keeps its class (Hugging Face methods such as ``generate`` still work).

Emulated operations take and return the model's own dtype; inside, they compute what the hardware
computes (e.g. BF16 values held in a float32 tensor). With autograd on, gradients flow straight
through: the backward pass is that of the exact operation (straight-through estimator), so models
can be fine-tuned with emulation on.

A pass runs its small CPU operations on the calling thread alone (``numerics/threads.py``): the
parallel ones of a small model's pass would each wait for a busy core.

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
import itertools
import warnings

from torch import nn, overrides
from torch.overrides import TorchFunctionMode

from numerics import threads
from numerics.registry import TargetOptions, get_target

__all__ = [
    "emulate",
    "Emulation",
    "UnemulatedWarning",
    "reference_arithmetic",
    "in_reference_arithmetic",
    "on_host",
    "HOST_ATTRIBUTE",
]

_REFERENCE = contextvars.ContextVar("edgenum_reference_arithmetic", default=False)
_CALL = contextvars.ContextVar("edgenum_call", default=None)
"""The innermost emulated forward pass running in this thread (None inside a module that emulates
itself): only its emulation handles calls, so nested or concurrent passes never mix."""
_HOST = contextvars.ContextVar("edgenum_on_host", default=False)
HOST_ATTRIBUTE = "edgenum_on_host"
"""A module with this attribute set True runs off the accelerator (a head): handlers see ``on_host()``."""


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


def on_host() -> bool:
    """True inside the forward of a module a target keeps off its accelerator (marked with
    :data:`HOST_ATTRIBUTE`, e.g. a head): its operations are the model's own, not unemulated ones."""
    return _HOST.get()


@dataclasses.dataclass
class Emulation:
    """What ``emulate`` did to a model; available as ``model.emulation``.

    ``config`` holds the target's typed options (the hardware that was emulated), ``options`` the
    same as a dict; ``swapped`` the modules replaced at ``emulate`` time, per kind; ``counts`` the
    operations emulated during the most recent pass, per kind (e.g. ``{"softmax": 6, "gelu": 6,
    "matmul": 36}``; modules that emulate themselves count as their kind, e.g. ``"linear"``);
    ``unemulated`` the operations of that pass the target's hardware would run but the emulation computes
    in the model's own arithmetic (a warning names each kind the first time it is seen); ``details`` what
    a target records beyond that. A pass is the outermost call into the model or any of its submodules,
    or a whole ``generate()``.
    """

    target: str
    config: TargetOptions
    """The typed options the model was emulated with."""
    handlers: dict = dataclasses.field(repr=False, default_factory=dict)
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    swapped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    details: dict = dataclasses.field(default_factory=dict)
    """Target-specific records, e.g. ``details["sparsity"]`` for ``"flexisaga"``."""
    unemulated: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    passes: int = 0
    """Finished passes since ``emulate``."""
    warned: set = dataclasses.field(default_factory=set, repr=False)
    """Unemulated kinds already named in a warning."""

    @property
    def options(self) -> dict:
        """``config`` as a dict."""
        return self.config.as_dict()

    def _record(self):
        """The pass of this emulation running in this thread, else this record itself."""
        call = _CALL.get()
        return call if call is not None and call.emulation is self else self

    def count(self, kind: str, n: int = 1) -> None:
        """Count an emulated operation in the pass running in this thread (``counts`` when none runs)."""
        self._record().counts[kind] += n

    def note_unemulated(self, kind: str, n: int = 1) -> None:
        """Record an operation the hardware runs but the emulation leaves in the model's arithmetic."""
        self._record().unemulated[kind] += n

    def _finish(self, call: _Call) -> None:
        self.counts, self.unemulated = call.counts, call.unemulated  # the last finished pass, swapped in whole
        self.passes += 1
        new = sorted(set(call.unemulated) - self.warned)
        if new:
            self.warned.update(new)
            warnings.warn(
                f"emulated target {self.target!r} does not cover {', '.join(new)}: "
                "computed in the model's own arithmetic (see model.emulation.unemulated)",
                UnemulatedWarning,
                stacklevel=3,
            )

    def __str__(self) -> str:
        changed = self.config.changed()
        text = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        lines = [f"emulated target {self.target!r}" + (f" ({text})" if text else " (defaults)")]
        if self.swapped:
            lines.append("  modules swapped: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.swapped.items())))
        if not self.passes:
            lines.append("  no forward pass yet")
            return "\n".join(lines)
        emulated = ", ".join(f"{k} x{v}" for k, v in sorted(self.counts.items())) or "nothing"
        lines.append(f"  emulated in the last pass: {emulated}")
        if self.unemulated:
            lines.append(
                "  not emulated (model's arithmetic): "
                + ", ".join(f"{k} x{v}" for k, v in sorted(self.unemulated.items()))
            )
        return "\n".join(lines)


class UnemulatedWarning(UserWarning):
    """An emulated model ran an operation its target's hardware would run that the emulation does not
    cover (it was computed in the model's own arithmetic)."""


class _Call:
    """One emulated pass in one thread: its emulation and what it replaced."""

    def __init__(self, emulation: Emulation, outer: _Call | None = None):
        self.emulation = emulation
        self.counts = collections.Counter()
        self.unemulated = collections.Counter()
        self.mode: _Mode | None = None
        shared = outer.threads if outer is not None else None
        self.owns_threads = shared is None and threads.small_on_calling_thread()
        self.threads = threads.Threads() if self.owns_threads else shared
        """This thread's torch threads during the pass: small operations run on it alone
        (``numerics/threads.py``); a pass of another model inside this one shares them."""


class _Mode(TorchFunctionMode):
    """Routes the functions an emulation handles to its handlers, while its own pass is the innermost
    one of this thread (the mode is off inside its handlers). A handled call with ``out=`` writes the
    emulated result into ``out``."""

    def __init__(self, call: _Call):
        super().__init__()
        self.call = call
        call.mode = self

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        emulation = self.call.emulation
        if _CALL.get() is not self.call:
            return func(*args, **kwargs)
        if self.call.threads is not None:
            self.call.threads.use(threads.large(args, kwargs))
        handler = emulation.handlers.get(func)
        if handler is None:
            return func(*args, **kwargs)
        out = kwargs.pop("out", None)
        result = handler(emulation, func, args, kwargs)
        if out is None:
            return result
        if out.shape != result.shape:
            out.resize_(result.shape)
        return out.copy_(result)


class _Entry:
    """A method of an emulated model's module (``forward``, or ``generate`` on the root): every call into
    the model, at any depth, runs emulated. The outermost such call in a thread is one pass: it enters
    the target's function mode with ``with`` (so an interrupt or an error cannot leave it on) and, when it
    finishes, its record replaces ``emulation.counts``; calls inside it join it. Picklable, with the
    signature of the class's method (Hugging Face inspects it to route keyword arguments)."""

    def __init__(self, module: nn.Module, emulation: Emulation, method: str = "forward"):
        self.module, self.emulation, self.method = module, emulation, method

    @property
    def __signature__(self):
        return inspect.signature(getattr(type(self.module), self.method).__get__(self.module))

    def __call__(self, *args, **kwargs):
        method = getattr(type(self.module), self.method).__get__(self.module)
        if _REFERENCE.get():  # a reference pass (tracing) neither emulates nor touches the record
            return method(*args, **kwargs)
        call = _CALL.get()
        if call is not None and call.emulation is self.emulation:
            return self._run(call, method, args, kwargs)
        call = _Call(self.emulation, call)
        token = _CALL.set(call)
        try:
            with _Mode(call):
                out = self._run(call, method, args, kwargs)
        finally:
            _CALL.reset(token)
            if call.owns_threads:
                call.threads.restore()
        self.emulation._finish(call)
        return out

    def _run(self, call: _Call, method, args, kwargs):
        return method(*args, **kwargs)


class _OnHost(_Entry):
    """The forward of a module the target keeps off its accelerator (:data:`HOST_ATTRIBUTE`): handlers
    see :func:`on_host` inside it."""

    def _run(self, call: _Call, method, args, kwargs):
        token = _HOST.set(True)
        try:
            return method(*args, **kwargs)
        finally:
            _HOST.reset(token)


class _SelfEmulating(_Entry):
    """The forward of a module that emulates itself (e.g. a crossbar Linear): counted as one operation of
    its ``emulated_kind``; its own torch calls are part of the emulation, so no handler sees them. It
    runs on all the pass's threads where its input or one of its own tensors is large."""

    def __init__(self, module: nn.Module, emulation: Emulation):
        super().__init__(module, emulation)
        tensors = itertools.chain(module.parameters(), module.buffers())
        self.large = max((t.numel() for t in tensors), default=0) >= threads.PARALLEL_ELEMENTS

    def _run(self, call: _Call, method, args, kwargs):
        call.counts[type(self.module).emulated_kind] += 1
        if call.threads is not None:
            call.threads.use(self.large or threads.large(args, kwargs))
        token = _CALL.set(None)
        try:
            with _mode_off(call.mode):
                return method(*args, **kwargs)
        finally:
            _CALL.reset(token)


@contextlib.contextmanager
def _mode_off(mode: _Mode | None):
    """Take ``mode`` off the stack while a module emulates itself, where it is the innermost mode: the
    module's many small torch calls then skip a Python dispatch each (the mode would pass them through
    anyway). Modes entered after it, and torch versions without the helper, keep the pass-through."""
    pop = getattr(overrides, "_pop_mode_temporarily", None)
    current = getattr(overrides, "_get_current_function_mode", lambda: None)
    if mode is None or pop is None or current() is not mode:
        yield
        return
    with pop():
        yield


def outer_modules(model: nn.Module):
    """``(module, emulates_itself)`` for every module of ``model`` that is not inside a module that emulates
    itself (whose own submodules are part of its emulation)."""
    inside: set[int] = set()
    for module in model.modules():
        if id(module) in inside:
            continue
        itself = getattr(type(module), "emulates_itself", False)
        if itself:
            inside.update(id(m) for m in module.modules())
        yield module, itself


def _install_entries(model: nn.Module, emulation: Emulation) -> None:
    """Wrap the forward of every module of ``model`` (not inside a module that emulates itself) and the
    root's ``generate``; which kind of entry is decided here, once, not on every call."""
    for module, itself in outer_modules(model):
        if itself:
            module.forward = _SelfEmulating(module, emulation)
        elif getattr(module, HOST_ATTRIBUTE, False):
            module.forward = _OnHost(module, emulation)
        else:
            module.forward = _Entry(module, emulation)
    if callable(getattr(type(model), "generate", None)):  # one pass over a whole generation
        model.generate = _Entry(model, emulation, "generate")


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
    _install_entries(new, emulation)
    return new
