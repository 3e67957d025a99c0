"""Target ``"softex"``: a PULP cluster with SoftEx and RedMulE (spec ``softex.md``).

* every softmax (``F.softmax``, ``torch.softmax``, ``Tensor.softmax``, ``nn.Softmax`` and the one inside
  ``F.scaled_dot_product_attention``) runs on SoftEx: :func:`numerics.softex.softmax`;
* every GELU (``F.gelu`` with either approximation, ``nn.GELU``, the Hugging Face GELU activation
  classes) runs on SoftEx's sum-of-exponentials datapath: :func:`numerics.softex.gelu`;
* matrix products (``nn.Linear``/``F.linear``, ``matmul``/``@``, ``mm``, ``bmm``, ``addmm``,
  ``baddbmm`` and both products inside attention) run on RedMulE with BF16 operands and a BF16
  result, accumulated in FP32 (``matmul_accumulate="fp32"``) or with a chained BF16 FMA
  (``"bf16"``). The spec does not fix RedMulE's accumulator here (assumption: FP32, as the
  RedMulE paper's BF16 datapath keeps wider partial sums; ``"bf16"`` bounds the other extreme);
* everything else (LayerNorm, residual adds, scaling, masking) runs on the RISC-V cores in the
  model's own precision (assumption: the cores use FP32 software arithmetic).

Each of ``softmax``, ``gelu`` and ``matmul`` can be switched off (``False``) to isolate its effect.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from numerics import softex
from numerics.softex_gelu import PUBLISHED_TERMS
from numerics.nn import (SDPA, Emulation, GeluFunctions, MatmulFunctions, SoftmaxFunctions, attention,
                         bf16_matmul, bf16_values, emulated_product, emulated_softmax, is_float, product_handler,
                         register_target, replace_modules, sdpa_call, softmax_handler, straight_through)

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

OPTIONS = {
    "lanes": 8,
    "accumulators": 1,
    "gelu_terms": 4,
    "matmul_accumulate": "fp32",
    "softmax": True,
    "gelu": True,
    "matmul": True,
}


def _softex_softmax(em: Emulation, x: torch.Tensor, dim: int) -> torch.Tensor:
    opts = em.options
    return softex.softmax(bf16_values(x), dim=dim, lanes=opts["lanes"], accumulators=opts["accumulators"])


def _gelu(em: Emulation, func, args, kwargs):
    x = args[0] if args else kwargs["input"]
    if not is_float(x):
        return func(*args, **kwargs)
    em.count("gelu")
    with torch.no_grad():
        y = softex.gelu(bf16_values(x), terms=em.options["gelu_terms"])
    return straight_through(y.to(x.dtype), lambda: func(*args, **kwargs), x)


def _redmule(em: Emulation, a, b, bias):
    return bf16_matmul(a, b, bias, accumulate=em.options["matmul_accumulate"])


def _sdpa(em: Emulation, func, args, kwargs):
    call = sdpa_call(args, kwargs)
    if not is_float(call["query"], call["key"], call["value"]):
        return func(*args, **kwargs)
    opts = em.options
    matmul = functools.partial(emulated_product, em, _redmule) if opts["matmul"] else torch.matmul
    softmax = (functools.partial(emulated_softmax, em, _softex_softmax, dim=-1) if opts["softmax"]
               else functools.partial(torch.softmax, dim=-1))
    return attention(em, call, matmul, softmax)


def _check(options: dict) -> None:
    lanes = options["lanes"]
    if not isinstance(lanes, int) or lanes < 1 or lanes > 64 or lanes & (lanes - 1):
        raise ValueError(f"lanes must be a power of two in [1, 64]; got {lanes!r}")
    if options["accumulators"] not in (1, 4):
        raise ValueError(f"accumulators must be 1 or 4; got {options['accumulators']!r}")
    if options["gelu_terms"] not in PUBLISHED_TERMS:
        raise ValueError(f"gelu_terms must be one of {sorted(PUBLISHED_TERMS)}; got {options['gelu_terms']!r}")
    if options["matmul_accumulate"] not in ("fp32", "bf16"):
        raise ValueError(f"matmul_accumulate must be 'fp32' or 'bf16'; got {options['matmul_accumulate']!r}")
    for switch in ("softmax", "gelu", "matmul"):
        if not isinstance(options[switch], bool):
            raise ValueError(f"{switch} must be True or False; got {options[switch]!r}")


@register_target("softex", summary="SoftEx softmax/GELU + RedMulE BF16 matrix products (arXiv 2412.06321)",
                 options=OPTIONS)
def prepare(model: nn.Module, options: dict):
    _check(options)
    handlers = {}
    if options["softmax"]:
        handlers.update(dict.fromkeys(SoftmaxFunctions, softmax_handler(_softex_softmax)))
    if options["gelu"]:
        handlers.update(dict.fromkeys(GeluFunctions, _gelu))
        model.emulation.swapped.update(replace_modules(
            model, lambda m: type(m).__name__ in HF_GELU_CLASSES,
            lambda m: nn.GELU(approximate=HF_GELU_CLASSES[type(m).__name__])))
    if options["matmul"]:
        handlers.update(dict.fromkeys(MatmulFunctions, product_handler(_redmule)))
    if options["softmax"] or options["matmul"]:
        handlers[SDPA] = _sdpa
    return handlers
