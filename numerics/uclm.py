"""HASTILY UCLM lookup-table exponential and the vector unit's softmax, bit for bit.

The UCLM arrays hold a 128-entry ROM table of 2**(d/128) (unsigned Q1.15). An exponential
is e**x = 2**n * 2**(d/128) * e**r with the residual r in [0, ln2/128) approximated by 1 or
by 1 + r; the softmax subtracts the row maximum, looks the exponentials up, sums them
exactly and divides on the vector unit. Spec: ``docs/hardware/hastily.md`` §2.3-2.4.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from numerics import kernels
from numerics.validation import check_int as _check_bits
from numerics.validation import check_type

__all__ = ["UCLMConfig", "HASTILY_UCLM", "exp_lut", "lut_table", "softmax"]

_LOG2E = math.log2(math.e)
_LN2 = math.log(2.0)
_T_LIMIT = 1 << 62  # clamp of the fixed-point exponent argument (spec step 1)


@dataclass(frozen=True)
class UCLMConfig:
    """Lookup exponential and softmax arithmetic of a HASTILY core (hastily.md §2.3)."""

    lut_entries: int = 128
    """Table size K (entries, a power of two; k = log2 K index bits). 128 (paper)."""

    lut_frac_bits: int | None = 15
    """Fraction bits of a table entry round_half_even(2**(d/K) * 2**lut_frac_bits), an
    unsigned Q1.lut_frac_bits word (16 bits at 15). Paper: 16-bit entries; Q1.15 is an
    assumption. ``None`` = exact float64 table (analysis only)."""

    frac_bits: int | None = 20
    """Fraction bits F of the fixed-point argument t = x * log2(e) (bits, >= k). Assumption.
    ``None`` = exact float64 range reduction (analysis only)."""

    er_mode: str = "one"
    """Residual factor e**r: ``"one"`` (e**r ~ 1) or ``"linear"`` (e**r ~ 1 + r). The paper
    gives both, not which was built."""

    ln2_frac_bits: int = 16
    """Fraction bits of the ln 2 constant L2 = round(ln2 * 2**ln2_frac_bits) (45426 at 16)
    used by ``"linear"``. Assumption."""

    exp_bits: int = 32
    """Width P (bits) of the shifted exponential, unsigned Q1.(P-1). 32 (assumption: the
    paper says underflow is handled); 16 as an ablation."""

    sum_bits: int = 48
    """Width (bits) of the softmax denominator; a row of length l needs
    exp_bits + ceil(log2 l) <= sum_bits. Assumption."""

    out_bits: int = 8
    """Width (bits) of the softmax output codes. 8 (assumption: UCLM inputs are 8-bit)."""

    out_signed: bool = False
    """False: codes in [0, 2**out_bits - 1], scale 1/(2**out_bits - 1). True: codes in
    [0, 2**(out_bits-1) - 1] for signed consumers. Assumption."""

    div_rounding: str = "half_up"
    """Rounding of the vector unit's division: ``"half_up"`` (floor((2*Q*e + S)/(2*S))) or
    ``"toward_zero"`` (floor(Q*e/S)). Assumption."""

    def __post_init__(self) -> None:
        _check_bits("lut_entries", self.lut_entries, 2, 1 << 16)
        if self.lut_entries & (self.lut_entries - 1):
            raise ValueError(f"lut_entries must be a power of two, got {self.lut_entries}")
        _check_bits("lut_frac_bits", self.lut_frac_bits, 1, 30, optional=True)
        _check_bits("frac_bits", self.frac_bits, self.index_bits, 40, optional=True)
        if self.er_mode not in ("one", "linear"):
            raise ValueError(f"er_mode must be 'one' or 'linear', got {self.er_mode!r}")
        _check_bits("ln2_frac_bits", self.ln2_frac_bits, 1, 30)
        entry_bits = 1 + (self.lut_frac_bits or 0)
        _check_bits("exp_bits", self.exp_bits, max(2, entry_bits), 52)
        _check_bits("sum_bits", self.sum_bits, self.exp_bits, 62)
        _check_bits("out_bits", self.out_bits, 2, 16)
        if not isinstance(self.out_signed, bool):
            raise TypeError("out_signed must be a bool")
        if self.div_rounding not in ("half_up", "toward_zero"):
            raise ValueError(f"div_rounding must be 'half_up' or 'toward_zero', got {self.div_rounding!r}")

    @property
    def index_bits(self) -> int:
        """k = log2(lut_entries)."""
        return self.lut_entries.bit_length() - 1

    @property
    def ln2_fixed(self) -> int:
        """L2 = round(ln2 * 2**ln2_frac_bits)."""
        return round(_LN2 * (1 << self.ln2_frac_bits))

    @property
    def out_max(self) -> int:
        """Q_o, the code of probability 1."""
        return (1 << (self.out_bits - 1)) - 1 if self.out_signed else (1 << self.out_bits) - 1


HASTILY_UCLM = UCLMConfig()
"""HASTILY's UCLM lookup exponential and softmax at the spec's defaults (hastily.md §2.3)."""


def lut_table(config: UCLMConfig = HASTILY_UCLM, device=None) -> torch.Tensor:
    """The ROM table: int64 round_half_even(2**(d/K) * 2**lut_frac_bits), d = 0..K-1."""
    check_type("config", config, UCLMConfig)
    if config.lut_frac_bits is None:
        raise ValueError("lut_frac_bits=None describes an exact table, which has no integer entries")
    d = torch.arange(config.lut_entries, dtype=torch.float64, device=device)
    return torch.round(torch.exp2(d / config.lut_entries) * (1 << config.lut_frac_bits)).to(torch.int64)


def _mantissa_fixed(t: torch.Tensor, config: UCLMConfig):
    """Steps 2-5 on int64 t (Q.F): returns n and the Q1.(P-1) mantissa M (int64; float64
    if the table is exact)."""
    f_bits, k, p = config.frac_bits, config.index_bits, config.exp_bits
    n = t >> f_bits
    f = t - (n << f_bits)
    d = f >> (f_bits - k)
    rho = f & ((1 << (f_bits - k)) - 1)
    l2 = config.ln2_fixed
    if config.lut_frac_bits is None:  # exact table: real mantissa, no truncation
        m = torch.exp2(d.to(torch.float64) / config.lut_entries) * 2.0 ** (p - 1)
        if config.er_mode == "linear":
            m = m * (1.0 + rho.to(torch.float64) * l2 / 2.0 ** (f_bits + config.ln2_frac_bits))
        return n, m
    e = lut_table(config, t.device)[d]
    m = e << (p - 1 - config.lut_frac_bits)
    if config.er_mode == "linear":
        shift = f_bits + config.ln2_frac_bits + config.lut_frac_bits + 1 - p
        prod = e * rho * l2
        m = m + (prod >> shift if shift >= 0 else prod << -shift)
    return n, m


def _fixed_argument(scaled: torch.Tensor) -> torch.Tensor:
    """t = max(floor(scaled), -2**62) as int64 (also capped at +2**62 so +inf stays finite)."""
    return torch.floor(scaled).clamp(-_T_LIMIT, _T_LIMIT).to(torch.int64)


def _width_limited(n: torch.Tensor, m: torch.Tensor, p: int) -> torch.Tensor:
    """e = M >> -n if -n < P else 0 (n <= 0): the P-bit shifted exponential."""
    shift = (-n).clamp(0, p - 1)
    return torch.where(-n < p, m >> shift, torch.zeros_like(m))


def _check_float_input(x, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if torch.isnan(x).any():
        raise ValueError(f"{name} must not contain NaN")


def exp_lut(x: torch.Tensor, config: UCLMConfig = HASTILY_UCLM, *, width_limited: bool = False) -> torch.Tensor:
    """e**x through the UCLM table (hastily.md §2.3), float32 of x's shape.

    ``width_limited=False`` returns 2**n * M / 2**(P-1) for any x; ``width_limited=True``
    (x <= 0) returns the P-bit shifted value (M >> -n) / 2**(P-1), which underflows to 0 for
    x < -(P-1) ln 2.
    """
    check_type("config", config, UCLMConfig)
    _check_float_input(x)
    xd = x.to(torch.float64)  # exact for every float format up to float64
    if width_limited:
        if config.frac_bits is None or config.lut_frac_bits is None:
            raise ValueError("width_limited=True needs integer frac_bits and lut_frac_bits")
        if (xd > 0).any():
            raise ValueError("width_limited=True needs x <= 0")
    if config.frac_bits is None:
        return _exp_float_reduction(xd, config).to(torch.float32)
    t = _fixed_argument(xd * (_LOG2E * 2.0**config.frac_bits))
    n, m = _mantissa_fixed(t, config)
    p = config.exp_bits
    if width_limited:
        out = _width_limited(n, m, p).to(torch.float64) / 2.0 ** (p - 1)
    else:
        out = torch.ldexp(m.to(torch.float64), (n - (p - 1)).to(torch.float64))
    return torch.where(xd == -math.inf, 0.0, out).to(torch.float32)


def _exp_float_reduction(xd: torch.Tensor, config: UCLMConfig) -> torch.Tensor:
    """``frac_bits=None``: the same decomposition in float64 (analysis of the table alone)."""
    big_k = config.lut_entries
    finite = torch.isfinite(xd)
    xf = torch.where(finite, xd, 0.0)
    y = xf * _LOG2E
    n = torch.floor(y)
    d = torch.floor((y - n) * big_k).clamp(0, big_k - 1)
    if config.lut_frac_bits is None:
        e = torch.exp2(d / big_k)
    else:
        e = lut_table(config, xd.device)[d.to(torch.int64)].to(torch.float64) / 2.0**config.lut_frac_bits
    if config.er_mode == "linear":
        e = e * (1.0 + (xf - (n + d / big_k) * _LN2))
    out = torch.ldexp(e, n)
    return torch.where(finite, out, torch.where(xd > 0, math.inf, 0.0))


def _codes(delta: torch.Tensor, c: float, config: UCLMConfig) -> torch.Tensor:
    """Steps 2-4 of :func:`softmax` in torch on the row differences ``delta`` (float64, rows along the last
    dimension): the int64 output codes."""
    t = _fixed_argument(delta * c)
    e = _width_limited(*_mantissa_fixed(t, config), config.exp_bits)  # step 2
    total = e.sum(dim=-1, keepdim=True)  # step 3, exact
    q = config.out_max
    if config.div_rounding == "half_up":
        return torch.div(2 * q * e + total, 2 * total, rounding_mode="floor")  # step 4
    return torch.div(q * e, total, rounding_mode="floor")


def softmax(
    x: torch.Tensor,
    dim: int = -1,
    *,
    scale: float | None = None,
    config: UCLMConfig = HASTILY_UCLM,
    return_codes: bool = False,
) -> torch.Tensor:
    """Softmax as the HASTILY vector unit computes it (hastily.md §2.4).

    Args:
        x: float logits, or integer logits (e.g. int64 Q.K^T from the crossbars) with their
            real ``scale``.
        dim: reduction dimension.
        scale: real value of one logit unit (required for integer x; default 1 for floats).
        config: table, widths and division rounding.
        return_codes: return the int64 output codes in [0, Q_o] instead of codes / Q_o.

    Returns:
        float32 probabilities codes / Q_o, or int64 codes, of x's shape. A row with no finite logit
        (every entry -inf: a fully masked attention row) gives all-zero codes, as torch's SDPA does
        (assumption: the vector unit has nothing to normalise).
    """
    check_type("config", config, UCLMConfig)
    if config.frac_bits is None or config.lut_frac_bits is None:
        raise ValueError("softmax needs integer frac_bits and lut_frac_bits (fixed-point datapath)")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"x must be a real float or integer tensor, got {x.dtype}")
    if isinstance(dim, bool) or not isinstance(dim, int) or not -max(x.dim(), 1) <= dim < max(x.dim(), 1):
        raise ValueError(f"dim must be an int in [{-x.dim()}, {x.dim() - 1}] for a {x.dim()}-D x, got {dim!r}")
    if x.dim() == 0 or x.shape[dim] == 0:
        raise ValueError(f"x must have a non-empty dimension dim={dim}, got shape {tuple(x.shape)}")
    if scale is None:
        if not x.is_floating_point():
            raise ValueError("scale is required for integer logits")
        scale = 1.0
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite positive number, got {scale!r}")
    scale = float(scale)
    length = x.shape[dim]
    p = config.exp_bits
    if p + math.ceil(math.log2(length)) > config.sum_bits:
        raise ValueError(
            f"sum_bits={config.sum_bits} is too narrow for rows of {length} terms at "
            f"exp_bits={p} (needs {p + math.ceil(math.log2(length))})"
        )
    xs = x.movedim(dim, -1)
    c = scale * _LOG2E * 2.0**config.frac_bits  # step 2's factor: one logit unit in Q.F units of log2
    if xs.is_floating_point():
        codes = kernels.uclm_softmax_codes(xs.to(torch.float64), c, lut_table(config), config)  # checks x too
        if codes is None:
            _check_float_input(xs)
            if bool((xs == math.inf).any()):
                raise ValueError("x must not contain +inf (the row maximum would be infinite)")
            top = xs.amax(dim=-1, keepdim=True)
            empty = top == -math.inf  # rows with no finite logit: zero codes
            any_empty = bool(empty.any())
            if any_empty:
                xs, top = xs.masked_fill(empty, 0.0), top.masked_fill(empty, 0.0)
            codes = _codes(xs.to(torch.float64) - top.to(torch.float64), c, config)  # step 1
            if any_empty:
                codes = codes.masked_fill(empty, 0)
    else:
        xi = xs.to(torch.int64)
        if xi.numel() and int(xi.amax()) - int(xi.amin()) >= 2**62:
            raise ValueError("integer logits must span less than 2**62 (their differences would overflow int64)")
        codes = _codes((xi - xi.amax(dim=-1, keepdim=True)).to(torch.float64), c, config)  # exact integers
    codes = codes.movedim(-1, dim)
    return codes if return_codes else (codes.to(torch.float64) / config.out_max).to(torch.float32)
