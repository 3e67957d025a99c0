"""Atleus cost model: golden values computed by hand from atleus.md §4."""

import dataclasses

import pytest

from hwmodels import estimate
from hwmodels.atleus import AtleusConfig
from hwmodels.workload import Op, Workload
from numerics.quant import QuantConfig

S = "layers.0."
Q = Op("matmul", "addmm", S + "attn.proj", 1, 128, 768, 768, True)
QK = Op("matmul", "qk", S + "attn", 12, 128, 64, 128)
SOFTMAX = Op("softmax", "softmax", S + "attn", 12, 128, 0, 128)
AV = Op("matmul", "av", S + "attn", 12, 128, 128, 64)
FC1 = Op("matmul", "addmm", S + "mlp.fc1", 1, 128, 768, 3072, True)
FC2 = Op("matmul", "addmm", S + "mlp.fc2", 1, 128, 3072, 768, True)
LAYER = Workload((Q, QK, SOFTMAX, AV, FC1, FC2))
EXACT = AtleusConfig(t_dig_cycles=12)  # 12 cycles at 1.2 GHz = 10 ns exactly


def test_reram_product_golden():
    (row,) = estimate(Workload((Q,)), "atleus", config=EXACT).rows
    # 128 tokens · 8 input bits · 100 ns + 10 ns
    assert row.cycles == 102_410
    crossbar_cycles = 128 * (6 * 24) * 8  # N_xb = ⌈768/128⌉·⌈768·4/128⌉ = 144
    conversions = 128 * crossbar_cycles
    io_bits = 128 * (768 + 768) * 8
    expected_pj = {
        "adc": conversions * 1.67,
        "dac": conversions * 0.417,
        "crossbar": crossbar_cycles * 30,
        "registers": crossbar_cycles * 18.4,
        "shift_add": conversions * 0.021,
        "dequant": 128 * 768 * 6 * 0.1,
        "edram": io_bits / 256 * 20.45,
        "bus": io_bits * 0.054,
        "noc": 128 * 768 * 8 * 2 * (0.08 + 0.075),
    }
    assert row.components == pytest.approx({k: v * 1e-12 for k, v in expected_pj.items()}, rel=1e-12)


def test_adc_width_and_scale_format_move_energy_only():
    (six,) = estimate(Workload((Q,)), "atleus", config=EXACT, adc_bits=6).rows
    (pow2,) = estimate(Workload((Q,)), "atleus", config=EXACT, quant=QuantConfig(scale_format="pow2")).rows
    assert six.cycles == pow2.cycles == 102_410  # the 100 ns crossbar cycle holds at every width (ISAAC)
    conversions = 128 * 128 * (6 * 24) * 8
    assert six.components["adc"] == pytest.approx(conversions * 1.20e-12, rel=1e-12)
    assert pow2.components["dequant"] == pytest.approx(128 * 768 * 6 * 0.021e-12, rel=1e-12)  # a shift


def test_crossbar_geometry_comes_from_the_crossbar_config():
    import dataclasses

    from numerics.crossbar import ATLEUS_RERAM

    (row,) = estimate(
        Workload((Q,)),
        "atleus",
        config=EXACT,
        crossbar=dataclasses.replace(ATLEUS_RERAM, rows=64, cols=256, cell_bits=4),
    ).rows
    # 2 slices of 4-bit cells, 128 weights per crossbar: N_xb = ⌈768/64⌉·⌈768/128⌉ = 72
    crossbar_cycles = 128 * 72 * 8
    assert row.components["crossbar"] == pytest.approx(crossbar_cycles * 30e-12, rel=1e-12)
    assert row.components["adc"] == pytest.approx(256 * crossbar_cycles * 1.67e-12, rel=1e-12)
    assert row.components["dac"] == pytest.approx(64 * crossbar_cycles * 0.417e-12, rel=1e-12)


def test_systolic_and_pipeline_golden():
    report = estimate(LAYER, "atleus", config=EXACT)
    cycles = [row.cycles for row in report.rows]
    # Q·Kᵀ: OS on 128×32: 1·4·(128+32+64−2) = 888; softmax 196,608·8/(32·16) = 3072;
    # A·V: OS 1·2·(128+32+128−2) = 572; FFN1/FFN2 102,410 each (chained in S4)
    assert cycles == [102_410, 888, 3072, 572, 102_410, 102_410]
    # Each stage also waits for one token's output to reach the next (§4, NoC: 2 hops of a 3-stage router
    # + 1-cycle link = 8 cycles, 128-bit flits, a TSV crossing 1 cycle, 1 GHz):
    # Q → systolic tier: 768·8 bits = 48 flits + 8 + 1 = 57; A·V back: 12·64·8 = 48 flits + 8 + 1 = 57;
    # FC1 → FC2: 3072·8 = 192 flits + 8 = 200; FC2 onwards: 48 + 8 = 56.
    # S1 = 102,410 + 57 = 102,467; S2 = 4,532 + 57 = 4,589; S4 chains FC2 behind FC1 with one token
    # latency (8·100 + 10 ns, §4.6): 102,410 + 200 + 810 + 56 = 103,476.
    # B = 1, L = 1: the formula (1·4 + 1 − 1)·103,476 = 413,904 exceeds the stages in sequence,
    # 102,467 + 4,589 + 103,476 = 210,532: the better schedule is taken
    assert report.total_cycles == 210_532
    assert not any("replication" in note for note in report.notes)  # only a ρ ≠ 1 is noted
    assert estimate(LAYER, "atleus", config=EXACT, pipelining=False).total_cycles == 210_532
    four = Workload(LAYER.ops, batch=4)  # four sequences of 32 tokens: per sequence S1 = 25,602.5 + 57,
    # S2 = 1,133 + 57, S4 = 25,602.5 + 810 + 200 + 56 = 26,668.5; (1·4 + 4 − 1)·26,668.5 = 186,679.5
    # < 4·(25,659.5 + 1,190 + 26,668.5) = 214,072 in sequence
    assert estimate(four, "atleus", config=EXACT).total_cycles == 186_680
    assert estimate(four, "atleus", config=EXACT, pipelining=False).total_cycles == 214_072


def test_planar_mapping_replaces_the_tsvs():
    tsv = estimate(LAYER, "atleus", config=EXACT)
    planar = estimate(LAYER, "atleus", config=EXACT, mapping="planar")
    # each of the two crossings becomes 2 planar hops: 8 cycles instead of the TSV's 1 → +7 ns each
    assert planar.total_cycles == 210_532 + 2 * 7
    q, av = planar.rows[0], planar.rows[3]
    bits = 128 * 768 * 8  # Q's outputs; A·V's are 12·128·64·8, the same count
    for row in (q, av):
        assert "tsv" not in row.components
    assert tsv.rows[0].components["tsv"] == pytest.approx(bits * 0.03e-12, rel=1e-12, abs=0)
    planar_noc = bits * 2 * (0.08 + 0.075) * 1e-12  # router + 1 mm link per hop
    assert q.components["noc"] - tsv.rows[0].components["noc"] == pytest.approx(planar_noc, rel=1e-12, abs=0)
    assert av.components["noc"] == pytest.approx(planar_noc, rel=1e-12, abs=0)
    assert planar.rows[0].unit == "reram"  # the weights stay on the crossbars


def test_lora_branch():
    op = Op("matmul", "addmm", S + "attn.q_proj", 1, 128, 768, 768, True)
    rows = estimate(Workload((op,)), "atleus", lora_rank=32).rows
    (lora,) = [row for row in rows if row.name == "lora"]
    assert lora.operations == 128 * 32 * (768 + 768)
    fused = Op("matmul", "addmm", "h.0.attn.c_attn", 1, 16, 768, 2304, True)
    (lora,) = [row for row in estimate(Workload((fused,)), "atleus", lora_rank=32).rows if row.name == "lora"]
    assert lora.operations == 2 * 16 * 32 * (768 + 768)  # Q and V slices


def test_precision_presets_and_crossbar_counts():
    large = Workload(
        [Op("matmul", "addmm", f"l.{i}.attention.{x}", 1, 8, 1024, 1024, True) for i in range(24) for x in "qkvo"]
        + [
            Op("matmul", "addmm", f"l.{i}.mlp.{x}", 1, 8, *kn, True)
            for i in range(24)
            for x, kn in (("fc1", (1024, 4096)), ("fc2", (4096, 1024)))
        ]
    )
    from hwmodels import hardware
    from hwmodels.atleus import ATLEUS, _Model

    for preset, count in (("M8F8", 73_728), ("M8F4", 49_152), ("M4F8", 61_440), ("M4F4", 36_864)):
        described, _ = hardware("atleus", quant=preset)
        assert sum(_Model(ATLEUS, described).crossbars(op) for op in large.ops) == count  # atleus.md §3.8
    energies = {p: estimate(large, "atleus", quant=p).energy_j for p in ("M8F8", "M8F4", "M4F8")}
    assert energies["M8F4"] < energies["M4F8"] < energies["M8F8"]  # published ordering


def test_finetune_costs_more():
    inference = estimate(LAYER, "atleus")
    step = estimate(LAYER, "atleus", mode="finetune")
    assert step.total_cycles > inference.total_cycles and step.energy_j > inference.energy_j
    assert any(row.name == "backward dX" for row in step.rows)
    assert "hbm" in step.energy_by_component()
    on_systolic = estimate(LAYER, "atleus", mode="finetune", backward_on="systolic")
    assert {row.unit for row in on_systolic.rows if row.name == "backward dX"} == {"systolic"}


def test_bad_options():
    with pytest.raises(ValueError, match="quant must be a QuantConfig or one of M8F8"):
        estimate(LAYER, "atleus", quant="W8")
    with pytest.raises(ValueError, match=r"adc_bits must be in \[1, 16\]"):
        estimate(LAYER, "atleus", adc_bits=17)
    with pytest.raises(ValueError, match="sa_dtype"):
        estimate(LAYER, "atleus", sa_dtype="int8")
    with pytest.raises(ValueError, match="mode"):
        estimate(LAYER, "atleus", mode="train")
    with pytest.raises(ValueError, match="replication"):
        estimate(LAYER, "atleus", replication=0)


def test_lora_runs_in_the_systolic_stage():
    q = Op("matmul", "addmm", S + "attn.q_proj", 1, 128, 768, 768, True)
    with_lora = estimate(Workload((q, QK, SOFTMAX, AV, FC1, FC2)), "atleus", config=EXACT, lora_rank=32)
    lora = [row.cycles for row in with_lora.rows if row.name == "lora"][0]
    # S2 grows by the LoRA time (4,589 + lora ns) but stays below S4 = 103,476: the four-stage formula
    # is unchanged at 4·103,476, still above the stages in sequence, which now add the LoRA time
    assert 4589 + lora < 103_476
    unpipelined = estimate(
        Workload((q, QK, SOFTMAX, AV, FC1, FC2)), "atleus", config=EXACT, pipelining=False, lora_rank=32
    )
    assert unpipelined.total_cycles == 210_532 + lora < 4 * 103_476
    assert with_lora.total_cycles == unpipelined.total_cycles
    lora_row = [row for row in with_lora.rows if row.name == "lora"][0]
    assert lora_row.unit == "systolic"


def test_causal_attention_skips_half_the_products():
    causal_qk, causal_av = (dataclasses.replace(op, causal=True) for op in (QK, AV))
    full = estimate(Workload((QK, AV)), "atleus", config=EXACT).rows
    half = estimate(Workload((causal_qk, causal_av)), "atleus", config=EXACT).rows
    # 888 and 572 cycles (test_systolic_and_pipeline_golden), halved: every score above the diagonal is masked
    assert [row.cycles for row in half] == [444, 286]
    for a, b in zip(full, half):  # MACs and SRAM halve; A·V's outputs still all cross the TSVs
        assert b.components == pytest.approx(
            {k: v if k == "tsv" else v / 2 for k, v in a.components.items()}, rel=1e-12, abs=0
        )
    assert "tsv" in half[1].components
    kept = estimate(Workload((causal_qk, causal_av)), "atleus", config=EXACT, causal_skip=False).rows
    assert [row.cycles for row in kept] == [888, 572]
    with pytest.raises(ValueError, match="causal_skip"):
        estimate(Workload((QK,)), "atleus", causal_skip="yes")


def test_a_reram_tier_sized_to_the_model():
    big = Op("matmul", "addmm", S + "mlp.fc1", 1, 4, 8192, 8192, True)
    # 8-bit FFN weights in 2-bit cells take 4 columns each: N_xb = ⌈8192/128⌉·⌈8192·4/128⌉ = 64·256 = 16,384
    paper = estimate(Workload((big, big)), "atleus")  # 32,768 > 24,576 crossbars
    assert any("needs 32,768 crossbars, the ReRAM tier has 24,576" in note for note in paper.notes)
    fit = estimate(Workload((big, big)), "atleus", reram_cores="fit")
    # 16 tiles × 96 crossbars = 1,536 per core: ⌈32,768/1,536⌉ = 22 cores
    assert "ReRAM tier sized to the model: 22 cores, 32,768 crossbars used" in fit.notes
    assert not any("assumed resident" in note for note in fit.notes)
    assert fit.energy_j == paper.energy_j  # the pool's size changes where weights live, not the work
    with pytest.raises(ValueError, match="reram_cores"):
        AtleusConfig(reram_cores="all")


def test_m8f4_saves_twice_what_m4f8_saves():
    from tests.hwmodels.workloads import transformer_layer

    layer = Workload(transformer_layer(16, d=128, heads=2, d_ff=512))
    energy = {q: estimate(layer, "atleus", quant=q, mode="finetune").energy_j for q in ("M8F8", "M8F4", "M4F8")}
    # the bit-dependent ReRAM work is ∝ crossbars ∝ weights: FFN 2·128·512 = 131,072 weights, attention
    # 4·128² = 65,536, and halving either's bits halves its crossbars, so the FFN saving is twice the MHA's
    ratio = (energy["M8F8"] - energy["M8F4"]) / (energy["M8F8"] - energy["M4F8"])
    assert ratio == pytest.approx(2.0, rel=1e-9)
