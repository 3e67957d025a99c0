"""The public face of emulation: ``emulate(model, target, **options)`` and the names targets use.

The machinery lives in small modules, each importable on its own: :mod:`numerics.registry` (targets
and their typed options), :mod:`numerics.emulation` (``emulate``, ``Emulation``), :mod:`numerics.handlers`
(helpers for writing a target), :mod:`numerics.heads` (what stays off the accelerator),
:mod:`numerics.redmule` (``bf16_matmul``) and :mod:`numerics.formats` (``bf16_values``). This module
re-exports them under their historical names.
"""

from __future__ import annotations

from numerics.emulation import Emulation, UnemulatedWarning, emulate, reference_arithmetic
from numerics.formats import bf16_values
from numerics.handlers import (
    SDPA,
    GeluFunctions,
    Handlers,
    MatmulFunctions,
    SoftmaxFunctions,
    attention,
    emulated_product,
    emulated_softmax,
    is_float,
    linears_from_conv1d,
    matmul_call,
    product_handler,
    replace_modules,
    sdpa_call,
    softmax_call,
    softmax_handler,
    standard_swaps,
    straight_through,
    uncovered_handlers,
    unemulated_handler,
)
from numerics.heads import HEADS
from numerics.redmule import bf16_matmul
from numerics.registry import TargetOptions, option_table, register_target, target_options, targets

__all__ = [
    "emulate",
    "register_target",
    "targets",
    "target_options",
    "option_table",
    "TargetOptions",
    "Emulation",
    "UnemulatedWarning",
    "Handlers",
    "reference_arithmetic",
    "straight_through",
    "emulated_product",
    "product_handler",
    "emulated_softmax",
    "softmax_handler",
    "softmax_call",
    "matmul_call",
    "sdpa_call",
    "attention",
    "is_float",
    "replace_modules",
    "linears_from_conv1d",
    "standard_swaps",
    "uncovered_handlers",
    "unemulated_handler",
    "bf16_values",
    "bf16_matmul",
    "SoftmaxFunctions",
    "GeluFunctions",
    "MatmulFunctions",
    "SDPA",
    "HEADS",
]
