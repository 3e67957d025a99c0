"""Leave-one-out calibration: how well each cost model predicts a published figure it was not fitted to.

For every fitted figure, the figure's target is refitted without it (calibration/fit.py, same groups,
same searches; a group left with no figure keeps the spec defaults) and the figure is evaluated with
the constants that result. An evaluable figure that no fit uses is already out of sample: its
leave-one-out value is the model's value. Figures reproduced by construction have none.

The results are kept in calibration/loo.json with the SHA-256 of the hwmodels/fitted.json they were
computed against, so the report can show them, or say they are stale, without recomputing.

    python -m calibration --loo
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from hwmodels.config import FITTED_PATH

from .evaluate import BY_CONSTRUCTION, DEFAULTS, EVALUATORS, check, evaluate, loaded_configs
from .fit import GROUPS, configs_of, fit
from .published import BY_KEY, FIGURES

LOO_PATH = Path(__file__).parent / "loo.json"
"""Where `python -m calibration --loo` keeps its results."""


@dataclass(frozen=True)
class HeldOut:
    """One figure's leave-one-out prediction."""

    key: str
    value: float
    """Model value of the figure with constants fitted without it."""
    refit: str
    """What the figure's target was fitted to without it, in words."""


def fitted_keys() -> tuple[str, ...]:
    """Keys of the figures some fit group uses, in report order."""
    used = {k for group in GROUPS for k in group.figures}
    return tuple(f.key for f in FIGURES if f.key in used)


def held_out(key: str, loaded: dict | None = None) -> HeldOut:
    """Refit `key`'s target without it and evaluate it (a fitted figure), or evaluate it as loaded."""
    if key not in EVALUATORS or key in BY_CONSTRUCTION:
        raise ValueError(f"figure {key!r} has no leave-one-out value (not evaluable or set by construction)")
    loaded = loaded_configs() if loaded is None else loaded
    if key not in fitted_keys():
        return HeldOut(key, evaluate(key, loaded), "not used by any fit: the loaded model")
    target = BY_KEY[key].target
    results = fit(exclude=frozenset({key}), targets=(target,))
    configs = configs_of(results, {**loaded, target: DEFAULTS[target]})
    parts = []
    for result in results:
        if key not in result.group.figures:
            continue
        if not result.values:
            parts.append(f"{', '.join(result.group.constants)} kept at the spec default (no other figure in the group)")
        elif not result.accepted:
            parts.append(f"{', '.join(result.group.constants)} kept at the spec default (the refit was rejected)")
        else:
            values = ", ".join(f"{k} = {v:g}" for k, v in result.values.items())
            parts.append(f"{values} from {', '.join(result.errors)}")
    return HeldOut(key, evaluate(key, configs), "; ".join(parts))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def run(keys: tuple[str, ...] | None = None, progress=print) -> dict[str, HeldOut]:
    """Leave-one-out values of `keys` (default: every evaluable figure not set by construction)."""
    keys = tuple(k for k in EVALUATORS if k not in BY_CONSTRUCTION) if keys is None else keys
    loaded, out = loaded_configs(), {}
    for i, key in enumerate(keys, 1):
        out[key] = held_out(key, loaded)
        if progress:
            progress(f"[{i}/{len(keys)}] {key}: {out[key].value:.4g} ({out[key].refit})")
    return out


def write(results: dict[str, HeldOut], path: str | Path = LOO_PATH, fitted_path: str | Path = FITTED_PATH) -> None:
    """Keep `results` in `path` with the digest of the fitted constants they hold for."""
    data = {
        "_about": "Leave-one-out values written by `python -m calibration --loo` (calibration/loo.py).",
        "fitted_sha256": _digest(Path(fitted_path)),
        "figures": {k: {"value": float(f"{r.value:.6g}"), "refit": r.refit} for k, r in results.items()},
    }
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def read(path: str | Path = LOO_PATH, fitted_path: str | Path = FITTED_PATH) -> tuple[dict[str, HeldOut], bool]:
    """(results kept in `path`, whether they are current for `fitted_path`); ({}, False) without a file."""
    path = Path(path)
    if not path.exists():
        return {}, False
    data = json.loads(path.read_text(encoding="utf-8"))
    results = {k: HeldOut(k, v["value"], v["refit"]) for k, v in data["figures"].items()}
    return results, data["fitted_sha256"] == _digest(Path(fitted_path))


def error_text(key: str, value: float) -> str:
    """The held-out value against the published figure: a relative error, or a bound check."""
    return check(BY_KEY[key], value)
