"""What the two compute-in-memory targets share: the ``adc_bits`` option shortcut, the reason
``calibrate_with`` costs nothing."""

from __future__ import annotations

import dataclasses

from numerics.crossbar import CrossbarConfig
from numerics.validation import check_type

CALIBRATION_DATA = "calibration data sets the activation scales, not the hardware"
"""Why ``calibrate_with`` is accuracy-only on both compute-in-memory targets."""


def crossbar_with(crossbar: CrossbarConfig, adc_bits: int | None) -> CrossbarConfig:
    """``crossbar`` with the ``adc_bits`` shortcut option applied (checked by CrossbarConfig: the one
    ADC range rule)."""
    check_type("crossbar", crossbar, CrossbarConfig)
    if adc_bits is None:
        return crossbar
    return dataclasses.replace(crossbar, adc_bits=adc_bits)
