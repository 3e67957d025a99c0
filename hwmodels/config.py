"""Shared machinery of the target configurations: fitted constants and option handling.

Every target keeps its constants in a frozen dataclass. Constants a spec marks as fitted carry a
documented default ("assumption until calibrated") and are listed in the class attribute FITTED;
`fitted_config` replaces them with the entries of `hwmodels/fitted.json` when that file exists.
The file maps a target name to {field: value} or {field: {"value": v, ...provenance...}}.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

FITTED_PATH = Path(__file__).with_name("fitted.json")
"""Where calibration writes fitted constants; absent until calibrated."""


def load_fitted(target: str, path: str | Path | None = None) -> dict:
    """The fitted entries of one target as {field: value} ({} when the file does not exist)."""
    path = Path(path) if path is not None else FITTED_PATH
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is not valid JSON ({error}); restore it or rewrite it with python -m calibration --refit"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be an object mapping target names to fields")
    entries = data.get(target, {})
    if not isinstance(entries, dict):
        raise ValueError(f"{path}: entry {target!r} must be an object of fields")
    return {name: (value["value"] if isinstance(value, dict) else value) for name, value in entries.items()}


def fitted_config(default, target: str, path: str | Path | None = None):
    """`default` with the fields listed in its FITTED replaced by the fitted values."""
    entries = load_fitted(target, path)
    allowed = set(getattr(type(default), "FITTED", ()))
    unknown = sorted(set(entries) - allowed)
    if unknown:
        raise ValueError(
            f"fitted constants {unknown} for {target!r} are not fittable; fittable fields: {sorted(allowed)}"
        )
    return dataclasses.replace(default, **entries) if entries else default


def resolve(target: str, options: dict, behaviour: dict, default_config, config=None):
    """Split estimate() options into behaviour options and config-field overrides.

    Returns (behaviour options with defaults filled in, config). Unknown names raise ValueError
    listing every valid option."""
    fields = {f.name for f in dataclasses.fields(default_config)}
    unknown = sorted(set(options) - set(behaviour) - fields)
    if unknown:
        valid = sorted(set(behaviour) | fields | {"config"})
        raise ValueError(f"unknown option(s) {unknown} for target {target!r}; valid options: {valid}")
    if config is None:
        config = fitted_config(default_config, target)
    elif not isinstance(config, type(default_config)):
        raise TypeError(f"config must be a {type(default_config).__name__}, got {type(config).__name__}")
    overrides = {k: v for k, v in options.items() if k in fields}
    if overrides:
        config = dataclasses.replace(config, **overrides)
    return {**behaviour, **{k: v for k, v in options.items() if k in behaviour}}, config


def check_positive(config, *names: str, integer: bool = False) -> None:
    """ValueError naming the field unless every named field is > 0 (and finite, or an int)."""
    for name in names:
        value = getattr(config, name)
        if integer and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")


def check_non_negative(config, *names: str) -> None:
    """ValueError naming the field unless every named field is finite and >= 0."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")


def check_choice(name: str, value, allowed) -> None:
    """ValueError naming the option unless value is one of allowed."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
