"""Weight quantization for crossbars (per tensor, per channel, per row block, crossbar-wise)
and activation range observers.

Crossbar-wise quantization is the Atleus reconstruction (``docs/hardware/atleus.md``
§2.1): one scale per sub-matrix held by one crossbar (``rows`` x n_w weights), applied
digitally to that crossbar's partial sum. Every granularity is a 2-D block shape, so one
code path serves all four. Rounding and code clamping come from :mod:`numerics.formats`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from numerics import kernels
from numerics.crossbar import ATLEUS_RERAM, CrossbarConfig
from numerics.formats import IntFormat, Rounding, all_finite, quantize
from numerics.validation import check_choice, check_int

__all__ = [
    "QuantConfig",
    "M8F8",
    "M8F4",
    "M4F8",
    "M4F4",
    "WeightQuant",
    "quantize_weight",
    "block_shape",
    "quantize_input",
    "MinMaxObserver",
    "PercentileObserver",
    "observe_inputs",
]

GRANULARITIES = ("crossbar", "row_block", "channel", "tensor")
SCALE_FORMATS = ("fp32", "pow2", "float8_e4m3fn")
_FP8_MAX = 448.0  # largest finite float8_e4m3fn
_FP8_GROUP = 256  # block scales sharing one double-quantization scale (QLoRA)


@dataclass(frozen=True)
class QuantConfig:
    """Quantization recipe of a CIM target (atleus.md §2.1; hastily.md §2.2)."""

    mha_weight_bits: int = 8
    """Weight bits of the attention projections Q, K, V, O (2..16). Atleus MxFy's x;
    default 8 (assumption)."""

    ffn_weight_bits: int = 8
    """Weight bits of the FFN linears (2..16). Atleus MxFy's y; default 8 (assumption)."""

    granularity: str = "crossbar"
    """Scale block: ``"crossbar"`` (rows x n_w of one crossbar), ``"row_block"`` (rows x N),
    ``"channel"`` (one per output), ``"tensor"``. Reconstruction (Atleus crossbar-wise)."""

    symmetric: bool = True
    """True: codes in [-q_m, q_m], q_m = 2**(b-1) - 1, c = absmax / q_m (QLoRA absmax,
    assumption). False: affine codes over the block's [min, max] with a zero point."""

    scale_format: str = "fp32"
    """Stored block scale: ``"fp32"``, ``"pow2"`` (2**ceil(log2(a/q_m)), a pure shift) or
    ``"float8_e4m3fn"`` (double quantization: 256 consecutive scales share an fp32 scale).
    Assumption."""

    rounding: str = "nearest_even"
    """Rounding of weight and input codes (numerics.formats modes). Assumption."""

    input_bits: int = 8
    """Input code width (2..16), symmetric. Assumption."""

    input_granularity: str = "token"
    """``"token"``: dynamic absmax per row; ``"tensor"``: one scale per tensor (calibrated by
    an observer, else the call's absmax). Assumption."""

    def __post_init__(self) -> None:
        check_int("mha_weight_bits", self.mha_weight_bits, 2, 16)
        check_int("ffn_weight_bits", self.ffn_weight_bits, 2, 16)
        check_int("input_bits", self.input_bits, 2, 16)
        check_choice("granularity", self.granularity, GRANULARITIES)
        if not isinstance(self.symmetric, bool):
            raise TypeError("symmetric must be a bool")
        check_choice("scale_format", self.scale_format, SCALE_FORMATS)
        Rounding.parse(self.rounding)
        check_choice("input_granularity", self.input_granularity, ("token", "tensor"))


M8F8 = QuantConfig(8, 8)
"""Atleus MxFy precision: 8-bit attention projections, 8-bit FFN."""
M8F4 = QuantConfig(8, 4)
"""Atleus MxFy precision: 8-bit attention projections, 4-bit FFN."""
M4F8 = QuantConfig(4, 8)
"""Atleus MxFy precision: 4-bit attention projections, 8-bit FFN."""
M4F4 = QuantConfig(4, 4)
"""Atleus MxFy precision: 4-bit attention projections, 4-bit FFN."""


@dataclass(frozen=True)
class WeightQuant:
    """Integer weight codes with their block scales (and zero points if asymmetric)."""

    codes: torch.Tensor
    """int64 codes (K, N), signed ``bits``-bit."""
    scales: torch.Tensor
    """float64 stored scales c, one per block: (ceil(K/rows_per_block), ceil(N/cols_per_block))."""
    zero_points: torch.Tensor | None
    """int64 zero points per block (asymmetric), else None."""
    bits: int
    """Code width."""
    block_rows: int
    """Rows (input features) per scale block."""
    block_cols: int
    """Columns (outputs) per scale block."""

    def expand(self, t: torch.Tensor) -> torch.Tensor:
        """Per-block values (P, G) expanded to the weight's (K, N)."""
        k, n = self.codes.shape
        return t.repeat_interleave(self.block_rows, 0)[:k].repeat_interleave(self.block_cols, 1)[:, :n]

    def dequantize(self) -> torch.Tensor:
        """W_deq = c * (Q - zp), float32 (K, N)."""
        q = self.codes.to(torch.float64)
        if self.zero_points is not None:
            q = q - self.expand(self.zero_points).to(torch.float64)
        return (q * self.expand(self.scales)).to(torch.float32)


def block_shape(
    granularity: str, k: int, n: int, bits: int, crossbar: CrossbarConfig = ATLEUS_RERAM
) -> tuple[int, int]:
    """(rows, cols) of one scale block of a (K, N) weight at ``bits`` on ``crossbar``."""
    if granularity == "crossbar":
        return crossbar.rows, dataclasses.replace(crossbar, weight_bits=bits).weights_per_crossbar
    if granularity == "row_block":
        return crossbar.rows, n
    if granularity == "channel":
        return k, 1
    if granularity == "tensor":
        return k, n
    check_choice("granularity", granularity, GRANULARITIES)
    raise AssertionError("unreachable")


def _store_scales(c: torch.Tensor, a_nonzero: torch.Tensor, scale_format: str, q_m: int):
    """Stored block scales for raw scales c = a / q_m (float64)."""
    if scale_format == "fp32":
        return c.to(torch.float32).to(torch.float64)
    if scale_format == "pow2":
        return torch.exp2(torch.ceil(torch.log2(c)))
    # Double quantization: groups of 256 consecutive (row-major) non-zero block scales share
    # S = float32(max c / 448); zero blocks keep c = 1 (their codes are all 0 anyway).
    flat = c.flatten()
    groups = -(-flat.numel() // _FP8_GROUP)
    pad = groups * _FP8_GROUP - flat.numel()
    live = torch.nn.functional.pad(torch.where(a_nonzero.flatten(), flat, 0.0), (0, pad))
    s = (live.view(groups, _FP8_GROUP).amax(1) / _FP8_MAX).to(torch.float32).to(torch.float64)
    s = torch.where(s > 0, s, 1.0).repeat_interleave(_FP8_GROUP)[: flat.numel()]
    # torch's float8 cast rounds to nearest even; the smallest subnormal 2**-9 guards underflow.
    q8 = (flat / s).to(torch.float8_e4m3fn).to(torch.float64).clamp(min=2.0**-9)
    return torch.where(a_nonzero.flatten(), q8 * s, flat).view_as(c)


def quantize_weight(
    w: torch.Tensor,
    bits: int,
    *,
    granularity: str = "crossbar",
    symmetric: bool = True,
    scale_format: str = "fp32",
    rounding: str = "nearest_even",
    crossbar: CrossbarConfig = ATLEUS_RERAM,
    generator: torch.Generator | None = None,
) -> WeightQuant:
    """Quantize a (K, N) weight (K = in-features) block-wise (atleus.md §2.1 steps 1-3).

    Symmetric: a = max|W_block| (float64), c = a / q_m (1 if a = 0), stored per
    ``scale_format``; codes clamp(round(W / c), -q_m, q_m). Asymmetric: the block range
    [min(W, 0), max(W, 0)] maps onto [-2**(b-1), 2**(b-1) - 1] with a zero point
    (``scale_format="fp32"`` only).
    """
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        raise TypeError(f"w must be a floating tensor, got {getattr(w, 'dtype', type(w))}")
    if w.dim() != 2 or w.numel() == 0:
        raise ValueError(f"w must be a non-empty 2-D (K, N) tensor, got shape {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError("w must be finite")
    check_int("bits", bits, 2, 16)
    check_choice("scale_format", scale_format, SCALE_FORMATS)
    if not symmetric and scale_format != "fp32":
        raise ValueError("scale_format must be 'fp32' when symmetric=False")
    k, n = w.shape
    rb, cb = block_shape(granularity, k, n, bits, crossbar)
    p, g = -(-k // rb), -(-n // cb)
    # (P, G, rb*cb) view of the zero-padded weight: one row per scale block.
    wp = torch.nn.functional.pad(w.to(torch.float64), (0, g * cb - n, 0, p * rb - k))
    blocks = wp.view(p, rb, g, cb).permute(0, 2, 1, 3).reshape(p * g, rb * cb)
    fmt = IntFormat(bits, True)
    q_m = fmt.qmax
    if symmetric:
        a = blocks.abs().amax(1)
        c = _store_scales(torch.where(a > 0, a / q_m, 1.0), a > 0, scale_format, q_m)
        codes = quantize(blocks, fmt, c, axis=0, rounding=rounding, generator=generator)
        codes = codes.to(torch.int64).clamp(-q_m, q_m)
        zp = None
    else:
        lo, hi = blocks.amin(1).clamp(max=0.0), blocks.amax(1).clamp(min=0.0)
        c = torch.where(hi > lo, (hi - lo) / (2**bits - 1), 1.0).to(torch.float32).to(torch.float64)
        zp = torch.round(fmt.qmin - lo / c).clamp(fmt.qmin, fmt.qmax).to(torch.int64)
        codes = quantize(blocks, fmt, c, zero_point=zp, axis=0, rounding=rounding, generator=generator).to(torch.int64)
        zp = zp.view(p, g)
    codes = codes.view(p, g, rb, cb).permute(0, 2, 1, 3).reshape(p * rb, g * cb)[:k, :n]
    return WeightQuant(codes.contiguous(), c.view(p, g), zp, bits, rb, cb)


def quantize_input(
    x: torch.Tensor, bits: int = 8, *, scale=None, rounding: str = "nearest_even", dtype: torch.dtype = torch.int64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric input codes and scales (atleus.md §2.1 step 4; hastily.md §2.2).

    ``scale=None``: dynamic per row, s_x = max|x_row| / q_m (1 for a zero row), shape
    (..., 1). Otherwise the given per-tensor scale (e.g. from an observer). Codes are
    clamp(round(x / s_x), -q_m, q_m), int64 (or ``dtype``: float32 holds every code of up to 16 bits
    exactly, as the exact float32 products take them).
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor, got {getattr(x, 'dtype', type(x))}")
    check_int("bits", bits, 2, 16)
    fmt = IntFormat(bits, True)
    q_m = fmt.qmax
    if scale is None:
        nearest_even = Rounding.parse(rounding) is Rounding.NEAREST_EVEN
        if nearest_even and (compiled := kernels.input_codes(x, bits)):
            return compiled[0].to(dtype), compiled[1]
        a = x.detach().abs().amax(-1, keepdim=True).to(torch.float64)
        s = torch.where(a > 0, a / q_m, 1.0)
        if nearest_even and all_finite(a):
            # finite rows (a NaN or Inf shows in its row's max) with valid scales: quantize's steps without
            # its checks, which a layer would otherwise pay on every call
            return torch.round(x.detach().to(torch.float64) / s).clamp_(-q_m, q_m).to(dtype), s
        flat = x.detach().reshape(-1, x.shape[-1])
        codes = quantize(flat, fmt, s.reshape(-1), axis=0, rounding=rounding).view(x.shape)
    else:
        s = torch.as_tensor(scale, dtype=torch.float64, device=x.device).reshape(())
        codes = quantize(x.detach(), fmt, s, rounding=rounding)
    return codes.to(dtype).clamp(-q_m, q_m), s


# --------------------------------------------------------------------- observers
class MinMaxObserver:
    """Running min / max of observed activations; symmetric scale a / q_m, a = max|x|."""

    def __init__(self) -> None:
        self.min_val = math.inf
        self.max_val = -math.inf

    def observe(self, x: torch.Tensor) -> None:
        if x.numel() == 0:
            return
        self.min_val = min(self.min_val, float(x.detach().min()))
        self.max_val = max(self.max_val, float(x.detach().max()))

    def absmax(self) -> float:
        if self.min_val > self.max_val:
            raise ValueError("observer has seen no data")
        return max(abs(self.min_val), abs(self.max_val))

    def scale(self, bits: int = 8) -> float:
        """Per-tensor symmetric scale for ``bits``-bit codes (1 if everything was zero)."""
        a = self.absmax()
        return a / (2 ** (bits - 1) - 1) if a > 0 else 1.0


class PercentileObserver(MinMaxObserver):
    """Clips outliers: a = max over batches of the ``percentile`` of |x| within a batch."""

    def __init__(self, percentile: float = 99.99) -> None:
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        super().__init__()
        self.percentile = percentile
        self._abs = 0.0

    def observe(self, x: torch.Tensor) -> None:
        if x.numel() == 0:
            return
        super().observe(x)
        flat = x.detach().abs().flatten().to(torch.float64)
        rank = max(1, math.ceil(self.percentile / 100 * flat.numel()))
        self._abs = max(self._abs, float(flat.kthvalue(rank).values))

    def absmax(self) -> float:
        super().absmax()  # raises if empty
        return self._abs


def call_with(model, batch):
    """``model`` called on one batch: a tensor, a tuple or list of arguments, or a dict of keyword
    arguments (the forms every ``calibrate_with`` takes)."""
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def run_batches(model: torch.nn.Module, batches, before=None) -> None:
    """Run ``model`` on every batch on inference activations (eval mode: no dropout; no gradients), each
    module's mode restored after, calling ``before(batch)`` first."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                if before is not None:
                    before(batch)
                call_with(model, batch)
    finally:
        for m, mode in modes.items():
            m.training = mode


def observe_inputs(model: torch.nn.Module, batches, names, observer=MinMaxObserver) -> dict:
    """Run ``model`` on each batch (a tensor, tuple of args or dict of kwargs) under
    ``torch.no_grad()`` in eval mode (restored afterwards) and return ``{name: observer}`` of the
    inputs seen by the submodules ``names`` (a dict ``{name: observer}`` gives the observers itself;
    each has ``observe(x)``)."""
    observers = dict(names) if isinstance(names, dict) else {name: observer() for name in names}
    modules = dict(model.named_modules())
    missing = [name for name in observers if name not in modules]
    if missing:
        raise ValueError(f"names not found in the model: {missing}")
    hooks = [
        modules[name].register_forward_pre_hook(lambda _m, args, obs=obs: obs.observe(args[0]))
        for name, obs in observers.items()
    ]
    try:
        run_batches(model, batches)
    finally:
        for h in hooks:
            h.remove()
    return observers
