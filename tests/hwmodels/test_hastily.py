"""HASTILY cost model: golden values computed by hand from hastily.md §4."""

import dataclasses

import pytest

from hwmodels import estimate
from hwmodels.hastily import HASTILY, HastilyConfig  # HASTILY: the spec defaults, without fitted constants
from hwmodels.workload import Op, Workload
from numerics.crossbar import HASTILY_SRAM

S = "encoder.layer.0."
LINEAR = Op("matmul", "addmm", S + "attention.self.query", 1, 128, 768, 768, True)
QK = Op("matmul", "qk", S + "attention.self", 12, 128, 64, 128)
SOFTMAX = Op("softmax", "softmax", S + "attention.self", 12, 128, 0, 128)
NORM = Op("norm", "layer_norm", S + "output.LayerNorm", 1, 128, 0, 768)


def test_static_product_golden():
    report = estimate(Workload((LINEAR,)), "hastily", config=HASTILY, pipelining=False)
    (row,) = report.rows
    # P = Q = 12 UCLMs per side, 144 UCLMs on ⌈144/16⌉ = 9 cores; 11·⌈768/64⌉ = 132 vector adds
    # per row -> 375 + ⌈132/9⌉ = 390 cycles per row, 128 rows
    assert row.cycles == 128 * 390
    per_row_pj = {"uclm_mvm": 144 * 22.38 * 375, "vfu": 132 * 1.7, "bus": 24 * 6.0, "shared_memory": 24 * 25.35}
    assert row.components == pytest.approx({k: 128 * v * 1e-12 for k, v in per_row_pj.items()}, rel=1e-12)


@pytest.mark.parametrize("adc_bits", [4, 8])
def test_adc_width_sets_mvm_time_and_energy(adc_bits):
    (row,) = estimate(Workload((LINEAR,)), "hastily", config=HASTILY, pipelining=False, adc_bits=adc_bits).rows
    # a SAR conversion takes one cycle per bit: the ADC-bound MVM is 375·b/6 cycles (250 or 500)
    mvm = {4: 250, 8: 500}[adc_bits]
    assert row.cycles == 128 * (mvm + 15)
    # 48 % of the 6-bit MVM energy is ADC and scales with the energy per conversion (0.79 or 1.67 pJ vs 1.20)
    e_mvm = 22.38 * 375 * (0.52 + 0.48 * {4: 0.79, 8: 1.67}[adc_bits] / 1.20)
    assert row.components["uclm_mvm"] == pytest.approx(128 * 144 * e_mvm * 1e-12, rel=1e-12)


def test_array_geometry_comes_from_the_crossbar():
    (row,) = estimate(
        Workload((LINEAR,)),
        "hastily",
        config=HASTILY,
        pipelining=False,
        crossbar=dataclasses.replace(HASTILY_SRAM, rows=128, cols=32),
    ).rows
    # P = ⌈768/128⌉ = 6, Q = ⌈768/32⌉ = 24: 144 UCLMs on 9 cores; 5·12 = 60 adds -> 375 + ⌈60/9⌉ = 382
    assert row.cycles == 128 * 382


def test_dynamic_product_writes_its_operand():
    (row,) = estimate(Workload((QK,)), "hastily", config=HASTILY, pipelining=False).rows
    # Kᵀ (64×128) written: 64 row writes; per query row one MVM (P = 1, no adds)
    assert row.cycles == 64 + 128 * 375
    assert row.components["kv_write"] == pytest.approx(12 * 64 * 2 * 8 * 3.2e-12, rel=1e-12)


@pytest.mark.parametrize(
    "length,options,per_row",
    [
        (128, {}, 2 * 5 + 2 * 3 + 4),  # LUT exp, one core
        (128, {"exp": "vfu"}, 2 * 5 + 2 * 10),  # PUMA-style exp
        (4096, {}, 16 * 5 + 16 * 3 + 4 * 8 + 2 * (16 + 16)),  # C = 4 cores, two intra-tile levels
        (4096, {"multicore_softmax": False}, 64 * 5 + 64 * 3 + 4 * 32),
        (16384, {}, 16 * 5 + 16 * 3 + 4 * 8 + 2 * (3 * 16 + 64)),  # C = 16: the 4th level is inter-tile
        # 32-column arrays: a core holds 16·32 = 512 positions of Kᵀ, so C = 8 cores, l_c = 512, three levels
        (4096, {"crossbar": dataclasses.replace(HASTILY_SRAM, cols=32)}, 8 * 5 + 8 * 3 + 4 * 4 + 2 * (3 * 16)),
    ],
)
def test_softmax_row_golden(length, options, per_row):
    op = Op("softmax", "softmax", S, 1, 3, 0, length)
    (row,) = estimate(Workload((op,)), "hastily", config=HASTILY, pipelining=False, **options).rows
    assert row.cycles == 3 * per_row


def test_vector_work_runs_on_the_cores_holding_its_row():
    ffn = Op("matmul", "addmm", S + "intermediate.dense", 1, 128, 768, 3072, True)
    gelu = Op("gelu", "gelu", S + "intermediate.act", 1, 128, 0, 3072)
    scale = Op("elementwise", "scale", S + "attention.self", 12, 128, 0, 128)
    alone = estimate(Workload((NORM, gelu)), "hastily", config=HASTILY, pipelining=False).rows
    # no product before them: one core, ⌈768/64⌉·8 = 96 and ⌈3072/64⌉·14 = 672 cycles per row
    assert [row.cycles for row in alone] == [128 * 96, 128 * 672]
    after = estimate(Workload((ffn, gelu, QK, scale)), "hastily", config=HASTILY, pipelining=False).rows
    # FFN: P = 12, Q = 48, 576 UCLMs on 36 cores; GELU's 48 vector steps over them: ⌈48/36⌉·14 = 28
    assert after[1].cycles == 128 * 28
    # each head's QKᵀ (P = 1, Q = 2) sits on one core; the 12 heads scale their rows in parallel: 2·1
    assert after[3].cycles == 128 * 2
    assert after[3].components["vfu"] == pytest.approx(12 * 128 * 2 * 1.7e-12)  # energy counts every head
    assert alone[1].components == after[1].components  # where it runs changes time, not energy


def test_pipeline_golden():
    key, value = (dataclasses.replace(LINEAR, scope=S + f"attention.self.{x}") for x in ("key", "value"))
    ops = (LINEAR, key, value, SOFTMAX, NORM)
    # per row: 390 per product, 20 (softmax row of 128), LayerNorm on the product's 9 cores: ⌈12/9⌉·8 = 16
    assert estimate(Workload(ops), "hastily", config=HASTILY, pipelining=False).total_cycles == 128 * (
        3 * 390 + 20 + 16
    )
    # (N + 1)·l·T_stage with N = 1 layer, l = 128, T_stage = 390: 99,840 < 156,928 in sequence
    assert estimate(Workload(ops), "hastily", config=HASTILY).total_cycles == 2 * 128 * 390
    two = Workload(ops, batch=2)  # same 128 rows = 2 sequences of 64
    assert estimate(two, "hastily", config=HASTILY).total_cycles == (1 + 2) * 64 * 390
    # one product per layer: the pipeline's 2·128·390 = 99,840 exceeds 128·(390 + 20 + 16) = 54,528
    # in sequence, and the better schedule is taken
    assert estimate(Workload((LINEAR, SOFTMAX, NORM)), "hastily", config=HASTILY).total_cycles == 128 * 426


def test_spill_only_without_pipelining():
    big = Op("softmax", "softmax", S, 16, 2048, 0, 2048)  # 64 MiB of INT8 scores > 32 MiB
    (row,) = estimate(Workload((big,)), "hastily", config=HASTILY, pipelining=False).rows
    assert row.components["dram"] == pytest.approx(2 * 16 * 2048 * 2048 * 8 * 20e-12)
    (row,) = estimate(Workload((big,)), "hastily", config=HASTILY).rows
    assert "dram" not in row.components


def test_capacity_note():
    huge = Op("matmul", "addmm", S + "x", 1, 1, 8192, 8192, True)  # 16,384 UCLMs... plus one more
    report = estimate(Workload((huge, LINEAR)), "hastily")
    assert any("UCLMs" in note for note in report.notes)
    assert not estimate(Workload((LINEAR,)), "hastily").notes


def test_bad_options():
    with pytest.raises(ValueError, match="exp"):
        estimate(Workload((LINEAR,)), "hastily", exp="taylor")
    with pytest.raises(ValueError, match="vfu_lanes"):
        HastilyConfig(vfu_lanes=0)
