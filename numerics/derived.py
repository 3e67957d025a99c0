"""Data derived from a tensor, kept while the tensor lives unchanged.

A layer's weight codes come back call after call, so what the emulation derives from them (a float32
copy for the exact GEMMs, crossbar column sums, per-column scales) is worth keeping; an attention's K or
V is written once, so by default nothing is kept for a tensor before it is seen a second time. An entry
is keyed by the tensor's identity, version and storage (an in-place change, or new data put in by
``Module.to()``, makes it stale) and leaves with the tensor.
"""

from __future__ import annotations

import weakref

import torch

__all__ = ["derived"]

# (id(tensor), what) -> (weak reference, (key, version), value or None once seen)
_KEPT: dict[tuple[int, str], tuple] = {}


def derived(t: torch.Tensor, what: str, key, make, *, first_sight: bool = False, peek: bool = False):
    """``make()`` for the tensor ``t``, kept under ``what`` while ``t`` lives with the same ``key`` and
    version. Computed and kept the second time it is asked for, or the first with ``first_sight``;
    None before that, and for inference-mode tensors (which track no version: nothing to key on).
    ``peek``: only what is kept already (None otherwise); the asking does not count as a sight."""
    try:
        key = (key, t._version, t.data_ptr())  # the storage too: Module.to() swaps a parameter's data in place
    except RuntimeError:
        return None
    slot = (id(t), what)
    cached = _KEPT.get(slot)
    if peek:
        return cached[2] if cached is not None and cached[0]() is t and cached[1] == key else None
    if cached is None or cached[0]() is not t or cached[1] != key:
        value = make() if first_sight else None
        _KEPT[slot] = (weakref.ref(t, lambda _: _KEPT.pop(slot, None)), key, value)
        return value
    if cached[2] is None:
        _KEPT[slot] = (cached[0], key, make())
    return _KEPT[slot][2]
