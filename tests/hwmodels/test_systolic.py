"""gemm_cycles and the sparse variants against the fold formulas of flexisaga.md §4."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hwmodels.systolic import SparsePattern, best_dataflow, gemm_cycles, sparse_gemm_cycles


def fold_by_fold(M, K, N, R, C, dataflow):
    """Independent reference: walk the folds one by one (flexisaga.md §4.1)."""
    total = 0
    if dataflow == "os":
        for _ in range(0, M, R):
            for _ in range(0, N, C):
                total += K + (R - 1) + (C - 1)
    elif dataflow == "ws":
        for _ in range(0, K, R):
            for _ in range(0, N, C):
                total += R + (M + R + C - 2)
    else:
        for _ in range(0, K, R):
            for _ in range(0, M, C):
                total += R + (N + R + C - 2)
    return total


dims = st.integers(1, 300)
sides = st.integers(1, 40)


@settings(max_examples=60, deadline=None)
@given(dims, dims, dims, sides, sides, st.sampled_from(["os", "ws", "is"]))
def test_dense_matches_fold_walk(M, K, N, R, C, dataflow):
    assert gemm_cycles(M, K, N, R, C, dataflow) == fold_by_fold(M, K, N, R, C, dataflow)


def test_spec_example_and_names():
    assert [gemm_cycles(64, 96, 48, 16, 16, d) for d in ("os", "ws", "is")] == [1512, 1980, 2256]
    assert gemm_cycles(64, 96, 48, 16, 16, "dOS") == gemm_cycles(64, 96, 48, 16, 16, "OS") == 1512


def test_bad_input():
    with pytest.raises(ValueError, match="M"):
        gemm_cycles(0, 1, 1, 16, 16, "os")
    with pytest.raises(ValueError, match="rows"):
        gemm_cycles(1, 1, 1, 0, 16, "os")
    with pytest.raises(TypeError, match="K"):
        gemm_cycles(1, 1.5, 1, 16, 16, "os")
    with pytest.raises(ValueError, match="dataflow"):
        gemm_cycles(1, 1, 1, 16, 16, "xs")
    with pytest.raises(ValueError, match="sparse"):
        gemm_cycles(1, 1, 1, 16, 16, "sos")
    with pytest.raises(ValueError, match="sparsity"):
        SparsePattern.uniform(8, 8, 4, 4, 1.0)
    with pytest.raises(ValueError, match="vector"):
        SparsePattern.uniform(8, 8, 4, 4, 0.5, vector="diag")
    with pytest.raises(ValueError, match="mask"):
        SparsePattern.from_mask(torch.ones(3), 4, 4)
    with pytest.raises(ValueError, match="pattern"):
        best_dataflow(8, 8, 8, 4, 4, SparsePattern.uniform(8, 16, 4, 4, 0.5))


masks = st.tuples(
    st.integers(1, 40), st.integers(1, 40), st.integers(1, 8), st.integers(1, 8), st.integers(0, 2**31 - 1)
)


def random_mask(K, N, seed, density=0.5):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(K, N, generator=g) < density


@settings(max_examples=40, deadline=None)
@given(masks, st.integers(1, 50))
def test_sparse_formulas_by_walking_vectors(shape, M):
    """sOS/sIS/sWS/csOS recomputed from the mask with plain loops (flexisaga.md §4.2)."""
    K, N, R, C, seed = shape
    # zero whole row vectors and columns so that skipping happens
    mask = random_mask(K, N, seed, 0.3) | random_mask(K, N, seed + 1, 0.3)
    mask[torch.arange(K) % 3 == 0] = False
    w = mask.tolist()
    p = SparsePattern.from_mask(mask, R, C)
    ceil = lambda a, b: -(-a // b)  # noqa: E731
    k_nz = [sum(any(w[k][n] for n in range(j, min(j + C, N))) for k in range(K)) for j in range(0, N, C)]
    n_nz = [sum(any(w[k][n] for k in range(i, min(i + R, K))) for n in range(N)) for i in range(0, K, R)]
    live = [n for n in range(N) if any(w[k][n] for k in range(K))]
    packed = [sum(any(w[k][n] for n in live[g : g + C]) for k in range(K)) for g in range(0, len(live), C)]
    assert sparse_gemm_cycles(M, p, "sos") == ceil(M, R) * sum(R + C - 2 + x for x in k_nz if x)
    assert sparse_gemm_cycles(M, p, "sis") == ceil(M, C) * sum(2 * R + C - 2 + x for x in n_nz if x)
    assert sparse_gemm_cycles(M, p, "sws") == sum(ceil(x, R) for x in k_nz) * (2 * R + C + M - 2)
    assert sparse_gemm_cycles(M, p, "csos") == ceil(M, R) * sum(R + C - 2 + x for x in packed)
    assert p.nnz == sum(map(sum, w))


@settings(max_examples=40, deadline=None)
@given(masks, st.integers(1, 50))
def test_no_zero_vector_equals_dense(shape, M):
    K, N, R, C, _ = shape
    p = SparsePattern.from_mask(torch.ones(K, N), R, C)
    for sparse, dense in (("sos", "os"), ("sws", "ws"), ("sis", "is"), ("csos", "os")):
        assert sparse_gemm_cycles(M, p, sparse) == gemm_cycles(M, K, N, R, C, dense)


@settings(max_examples=40, deadline=None)
@given(masks, st.integers(1, 50))
def test_more_pruning_never_slower(shape, M):
    K, N, R, C, seed = shape
    mask = random_mask(K, N, seed, 0.7)
    fewer = mask & random_mask(K, N, seed + 7, 0.6)  # a subset of the stored weights
    p, q = SparsePattern.from_mask(mask, R, C), SparsePattern.from_mask(fewer, R, C)
    for name in ("sos", "sws", "sis"):
        assert sparse_gemm_cycles(M, q, name) <= sparse_gemm_cycles(M, p, name)


def test_row_pruning_csos_equals_sos():
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(64, 48, dtype=torch.bool)
    mask[torch.rand(64, generator=g) < 0.5, 16:32] = False  # 1×C row vectors of one column tile
    mask[:, 32:48] = False  # a whole C-group of output channels
    p = SparsePattern.from_mask(mask, 16, 16)
    assert sparse_gemm_cycles(32, p, "csos") == sparse_gemm_cycles(32, p, "sos")


@pytest.mark.parametrize(
    "K,s,speedup",
    [(64, 0.5, 1.52), (64, 0.75, 2.04), (768, 0.5, 1.93), (768, 0.75, 3.59), (3072, 0.5, 1.98), (3072, 0.75, 3.89)],
)
def test_uniform_sos_speedup(K, s, speedup):
    """flexisaga.md §3 property 4, to the spec's two decimals."""
    p = SparsePattern.uniform(K, 64, 16, 16, s, "row")
    ratio = gemm_cycles(128, K, 64, 16, 16, "os") / sparse_gemm_cycles(128, p, "sos")
    assert round(ratio, 2) == speedup


def test_best_dataflow_ties_and_table():
    # flexisaga.md §3 property 9 (per head; x12 heads)
    assert best_dataflow(128, 64, 128, 16, 16) == ("dws", 66_816 // 12)
    assert best_dataflow(128, 128, 64, 16, 16) == ("dos", 60_672 // 12)
    assert best_dataflow(128, 768, 2304, 16, 16) == ("dis", 902_400)
    dense = SparsePattern.from_mask(torch.ones(768, 768), 16, 16)
    assert best_dataflow(128, 768, 768, 16, 16, dense) == ("dos", 306_432)  # dOS before sOS on ties
