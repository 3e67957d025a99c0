"""The one rule for what stays off the accelerator: a model's heads.

Task heads, LM heads and poolers map a model's features to its outputs; the accelerators' papers
evaluate the backbone, and the emulated static-weight targets (``"hastily"``, ``"atleus"``,
``"flexisaga"``) keep these layers dense and in the model's own arithmetic on the host (assumption,
shared by their cost models through :func:`numerics.cim_layers.layer_kind`). A layer is a head when
a dot-separated part of its qualified name matches one of :data:`HEADS` (``fnmatch`` patterns), e.g.
``classifier``, ``pre_classifier``, ``lm_head``, ``pooler.dense``, Whisper's ``proj_out``. Each of
those targets takes a ``heads`` option: other patterns, or a callable ``(name, module) -> bool``.
Embedding lookups are not products and are never swapped; convolutions in a model's embeddings (a
ViT's patch projection, a ResNet's stem) are products and run on the accelerator.
"""

from __future__ import annotations

import fnmatch
from typing import Callable

from torch import nn

__all__ = ["HEADS", "HeadRule", "head_rule", "check_heads", "is_head"]

HEADS = ("*classifier", "lm_head", "pooler", "cls", "score", "qa_outputs", "proj_out", "head", "heads")
"""Name parts of the layers kept off the accelerator by default."""

HeadRule = Callable[[str, nn.Module], bool]


def check_heads(heads) -> None:
    """ValueError unless ``heads`` is a callable ``(name, module) -> bool`` or name patterns."""
    if callable(heads):
        return
    patterns = (heads,) if isinstance(heads, str) else heads
    if not isinstance(patterns, (tuple, list)) or not all(isinstance(p, str) for p in patterns):
        raise ValueError(f"heads must be a callable (name, module) -> bool or name patterns, got {heads!r}")


def head_rule(heads=HEADS) -> HeadRule:
    """``heads`` as a callable ``(name, module) -> bool``: patterns match the qualified name or any of
    its dot-separated parts."""
    check_heads(heads)
    if callable(heads):
        return heads
    patterns = (heads,) if isinstance(heads, str) else tuple(heads)

    def rule(name: str, _module: nn.Module | None = None) -> bool:
        parts = name.split(".") + [name]
        return any(fnmatch.fnmatchcase(part, p) for part in parts for p in patterns)

    return rule


is_head = head_rule(HEADS)
"""The default rule: ``is_head(name)``."""
