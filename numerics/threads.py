"""How many CPU threads an emulated pass's operations use: small ones run on the calling thread alone.

torch runs even tiny operations in parallel (a 20 x 64 by 64 x 64 ``mm``, a layer norm over 1,280
values), and each parallel operation waits for every thread to take part. After one, torch's other
threads spin for a while, then sleep; an emulated pass of a small model spaces its torch operations out
with the emulators' Python, so its helper threads are mostly asleep when the next one comes. With
another process on the other cores, waking them waits for the scheduler: one slice (~4 ms) now and then
in a pass of 3 ms (measured on a 2-core machine: a small ViT on HASTILY went from 3.7 ms quiet to a
median of 10.3 ms with the other core busy, its FP32 forward from 1.1 to 1.8 ms). On the calling thread
alone they wait for nothing (the same pass: 5.8 ms busy), and a small ``mm`` runs faster quiet, too
(3.8 against 6.6 us on 2 threads).

So an emulated pass on the CPU (``numerics.emulation``) runs every operation whose tensors all have
fewer than :data:`PARALLEL_ELEMENTS` elements on the calling thread, and the others with the threads
torch had when the pass began. The settings are the calling thread's own (OpenMP's per-thread thread
count and MKL's thread-local one), so passes in other threads, and the program around the pass, keep
theirs. Where torch's libraries do not expose them (another OpenMP runtime, no MKL), that part stays
as it is; ``EDGENUM_THREADS=torch`` keeps torch's threads for every operation.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import torch

__all__ = ["PARALLEL_ELEMENTS", "Threads", "large", "small_on_calling_thread"]

PARALLEL_ELEMENTS = 32768
"""Operations with a tensor of at least this many elements run on all of torch's threads: torch's own
grain size, below which its elementwise operations stay on one thread anyway."""

_RUNTIMES = ("libgomp.so.1", "libiomp5.so", "libomp.so", "libomp.dylib", "libiomp5.dylib")


@functools.cache
def _controls():
    """``(omp_set_num_threads, mkl_set_num_threads_local)`` of the libraries torch runs with, each None
    where it cannot be found."""
    lib = Path(torch.__file__).parent / "lib"
    omp = None
    for library in [lib / name for name in _RUNTIMES if (lib / name).exists()] + [None]:
        try:
            omp = ctypes.CDLL(str(library) if library else None).omp_set_num_threads
            break
        except (OSError, AttributeError, TypeError):  # TypeError: no global namespace (Windows)
            continue
    mkl = None
    for name in ("libtorch_cpu.so", "libtorch_cpu.dylib"):
        try:
            mkl = ctypes.CDLL(str(lib / name)).mkl_set_num_threads_local
            mkl.restype = ctypes.c_int  # takes its argument by reference (its Fortran-style entry point)
            break
        except (OSError, AttributeError):
            continue
    return omp, mkl


_NOT_TENSORS = frozenset(
    (int, float, bool, str, type(None), torch.dtype, torch.device, torch.Size, torch.layout, torch.memory_format, slice)
)
"""Argument types passed over at once (a failed ``isinstance`` against ``torch.Tensor`` costs ~0.1 us, on
every argument of every call of a pass)."""


def large(args, kwargs=None) -> bool:
    """Whether a call with these arguments has a tensor (or one in a list or tuple of tensors, as
    ``torch.cat`` takes them) of at least :data:`PARALLEL_ELEMENTS` elements."""
    for value in args:
        kind = type(value)
        if kind in _NOT_TENSORS:
            continue
        if kind is list or kind is tuple:
            if value and isinstance(value[0], torch.Tensor):
                if any(isinstance(v, torch.Tensor) and v.numel() >= PARALLEL_ELEMENTS for v in value):
                    return True
        elif isinstance(value, torch.Tensor) and value.numel() >= PARALLEL_ELEMENTS:
            return True
    return bool(kwargs) and large(kwargs.values())


def small_on_calling_thread() -> bool:
    """Whether emulated passes run their small operations on the calling thread (unless
    ``EDGENUM_THREADS=torch``)."""
    return os.environ.get("EDGENUM_THREADS", "") != "torch"


class Threads:
    """The calling thread's torch thread count during one emulated pass: :meth:`use` switches between
    one thread and the count the pass began with, only when that changes; :meth:`restore` puts back
    what the pass found. Not shared between threads."""

    __slots__ = ("all", "mkl", "one")

    def __init__(self):
        self.all = torch.get_num_threads()  # also makes torch set up this thread's count first
        self.mkl = 0  # MKL's thread-local count before the pass (0: none, its global count applies)
        self.one = False

    def use(self, large: bool) -> None:
        """All the pass's threads for a ``large`` operation, else one."""
        if large == self.one:  # a change
            if large:
                self.restore()
            else:
                self.mkl = _set(1, 1)
                self.one = True

    def restore(self) -> None:
        """What the pass found."""
        if self.one:
            _set(self.all, self.mkl)
            self.one = False


def _set(omp_threads: int, mkl_threads: int) -> int:
    """Set this thread's OpenMP and MKL thread counts; MKL's previous one back (0 without MKL)."""
    omp, mkl = _controls()
    if omp is not None:
        omp(omp_threads)
    return mkl(ctypes.byref(ctypes.c_int(mkl_threads))) if mkl is not None else 0
