"""A study's plan: runs (a target and its options), parsed from ``target.option=value`` text and
checked, names and values, against the emulation and the cost model before anything runs."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Iterable

from numerics.registry import get_target

from .. import TARGETS as COST_TARGETS
from .. import cost_option_names, estimate
from ..workload import Workload

DEFAULT_TARGETS = ("fp32",) + COST_TARGETS
"""The reference and the four accelerators."""


def emulate_option_names(target: str) -> dict:
    """Options of ``emulate(model, target)`` (the target's hardware options) and their defaults."""
    return get_target(target).defaults


def estimate_option_names(target: str) -> set:
    """Options only the cost model takes (none for a target without a cost model)."""
    return cost_option_names(target) if target in COST_TARGETS else set()


def split_options(target: str, options: dict) -> tuple[dict, dict]:
    """(emulate options, cost-model-only options) of one run of ``target`` with ``options``.

    The hardware options go to ``emulate``; the cost model prices the emulated model, so it sees the
    same hardware with no translation. Cost-model-only options (e.g. HASTILY's ``pipelining``,
    SoftEx's ``voltage``) go to ``estimate``. A ValueError names an option neither side takes.
    """
    emu_names = set(emulate_option_names(target))
    cost_names = estimate_option_names(target)
    for name in options:
        if name not in emu_names and name not in cost_names:
            raise ValueError(
                f"unknown option {name!r} for target {target!r}; valid options: "
                f"{', '.join(sorted(emu_names)) or 'none'} (hardware)"
                + (f"; {', '.join(sorted(cost_names))} (cost model)" if cost_names else "")
            )
    emu = {k: v for k, v in options.items() if k in emu_names}
    if target == "flexisaga" and "calibrate_with" not in emu:
        if emu.get("criterion") == "activation" or emu.get("reconstruct") is True:
            emu["calibrate_with"] = CORPUS  # measured on the shipped corpus, not on the sentences scored
    return emu, {k: v for k, v in options.items() if k in cost_names}


CORPUS = "corpus"
"""The value of ``calibrate_with`` that stands for the shipped corpus (:func:`numerics.corpus.load_corpus`,
3,798 everyday sentences, none of them in the study's set), encoded with the subject's tokenizer in batches
of 64 sentences. FlexiSAGA runs that need calibration data and name none get it."""


def check_run(target: str, options: dict) -> None:
    """Every name and value of one run, checked without running it: the typed hardware options are
    built, and the cost model prices an empty workload with all the options. A ValueError names the
    option and what it allows."""
    emu, cost = split_options(target, options)
    try:
        get_target(target).make_options(**emu)
        if target in COST_TARGETS:
            estimate(Workload(()), target, **emu, **cost)
    except (TypeError, ValueError) as error:  # a value of the wrong type is a bad value of the plan too
        message = str(error)
        raise ValueError(message if message.startswith(f"{target}") else f"{target}: {message}") from error


def parse_value(text: str):
    """A command-line value: int, float, true/false, none, else the string itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def parse_assignment(text: str) -> tuple[str, str, list]:
    """``"target.option=v1,v2"`` -> (target, option, [values]); ValueError on bad syntax."""
    key, sep, values = text.partition("=")
    target, dot, option = key.strip().partition(".")
    if not (sep and dot and target and option and values.strip()):
        raise ValueError(f"expected TARGET.OPTION=VALUE[,VALUE...], e.g. atleus.adc_bits=4,6,8; got {text!r}")
    parts = values.split(",")
    if any(not v.strip() for v in parts):
        raise ValueError(f"empty value in {text!r}")
    return target, option.strip(), [parse_value(v) for v in parts]


@dataclasses.dataclass(frozen=True)
class Run:
    """One row of the study: a target and the options it runs with."""

    target: str
    options: dict = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.options.items()) or "defaults"


def plan(
    targets: Iterable[str] = DEFAULT_TARGETS,
    settings: Iterable[str] = (),
    sweeps: Iterable[str] = (),
    *,
    grid: bool = False,
) -> list[Run]:
    """The runs of a study: every target with the fixed ``settings`` ("target.option=value"),
    then one run per value of each sweep ("target.option=v1,v2,...", on top of the settings).
    With ``grid``, the sweeps of one target combine: one run per element of their Cartesian product
    (``atleus.adc_bits=4,6`` and ``atleus.quant=M8F4,M4F8`` give four runs).

    Unknown targets, options and values, and bad syntax, raise ValueError before anything runs."""
    targets, sweeps = list(targets), list(sweeps)
    if not targets and not sweeps:
        raise ValueError("targets must name at least one target")
    fixed: dict[str, dict] = {}
    for text in settings:
        target, option, values = parse_assignment(text)
        if len(values) != 1:
            raise ValueError(f"a setting takes one value; use a sweep for several: {text!r}")
        fixed.setdefault(target, {})[option] = values[0]
    for target, options in fixed.items():
        check_run(target, options)  # checked even when no run of `target` follows
    runs = [Run(t, dict(fixed.get(t, {}))) for t in targets]
    axes: dict[str, list[tuple[str, list]]] = {}  # grid: target -> [(option, values), ...], in order given
    for text in sweeps:
        target, option, values = parse_assignment(text)
        if not grid:
            runs += [Run(target, {**fixed.get(target, {}), option: v}) for v in values]
        elif any(option == o for o, _ in axes.get(target, [])):
            raise ValueError(f"{target}.{option} is swept twice; a grid takes each option once")
        else:
            axes.setdefault(target, []).append((option, values))
    for target, swept in axes.items():
        names = [option for option, _ in swept]
        runs += [
            Run(target, {**fixed.get(target, {}), **dict(zip(names, values))})
            for values in itertools.product(*(values for _, values in swept))
        ]
    unique = []
    for run in runs:
        check_run(run.target, run.options)  # names and values, against emulation and cost model
        if run not in unique:
            unique.append(run)
    return unique
