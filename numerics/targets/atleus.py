"""Target ``"atleus"``: ReRAM crossbars plus a BF16 systolic tier (spec ``atleus.md``).

* every static-weight transformer ``nn.Linear`` runs on ReRAM ``crossbar`` s (default
  :data:`ATLEUS_RERAM`) with crossbar-wise weight quantization at the bit widths of ``quant``
  (a :class:`QuantConfig` or a preset name: ``"M8F8"`` (default), ``"M8F4"``, ``"M4F8"``,
  ``"M4F4"``), optional device ``noise`` from a seeded chip instance, and optional LoRA branches
  (``lora_rank``) that train through straight-through gradients while everything else is frozen
  (:func:`numerics.cim_layers.atleus_`);
* attention products and softmax run on the systolic tier: BF16 operands and results with FP32
  accumulation (``sa_dtype="bfloat16"``, the default, as the emulation issue asks; the spec's
  own assumption is FP32 since the paper does not state the tier's precision: ``"float32"``);
* heads, pooler, embeddings, LayerNorm and GELU stay FP32 (assumption).

``adc_bits`` overrides the crossbar's ADC width (for sweeps).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from numerics import quant as quant_presets
from numerics.cim_layers import atleus_
from numerics.crossbar import ATLEUS_RERAM
from numerics.nn import (SDPA, Emulation, MatmulFunctions, SoftmaxFunctions, attention, bf16_matmul, bf16_values,
                         emulated_product, emulated_softmax, is_float, linears_from_conv1d, product_handler,
                         register_target, sdpa_call, softmax_handler)
from numerics.targets.cim import crossbar_with

PRESETS = ("M8F8", "M8F4", "M4F8", "M4F4")

OPTIONS = {
    "quant": "M8F8",
    "crossbar": ATLEUS_RERAM,
    "adc_bits": None,
    "noise": None,
    "seed": 0,
    "resample_noise": False,
    "lora_rank": 0,
    "lora_alpha": 32.0,
    "calibrate_with": None,
    "sa_dtype": "bfloat16",
}


def _product(em: Emulation, a, b, bias):
    if em.options["sa_dtype"] == "float32":
        return torch.matmul(a, b) if bias is None else torch.matmul(a, b) + bias
    return bf16_matmul(a, b, bias)


def _systolic_softmax(em: Emulation, x: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax on the systolic tier: BF16 in, exact softmax, BF16 out (or FP32 throughout)."""
    if em.options["sa_dtype"] == "float32":
        return torch.softmax(x, dim)
    return bf16_values(torch.softmax(bf16_values(x).float(), dim)).float()


def _sdpa(em: Emulation, func, args, kwargs):
    call = sdpa_call(args, kwargs)
    if not is_float(call["query"], call["key"], call["value"]):
        return func(*args, **kwargs)
    return attention(em, call, functools.partial(emulated_product, em, _product),
                     functools.partial(emulated_softmax, em, _systolic_softmax, dim=-1))


@register_target("atleus", summary="Atleus ReRAM crossbars (crossbar-wise quantization) + BF16 systolic tier "
                 "(arXiv 2501.09588)", options=OPTIONS)
def prepare(model: nn.Module, options: dict):
    q = options["quant"]
    if isinstance(q, str):
        if q not in PRESETS:
            raise ValueError(f"quant must be a QuantConfig or one of {', '.join(PRESETS)}; got {q!r}")
        q = getattr(quant_presets, q)
    if options["sa_dtype"] not in ("bfloat16", "float32"):
        raise ValueError(f"sa_dtype must be 'bfloat16' or 'float32'; got {options['sa_dtype']!r}")
    crossbar = crossbar_with(options, options["crossbar"])
    model.emulation.swapped.update(linears_from_conv1d(model))  # GPT-2's projections
    counts = atleus_(model, quant=q, crossbar=crossbar, noise=options["noise"], seed=options["seed"],
                     resample_noise=options["resample_noise"], lora_rank=options["lora_rank"],
                     lora_alpha=options["lora_alpha"], calibrate_with=options["calibrate_with"])
    model.emulation.swapped["Linear -> CrossbarLinear"] += counts["mha"] + counts["ffn"]
    model.emulation.details["layers"] = counts
    handlers = dict.fromkeys(SoftmaxFunctions, softmax_handler(_systolic_softmax))
    handlers.update(dict.fromkeys([f for f in MatmulFunctions if f is not F.linear],
                                  product_handler(_product, linear=False)))
    handlers[SDPA] = _sdpa
    return handlers
