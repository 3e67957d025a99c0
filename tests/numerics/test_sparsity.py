"""FlexiSAGA numerics (spec docs/hardware/flexisaga.md §2-3): config, pruning, bitmap format, GEMM."""

import dataclasses
import math
import struct
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from numerics.formats import fma_f32
from numerics.sparsity import (
    FLEXISAGA_16X16,
    BitmapWeight,
    ChannelBitmapWeight,
    FlexiSAGAConfig,
    decode_bitmap,
    encode_bitmap,
    global_allocation,
    metadata_bits,
    prune,
    prune_layer,
    pruned_count,
    sparse_gemm,
    vector_scores,
)
from tests.numerics import reference_sparsity as ref

FEW = settings(max_examples=40, deadline=None)
shapes = st.tuples(st.integers(1, 20), st.integers(1, 20))
tiles = st.tuples(st.integers(1, 7), st.integers(1, 7))
sparsities = st.sampled_from([0.0, 0.1, 0.25, 0.29, 0.5, 0.6, 0.75, 0.9, 0.999])
vectors = st.sampled_from(["row", "col", "channel"])
seeds = st.integers(0, 2**31 - 1)
finite_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


def bits(t: torch.Tensor) -> torch.Tensor:
    """Bit patterns, so that -0.0 and NaN payloads compare exactly."""
    return t.view(torch.int32) if t.dtype == torch.float32 else t


def integer_weight(shape, seed, low=-3, high=4):
    """Small integer values: float64 scores are exact, so ties are real ties."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, shape, generator=g).float()


def n_vectors(shape, tile, vector):
    k, n = shape
    r, c = tile
    return {"row": k * math.ceil(n / c), "col": math.ceil(k / r) * n, "channel": n}[vector]


# --------------------------------------------------------------------------- config


def test_config_defaults_follow_spec_table():
    c = FLEXISAGA_16X16
    assert (c.rows, c.cols, c.dtype, c.fused_mac, c.accumulation) == (16, 16, "float32", False, "sequential")
    assert (c.vector, c.sparsity, c.criterion, c.word_bits, c.freq_hz) == ("row", 0.5, "l2", 32, 1e9)
    assert c.tile == (16, 16)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.rows = 8


@pytest.mark.parametrize(
    "field, value",
    [
        ("rows", 0),
        ("cols", -1),
        ("rows", 2.0),
        ("cols", True),
        ("dtype", "float16"),
        ("fused_mac", 1),
        ("accumulation", "pairwise"),
        ("vector", "diag"),
        ("sparsity", 1.0),
        ("sparsity", -0.1),
        ("sparsity", float("nan")),
        ("criterion", "l0"),
        ("word_bits", 0),
        ("freq_hz", 0.0),
        ("freq_hz", float("inf")),
        ("auto_tokens", 0),
    ],
)
def test_config_rejects_invalid_field_naming_it(field, value):
    with pytest.raises(ValueError, match=field):
        FlexiSAGAConfig(**{field: value})


# --------------------------------------------------------------------------- pruning


@pytest.mark.parametrize(
    "s, v, want", [(0.29, 100, 29), (0.5, 7, 3), (0.0, 10, 0), (0.75, 4, 3), (0.999, 10, 9), (0.7, 10, 7), (0.1, 3, 0)]
)
def test_pruned_count_is_floor_of_decimal_product(s, v, want):
    assert pruned_count(s, v) == want


def test_ties_go_to_lowest_flat_index_row():
    # 4x4 of ones, tile 2x2, rows: vectors (k, j) flat k*2 + j, all score sqrt(2).
    # 8 vectors, prune 4 = flat 0..3 = rows 0 and 1 entirely.
    w = torch.ones(4, 4)
    pruned, mask = prune(w, 0.5, tile=(2, 2), vector="row")
    want = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask, want)
    assert torch.equal(pruned, want.float())


def test_ties_go_to_lowest_flat_index_col_and_edge_vectors_are_shorter():
    # 3x2 of ones, tile 2x2, columns: flat p*N + n: (rows 0-1, n0), (rows 0-1, n1), (row 2, n0),
    # (row 2, n1). The edge vectors (row 2) have norm 1 < sqrt(2): they go first.
    w = torch.ones(3, 2)
    _, mask = prune(w, 0.5, tile=(2, 2), vector="col")
    assert torch.equal(mask, torch.tensor([[1, 1], [1, 1], [0, 0]], dtype=torch.bool))
    _, mask = prune(w, 0.75, tile=(2, 2), vector="col")
    assert torch.equal(mask, torch.tensor([[0, 1], [0, 1], [0, 0]], dtype=torch.bool))


def test_l1_and_l2_rank_differently():
    # channel vectors [3, 0] (l1 3, l2 3) and [2, 2] (l1 4, l2 2.83)
    w = torch.tensor([[3.0, 2.0], [0.0, 2.0]])
    _, mask_l2 = prune(w, 0.5, vector="channel", criterion="l2")
    _, mask_l1 = prune(w, 0.5, vector="channel", criterion="l1")
    assert mask_l2[:, 0].all() and not mask_l2[:, 1].any()
    assert mask_l1[:, 1].all() and not mask_l1[:, 0].any()
    assert torch.equal(
        vector_scores(w, vector="channel", criterion="l1"), torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    )


@FEW
@given(shapes, tiles, sparsities, vectors, st.sampled_from(["l1", "l2"]), seeds)
def test_prune_matches_reference_with_ties(shape, tile, s, vector, criterion, seed):
    w = integer_weight(shape, seed)
    pruned, mask = prune(w, s, tile=tile, vector=vector, criterion=criterion)
    ref_pruned, ref_keep, _, ref_ids = ref.prune(w.tolist(), s, *tile, vector, criterion)
    assert torch.equal(mask, torch.tensor(ref_keep))
    assert torch.equal(bits(pruned), bits(torch.tensor(ref_pruned)))
    assert len(ref_ids) == pruned_count(s, n_vectors(shape, tile, vector))


@FEW
@given(shapes, tiles, sparsities, vectors, seeds)
def test_exact_vector_sparsity_and_no_kept_vector_scores_below_a_pruned_one(shape, tile, s, vector, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g) * torch.rand(shape, generator=g)
    result = prune_layer(w, s, tile=tile, vector=vector)
    v_total = n_vectors(shape, tile, vector)
    assert result.vectors_total == v_total
    assert result.vectors_pruned == math.floor(np.float64(s) * v_total + 1e-9)
    # Independent count from the mask: the vectors that are all pruned, and none partly pruned.
    cells = ref.vectors(*shape, *tile, vector)
    kept = [[bool(result.mask[k, n]) for k, n in c] for c in cells]
    assert all(all(v) or not any(v) for v in kept)
    assert sum(not any(v) for v in kept) == result.vectors_pruned
    # Spec §3.7 with the reference's correctly rounded scores (torch sums in another order).
    scores = [ref.score(w.tolist(), c, "l2") for c in cells]
    kept_scores = [sc for sc, v in zip(scores, kept) if v[0]]
    pruned_scores = [sc for sc, v in zip(scores, kept) if not v[0]]
    if kept_scores and pruned_scores:
        assert min(kept_scores) >= max(pruned_scores) * (1 - 1e-12)
    # pruned elements are +0, kept ones untouched
    assert (bits(result.weight)[~result.mask] == 0).all()
    assert torch.equal(bits(result.weight)[result.mask], bits(w)[result.mask])


@FEW
@given(shapes, tiles, vectors, seeds)
def test_prune_at_zero_changes_nothing_bit_for_bit(shape, tile, vector, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    w[0, 0] = -0.0
    before = w.clone()
    pruned, mask = prune(w, 0.0, tile=tile, vector=vector)
    assert mask.all()
    assert torch.equal(bits(pruned), bits(before))
    assert torch.equal(bits(w), bits(before))


def test_prune_is_deterministic_and_leaves_input_alone():
    w = integer_weight((33, 47), seed=1)
    before = w.clone()
    a = prune(w, 0.6, tile=(8, 16), vector="col")
    b = prune(w.clone(), 0.6, tile=(8, 16), vector="col")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(w, before)


def test_prune_int32_weight():
    w = torch.tensor([[5, -1, 0, 7], [2, 2, -9, 1]], dtype=torch.int32)
    pruned, mask = prune(w, 0.5, tile=(1, 2), vector="row")
    # row vectors: [5,-1] 5.10, [0,7] 7, [2,2] 2.83, [-9,1] 9.06 -> prune [2,2] and [5,-1]
    assert pruned.dtype == torch.int32
    assert torch.equal(pruned, torch.tensor([[0, 0, 0, 7], [0, 0, -9, 1]], dtype=torch.int32))


def test_auto_keeps_orientation_with_fewer_cycles_and_row_on_tie():
    w = integer_weight((24, 24), seed=3, low=1, high=9)
    calls = []

    def zero_cols_win(pruned, m, rows, cols):  # fewer cycles the more all-zero R x 1 vectors
        calls.append((m, rows, cols))
        return -int((pruned.reshape(3, 8, 24) == 0).all(1).sum())

    result = prune_layer(w, 0.5, tile=(8, 8), vector="auto", cycles=zero_cols_win, auto_tokens=64)
    assert result.vector == "col"
    assert torch.equal(result.mask, prune(w, 0.5, tile=(8, 8), vector="col")[1])
    assert calls == [(64, 8, 8), (64, 8, 8)]
    tie = prune_layer(w, 0.5, tile=(8, 8), vector="auto", cycles=lambda *a: 7)
    assert tie.vector == "row"
    assert torch.equal(tie.mask, prune(w, 0.5, tile=(8, 8), vector="row")[1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sparsity=1.0), "sparsity"),
        (dict(sparsity=-0.01), "sparsity"),
        (dict(sparsity=float("nan")), "sparsity"),
        (dict(sparsity=True), "sparsity"),
        (dict(sparsity="0.5"), "sparsity"),
        (dict(tile=(0, 4)), "tile"),
        (dict(tile=(4, -2)), "tile"),
        (dict(tile=(4,)), "tile"),
        (dict(tile=4), "tile"),
        (dict(tile=(2.5, 2)), "tile"),
        (dict(vector="diag"), "vector"),
        (dict(criterion="max"), "criterion"),
        (dict(vector="auto"), "cycles"),
        (dict(auto_tokens=0), "auto_tokens"),
    ],
)
def test_prune_rejects_invalid_options(kwargs, match):
    args = dict(sparsity=0.5, tile=(4, 4))
    args.update(kwargs)
    w = torch.randn(8, 8)
    before = w.clone()
    with pytest.raises(ValueError, match=match):
        prune(w, args.pop("sparsity"), **args)
    assert torch.equal(w, before)


@pytest.mark.parametrize(
    "weight, error",
    [
        (torch.randn(8), ValueError),
        (torch.randn(2, 3, 4), ValueError),
        (torch.randn(0, 4), ValueError),
        (torch.tensor([[1.0, float("nan")]]), ValueError),
        (torch.tensor([[1.0, float("inf")]]), ValueError),
        (torch.ones(2, 2, dtype=torch.bool), TypeError),
        ([[1.0, 2.0]], TypeError),
    ],
)
def test_prune_rejects_invalid_weight(weight, error):
    with pytest.raises(error, match="weight"):
        prune(weight, 0.5)


# --------------------------------------------------------------------------- bitmap format


def random_sparse(shape, seed, dtype=torch.float32):
    """Values with ~half zeros, some -0.0 (stored: only +0 is injected by the DecU)."""
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.int32:
        w = torch.randint(-(2**31), 2**31 - 1, shape, generator=g, dtype=torch.int32)
    else:
        w = torch.randn(shape, generator=g)
        w[torch.rand(shape, generator=g) < 0.1] = -0.0
    return torch.where(torch.rand(shape, generator=g) < 0.5, w, torch.zeros((), dtype=dtype))


@FEW
@given(shapes, tiles, sparsities, vectors, seeds)
def test_bitmap_round_trip_of_pruned_weights(shape, tile, s, vector, seed):
    g = torch.Generator().manual_seed(seed)
    pruned, _ = prune(torch.randn(shape, generator=g), s, tile=tile, vector=vector)
    encoded = encode_bitmap(pruned, tile, vector=vector)
    assert torch.equal(bits(decode_bitmap(encoded)), bits(pruned))


@FEW
@given(shapes, tiles, st.sampled_from(["row", "col"]), seeds, st.sampled_from([torch.float32, torch.int32]))
def test_bitmap_streams_and_counts_match_reference(shape, tile, vector, seed, dtype):
    w = random_sparse(shape, seed, dtype)
    e = encode_bitmap(w, tile, vector=vector)
    vb, eb, values, tile_meta, tile_nnz = ref.encode(w.tolist(), *tile, vector)
    assert e.vector_bits.tolist() == vb
    assert e.element_bits.tolist() == eb
    want_values = torch.tensor(values, dtype=dtype)
    assert torch.equal(bits(e.values), bits(want_values))
    assert e.tile_metadata_bits().tolist() == tile_meta
    assert metadata_bits(e) == e.metadata_bits == sum(tile_meta)
    assert e.nnz == sum(tile_nnz)
    assert e.storage_bits == 32 * sum(tile_nnz) + sum(tile_meta)
    assert e.decu_words == sum(n + -(-m // 32) for n, m in zip(tile_nnz, tile_meta))
    assert e.injected_zeros == shape[0] * shape[1] - sum(tile_nnz)
    assert e.compression_ratio == 32 * shape[0] * shape[1] / e.storage_bits
    assert torch.equal(bits(decode_bitmap(e)), bits(w))


@pytest.mark.parametrize("vector", ["row", "col"])
def test_metadata_of_all_zero_and_dense_tiles(vector):
    # spec §3.5 with R = C = 16: all-zero tile costs V = 16 bits; dense tile 32*256 + 16 + 16*16
    zero = encode_bitmap(torch.zeros(16, 16), (16, 16), vector=vector)
    assert (zero.metadata_bits, zero.storage_bits, zero.nnz, zero.decu_words) == (16, 16, 0, 1)
    assert zero.injected_zeros == 256
    dense = encode_bitmap(torch.full((16, 16), 0.5), (16, 16), vector=vector)
    assert dense.storage_bits == 32 * 256 + 16 + 16 * 16 == 8464
    assert dense.decu_words == 256 + math.ceil(272 / 32)
    assert dense.compression_ratio == 8192 / 8464
    # 32 x 48 in 16 x 16 tiles: 6 tiles; one non-zero row-vector of 16 in the first tile
    w = torch.zeros(32, 48)
    if vector == "row":
        w[3, 0:16] = 1.0
    else:
        w[0:16, 3] = 1.0
    e = encode_bitmap(w, (16, 16), vector=vector)
    assert e.tile_metadata_bits().tolist() == [32, 16, 16, 16, 16, 16]
    assert e.nnz == 16 and e.decu_words == 16 + 6


def test_edge_tiles_count_real_extents():
    # 5 x 3 in 4 x 2 tiles, row mode: tiles (4x2, 4x1, 1x2, 1x1) -> V = 4, 4, 1, 1; L_v = 2, 1, 2, 1
    w = torch.arange(1, 16, dtype=torch.float32).reshape(5, 3)
    e = encode_bitmap(w, (4, 2), vector="row")
    assert e.tile_metadata_bits().tolist() == [4 + 8, 4 + 4, 1 + 2, 1 + 1]
    e = encode_bitmap(w, (4, 2), vector="col")  # V = 2, 1, 2, 1; L_v = 4, 4, 1, 1
    assert e.tile_metadata_bits().tolist() == [2 + 8, 1 + 4, 2 + 2, 1 + 1]


def test_channel_format_lists_channels_and_packs_them():
    w = torch.zeros(4, 10)
    w[:, 2] = 1.0
    w[1, 7] = -3.0
    e = encode_bitmap(w, (4, 4), vector="channel")
    assert isinstance(e, ChannelBitmapWeight)
    assert e.channels.tolist() == [2, 7]
    assert e.index_bits == 4  # ceil(log2 10)
    # packed (4, 2) in one 4x4 tile, row mode: 4 vector bits + 4 non-zero rows * 2 element bits
    assert e.packed.shape == (4, 2)
    assert e.metadata_bits == 2 * 4 + 4 + 4 * 2
    assert e.decu_words == (5 + 1) + 1
    assert torch.equal(decode_bitmap(e), w)
    empty = encode_bitmap(torch.zeros(3, 5, dtype=torch.int32), (2, 2), vector="channel")
    assert (empty.metadata_bits, empty.nnz, empty.decu_words) == (0, 0, 0)
    assert torch.equal(decode_bitmap(empty), torch.zeros(3, 5, dtype=torch.int32))


def test_bitmap_rejects_invalid_input():
    with pytest.raises(ValueError, match="tile"):
        encode_bitmap(torch.ones(4, 4), (0, 4))
    with pytest.raises(ValueError, match="weight"):
        encode_bitmap(torch.ones(4), (2, 2))
    with pytest.raises(ValueError, match="vector"):
        encode_bitmap(torch.ones(4, 4), (2, 2), vector="auto")
    with pytest.raises(TypeError, match="encoded"):
        decode_bitmap(torch.ones(4, 4))
    with pytest.raises(TypeError, match="encoded"):
        metadata_bits(torch.ones(4, 4))
    good = encode_bitmap(torch.eye(4), (2, 2))
    with pytest.raises(ValueError, match="element_bits"):
        BitmapWeight(good.shape, good.tile, "row", good.vector_bits, good.element_bits[:-1], good.values)
    with pytest.raises(ValueError, match="values"):
        BitmapWeight(good.shape, good.tile, "row", good.vector_bits, good.element_bits, good.values[:-1])
    with pytest.raises(ValueError, match="vector_bits"):
        BitmapWeight(good.shape, good.tile, "row", good.vector_bits[1:], good.element_bits, good.values)


# --------------------------------------------------------------------------- GEMM


def f32_bits(v: float) -> int:
    return struct.unpack("<I", struct.pack("<f", v))[0]


@settings(max_examples=300, deadline=None)
@given(finite_f32, finite_f32, finite_f32)
def test_fused_mac_rounds_once_like_exact_arithmetic(acc, x, w):
    got = fma_f32(torch.tensor([x]), torch.tensor([w]), torch.tensor([acc]))
    assert f32_bits(got.item()) == f32_bits(ref.fma_f32(acc, x, w))


@pytest.mark.parametrize("j", range(12, 24))
@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("acc_odd", [0, 1])
def test_fused_mac_is_not_fooled_by_double_rounding(j, sign, acc_odd):
    # acc + x·w = acc + 2^-24 - 2^-(24+2j): just below a float32 midpoint; for j >= 15 within
    # half a float64 ulp of it, so a plain float64 sum would land on the midpoint (ties to even).
    acc = sign * (1 + acc_odd * 2.0**-23)
    x, w = sign * (1 + 2.0**-j) * 2.0**-24, 1 - 2.0**-j
    got = fma_f32(torch.tensor([x]), torch.tensor([w]), torch.tensor([acc])).item()
    assert got == acc  # below the midpoint: rounds back to acc, odd or even
    assert got == ref.fma_f32(acc, x, w)


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_reference_float32_rounding_against_numpy(d):
    with np.errstate(over="ignore"):  # doubles beyond float32 round to inf in both
        want = float(np.float32(d))
    assert f32_bits(ref.round_f32(Fraction(d), negative_zero=math.copysign(1, d) < 0)) == f32_bits(want)


small = st.floats(min_value=-(2.0**60), max_value=2.0**60, width=32, allow_nan=False)  # no overflow


@st.composite
def gemm_case(draw):
    m, k, n = draw(st.integers(1, 4)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    x = draw(st.lists(st.lists(small, min_size=k, max_size=k), min_size=m, max_size=m))
    w = draw(st.lists(st.lists(st.one_of(small, st.just(0.0)), min_size=n, max_size=n), min_size=k, max_size=k))
    return x, w


@settings(max_examples=60, deadline=None)
@given(gemm_case(), st.booleans())
def test_sequential_gemm_matches_reference_bit_for_bit(case, fused):
    x, w = case
    got = sparse_gemm(torch.tensor(x), torch.tensor(w), FlexiSAGAConfig(fused_mac=fused))
    want = ref.gemm(x, w, fused_mac=fused)
    assert [[f32_bits(v) for v in row] for row in got.tolist()] == [[f32_bits(v) for v in row] for row in want]


def test_a_fused_mac_keeps_a_negative_zero_past_a_skipped_weight():
    # fma(-23·2^-149, 2^-6, +0) = -23·2^-155 rounds to -0; the next step's weight in that column is not
    # stored, so acc stays -0 (adding x·(+0) = +0 would give +0)
    x = [[0.0, -3.2229864679470793e-44, 0.0]]
    w = [[0.0, 0.0, 0.0, 0.0], [0.0, 0.015625, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
    got = sparse_gemm(torch.tensor(x), torch.tensor(w), FlexiSAGAConfig(fused_mac=True))
    assert [f32_bits(v) for v in got[0].tolist()] == [0, 0x8000_0000, 0, 0]
    assert [f32_bits(v) for v in ref.gemm(x, w, fused_mac=True)[0]] == [0, 0x8000_0000, 0, 0]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 4), seeds)
def test_int32_gemm_wraps_like_reference(m, k, n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-(2**31), 2**31 - 1, (m, k), generator=g, dtype=torch.int32)
    w = random_sparse((k, n), seed, torch.int32)
    for acc in ("sequential", "fast"):
        got = sparse_gemm(x, w, FlexiSAGAConfig(dtype="int32", accumulation=acc))
        assert got.dtype == torch.int32
        assert got.tolist() == ref.gemm(x.tolist(), w.tolist(), dtype="int32")


@FEW
@given(st.integers(1, 12), shapes, tiles, sparsities, st.sampled_from(["row", "col"]), seeds)
def test_skipping_equals_dense_sequential_with_zeros(m, shape, tile, s, vector, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, shape[0], generator=g) * 10 ** torch.randint(-3, 4, (m, shape[0]), generator=g)
    pruned, _ = prune(torch.randn(shape, generator=g), s, tile=tile, vector=vector)
    acc = torch.zeros(m, shape[1])
    for k in range(shape[0]):  # dense: every step, zeros included, no skipping
        acc = acc + x[:, k, None] * pruned[k]
    encoded = encode_bitmap(pruned, tile, vector=vector)
    assert torch.equal(bits(sparse_gemm(x, pruned)), bits(acc))
    assert torch.equal(bits(sparse_gemm(x, encoded)), bits(acc))
    # fast path and float64 within the float32 summation bound (both within gamma_K of exact)
    exact = x.double() @ pruned.double()
    bound = 2 * shape[0] * 2.0**-24 * (x.abs().double() @ pruned.abs().double()) + 1e-30
    fast = sparse_gemm(x, pruned, FlexiSAGAConfig(accumulation="fast"))
    assert ((fast.double() - acc.double()).abs() <= 2 * bound).all()
    assert ((acc.double() - exact).abs() <= bound).all()


def test_fused_mac_differs_where_it_should():
    # acc = -1, then x·w = (1 + 2^-23)(1 + 2^-22) = 1 + 3·2^-23 + 2^-45: rounding the product
    # first drops 2^-45; after the cancellation it fits (3·2^-23 has its last bit at 2^-45)
    x = torch.tensor([[1.0, 1 + 2.0**-23]])
    w = torch.tensor([[-1.0], [1 + 2.0**-22]])
    assert sparse_gemm(x, w).item() == 3 * 2.0**-23
    assert sparse_gemm(x, w, FlexiSAGAConfig(fused_mac=True)).item() == 3 * 2.0**-23 + 2.0**-45


@pytest.mark.parametrize("fused", [False, True])
def test_skipped_weight_never_meets_infinite_activation(fused):
    x = torch.tensor([[1.0, math.inf, 2.0, 1.0], [1.0, math.nan, 1.0, -math.inf], [math.nan, 1.0, 1.0, 1.0]])
    w = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -0.0], [0.0, 1.0]])  # -0.0 is stored
    y = sparse_gemm(x, w, FlexiSAGAConfig(fused_mac=fused))
    assert y[:2].tolist() == [[7.0, 3.0], [4.0, -math.inf]]
    assert y[2].isnan().all()  # NaN meets stored weights
    assert torch.isnan(sparse_gemm(x, w, FlexiSAGAConfig(accumulation="fast"))).all()


def test_gemm_rejects_invalid_input():
    x, w = torch.ones(2, 3), torch.ones(3, 4)
    with pytest.raises(TypeError, match="x must be float32"):
        sparse_gemm(x.double(), w)
    with pytest.raises(TypeError, match="weight must be int32"):
        sparse_gemm(x.int(), w, FlexiSAGAConfig(dtype="int32"))
    with pytest.raises(ValueError, match="K differs"):
        sparse_gemm(x, torch.ones(4, 4))
    with pytest.raises(ValueError, match="x must be 2-D"):
        sparse_gemm(torch.ones(3), w)
    with pytest.raises(TypeError, match="config"):
        sparse_gemm(x, w, {"dtype": "float32"})


def test_a_tile_that_would_pad_a_weight_to_billions_of_elements_is_refused():
    w = torch.ones(4, 4)
    with pytest.raises(ValueError, match=r"4x4 weight on 65536x65536 blocks would be padded.*tile no larger"):
        encode_bitmap(w, (65536, 65536))
    assert prune_layer(w, 0.5, tile=(65536, 65536)).vectors_total == 4  # 1x65536 row vectors: small enough


# ------------------------------------------------------------------ activation-aware criterion


def test_activation_scores_scale_each_row_by_its_input_norm():
    from numerics.sparsity import vector_scores

    # W (K=2, N=4), tile (2, 2): row vectors of 2 along N; ||X_0|| = 10, ||X_1|| = 1
    w = torch.tensor([[0.1, 0.2, 3.0, 0.0], [1.0, 1.0, 0.3, 0.4]], dtype=torch.float64)
    a = torch.tensor([10.0, 1.0])
    got = vector_scores(w, (2, 2), "row", "activation", a)
    # row 0: 10·sqrt(0.01 + 0.04) = 10·0.2236.. ; 10·3 = 30; row 1: sqrt(2) ; sqrt(0.09 + 0.16) = 0.5
    want = torch.tensor([[10 * math.sqrt(0.05), 30.0], [math.sqrt(2.0), 0.5]], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    # column vectors (R = 2 along K): the L2 norm of |W[k, n]|·||X_k|| over the column
    col = vector_scores(w, (2, 2), "col", "activation", a)
    torch.testing.assert_close(col[0, 0], torch.tensor(math.sqrt(1.0 + 1.0), dtype=torch.float64))
    # the weight criterion would prune the first row vector last of row 0's; activation prunes row 1's
    kept_l2 = prune(w, 0.25, tile=(2, 2))[1]
    kept_act = prune(w, 0.25, tile=(2, 2), criterion="activation", activation=a)[1]
    assert not kept_l2[0, :2].any() and kept_l2[1].all()
    assert kept_act[0].all() and not kept_act[1, 2:].any()


@pytest.mark.parametrize(
    "criterion, activation, match",
    [
        ("activation", None, "needs the input activation norms"),
        ("activation", torch.ones(3), r"shape \(2,\)"),
        ("activation", torch.tensor([1.0, float("nan")]), "finite"),
        ("activation", torch.tensor([1.0, -1.0]), ">= 0"),
        ("l2", torch.ones(2), "criterion='activation' only"),
    ],
)
def test_activation_norms_are_checked(criterion, activation, match):
    with pytest.raises(ValueError, match=match):
        prune(torch.ones(2, 4), 0.5, tile=(2, 2), criterion=criterion, activation=activation)


def test_global_allocation_prunes_the_least_share_of_any_layer_first():
    # tile (2, 2), row vectors of 2. Layer a: rows [3, 4] and [0, 1], squared scores 25 and 1, shares
    # 25/26 and 1/26. Layer b: rows [2, 0], [2, 0], [1, 0], [1, 0], squared 4, 4, 1, 1, shares 0.4, 0.4,
    # 0.1, 0.1. Sparsity 0.7 of 6 vectors: floor(4.2) = 4 go, ascending share: a[1] (0.038), b[2], b[3]
    # (0.1 each), then a[0] (0.96) and b[0] (0.4) compete: a's cap is floor(0.9 · 2) = 1, so b[0].
    a = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    b = torch.tensor([[2.0, 0.0], [2.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    shares = global_allocation({"a": (a, "row", None), "b": (b, "row", None)}, 0.7, tile=(2, 2))
    assert shares == {"a": 1.5 / 2, "b": 3.5 / 4}
    assert pruned_count(shares["a"], 2) == 1 and pruned_count(shares["b"], 4) == 3
    # uniform 0.7 would prune floor(1.4) + floor(2.8) = 1 + 2 = 3 vectors, not 4
    assert global_allocation({"a": (a, "row", None), "b": (b, "row", None)}, 0.0, tile=(2, 2)) == {"a": 0.0, "b": 0.0}
    # activation norms move the shares: b's first feature 10x larger keeps b[0] and b[1]
    norms = torch.tensor([1.0, 1.0, 0.1, 0.1])
    assert global_allocation({"b": (b, "row", norms)}, 0.5, tile=(2, 2), criterion="activation") == {"b": 2.5 / 4}


def test_global_allocation_rejects_what_it_cannot_do():
    a = torch.ones(4, 4)
    with pytest.raises(ValueError, match="exceeds what the cap 0.5 allows"):
        global_allocation({"a": (a, "row", None)}, 0.75, tile=(2, 2), cap=0.5)
    with pytest.raises(ValueError, match="auto is resolved per layer first"):
        global_allocation({"a": (a, "auto", None)}, 0.5, tile=(2, 2))
    for cap in (0, 1, True, "0.5"):
        with pytest.raises(ValueError, match="cap must be a number in"):
            global_allocation({"a": (a, "row", None)}, 0.5, tile=(2, 2), cap=cap)
    with pytest.raises(ValueError, match="sparsity"):
        global_allocation({"a": (a, "row", None)}, 1.0, tile=(2, 2))
