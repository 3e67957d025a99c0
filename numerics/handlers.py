"""Helpers for emulation targets: which torch functions are which, how to read their arguments, and
handlers that compute a product, softmax or attention with a target's arithmetic and pass the exact
operation's gradient straight through.

A handler is ``handler(emulation, func, args, kwargs)``; a target's ``prepare`` returns
``{torch function: handler}`` (see :mod:`numerics.registry`).
"""

from __future__ import annotations

import collections
import math
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from numerics import einsum as contractions

if TYPE_CHECKING:
    from numerics.emulation import Emulation

__all__ = [
    "Handler",
    "Handlers",
    "SoftmaxFunctions",
    "GeluFunctions",
    "MatmulFunctions",
    "SDPA",
    "straight_through",
    "safe_softmax",
    "dynamic_operand_handlers",
    "is_float",
    "replace_modules",
    "linears_from_conv1d",
    "softmax_call",
    "matmul_call",
    "emulated_product",
    "product_handler",
    "emulated_softmax",
    "softmax_handler",
    "sdpa_call",
    "attention",
    "ContractionFunctions",
    "UncoveredProducts",
    "contraction_handler",
    "unemulated_handler",
    "uncovered_handlers",
    "standard_swaps",
    "keep_on_host",
    "StaticProducts",
    "static_product_handlers",
    "conv_handler",
    "swap_record",
]

Handler = Callable[..., Any]
Handlers = dict
"""Maps a torch function (e.g. ``F.softmax``) to ``handler(emulation, func, args, kwargs)``."""

SoftmaxFunctions = (F.softmax, torch.softmax, torch.Tensor.softmax)
GeluFunctions = (F.gelu,)
MatmulFunctions = (
    F.linear,
    torch.matmul,
    torch.Tensor.matmul,
    torch.Tensor.__matmul__,
    torch.mm,
    torch.Tensor.mm,
    torch.bmm,
    torch.Tensor.bmm,
    torch.addmm,
    torch.Tensor.addmm,
    torch.baddbmm,
    torch.Tensor.baddbmm,
    torch.mv,
    torch.Tensor.mv,
    torch.dot,
    torch.Tensor.dot,
)
SDPA = F.scaled_dot_product_attention
ContractionFunctions = (torch.einsum, torch.tensordot, torch.inner)
"""Contractions lowered to products (:mod:`numerics.einsum`) and run in the target's arithmetic."""
UncoveredProducts = (
    F.conv3d,
    F.conv_transpose1d,
    F.conv_transpose2d,
    F.conv_transpose3d,
    F.bilinear,
    F.multi_head_attention_forward,  # a subclass of nn.MultiheadAttention, not spelled out
    torch.addbmm,
    torch.chain_matmul,
    torch.linalg.multi_dot,
)
"""Products no target emulates yet: recorded in ``model.emulation.unemulated`` (with a warning)."""


class _Substitute(torch.autograd.Function):
    """Forward: ``emulated``. Backward: the incoming gradient goes to ``reference`` unchanged. No
    arithmetic joins the two values, so a non-finite reference (a fully masked softmax row, an
    overflowing product) cannot turn the emulated result into NaN."""

    @staticmethod
    def forward(ctx, reference, emulated):
        return emulated.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def straight_through(emulated: torch.Tensor, reference: Callable[[], torch.Tensor], *inputs) -> torch.Tensor:
    """``emulated`` in the forward pass, the gradient of ``reference()`` in the backward pass.

    ``reference`` is only evaluated when a gradient is needed; the forward values are ``emulated``'s
    bit for bit either way.
    """
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in inputs):
        ref = reference()
        return _Substitute.apply(ref, emulated.detach().to(ref.dtype))
    return emulated


def safe_softmax(x: torch.Tensor, dim: int, dtype=None) -> torch.Tensor:
    """``torch.softmax``, except that a row with no finite logit (every entry -inf, e.g. a fully
    masked attention row) gives zeros, as ``F.scaled_dot_product_attention`` does, with zero gradient."""
    empty = (x == -math.inf).all(dim, keepdim=True)
    if not bool(empty.any()):
        return torch.softmax(x, dim, dtype=dtype)
    y = torch.softmax(x.masked_fill(empty, 0.0), dim, dtype=dtype)
    return y.masked_fill(empty, 0.0)


def is_float(*tensors) -> bool:
    """True if every argument is a floating-point tensor (other calls are not emulated)."""
    return all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in tensors)


def replace_modules(
    model: nn.Module, match: Callable[[nn.Module], bool], make: Callable[[nn.Module], nn.Module]
) -> collections.Counter:
    """Replace, in place, every submodule for which ``match`` holds by ``make(old)``; returns counts per
    replaced class name. The root itself is never replaced."""
    swapped = collections.Counter()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if match(child):
                setattr(parent, name, make(child))
                swapped[type(child).__name__] += 1
    return swapped


def linears_from_conv1d(model: nn.Module) -> collections.Counter:
    """Replace, in place, Hugging Face ``Conv1D`` layers (GPT-2's projections: ``x @ W + b`` with
    W stored (in, out)) by the equivalent ``nn.Linear``, so targets that place static weights on
    their own hardware find them. Returns ``{"Conv1D -> Linear": count}`` (empty if none)."""

    def to_linear(conv: nn.Module) -> nn.Linear:
        w = conv.weight.detach()
        lin = nn.Linear(w.shape[0], w.shape[1], bias=conv.bias is not None, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            lin.weight.copy_(w.T)
            if conv.bias is not None:
                lin.bias.copy_(conv.bias.detach())
        return lin

    swapped = replace_modules(model, lambda m: type(m).__name__ == "Conv1D" and m.weight.dim() == 2, to_linear)
    return collections.Counter({f"{name} -> Linear": n for name, n in swapped.items()})


def softmax_call(func, args, kwargs):
    """(input, dim, dtype) of any softmax spelling, with F.softmax's legacy implicit dim."""
    names = ("input", "dim", "_stacklevel", "dtype") if func is F.softmax else ("input", "dim", "dtype")
    call = dict(zip(names, args))
    call.update(kwargs)
    x = call.get("input", call.get("self"))
    dim = call.get("dim")
    if dim is None:
        dim = 0 if x.dim() in (0, 1, 3) else 1
    return x, dim, call.get("dtype")


def matmul_call(func, args, kwargs):
    """(a, b, bias, post) of any matmul spelling: the product is ``post(a @ b + bias)``."""
    if func is F.linear:
        x, w = args[0], args[1]
        bias = args[2] if len(args) > 2 else kwargs.get("bias")
        return x, w.transpose(-1, -2) if w.dim() > 1 else w, bias, None
    if func in (torch.addmm, torch.Tensor.addmm, torch.baddbmm, torch.Tensor.baddbmm):
        inp, a, b = args[0], args[1], args[2]
        beta, alpha = kwargs.get("beta", 1), kwargs.get("alpha", 1)
        if beta == 1 and alpha == 1:
            return a, b, inp, None
        return a, b, None, lambda prod: beta * inp + alpha * prod
    return args[0], args[1], None, None


def emulated_product(em: Emulation, product: Callable, a, b, bias=None, post=None, reference=None) -> torch.Tensor:
    """``post(product(em, a, b, bias))`` in the forward pass (``post`` may be None), the exact
    product's gradient in the backward pass; counted as one ``"matmul"``. ``product`` gets detached
    operands and returns ``a @ b + bias`` as the target computes it."""
    em.count("matmul")
    with torch.no_grad():
        # a vector operand is a one-row (one-column) matrix to the hardware, as torch.matmul treats it
        a2 = a.detach().unsqueeze(0) if a.dim() == 1 else a.detach()
        b2 = b.detach().unsqueeze(-1) if b.dim() == 1 else b.detach()
        y = product(em, a2, b2, None if bias is None else bias.detach()).to(a.dtype)
        if b.dim() == 1:
            y = y.squeeze(-1)
        if a.dim() == 1:
            y = y.squeeze(-2 if b.dim() > 1 else -1)
        if post is not None:
            y = post(y)
    return straight_through(y, reference or (lambda: torch.matmul(a, b)), a, b, bias)


class product_handler:  # noqa: N801  (used like the function it replaces; a class, so it pickles)
    """A handler for the matmul family computing each product with ``product(em, a, b, bias)``
    (see :func:`emulated_product`). ``linear=False`` leaves ``F.linear`` to a target that swaps its
    static-weight Linears: register the handler only for the other functions. ``product`` must be
    a module-level function for an emulated model to pickle."""

    def __init__(self, product: Callable, *, linear: bool = True):
        self.product, self.linear = product, linear

    def __call__(self, em: Emulation, func, args, kwargs):
        a, b, bias, post = matmul_call(func, args, kwargs)
        if not is_float(a, b):
            return func(*args, **kwargs)
        return emulated_product(em, self.product, a, b, bias, post, lambda: func(*args, **kwargs))


def emulated_softmax(em: Emulation, softmax: Callable, x: torch.Tensor, dim: int, dtype=None) -> torch.Tensor:
    """``softmax(em, x, dim)`` (detached input, the target's arithmetic) in the forward pass, the exact
    softmax's gradient in the backward pass; counted as one ``"softmax"``."""
    em.count("softmax")
    with torch.no_grad():
        y = softmax(em, x.detach(), dim)
    return straight_through(y.to(dtype or x.dtype), lambda: safe_softmax(x, dim, dtype=dtype), x)


class softmax_handler:  # noqa: N801  (used like the function it replaces; a class, so it pickles)
    """A handler for every softmax spelling computing it with ``softmax(em, x, dim)`` (see
    :func:`emulated_softmax`); non-float inputs run natively. ``softmax`` must be a module-level
    function for an emulated model to pickle."""

    def __init__(self, softmax: Callable):
        self.softmax = softmax

    def __call__(self, em: Emulation, func, args, kwargs):
        x, dim, dtype = softmax_call(func, args, kwargs)
        if not is_float(x):
            return func(*args, **kwargs)
        return emulated_softmax(em, self.softmax, x, dim, dtype)


def sdpa_call(args, kwargs):
    """Keyword view of ``F.scaled_dot_product_attention``'s arguments."""
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    call = dict(zip(names, args))
    call.update(kwargs)
    defaults = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False}
    return {**defaults, **call}


def attention(emulation: Emulation, call: dict, matmul: Callable, softmax: Callable) -> torch.Tensor:
    """Scaled dot-product attention spelled out, so its two products and its softmax can be
    emulated: ``softmax(Q K^T * scale + mask) V`` (``matmul(a, b)`` and ``softmax(x)`` along the last
    dimension are the target's; scaling, masking and dropout run exactly)."""
    q, k, v = call["query"], call["key"], call["value"]
    if call["enable_gqa"] and k.shape[-3] != q.shape[-3]:
        rep = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(rep, dim=-3), v.repeat_interleave(rep, dim=-3)
    scale = call["scale"] if call["scale"] is not None else 1.0 / math.sqrt(q.shape[-1])
    scores = matmul(q, k.transpose(-2, -1)) * scale
    L, S = q.shape[-2], k.shape[-2]
    if call["is_causal"]:
        causal = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
    mask = call["attn_mask"]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    probs = softmax(scores)
    if call["dropout_p"] > 0:
        probs = F.dropout(probs, call["dropout_p"])
    emulation.count("attention")
    return matmul(probs, v)


def dynamic_operand_handlers(softmax: Callable, product: Callable, sdpa: Handler) -> dict:
    """The handlers of a target whose static-weight Linears are swapped for modules that emulate
    themselves: every softmax spelling with ``softmax(em, x, dim)``, every product but ``F.linear``
    (and the contractions) with ``product(em, a, b, bias)``, SDPA with ``sdpa``, and the uncovered
    products recorded."""
    handlers = dict.fromkeys(SoftmaxFunctions, softmax_handler(softmax))
    handlers.update(
        dict.fromkeys([f for f in MatmulFunctions if f is not F.linear], product_handler(product, linear=False))
    )
    handlers.update(dict.fromkeys(ContractionFunctions, contraction_handler(product)))
    handlers.update(uncovered_handlers())
    handlers[SDPA] = sdpa
    return handlers


class unemulated_handler:  # noqa: N801  (a class, so it pickles)
    """A handler that runs the call in the model's arithmetic and records it as ``kind`` in
    ``model.emulation.unemulated`` (the target's hardware would run it; the emulation does not cover it),
    unless it runs inside a module the target keeps on the host (:func:`numerics.emulation.on_host`)."""

    def __init__(self, kind: str):
        self.kind = kind

    def __call__(self, em: Emulation, func, args, kwargs):
        from numerics.emulation import on_host

        if not on_host():
            em.note_unemulated(self.kind)
        return func(*args, **kwargs)


def keep_on_host(model: nn.Module, heads) -> int:
    """Mark the Linears and convolutions of ``model`` that ``heads`` names (:mod:`numerics.heads`) as run on
    the host: their functional products are the model's own, not unemulated. Returns how many."""
    from numerics.emulation import HOST_ATTRIBUTE
    from numerics.heads import head_rule

    rule = head_rule(heads)
    marked = 0
    for name, module in model.named_modules():
        if name and isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)) and rule(name, module):
            setattr(module, HOST_ATTRIBUTE, True)
            marked += 1
    return marked


StaticProducts = (F.linear, F.conv1d, F.conv2d)
"""Products whose weight a static-weight target (crossbars, a pruned array) places itself: called
functionally outside its swapped modules and heads, they escape it."""


def static_product_handlers() -> dict:
    """:data:`StaticProducts`, recorded as unemulated outside host modules (for targets that swap the
    modules holding static weights)."""
    return {f: unemulated_handler(f"functional {f.__name__}") for f in StaticProducts}


def uncovered_handlers() -> dict:
    """:data:`UncoveredProducts`, each recorded under its name."""
    return {f: unemulated_handler(f.__name__) for f in UncoveredProducts}


class contraction_handler:  # noqa: N801  (a class, so it pickles)
    """``torch.einsum``, ``torch.tensordot`` and ``torch.inner`` with every pairwise product computed by
    ``product(em, a, b, bias)`` (see :func:`emulated_product`; counted as ``"matmul"``). Forms the lowering
    does not take (einsum's sublist form) are recorded as unemulated."""

    def __init__(self, product: Callable):
        self.product = product

    def __call__(self, em: Emulation, func, args, kwargs):
        def matmul(a, b):
            return emulated_product(em, self.product, a, b)

        flat = [t for a in (*args, *kwargs.values()) for t in (a if isinstance(a, (list, tuple)) else (a,))]
        operands = [t for t in flat if isinstance(t, torch.Tensor)]
        if not operands or not is_float(*operands):
            return func(*args, **kwargs)
        try:
            if func is torch.einsum:
                ops = args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
                if not isinstance(args[0], str):
                    raise contractions.Unsupported("einsum's sublist form")
                return contractions.einsum_products(args[0], list(ops), matmul)
            if func is torch.tensordot:
                call = dict(zip(("a", "b", "dims"), args), **kwargs)
                return contractions.tensordot_product(call["a"], call["b"], call.get("dims", 2), matmul)
            return contractions.inner_product(*args, matmul, **kwargs)
        except contractions.Unsupported:
            em.note_unemulated(func.__name__)
            return func(*args, **kwargs)


def standard_swaps(model: nn.Module) -> collections.Counter:
    """The module swaps every target makes so that its handlers and module swaps see each product:
    Hugging Face ``Conv1D`` to ``nn.Linear`` (:func:`linears_from_conv1d`) and ``nn.MultiheadAttention``
    spelled out (:func:`numerics.mha.spell_out_attention_`). Returns the swap counts."""
    from numerics.mha import spell_out_attention_

    swapped = linears_from_conv1d(model)
    swapped.update(spell_out_attention_(model))
    return swapped


class conv_handler:  # noqa: N801  (a class, so it pickles)
    """``F.conv1d``/``F.conv2d`` as their im2col products (:mod:`numerics.conv`), each group's computed by
    ``product(em, cols, weight, bias)``; counted as one ``"conv"``; the exact convolution's gradient."""

    def __init__(self, product: Callable):
        self.product = product

    def __call__(self, em: Emulation, func, args, kwargs):
        from numerics.conv import conv_as_gemm, conv_call

        x, weight, bias, geometry = conv_call(func, args, kwargs)
        if not is_float(x, weight):
            return func(*args, **kwargs)
        em.count("conv")
        with torch.no_grad():
            y = conv_as_gemm(
                x.detach(),
                weight.detach(),
                None if bias is None else bias.detach(),
                geometry,
                lambda cols, w, b: self.product(em, cols, w, b),
            )
        return straight_through(y.to(x.dtype), lambda: func(*args, **kwargs), x, weight, bias)


def swap_record(model: nn.Module) -> collections.Counter:
    """``{"Linear -> CrossbarLinear": n, ...}``: the modules of ``model`` that emulate themselves (outermost
    only: a crossbar convolution's per-group Linears are part of it), by the layer kind they replace (their
    class attribute ``replaces``)."""
    from numerics.emulation import outer_modules

    return collections.Counter(
        f"{type(m).replaces} -> {type(m).__name__}" for m, itself in outer_modules(model) if itself
    )
