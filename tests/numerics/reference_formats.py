"""Scalar references for numerics.formats, from the rounding definitions, in exact rationals. Tests only."""

import math
from fractions import Fraction

STOCHASTIC_BITS = 16


def round_up(frac: Fraction, negative: bool, mode: str, r: int | None) -> bool:
    """Whether the magnitude rounds up, given the discarded fraction of one quantum (0 <= frac < 1)."""
    if mode == "nearest_even":
        raise AssertionError("needs the parity; handled by the caller")
    if mode == "toward_zero":
        return False
    if mode == "half_up":  # ties toward +infinity: up in magnitude for positive values only
        return frac > Fraction(1, 2) or (frac == Fraction(1, 2) and not negative)
    if mode == "stochastic":
        return math.floor(frac * 2**STOCHASTIC_BITS) + r >= 2**STOCHASTIC_BITS
    raise ValueError(mode)


def round_integral(y: Fraction, mode: str, r: int | None = None) -> int:
    """Round a rational to an integer in the given mode."""
    negative = y < 0
    a = -y if negative else y
    n = math.floor(a)
    frac = a - n
    if mode == "nearest_even":
        up = frac > Fraction(1, 2) or (frac == Fraction(1, 2) and n % 2 == 1)
    else:
        up = round_up(frac, negative, mode, r)
    n += up
    return -n if negative else n


def bf16_code(v: float, mode: str = "nearest_even", r: int | None = None, flush: bool = False) -> int:
    """BF16 code of the exact value of the Python float v, rounded once."""
    if math.isnan(v):
        return 0x7FC0
    sign = 0x8000 if math.copysign(1.0, v) < 0 else 0
    if math.isinf(v):
        return sign | 0x7F80
    a = Fraction(abs(v))
    if a == 0:
        return sign
    e = math.frexp(abs(v))[1] - 1  # a in [2^e, 2^(e+1))
    if e >= 128:  # beyond every finite BF16: IEEE overflow, saturating only toward zero
        return sign | (0x7F7F if mode == "toward_zero" else 0x7F80)
    qe = max(e, -126) - 7  # one BF16 ulp in that binade (subnormal quantum below 2^-126)
    y = a / Fraction(2) ** qe
    n = abs(round_integral(-y if sign else y, mode, r))
    code = n if e < -126 else ((e + 127) << 7) + n - 128  # n = 256 carries into the exponent
    code = min(code, 0x7F80)  # overflow
    if flush and code < 0x0080:
        code = 0
    return sign | code
