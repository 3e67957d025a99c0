"""FlexiSAGA cost model: the spec's BERT-Base layer table (flexisaga.md §3.9) and energy by hand."""

import pytest
import torch

from hwmodels import estimate
from hwmodels.flexisaga import FLEXISAGA  # the spec defaults: goldens are computed without fitted constants
from hwmodels.workload import Workload
from numerics.nn import emulate
from tests.hwmodels.workloads import transformer_layer

LAYER = Workload(transformer_layer(128, d=768, heads=12, d_ff=3072, fused_qkv=True))


def gemm_rows(report):
    return [row for row in report.rows if row.kind == "matmul"]


def test_bert_base_layer_table():
    report = estimate(LAYER, "flexisaga", config=FLEXISAGA, sparsity=0, non_gemm=False)
    assert [(row.name.split("[")[1][:-1], row.cycles) for row in gemm_rows(report)] == [
        ("dis", 902_400),
        ("dws", 66_816),
        ("dos", 60_672),
        ("dos", 306_432),
        ("dis", 1_197_312),
        ("dos", 1_191_168),
    ]
    assert report.total_cycles == 3_724_800


@pytest.mark.parametrize("sparsity,total", [(0.5, 1_955_328), (0.75, 1_070_592)])
def test_bert_base_layer_sparse(sparsity, total):
    report = estimate(LAYER, "flexisaga", config=FLEXISAGA, sparsity=sparsity, vector="auto", non_gemm=False)
    assert report.total_cycles == total
    chosen = [row.name.split("[")[1][:-1] for row in gemm_rows(report)]
    assert chosen == ["sis", "dws", "dos", "sos", "sis", "sos"]


def test_forced_dataflow_and_dense_only():
    ws = estimate(LAYER, "flexisaga", config=FLEXISAGA, dataflow="sWS", sparsity=0.5, vector="auto", non_gemm=False)
    names = [row.name.split("[")[1][:-1] for row in gemm_rows(ws)]
    assert names == ["sws", "dws", "dws", "sws", "sws", "sws"]  # attention products fall back to dense
    dense = estimate(LAYER, "flexisaga", config=FLEXISAGA, sparsity=0.5, sparse=False, non_gemm=False)
    assert dense.total_cycles == 3_724_800


def test_energy_golden():
    from hwmodels.workload import Op

    op = Op("matmul", "mm", "", 1, 32, 32, 32)
    (row,) = estimate(Workload((op,)), "flexisaga", config=FLEXISAGA, sparsity=0).rows
    assert row.name.endswith("[dos]") and row.cycles == 2 * 2 * (30 + 32)
    macs = 32**3
    sram = 32 * 32 * 2 + 32 * 32 * 2 + 32 * 32  # X, W per fold (§4.4), Y once
    expected_pj = {"mac": macs * 4.6, "register_file": macs * 3 * 0.5, "sram": sram * 5.0, "dram": 3 * 1024 * 640.0}
    assert row.components == pytest.approx({k: v * 1e-12 for k, v in expected_pj.items()}, rel=1e-12)


def test_a_pruned_models_own_zeros():
    lin = torch.nn.Sequential(torch.nn.Linear(64, 32, bias=False))  # W (K×N) = weight.T, 64×32
    with torch.no_grad():
        lin[0].weight[:, ::2] = 0  # half of the K rows: every 1×C row vector with even k is zero
    x = torch.randn(64, 64)
    dense = estimate(lin, "flexisaga", x, config=FLEXISAGA, sparse=False)
    # emulated at sparsity 0 the weights keep their own zeros, which the cost model reads
    (row,) = gemm_rows(estimate(emulate(lin, "flexisaga", sparsity=0.0), x, config=FLEXISAGA))
    # sWS: 2 column tiles · ⌈32 kept rows/16⌉ folds · (2·16 + 16 + 64 − 2) = 440, below
    # sOS: ⌈64/16⌉ · 2 column tiles · (30 + 32) = 496 and dOS: ⌈64/16⌉·2·(30 + 64) = 752
    assert (row.name, row.cycles) == ("aten.mm [sws]", 440)
    assert (
        gemm_rows(estimate(emulate(lin, "flexisaga", sparsity=0.0), x, config=FLEXISAGA, dataflow="sos"))[0].cycles
        == 496
    )
    assert gemm_rows(dense)[0].cycles == 752
    # pruning half of the row vectors by L2 norm picks exactly the zero ones: the same cost
    assert gemm_rows(estimate(lin, "flexisaga", x, config=FLEXISAGA, sparsity=0.5))[0].cycles == 440


def test_uneven_masks_are_what_is_priced():
    """An emulated model's own masks are priced, layer by layer: pruning one layer further changes
    only that layer's row, by the cycles its new mask gives (computed here from the mask)."""
    from hwmodels.systolic import SparsePattern, best_dataflow

    model = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.ReLU(), torch.nn.Linear(96, 48))
    x = torch.randn(40, 64)
    em = emulate(model, "flexisaga", sparsity=0.5, accumulation="fast")
    before = gemm_rows(estimate(em, x, config=FLEXISAGA))
    layer = em[2]
    with torch.no_grad():  # prune three quarters of the row vectors of the second layer instead
        from numerics.sparsity import prune_layer

        result = prune_layer(model[2].weight.detach().T, 0.75, tile=(16, 16))
        layer.mask.copy_(result.mask.T)
        layer.weight.copy_(result.weight.T)
    after = gemm_rows(estimate(em, x, config=FLEXISAGA))
    assert after[0] == before[0]
    want = best_dataflow(40, 96, 48, 16, 16, SparsePattern.from_mask(result.weight, 16, 16))
    assert (after[1].name.split("[")[1][:-1], after[1].cycles) == want
    assert after[1].cycles < before[1].cycles


def test_bad_options():
    with pytest.raises(ValueError, match="sparsity"):
        estimate(LAYER, "flexisaga", sparsity=1.0)
    with pytest.raises(ValueError, match="dataflow"):
        estimate(LAYER, "flexisaga", dataflow="zz")
    with pytest.raises(ValueError, match="vector"):
        estimate(LAYER, "flexisaga", vector="diag")


def test_a_grouped_convolution_is_priced_with_each_groups_mask():
    from hwmodels.systolic import DATAFLOWS, DENSE, SparsePattern, gemm_cycles, sparse_gemm_cycles

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(32, 64, 3, groups=2, bias=False))
    x = torch.randn(1, 32, 10, 10)
    em = emulate(model, "flexisaga", sparsity=0.5, accumulation="fast")
    row = estimate(em, x, config=FLEXISAGA).rows[0]
    # two products, M = 8·8 = 64 positions, K = 16·9 = 144, N = 32 each, on the 16x16 array; group g's
    # mask is columns 32g .. 32g+31 of the (K, C_out) view; one dataflow for the layer
    view = em[0].weight.detach().reshape(64, 144).T
    groups = [SparsePattern.from_mask(view[:, 32 * g : 32 * (g + 1)], 16, 16) for g in range(2)]
    alpha = FLEXISAGA.fold_overhead

    def cycles(d):
        if d in DENSE:
            return 2 * gemm_cycles(64, 144, 32, 16, 16, d, fold_overhead=alpha)
        return sum(sparse_gemm_cycles(64, p, d, fold_overhead=alpha) for p in groups)

    assert row.cycles == min(cycles(d) for d in DATAFLOWS)
    dense = estimate(emulate(model, "flexisaga", sparsity=0.0, accumulation="fast"), x, config=FLEXISAGA)
    assert row.cycles < dense.rows[0].cycles  # the pruned vectors are skipped


def test_a_weight_is_priced_sparse_from_min_r_c_k_n_zeros():
    # 16x16 array, a 16 -> 16 Linear: a skippable row vector of W = weight.T needs 16 zeros
    torch.manual_seed(1)
    x = torch.randn(1, 32, 16)

    def priced(zeros):
        layer = torch.nn.Linear(16, 16, bias=False)
        with torch.no_grad():
            layer.weight[:zeros, 0] = 0  # W[0, :zeros] = 0: row k = 0 of W
        em = emulate(torch.nn.Sequential(layer), "flexisaga", sparsity=0.0, accumulation="fast", heads=())
        row = estimate(em, x, config=FLEXISAGA, dataflow="sos").rows[0]  # sOS skips zero k-steps
        return row.cycles, row.energy_j

    # a whole zero row is skipped; 15 zeros skip nothing and are priced dense (no metadata traffic either)
    assert priced(16)[0] < priced(15)[0] and priced(15) == priced(0)


def test_metadata_and_decoder_switches():
    from hwmodels.workload import Op

    op = Op("matmul", "addmm", "encoder.layer.0.output.dense", 1, 32, 32, 32, True)
    options = dict(config=FLEXISAGA, sparsity=0.5, vector="row", dataflow="sOS", non_gemm=False)
    (on,) = estimate(Workload((op,)), "flexisaga", **options).rows
    (off,) = estimate(Workload((op,)), "flexisaga", metadata=False, **options).rows
    (quiet,) = estimate(Workload((op,)), "flexisaga", decoder=False, **options).rows
    # sOS bitmap (§4.4): ⌈32/16⌉·⌈32/16⌉·16 column bits + 16·Σ k_nz, every fold keeps 8 of 16 rows:
    # 64 + 16·(4·8) = 576 bits = 18 words, loaded by ⌈32/16⌉ = 2 row streams and read once from DRAM
    assert (on.components["sram"] - off.components["sram"]) == pytest.approx(2 * 18 * 5.0e-12, rel=1e-9, abs=0)
    assert (on.components["dram"] - off.components["dram"]) == pytest.approx(18 * 640.0e-12, rel=1e-9, abs=0)
    assert off.cycles == on.cycles and off.components["mac"] == on.components["mac"]
    assert on.components["decoder"] > 0 and "decoder" not in quiet.components  # zero components are left out
    assert {k: v for k, v in quiet.components.items() if k != "decoder"} == {
        k: v for k, v in on.components.items() if k != "decoder"
    }
    with pytest.raises(ValueError, match="metadata"):
        estimate(Workload((op,)), "flexisaga", metadata="off")
