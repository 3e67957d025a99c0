"""Target ``"hastily"``: 8T-SRAM compute-in-memory with UCLM lookup tables (spec ``hastily.md``).

* every transformer ``nn.Linear`` runs on ``crossbar`` (default :data:`HASTILY_SRAM`) with INT8
  per-channel weights and INT8 per-tensor activations: scales observed on ``calibrate_with``
  batches, else the per-call absmax (:func:`numerics.cim_layers.hastily_`); heads, pooler and
  embeddings stay FP32 (assumption);
* with ``attention=True``, both attention products run on the crossbars with K and V written as
  weights (INT8, per-call absmax) and the softmax on the UCLM path
  (:func:`numerics.cim_layers.hastily_attention`); eager attention's separate softmax and
  products take the same units;
* GELU, LayerNorm and residuals run on the vector unit in FP32 (assumption: the spec gives
  their cost, not their arithmetic).

``adc_bits`` overrides the crossbar's ADC width (for sweeps). Gradients are straight-through.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from numerics.cim_layers import hastily_, hastily_attention, int8_crossbar_product
from numerics.crossbar import HASTILY_SRAM
from numerics.nn import (SDPA, Emulation, MatmulFunctions, SoftmaxFunctions, is_float, linears_from_conv1d,
                         product_handler, register_target, sdpa_call, softmax_handler, straight_through)
from numerics.targets.cim import crossbar_with
from numerics.uclm import HASTILY_UCLM, UCLMConfig
from numerics.uclm import softmax as uclm_softmax

OPTIONS = {
    "crossbar": HASTILY_SRAM,
    "adc_bits": None,
    "uclm": HASTILY_UCLM,
    "weight_granularity": "channel",
    "calibrate_with": None,
    "attention": True,
}


def _sdpa(em: Emulation, func, args, kwargs):
    call = sdpa_call(args, kwargs)
    q, k, v = call["query"], call["key"], call["value"]
    if not is_float(q, k, v):
        return func(*args, **kwargs)
    if call["enable_gqa"] and k.shape[-3] != q.shape[-3]:
        rep = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(rep, -3), v.repeat_interleave(rep, -3)
    em.count("attention")
    with torch.no_grad():
        y = hastily_attention(q.detach(), k.detach(), v.detach(), call["attn_mask"], scale=call["scale"],
                              is_causal=call["is_causal"], **em.details["units"])
    return straight_through(y, lambda: func(*args, **kwargs), q, k, v)


def _uclm_softmax(em: Emulation, x: torch.Tensor, dim: int) -> torch.Tensor:
    return uclm_softmax(x.to(torch.float64), dim, config=em.details["units"]["uclm"])


def _product(em: Emulation, a, b, bias):
    y = int8_crossbar_product(a, b, em.details["units"]["crossbar"])
    return y if bias is None else y + bias  # the bias is added digitally


@register_target("hastily", summary="HASTILY 8T-SRAM CIM INT8 products + UCLM LUT softmax (arXiv 2502.12344)",
                 options=OPTIONS)
def prepare(model: nn.Module, options: dict):
    crossbar = crossbar_with(options, options["crossbar"])
    if not isinstance(options["uclm"], UCLMConfig):
        raise ValueError(f"uclm must be a UCLMConfig; got {type(options['uclm']).__name__}")
    if not isinstance(options["attention"], bool):
        raise ValueError(f"attention must be True or False; got {options['attention']!r}")
    model.emulation.swapped.update(linears_from_conv1d(model))  # GPT-2's projections
    counts = hastily_(model, crossbar=crossbar, weight_granularity=options["weight_granularity"],
                      calibrate_with=options["calibrate_with"])
    model.emulation.swapped["Linear -> CrossbarLinear"] += counts["linear"]
    model.emulation.details["units"] = {"crossbar": crossbar, "uclm": options["uclm"]}
    if not options["attention"]:
        return {}
    handlers = dict.fromkeys(SoftmaxFunctions, softmax_handler(_uclm_softmax))
    handlers.update(dict.fromkeys([f for f in MatmulFunctions if f is not F.linear],
                                  product_handler(_product, linear=False)))
    handlers[SDPA] = _sdpa
    return handlers
