"""Fit the cost models' free constants to the published figures and write hwmodels/fitted.json.

Only constants a spec marks as unknown, assumed or fitted (the configs' FITTED fields) are fitted,
each group of constants to named figures, by deterministic searches from fixed brackets (bisection
or golden section, no random starts), starting from the spec defaults so that a refit never
depends on an earlier one. The loss is Σ ln(model/published)² over the group's figures.

A group is accepted only if every one of its figures is reproduced within TOLERANCE with its
constants inside their sensible bounds; otherwise its constants keep their documented defaults and
the report says which figure no sensible constant reproduces, with the model's best value.

    python -m calibration.fit [--out PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hwmodels.config import FITTED_PATH
from numerics.targets.flexisaga import FlexiSAGAOptions

from .evaluate import DEFAULTS, evaluate
from .published import BY_KEY

TOLERANCE = 0.10
"""Largest relative error of a fitted figure for its group to be accepted."""
SIGNIFICANT = 6
"""Significant digits of a fitted float written to fitted.json (stable text, byte-identical refits)."""
GOLDEN = (math.sqrt(5) - 1) / 2


def rel_error(model: float, published: float) -> float:
    """model/published − 1."""
    return model / published - 1


def _round(value):
    return value if isinstance(value, int) else float(f"{value:.{SIGNIFICANT}g}")


def golden_min(loss: Callable[[float], float], lo: float, hi: float, iters: int = 40) -> float:
    """Argmin of a unimodal `loss` on [lo, hi] by golden-section search (deterministic)."""
    a, b = lo, hi
    c, d = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
    fc, fd = loss(c), loss(d)
    for _ in range(iters):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - GOLDEN * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + GOLDEN * (b - a)
            fd = loss(d)
    return (a + b) / 2


def integer_min(loss: Callable[[int], float], lo: int, hi: int, iters: int = 30, grid: int = 48) -> int:
    """Argmin of `loss` over the integers of [lo, hi]; ties go to the smaller one.

    A geometric grid of `grid` points first finds the basin, then golden section refines between
    the best grid point's neighbours: a loss that is flat over part of the range (a pipeline stage
    bound by something else) would mislead golden section alone."""
    points = sorted({round(lo * (hi / lo) ** (i / (grid - 1))) for i in range(grid)} | {lo, hi})
    best = min(range(len(points)), key=lambda i: (loss(points[i]), points[i]))
    a, b = points[max(best - 1, 0)], points[min(best + 1, len(points) - 1)]
    x = golden_min(lambda v: loss(round(v)), a, b, iters)
    candidates = sorted({max(a, min(b, math.floor(x) + k)) for k in (-1, 0, 1, 2)} | {points[best]})
    return min(candidates, key=lambda v: (loss(v), v))


@dataclass(frozen=True)
class Group:
    """Constants of one target fitted together to named figures."""

    target: str
    """Target whose configuration holds the constants."""
    constants: tuple[str, ...]
    """Fitted fields (each in the config's FITTED)."""
    figures: tuple[str, ...]
    """Keys of the figures they are fitted to."""
    bounds: str
    """The sensible range searched, in words."""
    method: str
    """How the values are found."""
    solve: Callable
    """solve(config, loss, figures) -> {field: value}: loss(config) is the group's loss at a config
    over `figures`, the group's figures in use (all of them, or all but a held-out one)."""


@dataclass(frozen=True)
class GroupResult:
    """Outcome of fitting one group."""

    group: Group
    values: dict
    """Best values found (written only if accepted)."""
    errors: dict
    """Figure key -> relative error at `values`."""

    @property
    def accepted(self) -> bool:
        return all(abs(e) <= TOLERANCE for e in self.errors.values())


def _loss(target: str, keys: tuple[str, ...]):
    def loss(config) -> float:
        configs = {**DEFAULTS, target: config}
        return sum(math.log(evaluate(k, configs) / BY_KEY[k].value) ** 2 for k in keys)

    return loss


def _log_scalar(name: str, lo: float, hi: float):
    """Solve for one positive float constant on a log scale."""

    def solve(config, loss, figures):
        x = golden_min(lambda t: loss(dataclasses.replace(config, **{name: math.exp(t)})), math.log(lo), math.log(hi))
        return {name: _round(math.exp(x))}

    return solve


def _int_scalar(name: str, lo: int, hi: int):
    def solve(config, loss, figures):
        return {name: integer_min(lambda v: loss(dataclasses.replace(config, **{name: v})), lo, hi)}

    return solve


def _softex_powers(config, loss, figures):
    """Ratio x = P_softex/P_cores from the energy ratios in use (they depend on nothing else), then
    a common scale of all three powers from the efficiency (energy is linear in it); the ratio
    of RedMulE to core power keeps its documented default, as do x without an energy ratio and
    the scale without the efficiency."""
    ratio_keys = tuple(k for k in ("softex.softmax_energy", "softex.gelu_energy") if k in figures)
    base = config.cores_power_w
    x = config.softex_power_w / base
    if ratio_keys:
        ratio_loss = _loss("softex", ratio_keys)
        with_ratio = lambda t: dataclasses.replace(config, softex_power_w=base * math.exp(t))  # noqa: E731
        x = math.exp(golden_min(lambda t: ratio_loss(with_ratio(t)), math.log(0.25), math.log(4)))
    trial = dataclasses.replace(config, softex_power_w=base * x)
    scale = 1.0
    if "softex.vit_efficiency" in figures:
        efficiency = evaluate("softex.vit_efficiency", {**DEFAULTS, "softex": trial})
        scale = efficiency / BY_KEY["softex.vit_efficiency"].value
    return {
        "redmule_power_w": _round(config.redmule_power_w * scale),
        "cores_power_w": _round(base * scale),
        "softex_power_w": _round(base * x * scale),
    }


def _flexisaga_overhead_and_skip(config, loss, figures):
    """η by golden section for each fold overhead α on a coarse grid, then around the best α."""
    R, C = FlexiSAGAOptions().array.tile  # the figures' array: the default hardware

    def best_eta(alpha):
        at = lambda eta: dataclasses.replace(config, fold_overhead=alpha, skip_efficiency=eta)  # noqa: E731
        eta = _round(golden_min(lambda e: loss(at(e)), 0.05, 1.0, iters=24))
        return loss(at(eta)), alpha, eta

    coarse = min(best_eta(a) for a in range(0, 2 * (R + C) + 1, 8))
    fine = min(best_eta(a) for a in range(max(0, coarse[1] - 6), coarse[1] + 7, 2))
    _, alpha, eta = min(coarse, fine)
    return {"fold_overhead": alpha, "skip_efficiency": eta}


GROUPS: tuple[Group, ...] = (
    Group(
        "softex",
        ("redmule_utilisation",),
        ("softex.vit_throughput",),
        "0.05 to 1",
        "golden section on the fraction",
        _log_scalar("redmule_utilisation", 0.05, 1.0),
    ),
    Group(
        "softex",
        ("redmule_power_w", "cores_power_w", "softex_power_w"),
        ("softex.softmax_energy", "softex.gelu_energy", "softex.vit_efficiency"),
        "P_softex/P_cores in [0.25, 4]; common scale unbounded",
        "P_softex/P_cores by golden section on the two energy ratios, then one scale of all three "
        "powers (closed form) for the efficiency; P_redmule/P_cores kept at its default",
        _softex_powers,
    ),
    Group(
        "hastily",
        ("e_mvm_pj",),
        ("hastily.bert_base_tops_per_w", "hastily.bert_large_tops_per_w"),
        "10 pJ to 100 nJ per MVM",
        "golden section on log e_mvm",
        _log_scalar("e_mvm_pj", 10, 1e5),
    ),
    Group(
        "hastily",
        ("mvm_cycles",),
        ("hastily.bert_base_tops", "hastily.bert_large_tops"),
        "8 (one cycle per input bit) to 2000 cycles",
        "geometric grid of 48 points, then integer golden section around the best",
        _int_scalar("mvm_cycles", 8, 2000),
    ),
    Group(
        "hastily",
        ("exp_vfu_cycles",),
        ("hastily.puma_tops",),
        "1 to 200 cycles per element-lane",
        "geometric grid of 48 points, then integer golden section around the best",
        _int_scalar("exp_vfu_cycles", 1, 200),
    ),
    Group(
        "flexisaga",
        ("fold_overhead", "skip_efficiency"),
        ("flexisaga.sparse_speedup_low", "flexisaga.sparse_speedup_high"),
        "α in [0, 2(R + C)] cycles per fold, η in [0.05, 1]",
        "η by golden section for α on a grid of 8, then on a grid of 2 around the best α",
        _flexisaga_overhead_and_skip,
    ),
)
"""Fit groups in order; a target's later groups start from its earlier accepted values."""

UNFITTED = {
    "softex.freq_hz_0v55": "no figure depends on it: the 0.55 V efficiency is energy per op, independent of the clock",
    "softex.gelu_core_cycles": "no figure isolates it (the published GELU speed-up is reproduced by "
    "construction of the software baseline)",
    "softex.core_op_cycles": "only the ViT throughput depends on it, already used for redmule_utilisation",
    "softex.core_norm_cycles": "only the ViT throughput depends on it, already used for redmule_utilisation",
    "softex.l1_contention": "degenerate with redmule_utilisation on the only throughput figure",
    "hastily.div_cycles": "no figure isolates the softmax division",
    "hastily.level_intra_cycles": "no figure isolates reduction-tree levels",
    "hastily.level_inter_cycles": "no figure isolates reduction-tree levels",
    "atleus.t_dig_cycles": "no quantitative Atleus figure the model can evaluate",
    "atleus.sa_cores": "no quantitative Atleus figure the model can evaluate",
    "atleus.sa_freq_hz": "no quantitative Atleus figure the model can evaluate",
    "atleus.e_dequant_pj": "no quantitative Atleus figure the model can evaluate",
    "atleus.e_vector_op_pj": "no quantitative Atleus figure the model can evaluate",
    "atleus.e_tsv_pj_per_bit": "no quantitative Atleus figure the model can evaluate",
}
"""FITTED constants no group fits, and why (they keep their documented defaults)."""


def fit(exclude: frozenset[str] = frozenset(), targets: tuple[str, ...] | None = None) -> list[GroupResult]:
    """Fit every group (of `targets`, default all) in order, from the spec defaults, without the
    figures in `exclude`. A group left with no figure is not fitted: its constants keep their
    defaults (its result has no values and no errors)."""
    configs, results = dict(DEFAULTS), []
    for group in GROUPS:
        if targets is not None and group.target not in targets:
            continue
        figures = tuple(k for k in group.figures if k not in exclude)
        if not figures:
            results.append(GroupResult(group, {}, {}))
            continue
        base = configs[group.target]
        values = group.solve(base, _loss(group.target, figures), figures)
        trial = {**configs, group.target: dataclasses.replace(base, **values)}
        errors = {k: rel_error(evaluate(k, trial), BY_KEY[k].value) for k in figures}
        result = GroupResult(group, values, errors)
        if result.accepted:
            configs = trial
        results.append(result)
    return results


def configs_of(results: list[GroupResult], start: dict | None = None) -> dict:
    """{target: config}: `start` (default: the spec defaults) with the accepted fits applied."""
    configs = dict(DEFAULTS if start is None else start)
    for result in results:
        if result.accepted and result.values:
            target = result.group.target
            configs[target] = dataclasses.replace(configs[target], **result.values)
    return configs


def fitted_json(results: list[GroupResult]) -> str:
    """fitted.json text: accepted values with provenance, sorted keys, stable number formatting."""
    data = {
        "_about": "Fitted cost-model constants, written by `python -m calibration --refit` "
        "(calibration/fit.py); hwmodels loads them by default. Groups under _rejected "
        "could not reproduce their figures and keep the documented defaults."
    }
    for result in results:
        group = result.group
        if not result.accepted:
            data.setdefault("_rejected", {})[f"{group.target}: {', '.join(group.constants)}"] = {
                "best": result.values,
                "errors": {k: _round(e) for k, e in result.errors.items()},
                "searched": group.bounds,
                "reason": f"a figure is off by more than {TOLERANCE:.0%} "
                "at the best constants within the searched range",
            }
            continue
        fitted_to = [
            f"{BY_KEY[k].key}: {BY_KEY[k].published} ({BY_KEY[k].measures}; {BY_KEY[k].workload}; {BY_KEY[k].source})"
            for k in group.figures
        ]
        for name, value in result.values.items():
            data.setdefault(group.target, {})[name] = {
                "value": value,
                "default": getattr(DEFAULTS[group.target], name),
                "fitted_to": fitted_to,
                "method": group.method,
                "searched": group.bounds,
            }
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_fitted(path: str | Path = FITTED_PATH, results: list[GroupResult] | None = None) -> list[GroupResult]:
    """Fit (unless `results` are given) and write fitted.json to `path`; returns the results."""
    results = fit() if results is None else results
    Path(path).write_text(fitted_json(results), encoding="utf-8")
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m calibration.fit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(FITTED_PATH), help="where to write (default: hwmodels/fitted.json)")
    args = parser.parse_args(argv)
    for result in write_fitted(args.out):
        status = "accepted" if result.accepted else "REJECTED (defaults kept)"
        print(
            f"{result.group.target}: {result.values} {status}; errors "
            + ", ".join(f"{k} {e:+.1%}" for k, e in result.errors.items())
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
