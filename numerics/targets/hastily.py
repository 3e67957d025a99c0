"""Target ``"hastily"``: 8T-SRAM compute-in-memory with UCLM lookup tables (spec ``hastily.md``).

* every transformer ``nn.Linear`` runs on ``crossbar`` (default :data:`HASTILY_SRAM`) with INT8
  per-channel weights and INT8 activations: per tensor with scales observed on ``calibrate_with``
  batches, else per token with dynamic absmax scales (:func:`numerics.cim_layers.hastily_`); heads,
  pooler and embeddings stay FP32 (assumption);
* with ``attention=True``, both attention products run on the crossbars with K and V written as
  weights (INT8: Q per token, K and V per sequence and head over the keys not masked out) and the
  softmax on the UCLM path (:func:`numerics.cim_layers.hastily_attention`); eager attention's
  separate softmax and products take the same units (the second operand scaled per matrix);
* with SDPA attention (Hugging Face's default) a sequence's result never depends on the other
  sequences of its batch or on its padding (the spec's per-call per-tensor absmax would make it);
  eager attention's bare products do not see the mask, so its K and V scales include padded keys;
* GELU, LayerNorm and residuals run on the vector unit in FP32 (assumption: the spec gives
  their cost, not their arithmetic).

``adc_bits`` overrides the crossbar's ADC width (for sweeps). Gradients are straight-through.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from numerics.cim_layers import (
    HASTILY_WEIGHT_GRANULARITIES,
    check_hastily_crossbar,
    hastily_,
    hastily_attention,
    int8_crossbar_product,
)
from numerics.crossbar import HASTILY_SRAM, CrossbarConfig
from numerics.emulation import Emulation
from numerics.handlers import (
    dynamic_operand_handlers,
    is_float,
    keep_on_host,
    sdpa_call,
    standard_swaps,
    static_product_handlers,
    straight_through,
    swap_record,
    uncovered_handlers,
)
from numerics.heads import HEADS, check_heads
from numerics.registry import TargetOptions, register_target
from numerics.targets.cim import CALIBRATION_DATA, crossbar_with
from numerics.uclm import HASTILY_UCLM, UCLMConfig
from numerics.uclm import softmax as uclm_softmax
from numerics.validation import check_choice, check_type


@dataclasses.dataclass(frozen=True)
class HastilyOptions(TargetOptions):
    """Options of the ``"hastily"`` target (spec hastily.md)."""

    COST = ("heads", "crossbar", "adc_bits")
    ACCURACY_ONLY = {
        "uclm": "the lookup table's contents and widths change the values, not the 4-cycle lookup "
        "or the VFU steps the cost model counts",
        "weight_granularity": "per-channel or per-tensor scales are applied by the same digital multiply after the MVM",
        "calibrate_with": CALIBRATION_DATA,
        "attention": "a switch that isolates the attention emulation for analysis: the hardware "
        "still runs attention on the crossbars and the UCLMs",
    }

    crossbar: CrossbarConfig = HASTILY_SRAM
    """The UCLM arrays in compute mode (default :data:`numerics.crossbar.HASTILY_SRAM`). Moves cost:
    array rows and columns tile every product; the ADC width sets the MVM time and energy."""
    adc_bits: int | None = None
    """Shortcut for ``crossbar.adc_bits`` (None keeps the crossbar's). Moves cost: SAR conversion
    time and energy per conversion (hwmodels/adc.py)."""
    uclm: UCLMConfig = HASTILY_UCLM
    """The lookup-table exponential and softmax of the UCLMs in lookup mode."""
    weight_granularity: str = "channel"
    """INT8 weight scales per output ``"channel"`` or per ``"tensor"``."""
    heads: object = HEADS
    """Layers kept off the crossbars, in the model's arithmetic: name patterns or a callable
    ``(name, module) -> bool`` (default :data:`numerics.heads.HEADS`). Moves cost: those products
    run on the host, not on the crossbars."""
    calibrate_with: object = None
    """Batches (each a tensor, tuple or dict of forward arguments) that fix the per-tensor activation
    scales of the Linears; None gives each token its own dynamic absmax scale."""
    attention: bool = True
    """Emulate attention on the crossbars and the UCLM softmax (False: exact FP32)."""

    def __post_init__(self):
        check_heads(self.heads)
        check_hastily_crossbar(self.effective_crossbar)
        check_type("uclm", self.uclm, UCLMConfig)
        check_choice("weight_granularity", self.weight_granularity, HASTILY_WEIGHT_GRANULARITIES)
        if not isinstance(self.attention, bool):
            raise ValueError(f"attention must be True or False; got {self.attention!r}")

    @property
    def effective_crossbar(self) -> CrossbarConfig:
        """``crossbar`` with the ``adc_bits`` shortcut applied."""
        return crossbar_with(self.crossbar, self.adc_bits)


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
        y = hastily_attention(
            q.detach(),
            k.detach(),
            v.detach(),
            call["attn_mask"],
            scale=call["scale"],
            is_causal=call["is_causal"],
            crossbar=em.config.effective_crossbar,
            uclm=em.config.uclm,
        )
    return straight_through(y, lambda: func(*args, **kwargs), q, k, v)


def _uclm_softmax(em: Emulation, x: torch.Tensor, dim: int) -> torch.Tensor:
    return uclm_softmax(x.to(torch.float64), dim, config=em.config.uclm)


def _product(em: Emulation, a, b, bias):
    y = int8_crossbar_product(a, b, em.config.effective_crossbar)
    return y if bias is None else y + bias  # the bias is added digitally


@register_target(
    "hastily",
    summary="HASTILY 8T-SRAM CIM INT8 products + UCLM LUT softmax (arXiv 2502.12344)",
    options=HastilyOptions,
    cost_model="hwmodels.hastily",
)
def prepare(model: nn.Module, options: HastilyOptions):
    model.emulation.swapped.update(standard_swaps(model))
    hastily_(
        model,
        crossbar=options.effective_crossbar,
        weight_granularity=options.weight_granularity,
        calibrate_with=options.calibrate_with,
        heads=options.heads,
    )
    model.emulation.swapped.update(swap_record(model))
    keep_on_host(model, options.heads)
    handlers = {**uncovered_handlers(), **static_product_handlers()}
    if options.attention:
        handlers.update(dynamic_operand_handlers(_uclm_softmax, _product, _sdpa))
    return handlers
