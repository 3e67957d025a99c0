"""The target registry: each accelerator registered once, with its typed options and its cost model.

A target is one :class:`Target`: its emulation (``prepare``), its option schema (a frozen
:class:`TargetOptions` dataclass whose fields are the hardware and emulation knobs, validated on
construction) and the module of its cost model (a dotted name, resolved by ``hwmodels``; ``numerics``
never imports ``hwmodels``). ``numerics.nn.emulate`` and ``hwmodels.estimate`` both build the same
options object from the same keyword arguments, so a bad value fails in one place, with one message,
before any work starts.

Every field of a built-in target's options is classified: it moves the cost model (listed in
``COST``) or it is accuracy-only (``ACCURACY_ONLY`` maps it to the reason). ``tests`` check both
claims by estimating with each field changed.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from typing import Any, Callable, ClassVar

__all__ = ["Target", "TargetOptions", "register_target", "targets", "target_options", "get_target", "option_table"]


@dataclasses.dataclass(frozen=True)
class TargetOptions:
    """Base of a target's typed options (a frozen dataclass; subclasses validate in ``__post_init__``
    and raise ``ValueError``/``TypeError`` naming the option and its allowed values)."""

    COST: ClassVar[tuple[str, ...]] = ()
    """Fields that change the cost model's estimate."""
    ACCURACY_ONLY: ClassVar[dict[str, str]] = {}
    """Fields that change only the emulated arithmetic, each with the reason it costs nothing."""
    RENAMED: ClassVar[dict[str, str]] = {}
    """Former option names and their current ones (accepted with a DeprecationWarning)."""

    def as_dict(self) -> dict:
        """{field: value} in declaration order (values are not copied)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def changed(self) -> dict:
        """The fields that differ from their defaults."""
        defaults = type(self)()
        return {
            k: v for k, v in self.as_dict().items() if not (v is getattr(defaults, k) or _same(v, getattr(defaults, k)))
        }


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except (RuntimeError, TypeError, ValueError):  # e.g. tensors in calibration batches
        return False


@dataclasses.dataclass(frozen=True)
class Target:
    """A registered target."""

    name: str
    summary: str
    options: type
    """The :class:`TargetOptions` subclass of its options."""
    prepare: Callable[..., dict]
    """``prepare(model_copy, options) -> handlers``: swaps modules in the copy if needed and returns
    ``{torch function: handler(emulation, func, args, kwargs)}``."""
    cost_model: str | None = None
    """Dotted module name of the cost model (``hwmodels.<target>``), or None (no cost model)."""
    priced_on_copy: bool = False
    """True when the emulation rewrites weight values the cost model reads (FlexiSAGA's masks): a
    plain model is then priced through an emulated copy, so both see the same masks."""
    legacy: bool = False
    """Registered with an options dict: ``prepare`` receives a dict instead of the typed object."""

    @property
    def defaults(self) -> dict:
        """{option: default}."""
        return self.options().as_dict()

    def make_options(self, **values) -> TargetOptions:
        """The typed options; an unknown name or a bad value raises ``ValueError``/``TypeError``."""
        names = [f.name for f in dataclasses.fields(self.options)]
        for old, new in self.options.RENAMED.items():
            if old in values:
                if new in values:
                    raise ValueError(f"give {new!r} only: {old!r} is its former name")
                warnings.warn(f"option {old!r} of {self.name!r} is now {new!r}", DeprecationWarning, stacklevel=3)
                values[new] = values.pop(old)
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(unknown)} for target {self.name!r}; "
                f"valid options: {', '.join(sorted(names)) or 'none'}"
            )
        return self.options(**values)

    def cost_function(self, name: str) -> Any:
        """An attribute of the cost model's module (e.g. FlexiSAGA's ``auto_cycles``)."""
        if self.cost_model is None:
            raise ValueError(f"target {self.name!r} has no cost model")
        return getattr(importlib.import_module(self.cost_model), name)


_TARGETS: dict[str, Target] = {}
_BUILTINS_LOADED = False


def _legacy_options(name: str, defaults: dict) -> type:
    """A TargetOptions subclass for an options dict (targets registered before typed options)."""
    fields = [(key, Any, dataclasses.field(default=value)) for key, value in defaults.items()]
    cls = dataclasses.make_dataclass(f"{name.title()}Options", fields, bases=(TargetOptions,), frozen=True)
    cls.ACCURACY_ONLY = {key: "untyped option of a target registered with a dict" for key in defaults}
    return cls


def register_target(
    name: str, *, summary: str, options=None, cost_model: str | None = None, priced_on_copy: bool = False
):
    """Decorator registering ``prepare(model_copy, options) -> handlers`` as target ``name``.

    ``options`` is a :class:`TargetOptions` subclass (its fields are the options, validated when
    built), or a dict of defaults (untyped; ``prepare`` then receives a dict). ``cost_model`` names the
    module holding the target's cost model (``estimate(workload, *, hardware, config, **options)``).
    """

    def deco(prepare):
        if name in _TARGETS:
            raise ValueError(f"target {name!r} is already registered")
        legacy = not isinstance(options, type)
        schema = _legacy_options(name, dict(options or {})) if legacy else options
        if not issubclass(schema, TargetOptions):
            raise TypeError(f"options must be a TargetOptions subclass or a dict, got {schema!r}")
        _TARGETS[name] = Target(name, summary, schema, prepare, cost_model, priced_on_copy, legacy)
        return prepare

    return deco


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("numerics.targets")  # each module registers itself


def get_target(name: str) -> Target:
    """The registered target ``name``; ``ValueError`` listing the known ones otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"target must be a str naming a target, got {name!r}")
    _load_builtins()
    if name not in _TARGETS:
        raise ValueError(f"unknown target {name!r}; known targets: {', '.join(sorted(_TARGETS))}")
    return _TARGETS[name]


def targets() -> dict[str, str]:
    """Registered target names and their one-line summaries."""
    _load_builtins()
    return {name: t.summary for name, t in _TARGETS.items()}


def target_options(target: str) -> dict:
    """The options ``emulate(model, target, ...)`` accepts, with their defaults."""
    return get_target(target).defaults


def option_table(target: str) -> list[tuple[str, Any, str]]:
    """(option, default, "moves cost" or "accuracy-only: why") for every option of ``target``."""
    t = get_target(target)
    rows = []
    for name, default in t.defaults.items():
        why = t.options.ACCURACY_ONLY.get(name)
        rows.append((name, default, "moves cost" if name in t.options.COST else f"accuracy-only: {why}"))
    return rows
