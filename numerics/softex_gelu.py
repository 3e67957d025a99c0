"""SoftEx GELU: the sum-of-exponentials datapath of the RTL's gelu branch, and GELU built on it.

Spec: ``docs/hardware/softex.md`` section 4 (RTL, branch ``gelu``: ``rtl/softex_row_acc.sv``,
``rtl/softex_datapath.sv``). For each element w the unit computes S = sum_i b_i expp(a_i w) in a
14-bit fixed-point accumulator; the cores square the input before and combine after (spec 4.2, project):
w = -bf16(x x), S ~ Phi(-|x|), GELU(x) = max(x, 0) - |x| Phi(-|x|).

The coefficients are not public; the project fits its own (spec 4.3) with ``scripts/fit_gelu.py`` and
ships them in ``gelu_coefficients.json`` beside this module.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import torch

from numerics.expp import expp
from numerics.formats import Rounding, bf16_to_bits, bits_to_bf16, lookup, require_bfloat16, round_to_bfloat16

__all__ = [
    "GeluCoefficients",
    "published_coefficients",
    "gelu_datapath",
    "acc_to_bf16",
    "gelu",
    "ACC_FRAC_BITS",
    "PUBLISHED_TERMS",
]

ACC_FRAC_BITS = 14
"""Fraction bits of the unsigned fixed-point accumulator; it is 14 bits wide and wraps (RTL
``softex_row_acc.sv``)."""
PUBLISHED_TERMS = (2, 3, 4, 5, 6)
"""Term counts N with a published project fit in ``gelu_coefficients.json``."""

_DATA = "gelu_coefficients.json"


def _bf16_value(code: int) -> float:
    return struct.unpack("<f", struct.pack("<I", code << 16))[0]  # a BF16 code is the top half of an FP32 one


@dataclass(frozen=True)
class GeluCoefficients:
    """Coefficients of S(w) = sum_i b_i expp(a_i w), as BF16 codes (the unit reads BF16 from A_ADDR,
    B_ADDR; spec 4.1)."""

    a: tuple[int, ...]
    """BF16 codes of the exponent scales a_i (> 0, finite; dimensionless, w = -x^2)."""
    b: tuple[int, ...]
    """BF16 codes of the weights b_i (> 0, sum < 1 so every product p_i = b_i expp(.) is < 1 as the
    fixed-point conversion needs; spec 4.1 step 3)."""
    provenance: str = "user supplied"
    """Where the values come from (fit, paper, RTL test vector...)."""

    def __post_init__(self):
        for name in ("a", "b"):
            codes = getattr(self, name)
            if not isinstance(codes, tuple) or not all(isinstance(c, int) and 0 <= c <= 0xFFFF for c in codes):
                raise ValueError(f"{name} must be a tuple of BF16 codes (integers in [0, 0xFFFF]); got {codes!r}")
        if not 1 <= len(self.a) <= 255 or len(self.a) != len(self.b):
            raise ValueError(
                f"a and b must have the same length N in [1, 255] (COMMANDS[23:16]); "
                f"got {len(self.a)} and {len(self.b)}"
            )
        for name, values in (("a", self.a_values), ("b", self.b_values)):
            if not all(math.isfinite(v) and v > 0 for v in values):
                raise ValueError(f"every {name}_i must be finite and > 0; got {values}")
        if not sum(self.b_values) < 1:
            raise ValueError(f"sum of b_i must be < 1 (products p_i < 1); got {sum(self.b_values)}")

    @property
    def terms(self) -> int:
        return len(self.a)

    @property
    def a_values(self) -> tuple[float, ...]:
        return tuple(_bf16_value(c) for c in self.a)

    @property
    def b_values(self) -> tuple[float, ...]:
        return tuple(_bf16_value(c) for c in self.b)


@lru_cache(maxsize=None)
def _published() -> dict:
    return json.loads(resources.files("numerics").joinpath(_DATA).read_text())


def published_coefficients(terms: int = 4) -> GeluCoefficients:
    """The project's bit-exact fit for N = ``terms`` in 2..6 (spec 4.3; figures in the JSON file)."""
    if isinstance(terms, bool) or terms not in PUBLISHED_TERMS:
        raise ValueError(f"terms must be one of {PUBLISHED_TERMS} (published fits); got {terms!r}")
    return _published_fit(terms)


@lru_cache(maxsize=None)
def _published_fit(terms: int) -> GeluCoefficients:
    """Built and validated once per term count: every emulated GELU call asks for it."""
    fit = _published()["fits"][str(terms)]
    return GeluCoefficients(
        tuple(int(h, 16) for h in fit["a_hex"]),
        tuple(int(h, 16) for h in fit["b_hex"]),
        provenance=f"project fit, {_published()['provenance']}",
    )


def gelu_datapath(w: torch.Tensor, coefficients: GeluCoefficients) -> torch.Tensor:
    """The unit's output S (bfloat16, >= 0) for inputs w <= 0 (spec 4.1, steps 1-6).

    Per term: z = bf16(w a_i), e = expp(z), p = bf16(e b_i); p to 14 fraction bits, half up, through the
    RTL's truncate-to-15-then-round; the sum wraps modulo 2^14; the BF16 conversion rounds half up with a
    renormalising carry (project; the RTL as written lets the mantissa wrap).
    """
    require_bfloat16(w, "w")
    if bool((torch.isnan(w) | (w > 0)).any()):
        raise ValueError("w must be <= 0 and not NaN (the unit needs 0 <= b_i expp(a_i w) < 1)")
    acc = torch.zeros(w.shape, dtype=torch.int32, device=w.device)
    for a_code, b_code in zip(coefficients.a, coefficients.b):
        a = bits_to_bf16(torch.tensor(a_code, dtype=torch.int32)).to(w.device)
        b = bits_to_bf16(torch.tensor(b_code, dtype=torch.int32)).to(w.device)
        p = bf16_to_bits(expp(w * a) * b) & 0x7FFF  # sign bit ignored (RTL)
        e, m = p >> 7, 128 + (p & 0x7F)
        shift = e - (127 + 7 - (ACC_FRAC_BITS + 1))  # M 2^(E-119) = p 2^15
        q = torch.where(shift >= 0, m << shift.clamp(0, 31), m >> (-shift).clamp(0, 31))  # p 2^15, truncated
        acc += (q >> 1) + (q & 1)  # half up to 14 fraction bits
    return acc_to_bf16(acc & ((1 << ACC_FRAC_BITS) - 1))


def acc_to_bf16(acc: torch.Tensor) -> torch.Tensor:
    """Spec 4.1 step 6: the 14-bit accumulator (integer tensor, value acc 2^-14) to BF16 by leading-one
    detection, half up on the bit after the kept 7 (exact below 2^8), carry renormalised."""
    return round_to_bfloat16(acc.float() * 2.0**-ACC_FRAC_BITS, Rounding.HALF_UP)


def gelu(x: torch.Tensor, *, terms: int = 4, coefficients: GeluCoefficients | None = None) -> torch.Tensor:
    """GELU on SoftEx (spec 4.2): bfloat16 in and out.

    w = -bf16(x x) on the cores; S = datapath(w) ~ Phi(-|x|); y = bf16(x (1 - S)) for x >= 0, bf16(x S) for
    x < 0 (exact in FP32 before the single rounding). ``coefficients`` default to the published fit for
    ``terms`` in 2..6. NaN -> NaN, +Inf -> +Inf, -Inf -> -0.0; where x^2 overflows, S = 0.
    The result depends on x's code alone, so :func:`gelu_codes` runs once on all 65,536 codes per
    coefficient set and device, and calls look the results up.
    """
    require_bfloat16(x, "x")
    if coefficients is None:
        coefficients = published_coefficients(terms)
    elif not isinstance(coefficients, GeluCoefficients):
        raise TypeError(f"coefficients must be a GeluCoefficients; got {type(coefficients).__name__}")
    key = (coefficients.a, coefficients.b, x.device)
    table = _TABLES.get(key)
    if table is None:
        table = _TABLES[key] = gelu_codes(bits_to_bf16(torch.arange(65536, device=x.device)), coefficients)
    return lookup(table, x)


_TABLES: dict[tuple, torch.Tensor] = {}


def gelu_codes(x: torch.Tensor, coefficients: GeluCoefficients) -> torch.Tensor:
    """The GELU pipeline of :func:`gelu` evaluated directly on ``x`` (bfloat16), vectorised."""
    nan = torch.isnan(x)
    w = torch.where(nan, 0.0, -(x * x)).to(torch.bfloat16)
    s = gelu_datapath(w, coefficients).float()
    x32 = x.float()
    y = round_to_bfloat16(torch.where(x32 >= 0, x32 * (1 - s), x32 * s))
    y = torch.where(x == float("-inf"), -0.0, y).to(torch.bfloat16)
    return torch.where(nan, float("nan"), y).to(torch.bfloat16)
