"""The compiled kernels. PE-order GEMM: bit for bit the spec's scalar reference and the eager loop, on
both paths (column blocks, single columns), full tiles and edges, with masked steps, subnormals and
non-finite activations; the plan by hand, the path each sparsity takes, a kept plan going stale. Lookups: every code,
strided inputs. UCLM softmax: the torch path on masked and empty rows (its scalar reference test is in
test_uclm.py, run on both paths). All: threads; fallback; build errors; cache."""

import ctypes
import dataclasses
import math
import os
import random
import shutil
import struct
import threading
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from numerics import kernels, uclm
from numerics.formats import lookup
from numerics.sparse_linear import grouped_sequential_gemm
from numerics.sparsity import FlexiSAGAConfig, prune, sparse_gemm
from numerics.uclm import HASTILY_UCLM
from tests.numerics import reference_sparsity as ref
from tests.numerics.kernel_modes import kernel_mode

# EDGENUM_KERNELS=eager runs the suite on the torch paths alone; these tests are of the compiled kernels
pytestmark = pytest.mark.skipif(os.environ.get("EDGENUM_KERNELS") == "eager", reason="the kernels are switched off")
COMPILER = shutil.which(os.environ.get("CC") or "cc")
needs_compiler = pytest.mark.skipif(COMPILER is None, reason="no C compiler here: the eager loop runs instead")


def bits(t: torch.Tensor) -> list:
    return [[struct.unpack("<I", struct.pack("<f", v))[0] for v in row] for row in t.tolist()]


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit, NaN payloads aside (IEEE 754 leaves them to the hardware)."""
    nan = a.isnan()
    return torch.equal(nan, b.isnan()) and torch.equal(a[~nan].view(torch.int32), b[~nan].view(torch.int32))


def eager(x, w, config):
    with kernel_mode("eager"):
        return sparse_gemm(x, w, config)


def on_path(x, w, fused, path):
    """The compiled PE-order GEMM of one (M, K) x (K, N) product on ``path``."""
    return kernels.pe_gemm(x[None], w[None], fused, path=path)[0]


PATHS = ("blocks", "columns")


@needs_compiler
def test_the_kernel_is_built_where_a_compiler_is():
    assert kernels.available()
    x, w = torch.ones(1, 4, 3), torch.ones(1, 3, 16)
    assert kernels.pe_gemm(x, w, fused=False).tolist() == [[[3.0] * 16] * 4]
    assert kernels.pe_gemm(x.double(), w.double(), fused=False) is None  # not the kernel's type


finite = st.one_of(
    st.floats(-(2.0**40), 2.0**40, width=32, allow_nan=False),
    st.floats(-(2.0**-120), 2.0**-120, width=32),  # subnormal products and sums
)
weights = st.one_of(finite, st.just(0.0), st.just(-0.0))  # +0 is not stored, -0 is


@st.composite
def gemm_case(draw):
    # up to 9 x 40 outputs: full 4 x 16 tiles and the edge tiles on both sides
    m, k, n = draw(st.integers(1, 9)), draw(st.integers(1, 5)), draw(st.integers(1, 40))
    x = draw(st.lists(st.lists(finite, min_size=k, max_size=k), min_size=m, max_size=m))
    w = draw(st.lists(st.lists(weights, min_size=n, max_size=n), min_size=k, max_size=k))
    return x, w


@pytest.mark.parametrize("kernel", [pytest.param("compiled", marks=needs_compiler), "eager"])
@settings(max_examples=30, deadline=None)
@given(case=gemm_case(), fused=st.booleans())
def test_gemm_is_the_scalar_reference(kernel, case, fused):
    x, w = case
    with kernel_mode(kernel):
        got = sparse_gemm(torch.tensor(x), torch.tensor(w), FlexiSAGAConfig(fused_mac=fused))
    assert bits(got) == bits(torch.tensor(ref.gemm(x, w, fused_mac=fused)))


@needs_compiler
@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=30, deadline=None)
@given(case=gemm_case(), fused=st.booleans())
def test_each_path_is_the_scalar_reference(path, case, fused):
    x, w = case
    got = on_path(torch.tensor(x), torch.tensor(w), fused, path)
    assert bits(got) == bits(torch.tensor(ref.gemm(x, w, fused_mac=fused)))


@needs_compiler
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fused", [False, True])
def test_compiled_gemm_is_the_scalar_reference_on_tiles_and_edges(fused, path):
    # 70 x 37 outputs: full 4- and 8-row tiles and edge rows, a full 64-row panel and one of 6 rows, two
    # full 16-column blocks and an edge of 5; magnitudes spread over 2^±20, so that another summation
    # order rounds differently
    g = torch.Generator().manual_seed(3)
    x = torch.randn(70, 7, generator=g) * 2.0 ** torch.randint(-20, 21, (70, 7), generator=g)
    w = torch.randn(7, 37, generator=g) * 2.0 ** torch.randint(-20, 21, (7, 37), generator=g)
    w[torch.rand(7, 37, generator=g) < 0.3] = 0.0
    got = on_path(x, w, fused, path)
    assert bits(got) == bits(torch.tensor(ref.gemm(x.tolist(), w.tolist(), fused_mac=fused)))
    assert not torch.equal(got, (x.double() @ w.double()).float())  # the order shows in the bits


@needs_compiler
@pytest.mark.parametrize("path", PATHS)
def test_a_fused_mac_keeps_negative_zero_past_a_masked_step_in_a_full_tile(path):
    # fma(-23·2^-149, 2^-6, +0) rounds to -0 in column 1; step 2 stores only column 0 of the block,
    # so column 1 must keep -0 (adding x·(+0) = +0 would give +0). 8 x 16: a vectorised tile (of 4 or 8
    # rows, as the CPU's registers allow).
    x = torch.tensor([[0.0, -3.2229864679470793e-44, 1.0]]).repeat(8, 1)
    w = torch.zeros(3, 16)
    w[1, 1], w[2, 0] = 2.0**-6, 1.0
    got = on_path(x, w, True, path)
    assert got[:, 1].tolist() == [-0.0] * 8 and all(math.copysign(1, v) < 0 for v in got[:, 1].tolist())
    assert got[:, 0].tolist() == [1.0] * 8


@needs_compiler
@pytest.mark.parametrize("path", PATHS)
def test_an_infinite_activation_never_meets_an_unstored_weight_in_a_full_tile(path):
    # 8 x 16: a vectorised tile. Step 1 stores only column 0 of the block, and x[:, 1] is inf: the other
    # columns must skip it (inf · (+0) would make them NaN), column 0 gets inf
    x = torch.ones(8, 2)
    x[:, 1] = math.inf
    w = torch.zeros(2, 16)
    w[0], w[1, 0] = 1.0, 1.0
    got = on_path(x, w, False, path)
    assert got[:, 0].tolist() == [math.inf] * 8 and got[:, 1:].tolist() == [[1.0] * 15] * 8


@needs_compiler
@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 70),
    st.integers(1, 90),
    st.integers(1, 70),
    st.sampled_from([0.0, 0.5, 0.9]),
    st.sampled_from(["row", "col", "channel"]),
    st.booleans(),
    st.booleans(),
    st.sampled_from([None, *PATHS]),
    st.integers(0, 2**31 - 1),
)
def test_compiled_gemm_is_the_eager_loop(m, k, n, sparsity, vector, fused, non_finite, path, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g) * 10.0 ** torch.randint(-30, 30, (m, k), generator=g)
    if non_finite:  # inf and NaN activations meet unstored weights only in the eager loop's masked steps
        x[torch.rand(m, k, generator=g) < 0.05] = math.inf
        x[torch.rand(m, k, generator=g) < 0.05] = math.nan
    w, _ = prune(torch.randn(k, n, generator=g), sparsity, tile=(4, 16), vector=vector)
    config = FlexiSAGAConfig(fused_mac=fused)
    got = sparse_gemm(x, w, config) if path is None else on_path(x, w, fused, path)
    assert same_bits(got, eager(x, w, config))


@needs_compiler
def test_the_plan_lists_each_blocks_steps_and_packs_its_weights():
    # K = 3, N = 20: block 0 holds columns 0-15, block 1 columns 16-19. Row 0 stores every weight, row 1
    # only column 3 (and -0 in column 17, which is stored), row 2 none. Block 0: steps 0 and ~1 (some of
    # its weights stored); block 1: steps 0 and ~1. 4 steps, 20 + 2 stored weights, 2 partial steps.
    w = torch.zeros(1, 3, 20)
    w[0, 0] = torch.arange(1.0, 21.0)
    w[0, 1, 3], w[0, 1, 17] = 5.0, -0.0
    plan = kernels.pe_plan(w)
    assert plan.counts.tolist() == [2, 2]
    assert plan.steps[0, :2].tolist() == [0, ~1] and plan.steps[1, :2].tolist() == [0, ~1]
    assert (plan.block_steps, plan.stored, plan.partial) == (4, 22, 2)
    assert plan.packed[0, 0].tolist() == list(range(1, 17))
    assert plan.packed[0, 1].tolist() == [0.0] * 3 + [5.0] + [0.0] * 12
    assert plan.packed[1, 0].tolist() == [17.0, 18.0, 19.0, 20.0] + [0.0] * 12  # zeros past N
    assert math.copysign(1, plan.packed[1, 1, 1].item()) < 0


@needs_compiler
def test_column_vectors_take_the_column_path_and_row_vectors_the_blocks():
    # 128 rows: 2 full panels. Row vectors prune whole steps of a block (the block path skips them); column
    # vectors at 0.5 leave every block nearly all its steps but each column half of them:
    # 128 · 16 · (K·N/16) block MACs against 1.6 · 128 · K·N/2 column MACs.
    g = torch.Generator().manual_seed(0)
    w = torch.randn(256, 256, generator=g)
    for vector, path in (("row", "blocks"), ("col", "columns")):
        pruned, _ = prune(w, 0.5, tile=(16, 16), vector=vector)
        assert kernels.pe_plan(pruned[None]).path(128) == path
    dense = kernels.pe_plan(w[None])
    assert dense.path(128) == "blocks" and dense.path(1) == "blocks"
    col, _ = prune(w, 0.5, tile=(16, 16), vector="col")
    assert kernels.pe_plan(col[None]).path(8) == "blocks"  # 8 rows would pad to a 64-row panel


@needs_compiler
def test_pe_gemm_refuses_a_plan_of_another_shape_and_an_unknown_path():
    x, w = torch.ones(1, 4, 3), torch.ones(1, 3, 16)
    with pytest.raises(ValueError, match="plan is for a weight of shape"):
        kernels.pe_gemm(x, w, False, plan=kernels.pe_plan(torch.ones(1, 3, 17)))
    with pytest.raises(ValueError, match="path must be 'blocks' or 'columns'"):
        kernels.pe_gemm(x, w, False, path="rows")


@needs_compiler
def test_sparse_gemm_keeps_the_plan_of_a_weight_that_comes_back_until_it_changes():
    g = torch.Generator().manual_seed(4)
    x, w = torch.randn(70, 48, generator=g), torch.randn(48, 40, generator=g)
    w, _ = prune(w, 0.5, tile=(16, 16), vector="col")
    config = FlexiSAGAConfig()
    for _ in range(3):  # the plan is kept from the second call on
        assert same_bits(sparse_gemm(x, w, config), eager(x, w, config))
    w[w != 0] *= -3.0  # same zeros, other values: a kept plan with the old ones would give other bits
    w[:16, 0] = 0.0  # and another step list
    assert same_bits(sparse_gemm(x, w, config), eager(x, w, config))


@needs_compiler
def test_grouped_gemm_is_the_eager_loop():
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(3, 21, 40, generator=g), torch.randn(3, 40, 18, generator=g)
    w[torch.rand(w.shape, generator=g) < 0.5] = 0.0
    for fused in (False, True):
        config = FlexiSAGAConfig(fused_mac=fused)
        got = grouped_sequential_gemm(x, w, config)
        with kernel_mode("eager"):
            want = grouped_sequential_gemm(x, w, config)
        assert same_bits(got, want)


@needs_compiler
def test_threads_do_not_change_the_bits():
    g = torch.Generator().manual_seed(2)
    x, w = torch.randn(130, 300, generator=g), torch.randn(300, 170, generator=g)
    assert 130 * 300 * 170 >= kernels.SMALL  # large enough to be shared among threads
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = sparse_gemm(x, w)
        torch.set_num_threads(3)
        three = sparse_gemm(x, w)
    finally:
        torch.set_num_threads(threads)
    assert same_bits(one, three) and same_bits(one, eager(x, w, FlexiSAGAConfig()))


@needs_compiler
def test_subnormals_survive_flush_denormal():
    # 2^-70 · 2^-70 = 2^-140, a subnormal product; the PEs keep it whatever torch's flush setting is
    x, w = torch.full((4, 2), 2.0**-70), torch.full((2, 16), 2.0**-70)
    flushing = torch.set_flush_denormal(True)
    try:
        got = sparse_gemm(x, w)
    finally:
        torch.set_flush_denormal(False)
    assert flushing, "this CPU cannot flush denormals"
    assert got.unique().tolist() == [2.0**-139]


def test_without_a_compiler_the_eager_loop_runs_after_one_warning(monkeypatch, tmp_path):
    monkeypatch.setattr(kernels, "_state", {})
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.delenv("EDGENUM_KERNELS", raising=False)
    x, w = torch.randn(5, 7), torch.randn(7, 20)
    with pytest.warns(RuntimeWarning, match="CC to a C compiler"):
        got = sparse_gemm(x, w)
    assert torch.equal(got, eager(x, w, FlexiSAGAConfig()))
    assert not kernels.available()
    monkeypatch.setattr(kernels, "_state", {})
    monkeypatch.setenv("EDGENUM_KERNELS", "compiled")
    with pytest.raises(RuntimeError, match="EDGENUM_KERNELS=compiled"):
        sparse_gemm(x, w)


def test_a_failing_compiler_is_reported(monkeypatch, tmp_path):
    fake = tmp_path / "cc"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --version ] && exit 0\necho 'error: broken' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(kernels, "_state", {})
    monkeypatch.setenv("CC", str(fake))
    monkeypatch.setenv("EDGENUM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EDGENUM_KERNELS", "compiled")
    with pytest.raises(RuntimeError, match="error: broken"):
        kernels.available()
    assert list((tmp_path / "cache").iterdir()) == []  # no half-written library left behind


def test_mode_rejects_unknown_values(monkeypatch):
    monkeypatch.setenv("EDGENUM_KERNELS", "fast")
    with pytest.raises(ValueError, match="EDGENUM_KERNELS must be one of"):
        sparse_gemm(torch.ones(2, 2), torch.ones(2, 2))


@needs_compiler
def test_a_built_kernel_is_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGENUM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(kernels, "_state", {})
    assert kernels.available()
    (built,) = tmp_path.iterdir()
    stamp = built.stat().st_mtime_ns
    monkeypatch.setattr(kernels, "_state", {})
    assert kernels.available()
    assert list(tmp_path.iterdir()) == [built] and built.stat().st_mtime_ns == stamp


def test_an_unwritable_cache_falls_back_to_the_temporary_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("EDGENUM_CACHE_DIR", raising=False)
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the cache folder's parent should be
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    monkeypatch.setattr(kernels.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    assert kernels.cache_dir().parent == tmp_path / "tmp"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert kernels.cache_dir() == tmp_path / "cache" / "edgenum"


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_compiled_lookup_is_the_torch_gather_on_every_code(dtype):
    table = torch.randn(65536, generator=torch.Generator().manual_seed(4)).to(dtype)
    codes = torch.arange(65536, dtype=torch.int32).flip(0).to(torch.uint16)  # every code, 0xFFFF first
    codes = torch.cat([codes, codes[:15]])  # and a tail shorter than the kernel's blocks of 16
    got = kernels.lookup16(table, codes)
    want = table[codes.to(torch.int64)]
    as_int = torch.int16 if dtype == torch.bfloat16 else torch.int32
    assert got.dtype == dtype and torch.equal(got.view(as_int), want.view(as_int))


@needs_compiler
def test_compiled_lookup_keeps_shapes_and_reads_strided_codes():
    table = torch.arange(65536, dtype=torch.int32).to(torch.float32)  # table[c] = c: the result shows each code
    x = torch.randn(350, 3000, generator=torch.Generator().manual_seed(5)).to(torch.bfloat16)
    assert x.numel() >= kernels.SMALL_ELEMENTS  # large enough to be shared among threads
    for view in (x, x.T, x[:, ::7], x[3, 5], x[:0]):
        got = lookup(table, view)
        assert got.shape == view.shape
        assert torch.equal(got, view.contiguous().view(torch.uint16).to(torch.int32).to(torch.float32))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = lookup(table, x)
        torch.set_num_threads(3)
        assert torch.equal(lookup(table, x), one)
    finally:
        torch.set_num_threads(threads)


def test_lookup16_leaves_other_kinds_to_torch():
    codes = torch.zeros(4, dtype=torch.uint16)
    assert kernels.lookup16(torch.zeros(65536, dtype=torch.float64), codes) is None  # 8-byte entries
    assert kernels.lookup16(torch.zeros(65536), codes.view(torch.int16)) is None  # signed codes


@needs_compiler
@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 300),
    st.sampled_from([16, 24, 32, 40]),
    st.sampled_from(["half_up", "toward_zero"]),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_compiled_uclm_softmax_is_the_torch_path(length, exp_bits, rounding, signed, seed):
    config = dataclasses.replace(HASTILY_UCLM, exp_bits=exp_bits, sum_bits=56, div_rounding=rounding, out_signed=signed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 3, length, generator=g, dtype=torch.float64) * 20
    x[torch.rand(x.shape, generator=g) < 0.3] = -math.inf  # masked logits
    x[1, 2] = -math.inf  # a row with no finite logit
    for dim in (-1, 0):
        with kernel_mode("eager"):
            want = uclm.softmax(x, dim, config=config, return_codes=True)
        assert torch.equal(uclm.softmax(x, dim, config=config, return_codes=True), want)
    assert torch.equal(uclm.softmax(x.float(), config=config), uclm.softmax(x.float().double(), config=config))


def test_compiled_uclm_softmax_leaves_linear_and_wide_configs_to_torch():
    x, lut = torch.zeros(2, 3, dtype=torch.float64), uclm.lut_table()
    linear = dataclasses.replace(HASTILY_UCLM, er_mode="linear")
    wide = dataclasses.replace(HASTILY_UCLM, exp_bits=52, sum_bits=62, out_bits=16)  # 2·Q·e could reach 2**69
    assert kernels.uclm_softmax_codes(x, 1.0, lut, linear) is None
    assert kernels.uclm_softmax_codes(x, 1.0, lut, wide) is None
    assert kernels.uclm_softmax_codes(x.float(), 1.0, lut, HASTILY_UCLM) is None


@pytest.mark.parametrize("rounding", ["half_up", "toward_zero"])
def test_uclm_softmax_of_equal_logits_divides_exactly(rounding):
    # n equal logits: every e = S/n, so the code is floor((2Q + n) / 2n) (half up) or floor(Q / n), an exact
    # integer quotient for many n, where a division rounded the other way would be one code low
    config = dataclasses.replace(HASTILY_UCLM, div_rounding=rounding)
    q = config.out_max
    for n in range(1, 300):
        codes = uclm.softmax(torch.full((1, n), 0.5), config=config, return_codes=True)
        want = (2 * q + n) // (2 * n) if rounding == "half_up" else q // n
        assert codes.unique().tolist() == [want], n


@needs_compiler
def test_the_softmax_division_is_exact_next_to_every_multiple():
    # num = k·den - 1, k·den, k·den + 1: with den of up to 45 bits a float64 quotient truncates one too
    # high at most k·den - 1 and one too low at many k·den
    rng = random.Random(6)
    cases = [(rng.randrange(1, 2**45), rng.randrange(2**16)) for _ in range(3000)]
    nums = [max(0, k * den + offset) for den, k in cases for offset in (-1, 0, 1)]
    dens = [den for den, _ in cases for _ in range(3)]
    num, den = torch.tensor(nums), torch.tensor(dens)
    out = torch.empty_like(num)
    kernels._load().edgenum_small_quotients(len(nums), num.data_ptr(), den.data_ptr(), out.data_ptr())
    assert out.tolist() == [a // b for a, b in zip(nums, dens)]


@needs_compiler
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
def test_a_forked_child_gets_its_own_helper_threads():
    x, w = torch.randn(130, 300), torch.randn(300, 170)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        want = sparse_gemm(x, w)  # the parent's helper threads exist from here on
    finally:
        torch.set_num_threads(threads)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child would wait forever on helpers that fork() did not copy
        try:
            torch.set_num_threads(2)  # a forked child starts with one
            os.write(write, b"1" if torch.equal(sparse_gemm(x, w), want) else b"0")
        finally:
            os._exit(0)
    os.close(write)
    for _ in range(300):  # up to 30 s; a deadlocked child is killed and the test fails
        if os.waitpid(child, os.WNOHANG)[0]:
            break
        time.sleep(0.1)
    else:
        os.kill(child, 9)
        os.waitpid(child, 0)
        pytest.fail("the forked child hung on helper threads it does not have")
    assert os.read(read, 1) == b"1"


def test_a_helper_that_starts_late_holds_nothing_up():
    # every pool thread is held by another task, as a helper on a busy core is held by the scheduler:
    # the call must do all of its pieces on the calling thread and return without waiting for it
    pool = kernels._pool()
    release = threading.Event()
    blockers = [pool.submit(release.wait) for _ in range(pool._max_workers)]
    codes = torch.randint(0, 65536, (1 << 20,), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
    codes = codes.to(torch.uint16)
    table = torch.randint(-(2**31), 2**31 - 1, (65536,), generator=torch.Generator().manual_seed(1), dtype=torch.int32)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    done = []
    try:
        caller = threading.Thread(target=lambda: done.append(kernels.lookup16(table, codes)))
        caller.start()
        caller.join(30)
        assert done, "the call waited for a helper thread that never started"
    finally:
        release.set()
        torch.set_num_threads(threads)
        for blocker in blockers:
            blocker.result()
    assert torch.equal(done[0], table[codes.to(torch.int64)])


def test_the_call_returns_only_when_every_piece_is_done():
    # with helpers, the calling thread may run out of pieces while a helper still writes its last one:
    # the result must not be read before that (two tables in turn: memory a late write has not reached
    # yet holds the other table's values)
    codes = torch.randint(0, 65536, (1 << 20,), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
    codes = codes.to(torch.uint16)
    tables = [torch.arange(1, 65537, dtype=torch.int32), -torch.arange(1, 65537, dtype=torch.int32)]
    wants = [table[codes.to(torch.int64)] for table in tables]
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        for i in range(60):
            assert torch.equal(kernels.lookup16(tables[i % 2], codes), wants[i % 2])
    finally:
        torch.set_num_threads(threads)


def test_pieces_are_counted_done_as_they_are_claimed_past():
    # 10 items in pieces of 3: handed out at 0, 3, 6, 9 (the last piece holds 1), then a claim at 12
    # finds none; each claim reports the piece before it done: 3 + 3 + 3 + 1 = 10 of a total of 10
    counter = torch.zeros(3, dtype=torch.int64)
    kernels._library().edgenum_claim_all(10, 3, counter.data_ptr())
    assert counter.tolist() == [15, 10, 10]
    kernels._library().edgenum_wait(counter.data_ptr())  # all done: returns at once
    counter[1] = 9  # one item still being worked on: the wait holds until it is reported
    waiter = threading.Thread(target=kernels._library().edgenum_wait, args=(counter.data_ptr(),))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()
    counter[1] = 10
    waiter.join(10)
    assert not waiter.is_alive()


@needs_compiler
def test_with_helpers_the_call_waits_for_a_piece_still_being_worked_on():
    # the calling thread finds nothing left while a helper still works on its piece (2 pieces handed out,
    # 1 done): the call must wait until the helper reports it done, and must not wait without helpers
    finished = []

    def worker(address):
        if threading.current_thread() is not threading.main_thread():
            return  # a pool helper: finds nothing
        count = [ctypes.c_int64.from_address(address + 8 * i) for i in range(3)]
        if count[2].value:
            return  # asked again after the first call: nothing left
        count[0].value, count[1].value, count[2].value = 2, 1, 2

        def helper_finishes():
            time.sleep(0.3)
            finished.append(True)
            count[1].value = 2

        threading.Thread(target=helper_finishes).start()

    assert kernels.available()  # the wait is the compiled one
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        kernels._run(worker, (), work=1, small=1)
        assert finished, "the call returned while a piece was still being worked on"
    finally:
        torch.set_num_threads(threads)


def test_an_interrupted_call_finishes_every_piece_before_the_interrupt_goes_on(monkeypatch):
    # Ctrl-C before the calling thread took its share: helpers may hold pieces of this call's tensors,
    # so the caller claims the rest itself and waits, then lets the interrupt go on
    library = kernels._library()
    calls, seen, real_wait = [], [], library.edgenum_wait

    def interrupted_first(*args):
        calls.append(args)
        if len(calls) == 1:
            raise KeyboardInterrupt
        library.edgenum_claim_all(*args)

    def wait(address):
        seen.append([ctypes.c_int64.from_address(address + 8 * i).value for i in range(3)])
        real_wait(address)

    monkeypatch.setattr(library, "edgenum_wait", wait)
    with pytest.raises(KeyboardInterrupt):
        kernels._run(interrupted_first, (10, 3), work=0, small=1)
    assert len(calls) == 2 and seen == [[15, 10, 10]]  # 10 items in pieces of 3, all done (see above)


@needs_compiler
def test_the_denominator_scan_is_the_beat_by_beat_loop():
    # SoftEx's one-accumulator denominator: d = fl(d·f) then fl(d + s), per beat, against torch's ops one by one
    # (each rounds once), over values where a fused or reordered step would differ: subnormals, ±0, inf, NaN
    g = torch.Generator().manual_seed(6)
    rows, beats = 300, 37
    f = torch.rand(rows, beats, generator=g) * 2.0 ** torch.randint(-140, 10, (rows, beats), generator=g)
    s = torch.randn(rows, beats, generator=g) * 2.0 ** torch.randint(-140, 10, (rows, beats), generator=g)
    s[torch.rand(rows, beats, generator=g) < 0.02] = math.inf
    f[torch.rand(rows, beats, generator=g) < 0.02] = math.nan
    f[torch.rand(rows, beats, generator=g) < 0.05] = 0.0
    d0 = torch.randn(rows, generator=g)
    want = d0.clone()
    for k in range(beats):
        want = want * f[:, k]
        want = want + s[:, k]
    assert same_bits(kernels.mul_add_scan(d0, f, s), want)
    assert torch.equal(kernels.mul_add_scan(d0, f[:, :0], s[:, :0]), d0)  # no beats: D unchanged
    assert kernels.mul_add_scan(d0.double(), f.double(), s.double()) is None
