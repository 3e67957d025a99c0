"""Scalar references of SoftEx softmax and GELU (spec softex.md sections 3 and 4), one element at a time.

Values are Python floats (exact for every BF16 and FP32 number); each operation is done in exact
rationals and rounded once, to nearest even, by :func:`round_float`. Tests only.
"""

import math
import struct
from fractions import Fraction

from tests.numerics.reference_expp import expp_code

NAN_CODE = 0x7FC0
INF = math.inf


# --------------------------------------------------------------------------- formats


def round_float(q, precision: int) -> float:
    """Exact value ``q`` (Fraction, int or float) rounded to nearest even with ``precision`` significand
    bits and the FP32/BF16 exponent range (gradual underflow below 2^-126, overflow to Inf)."""
    q = Fraction(q)
    if q == 0:
        return 0.0
    a = abs(q)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1  # now 2^e <= a < 2^(e+1)
    quantum = Fraction(2) ** (max(e, -126) - (precision - 1))
    n = a / quantum
    k = math.floor(n)
    if n - k > Fraction(1, 2) or (n - k == Fraction(1, 2) and k % 2 == 1):
        k += 1
    v = k * quantum
    out = INF if v >= Fraction(2) ** 128 else float(v)
    return -out if q < 0 else out


def bf16(q) -> float:
    return round_float(q, 8)


def fp32(q) -> float:
    return round_float(q, 24)


def add(a: float, b: float, rnd=fp32) -> float:
    """rnd(a + b) with IEEE special values (Inf - Inf = NaN) and zero signs (-0 + -0 = -0, else +0)."""
    if math.isinf(a) or math.isinf(b) or math.isnan(a) or math.isnan(b) or a == b == 0:
        return a + b
    return rnd(Fraction(a) + Fraction(b))


def mul(a: float, b: float, rnd=fp32) -> float:
    """rnd(a b); a zero result (exact or underflowed) carries the sign of the product."""
    if math.isinf(a) or math.isinf(b) or math.isnan(a) or math.isnan(b):
        return a * b
    r = rnd(Fraction(a) * Fraction(b))
    return r if r != 0 else math.copysign(0.0, math.copysign(1.0, a) * math.copysign(1.0, b))


def fma(a: float, b: float, c: float) -> float:
    """FMA32: a b + c rounded once (finite operands)."""
    return fp32(Fraction(a) * Fraction(b) + Fraction(c))


def code_of(v: float) -> int:
    """BF16 code of a BF16-representable float (NaN -> 0x7FC0)."""
    if math.isnan(v):
        return NAN_CODE
    return struct.unpack(">I", struct.pack(">f", v))[0] >> 16


def value_of(code: int) -> float:
    return struct.unpack(">f", struct.pack(">I", code << 16))[0]


def fp32_bits(v: float) -> int:
    return struct.unpack(">I", struct.pack(">f", v))[0]


def expp(v: float) -> float:
    """expp of a BF16 value (spec 2), through the integer reference."""
    return value_of(expp_code(code_of(v)))


# --------------------------------------------------------------------------- softmax


def tree(e: list) -> float:
    """Spec 3.1 step 4: tree(list) = fp32(tree(first ceil(n/2)) + tree(last floor(n/2)))."""
    if len(e) == 1:
        return e[0]
    h = (len(e) + 1) // 2
    return add(tree(e[:h]), tree(e[h:]))


def accumulate_row(x: list, lanes: int, accumulators: int = 1, m: float = -INF, d: float = 0.0, resumed: bool = False):
    """Pass 1 (spec 3.1, 3.2) over one chunk of a row of BF16 values; returns (M, D).

    A resumed chunk starts from the slot's (M, D); with 4 accumulators D sits in P0 and the first beat
    goes to P1."""
    partials = [d if resumed else 0.0, 0.0, 0.0, 0.0]
    owed = [[] for _ in range(4)]
    target = 1 if resumed else 0
    for start in range(0, len(x), lanes):
        beat = x[start : start + lanes]
        bm = max(beat)
        f = None
        if bm > m:  # strict; a -Inf beat never raises a -Inf max
            f = 0.0 if m == -INF else expp(add(m, -bm, bf16))
            m = bm
        e = [0.0 if v == -INF else expp(add(v, -m, bf16)) for v in beat]
        s = tree(e + [0.0] * (lanes - len(beat)))  # masked lanes are +0
        if accumulators == 1:
            if f is not None:
                d = mul(d, f)
            d = add(d, s)
        else:
            if f is not None:
                for o in owed:
                    o.append(f)
            j = target % 4
            p = partials[j]
            if owed[j]:
                for g in owed[j][:-1]:  # oldest first
                    p = mul(p, g)
                p = fma(p, owed[j][-1], s)
            else:
                p = add(p, s)
            partials[j], owed[j] = p, []
            target += 1
    if accumulators == 4:
        for j in range(4):
            for g in owed[j]:
                partials[j] = mul(partials[j], g)
        d = add(add(partials[0], partials[1]), add(partials[2], partials[3]))
    return m, d


def reciprocal_seed(d: float) -> float:
    """Spec 3.3 step 1 on an FP32 value D >= 1."""
    u = fp32_bits(d)
    e, m7 = (u >> 23) & 0xFF, (u >> 16) & 0x7F
    if m7 == 0:
        bits = (254 - e) << 23
    else:
        n = 127 - m7
        bits = ((253 - e) << 23) | (((n * (n // 2)) // 64) << 16)
    return struct.unpack(">f", struct.pack(">I", bits))[0]


def reciprocal(d: float) -> float:
    """Spec 3.3 step 2: two Newton-Raphson steps in FP32; returns X (FP32)."""
    x = reciprocal_seed(d)
    for _ in range(2):
        t = fma(-d, x, 2.0)
        x = mul(x, t)
    return x


def normalize_row(x: list, m: float, r: float) -> list:
    """Pass 2 (spec 3.4): y = bf16(expp(bf16(x - M)) R), codes."""
    out = []
    for v in x:
        e = 0.0 if v == -INF else expp(add(v, -m, bf16))
        out.append(code_of(mul(e, r, bf16)))
    return out


def softmax_row(codes: list, lanes: int = 8, accumulators: int = 1) -> list:
    """SoftEx softmax of one row of BF16 codes -> output codes (spec 3, special values 3.5)."""
    x = [value_of(c) for c in codes]
    if any(math.isnan(v) or v == INF for v in x):
        return [NAN_CODE] * len(x)
    m, d = accumulate_row(x, lanes, accumulators)
    if m == -INF:  # all -Inf (or empty)
        return [0x0000] * len(x)
    return normalize_row(x, m, bf16(reciprocal(d)))


# --------------------------------------------------------------------------- GELU


def acc_to_bf16_code(acc: int) -> int:
    """Spec 4.1 step 6: leading-one position k, exponent field 113 + k; k <= 7 exact; k >= 8 keeps 7 bits
    plus the following bit (half up); a mantissa carry renormalises."""
    if acc == 0:
        return 0x0000
    k = acc.bit_length() - 1
    exponent = 113 + k
    below = acc - (1 << k)
    if k <= 7:
        mantissa = below << (7 - k)
    else:
        mantissa = (below >> (k - 7)) + ((acc >> (k - 8)) & 1)
    if mantissa == 128:
        exponent, mantissa = exponent + 1, 0
    return (exponent << 7) | mantissa


def gelu_datapath_code(w_code: int, a_codes, b_codes) -> int:
    """Spec 4.1 steps 1-6 on one BF16 input code w <= 0: the code of S."""
    w = value_of(w_code)
    acc = 0
    for a_code, b_code in zip(a_codes, b_codes):
        z = mul(w, value_of(a_code), bf16)  # step 1
        e = expp(z)  # step 2
        p = code_of(mul(e, value_of(b_code), bf16)) & 0x7FFF  # step 3, sign ignored
        ep, mp = p >> 7, 128 + (p & 0x7F)
        q1 = mp << (ep - 119) if ep >= 119 else mp >> (119 - ep)  # step 4: p 2^15 truncated
        acc += q1 // 2 + q1 % 2
    return acc_to_bf16_code(acc % 2**14)  # steps 5, 6


def gelu_code(x_code: int, a_codes, b_codes) -> int:
    """Spec 4.2 on one BF16 code: w = -bf16(x x); y = bf16(x (1 - S)) for x >= 0, bf16(x S) else."""
    x = value_of(x_code)
    if math.isnan(x):
        return NAN_CODE
    if x == -INF:
        return 0x8000
    w = -mul(x, x, bf16)
    s = value_of(gelu_datapath_code(code_of(w), a_codes, b_codes))
    if x == INF:
        return 0x7F80
    y = mul(x, 1 - s, bf16) if x >= 0 else mul(x, s, bf16)
    return code_of(y)
