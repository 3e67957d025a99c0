"""ADC cost by resolution, shared by the two compute-in-memory cost models (HASTILY and Atleus).

Energy per conversion: the ISAAC / Accelergy table for 4 to 10 bits (spec atleus.md §4);
outside it, the table is extended at its mean ratio per bit (assumption: the table's seven points
grow by 1.17x to 1.25x per bit, a SAR ADC's comparator and DAC energy per added bit). Conversion
time: a SAR ADC resolves one bit per comparator cycle, so its time is proportional to the resolution
(assumption: successive approximation, as in ISAAC's and PUMA's ADCs).
"""

from __future__ import annotations

import math

ADC_ENERGY_PJ = {4: 0.79, 5: 0.99, 6: 1.20, 7: 1.42, 8: 1.67, 9: 1.97, 10: 2.38}
"""ADC energy per conversion by resolution, pJ (ISAAC / Accelergy ISAAC model)."""

PUBLISHED_BITS = (min(ADC_ENERGY_PJ), max(ADC_ENERGY_PJ))
"""Resolutions with a published energy; others are extrapolated (the report says so)."""

_RATIO_PER_BIT = (ADC_ENERGY_PJ[10] / ADC_ENERGY_PJ[4]) ** (1 / 6)
"""Mean growth of the table per bit (about 1.20x)."""


def adc_energy_pj(bits: int) -> float:
    """Energy of one conversion at ``bits`` of resolution, pJ (table, else extrapolated)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits < 1:
        raise ValueError(f"adc_bits must be an int >= 1, got {bits!r}")
    if bits in ADC_ENERGY_PJ:
        return ADC_ENERGY_PJ[bits]
    edge = min(max(bits, PUBLISHED_BITS[0]), PUBLISHED_BITS[1])
    return ADC_ENERGY_PJ[edge] * _RATIO_PER_BIT ** (bits - edge)


def adc_time_factor(bits: int, reference_bits: int) -> float:
    """Conversion time at ``bits`` relative to ``reference_bits`` (SAR: proportional to bits)."""
    return bits / reference_bits


def extrapolation_note(bits: int) -> list[str]:
    """A report note when ``bits`` is outside the published table, else nothing."""
    lo, hi = PUBLISHED_BITS
    if lo <= bits <= hi:
        return []
    return [
        f"adc_bits={bits} is outside the published {lo}-{hi} bit ADC energies: extrapolated at "
        f"{_RATIO_PER_BIT:.3f}x per bit"
    ]


def ceil_scaled(cycles: int, factor: float) -> int:
    """⌈cycles · factor⌉ without float noise for exact products (e.g. 375 · 8/6 = 500)."""
    return math.ceil(round(cycles * factor, 9))
