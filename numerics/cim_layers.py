"""Drop-in modules for the compute-in-memory targets ``"hastily"`` and ``"atleus"``.

* :class:`CrossbarLinear` runs a Linear through quantized weights on crossbars
  (atleus.md §2.1 steps 4-6, hastily.md §2.2), with straight-through gradients
  (grad_x = grad_y W_deq^T, noise-free W_deq; frozen weights get none), optional static or
  resampled device noise, and an optional LoRA branch (Atleus fine-tuning, atleus.md §2.4).
* :func:`hastily_attention` computes scaled dot-product attention on HASTILY: INT8 Q K^T on
  the crossbars (K written as weights), the UCLM softmax and softmax-codes x V on the crossbars
  (V written as weights); :func:`crossbar_product` is one such product with a dynamic operand.
* :class:`CrossbarConv` runs a convolution as its im2col product, each group's weight matrix on
  crossbars like a Linear's.
* :func:`hastily_` / :func:`atleus_` swap a model's Linears and convolutions in place and report
  what they swapped; ``numerics.nn.emulate(model, "hastily" | "atleus")`` builds on them.

Embeddings, LayerNorm, GELU, residuals and the heads (:mod:`numerics.heads`) stay in the model's
arithmetic (assumption, both specs).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types

import torch
import torch.nn.functional as F

from numerics import kernels
from numerics.conv import conv_as_gemm, copy_conv_attributes, module_input, weight_matrices
from numerics.crossbar import (
    ATLEUS_RERAM,
    HASTILY_SRAM,
    CrossbarConfig,
    batched_blocks,
    check_codes,
    gemm_operand,
    unchecked_batched,
    unchecked_blocks,
    unchecked_matmul,
    weights_cannot_clip,
)
from numerics.derived import derived
from numerics.emulation import in_reference_arithmetic
from numerics.formats import all_finite
from numerics.handlers import straight_through, swap_record
from numerics.heads import HEADS, HeadRule, head_rule, is_head
from numerics.quant import M8F8, QuantConfig, WeightQuant, observe_inputs, quantize_input, quantize_weight
from numerics.redmule import bf16_matmul
from numerics.uclm import HASTILY_UCLM, UCLMConfig
from numerics.uclm import softmax as uclm_softmax
from numerics.validation import check_choice, check_type

__all__ = [
    "crossbar_linear",
    "CrossbarLinear",
    "crossbar_product",
    "hastily_attention",
    "hastily_",
    "atleus_",
    "layer_kind",
    "lora_leaf",
    "LORA_LEAVES",
    "fused_qkv",
    "FUSED_QKV",
    "CrossbarConv",
    "STATIC_LAYERS",
    "check_hastily_crossbar",
    "check_noise",
    "check_noise_domain",
    "NOISE_DOMAINS",
    "HASTILY_WEIGHT_GRANULARITIES",
]

F64 = torch.float64
_NOISE_FIELDS = ("cell_noise_std", "adc_noise_std", "stuck_at_0_rate", "stuck_at_1_rate")
HASTILY_WEIGHT_GRANULARITIES = ("channel", "tensor")
"""Weight scale granularities of HASTILY's INT8 weights (hastily.md §2.2)."""
_MHA = (
    "attention", "attn", "query", "key", "value", "q_proj", "k_proj", "v_proj", "o_proj", "out_proj", "qkv", "in_proj"
)  # fmt: skip


LORA_LEAVES = ("query", "value", "q_proj", "v_proj", "q", "v")
"""Last name components of the W_Q and W_V projections that carry Atleus' LoRA branches (atleus.md §2.4)."""
FUSED_QKV = re.compile(r"(c_attn|qkv|query_key_value|in_proj)$")
"""Last name components of fused Q/K/V projections (output = [Q | K | V]): their LoRA branches act on
the Q and V thirds."""


def lora_leaf(name: str) -> bool:
    """True for a Linear whose qualified name ends in one of :data:`LORA_LEAVES`."""
    return name.rsplit(".", 1)[-1] in LORA_LEAVES


def fused_qkv(name: str, out_features: int) -> bool:
    """True for a fused Q/K/V projection (its leaf name matches :data:`FUSED_QKV`, its output splits in three)."""
    return bool(FUSED_QKV.search(name.rsplit(".", 1)[-1])) and out_features % 3 == 0


def layer_kind(name: str, heads: HeadRule = is_head) -> str | None:
    """``"mha"`` for attention projections, ``"ffn"`` for other transformer linears and convolutions,
    None for heads (the one rule, :mod:`numerics.heads`), kept in the model's arithmetic."""
    if heads(name, None):
        return None
    low = name.lower()
    return "mha" if any(s in low for s in _MHA) else "ffn"


def crossbar_linear(
    x: torch.Tensor,
    wq: WeightQuant,
    crossbar: CrossbarConfig,
    *,
    input_scale=None,
    generator: torch.Generator | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = s_x * sum_p c[p, g(j)] * P_p[j] (float64, increasing p, then float32), plus ``bias`` (float32,
    one float32 addition per output) if given.

    Input codes per row (``input_scale=None``) or per tensor; partials P_p of the crossbar product
    (``crossbar_matmul(..., partials=True)``); asymmetric weights subtract zp * sum_{i in p} x.
    """
    cfg = _with_bits(crossbar, wq.bits)
    k, n = wq.codes.shape
    codes = wq.codes.to(x.device)
    columns, c, zp = _scales(wq, cfg, x.device)
    # Σ_p c_j·P_p[j] = c_j·Σ_p P_p[j] exactly: the blocks' integer sum (one GEMM), unwrapped
    cfg64 = _with_bits(cfg, wq.bits, accumulator_bits=64) if columns else None
    # a small layer that cannot clip, with float32 sums exact in any order: one compiled call
    float32_exact = _largest_sum(k, cfg.input_bits, wq.bits) < 1 << 24
    if columns and zp is None and input_scale is None and float32_exact and weights_cannot_clip(codes, cfg64):
        y = kernels.crossbar_linear(x.reshape(-1, k), cfg.input_bits, gemm_operand(codes), c, bias)
        if y is not None:
            return y.view(*x.shape[:-1], n)
    x_int, s_x = quantize_input(x, cfg.input_bits, scale=input_scale, dtype=torch.float32)  # exact codes
    x2, s_x = x_int.reshape(-1, k), s_x.reshape(-1, 1)
    if columns:
        parts = [unchecked_matmul(x2, codes, cfg64, generator=generator, dtype=None)]
        c = c[None]
        if zp is not None:
            parts = [parts[0].to(F64) - zp * x2.sum(-1, keepdim=True, dtype=F64)]
    elif zp is None:
        parts = list(unchecked_blocks(x2, codes, cfg, generator=generator, dtype=None))
    else:
        n_blocks = c.shape[0]
        xsum = F.pad(x2, (0, n_blocks * cfg.rows - k)).unflatten(-1, (n_blocks, cfg.rows)).sum(-1, dtype=F64)
        parts = unchecked_blocks(x2, codes, cfg, generator=generator, dtype=F64)
        parts = [part - zp[p] * xsum[:, p, None] for p, part in enumerate(parts)]
    y = kernels.scale_blocks(parts, c, s_x, bias)  # one pass over the outputs (compiled, on the CPU)
    if y is None:
        y = _scaled_block_sum((part.to(F64) for part in parts), c).mul_(s_x).to(torch.float32)
        y = y if bias is None else y + bias
    return y.view(*x.shape[:-1], n)


def _scales(wq: WeightQuant, cfg: CrossbarConfig, device) -> tuple[bool, torch.Tensor, torch.Tensor | None]:
    """``(columns, c, zp)`` of a layer's weights on ``device``: with one exact scale per column over all of
    K (:func:`_column_scales_sum_exactly`), the scale and zero point of each column (N,); otherwise those
    of each crossbar row block p and column (P, N) (block_rows is a multiple of rows, or K). Kept with
    the scales tensor: a layer asks for the same ones on every call."""

    def make():
        k, n = wq.codes.shape
        columns = _column_scales_sum_exactly(wq, cfg.input_bits)
        blocks = 1 if columns else -(-k // cfg.rows)
        rows = torch.arange(blocks, device=device) * cfg.rows // wq.block_rows
        cols = torch.arange(n, device=device) // wq.block_cols
        c = wq.scales.to(device)[rows][:, cols]
        zp = None if wq.zero_points is None else wq.zero_points.to(device)[rows][:, cols]
        if columns:
            return True, c[0], None if zp is None else zp[0]
        return False, c, zp

    zp = wq.zero_points
    if zp is not None and zp.is_inference():  # no version to key on: computed on every call
        return make()
    key = (cfg, device, wq.codes.shape, wq.block_rows, wq.block_cols, None if zp is None else (id(zp), zp._version))
    return derived(wq.scales, "layer scales", key, make, first_sight=True) or make()


@functools.lru_cache(maxsize=256)
def _with_bits(crossbar: CrossbarConfig, weight_bits: int, **changes) -> CrossbarConfig:
    """``crossbar`` with these weight bits (and other fields changed), built once per combination: a
    configuration validates itself when built, and layers ask for the same few on every call."""
    return dataclasses.replace(crossbar, weight_bits=weight_bits, **changes)


def _scaled_block_sum(parts, c: torch.Tensor) -> torch.Tensor:
    """Σ_p c[..., p, :]·parts[p] in float64 over the blocks' results ``parts`` (in increasing p), added
    in that order (a tensor sum over p may pair the terms differently once P is large)."""
    total = None
    for p, part in enumerate(parts):
        term = part * c[..., p, :]
        total = term if total is None else total.add_(term)
    return total


def _column_scales_sum_exactly(wq: WeightQuant, input_bits: int) -> bool:
    """True when one scale (and zero point) per column covers all of K, the scales are float32 values
    (at most 24 significant bits) and every |Σ (P − zp·Σx)| over any set of row blocks stays below
    2^29: then each c_j·(integer) is exact in float64, so the float64 sum over the blocks equals c_j
    times the blocks' integer sum, bit for bit."""
    k = wq.codes.shape[0]
    if wq.block_rows < k or not torch.equal(wq.scales, wq.scales.to(torch.float32).to(wq.scales.dtype)):
        return False
    zp = 0 if wq.zero_points is None else int(wq.zero_points.abs().max())
    return _largest_sum(k, input_bits, wq.bits, zp) < (1 << 29)


def _largest_sum(k: int, input_bits: int, weight_bits: int, zero_point: int = 0) -> int:
    """Bound on |Σ_k x_k·(w_k − zp)| over K rows: input codes within ±(2^(b_x−1) − 1), weight codes within
    [−2^(b_w−1), 2^(b_w−1)), a zero point of magnitude at most ``zero_point``."""
    return k * ((1 << (input_bits - 1)) - 1) * ((1 << (weight_bits - 1)) + zero_point)


@dataclasses.dataclass(frozen=True)
class StackedWeights:
    """G weights of one shape as :func:`stacked_crossbar_linear` runs them: their codes, and their scales and
    zero points per crossbar row block and column."""

    codes: torch.Tensor
    """int64 codes (G, K, N)."""
    scales: torch.Tensor
    """float64 scale of each group's row block p and column j, (G, P, N)."""
    zero_points: torch.Tensor | None
    """int64 zero points likewise (asymmetric weights), else None."""
    crossbar: CrossbarConfig
    """The crossbar, with the weights' bits."""

    @classmethod
    def of(cls, wqs: list[WeightQuant], crossbar: CrossbarConfig, device) -> StackedWeights:
        """The G weights ``wqs`` (same shape, bits and blocks) on ``crossbar``, on ``device``."""
        cfg = _with_bits(crossbar, wqs[0].bits)
        k, n = wqs[0].codes.shape
        rows_idx = torch.arange(-(-k // cfg.rows), device=device) * cfg.rows // wqs[0].block_rows
        cols_idx = torch.arange(n, device=device) // wqs[0].block_cols

        def per_block(t):
            return torch.stack([t(wq).to(device)[rows_idx][:, cols_idx] for wq in wqs])

        zp = None if wqs[0].zero_points is None else per_block(lambda wq: wq.zero_points)
        codes = torch.stack([wq.codes.to(device) for wq in wqs])
        return cls(codes, per_block(lambda wq: wq.scales), zp, cfg)


def stacked_crossbar_linear(x: torch.Tensor, weights: StackedWeights, *, input_scale=None) -> torch.Tensor:
    """G independent :func:`crossbar_linear` products at once, ``x`` (G, M, K) with the G ``weights``
    (each K x N), noise-free: every group's K is padded to whole row blocks and the groups' row blocks
    are stacked into one crossbar product, whose per-block partials are each group's own (a conversion
    sees one row block and one column). Bit for bit the G separate products; returns (G, M, N) float32."""
    cfg = weights.crossbar
    x_int, s_x = quantize_input(x, cfg.input_bits, scale=input_scale)  # per row of each group
    parts = batched_blocks(x_int, weights.codes, cfg, dtype=torch.float64)  # (G, M, P, N)
    if weights.zero_points is not None:
        blocks = parts.shape[2]
        xsum = F.pad(x_int, (0, blocks * cfg.rows - x.shape[-1])).unflatten(-1, (blocks, cfg.rows)).sum(-1)
        parts = parts - weights.zero_points[:, None] * xsum.unsqueeze(-1).to(torch.float64)  # (G, M, P)
    return (_scaled_block_sum(parts.unbind(-2), weights.scales[:, None]) * s_x).to(torch.float32)


class _StraightThrough(torch.autograd.Function):
    """Forward: the emulated output. Backward: grad_x = grad_y @ W_deq^T (``weight`` is W_deq^T)."""

    @staticmethod
    def forward(ctx, x, weight, emulated):
        ctx.save_for_backward(weight)
        return emulated

    @staticmethod
    def backward(ctx, grad_y):
        (weight,) = ctx.saved_tensors
        return grad_y @ weight.to(grad_y.dtype), None, None


class CrossbarLinear(torch.nn.Module):
    """A frozen Linear whose weights live on crossbars (``weight`` is (out, in) as in nn.Linear)."""

    emulates_itself = True
    """Its internal float products are part of the emulation: ``emulate()`` leaves them alone."""
    emulated_kind = "linear"
    """What one call counts as in ``model.emulation.counts``."""
    replaces = "Linear"
    """The layer kind it stands in for (``model.emulation.swapped``)."""

    def __init__(
        self,
        linear: torch.nn.Linear,
        bits: int,
        crossbar: CrossbarConfig,
        quant: QuantConfig,
        *,
        granularity: str | None = None,
        seed: int | None = None,
        resample_noise: bool = False,
        lora_rank: int = 0,
        lora_alpha: float = 32.0,
        lora_fused: bool = False,
        lora_dtype: str = "float32",
        weight_noise: float | None = None,
    ):
        super().__init__()
        check_choice("lora_dtype", lora_dtype, ("float32", "bfloat16"))
        self.lora_dtype = lora_dtype
        w = linear.weight.detach().t().to(torch.float64)  # (K, N)
        self.wq = quantize_weight(
            w,
            bits,
            granularity=granularity or quant.granularity,
            symmetric=quant.symmetric,
            scale_format=quant.scale_format,
            rounding=quant.rounding,
            crossbar=crossbar,
        )
        # the dequantized weight, (out, in) as nn.Linear's: what the backward pass and tracing use
        self.register_buffer("weight", self.wq.dequantize().t().contiguous(), persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.crossbar = crossbar
        self.input_granularity = quant.input_granularity
        self.input_scale: float | None = None  # per-tensor scale from calibration
        self.in_features, self.out_features = linear.in_features, linear.out_features
        if (crossbar.has_randomness or weight_noise is not None) and seed is None:
            raise ValueError("seed is required when the crossbar has noise or faults")
        self.weight_noise = weight_noise  # σ_w of noise_domain="weight"; None: the crossbar product
        self.seed, self.resample_noise = seed, resample_noise
        self._generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.lora_scale = lora_alpha / lora_rank if lora_rank else 0.0
        self.lora_rank = lora_rank
        if lora_rank:
            # A Kaiming-uniform (a = sqrt(5)), B = 0 (arXiv 2106.09685). A fused Q/K/V projection gets two
            # rank-r branches, one on each of its Q and V thirds: A stacks both, B is block-masked.
            branches = 2 if lora_fused else 1
            self.lora_a = torch.nn.Parameter(torch.empty(branches * lora_rank, self.in_features))
            torch.nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
            self.lora_b = torch.nn.Parameter(torch.zeros(self.out_features, branches * lora_rank))
            mask = None
            if lora_fused:
                third = self.out_features // 3
                mask = torch.zeros(self.out_features, 2 * lora_rank)
                mask[:third, :lora_rank] = 1  # Q
                mask[2 * third :, lora_rank:] = 1  # V
            self.register_buffer("lora_mask", mask)

    @property
    def w_deq(self) -> torch.Tensor:
        """The dequantized weight W_deq, (in, out) = (K, N)."""
        return self.weight.t()

    def _noisy_weight(self) -> torch.Tensor:
        """W̃ = c·(Q − zp + σ_w·q_m·z), z ~ N(0, 1) per weight, as (out, in) (atleus.md §2.4,
        ``noise_domain="weight"``): the noise in units of the largest code q_m = 2^(b−1) − 1."""
        wq = self.wq
        q = wq.codes.to(torch.float64)
        if self.weight_noise:
            z = torch.randn(q.shape, generator=self._generator_for_call(), dtype=torch.float64)
            q = q + self.weight_noise * (2 ** (wq.bits - 1) - 1) * z
        if wq.zero_points is not None:
            q = q - wq.expand(wq.zero_points).to(torch.float64)
        return (q * wq.expand(wq.scales)).to(torch.float32).t()

    def _generator_for_call(self):
        if self._generator is None:
            return None
        if not self.resample_noise:  # a fixed chip instance: same noise every call
            self._generator.manual_seed(self.seed)
        return self._generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if in_reference_arithmetic() or x.numel() == 0:  # the model's own product (LoRA: see the options)
            return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))
        what = f"the input of a crossbar Linear ({self.in_features} -> {self.out_features})"
        # a float32 bias on float32 activations joins the float32 result in the product's last pass
        fused = self.bias is not None and x.dtype == self.bias.dtype == torch.float32 and self.weight_noise is None
        bias = self.bias if fused else None
        scale = None  # "token": dynamic per-row scales inside crossbar_linear, which refuse a non-finite row
        if self.input_granularity == "tensor" or self.weight_noise is not None:
            _check_finite(x, what)  # a given scale saturates Inf, a float product keeps it: check first
        if self.input_granularity == "tensor":
            scale = self.input_scale if self.input_scale is not None else _absmax_scale(x, self.crossbar.input_bits)
        with torch.no_grad():
            if self.weight_noise is not None:  # the fast float mode: a noisy weight, no crossbar
                emulated = F.linear(x, self._noisy_weight().to(x.device, x.dtype))
            else:
                failed = None
                try:
                    emulated = crossbar_linear(
                        x, self.wq, self.crossbar, input_scale=scale, generator=self._generator_for_call(), bias=bias
                    ).to(x.dtype)
                except ValueError as error:
                    failed = error
                if failed is not None:
                    _check_finite(x, what)  # name the layer where its input is at fault
                    raise failed
        needs_grad = torch.is_grad_enabled() and x.requires_grad
        y = _StraightThrough.apply(x, self.weight, emulated) if needs_grad else emulated
        if self.bias is not None and bias is None:
            y = y + self.bias
        if self.lora_scale:
            b = self.lora_b if self.lora_mask is None else self.lora_b * self.lora_mask
            if self.lora_dtype == "bfloat16":  # the branch's two products on a BF16 systolic tier
                with torch.no_grad():
                    branch = bf16_matmul(bf16_matmul(x, self.lora_a.t()), b.t()).to(x.dtype)
                branch = straight_through(branch, lambda: (x @ self.lora_a.t()) @ b.t(), x, self.lora_a, self.lora_b)
            else:
                branch = (x @ self.lora_a.t()) @ b.t()
            y = y + self.lora_scale * branch
        return y

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, bits={self.wq.bits}, "
            f"block={self.wq.block_rows}x{self.wq.block_cols}, "
            f"lora_rank={self.lora_rank}" + (", fused Q/V" if getattr(self, "lora_mask", None) is not None else "")
        )


class CrossbarConv(torch.nn.Module):
    """A frozen ``nn.Conv1d``/``nn.Conv2d`` on crossbars: its im2col product (:mod:`numerics.conv`), each of
    its G groups' K x N weight matrix quantized and programmed like a Linear's (:class:`CrossbarLinear`,
    same crossbar, quantization, noise), the bias added digitally. A depthwise convolution is G matrices
    of k_h·k_w rows (assumption: the specs say nothing of convolutions; this is the cost trace's view).
    Activation scales: per im2col row (one output position's receptive field) when dynamic, one per
    layer when calibrated. ``weight`` is the dequantized conv weight, as the layer's reference."""

    emulates_itself = True
    """Its internal products are part of the emulation: ``emulate()`` leaves them alone."""
    emulated_kind = "conv"
    """What one call counts as in ``model.emulation.counts``."""
    replaces = "Conv"
    """The layer kind it stands in for (``model.emulation.swapped``)."""

    def __init__(self, conv: torch.nn.Module, bits: int, crossbar: CrossbarConfig, quant: QuantConfig, **linear):
        super().__init__()
        self.geometry = copy_conv_attributes(self, conv)
        mats = weight_matrices(conv.weight.detach(), conv.groups)  # (G, K, N)
        seed = linear.pop("seed", None)
        self.gemms = torch.nn.ModuleList(
            CrossbarLinear(
                types.SimpleNamespace(weight=w.t(), bias=None, in_features=w.shape[0], out_features=w.shape[1]),
                bits,
                crossbar,
                quant,
                # a distinct chip region per group: the layer's seed for group 0 (as a Linear), then apart
                seed=None if seed is None else seed + g * (1 << 20),
                **linear,
            )
            for g, w in enumerate(mats)
        )
        self._stacked: dict = {}  # (device, crossbar) -> StackedWeights of the groups (their codes never change)
        dequantized = torch.cat([m.weight for m in self.gemms])  # (C_out, K)
        self.register_buffer("weight", dequantized.reshape(conv.weight.shape), persistent=False)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())

    @property
    def input_scale(self) -> float | None:
        """The per-tensor activation scale from calibration (None: dynamic)."""
        return self.gemms[0].input_scale

    @input_scale.setter
    def input_scale(self, value: float | None) -> None:
        for gemm in self.gemms:
            gemm.input_scale = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = module_input(self, x)
        if in_reference_arithmetic() or x.numel() == 0:
            conv = F.conv1d if self.geometry.dims == 1 else F.conv2d
            g = self.geometry
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return conv(x, self.weight.to(x.dtype), bias, g.stride, g.padding, g.dilation, g.groups)

        y = conv_as_gemm(x, self.weight, None, self.geometry, self._gemm)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype).view(-1, *([1] * self.geometry.dims))
        return y

    def _gemm(self, cols: torch.Tensor, weights: torch.Tensor, _bias) -> torch.Tensor:
        """The G products (G, M, N) of the im2col matrices ``cols`` (G, M, K)."""
        first = self.gemms[0]
        per_call_tensor_scale = first.input_granularity == "tensor" and first.input_scale is None
        noisy = first.crossbar.has_randomness or first.weight_noise is not None
        if len(self.gemms) == 1 or noisy or per_call_tensor_scale:
            return torch.stack([layer(cols[i]) for i, layer in enumerate(self.gemms)])
        _check_finite(cols, f"the input of a crossbar convolution ({self.in_channels} -> {self.out_channels})")
        key = (cols.device, first.crossbar)
        stacked = self._stacked.get(key)
        if stacked is None:
            stacked = self._stacked[key] = StackedWeights.of([m.wq for m in self.gemms], first.crossbar, cols.device)
        with torch.no_grad():
            y = stacked_crossbar_linear(cols, stacked, input_scale=first.input_scale)
        return straight_through(y.to(cols.dtype), lambda: torch.matmul(cols, weights.to(cols.dtype)), cols)

    def extra_repr(self) -> str:
        g = self.geometry
        return (
            f"{self.in_channels}, {self.out_channels}, kernel={tuple(self.weight.shape[2:])}, stride={g.stride}, "
            f"padding={g.padding}, dilation={g.dilation}, groups={g.groups}, bits={self.gemms[0].wq.bits}"
        )


# ------------------------------------------------------------------ attention
def _absmax_scale(t: torch.Tensor, bits: int) -> float:
    """Per-call per-tensor symmetric scale (1 for an all-zero tensor)."""
    a = float(t.detach().abs().max())
    return a / (2 ** (bits - 1) - 1) if a > 0 else 1.0


def _check_finite(t: torch.Tensor, what: str) -> None:
    if not all_finite(t):
        raise ValueError(f"{what} contains Inf or NaN: INT8 activations need finite values")


def _int8_rows(t: torch.Tensor):
    """INT8 codes (as float32) with one dynamic absmax scale per row (a token's activations), (..., 1)."""
    return quantize_input(t, 8, dtype=torch.float32)


def _int8_matrices(t: torch.Tensor, live: torch.Tensor | None = None):
    """INT8 codes (as float32) with one absmax scale per matrix (a K or V written as weights), (..., 1, 1);
    rows not ``live`` (keys every query masks out, e.g. padding) do not set the scale, and their codes
    saturate. ``t`` must be finite (the callers check): :func:`quantize_input`'s steps without its checks;
    where every row is live, a matrix is one row of the compiled :func:`numerics.kernels.input_codes`."""
    if live is None or bool(live.all()):
        compiled = kernels.input_codes(t.detach().reshape(*t.shape[:-2], t.shape[-2] * t.shape[-1]), 8)
        if compiled is not None:
            return compiled[0].view(t.shape), compiled[1].unsqueeze(-1)
    a = t.detach().abs()
    if live is not None:
        a = a.masked_fill(~live.unsqueeze(-1), 0.0)
    a = a.amax((-2, -1), keepdim=True).to(torch.float64)
    s = torch.where(a > 0, a / 127, 1.0)
    return torch.round(t.detach().to(torch.float64) / s).clamp_(-127, 127).to(torch.float32), s


def crossbar_product(a_int: torch.Tensor, b_int: torch.Tensor, crossbar: CrossbarConfig) -> torch.Tensor:
    """``a_int @ b_int`` (int64) with ``b_int`` written into the arrays as weights, batched over
    the leading dimensions (noise-free configurations). Each batch entry is a different "weight" in
    arrays of its own, and each entry sums and wraps its own blocks, bit for bit the separate products
    (:func:`numerics.crossbar.unchecked_batched`)."""
    check_type("crossbar", crossbar, CrossbarConfig)
    if crossbar.has_randomness:
        raise ValueError("crossbar_product models noise-free arrays: the config enables noise or faults")
    check_codes(a_int, "a_int", *crossbar.input_range)
    check_codes(b_int, "b_int", *crossbar.weight_range)
    return _batched_product(a_int, b_int, crossbar, torch.int64)


def _batched_product(a_int: torch.Tensor, b_int: torch.Tensor, crossbar: CrossbarConfig, dtype) -> torch.Tensor:
    """:func:`crossbar_product` of codes made here (unchecked, any dtype), as ``dtype``."""
    batch = a_int.shape[:-2]
    if b_int.shape[:-2] != batch:  # torch.broadcast_shapes costs more than the rest of a small product
        batch = torch.broadcast_shapes(batch, b_int.shape[:-2])
    shape = (*batch, a_int.shape[-2], b_int.shape[-1])
    if 0 in shape or a_int.shape[-1] == 0:  # nothing to write or nothing to read: an empty or zero product
        return torch.zeros(shape, dtype=dtype, device=a_int.device)
    m, k = a_int.shape[-2:]
    a3 = a_int.expand(*batch, m, k).reshape(-1, m, k)
    b3 = b_int.expand(*batch, k, shape[-1]).reshape(-1, k, shape[-1])
    return unchecked_batched(a3, b3, crossbar, dtype=dtype).reshape(shape)


def int8_crossbar_product(a: torch.Tensor, b: torch.Tensor, crossbar: CrossbarConfig) -> torch.Tensor:
    """``a @ b`` of two activations on HASTILY: ``a`` INT8 per row, ``b`` INT8 per matrix and written
    as weights (dynamic absmax scales, so one sequence's result never depends on another's); float32."""
    _check_finite(a, "an attention operand")
    _check_finite(b, "an attention operand")
    a_int, s_a = _int8_rows(a)
    b_int, s_b = _int8_matrices(b)
    return (_batched_product(a_int, b_int, crossbar, F64) * s_a * s_b).to(torch.float32)


@functools.lru_cache(maxsize=64)
def _unsigned(crossbar: CrossbarConfig) -> CrossbarConfig:
    """``crossbar`` driven by unsigned inputs (the softmax codes), made once per config."""
    return dataclasses.replace(crossbar, input_encoding="unsigned")


def hastily_attention(
    q,
    k,
    v,
    attn_mask=None,
    *,
    scale=None,
    is_causal=False,
    crossbar: CrossbarConfig = HASTILY_SRAM,
    uclm: UCLMConfig = HASTILY_UCLM,
) -> torch.Tensor:
    """SDPA on HASTILY: INT8 Q K^T with K^T written into the arrays, UCLM softmax, uint8
    softmax codes (scale 1/255) x INT8 V with V written into the arrays.

    Scales are dynamic absmax (hastily.md §2.2 without calibration), taken so that a sequence's
    result depends on nothing but its own tokens: Q per query row; K and V per (sequence, head)
    matrix over the keys some query may attend (keys that ``attn_mask`` masks for every query, i.e.
    padding, do not set them). A query that may attend no key gives 0, as torch's SDPA does."""
    for name, t in (("query", q), ("key", k), ("value", v)):
        _check_finite(t, name)
    length_q, length_k, d = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = 1 / math.sqrt(d) if scale is None else scale
    allowed = live = None  # None: every query may attend every key
    if is_causal:
        allowed = torch.ones(length_q, length_k, dtype=torch.bool, device=q.device).tril()
    if attn_mask is not None:
        given = attn_mask if attn_mask.dtype == torch.bool else attn_mask > -math.inf
        allowed = given if allowed is None else allowed & given
    if allowed is not None:
        live = allowed.any(-2)  # (..., L_k): keys some query may attend
        live = live.expand(*torch.broadcast_shapes(live.shape[:-1], k.shape[:-2]), length_k)
    q_int, s_q = _int8_rows(q)
    k_int, s_k = _int8_matrices(k, live)
    v_int, s_v = _int8_matrices(v, live)
    logits = _batched_product(q_int, k_int.transpose(-1, -2), crossbar, F64) * (s_q * s_k * scale)
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        logits = logits + attn_mask.to(torch.float64)
    if allowed is not None:
        logits = logits.masked_fill(~allowed, -math.inf)
    codes = uclm_softmax(logits, config=uclm, return_codes=True)
    out = _batched_product(codes, v_int, _unsigned(crossbar), F64) * (s_v / uclm.out_max)
    return out.to(q.dtype)


# ------------------------------------------------------------------- builders
def _replace(model: torch.nn.Module, names, make) -> None:
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, make(name, getattr(parent, child)))


STATIC_LAYERS = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)
"""Layers whose weights the compute-in-memory targets program into crossbars (convolutions as im2col)."""


def _static_layers(model: torch.nn.Module, heads) -> list[tuple[str, str]]:
    """(name, "mha" | "ffn") of the Linears and convolutions that go on the crossbars (heads excepted);
    convolutions are "ffn" whatever their name."""
    rule = head_rule(heads)
    return [
        (n, "ffn" if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d)) else layer_kind(n, rule))
        for n, m in model.named_modules()
        if n and isinstance(m, STATIC_LAYERS) and layer_kind(n, rule) is not None
    ]


def _on_crossbars(layer: torch.nn.Module, bits: int, crossbar, quant, **options) -> torch.nn.Module:
    if isinstance(layer, torch.nn.Linear):
        return CrossbarLinear(layer, bits, crossbar, quant, **options)
    for name in ("lora_rank", "lora_fused", "lora_dtype"):  # LoRA sits on W_Q and W_V only
        options.pop(name, None)
    return CrossbarConv(layer, bits, crossbar, quant, **options)


def _swap_counts(model: torch.nn.Module) -> dict[str, int]:
    record = swap_record(model)
    return {"linear": record["Linear -> CrossbarLinear"], "conv": record["Conv -> CrossbarConv"]}


def _observe(model, names, calibrate_with, bits) -> dict[str, float]:
    """Per-tensor input scales of the named Linears, observed on ``calibrate_with`` batches while
    ``model`` still computes in fp32 (empty without batches)."""
    if calibrate_with is None:
        return {}
    observers = observe_inputs(model, calibrate_with, names)
    return {name: observers[name].scale(bits) for name in names}


def _set_scales(model, scales: dict[str, float]) -> None:
    for name, scale in scales.items():
        model.get_submodule(name).input_scale = scale


def check_hastily_crossbar(crossbar: CrossbarConfig) -> None:
    """HASTILY computes INT8 x INT8: a CrossbarConfig with 8-bit weights and inputs (hastily.md §2.1)."""
    check_type("crossbar", crossbar, CrossbarConfig)
    if crossbar.weight_bits != 8 or crossbar.input_bits != 8:
        raise ValueError("crossbar.weight_bits and crossbar.input_bits must be 8 for HASTILY (INT8)")


NOISE_DOMAINS = ("cell", "weight")
"""Where Atleus' device noise is drawn: per cell inside the crossbar product, or per weight (fast)."""


def check_noise_domain(domain, noise) -> float | None:
    """σ_w for ``noise_domain="weight"`` (0.0 without noise), None for ``"cell"``; ValueError for other
    domains, or for noise the weight domain cannot express (ADC noise, stuck-at faults)."""
    if domain not in NOISE_DOMAINS:
        raise ValueError(f"noise_domain must be one of {NOISE_DOMAINS}; got {domain!r}")
    if domain == "cell":
        return None
    fields = check_noise(noise)
    if set(fields) - {"cell_noise_std"}:
        raise ValueError(
            'noise_domain="weight" takes noise as one std of the weight (units of the largest code); '
            f"{sorted(set(fields) - {'cell_noise_std'})} exist only in the cell domain"
        )
    return float(fields.get("cell_noise_std", 0.0))


def check_noise(noise) -> dict:
    """The CrossbarConfig noise fields of the ``noise`` option: None, a cell-noise std (units of L)
    or a dict of noise fields; ValueError naming the allowed fields otherwise."""
    if noise is None:
        return {}
    fields = noise if isinstance(noise, dict) else {"cell_noise_std": noise}
    unknown = set(fields) - set(_NOISE_FIELDS)
    if unknown:
        raise ValueError(f"noise fields must be among {_NOISE_FIELDS}, got {sorted(unknown)}")
    return dict(fields)


def hastily_(
    model: torch.nn.Module,
    *,
    crossbar: CrossbarConfig = HASTILY_SRAM,
    weight_granularity: str = "channel",
    calibrate_with=None,
    heads=HEADS,
) -> dict[str, int]:
    """Put ``model``'s Linears and convolutions on HASTILY, in place (hastily.md §2): INT8 per-channel
    weights on ``crossbar``; INT8 activations per tensor with observer scales from ``calibrate_with``
    batches, else per token with dynamic absmax scales (the spec's per-call absmax would make a
    sequence's result depend on its batch). ``heads`` (:mod:`numerics.heads`) stay in the model's
    arithmetic. The crossbar weights are frozen (buffers); every other parameter keeps its
    ``requires_grad``. Returns counts of what was swapped (``"linear"``, ``"conv"``)."""
    check_hastily_crossbar(crossbar)
    check_choice("weight_granularity", weight_granularity, HASTILY_WEIGHT_GRANULARITIES)
    # calibrated: one static per-tensor scale per layer (the spec); otherwise a dynamic scale per token,
    # so that no sequence's result depends on the others in its batch or on its padding
    quant = QuantConfig(
        8, 8, granularity=weight_granularity, input_granularity="token" if calibrate_with is None else "tensor"
    )
    names = [n for n, _ in _static_layers(model, heads)]
    scales = _observe(model, names, calibrate_with, 8)
    _replace(model, names, lambda _n, m: _on_crossbars(m, 8, crossbar, quant))
    _set_scales(model, scales)
    return _swap_counts(model)


def atleus_(
    model: torch.nn.Module,
    *,
    quant: QuantConfig = M8F8,
    crossbar: CrossbarConfig = ATLEUS_RERAM,
    noise=None,
    seed: int = 0,
    resample_noise: bool = False,
    lora_rank: int = 0,
    lora_alpha: float = 32.0,
    calibrate_with=None,
    heads=HEADS,
    lora_dtype: str = "float32",
    noise_domain: str = "cell",
) -> dict[str, int]:
    """Put ``model``'s static-weight Linears and convolutions on Atleus' ReRAM crossbars, in place
    (atleus.md §2.1, §2.4): Q/K/V/O at ``quant.mha_weight_bits``, FFN linears and convolutions at
    ``quant.ffn_weight_bits`` (assumption for convolutions), with crossbar-wise scales; ``heads``
    (:mod:`numerics.heads`) stay in the model's arithmetic. ``noise``: a cell-noise std (units of L) or
    a dict of CrossbarConfig noise fields; ``seed`` fixes the chip instance, ``resample_noise`` redraws
    every forward. ``noise_domain="weight"``: the fast float mode instead, W̃ = c·(Q + σ_w·q_m·z) and a
    float product (no input quantization, no ADC), ``noise`` = σ_w. The crossbar weights are frozen
    (buffers). ``lora_rank`` > 0 adds LoRA on W_Q and
    W_V (the Q and V thirds of a fused Q/K/V projection) and freezes every other parameter, as the
    paper's fine-tuning does (the branches' products in ``lora_dtype``: the systolic tier's format);
    without LoRA the other parameters keep their ``requires_grad``.
    Returns counts of what was swapped (``"mha"``, ``"ffn"``, ``"lora"``, ``"conv"``)."""
    check_type("quant", quant, QuantConfig)
    check_type("crossbar", crossbar, CrossbarConfig)
    weight_noise = check_noise_domain(noise_domain, noise)
    if noise is not None and weight_noise is None:
        crossbar = dataclasses.replace(crossbar, **check_noise(noise))
    if isinstance(lora_rank, bool) or not isinstance(lora_rank, int) or lora_rank < 0:
        raise ValueError(f"lora_rank must be an int >= 0, got {lora_rank!r}")
    layers = _static_layers(model, heads)
    names = [n for n, _ in layers]
    kinds = dict(layers)
    bits = {"mha": quant.mha_weight_bits, "ffn": quant.ffn_weight_bits}
    scales = _observe(model, names, calibrate_with, quant.input_bits)
    if lora_rank:
        model.requires_grad_(False)

    def make(name, m):
        fused = isinstance(m, torch.nn.Linear) and fused_qkv(name, m.out_features)
        return _on_crossbars(
            m,
            bits[kinds[name]],
            crossbar,
            quant,
            seed=seed + names.index(name),
            resample_noise=resample_noise,
            lora_rank=lora_rank if lora_leaf(name) or fused else 0,
            lora_alpha=lora_alpha,
            lora_fused=fused,
            lora_dtype=lora_dtype,
            weight_noise=weight_noise,
        )

    _replace(model, names, make)
    _set_scales(model, scales)
    counts = {kind: sum(k == kind for k in kinds.values()) for kind in ("mha", "ffn")}
    counts["lora"] = sum(1 for m in model.modules() if isinstance(m, CrossbarLinear) and m.lora_scale)
    counts["conv"] = _swap_counts(model)["conv"]
    return counts
