"""Cycle and energy models of the emulated accelerators.

    from hwmodels import trace, estimate
    report = estimate(trace(model, inputs), "softex")
"""

from __future__ import annotations

import dataclasses
import importlib

import torch

from .report import Report, Row
from .workload import Op, Workload, trace

TARGETS = ("softex", "hastily", "atleus", "flexisaga")
"""Targets with a cost model. "fp32" (the numerics reference) has none: estimate rejects it."""


def option_names(target: str) -> set:
    """Options ``estimate(workload, target, ...)`` accepts: behaviour options and configuration fields."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {list(TARGETS)}, got {target!r}")
    module = importlib.import_module(f"{__name__}.{target}")
    config = getattr(module, target.upper())  # each cost module names its default config after the target
    return set(module.OPTIONS) | {f.name for f in dataclasses.fields(config)}


def estimate(workload, target: str, *inputs, forward_kwargs: dict | None = None, **options) -> Report:
    """Cycles and energy of `workload` on `target` ("softex", "hastily", "atleus", "flexisaga").

    `workload` is a Workload, or an nn.Module followed by its positional inputs (and
    `forward_kwargs`), which is traced first. Options are the target's behaviour options and
    any field of its configuration dataclass (or `config=` a whole one); unknown options raise
    ValueError listing the valid ones."""
    if not isinstance(target, str):
        raise TypeError(f"target must be a str, got {type(target).__name__}")
    if target == "fp32":
        raise ValueError('target "fp32" is the numerics reference and has no hardware cost model; '
                         f"choose one of {list(TARGETS)}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {list(TARGETS)}, got {target!r}")
    if isinstance(workload, torch.nn.Module):
        workload = trace(workload, *inputs, **(forward_kwargs or {}))
    elif inputs or forward_kwargs:
        raise TypeError("model inputs are accepted only when the first argument is an nn.Module")
    if not isinstance(workload, Workload):
        raise TypeError(f"workload must be a Workload or an nn.Module, got {type(workload).__name__}")
    module = importlib.import_module(f"{__name__}.{target}")
    return module.estimate(workload, **options)


__all__ = ["trace", "estimate", "option_names", "Workload", "Op", "Report", "Row", "TARGETS"]
