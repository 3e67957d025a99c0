"""Emulation targets for ``numerics.nn.emulate``: one module per accelerator, each registering itself
(emulation, typed options and cost model) with :mod:`numerics.registry`."""

from __future__ import annotations

import dataclasses

from numerics.registry import TargetOptions, register_target


@dataclasses.dataclass(frozen=True)
class FP32Options(TargetOptions):
    """The reference target has no options."""


@register_target("fp32", summary="the model's own arithmetic, unmodified (reference)", options=FP32Options)
def _prepare_fp32(model, options: FP32Options) -> dict:
    return {}


from numerics.targets import atleus, flexisaga, hastily, softex  # noqa: E402,F401,I001  (register the targets)
