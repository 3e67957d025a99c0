"""Small operations of an emulated pass run on the calling thread alone (numerics/threads.py)."""

import ctypes
import threading

import pytest
import torch
from torch import nn

from numerics import cim_layers, threads
from numerics.cim_layers import CrossbarLinear
from numerics.emulation import _SelfEmulating
from numerics.nn import emulate
from tests.models import TinyTransformer

TARGETS = ("softex", "hastily", "atleus", "flexisaga")

needs_openmp = pytest.mark.skipif(threads._controls()[0] is None, reason="torch's OpenMP runtime not found")


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


def _mkl_local() -> int | None:
    """MKL's thread-local count for this thread (0: none), left as it was; None without MKL."""
    mkl = threads._controls()[1]
    if mkl is None:
        return None
    value = mkl(ctypes.byref(ctypes.c_int(0)))
    mkl(ctypes.byref(ctypes.c_int(value)))
    return value


class Probe(nn.Module):
    """Reads this thread's torch thread count after an operation on a small tensor and after one on a
    large one; raises after both if asked."""

    def forward(self, small, large, fail=False):
        small = small * 2
        seen = [torch.get_num_threads(), _mkl_local()]
        large = large * 2
        seen += [torch.get_num_threads(), _mkl_local()]
        if fail:
            raise RuntimeError("failed inside the pass")
        return seen


SMALL = torch.ones(threads.PARALLEL_ELEMENTS - 1)
LARGE = torch.ones(threads.PARALLEL_ELEMENTS)


def test_large_means_a_tensor_of_at_least_the_grain_size():
    assert not threads.large((SMALL, SMALL, 3.0, None))
    assert threads.large((SMALL, LARGE))
    assert threads.large((SMALL,), {"other": LARGE})
    assert threads.large(([SMALL, LARGE],))  # torch.cat's list
    assert not threads.large(([SMALL, SMALL], (SMALL,)), {"dim": 0})
    assert not threads.large(())


@needs_openmp
def test_small_operations_run_on_the_calling_thread_and_large_ones_on_all(two_threads, monkeypatch):
    monkeypatch.delenv("EDGENUM_THREADS", raising=False)
    em = emulate(Probe(), "softex")
    mkl = _mkl_local()
    one = None if mkl is None else 1
    assert em(SMALL, LARGE) == [1, one, two_threads, mkl]
    assert (torch.get_num_threads(), _mkl_local()) == (two_threads, mkl)  # the pass put back what it found


@pytest.mark.skipif(threads._controls()[1] is None, reason="no MKL in this torch")
def test_mkl_gets_back_its_own_thread_local_count(two_threads, monkeypatch):
    monkeypatch.delenv("EDGENUM_THREADS", raising=False)
    mkl = threads._controls()[1]
    before = mkl(ctypes.byref(ctypes.c_int(3)))  # a count of its own, unlike OpenMP's 2
    try:
        assert emulate(Probe(), "softex")(SMALL, LARGE)[1::2] == [1, 3]
        assert _mkl_local() == 3
    finally:
        mkl(ctypes.byref(ctypes.c_int(before)))


@needs_openmp
def test_torch_threads_everywhere_with_edgenum_threads_torch(two_threads, monkeypatch):
    monkeypatch.setenv("EDGENUM_THREADS", "torch")
    mkl = _mkl_local()
    assert emulate(Probe(), "softex")(SMALL, LARGE) == [two_threads, mkl, two_threads, mkl]


@needs_openmp
def test_a_failed_pass_gives_the_threads_back(two_threads, monkeypatch):
    monkeypatch.delenv("EDGENUM_THREADS", raising=False)
    mkl = _mkl_local()
    with pytest.raises(RuntimeError, match="inside the pass"):
        emulate(Probe(), "softex")(LARGE, SMALL, fail=True)  # ends on a small operation: one thread
    assert (torch.get_num_threads(), _mkl_local()) == (two_threads, mkl)


@needs_openmp
def test_a_pass_on_one_thread_leaves_other_threads_theirs(two_threads, monkeypatch):
    monkeypatch.delenv("EDGENUM_THREADS", raising=False)
    inside, done = threading.Event(), threading.Event()

    class Waits(nn.Module):
        def forward(self, x):
            x = x * 2  # small: this thread now runs on one
            inside.set()
            done.wait(timeout=30)
            return torch.get_num_threads()

    em, seen = emulate(Waits(), "softex"), []
    worker = threading.Thread(target=lambda: seen.append(em(SMALL)))
    worker.start()
    assert inside.wait(timeout=30)
    try:
        assert torch.get_num_threads() == two_threads
    finally:
        done.set()
        worker.join()
    assert seen == [1]


@needs_openmp
def test_a_module_that_emulates_itself_runs_on_all_threads_when_its_weights_are_large(two_threads, monkeypatch):
    monkeypatch.delenv("EDGENUM_THREADS", raising=False)
    seen, real = [], cim_layers.crossbar_linear

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(cim_layers, "crossbar_linear", spy)

    def threads_inside(n_in, n_out):
        em = emulate(nn.Sequential(nn.Linear(n_in, n_out)), "hastily")
        assert isinstance(em[0], CrossbarLinear) and isinstance(em[0].forward, _SelfEmulating)
        seen.clear()
        em(torch.ones(1, 5, n_in) * 0.5)  # a small input either way
        return seen

    # 128 x 256 = 32768 weights: large; 128 x 255 = 32640 and 255 biases: small
    assert threads_inside(128, 256) == [two_threads]
    assert threads_inside(128, 255) == [1]


@pytest.mark.parametrize("target", TARGETS)
def test_the_bits_do_not_depend_on_the_threads(target, two_threads, monkeypatch):
    em = emulate(TinyTransformer(), target, **({"accumulation": "fast"} if target == "flexisaga" else {}))
    tokens = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        monkeypatch.setenv("EDGENUM_THREADS", "torch")
        expected = em(tokens)
        monkeypatch.delenv("EDGENUM_THREADS")
        assert torch.equal(em(tokens), expected)


@needs_openmp
def test_a_pass_of_another_model_inside_a_pass_shares_its_threads(two_threads, monkeypatch):
    monkeypatch.delenv("EDGENUM_THREADS", raising=False)
    inner = emulate(Probe(), "hastily")

    class Outer(nn.Module):
        def forward(self, small, large):
            small = small * 2  # small: this thread now runs on one
            seen = object.__getattribute__(self, "helper")(small, large)  # called, not a submodule
            small = small * 2
            return [*seen, torch.get_num_threads()]

    outer = emulate(Outer(), "softex")
    object.__setattr__(outer, "helper", inner)
    seen = outer(SMALL, LARGE)
    assert seen[0::2] == [1, two_threads, 1]  # the inner pass's large operation on all threads, not one
    assert torch.get_num_threads() == two_threads


def test_without_the_thread_controls_a_pass_runs_on_torchs_threads(two_threads, monkeypatch):
    monkeypatch.delenv("EDGENUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_controls", lambda: (None, None))  # another OpenMP runtime, no MKL
    assert emulate(Probe(), "softex")(SMALL, LARGE) == [two_threads, None, two_threads, None]
