"""Scalar reference of the UCLM lookup exponential and softmax (hastily.md §2.3-2.4).

Plain Python ints; the table comes from 60-digit decimal arithmetic, independent of the
kernel's float64 exp2. ``UCLMArrayRef`` models one 64x64 dual-function 8T-SRAM array whose
mask-programmed ROM holds the table.
"""

from __future__ import annotations

import functools
import math
from decimal import ROUND_HALF_EVEN, Decimal, getcontext

getcontext().prec = 60


@functools.lru_cache(maxsize=None)
def table_ref(entries: int = 128, frac_bits: int = 15) -> tuple[int, ...]:
    """round_half_even(2**(d/K) * 2**frac_bits), d = 0..K-1, in 60-digit decimal."""
    scale = Decimal(2) ** frac_bits
    return tuple(
        int((Decimal(2) ** (Decimal(d) / entries) * scale).quantize(Decimal(1), ROUND_HALF_EVEN))
        for d in range(entries)
    )


def exp_codes_ref(t: int, cfg) -> tuple[int, int]:
    """Steps 2-5 for one fixed-point argument t (Q.F): returns (n, M)."""
    f_bits, p = cfg.frac_bits, cfg.exp_bits
    k = cfg.lut_entries.bit_length() - 1
    n = t >> f_bits  # arithmetic shift = floor
    f = t - (n << f_bits)  # in [0, 2**F)
    d = f >> (f_bits - k)  # table index
    rho = f & ((1 << (f_bits - k)) - 1)  # residual bits
    e = table_ref(cfg.lut_entries, cfg.lut_frac_bits)[d]
    m = e << (p - 1 - cfg.lut_frac_bits)
    if cfg.er_mode == "linear":
        l2 = round(math.log(2) * 2**cfg.ln2_frac_bits)
        m += (e * rho * l2) >> (f_bits + cfg.ln2_frac_bits + cfg.lut_frac_bits + 1 - p)
    assert 0 < m < 2**p
    return n, m


def fixed_argument_ref(x: float, factor: float) -> int:
    """t = max(floor(x * factor), -2**62) with one float64 multiply."""
    prod = x * factor
    return -(2**62) if prod == -math.inf else max(math.floor(prod), -(2**62))


def exp_lut_ref(x: float, cfg, width_limited: bool = False) -> float:
    """e**x as a Python float (float64 of the exact fixed-point result)."""
    if x == -math.inf:
        return 0.0
    t = fixed_argument_ref(x, math.log2(math.e) * 2.0**cfg.frac_bits)
    n, m = exp_codes_ref(t, cfg)
    p = cfg.exp_bits
    if width_limited:
        e = m >> -n if -n < p else 0
        return e / 2 ** (p - 1)
    return math.ldexp(m, n - (p - 1))


def softmax_ref(row: list, cfg, scale: float = 1.0) -> list[int]:
    """Output codes of one softmax row (ints or floats)."""
    top = max(row)
    factor = scale * math.log2(math.e) * 2.0**cfg.frac_bits
    p = cfg.exp_bits
    es = []
    for s in row:
        delta = s - top if isinstance(s, int) else float(s) - float(top)
        n, m = exp_codes_ref(fixed_argument_ref(float(delta), factor), cfg)
        es.append(m >> -n if -n < p else 0)
    total = sum(es)
    q = 2 ** (cfg.out_bits - 1) - 1 if cfg.out_signed else 2**cfg.out_bits - 1
    if cfg.div_rounding == "half_up":
        return [(2 * q * e + total) // (2 * total) for e in es]
    return [(q * e) // total for e in es]


class UCLMArrayRef:
    """One 64x64 8T-SRAM array: RAM bits plus a ROM mask (source line wired to the row's
    lookup line = 1, to ground = 0). Table entry d (16 bits) sits in ROM row d >> 2, word
    d & 3, bit i in column 16*word + i (reconstruction, hastily.md §2.4)."""

    def __init__(self, table: list[int], ram: list[list[int]]):
        self.ram = [list(r) for r in ram]
        self.rom = [[0] * 64 for _ in range(64)]
        for d, entry in enumerate(table):
            for i in range(16):
                self.rom[d >> 2][16 * (d & 3) + i] = (entry >> i) & 1
        self.cycles = 0

    def lookup(self, d: int) -> int:
        row, word = d >> 2, d & 3
        saved = list(self.ram[row])  # cycle 1: save the row's weights
        self.ram[row] = [1] * 64  # cycle 2: write ones
        # cycle 3: read; a cell conducts only if it stores 1 and its source line is wired
        bits = [self.ram[row][c] & self.rom[row][c] for c in range(64)]
        self.ram[row] = saved  # cycle 4: restore
        self.cycles += 4
        return sum(bits[16 * word + i] << i for i in range(16))
