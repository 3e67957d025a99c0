"""Shared argument checks for configuration dataclasses: a clear error naming the field."""

from __future__ import annotations


def check_int(name: str, value, lo: int, hi: int, *, optional: bool = False) -> None:
    """TypeError unless ``value`` is an int (or None when ``optional``); ValueError naming
    ``name`` and the allowed range unless lo <= value <= hi."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int{' or None' if optional else ''}, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")


def check_choice(name: str, value, choices) -> None:
    """ValueError naming ``name`` and the allowed values unless ``value`` is one of them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def check_type(name: str, value, cls: type) -> None:
    """TypeError naming ``name`` unless ``value`` is a ``cls`` (e.g. a configuration dataclass)."""
    if not isinstance(value, cls):
        raise TypeError(f"{name} must be a {cls.__name__}, got {type(value).__name__}")


MAX_PADDED_ELEMENTS = 1 << 31
"""Largest tensor a weight may be padded to (to whole tiles or crossbars) before it is refused."""


def check_padded(what: str, elements: int, hint: str) -> None:
    """ValueError when padding ``what`` would allocate more than MAX_PADDED_ELEMENTS elements (e.g. a
    tiny weight on a huge tile), instead of trying to allocate it."""
    if elements > MAX_PADDED_ELEMENTS:
        raise ValueError(f"{what} would be padded to {elements:,} elements (more than {MAX_PADDED_ELEMENTS:,}): {hint}")
