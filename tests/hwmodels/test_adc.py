"""ADC cost by resolution (hwmodels/adc.py): the published table, its extension, SAR timing."""

import pytest

from hwmodels.adc import adc_energy_pj, adc_time_factor, ceil_scaled, extrapolation_note


def test_published_table_is_read_as_published():
    # ISAAC / Accelergy energies per conversion, pJ (atleus.md §4)
    assert [adc_energy_pj(b) for b in range(4, 11)] == [0.79, 0.99, 1.20, 1.42, 1.67, 1.97, 2.38]
    assert extrapolation_note(4) == extrapolation_note(10) == []


def test_outside_the_table_the_mean_ratio_per_bit_extends_it():
    r = (2.38 / 0.79) ** (1 / 6)  # 3.01266^(1/6) = exp(1.10281/6) = 1.2018 per bit over the six steps
    assert r == pytest.approx(1.2018, abs=1e-4)
    assert adc_energy_pj(11) == pytest.approx(2.38 * r, rel=1e-12)
    assert adc_energy_pj(12) == pytest.approx(2.38 * r * r, rel=1e-12)
    assert adc_energy_pj(3) == pytest.approx(0.79 / r, rel=1e-12)
    assert adc_energy_pj(1) == pytest.approx(0.79 / r**3, rel=1e-12)
    assert "extrapolated" in extrapolation_note(3)[0] and "extrapolated" in extrapolation_note(16)[0]
    energies = [adc_energy_pj(b) for b in range(1, 17)]
    assert all(a < b for a, b in zip(energies, energies[1:]))  # strictly rising in resolution


def test_sar_time_is_proportional_to_resolution():
    assert adc_time_factor(8, 6) == 8 / 6 and adc_time_factor(3, 6) == 0.5
    assert ceil_scaled(375, 8 / 6) == 500  # not 501 from 375 * 1.3333333333333333
    assert ceil_scaled(375, 5 / 6) == 313  # 312.5 rounds up


@pytest.mark.parametrize("bits", [0, -1, 2.5, True])
def test_bad_resolution(bits):
    with pytest.raises(ValueError, match="adc_bits"):
        adc_energy_pj(bits)
