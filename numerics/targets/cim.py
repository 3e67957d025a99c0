"""What the two compute-in-memory targets share: the ``adc_bits`` option shortcut."""

from __future__ import annotations

import dataclasses

from numerics.crossbar import CrossbarConfig


def crossbar_with(options: dict, crossbar: CrossbarConfig) -> CrossbarConfig:
    """``crossbar`` with the ``adc_bits`` shortcut option applied (checked by CrossbarConfig)."""
    if not isinstance(crossbar, CrossbarConfig):
        raise ValueError(f"crossbar must be a CrossbarConfig; got {type(crossbar).__name__}")
    if options["adc_bits"] is None:
        return crossbar
    return dataclasses.replace(crossbar, adc_bits=options["adc_bits"])
