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


def floor_log2(a: Fraction) -> int:
    """e with 2^e <= a < 2^(e+1), for a rational a > 0."""
    e = a.numerator.bit_length() - a.denominator.bit_length()
    return e if Fraction(2) ** e <= a else e - 1


def bf16_code(v, mode: str = "nearest_even", r: int | None = None, flush: bool = False) -> int:
    """BF16 code of the exact value of v (a Python float or a Fraction), rounded once."""
    if isinstance(v, float) and math.isnan(v):
        return 0x7FC0
    negative = v < 0 or (isinstance(v, float) and math.copysign(1.0, v) < 0)
    sign = 0x8000 if negative else 0
    if isinstance(v, float) and math.isinf(v):
        return sign | 0x7F80
    a = abs(Fraction(v))
    if a == 0:
        return sign
    e = floor_log2(a)  # a in [2^e, 2^(e+1))
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


def bf16_value(code: int) -> Fraction:
    """Exact value of a finite BF16 code."""
    s, e, m = code >> 15, (code >> 7) & 0xFF, code & 0x7F
    assert e != 0xFF, "not finite"
    mag = Fraction(m, 128) * Fraction(2) ** -126 if e == 0 else (1 + Fraction(m, 128)) * Fraction(2) ** (e - 127)
    return -mag if s else mag
