"""SoftEx ``expp``: the BF16 exponential unit, bit-exact with the public RTL.

Spec: ``docs/hardware/softex.md`` section 2 (RTL ``rtl/expu/expu_schraudolph.sv`` and
``rtl/expu/expu_correction.sv``). Schraudolph's ``2^z ~ 2^floor(z) (1 + frac z)`` on integers, then a
piecewise-quadratic correction of the fraction. The unit is elementwise on 16-bit codes, so the
kernel evaluates the datapath once on all 65,536 codes (per device) and then looks results up
(:func:`numerics.formats.lookup`).
"""

from __future__ import annotations

import torch

from numerics.formats import lookup, require_bfloat16

__all__ = ["expp", "expp_codes", "expp_table", "LOG2E_Q14", "CORRECTION"]

LOG2E_Q14 = 23637
"""A = int(2^14 / ln 2) in Q1.14 (RTL: truncated, not rounded to 23638)."""

CORRECTION = {"alpha_q": 4, "beta_q": 7, "gamma1_q": 363, "gamma2_q": 278}
"""Correction constants (RTL ``softex_pkg.sv`` reals after ``int'()``): alpha, beta with 4 fraction
bits (0.25, 0.4375), gamma1, gamma2 in Q2.7 (2.8359375, 2.171875)."""

_POS_INF, _ZERO = 0x7F80, 0x0000
_TABLES: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}


def correct_fraction(f: torch.Tensor) -> torch.Tensor:
    """Spec 2.1 step 6: 7-bit fraction f -> f' ~ 128 (2^(f/128) - 1), integer tensor in and out."""
    a, b, g1, g2 = CORRECTION["alpha_q"], CORRECTION["beta_q"], CORRECTION["gamma1_q"], CORRECTION["gamma2_q"]
    low = ((2 * f * a) * (f + g1)) >> 12
    high = 127 - ((((255 - 2 * f) * b) * (f + g2)) >> 12)
    return torch.where(f < 64, low, high)


def expp_codes(codes: torch.Tensor) -> torch.Tensor:
    """The expp datapath on raw BF16 codes (integer tensor, values 0..65535) -> result codes (int64).

    Follows spec 2.1 step by step, vectorised; used to build the lookup table.
    """
    b = codes.to(torch.int64)
    s, e, m = b >> 15, (b >> 7) & 0xFF, b & 0x7F
    p = (128 + m) * LOG2E_Q14  # 23-bit product, implicit 1 used even for E = 0
    t = p >> (140 - e).clamp(0, 63)  # |x| log2(e) truncated to 8 fraction bits (0 for E < 118)
    r = (t >> 1) + (t & 1)  # round half up to 7 fraction bits
    i = torch.where(s == 1, -r, r)
    k, f = i >> 7, i & 0x7F  # floor division and its non-negative remainder
    eo = k + 127
    out = (eo << 7) | correct_fraction(f)
    out = torch.where(eo >= 255, _POS_INF, out)
    out = torch.where(eo <= 0, _ZERO, out)  # subnormal results flushed
    huge = e >= 134  # |x| >= 128, +-Inf, NaN: the sign decides
    return torch.where(huge, torch.where(s == 0, _POS_INF, _ZERO), out)


def expp_table(device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """The 65,536 expp results indexed by input code, built once per device and dtype.

    ``dtype`` bfloat16 (the unit's output) or float32 (the same values widened exactly, for consumers
    that continue in FP32)."""
    if dtype not in (torch.bfloat16, torch.float32):
        raise ValueError(f"dtype must be bfloat16 or float32; got {dtype}")
    device = torch.device(device)
    table = _TABLES.get((device, dtype))
    if table is None:
        codes = expp_codes(torch.arange(65536, dtype=torch.int64))
        table = codes.to(torch.int16).view(torch.bfloat16).to(dtype).to(device)  # codes < 0x8000: no sign wrap
        _TABLES[(device, dtype)] = table
    return table


def expp(x: torch.Tensor, *, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """SoftEx exponential: bfloat16 tensor -> bfloat16 tensor of the same shape, elementwise.

    ``dtype=torch.float32`` returns the same values widened to FP32 (exact), saving a cast pass where
    the result feeds FP32 arithmetic.

    Corner cases follow the RTL (spec 2.2): +-0, subnormals and |x| < 2^-9 give 1.0; x >= 89, +Inf and
    NaN with sign 0 give +Inf; x <= -87.5, -Inf and NaN with sign 1 give +0. The output is never
    negative or NaN.
    """
    require_bfloat16(x)
    return lookup(expp_table(x.device, dtype), x)
