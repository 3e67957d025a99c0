"""Cycle and energy models of the emulated accelerators.

    from hwmodels import trace, estimate
    report = estimate(trace(model, inputs), "softex")          # a plain model's workload
    report = estimate(model, "atleus", inputs, adc_bits=6)     # traced first
    report = estimate(emulate(model, "atleus", adc_bits=6), inputs)   # the hardware that was emulated

Each target is described once (``numerics.registry``): its typed options are the hardware (geometry,
formats, ADC widths, sparsity), shared by ``numerics.nn.emulate`` and ``estimate``; the cost model of
``hwmodels.<target>`` adds only cost constants (cycles, pJ, fitted values) and cost-only options.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings

import torch

from numerics.emulation import Emulation, emulate
from numerics.registry import get_target

from .report import Report, Row
from .workload import Op, Workload, trace

TARGETS = ("softex", "hastily", "atleus", "flexisaga")
"""Targets with a cost model. "fp32" (the numerics reference) has none: estimate rejects it."""


def _checked(target: str) -> str:
    """``target`` if it names a target with a cost model; ValueError/TypeError otherwise."""
    _cost_module(target)
    return target


def _cost_module(target: str):
    if not isinstance(target, str):
        raise TypeError(f"target must be a str, got {type(target).__name__}")
    if target == "fp32":
        raise ValueError(
            f'target "fp32" is the numerics reference and has no hardware cost model; choose one of {list(TARGETS)}'
        )
    if target not in TARGETS:
        raise ValueError(f"target must be one of {list(TARGETS)}, got {target!r}")
    return importlib.import_module(get_target(target).cost_model)


def hardware_option_names(target: str) -> tuple[str, ...]:
    """The hardware options of ``target``: its typed emulation options (numerics.registry)."""
    return tuple(f.name for f in dataclasses.fields(get_target(target).options))


def option_names(target: str) -> set:
    """Options ``estimate(workload, target, ...)`` accepts: the target's hardware options, the cost
    model's behaviour options and the fields of its cost-constant dataclass."""
    module = _cost_module(target)
    return (
        set(hardware_option_names(target))
        | set(module.OPTIONS)
        | {f.name for f in dataclasses.fields(module.DEFAULT_CONFIG)}
    )


def cost_option_names(target: str) -> set:
    """The options only the cost model takes (behaviour options and cost constants)."""
    return option_names(target) - set(hardware_option_names(target))


def hardware(target: str, **options):
    """The typed hardware description of ``target`` from its options (validated; legacy cost-model
    spellings are translated with a DeprecationWarning). Returns ``(description, other options)``."""
    module = _cost_module(target)
    unknown = sorted(set(options) - option_names(target) - set(getattr(module, "LEGACY_OPTIONS", {})) - {"config"})
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for target {target!r}; valid options: "
            f"{sorted(option_names(target) | {'config'})}"
        )
    options = _translate_legacy(target, module, options)
    names = hardware_option_names(target)
    given = {k: v for k, v in options.items() if k in names}
    return get_target(target).make_options(**given), {k: v for k, v in options.items() if k not in names}


def _translate_legacy(target: str, module, options: dict) -> dict:
    legacy = getattr(module, "LEGACY_OPTIONS", {})
    used = [name for name in options if name in legacy]
    if not used:
        return options
    warnings.warn(
        f"estimate option(s) {', '.join(used)} of {target!r} are deprecated: "
        + "; ".join(legacy[name][0] for name in used),
        DeprecationWarning,
        stacklevel=4,
    )
    out = {k: v for k, v in options.items() if k not in used}
    for name in used:
        out = legacy[name][1](options[name], out, options)
    return out


def estimate(workload, target=None, *inputs, forward_kwargs: dict | None = None, blocks=None, **options) -> Report:
    """Cycles and energy of ``workload`` on ``target`` ("softex", "hastily", "atleus", "flexisaga").

    ``workload`` is a Workload, or an nn.Module followed by its positional inputs (and
    ``forward_kwargs``), which is traced first. An emulated model (``numerics.nn.emulate``) is priced
    as it was emulated: ``target`` may be omitted (``estimate(emulated, x)``) and its hardware options
    come from ``model.emulation``; only cost-model options may be added. Options are the target's
    hardware options (the same as ``emulate``'s), the cost model's behaviour options and any field of
    its cost-constant dataclass (or ``config=`` a whole one); an unknown option or a bad value raises
    ValueError naming it. ``blocks`` names a model's repeated blocks for the trace (``trace``).
    """
    if target is not None and not isinstance(target, str):
        if not isinstance(workload, torch.nn.Module):
            raise TypeError(f"target must be a str, got {type(target).__name__}")
        inputs, target = (target, *inputs), None
    described = None
    if isinstance(workload, torch.nn.Module):
        if (
            target is not None
            and not isinstance(getattr(workload, "emulation", None), Emulation)
            and get_target(_checked(target)).priced_on_copy
        ):
            # the emulation rewrites weights the cost model reads (FlexiSAGA's masks): price a copy
            # emulated with the same options, so both see the same masks
            described = hardware(target, **options)
            workload = emulate(workload, target, **described[0].as_dict())
        workload = trace(workload, *inputs, blocks=blocks, **(forward_kwargs or {}))
    elif inputs or forward_kwargs or blocks is not None:
        raise TypeError("model inputs and blocks are accepted only when the first argument is an nn.Module")
    if not isinstance(workload, Workload):
        raise TypeError(f"workload must be a Workload or an nn.Module, got {type(workload).__name__}")
    if target is None:
        if workload.target is None:
            raise ValueError(f"name a target ({', '.join(TARGETS)}): only an emulated model carries its own")
        target = workload.target
    elif workload.target is not None and workload.target != target:
        raise ValueError(
            f"the model was emulated on {workload.target!r}; it cannot be priced on {target!r}: "
            f"estimate the original model instead"
        )
    module = _cost_module(target)
    description, rest = described or hardware(target, **options)
    if workload.hardware is not None:  # priced as emulated; options may repeat it, not change it
        emulated = workload.hardware
        asked = {
            k: v
            for k, v in description.changed().items()
            if getattr(emulated, k) is not v and getattr(emulated, k) != v
        }
        if asked:
            was = ", ".join(f"{k}={getattr(emulated, k)!r}" for k in asked)
            now = ", ".join(f"{k}={v!r}" for k, v in asked.items())
            raise ValueError(f"the model was emulated with {was}; emulate it again to price other hardware ({now})")
        description = emulated
    return module.estimate(workload, hardware=description, **rest)


__all__ = [
    "trace",
    "estimate",
    "option_names",
    "cost_option_names",
    "hardware",
    "hardware_option_names",
    "Workload",
    "Op",
    "Report",
    "Row",
    "TARGETS",
]
