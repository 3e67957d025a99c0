"""Target ``"softex"``: a PULP cluster with SoftEx and RedMulE (spec ``softex.md``).

* every softmax (``F.softmax``, ``torch.softmax``, ``Tensor.softmax``, ``nn.Softmax`` and the one inside
  ``F.scaled_dot_product_attention``) runs on SoftEx: :func:`numerics.softex.softmax`;
* every GELU (``F.gelu`` with either approximation, ``nn.GELU``, the Hugging Face GELU activation
  classes) runs on SoftEx's sum-of-exponentials datapath: :func:`numerics.softex.gelu`;
* matrix products (``nn.Linear``/``F.linear``, ``matmul``/``@``, ``mm``, ``bmm``, ``addmm``,
  ``baddbmm``, ``mv``, ``dot``, ``einsum``/``tensordot``/``inner`` lowered to products, both products
  inside attention, and 1-D/2-D convolutions as their im2col products, :mod:`numerics.conv`) run on
  RedMulE with BF16 operands and a BF16 result, accumulated in FP32 (``matmul_accumulate="fp32"``) or
  with a chained BF16 FMA (``"bf16"``). The spec does not fix RedMulE's accumulator here (assumption:
  FP32, as the RedMulE paper's BF16 datapath keeps wider partial sums; ``"bf16"`` bounds the other
  extreme). The whole model runs on the cluster, heads included;
* everything else (LayerNorm, residual adds, scaling, masking) runs on the RISC-V cores in the
  model's own precision (assumption: the cores use FP32 software arithmetic). Activations that need an
  exponential SoftEx has no datapath for (SiLU, sigmoid, tanh, Mish, softplus, ELU family) are
  recorded in ``model.emulation.unemulated``.

Each of ``softmax``, ``gelu`` and ``matmul`` can be switched off (``False``) to isolate its effect.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
import torch.nn.functional as F
from torch import nn

from numerics import softex
from numerics.conv import ConvFunctions
from numerics.emulation import Emulation
from numerics.formats import bf16_values
from numerics.handlers import (
    SDPA,
    ContractionFunctions,
    GeluFunctions,
    MatmulFunctions,
    SoftmaxFunctions,
    attention,
    contraction_handler,
    conv_handler,
    emulated_product,
    emulated_softmax,
    is_float,
    product_handler,
    replace_modules,
    sdpa_call,
    softmax_handler,
    standard_swaps,
    straight_through,
    uncovered_handlers,
    unemulated_handler,
)
from numerics.redmule import ACCUMULATIONS, bf16_matmul
from numerics.registry import TargetOptions, register_target
from numerics.softex_gelu import PUBLISHED_TERMS
from numerics.validation import check_choice

#: Hugging Face activation classes that compute a GELU without calling ``F.gelu``, and the
#: approximation they stand for; they are swapped for ``nn.GELU`` so the functional hook sees them.
HF_GELU_CLASSES = {
    "GELUActivation": "none",
    "NewGELUActivation": "tanh",
    "FastGELUActivation": "tanh",
    "AccurateGELUActivation": "tanh",
    "GELUTanh": "tanh",
    "PytorchGELUTanh": "tanh",
}

EXPONENTIAL_ACTIVATIONS = {
    "silu": (F.silu,),
    "sigmoid": (F.sigmoid, torch.sigmoid, torch.Tensor.sigmoid),
    "tanh": (F.tanh, torch.tanh, torch.Tensor.tanh),
    "mish": (F.mish,),
    "softplus": (F.softplus,),
    "elu": (F.elu, F.selu, F.celu),
}
"""Activations computed with an exponential that SoftEx has no datapath for: run on the cores in the
model's arithmetic and recorded as unemulated."""

_SWITCH = (
    "a switch that isolates one emulated operation for analysis: the hardware is the same, "
    "the emulation computes that operation exactly"
)


@dataclasses.dataclass(frozen=True)
class SoftExOptions(TargetOptions):
    """Options of the ``"softex"`` target (spec softex.md)."""

    COST = ("lanes", "gelu_terms")
    ACCURACY_ONLY = {
        "accumulators": "the four interleaved partial sums of §3 fill the same beat pipeline: the spec's "
        "softmax cycle formula (§6.3) has no term for them",
        "matmul_accumulate": "RedMulE's accumulator format is not published (assumption: FP32); its "
        "throughput is the same 192 FMAs per cycle either way",
        "flush_subnormals": "the RTL keeps subnormal outputs; flushing them reproduces the authors' Python "
        "golden model, with the same datapath and cycles",
        "softmax": _SWITCH,
        "gelu": _SWITCH,
        "matmul": _SWITCH,
    }

    lanes: int = 8
    """SoftEx lanes V, an integer in [1, 64] (RTL master: 8; gelu branch: 16). Moves cost:
    softmax and GELU cycles scale with ⌈n/V⌉ and the adder tree adds cycles per level (⌈log2 V⌉)."""
    accumulators: int = 1
    """FP32 denominator accumulators: 1, or 4 interleaved partials (softex.md §3.2)."""
    gelu_terms: int = 4
    """Sum-of-exponentials GELU terms N, one of the published fits 2..6 (spec §4.3). Moves cost:
    a GELU job takes N passes over the vector."""
    matmul_accumulate: str = "fp32"
    """RedMulE's accumulator: ``"fp32"`` (assumption) or ``"bf16"`` (chained BF16 FMA, the other extreme)."""
    flush_subnormals: bool = False
    """Softmax outputs below 2**-126 become +0, as in the authors' golden model (False: the RTL's)."""
    softmax: bool = True
    """Emulate softmax on SoftEx (False: exact FP32, to isolate its effect)."""
    gelu: bool = True
    """Emulate GELU on SoftEx (False: exact)."""
    matmul: bool = True
    """Emulate products on RedMulE in BF16 (False: exact FP32)."""

    def __post_init__(self):
        softex.check_lanes(self.lanes)
        softex.check_accumulators(self.accumulators)
        check_choice("gelu_terms", self.gelu_terms, PUBLISHED_TERMS)
        check_choice("matmul_accumulate", self.matmul_accumulate, ACCUMULATIONS)
        for switch in ("flush_subnormals", "softmax", "gelu", "matmul"):
            if not isinstance(getattr(self, switch), bool):
                raise ValueError(f"{switch} must be True or False; got {getattr(self, switch)!r}")


def _softex_softmax(em: Emulation, x: torch.Tensor, dim: int) -> torch.Tensor:
    opts = em.config
    return softex.softmax(
        bf16_values(x),
        dim=dim,
        lanes=opts.lanes,
        accumulators=opts.accumulators,
        flush_subnormals=opts.flush_subnormals,
    )


def _gelu(em: Emulation, func, args, kwargs):
    x = args[0] if args else kwargs["input"]
    if not is_float(x):
        return func(*args, **kwargs)
    em.count("gelu")
    with torch.no_grad():
        y = softex.gelu(bf16_values(x), terms=em.config.gelu_terms)
    return straight_through(y.to(x.dtype), lambda: func(*args, **kwargs), x)


def _redmule(em: Emulation, a, b, bias):
    return bf16_matmul(a, b, bias, accumulate=em.config.matmul_accumulate)


def _sdpa(em: Emulation, func, args, kwargs):
    call = sdpa_call(args, kwargs)
    if not is_float(call["query"], call["key"], call["value"]):
        return func(*args, **kwargs)
    opts = em.config
    matmul = functools.partial(emulated_product, em, _redmule) if opts.matmul else torch.matmul
    softmax = (
        functools.partial(emulated_softmax, em, _softex_softmax, dim=-1)
        if opts.softmax
        else functools.partial(torch.softmax, dim=-1)
    )
    return attention(em, call, matmul, softmax)


@register_target(
    "softex",
    summary="SoftEx softmax/GELU + RedMulE BF16 matrix products (arXiv 2412.06321)",
    options=SoftExOptions,
    cost_model="hwmodels.softex",
)
def prepare(model: nn.Module, options: SoftExOptions):
    model.emulation.swapped.update(standard_swaps(model))
    handlers = uncovered_handlers()
    for kind, functions in EXPONENTIAL_ACTIVATIONS.items():
        handlers.update(dict.fromkeys(functions, unemulated_handler(kind)))
    if options.softmax:
        handlers.update(dict.fromkeys(SoftmaxFunctions, softmax_handler(_softex_softmax)))
    if options.gelu:
        handlers.update(dict.fromkeys(GeluFunctions, _gelu))
        model.emulation.swapped.update(
            replace_modules(
                model,
                lambda m: type(m).__name__ in HF_GELU_CLASSES,
                lambda m: nn.GELU(approximate=HF_GELU_CLASSES[type(m).__name__]),
            )
        )
    if options.matmul:
        handlers.update(dict.fromkeys(MatmulFunctions, product_handler(_redmule)))
        handlers.update(dict.fromkeys(ContractionFunctions, contraction_handler(_redmule)))
        handlers.update(dict.fromkeys(ConvFunctions, conv_handler(_redmule)))
    if options.softmax or options.matmul:
        handlers[SDPA] = _sdpa
    return handlers
