"""Target ``"atleus"``: ReRAM crossbars plus a BF16 systolic tier (spec ``atleus.md``).

* every static-weight transformer ``nn.Linear`` runs on ReRAM ``crossbar`` s (default
  :data:`ATLEUS_RERAM`) with crossbar-wise weight quantization at the bit widths of ``quant``
  (a :class:`QuantConfig` or a preset name: ``"M8F8"`` (default), ``"M8F4"``, ``"M4F8"``,
  ``"M4F4"``), optional device ``noise`` from a seeded chip instance, and optional LoRA branches
  (``lora_rank``) that train through straight-through gradients while everything else is frozen
  (:func:`numerics.cim_layers.atleus_`);
* attention products and softmax run on the systolic tier: BF16 operands and results with FP32
  accumulation (``sa_dtype="bfloat16"``, the default, which the cost model prices too; the paper does
  not state the tier's precision and the spec's own assumption is FP32: ``"float32"``);
* the heads (:mod:`numerics.heads`; ``heads``) run on the systolic tier too; embeddings, LayerNorm and
  GELU stay FP32 (assumption).

``adc_bits`` overrides the crossbar's ADC width (for sweeps).
"""

from __future__ import annotations

import dataclasses
import functools

import torch
import torch.nn.functional as F
from torch import nn

from numerics import quant as quant_presets
from numerics.cim_layers import atleus_, check_noise, check_noise_domain
from numerics.conv import ConvFunctions
from numerics.crossbar import ATLEUS_RERAM, CrossbarConfig
from numerics.emulation import Emulation
from numerics.formats import bf16_values
from numerics.handlers import (
    attention,
    conv_handler,
    dynamic_operand_handlers,
    emulated_product,
    emulated_softmax,
    is_float,
    product_handler,
    safe_softmax,
    sdpa_call,
    standard_swaps,
    swap_record,
)
from numerics.heads import HEADS, check_heads
from numerics.quant import QuantConfig
from numerics.redmule import bf16_matmul
from numerics.registry import TargetOptions, register_target
from numerics.targets.cim import CALIBRATION_DATA, crossbar_with
from numerics.validation import check_choice, check_int

PRESETS = ("M8F8", "M8F4", "M4F8", "M4F4")
"""The paper's MxFy weight precisions (numerics.quant presets)."""
SA_DTYPES = ("bfloat16", "float32")
"""Systolic-tier formats."""


@dataclasses.dataclass(frozen=True)
class AtleusOptions(TargetOptions):
    """Options of the ``"atleus"`` target (spec atleus.md)."""

    COST = ("quant", "crossbar", "adc_bits", "lora_rank", "sa_dtype", "heads")
    ACCURACY_ONLY = {
        "noise": "device non-idealities change the values read, not the reads, conversions or transfers",
        "seed": "selects the chip instance drawn for the noise",
        "resample_noise": "redraws the noise every forward pass; the hardware is the same",
        "noise_domain": "how the emulation draws the noise (per cell, or per weight for speed), not the hardware",
        "lora_alpha": "the LoRA scale alpha/r is one multiply folded into the branch's output",
        "calibrate_with": CALIBRATION_DATA,
    }

    quant: object = "M8F8"
    """Weight quantization: a :class:`numerics.quant.QuantConfig` or a preset name ``"M8F8"``
    (default), ``"M8F4"``, ``"M4F8"``, ``"M4F4"``. Moves cost: weight bits set the crossbar count,
    and a pow2 scale format dequantizes with a shift instead of a multiply."""
    crossbar: CrossbarConfig = ATLEUS_RERAM
    """The ReRAM crossbars (default :data:`numerics.crossbar.ATLEUS_RERAM`). Moves cost: geometry,
    cell bits, input bits and ADC width."""
    adc_bits: int | None = None
    """Shortcut for ``crossbar.adc_bits`` (None keeps the crossbar's). Moves cost: energy per
    conversion (ISAAC/Accelergy table, hwmodels/adc.py)."""
    noise: object = None
    """Device noise: a cell-noise std (units of the full-scale level) or a dict of CrossbarConfig
    noise fields; None for ideal devices."""
    seed: int = 0
    """Seed of the chip instance (noise and faults)."""
    resample_noise: bool = False
    """Redraw the noise every forward pass instead of keeping one chip instance."""
    noise_domain: str = "cell"
    """``"cell"`` (default): the bit-exact crossbar product, noise on each cell's level. ``"weight"``: a
    fast float mode for noise-aware fine-tuning (atleus.md §2.4): W̃ = c·(Q + σ_w·q_m·z), z ~ N(0, 1)
    per weight, then a float product without input quantization or ADC; ``noise`` is σ_w, in units of
    the largest code q_m (the spec suggests sweeping 0.01–0.02)."""
    lora_rank: int = 0
    """Rank of the LoRA branches on W_Q and W_V (0: none; the paper fine-tunes with 32). Moves cost:
    the branches run on the systolic tier."""
    lora_alpha: float = 32.0
    """LoRA scale numerator (the branch is scaled by alpha / rank)."""
    heads: object = HEADS
    """Layers kept off the crossbars, in the model's arithmetic: name patterns or a callable
    ``(name, module) -> bool`` (default :data:`numerics.heads.HEADS`). Moves cost: those products
    run on the host, not on the crossbars."""
    calibrate_with: object = None
    """Batches that fix per-tensor activation scales (with ``quant.input_granularity="tensor"``)."""
    sa_dtype: str = "bfloat16"
    """Systolic-tier format for attention products and softmax: ``"bfloat16"`` (default) or
    ``"float32"`` (the spec's assumption; the paper does not state it). Moves cost: MAC energy and
    SRAM traffic per value."""

    def __post_init__(self):
        check_heads(self.heads)
        q = self.quant_config
        crossbar = self.effective_crossbar
        if q.input_bits != crossbar.input_bits:
            raise ValueError(
                f"quant.input_bits ({q.input_bits}) and crossbar.input_bits "
                f"({crossbar.input_bits}) describe the same input stream: make them equal"
            )
        check_noise(self.noise)
        check_noise_domain(self.noise_domain, self.noise)
        check_int("seed", self.seed, 0, 2**63 - 1)
        if not isinstance(self.resample_noise, bool):
            raise ValueError(f"resample_noise must be True or False; got {self.resample_noise!r}")
        check_int("lora_rank", self.lora_rank, 0, 1 << 16)
        if isinstance(self.lora_alpha, bool) or not isinstance(self.lora_alpha, (int, float)):
            raise ValueError(f"lora_alpha must be a number; got {self.lora_alpha!r}")
        check_choice("sa_dtype", self.sa_dtype, SA_DTYPES)

    @property
    def quant_config(self) -> QuantConfig:
        """``quant`` as a QuantConfig (a preset name resolved)."""
        if isinstance(self.quant, QuantConfig):
            return self.quant
        if isinstance(self.quant, str) and self.quant in PRESETS:
            return getattr(quant_presets, self.quant)
        raise ValueError(f"quant must be a QuantConfig or one of {', '.join(PRESETS)}; got {self.quant!r}")

    @property
    def effective_crossbar(self) -> CrossbarConfig:
        """``crossbar`` with the ``adc_bits`` shortcut applied."""
        return crossbar_with(self.crossbar, self.adc_bits)


def _product(em: Emulation, a, b, bias):
    if em.config.sa_dtype == "float32":
        return torch.matmul(a, b) if bias is None else torch.matmul(a, b) + bias
    return bf16_matmul(a, b, bias)


def _systolic_softmax(em: Emulation, x: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax on the systolic tier: BF16 in, exact softmax, BF16 out (or FP32 throughout); a row with
    no finite logit gives zeros (assumption, as SoftEx's spec and torch's SDPA)."""
    if em.config.sa_dtype == "float32":
        return safe_softmax(x, dim)
    return bf16_values(safe_softmax(bf16_values(x).float(), dim)).float()


def _sdpa(em: Emulation, func, args, kwargs):
    call = sdpa_call(args, kwargs)
    if not is_float(call["query"], call["key"], call["value"]):
        return func(*args, **kwargs)
    return attention(
        em,
        call,
        functools.partial(emulated_product, em, _product),
        functools.partial(emulated_softmax, em, _systolic_softmax, dim=-1),
    )


@register_target(
    "atleus",
    summary="Atleus ReRAM crossbars (crossbar-wise quantization) + BF16 systolic tier (arXiv 2501.09588)",
    options=AtleusOptions,
    cost_model="hwmodels.atleus",
)
def prepare(model: nn.Module, options: AtleusOptions):
    model.emulation.swapped.update(standard_swaps(model))
    counts = atleus_(
        model,
        quant=options.quant_config,
        crossbar=options.effective_crossbar,
        noise=options.noise,
        seed=options.seed,
        resample_noise=options.resample_noise,
        noise_domain=options.noise_domain,
        lora_rank=options.lora_rank,
        lora_alpha=options.lora_alpha,
        calibrate_with=options.calibrate_with,
        heads=options.heads,
        lora_dtype=options.sa_dtype,  # the LoRA branches run on the systolic tier
    )
    model.emulation.swapped.update(swap_record(model))
    model.emulation.details["layers"] = counts
    handlers = dynamic_operand_handlers(_systolic_softmax, _product, _sdpa)
    # what is not on the crossbars (heads, functional products) runs on the systolic tier
    handlers[F.linear] = product_handler(_product)
    handlers.update(dict.fromkeys(ConvFunctions, conv_handler(_product)))
    return handlers
